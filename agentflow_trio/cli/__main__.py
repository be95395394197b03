"""``python -m agentflow_trio.cli``: the same as the ``agentcli`` console script."""

from agentflow_trio.cli import main

if __name__ == "__main__":
    main(prog_name="agentcli")
