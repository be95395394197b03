"""Configuration: ``agentflow.toml`` -> frozen attrs values, with durations, sizes and
``${ENV}`` interpolation.

`load_config` reads a file into a `Config`, the root of one frozen attrs class per table
(`RunnerConfig`, `LLMConfig`, ...); ``Config()`` is every default. Every problem raises
`ConfigError` naming the source, the dotted key, what was expected and what was found;
all unknown keys of a file are named at once, each with its hint. `Config.to_dict`,
`Config.to_toml` and every repr mask secrets (`redact_url` masks a URL's password).

Hostile input is bounded: a file holds at most `MAX_FILE_SIZE` bytes nested at most
`MAX_DEPTH` levels, every number has an upper bound, and `check_config` (run by
`load_config`) refuses what the services would refuse later.

Inside: ``units`` (`Duration`, `Size`, their parsers and renderers), ``sections`` (the
classes), ``convert`` (the generic TOML <-> attrs machine and ``${ENV}``), ``checks``
(the services' rules), ``loader`` (the file). Nothing here imports anything above
``errors``.
"""

from ..errors import ConfigError as ConfigError
from ._secrets import redact_url as redact_url
from ._shape import MAX_DEPTH as MAX_DEPTH
from .checks import API_KEY_VARIABLES as API_KEY_VARIABLES
from .checks import check_config as check_config
from .convert import parse_section as parse_section
from .convert import section_to_dict as section_to_dict
from .convert import section_to_toml as section_to_toml
from .loader import MAX_FILE_SIZE as MAX_FILE_SIZE
from .loader import load_config as load_config
from .sections import FAILURE_CLASSES as FAILURE_CLASSES
from .sections import CircuitBreakerConfig as CircuitBreakerConfig
from .sections import Config as Config
from .sections import DeploymentConfig as DeploymentConfig
from .sections import DistributedConfig as DistributedConfig
from .sections import LimitsConfig as LimitsConfig
from .sections import LLMConfig as LLMConfig
from .sections import MCPConfig as MCPConfig
from .sections import MCPServerConfig as MCPServerConfig
from .sections import MemoryConfig as MemoryConfig
from .sections import MonitoringConfig as MonitoringConfig
from .sections import PerformanceConfig as PerformanceConfig
from .sections import PriceConfig as PriceConfig
from .sections import RateLimitConfig as RateLimitConfig
from .sections import RetryConfig as RetryConfig
from .sections import RouterConfig as RouterConfig
from .sections import RouterGroupConfig as RouterGroupConfig
from .sections import RunnerConfig as RunnerConfig
from .sections import RuntimeConfig as RuntimeConfig
from .sections import TracingConfig as TracingConfig
from .units import Duration as Duration
from .units import Size as Size
from .units import format_duration as format_duration
from .units import format_size as format_size
from .units import parse_duration as parse_duration
from .units import parse_size as parse_size

__all__ = [
    "API_KEY_VARIABLES",
    "FAILURE_CLASSES",
    "MAX_DEPTH",
    "MAX_FILE_SIZE",
    "CircuitBreakerConfig",
    "Config",
    "ConfigError",
    "DeploymentConfig",
    "DistributedConfig",
    "Duration",
    "LLMConfig",
    "LimitsConfig",
    "MCPConfig",
    "MCPServerConfig",
    "MemoryConfig",
    "MonitoringConfig",
    "PerformanceConfig",
    "PriceConfig",
    "RateLimitConfig",
    "RetryConfig",
    "RouterConfig",
    "RouterGroupConfig",
    "RunnerConfig",
    "RuntimeConfig",
    "Size",
    "TracingConfig",
    "check_config",
    "format_duration",
    "format_size",
    "load_config",
    "parse_duration",
    "parse_section",
    "parse_size",
    "redact_url",
    "section_to_dict",
    "section_to_toml",
]
