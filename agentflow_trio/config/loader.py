"""Reading ``agentflow.toml``: the file, its TOML syntax, then `Config.from_mapping`."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError
from .sections import Config

__all__ = ["load_config"]


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML file (``env`` defaults to ``os.environ``).

    Raises:
        ConfigError: the file is missing or unreadable (names the path), is not valid
            TOML (names the line), or holds a bad value (names the dotted key).
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file: {exc}", source=source) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=source) from None
    return Config.from_mapping(data, source=source, env=env)
