"""Configuration: ``agentflow.toml`` -> frozen attrs values, with durations, sizes and
``${ENV}`` interpolation.

`load_config` reads a file into a `Config`, the root of one frozen attrs class per table
(`RunnerConfig`, `LLMConfig`, ...); ``Config()`` is every default. Every problem raises
`ConfigError` naming the source, the dotted key, what was expected and what was found.
`Config.to_dict` and `Config.to_toml` render the effective config, secrets masked.

Inside: ``units`` (`Duration`, `Size`, their parsers and renderers), ``sections`` (the
classes), ``convert`` (the generic TOML <-> attrs machine and ``${ENV}``), ``loader``
(the file). Nothing here imports anything above ``errors``.
"""

from ..errors import ConfigError as ConfigError
from .convert import parse_section as parse_section
from .convert import section_to_dict as section_to_dict
from .convert import section_to_toml as section_to_toml
from .loader import load_config as load_config
from .sections import CircuitBreakerConfig as CircuitBreakerConfig
from .sections import Config as Config
from .sections import DistributedConfig as DistributedConfig
from .sections import LLMConfig as LLMConfig
from .sections import MCPConfig as MCPConfig
from .sections import MCPServerConfig as MCPServerConfig
from .sections import MemoryConfig as MemoryConfig
from .sections import MonitoringConfig as MonitoringConfig
from .sections import PerformanceConfig as PerformanceConfig
from .sections import RateLimitConfig as RateLimitConfig
from .sections import RetryConfig as RetryConfig
from .sections import RunnerConfig as RunnerConfig
from .sections import RuntimeConfig as RuntimeConfig
from .units import Duration as Duration
from .units import Size as Size
from .units import format_duration as format_duration
from .units import format_size as format_size
from .units import parse_duration as parse_duration
from .units import parse_size as parse_size

__all__ = [
    "CircuitBreakerConfig",
    "Config",
    "ConfigError",
    "DistributedConfig",
    "Duration",
    "LLMConfig",
    "MCPConfig",
    "MCPServerConfig",
    "MemoryConfig",
    "MonitoringConfig",
    "PerformanceConfig",
    "RateLimitConfig",
    "RetryConfig",
    "RunnerConfig",
    "RuntimeConfig",
    "Size",
    "format_duration",
    "format_size",
    "load_config",
    "parse_duration",
    "parse_section",
    "parse_size",
    "section_to_dict",
    "section_to_toml",
]
