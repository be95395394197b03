"""Secrets in config values: the field markers, masking, and `redact_url`.

A field marked ``metadata=SECRET`` (an API key, header values, MCP server ``env``, a
password) never shows its value: its repr, `Config.to_dict`, ``to_toml`` and every
`ConfigError` say ``***`` instead. A field marked ``metadata=URL`` shows its URL with the
password of the userinfo masked (``redis://:***@host``). Both rules live here only, so the
repr, the rendering and the error messages cannot disagree.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Final

from ._messages import safe_repr

__all__ = ["MASK", "SECRET", "URL", "mask", "masked_repr", "redact_url", "shown", "url_repr"]

MASK: Final = "***"
"""What a masked value reads."""

_KIND: Final = "agentflow_trio.secret"

SECRET: Mapping[str, str] = types.MappingProxyType({_KIND: "secret"})
"""Field metadata marking a secret (``attrs.field(default="", metadata=SECRET)``): a
non-empty secret string, and every non-empty value of a secret list or dict, reads ``"***"``
(an empty one stays empty: ``"***"`` would claim a key is set)."""

URL: Mapping[str, str] = types.MappingProxyType({_KIND: "url"})
"""Field metadata marking a URL that may carry a password in its userinfo: it reads as
`redact_url` gives it."""


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo replaced by ``***``; anything else is kept.

    ``redis://:s3cret@host:6379/0`` -> ``redis://:***@host:6379/0``,
    ``https://user:pw@h/v1`` -> ``https://user:***@h/v1``; a URL without a password (or
    not a URL at all) comes back unchanged. The authority ends at the first ``/``, ``?``
    or ``#`` after ``scheme://`` (as `urllib.parse.urlsplit` reads it) and its userinfo at
    the last ``@``; this never raises, whatever the text.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    end = min(ends, default=len(rest))
    userinfo, at, hostport = rest[:end].rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not (at and colon):
        return url
    return f"{scheme}://{user}:{MASK}@{hostport}{rest[end:]}"


def mask(value: Any, metadata: Mapping[str, Any]) -> Any:
    """``value`` as it may be shown, by its field's ``metadata`` (`SECRET`, `URL` or none)."""
    kind = metadata.get(_KIND)
    if kind == "secret":
        return _masked(value)
    if kind == "url" and isinstance(value, str):
        return redact_url(value)
    return value


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return MASK if value else value
    if isinstance(value, Mapping):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_masked(v) for v in value)
    return MASK


def masked_repr(value: Any) -> str:
    """The repr of a `SECRET` field (``repr=masked_repr``): ``'***'``, ``{'X-Key': '***'}``."""
    return safe_repr(_masked(value))


def url_repr(value: Any) -> str:
    """The repr of a `URL` field (``repr=url_repr``): the URL, its password masked."""
    return safe_repr(redact_url(value) if isinstance(value, str) else value)


def shown(value: object, metadata: Mapping[str, Any]) -> str:
    """How an error message shows a (possibly wrong) value of a field with ``metadata``."""
    kind = metadata.get(_KIND)
    if kind == "secret":
        return MASK
    return url_repr(value) if kind == "url" else safe_repr(value)
