"""Walking the live trio task tree: from the root task through every child nursery."""

from __future__ import annotations

from collections.abc import Iterator

import trio

__all__ = ["count_tasks", "walk_tasks"]


def walk_tasks(
    root: trio.lowlevel.Task | None = None,
) -> Iterator[tuple[int, trio.lowlevel.Task | trio.Nursery]]:
    """Yield ``(depth, task_or_nursery)`` depth-first, tasks and their nurseries in turn.

    Starts at ``root`` (default: the run's root task). Children are ordered by name so
    two dumps of the same tree read the same. Must be called from inside ``trio.run``.
    """
    start = root if root is not None else trio.lowlevel.current_root_task()
    if start is None:
        return
    stack: list[tuple[int, trio.lowlevel.Task | trio.Nursery]] = [(0, start)]
    while stack:
        depth, node = stack.pop()
        yield depth, node
        if isinstance(node, trio.Nursery):
            tasks = sorted(node.child_tasks, key=lambda t: t.name, reverse=True)
            stack.extend((depth + 1, task) for task in tasks)
        else:
            stack.extend((depth + 1, nursery) for nursery in reversed(node.child_nurseries))


def count_tasks() -> int:
    """How many tasks are alive in this trio run now (the root task included)."""
    root = trio.lowlevel.current_root_task()
    if root is None:
        return 0
    count = 0
    tasks = [root]
    while tasks:
        task = tasks.pop()
        count += 1
        for nursery in task.child_nurseries:
            tasks.extend(nursery.child_tasks)
    return count
