"""Credentials in a base URL's userinfo (``https://user:pw@proxy/v1``) leave the URL.

A URL with userinfo ends up in log lines (httpx2 logs every request URL) and error messages.
The adapters therefore send requests to the URL without it and carry the credentials as
a Basic ``authorization`` header, which is what HTTP clients do with userinfo anyway; an
``authorization`` header the config already sets (an ``api_key``) wins.
"""

from __future__ import annotations

import base64
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["move_userinfo", "strip_userinfo"]


def strip_userinfo(url: str) -> str:
    """``url`` without ``user:password@`` (unchanged when it has none or cannot be parsed)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def move_userinfo(url: str, headers: dict[str, str]) -> str:
    """``url`` without its userinfo; the userinfo becomes a Basic authorization header in
    ``headers`` (changed in place) unless ``headers`` already authorizes."""
    bare = strip_userinfo(url)
    if bare == url:
        return url
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    if not any(name.lower() == "authorization" for name in headers):
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
        headers["authorization"] = f"Basic {token}"
    return bare
