"""``agentcli config validate|show``: check a config file, or print the effective one.

The checking and the TOML rendering are the config room's (`load_config`,
`Config.to_toml`); this module only reports them.
"""

from __future__ import annotations

import click

from ._plumbing import load_config

__all__ = ["config_group"]


@click.group("config")
def config_group() -> None:
    """Check a config file, or print the effective configuration."""


@config_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def config_validate(file: str) -> None:
    """Check FILE; print ``OK: FILE`` (exit 0) or the problem naming the key (exit 1)."""
    from agentflow_trio.config import load_config as load_file

    try:
        load_file(file)
    except ValueError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(f"OK: {file}")


@config_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
def config_show(file: str | None) -> None:
    """Print the effective config of FILE (or the defaults) as TOML, secrets masked."""
    click.echo(load_config(file).to_toml(), nl=False)
