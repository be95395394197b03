"""Read a tool's description and per-parameter descriptions from its docstring.

The first paragraph is the description. Parameters come from a Google-style section
(``Args:``, ``Arguments:``, ``Parameters:``; lines ``name (type): text`` or ``name: text``)
or a NumPy-style one (``Parameters`` underlined with dashes; ``name : type`` then indented
text). Continuation lines are joined with single spaces. Anything unrecognised is ignored:
a docstring never makes `tool` fail.
"""

from __future__ import annotations

import inspect
import re
from typing import Final

__all__ = ["parse_docstring"]

_GOOGLE_HEADERS: Final = frozenset({"args:", "arguments:", "parameters:", "params:"})
_NUMPY_HEADERS: Final = frozenset({"parameters", "params", "arguments"})
_GOOGLE_ITEM: Final = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ITEM: Final = re.compile(r"^(\w+)\s*(?::.*)?$")
_SECTION_END: Final = re.compile(r"^[A-Z][A-Za-z ]*:$")
_UNDERLINE: Final = re.compile(r"^-{3,}$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Return ``(description, {parameter: description})`` from a docstring."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    return _summary(lines), _google(lines) or _numpy(lines)


def _summary(lines: list[str]) -> str:
    out: list[str] = []
    for line in lines:
        text = line.strip()
        is_header = text.lower() in _GOOGLE_HEADERS or text.lower() in _NUMPY_HEADERS
        if not text or is_header:
            break
        out.append(text)
    return " ".join(out)


def _google(lines: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    inside = False
    base = -1
    current: str | None = None
    for line in lines:
        text = line.strip()
        if not inside:
            inside = text.lower() in _GOOGLE_HEADERS
            continue
        if not text:
            current = None
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0 or (_SECTION_END.match(text) and indent <= max(base, 0)):
            break
        if base < 0:
            base = indent
        match = _GOOGLE_ITEM.match(text) if indent == base else None
        if match is not None:
            current = match.group(1)
            params[current] = match.group(2).strip()
        elif current is not None:
            params[current] = f"{params[current]} {text}".strip()
    return params


def _numpy(lines: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    start = None
    for i in range(len(lines) - 1):
        if lines[i].strip().lower() in _NUMPY_HEADERS and _UNDERLINE.match(lines[i + 1].strip()):
            start = i + 2
            break
    if start is None:
        return params
    current: str | None = None
    for i in range(start, len(lines)):
        line = lines[i]
        text = line.strip()
        if i + 1 < len(lines) and _UNDERLINE.match(lines[i + 1].strip()):
            break  # the next section's header
        if not text:
            continue
        if not line[0].isspace():
            match = _NUMPY_ITEM.match(text)
            current = match.group(1) if match else None
            if current is not None:
                params[current] = ""
        elif current is not None:
            params[current] = f"{params[current]} {text}".strip()
    return params
