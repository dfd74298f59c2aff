"""Does every report hold only what the policy allows, with the transforms it demands?

    check_conformance(messages, policy, report)

Per report (a decoded SenML pack, docs/wire-format.md), against the policy (docs/policy.md):
- the base name is `<16 hex digits>:<stream>:` for a stream the policy names, and the
  pseudonym is the device's keyed pseudonym for the report's epoch when the registry gave
  the pseudonym key (veil.privacy); without it, one pseudonym per device and epoch, never
  the same in two epochs or for two devices;
- the window is the policy's length (a shorter one is finer than allowed) and starts on a
  multiple of it (veil time, veil.T0), released once;
- every record is a field of that stream (a histogram's `<field>/<bin>` with a bin that
  exists), at most once, carrying at least the policy's k and at most its ε, with a value
  that is a multiple of the precision and inside the range the transform produces, and no
  record time of its own (that would be finer than the window);
- the ε spent per device in a budget period stays within `eps_period`. The device spends
  when a window closes, at or after its end; the verifier counts a window in the period
  of its end, so a window closed late could be counted one period early (documented in
  docs/verify.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import defaultdict
from typing import Any

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..policy import BINNED, NONNEG, RANGED
from ..policy import VEIL_T0 as T0
from .messages import Message
from .report import Finding, VerifyReport

_BASE_NAME = re.compile(r"([0-9a-f]{16}):([A-Za-z0-9_]+):\Z")


def pseudonym(pseudo_key: bytes, epoch: int, value: bytes) -> bytes:
    """The device's 8-byte pseudonym of `value` in `epoch` (device/veil/privacy.py)."""
    info = epoch.to_bytes(4, "big")
    key = HKDF(SHA256(), 32, b"veil-pseudo", info).derive(pseudo_key)
    return hmac.new(key, value, hashlib.sha256).digest()[:8]


class _Check:
    """Conformance of one capture's reports; findings go straight to the report."""

    def __init__(self, policy: dict[str, Any], report: VerifyReport) -> None:
        self.policy = policy
        self.report = report
        self.windows: set[tuple[bytes, str, int]] = set()
        self.spent: dict[tuple[bytes, int], int] = defaultdict(int)
        self.pseudonyms: dict[tuple[bytes, int], str] = {}  # (device, epoch) -> pseudonym
        self.owner: dict[str, tuple[bytes, int]] = {}  # pseudonym -> (device, epoch)

    def finding(self, msg: Message, what: str, **detail: Any) -> None:
        self.report.add(Finding("conformance", what, msg.index, msg.offset, detail))

    def message(self, msg: Message) -> None:
        pack = msg.pack
        assert pack is not None and msg.kid is not None
        self.report.cover("conformance")
        m = _BASE_NAME.match(pack.base_name)
        streams = self.policy["streams"]
        if not m or m.group(2) not in streams:
            self.finding(msg, f"base name {pack.base_name!r} names no stream of the policy")
            return
        pseud, name = m.group(1), m.group(2)
        sp = streams[name]
        w = sp["window"]
        if pack.window != w:
            what = "shorter than" if pack.window < w else "not"
            self.finding(msg, f"{name}: window {pack.window} s is {what} the policy's {w} s")
        if (pack.base_time - T0) % w:
            self.finding(msg, f"{name}: window start {pack.base_time} is not on a {w} s boundary")
        key = (msg.kid, name, pack.base_time)
        if key in self.windows:
            self.finding(msg, f"{name}: window {pack.base_time} released twice")
        self.windows.add(key)
        self.pseudonym(msg, pseud, pack.base_time)
        eps = self.records(msg, name, sp)
        end = pack.base_time - T0 + w
        self.spent[(msg.kid, end // self.policy["period"])] += eps

    def records(self, msg: Message, stream: str, sp: dict[str, Any]) -> int:
        """Check each record; returns the ε the report spent (each field counted once)."""
        assert msg.pack is not None
        prefix = msg.pack.base_name
        spent: dict[str, int] = {}
        names: set[str] = set()
        for rec in msg.pack.records:
            name = rec.name[len(prefix) :]
            fname, _, bin_ = name.partition("/")
            f = sp["fields"].get(fname)
            where = f"{stream}.{name}"
            if name in names:
                self.finding(msg, f"{where}: released twice in one report")
            names.add(name)
            if f is None:
                self.finding(msg, f"{where}: not a field the policy allows", value=rec.value)
                continue
            nbins = len(f["edges"]) + 1 if f["agg"] in BINNED else 0
            if (nbins and not (bin_.isdigit() and int(bin_) < nbins)) or (not nbins and bin_):
                self.finding(msg, f"{where}: no such bin of {fname}", value=rec.value)
                continue
            if rec.time != msg.pack.base_time:
                self.finding(msg, f"{where}: has its own time: finer than the window")
            if rec.k < sp["k"]:
                self.finding(msg, f"{where}: released with k {rec.k} below the policy's {sp['k']}")
            if rec.eps > f["eps"]:
                self.finding(
                    msg, f"{where}: spends ε {rec.eps} (milli) above the field's {f['eps']}"
                )
            spent[fname] = max(spent.get(fname, 0), rec.eps)
            self.value(msg, where, f, rec.value)
        return sum(spent.values())

    def value(self, msg: Message, where: str, f: dict[str, Any], v: int) -> None:
        prec = f.get("prec", 1)
        if v % prec:
            self.finding(msg, f"{where}: value {v} is finer than the precision {prec}", value=v)
        agg = f["agg"]
        if agg in NONNEG and v < 0:
            self.finding(msg, f"{where}: a count released as {v}", value=v)
        if agg in RANGED and not f["lo"] - prec < v < f["hi"] + prec:
            self.finding(msg, f"{where}: value {v} outside [{f['lo']}, {f['hi']}]", value=v)

    def pseudonym(self, msg: Message, pseud: str, bt: int) -> None:
        assert msg.kid is not None
        epoch = bt // self.policy["epoch"]
        dev = msg.device
        if dev is not None and dev.pseudo_key is not None:
            want = pseudonym(dev.pseudo_key, epoch, dev.dev_id).hex()
            if pseud != want:
                self.finding(msg, f"pseudonym {pseud} is not the device's for epoch {epoch}")
                return
        had = self.pseudonyms.setdefault((msg.kid, epoch), pseud)
        if had != pseud:
            self.finding(msg, f"pseudonym {pseud} differs from {had} within epoch {epoch}")
        owner = self.owner.setdefault(pseud, (msg.kid, epoch))
        if owner != (msg.kid, epoch):
            self.finding(
                msg,
                f"pseudonym {pseud} repeats: already used in epoch {owner[1]}",
                device=owner[0].hex(),
            )

    def budgets(self) -> None:
        limit = self.policy["eps_period"]
        for (kid, period), eps in sorted(self.spent.items()):
            if eps > limit:
                self.report.add(
                    Finding(
                        "conformance",
                        f"device {kid.hex()} spent ε {eps} (milli) in budget period {period}, "
                        f"above the policy's {limit}",
                        detail={"kid": kid.hex(), "period": period, "spent": eps},
                    )
                )


def check_conformance(
    messages: list[Message], policy: dict[str, Any], report: VerifyReport
) -> None:
    """Findings for every record, window and budget the policy does not allow."""
    check = _Check(policy, report)
    for msg in messages:
        if msg.pack is not None:
            check.message(msg)
    check.budgets()
