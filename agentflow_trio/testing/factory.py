"""`RunnerFactory`: builds recorded `Runner` objects for a test (the ``runner_factory`` fixture).

Each runner it builds gets a `TraceRecorder`; `RunnerFactory.check_all` (run by the
fixture at teardown) checks every runner that was used for conservation, bounds and
order. Timeouts and shutdown timing need what only a driver sees (emit timeouts, the
close and exit moments): check them with `drive`/`replay` or `check`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, final

import attrs

from ..agents import AgentFunction, Hooks, _AgentLike
from ..config import Config, RunnerConfig, parse_section, section_to_dict
from ..runner import Runner
from .invariants import ALL_INVARIANTS, Invariant, check_trace
from .recorder import TraceRecorder
from .trace import Bounds, Trace

__all__ = ["TEARDOWN_INVARIANTS", "RunnerFactory", "runner_config"]

_RUNNER_SETTINGS = frozenset(attrs.fields_dict(RunnerConfig))

TEARDOWN_INVARIANTS: frozenset[Invariant] = frozenset(
    {Invariant.CONSERVATION, Invariant.BOUNDS, Invariant.ORDER}
)
"""What `RunnerFactory.check_all` checks: the invariants the hooks alone can prove."""


def runner_config(config: Config | None = None, **runner: Any) -> Config:
    """``config`` (default `Config()`) with ``[runner]`` settings replaced by ``runner``
    (``worker_pool_size=1``, ``event_timeout="5s"`` ...), parsed and validated like TOML.

    Raises:
        ConfigError: an unknown setting or a bad value.
    """
    base = config if config is not None else Config()
    if not runner:
        return base
    merged = {**section_to_dict(base.runner), **runner}
    return attrs.evolve(base, runner=parse_section(RunnerConfig, merged, source="<runner_factory>"))


@final
class RunnerFactory:
    """Builds `Runner` objects that record themselves; one per test (the fixture).

    ``factory(agents, worker_pool_size=2, ...)`` is ``Runner(runner_config(config, ...),
    agents, ...)`` with a `TraceRecorder` attached (agent hooks too with
    ``track_agents=True``). ``autojump`` says whether tests using it run under
    ``MockClock(autojump_threshold=0)``; the fixture sets it (see the plugin).
    """

    __slots__ = ("_built", "autojump", "check_at_teardown")

    def __init__(self, *, autojump: bool = True, check_at_teardown: bool = True) -> None:
        self.autojump = autojump
        self.check_at_teardown = check_at_teardown
        self._built: list[tuple[Runner, TraceRecorder, bool]] = []

    def __call__(
        self,
        agents: Mapping[str, _AgentLike | AgentFunction] | None = None,
        *,
        config: Config | None = None,
        hooks: Hooks | None = None,
        track_agents: bool = False,
        check: bool = True,
        **kwargs: Any,
    ) -> Runner:
        """A new recorded runner.

        ``kwargs`` holds ``[runner]`` settings (see `runner_config`); any other keyword
        goes to `Runner` (``services``, or ``llm``, ``tools``, ``mcp``, ``metrics``,
        ``sessions`` ...); ``hooks`` (else ``services.hooks``) are kept and the recorder's
        callables appended to them. ``check=False`` leaves this runner out of the teardown
        check (tests of deliberately broken runners).
        """
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in _RUNNER_SETTINGS}
        runner = Runner(runner_config(config, **settings), agents, hooks=hooks, **kwargs)
        recorder = TraceRecorder(track_agents=track_agents).attach(runner)
        self._built.append((runner, recorder, check))
        return runner

    @property
    def runners(self) -> list[Runner]:
        """Every runner built so far, oldest first."""
        return [runner for runner, _, _ in self._built]

    def recorder(self, runner: Runner) -> TraceRecorder:
        """The recorder attached to ``runner``.

        Raises:
            LookupError: this factory did not build ``runner``.
        """
        for built, recorder, _ in self._built:
            if built is runner:
                return recorder
        raise LookupError(f"{runner!r} was not built by this RunnerFactory")

    def trace(self, runner: Runner) -> Trace:
        """``runner``'s trace so far; complete once the runner has closed."""
        recorder = self.recorder(runner)
        if runner.statistics().closed:
            recorder.mark_complete(statistics=runner.statistics())
        return recorder.trace()

    def check(
        self,
        runner: Runner,
        bounds: Bounds | None = None,
        *,
        invariants: Collection[Invariant | str] = ALL_INVARIANTS,
    ) -> Trace:
        """`check_trace` on ``runner``'s trace; returns the trace.

        Raises:
            InvariantViolation: a rule was broken.
        """
        trace = self.trace(runner)
        check_trace(trace, bounds, invariants=invariants)
        return trace

    def check_all(self) -> None:
        """Check `TEARDOWN_INVARIANTS` on every runner that accepted an event (and was
        built with ``check=True``).

        Raises:
            InvariantViolation: the first runner with a broken rule.
        """
        for runner, _, check in self._built:
            if check and runner.statistics().accepted:
                self.check(runner, invariants=TEARDOWN_INVARIANTS)
