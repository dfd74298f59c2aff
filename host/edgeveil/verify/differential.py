"""The differential run: the same device code on two replays that differ in one person.

    events_b, who = without_person(events_a)            # drop the first BLE address seen
    findings = run_differential(device_dir(), events_a, events_b, secrets, policy, heap)

A black-box test. The device code tree runs twice in the MicroPython VM (the real
interpreter, at the board's heap, edgeveil.demo.run_device), with the same keys and
policy, on replay A and on replay B = A without one person's data. Both outputs are
decrypted and compared; ε-differential privacy says they may differ only as much as the
declared noise and one person's contribution explain. Findings (check "differential"):

- a released number that differs between the runs by more than that: under the policy,
  R = post(v + X) with X discrete Laplace of scale t = sensitivity / ε (docs/policy.md),
  one person moves v by at most the sensitivity Δ, and post-processing (max, clamp) does
  not widen a gap while rounding to the precision p widens it by at most 2 * (p // 2).
  So P(|R_a - R_b| >= d) <= P(|X_a - X_b| >= d - Δ - 2 * (p // 2)), computed exactly
  (closed form of the difference of two discrete Laplace variables); a finding when that
  is below 1e-6 / (records compared) (Bonferroni: an honest device is flagged with
  probability at most 1e-6);
- a record the policy does not declare (no noise covers it) whose value differs;
- a record, message or line of console text that appears in one run only, unless the
  policy explains it: a field that k-suppression lets out in one run only, by the ground
  truth of both replays (edgeveil.verify.truth);
- labels of a record (k, ε, window, base name) that differ; output that does not decrypt
  or is not a SenML pack and differs.

What it cannot see: a leak that the one person's removal does not change (another
person's data, or a value that is the same with and without them), and a leak hidden
below the noise (a small bias, or one bit spread over many windows) — that is what ε
allows by design. The ε budget can make windows differ too: a run that suppressed a
field spent less and may release a window the other refused (reported as a difference).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cose import decrypt0
from ..demo import DeviceSecrets, run_device
from ..errors import EdgeveilError
from ..frames import split_stream
from ..policy import compile_policy
from ..senml import loads_strict
from .report import Finding, VerifyReport
from .truth import Truth, ground_truth, read_events, record_field, scale, sensitivity

ALPHA = 1e-6  # family-wise over the records compared
_BASE_NAME = re.compile(r"[0-9a-f]{16}:([A-Za-z0-9_]+):\Z")
_V = 2  # SenML value label

Key = tuple[str, int, str]  # (stream, base time, record name)
Events = list[dict[str, Any]]


@dataclass
class RunOutput:
    """What one run sent, decrypted: records by key, and everything else."""

    values: dict[Key, Any] = field(default_factory=dict)
    labels: dict[Key, dict[str, Any]] = field(default_factory=dict)  # all but the value
    message: dict[Key, int] = field(default_factory=dict)  # index of its message
    text: Counter[str] = field(default_factory=Counter)  # console lines
    opaque: Counter[bytes] = field(default_factory=Counter)  # not a pack / not decrypted
    messages: int = 0


def _events(replay: str | Path | Events) -> Events:
    if isinstance(replay, (str, Path)):
        return [e for e in read_events(replay) if isinstance(e, dict)]
    return list(replay)


def without_person(events: Events, person: str | None = None) -> tuple[Events, str]:
    """Replay A without one person's data -> (events, who was dropped).

    Args:
        events: replay A.
        person: a BLE address (its advertisements are dropped, any letter case), or an
            event kind such as "hr" (all of its events: a wearer's readings, where the
            device is the privacy unit); None: the first BLE address of the replay.

    Raises:
        EdgeveilError: no such person in the replay.
    """
    if person is None:
        person = next((e["addr"] for e in events if e.get("kind") == "ble" and "addr" in e), None)
        if person is None:
            raise EdgeveilError("the replay has no BLE address: give the person to drop")
    who = person.lower()

    def theirs(e: dict[str, Any]) -> bool:
        if e.get("kind") == who:
            return True
        return e.get("kind") == "ble" and str(e.get("addr", "")).lower() == who

    out = [e for e in events if not theirs(e)]
    if len(out) == len(events):
        raise EdgeveilError(f"{person} is not in the replay: nothing to drop")
    return out, person


def decode_run(console: bytes, secrets: DeviceSecrets) -> RunOutput:
    """Decrypt and index everything one run wrote to its console."""
    out = RunOutput()
    for item in split_stream(console):
        if item.kind == "text":
            for line in item.data.decode("utf-8", "replace").splitlines():
                if line.strip():
                    out.text[line.strip()] += 1
            continue
        if item.kind != "frame":
            out.opaque[b"undecodable frame: " + item.data] += 1
            continue
        index = out.messages
        out.messages += 1
        try:
            plain = decrypt0(secrets.cose_key, secrets.base_iv, item.data, kid=secrets.dev_id)
            pack = loads_strict(plain.plaintext)
        except EdgeveilError:
            out.opaque[b"not decrypted: " + item.data] += 1
            continue
        if not _index_pack(pack, index, out):
            out.opaque[plain.plaintext] += 1
    return out


def _index_pack(pack: Any, index: int, out: RunOutput) -> bool:
    """Index a SenML pack's records; False if it is not one (kept whole instead)."""
    if not isinstance(pack, list) or not pack or not all(isinstance(r, dict) for r in pack):
        return False
    bn, bt = pack[0].get(-2), pack[0].get(-3)
    if not isinstance(bn, str) or type(bt) is not int:
        return False
    m = _BASE_NAME.match(bn)
    stream = m.group(1) if m else bn
    base = {str(k): v for k, v in pack[0].items() if k != 0 and k != _V}
    for rec in pack:
        name = rec.get(0)
        key = (stream, bt, name if isinstance(name, str) else repr(name))
        if key in out.values:
            return False  # a name twice: compared whole
        out.values[key] = rec.get(_V)
        out.labels[key] = {**base, **{str(k): v for k, v in rec.items() if k != _V}}
        out.message[key] = index
    return True


