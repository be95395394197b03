"""The router's bookkeeping: the shared state of every request (`Core`) and the attempt
record of one request (`Plan`).

`Core` holds the groups and deployments, picks with the configured strategy, and turns
each attempt's outcome into counts and cooldowns. `Plan` walks one request through its
group, the group's fallbacks and the short same-deployment retries, in the order the
``router`` module's docstring gives, and decides after each failure whether the request
goes on or ends. Neither awaits anything but the one bounded retry wait.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, final

import trio

from ..errors import CircuitOpenError, ConfigError, NotFoundError
from ..observability import tracing as _tracing
from ._routing import (
    ALPHA,
    BREAKER_OPEN,
    CONTEXT_LENGTH,
    FAILURE_KINDS,
    HEALTH,
    RATE_LIMIT,
    SAME_RETRY,
    SKIP,
    TIMEOUT,
    Deployment,
    Group,
    classify,
    least_in_flight,
    lowest_latency,
    retry_after,
    weighted_random,
)
from .base import Provider
from .types import ChatRequest, estimate_tokens

if TYPE_CHECKING:
    from ..config import DeploymentConfig, RouterConfig

__all__ = ["STRATEGIES", "Core", "Plan"]

STRATEGIES: Final = ("weighted_random", "least_in_flight", "lowest_latency")


@final
class Core:
    """The state every request of one router shares, and what an outcome does to it.

    Raises:
        ConfigError: no deployment, an unknown strategy, or a fallback or default group
            that no deployment serves.
    """

    def __init__(
        self,
        deployments: Mapping[str, tuple[DeploymentConfig, Provider]],
        config: RouterConfig,
        statistics: Mapping[str, Callable[[], Any]],
        rng: random.Random,
        on_cooldown: Callable[[str, float], None] | None,
    ) -> None:
        if not deployments:
            raise ConfigError("a router needs at least one deployment", key="llm.deployments")
        if config.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {config.strategy!r}", key="llm.router.strategy")
        self.rng = rng
        self.draw = rng.random
        self.strategy = STRATEGIES.index(config.strategy)
        self._explore = config.explore
        self._turn = 0
        self.on_cooldown = on_cooldown
        self.groups: dict[str, Group] = {}
        self.deployments: list[Deployment] = []
        for name, (settings, provider) in deployments.items():
            group_name = settings.model_group
            group = self.groups.get(group_name)
            if group is None:
                group = self.groups[group_name] = Group(group_name, config.group(group_name))
            dep = Deployment(
                len(self.deployments), name, settings, provider, group, statistics.get(name)
            )
            self.deployments.append(dep)
            group.add(dep)
        for group in self.groups.values():
            policy = config.group(group.name)
            group.chain = (group, *(self._named(g, "fallbacks") for g in policy.fallbacks))
            group.context_chain = tuple(
                self._named(g, "context_fallbacks") for g in policy.context_fallbacks
            )
        default = config.default_group
        self.default = (
            self._named(default, "default_group") if default else self.deployments[0].group
        )
        self.cooling = 0  # deployments with ``cooled`` set: while 0, no pick reads the clock
        self.requests = self.fallbacks = self.context_fallbacks = 0
        self.retries = self.refused = self.errors = 0

    def _named(self, name: str, key: str) -> Group:
        group = self.groups.get(name)
        if group is None:
            known = ", ".join(sorted(self.groups))
            raise ConfigError(
                f"no deployment serves model group {name!r} (groups: {known})",
                key=f"llm.router.{key}",
            )
        return group

    def plan(self, model: str | None, request: ChatRequest | None) -> Plan:
        """A new request's attempt record, for the group ``model`` names.

        Raises:
            NotFoundError: no group has that name (status 404; ``excerpt`` is the name).
        """
        self.requests += 1
        if not model:
            group = self.default
        else:
            found = self.groups.get(model)
            if found is None:
                self.errors += 1
                known = ", ".join(sorted(self.groups))
                raise NotFoundError(
                    f"no model group {model!r} (groups: {known})", status=404, excerpt=model
                )
            group = found
        plan = Plan(self, group)
        if group.sized and request is not None:
            plan.fit(estimate_tokens(request))
        return plan

    def choose(self, group: Group, tried: int, now: float) -> Deployment | None:
        """The strategy's pick among the group's ready, untried deployments."""
        deployments = group.deployments
        if self.strategy == 0:
            return weighted_random(deployments, tried, now, self.draw)
        if self.strategy == 1:
            self._turn += 1
            return least_in_flight(deployments, tried, now, self._turn)
        return lowest_latency(deployments, tried, now, self.draw, self._explore)

    def timed(self, dep: Deployment) -> bool:
        """Whether this attempt (its count already taken) is timed: every one for
        ``lowest_latency``, else the 1st, 9th, 17th... (two clock reads saved on the rest)."""
        return self.strategy == 2 or dep.attempts & 7 == 1

    @staticmethod
    def begin(dep: Deployment) -> bool:
        """Count an attempt starting on ``dep``; whether it is the probe after a cooldown."""
        probe = dep.cooled
        if probe:
            dep.probing = True
            dep.probes += 1
        dep.in_flight += 1
        dep.attempts += 1
        return probe

    @staticmethod
    def end(dep: Deployment, probe: bool) -> None:
        """An attempt on ``dep`` is over (whatever its outcome)."""
        dep.in_flight -= 1
        if probe:
            dep.probing = False

    def succeeded(self, dep: Deployment, plan: Plan | None, seconds: float | None) -> None:
        """``dep`` answered (after ``seconds`` to its first byte, if timed here)."""
        dep.successes += 1
        dep.fails = 0
        if seconds is not None:
            ttft = dep.ttft
            dep.ttft = seconds if ttft < 0 else ttft + ALPHA * (seconds - ttft)
        if dep.cooled and trio.current_time() >= dep.cooldown_until:
            dep.cooled = False  # the probe (or a call that outlived the cooldown) answered
            self.cooling -= 1
        if plan is not None and dep.group is not plan.group:
            self.fallbacks += 1

    def failed(self, dep: Deployment, kind: int, exc: BaseException, probe: bool) -> None:
        """Count a failed attempt on ``dep`` and cool it down as its class says."""
        dep.failures[kind] += 1
        if kind == BREAKER_OPEN:
            self.cool(dep, trio.current_time() + (retry_after(exc) or 0.0))
            return
        if not (1 << kind) & HEALTH:
            return
        group = dep.group
        now = trio.current_time()
        if kind == RATE_LIMIT:
            wait = retry_after(exc)
            self.cool(dep, now + (group.cooldown if wait is None else min(wait, group.cooldown)))
        elif kind == TIMEOUT or probe:
            self.cool(dep, now + group.cooldown)
        else:
            dep.fails += 1
            if dep.fails >= group.allowed_fails:
                dep.fails = 0
                self.cool(dep, now + group.cooldown)

    def cool(self, dep: Deployment, until: float, *, announce: bool = True) -> None:
        """Cool ``dep`` down until ``until``; with ``announce``, tell ``on_cooldown`` when
        a cooldown starts."""
        if dep.cool(until):
            self.cooling += 1
            if announce and self.on_cooldown is not None:
                self.on_cooldown(dep.name, dep.cooldown_until)


@final
class Plan:
    """The attempt record of one request: the groups it may use, the deployments it tried,
    and (after a first failure only) what each one said."""

    __slots__ = ("chain", "context", "core", "counts", "group", "last", "tried")

    def __init__(self, core: Core, group: Group) -> None:
        self.core = core
        self.group = group
        self.chain = group.chain
        self.tried = 0
        self.context = False
        self.counts: dict[Deployment, tuple[int, int, BaseException]] | None = None
        self.last: BaseException | None = None

    def fit(self, tokens: int) -> None:
        """Pass over the group's deployments too small for ``tokens`` while another fits
        (in the group, or in its ``context_fallbacks``)."""
        small = 0
        for dep in self.group.deployments:
            if dep.max_context and tokens > dep.max_context:
                small |= dep.bit
        if not small:
            return
        if any(not small & d.bit for d in self.group.deployments):
            self.tried = small
        elif self.group.context_chain:
            self.chain = self.group.context_chain
            self.context = True
            self.core.context_fallbacks += 1

    def pick(self) -> Deployment | None:
        """The next untried, ready deployment of the chain, marked tried; None if none."""
        core = self.core
        tried = self.tried
        if not tried and not core.cooling and not core.strategy:
            first = self.group.draw(core.draw)  # the common case: all ready, none tried
            self.tried = first.bit
            return first
        now = trio.current_time() if core.cooling else 0.0  # only cooled ones read it
        for group in self.chain:
            dep = core.choose(group, tried, now)
            if dep is not None:
                self.tried = tried | dep.bit
                return dep
        return None

    def failed(self, dep: Deployment, exc: Exception, probe: bool) -> bool:
        """Record a failed attempt; True to go on to another deployment, False to raise."""
        core = self.core
        kind = classify(exc)
        core.failed(dep, kind, exc, probe)
        if _tracing.active is not None:  # an event on the call's span
            _tracing.active.attempt_failed(dep.name, FAILURE_KINDS[kind], exc)
        counts = self.counts
        if counts is None:
            counts = self.counts = {}
        done = counts[dep][0] if dep in counts else 1
        counts[dep] = (done, kind, exc)
        self.last = exc
        if kind == CONTEXT_LENGTH and self.group.context_chain and not self.context:
            self.context = True
            self.chain = self.group.context_chain
            core.context_fallbacks += 1
            return True
        if (1 << kind) & SKIP:
            return True
        if (1 << kind) & self.group.fallback_mask:
            dep.failovers += 1
            return True
        core.errors += 1
        return False

    async def wait_or_raise(self) -> Deployment:
        """After every ready deployment was tried: wait (at most ``max_retry_wait``) for
        the one that can be tried soonest, or raise the last error (see ``router``)."""
        while True:
            now = trio.current_time()
            dep, wait, retry = self._soonest(now)
            deadline = trio.current_effective_deadline()
            if dep is None or wait > self.group.max_retry_wait or now + wait >= deadline:
                raise self._give_up(now)
            if retry:
                assert self.counts is not None
                done, kind, exc = self.counts[dep]
                self.counts[dep] = (done + 1, kind, exc)
                self.core.retries += 1
            self.tried |= dep.bit
            if wait > 0:
                await trio.sleep(wait)
            else:
                await trio.lowlevel.checkpoint()
            now = trio.current_time()
            if not (dep.cooled and (dep.probing or now < dep.cooldown_until)):
                return dep

    def _soonest(self, now: float) -> tuple[Deployment | None, float, bool]:
        """The deployment to wait for, the wait, and whether it is a retry of a failed one."""
        best, best_wait, retry = None, math.inf, False
        rng = self.core.rng
        for dep, (done, kind, exc) in (self.counts or {}).items():
            if not (1 << kind) & SAME_RETRY or done >= dep.max_attempts:
                continue
            wait = dep.backoff(done, rng)
            if kind == RATE_LIMIT:
                wait = max(wait, retry_after(exc) or 0.0)
            if dep.cooled:
                wait = max(wait, dep.cooldown_until - now)
            if wait < best_wait:
                best, best_wait, retry = dep, wait, True
        for group in self.chain:
            for dep in group.deployments:
                if self.tried & dep.bit or not dep.cooled or dep.probing:
                    continue
                wait = max(0.0, dep.cooldown_until - now)
                if wait < best_wait:
                    best, best_wait, retry = dep, wait, False
        return best, best_wait, retry

    def _give_up(self, now: float) -> BaseException:
        core = self.core
        core.errors += 1
        if self.last is not None:
            return self.last
        core.refused += 1
        waits = [d.cooldown_until - now for g in self.chain for d in g.deployments if d.cooled]
        name = f"model group {self.group.name!r}"
        return CircuitOpenError(name, max(0.0, min(waits, default=0.0)))
