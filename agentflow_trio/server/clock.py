"""The old home of `PreciseClock`, kept so ``agentflow_trio.server.clock`` imports work.

The clock now lives in :mod:`agentflow_trio.mockllm.clock`; this module only re-exports it.
"""

from agentflow_trio.mockllm import PreciseClock as PreciseClock

__all__ = ["PreciseClock"]