def log_diff_tail(m: float, t: float) -> float:
    """log P(|X_a - X_b| >= m), X_a, X_b independent discrete Laplace of scale t.

    P(W = w) = c^2 a^|w| ((|w| + 1) + 2 a^2 / (1 - a^2)), c = (1 - a) / (1 + a), so for
    m >= 1: P(W >= m) = c^2 a^m ((m + 1) / (1 - a) + a / (1 - a)^2 + 2a^2 / ((1 - a^2)(1 - a))).
    """
    if m <= 0:
        return 0.0
    m = math.ceil(m)
    a = math.exp(-1.0 / t)
    c = (1 - a) / (1 + a)
    rest = (m + 1) / (1 - a) + a / (1 - a) ** 2 + 2 * a * a / ((1 - a * a) * (1 - a))
    return min(0.0, math.log(2) + 2 * math.log(c) - m / t + math.log(rest))


class _Compare:
    def __init__(
        self, a: RunOutput, b: RunOutput, policy: dict[str, Any], truths: tuple[Truth, Truth]
    ) -> None:
        self.a, self.b, self.policy, self.truths = a, b, policy, truths
        self.findings: list[Finding] = []
        self.noised: list[tuple[float, Key, Any, Any, float, int]] = []  # (log p, ...)

    def add(self, what: str, key: Key | None = None, **detail: Any) -> None:
        msg = None
        if key is not None:
            msg = self.a.message.get(key)
            detail |= {"stream": key[0], "window": key[1], "record": key[2]}
            detail["message_b"] = self.b.message.get(key)
        self.findings.append(Finding("differential", what, msg, None, detail))

    def field(self, key: Key) -> dict[str, Any] | None:
        sp = self.policy["streams"].get(key[0])
        found = record_field(sp, key[2]) if sp is not None else None
        return found[1] if found else None

    def record(self, key: Key) -> None:
        a, b = self.a, self.b
        where = f"{key[0]}.{key[2]} in window {key[1]}"
        if key not in b.values or key not in a.values:
            self.one_run(key, where)
            return
        if a.labels[key] != b.labels[key]:
            self.add(f"{where}: labels differ: {a.labels[key]} vs {b.labels[key]}", key)
        va, vb = a.values[key], b.values[key]
        f = self.field(key)
        if f is None or type(va) is not int or type(vb) is not int:
            if va != vb:
                self.add(
                    f"{where}: {va!r} in run A, {vb!r} in run B: the policy declares no "
                    "noise for this record, so the person's data shows through",
                    key,
                    a=repr(va),
                    b=repr(vb),
                )
            return
        t, delta = scale(f), sensitivity(f)
        slack = 2 * (f.get("prec", 1) // 2)
        lp = log_diff_tail(abs(va - vb) - delta - slack, t)
        self.noised.append((lp, key, va, vb, t, delta))

    def one_run(self, key: Key, where: str) -> None:
        run = "A" if key in self.a.values else "B"
        f = self.field(key)
        if f is not None:
            tv = [t.get(*key) for t in self.truths]
            if tv[0] is None or tv[1] is None:
                return  # no ground truth (distinct_sketch): k-suppression may explain it
            if (key in self.a.values) == tv[0].released and (key in self.b.values) == tv[
                1
            ].released:
                return  # k-suppression: fewer than k contributed in one run
            what = f"{where}: released in run {run} only, against k-suppression (n = "
            what += f"{tv[0].n} in A, {tv[1].n} in B, k = {tv[0].k})"
        else:
            what = f"{where}: a record the policy does not declare, sent in run {run} only"
        value = (self.a.values if run == "A" else self.b.values)[key]
        self.add(what, key, run=run, value=repr(value))

    def noise(self) -> None:
        if not self.noised:
            return
        limit = math.log(ALPHA / len(self.noised))
        for lp, key, va, vb, t, delta in self.noised:
            if lp < limit:
                self.add(
                    f"{key[0]}.{key[2]} in window {key[1]}: {va} in run A, {vb} in run B: "
                    f"a gap of {abs(va - vb)} that noise of scale {t:.3g} and one person "
                    f"(at most {delta}) explain with p = {math.exp(lp):.2g} only",
                    key,
                    a=va,
                    b=vb,
                    scale=t,
                    sensitivity=delta,
                    log10_p=lp / math.log(10),
                )

    def rest(self) -> None:
        """Console lines and undecodable output that one run has more of."""
        a, b = self.a, self.b
        for line in sorted(set(a.text) | set(b.text)):
            self.extra("console text", a.text[line], b.text[line], line)
        for blob in sorted(set(a.opaque) | set(b.opaque)):
            self.extra("output", a.opaque[blob], b.opaque[blob], blob.hex())

    def extra(self, what: str, na: int, nb: int, shown: str) -> None:
        if na != nb:
            run = "A" if na > nb else "B"
            self.add(f"{what} in run {run} only ({na} vs {nb}): {shown[:100]!r}", run=run)


def compare_runs(
    a: RunOutput, b: RunOutput, policy: dict[str, Any], truths: tuple[Truth, Truth]
) -> list[Finding]:
    """Findings for what two runs' outputs differ in beyond what the policy explains."""
    cmp = _Compare(a, b, policy, truths)
    for key in sorted(set(a.values) | set(b.values), key=repr):
        cmp.record(key)
    cmp.noise()
    cmp.rest()
    return cmp.findings


def run_differential(
    tree: Path,
    replay_a: str | Path | Events,
    replay_b: str | Path | Events,
    secrets: DeviceSecrets,
    policy: dict[str, Any],
    heap: int,
    report: VerifyReport | None = None,
) -> list[Finding]:
    """Run the device code `tree` on both replays and compare what it sent.

    Args:
        tree: a device code directory laid out like device/ (a test may patch a copy).
        replay_a: the replay (file or events).
        replay_b: the same without one person's data (without_person).
        secrets: the device's keys for both runs.
        policy: the policy provisioned for both runs.
        heap: the VM's GC heap in bytes (the board's).
        report: if given, findings are added to it and "differential" is covered with the
            number of records compared.

    Returns:
        The findings (check "differential").

    Raises:
        VMError: the device code failed in the VM.
    """
    blob = compile_policy(policy, secrets.dev_id, secrets.policy_key)
    outs, truths = [], []
    for replay in (replay_a, replay_b):
        events = _events(replay)
        with tempfile.TemporaryDirectory(prefix="edgeveil-diff-") as tmp:
            console = run_device(secrets, blob, events, heap, Path(tmp), tree=tree)
        outs.append(decode_run(console, secrets))
        # The runs feed the replay source (docs/replay.md), whatever the file's format.
        truths.append(ground_truth([json.dumps(e) for e in events], policy, raw=False))
    findings = compare_runs(outs[0], outs[1], policy, (truths[0], truths[1]))
    if report is not None:
        report.cover("differential", len(set(outs[0].values) | set(outs[1].values)))
        report.facts["messages"] = outs[0].messages + outs[1].messages
        for f in findings:
            report.add(f)
    return findings


def differential_report(
    replay: str | Path,
    policy: dict[str, Any] | None = None,
    *,
    person: str | None = None,
    tree: Path | None = None,
    board: str = "esp32-generic",
) -> VerifyReport:
    """`edgeveil verify --differential`: both runs on fresh keys, as a VerifyReport.

    Args:
        replay: replay A; replay B drops `person` from it (without_person).
        policy: the policy to provision [default: the embedded one].
        person: a BLE address or an event kind [default: the first BLE address].
        tree: the device code directory [default: the project's device/].
        board: the board whose heap the VM gets.

    Raises:
        EdgeveilError: the replay has no such person; VMError: the device code failed.
    """
    from ..boards import load_board
    from ..paths import device_dir
    from ..policy import default_policy

    events = _events(replay)
    events_b, who = without_person(events, person)
    report = VerifyReport(capture=f"differential: {replay} without {who}")
    report.facts["events_dropped"] = len(events) - len(events_b)
    run_differential(
        tree if tree is not None else device_dir(),
        events,
        events_b,
        DeviceSecrets.generate(),
        policy if policy is not None else default_policy(),
        load_board(board).vm_app_heap_bytes,
        report,
    )
    return report
