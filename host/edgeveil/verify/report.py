"""What `edgeveil verify` found, and the three ways it is written out.

    report = VerifyReport(capture="run.capture")
    report.add(Finding("leak", "BLE address 4f:1e:22:90:ab:01 as hex in message 3", message=3))
    report.exit_code          # 0 no finding, 1 findings, 2 could not verify
    report.to_json()          # machine-readable (docs/verify.md)
    report.to_junit()         # JUnit XML: one test case per check, a failure per finding
    report.summary()          # a few lines for people

A finding is a fact about the capture (a leak, a bad tag, a record the policy does not
allow). "Could not verify" is different: the verifier lacked something it needs (no key
for any message, an unreadable policy) and says so in `errors`; such a report never
passes, whatever else it holds.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

CHECKS = ("input", "authenticity", "conformance", "leak", "statistics", "differential")
_MAX_LISTED = 20  # findings per check shown in the human summary


@dataclass(frozen=True)
class Finding:
    """One thing wrong with the capture, precise enough to act on."""

    check: str  # one of CHECKS
    what: str  # one line a person reads: names the value, encoding and message
    message: int | None = None  # index of the message in the capture (0-based), if any
    offset: int | None = None  # byte offset in the serial stream or capture file, if any
    detail: dict[str, Any] = field(default_factory=dict)  # JSON-able extra facts

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise ValueError(f"unknown check {self.check!r}")

    def where(self) -> str:
        parts = []
        if self.message is not None:
            parts.append(f"message {self.message}")
        if self.offset is not None:
            parts.append(f"offset {self.offset}")
        return ", ".join(parts)


@dataclass
class VerifyReport:
    """Everything one verification run found and what it covered."""

    capture: str
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # why it could not verify, if so
    covered: dict[str, int] = field(default_factory=dict)  # check -> items it examined
    facts: dict[str, Any] = field(default_factory=dict)  # counts: messages, devices, ...
    # The messages as decoded (verify.messages.Message), for callers that show them; not
    # part of any written report.
    messages: list[Any] = field(default_factory=list, repr=False)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def cover(self, check: str, n: int = 1) -> None:
        """Record that `check` examined `n` more items (messages, records, patterns)."""
        self.covered[check] = self.covered.get(check, 0) + n

    @property
    def verdict(self) -> str:
        if self.errors:
            return "error"
        return "fail" if self.findings else "pass"

    @property
    def exit_code(self) -> int:
        return {"pass": 0, "fail": 1, "error": 2}[self.verdict]

    def by_check(self) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = {c: [] for c in CHECKS}
        for f in self.findings:
            out[f.check].append(f)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "edgeveil-verify",
            "version": 1,
            "capture": self.capture,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "errors": list(self.errors),
            "facts": self.facts,
            "covered": self.covered,
            "counts": dict(Counter(f.check for f in self.findings)),
            "findings": [asdict(f) for f in self.findings],
        }

    def to_junit(self) -> str:
        """JUnit XML: a suite per run, a case per check (skipped when it did not run)."""
        suite = ET.Element("testsuite", name="edgeveil-verify")
        groups = self.by_check()
        failures = skipped = 0
        for check in CHECKS:
            case = ET.SubElement(
                suite, "testcase", classname="edgeveil.verify", name=f"{check}: {self.capture}"
            )
            found = groups[check]
            if found:
                failures += 1
                fail = ET.SubElement(
                    case, "failure", message=f"{len(found)} finding(s)", type=check
                )
                fail.text = "\n".join(_line(f) for f in found)
            elif check not in self.covered:
                skipped += 1
                ET.SubElement(case, "skipped", message="not run: its input was not given")
        for err in self.errors:
            case = ET.SubElement(suite, "testcase", classname="edgeveil.verify", name="setup")
            ET.SubElement(case, "error", message=err)
        suite.set("tests", str(len(CHECKS) + len(self.errors)))
        suite.set("failures", str(failures))
        suite.set("errors", str(len(self.errors)))
        suite.set("skipped", str(skipped))
        return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"

    def summary(self) -> str:
        """A short text for people: verdict, what was checked, the first findings."""
        lines = []
        facts = ", ".join(f"{v} {k}" for k, v in self.facts.items() if isinstance(v, int))
        lines.append(f"{self.capture}: {facts}" if facts else self.capture)
        for err in self.errors:
            lines.append(f"could not verify: {err}")
        groups = self.by_check()
        for check in CHECKS:
            found = groups[check]
            if check not in self.covered and not found:
                lines.append(f"  {check:<13} not run")
                continue
            state = f"{len(found)} finding(s)" if found else "ok"
            lines.append(f"  {check:<13} {state} ({self.covered.get(check, 0)} checked)")
            for f in found[:_MAX_LISTED]:
                lines.append(f"    - {_line(f)}")
            if len(found) > _MAX_LISTED:
                lines.append(f"    ... and {len(found) - _MAX_LISTED} more (see the JSON)")
        lines.append(
            {"pass": "PASS", "fail": "FAIL", "error": "ERROR: could not verify"}[self.verdict]
        )
        return "\n".join(lines) + "\n"

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"


def _line(f: Finding) -> str:
    where = f.where()
    return f"{f.what} ({where})" if where else f.what
