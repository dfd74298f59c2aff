"""`edgeveil verify`: the command over edgeveil.verify (a thin layer, like cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli_common import KEY_FILE_OPTION, REGISTRY_OPTION, open_registry

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command("verify")
@click.option(
    "--capture",
    "capture",
    type=_FILE,
    help="capture file to check (required unless --differential)",
)
@REGISTRY_OPTION
@KEY_FILE_OPTION
@click.option(
    "--keys",
    "keys_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="COSE_Key set (registry export --format cose-key) instead of the registry",
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="the devices' policy TOML [default: the embedded one, if the registry agrees]",
)
@click.option(
    "--canaries",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="the replay the board was fed: every raw value in it is searched for",
)
@click.option(
    "--differential",
    is_flag=True,
    help="run the device code twice, on --canaries and on it without one person, and "
    "test that the outputs differ no more than the noise explains (no --capture)",
)
@click.option("--person", help="--differential: the BLE address (or event kind) to drop")
@click.option(
    "--tree",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="--differential: the device code directory [default: the project's device/]",
)
@click.option("--json-out", type=_FILE, help="write the full report as JSON here")
@click.option("--junit", type=_FILE, help="write a JUnit XML report here (for CI)")
@click.option("--json", "as_json", is_flag=True, help="print the JSON report, not the summary")
@click.pass_context
def verify_cmd(
    ctx: click.Context,
    capture: Path | None,
    registry_path: Path | None,
    key_file: Path | None,
    keys_path: Path | None,
    policy_path: Path | None,
    canaries: Path | None,
    differential: bool,
    person: str | None,
    tree: Path | None,
    json_out: Path | None,
    junit: Path | None,
    as_json: bool,
) -> None:
    """Prove that nothing raw left the board: check every message of a capture.

    Decrypts each message with its device's key (from the registry, or a COSE_Key set with
    --keys) and reports as findings: unknown key ids, bad tags, replayed or out-of-order
    counters; records the policy does not allow or releases finer than it demands (k,
    precision, window, ε); and, with --canaries, every raw value of the replay found in any
    encoding in the wire bytes or the plaintext, and any reported number that matches a raw
    value of its window backed by fewer than k samples.

    With --differential (no --capture, no keys): the device code (--tree) runs twice in the
    MicroPython VM with fresh keys, on the --canaries replay and on it without one person
    (--person, default the first BLE address); the two outputs must not differ more than
    the declared noise and one person explain.

    Exit status: 0 no finding, 1 findings, 2 could not verify (the summary says why: no key
    for the messages, a policy the registry does not confirm, an unreadable capture).

    \b
    Examples:
      edgeveil verify --capture run.capture --canaries crowd.jsonl
      edgeveil verify --capture run.capture --registry fleet.db --policy shop.toml \\
          --junit verify.xml --json-out verify.json
      edgeveil verify --capture mqtt.capture --keys backend-keys.cbor --json
      edgeveil verify --differential --canaries crowd.jsonl --person 4f:1e:22:90:ab:01
    """
    from .policy import load_policy_file
    from .verify import Keyring, verify

    policy = load_policy_file(policy_path) if policy_path is not None else None
    if differential:  # the differential run (stats helper): no capture, fresh keys
        from .verify.differential import differential_report

        if canaries is None:
            raise click.UsageError("--differential needs --canaries (the replay to run)")
        report = differential_report(canaries, policy, person=person, tree=tree)
    elif capture is None:
        raise click.UsageError("--capture is required (except with --differential)")
    else:
        if keys_path is not None:
            keyring = Keyring.from_cose_keys(keys_path)
        else:
            with open_registry(registry_path, key_file) as reg:
                keyring = Keyring.from_registry(reg)
        report = verify(capture, keyring=keyring, policy=policy, canaries=canaries)
    if json_out is not None:
        json_out.write_text(report.dumps())
    if junit is not None:
        junit.write_text(report.to_junit())
    sys.stdout.write(report.dumps() if as_json else report.summary())
    ctx.exit(report.exit_code)
