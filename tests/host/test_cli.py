"""The `edgeveil` command line as a whole: help that teaches, exit codes, --json.

Proves: every command and subcommand's --help has examples (the command tree is walked,
so a new command without them fails here); a bug is exit 3 with one line, and its
traceback only with EDGEVEIL_DEBUG; an unwritable path the user named is exit 2 with
"cannot write"; init and registry revoke speak JSON; a single-port flash, deploy or
provision that fails with --json still prints one JSON object. Runs in-process through
`main()` (about 2 s).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import pytest
from edgeveil import boards as boards_module
from edgeveil.boards import load_board
from edgeveil.cli import cli, main
from edgeveil.demo import DeviceSecrets
from edgeveil.registry import Registry, init_registry
from edgeveil.vboard import firmware

MAC = bytes.fromhex("240ac4abcdef")
HINT = "(a bug; run with EDGEVEIL_DEBUG=1 for the traceback)"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EDGEVEIL_MASTER_KEY", "EDGEVEIL_REGISTRY", "EDGEVEIL_DEBUG"):
        monkeypatch.delenv(name, raising=False)


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
    return found


ALL_COMMANDS = _commands(cli)


def test_the_walk_reaches_subcommands() -> None:
    # The walk below is only worth something if it reaches nested commands.
    for expected in (("boards",), ("registry", "revoke"), ("vboard", "stop"), ("flash",)):
        assert expected in ALL_COMMANDS


@pytest.mark.parametrize("path", [(), *ALL_COMMANDS], ids=lambda p: " ".join(p) or "edgeveil")
def test_every_help_has_examples(path: tuple[str, ...], capsys: pytest.CaptureFixture) -> None:
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out
    examples = out.split("Examples:", 1)[1]
    assert "edgeveil " in examples or "mpremote " in examples


def test_top_level_help_shows_the_desk_and_jig_flows_and_exit_codes(
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("edgeveil init", "edgeveil flash", "edgeveil deploy", "edgeveil provision"):
        assert command in out
    assert "--ports auto" in out and "--factory" in out
    codes = out.split("Exit codes:", 1)[1]
    for code, word in (("0", "success"), ("1", "verify"), ("2", "refused"), ("3", "bug")):
        assert any(line.split()[:1] == [code] and word in line for line in codes.splitlines())
    assert "130" in codes and "EDGEVEIL_DEBUG" in codes


# --- exit codes --------------------------------------------------------------------------


def _broken_list_boards(exc: BaseException):
    def list_boards(*_args: object, **_kw: object) -> None:
        raise exc

    return list_boards


def test_a_bug_is_exit_3_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(boards_module, "list_boards", _broken_list_boards(RuntimeError("boom")))
    assert main(["boards"]) == 3
    err = capsys.readouterr().err
    assert err == f"edgeveil: internal error: RuntimeError: boom {HINT}\n"


def test_edgeveil_debug_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(boards_module, "list_boards", _broken_list_boards(KeyError("k")))
    monkeypatch.setenv("EDGEVEIL_DEBUG", "1")
    assert main(["boards"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in list_boards" in err and "raise exc" in err
    assert err.endswith(f"edgeveil: internal error: KeyError: 'k' {HINT}\n")


def test_an_os_error_about_a_file_the_user_did_not_name_is_a_bug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    gone = FileNotFoundError(2, "No such file or directory", "/usr/share/edgeveil/x.toml")
    monkeypatch.setattr(boards_module, "list_boards", _broken_list_boards(gone))
    assert main(["boards"]) == 3
    assert "edgeveil: internal error: FileNotFoundError:" in capsys.readouterr().err


def test_ctrl_c_is_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(boards_module, "list_boards", _broken_list_boards(KeyboardInterrupt()))
    assert main(["boards"]) == 130
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("form", ["-o FILE", "--out=FILE", "-oFILE"])
def test_an_output_file_that_cannot_be_written_is_exit_2(
    form: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "no-such-dir" / "fw.bin"
    args = form.replace("FILE", str(target)).split()
    assert main(["vboard", "firmware", *args]) == 2
    err = capsys.readouterr().err
    assert err == f"edgeveil: cannot write {target}: No such file or directory\n"


def test_registry_export_to_a_missing_directory_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    db = init_registry(tmp_path / "fleet.db")
    target = tmp_path / "nonexistent" / "x.json"
    args = ["registry", "--registry", str(db), "export", "--format", "json", "-o", str(target)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == f"edgeveil: cannot write {target}: No such file or directory\n"


def test_a_full_disk_is_exit_2_not_a_bug(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = init_registry(tmp_path / "fleet.db")
    # /dev/full: open() succeeds, write() fails with ENOSPC and no file name.
    args = ["registry", "--registry", str(db), "export", "--format", "json", "-o", "/dev/full"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and "No space left on device" in err


def test_an_unreadable_input_is_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, who reads everything: once click has checked its options, make
    # the file unreadable as it would be for a user, then fail as reading it would.
    secret = tmp_path / "fw.bin"
    secret.write_bytes(b"x")

    def load_board(*_args: object) -> None:
        monkeypatch.setattr(os, "access", lambda path, mode: False)
        raise PermissionError(13, "Permission denied", str(secret))

    monkeypatch.setattr(boards_module, "load_board", load_board)
    assert main(["vboard", "firmware", "-o", str(secret)]) == 2
    assert capsys.readouterr().err == f"edgeveil: cannot read {secret}: Permission denied\n"


# --- --json --------------------------------------------------------------------------------


def test_init_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "fleet.db"
    assert main(["init", "--registry", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"registry": str(db), "key_file": f"{db}.key", "key_from": "key_file"}
    assert (tmp_path / "fleet.db.key").stat().st_mode & 0o777 == 0o600


def test_init_json_with_the_key_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEVEIL_MASTER_KEY", "5a" * 32)
    db = tmp_path / "fleet.db"
    assert main(["init", "--registry", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"registry": str(db), "key_file": None, "key_from": "EDGEVEIL_MASTER_KEY"}
    assert not (tmp_path / "fleet.db.key").exists()


def test_registry_revoke_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = init_registry(tmp_path / "fleet.db")
    s = DeviceSecrets.generate()
    with Registry.open(db) as reg:
        reg.add_pending(s.dev_id, "esp32-generic", s, "ab" * 32, "/dev/pts/3", mac=MAC)
        reg.activate(s.dev_id)
    dev = s.dev_id.hex()
    assert main(["registry", "revoke", dev, "--registry", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dev_id"] == dev and out["status"] == "revoked"
    assert out["previous_status"] == "active" and out["board"] == "esp32-generic"
    with Registry.open(db) as reg:
        assert reg.get(dev).status == "revoked"
    assert main(["registry", "--registry", str(db), "revoke", dev, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["previous_status"] == "revoked"


@pytest.fixture
def fw(tmp_path: Path) -> Path:
    path = tmp_path / "fw.bin"
    path.write_bytes(firmware.build_firmware(load_board("esp32-generic")))
    return path


@pytest.mark.parametrize("command", ["flash", "deploy", "provision"])
def test_a_single_port_that_fails_with_json_prints_one_json_object(
    command: str, fw: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    port = str(tmp_path / "ttyUSB9")
    db = init_registry(tmp_path / "fleet.db")
    extra = {
        "flash": ["--board", "esp32-generic", "--firmware", str(fw)],
        "deploy": [],
        "provision": ["--registry", str(db)],
    }[command]
    assert main([command, "--port", port, "--json", *extra]) == 2
    out, err = capsys.readouterr()
    failed = json.loads(out)  # the whole of stdout, one object
    assert failed["ok"] is False and failed["port"] == port and failed["exit_code"] == 2
    assert failed["result"] is None and failed["seconds"] >= 0
    assert port in failed["message"] and "no such port" in failed["message"]
    assert err == f"edgeveil: {failed['message']}\n"  # the message still goes to stderr
    assert main([command, "--port", port, *extra]) == 2
    assert capsys.readouterr().out == ""  # without --json, stdout stays empty
