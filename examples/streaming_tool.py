"""A streaming tool: results move in batches through a bounded channel, with backpressure,
and a failure mid-stream arrives as a final error item after the batches already sent.

python examples/streaming_tool.py
"""

from __future__ import annotations

import trio

from agentflow_trio.tools import StreamError, StreamSink, open_tool_stream


async def scan_logs(sink: StreamSink[dict[str, object]], lines: int, fail_at: int | None) -> None:
    """Produce one dict per log line; optionally fail part-way through."""
    for i in range(lines):
        if i == fail_at:
            raise OSError(f"log shard unreadable at line {i}")
        await sink.send({"line": i, "level": "ERROR" if i % 97 == 0 else "INFO"})


async def consume(lines: int, fail_at: int | None) -> None:
    errors = items = batches_seen = 0
    async with open_tool_stream(scan_logs, lines, fail_at, batch_size=100, buffer=4) as batches:
        async for batch in batches:
            if isinstance(batch, StreamError):
                print(f"  stream ended with {batch.type}: {batch.message}")
                break
            batches_seen += 1
            items += len(batch)
            errors += sum(1 for row in batch if row["level"] == "ERROR")
    print(f"  {items} lines in {batches_seen} batches, {errors} errors")


async def first_match() -> None:
    # Leaving the block early cancels the producer: nothing keeps running afterwards.
    async with open_tool_stream(scan_logs, 10**9, None) as batches:
        async for batch in batches:
            if isinstance(batch, list):
                hit = next(row for row in batch if row["level"] == "ERROR")
                print(f"  first ERROR at line {hit['line']}; producer cancelled")
                break


async def main() -> None:
    print("full scan:")
    await consume(10_000, None)
    print("scan that fails at line 2,550:")
    await consume(10_000, 2_550)
    print("early exit from an endless stream:")
    await first_match()


if __name__ == "__main__":
    trio.run(main)
