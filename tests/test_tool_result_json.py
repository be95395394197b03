"""A tool result's JSON text (what the model reads) is exactly what the standard library
writes, whether the fast orjson path or the standard library produced it (issue #23)."""

from __future__ import annotations

import enum
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.tools._result import ToolResult, _default, dumps


def _stdlib(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_default)


class Colour(enum.Enum):
    RED = "red"


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.just(Colour.RED),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.dictionaries(st.integers(0, 9), inner, max_size=2),  # keys the stdlib turns into text
        st.frozensets(st.integers(0, 9), max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=_VALUES)
def test_the_text_is_the_standard_librarys(value: Any) -> None:
    assert dumps(value) == _stdlib(value)


def test_an_ok_results_content_is_its_output() -> None:
    result = ToolResult("c1", "weather", "ok", {"city": "Paris", "temperature": 21.5})
    assert result.content() == '{"city":"Paris","temperature":21.5}'
    assert result.to_message().content == result.content()
