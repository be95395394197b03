"""A cheaper ``__init__`` for the hot frozen ``attrs`` value classes (issue #23).

``attrs.frozen(slots=True)`` makes an ``__init__`` that sets each field through
``object.__setattr__`` bound to the new instance (a name lookup per field); a tool loop
makes a few dozen such values per event (messages, requests, responses, tool calls and
results, usage). `fast_init` replaces that ``__init__`` with one that calls each slot's
own descriptor (``member_descriptor.__set__``): the same signature, defaults and result,
about 40% less time per value. The class stays frozen: ``__setattr__`` still raises.

Only for classes without validators, converters, factories, ``kw_only`` fields or
``__attrs_post_init__`` (`fast_init` refuses the others, at import).
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs

__all__ = ["fast_init"]

C = TypeVar("C", bound=type)


def fast_init(cls: C) -> C:
    """``cls`` with its ``__init__`` setting the slots through their descriptors.

    Raises:
        TypeError: ``cls`` is not a slotted ``attrs`` class of plain fields.
    """
    fields = attrs.fields(cls)
    if hasattr(cls, "__attrs_post_init__") or hasattr(cls, "__attrs_pre_init__"):
        raise TypeError(f"{cls.__name__}: __attrs_post_init__ is not supported")
    namespace: dict[str, Any] = {}
    params: list[str] = []
    lines: list[str] = []
    for f in fields:
        slot = next((k.__dict__[f.name] for k in cls.__mro__ if f.name in k.__dict__), None)
        plain = f.validator is None and f.converter is None and not f.kw_only and f.init
        if slot is None or not hasattr(slot, "__set__") or not plain or f.alias != f.name:
            raise TypeError(f"{cls.__name__}.{f.name}: not a plain slotted field")
        if isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            raise TypeError(f"{cls.__name__}.{f.name}: a factory default is not supported")
        namespace[f"_set_{f.name}"] = slot.__set__
        if f.default is attrs.NOTHING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        lines.append(f"    _set_{f.name}(self, {f.name})")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(lines or ["    pass"])
    exec(source, namespace)  # made from the field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses assigning __init__
    return cls
