"""Shared test settings.

Rules for every test module: servers bind 127.0.0.1 on port 0 (never a fixed port, never
another address); time-dependent logic runs under ``MockClock(autojump_threshold=0)``
(the ``autojump_clock`` fixture from pytest-trio); tests doing real I/O use the real clock
and put an absolute ``trio.fail_after`` around their body.
"""

from __future__ import annotations

import signal

from hypothesis import settings

# The testing kit's fixtures (also registered by the `pytest11` entry point once installed).
pytest_plugins = ["agentflow_trio.testing.plugin"]

settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile("ci")

# Tests send SIGINT (Ctrl-C) to agentcli children. A shell starts a background job with
# SIGINT ignored, and an ignored signal stays ignored across exec: the children would
# never see it. A handled one is reset to the default on exec, so restore Python's own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
