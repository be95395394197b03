"""The ``agentcli`` command line: one click group, one module per command family.

The group only parses, loads and hands over; what the commands do lives in the library.

- ``load``: ``benchmark`` and ``loadtest`` (the load generator, `agentflow_trio.loadgen`);
- ``serve``: ``serve`` (`agentflow_trio.server.serve_runner`) and ``worker``
  (`agentflow_trio.distributed.Worker`);
- ``mock``: ``mock-llm`` (`agentflow_trio.mockllm`), its flags generated from
  `MockLLMConfig`;
- ``config``: ``config validate|show`` (`agentflow_trio.config`);
- ``_options`` the options every command shares, ``_plumbing`` loading and running,
  ``_guard`` one line per failure and the exit codes, ``_loadrun`` the run of a load
  command.

``serve``, ``worker``, ``benchmark`` and ``loadtest`` host an `App` (``--app MODULE:ATTR``:
an App, a function returning one, or a dict of agents) the same way,
`agentflow_trio.server.service.open_hosted_app`, with what ``[monitoring]`` asks for.

Importing this package costs only click: each command imports what it needs (trio, the
server, the load generator) inside its function, so ``agentcli --help`` stays fast. No
input shows a traceback (``_guard``): a bad flag value is a click usage error, and a
broken config file or scenario script is a one-line ``Error: ...`` (both exit 2); a busy
port or another error while running is one line, exit 1; Ctrl-C exits 130 (a load run
prints its partial results first); a crossed ``--threshold`` exits 99. A command that
runs until told to stop (``mock-llm``, ``serve``) ends on SIGINT or SIGTERM with exit 0.
"""

from __future__ import annotations

import click

from ._guard import GuardedGroup
from .config import config_group
from .load import benchmark, loadtest
from .mock import mock_llm
from .serve import serve, worker

__all__ = ["main"]

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(name="agentcli", cls=GuardedGroup, context_settings=_CONTEXT)
def main() -> None:
    """agentflow_trio: run, benchmark and serve LLM agent systems on trio."""


for _command in (benchmark, loadtest, serve, worker, mock_llm, config_group):
    main.add_command(_command)
