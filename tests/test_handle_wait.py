"""`EventHandle.result` waiters (autojump clock): the first caller waits without a
`trio.Event`, others with one; each gets the result once it is there, and a cancelled
waiter leaves the handle usable for the next."""

from __future__ import annotations

from typing import Any

import trio

import agentflow_trio as af


@af.agent(name="nap")
async def nap(ctx: af.Context, event: af.Event) -> float:
    await trio.sleep(float(event.data["seconds"]))
    return float(event.data["seconds"])


async def test_several_waiters_and_a_cancelled_one(autojump_clock: Any) -> None:
    async with af.Runner(agents={"nap": nap}) as runner:
        handle = await runner.emit(af.Event("nap", {"seconds": 10}))
        got: list[tuple[str, float]] = []

        async def wait(name: str) -> None:
            result = await handle.result()
            got.append((name, result.output))

        with trio.move_on_after(1):  # the first waiter gives up before the end
            await handle.result()
        assert not handle.done
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "second")
            nursery.start_soon(wait, "third")
        assert sorted(got) == [("second", 10.0), ("third", 10.0)]
        assert handle.done and (await handle.result()).output == 10.0
        assert trio.current_time() == 10


async def test_one_waiter_is_woken_once_and_late_waiters_return_at_once(
    autojump_clock: Any,
) -> None:
    async with af.Runner(agents={"nap": nap}) as runner:
        handle = await runner.emit(af.Event("nap", {"seconds": 3}))
        result = await handle.result()
        assert result.output == 3.0 and trio.current_time() == 3
        again = await handle.result()
        assert again is result
