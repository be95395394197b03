"""The distributed layer's errors live in `agentflow_trio.errors`; re-exported here."""

from __future__ import annotations

from ..errors import BrokerUnavailable, ResultTimeout

__all__ = ["BrokerUnavailable", "ResultTimeout"]
