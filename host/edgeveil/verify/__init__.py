"""`edgeveil verify`: did any raw personal value leave the board?

    report = verify("run.capture", keyring=Keyring.from_registry(reg),
                    policy=load_policy_file("policy.toml"), canaries="replay.jsonl")
    report.exit_code    # 0 no finding, 1 findings, 2 could not verify

The checks, each in its own module (docs/verify.md):
- messages: frames and MQTT payloads out of the capture; authenticity (keys, tags,
  counters);
- conformance: every record against the policy;
- leakscan: every raw value of the replay, in every encoding, in the wire bytes and the
  plaintext; and every decoded number against the raw values of its window;
- statistics: the noise on each reported value against the declared mechanism.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..capture import read_capture
from ..policy import compile_policy, default_policy
from .conformance import check_conformance
from .messages import Keyring, Message, authenticate, decode_plaintexts, extract
from .report import Finding, VerifyReport
from .scan import scan_capture
from .statistics import check_statistics
from .truth import ground_truth

__all__ = ["Finding", "Keyring", "VerifyReport", "verify"]


def verify(
    capture: str | Path,
    *,
    keyring: Keyring | None = None,
    policy: dict[str, Any] | None = None,
    canaries: str | Path | None = None,
) -> VerifyReport:
    """Check every message of a capture; returns the report (never raises on bad input).

    Args:
        capture: a capture file (edgeveil.capture).
        keyring: device keys (registry or COSE_Key export); without it nothing can be
            decrypted and the run cannot pass.
        policy: the devices' policy (edgeveil.policy.load_policy_file); without it the
            embedded default is used if the registry shows it is the one provisioned.
        canaries: the replay the board was fed; every raw value in it is searched for.

    Raises:
        CaptureError: the capture file is missing or is not a capture.
    """
    cap = read_capture(capture)
    report = VerifyReport(capture=str(capture))
    report.facts["records"] = len(cap.records)
    traffic = extract(cap, report)
    report.messages = traffic.messages
    pol = None
    if keyring is None or not len(keyring):
        report.errors.append("no device keys: give --registry or --keys")
    else:
        authenticate(traffic.messages, keyring, report)
        decode_plaintexts(traffic.messages, report)
        pol = _resolve_policy(policy, traffic.messages, report)
        if pol is not None:
            check_conformance(traffic.messages, pol, report)
    if canaries is not None:
        scan_capture(traffic, canaries, pol or policy, report)
        if pol is not None and not report.errors:  # the replay is the ground truth
            check_statistics(traffic.messages, ground_truth(canaries, pol), pol, report)
    if not traffic.messages and not report.errors:
        report.errors.append("the capture holds no message: nothing to verify")
    return report


def _resolve_policy(
    policy: dict[str, Any] | None, messages: list[Message], report: VerifyReport
) -> dict[str, Any] | None:
    """The policy to check against, confirmed against the registry where it can be."""
    devices = {m.device.dev_id: m.device for m in messages if m.device is not None}
    candidate = policy if policy is not None else default_policy()
    for dev in devices.values():
        if dev.policy_key is None or dev.policy_hash is None:
            continue  # a COSE_Key export says nothing of the policy
        blob = compile_policy(candidate, dev.dev_id, dev.policy_key)
        if hashlib.sha256(blob).hexdigest() != dev.policy_hash:
            given = "the policy given" if policy is not None else "the embedded default policy"
            report.errors.append(
                f"{given} is not the one provisioned on device {dev.dev_id.hex()} "
                "(registry policy hash differs): give --policy with that device's policy"
            )
            return None
    if policy is None and not any(d.policy_hash for d in devices.values()):
        return None  # nothing says which policy the devices hold: conformance not run
    return candidate
