"""Options and helpers shared by the `edgeveil` command modules (cli.py, cli_*.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

REGISTRY_OPTION = click.option(
    "--registry",
    "registry_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="registry database [env EDGEVEIL_REGISTRY; default ./edgeveil-registry.db]",
)
KEY_FILE_OPTION = click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="master key file [default <registry>.key; EDGEVEIL_MASTER_KEY holds the key as hex]",
)


def open_registry(registry_path: Path | None, key_file: Path | None) -> Any:
    """The registry named on the command (or on `registry`, or by the environment)."""
    from .registry import Registry
    from .registry_db import SCHEMA_VERSION

    group = click.get_current_context().find_object(dict) or {}
    reg = Registry.open(
        registry_path or group.get("registry_path"), key_path=key_file or group.get("key_file")
    )
    if reg.upgraded_from is not None:
        click.echo(
            f"edgeveil: upgraded registry {reg.path} from schema version {reg.upgraded_from} "
            f"to {SCHEMA_VERSION}: every device row tagged as it stood (docs/registry.md)",
            err=True,
        )
    return reg
