"""Unwrap the exception group a nursery raises when it holds one real error."""

from __future__ import annotations

from typing import NoReturn

import trio

__all__ = ["reraise_single"]


def reraise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the group's only non-Cancelled exception (or its first Cancelled) bare.

    A group with several real errors is raised unchanged: nothing is dropped.
    """
    cancelled: BaseException | None = None
    real: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, trio.Cancelled):
            cancelled = cancelled or exc
        else:
            real.append(exc)
    if len(real) > 1:
        raise group
    single = real[0] if real else cancelled
    assert single is not None, "an exception group is never empty"
    context = single.__context__
    try:
        raise single
    finally:
        single.__context__ = context
        del single, context, group
