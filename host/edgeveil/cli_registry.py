"""`edgeveil init` and `edgeveil registry list|show|revoke|export` over edgeveil.registry."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .cli_common import KEY_FILE_OPTION, REGISTRY_OPTION, open_registry


@click.command("init")
@REGISTRY_OPTION
@KEY_FILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="machine-readable result on stdout")
def init_cmd(registry_path: Path | None, key_file: Path | None, as_json: bool) -> None:
    """Create a device registry and its master key (refuses to overwrite either).

    The master key is 32 random bytes written to a new file only you can read (mode 0600),
    by default next to the database as <registry>.key; or, if EDGEVEIL_MASTER_KEY is set
    (64 hex digits), that key and no file. Back the key up apart from the database: without
    it the devices' keys cannot be recovered.

    \b
    Examples:
      edgeveil init                          ./edgeveil-registry.db and its .key
      edgeveil init --registry /srv/edgeveil/fleet.db --key-file /secure/fleet.key
      EDGEVEIL_MASTER_KEY=$(cat fleet.key.hex) edgeveil init --registry fleet.db
      edgeveil init --json                   {"registry": ..., "key_file": ..., ...}
    """
    import os

    from .registry_db import init_registry
    from .registry_keys import ENV_MASTER_KEY, default_key_path

    db = init_registry(registry_path, key_file)
    from_env = key_file is None and bool(os.environ.get(ENV_MASTER_KEY))
    written = None if from_env else (key_file or default_key_path(db))
    if as_json:
        result = {
            "registry": str(db),
            "key_file": None if written is None else str(written),
            "key_from": ENV_MASTER_KEY if from_env else "key_file",
        }
        click.echo(json.dumps(result))
    elif from_env:
        click.echo(
            f"created registry {db}\nmaster key: from {ENV_MASTER_KEY} (not written anywhere)"
        )
    else:
        click.echo(f"created registry {db}\nmaster key: {written} (mode 0600): back it up")


@click.group("registry")
@REGISTRY_OPTION
@KEY_FILE_OPTION
@click.pass_context
def registry_group(ctx: click.Context, registry_path: Path | None, key_file: Path | None) -> None:
    """The device registry: devices, their status, and their keys wrapped under a master key.

    Keys are never printed. `export --format cose-key --include-secrets` is the one way a
    backend gets them. --registry and --key-file go here or on each command; the master
    key may instead come from EDGEVEIL_MASTER_KEY. list and show need no master key.

    \b
    Examples:
      edgeveil registry list --status active
      edgeveil registry --registry fleet.db show 3f9a0c12d4e5b6a7 --json
      edgeveil registry revoke 3f9a0c12d4e5b6a7
      edgeveil registry export --format cose-key --include-secrets -o backend-keys.cbor
      edgeveil registry export --format json | jq '.devices[].dev_id'
    """
    ctx.ensure_object(dict).update(registry_path=registry_path, key_file=key_file)


def _show_record(rec: Any) -> None:
    for name, value in rec.to_json().items():
        if isinstance(value, bool):
            value = "yes" if value else "NO: no master key, nothing vouches for these values"
        click.echo(f"{name + ':':<13} {'-' if value is None else value}")


_UNAUTHENTICATED = "metadata NOT authenticated: no master key (rows read without their tags)"


@registry_group.command("list")
@click.option(
    "--status",
    type=click.Choice(["pending", "active", "revoked", "wiped"]),
    help="only devices with this status",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@REGISTRY_OPTION
@KEY_FILE_OPTION
def registry_list(
    status: str | None, as_json: bool, registry_path: Path | None, key_file: Path | None
) -> None:
    """List devices (no secrets), oldest first.

    \b
    Examples:
      edgeveil registry list
      edgeveil registry list --status pending          what `provision --resume` settles
      edgeveil registry list --json | jq -r '.[] | select(.status=="active") | .dev_id'
    """
    with open_registry(registry_path, key_file) as reg:
        recs = reg.list(status)
        authenticated = reg.has_key
    if as_json:
        click.echo(json.dumps([r.to_json() for r in recs], indent=2))
        return
    if not recs:
        click.echo("no devices" + (f" with status {status}" if status else ""))
    else:
        head = f"{'DEV_ID':<17} {'BOARD':<16} {'STATUS':<8} {'COUNTER':>8}  {'PORT':<14} UPDATED"
        click.echo(head)
    for r in recs:
        counter = "-" if r.last_counter is None else str(r.last_counter)
        click.echo(
            f"{r.dev_id.hex():<17} {r.board:<16} {r.status:<8} {counter:>8}  "
            f"{r.port or '-':<14} {r.updated_at}"
        )
    if not authenticated:
        click.echo(_UNAUTHENTICATED)


@registry_group.command("show")
@click.argument("dev_id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@REGISTRY_OPTION
@KEY_FILE_OPTION
def registry_show(
    dev_id: str, as_json: bool, registry_path: Path | None, key_file: Path | None
) -> None:
    """Show one device (DEV_ID in hex): board, status, hashes, last counter. No secrets.

    \b
    Examples:
      edgeveil registry show 3f9a0c12d4e5b6a7
      edgeveil registry show 3f9a0c12d4e5b6a7 --json | jq -r .code_hash
    """
    with open_registry(registry_path, key_file) as reg:
        rec = reg.get(dev_id)
    if as_json:
        click.echo(json.dumps(rec.to_json(), indent=2))
    else:
        _show_record(rec)


@registry_group.command("revoke")
@click.argument("dev_id")
@click.option("--json", "as_json", is_flag=True, help="the device after the change, as JSON")
@REGISTRY_OPTION
@KEY_FILE_OPTION
def registry_revoke(
    dev_id: str, as_json: bool, registry_path: Path | None, key_file: Path | None
) -> None:
    """Revoke a device: its keys are no longer exported and its messages not accepted.

    Revoking a revoked device changes nothing; a wiped one (its keys replaced on the board)
    is refused. --json prints the device's record (as `show --json`) with the status it had
    before as "previous_status".

    \b
    Examples:
      edgeveil registry revoke 3f9a0c12d4e5b6a7
      edgeveil registry --registry fleet.db revoke 3f9a0c12d4e5b6a7 --json
    """
    with open_registry(registry_path, key_file) as reg:
        before = reg.get(dev_id).status
        reg.revoke(dev_id)
        after = reg.get(dev_id)
    if as_json:
        click.echo(json.dumps({**after.to_json(), "previous_status": before}, indent=2))
        return
    click.echo(f"revoked {dev_id.lower()}" + (f" (was {before})" if before != "revoked" else ""))


@registry_group.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["cose-key", "json"]),
    required=True,
    help="cose-key: CBOR array of COSE_Key (needs --include-secrets); json: metadata",
)
@click.option(
    "--include-secrets",
    is_flag=True,
    help="include each active device's COSE key and Base IV (never the pseudonym key)",
)
@click.option("--device", "devices", multiple=True, help="only this DEV_ID (repeatable)")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
    help="write here (a new file, mode 0600 with secrets) instead of stdout",
)
@REGISTRY_OPTION
@KEY_FILE_OPTION
def registry_export(
    fmt: str,
    include_secrets: bool,
    devices: tuple[str, ...],
    output: Path | None,
    registry_path: Path | None,
    key_file: Path | None,
) -> None:
    """Export devices for a backend: keys only when asked for explicitly.

    With --include-secrets only active devices are exported, to a new file (created with
    mode 0600, never overwritten) or a pipe; keys are never written to a terminal.

    \b
    Examples:
      edgeveil registry export --format cose-key --include-secrets -o keys.cbor
      edgeveil registry export --format json --include-secrets | backend-import
      edgeveil registry export --format json -o fleet.json
    """
    from .errors import RegistryError
    from .registry_export import export_cose_keys, export_json
    from .registry_keys import write_exclusive

    if fmt == "cose-key" and not include_secrets:
        raise click.UsageError("--format cose-key holds keys: add --include-secrets")
    to_stdout = output is None or str(output) == "-"
    if to_stdout and (include_secrets or fmt == "cose-key") and sys.stdout.isatty():
        raise RegistryError("refusing to write keys to a terminal: use -o FILE or a pipe")
    with open_registry(registry_path, key_file) as reg:
        selected = list(devices) or None
        if fmt == "cose-key":
            data = export_cose_keys(reg, selected, include_secrets=True)
        else:
            data = export_json(reg, selected, include_secrets=include_secrets)
    if to_stdout:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    elif include_secrets:
        assert output is not None
        write_exclusive(output, data, "export file")
        click.echo(f"wrote {output} (mode 0600): device keys, handle as a secret", err=True)
    else:
        assert output is not None
        output.write_bytes(data)
