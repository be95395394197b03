"""Reading ``agentflow.toml``: the file (bounded), its TOML syntax, `Config.from_mapping`,
then `check_config`."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Final

from ..errors import ConfigError
from ._shape import MAX_DEPTH
from .checks import check_config
from .sections import Config
from .units import format_size

__all__ = ["MAX_FILE_SIZE", "load_config"]

MAX_FILE_SIZE: Final = 2**20
"""A config file holds at most 1MiB (``agentflow.toml`` with every key is about 4KiB)."""


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML file (``env`` defaults to ``os.environ``).

    The file holds at most `MAX_FILE_SIZE` bytes and nests tables and arrays at most
    ``MAX_DEPTH`` (32) levels deep. Besides each value, the rules of `check_config` are
    applied, so a config loaded here is one ``serve``, ``benchmark`` and ``worker`` accept.

    Raises:
        ConfigError: the file is missing, unreadable or too large (names the path), is
            not valid TOML (names the line) or nests too deep, holds unknown keys (names
            them all) or a bad value (names the dotted key), or breaks a rule of
            `check_config`.
    """
    source = os.fspath(path)
    text = _read(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=source) from None
    except RecursionError:
        message = f"tables and arrays nest deeper than the maximum of {MAX_DEPTH} levels"
        raise ConfigError(message, source=source) from None
    except ValueError as exc:  # a number of more than 4,300 digits
        raise ConfigError(f"invalid TOML: {str(exc).split(';')[0]}", source=source) from None
    config = Config.from_mapping(data, source=source, env=env)
    check_config(config, source=source)
    return config


def _read(source: str) -> str:
    """The file's text, refused beyond `MAX_FILE_SIZE` (read no further than that)."""
    try:
        with open(source, "rb") as file:
            raw = file.read(MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc}", source=source) from None
    if len(raw) > MAX_FILE_SIZE:
        limit = format_size(MAX_FILE_SIZE)
        raise ConfigError(f"the file is larger than the maximum of {limit}", source=source)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read config file: {exc}", source=source) from None
