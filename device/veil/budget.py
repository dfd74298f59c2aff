"""The epsilon budget of a period, persisted so that a reboot cannot refill it.

    from veil.budget import Budget
    b = Budget("budget.bin", 86400, 1000)   # 1.0 epsilon per day (milli-units)
    if b.spend(250, t):                     # t: the report's event time, in seconds
        send(report)                        # the spend is already on flash
    b.remaining(t)                          # -> 750

Periods are aligned to event time: period index = t // period_s. A new period starts
with nothing spent. Periods earlier than the one on file (a clock that went back) get
no budget: what was spent in them is no longer known.

File format: a veil.store record (written aside, renamed over, SHA-256 checked) whose
20-byte payload is, big-endian: b"EVB1" | period index (u64) | spent milli-epsilon (u32)
| period_s (u32). A power cut leaves the old record or the new one, and a stale .tmp is
never read.

When in doubt, send nothing: a file that is unreadable, torn, fails its checksum or
records another period length makes the current period count as fully spent. That
verdict is written back at once (so the next period starts clean after a reboot too).
A missing file is a first boot: nothing spent.

Allocation: every call may allocate (file I/O, struct, hashlib); budgets are spent at
window close, never on the per-sample path. Values stay small ints: spent and the
period budget are < 2**30 by the checks below.
"""

import struct

from micropython import const

from veil import VeilError
from veil.store import StoreError, read_record, write_record

_MAGIC = b"EVB1"
_FMT = ">4sQII"
_BODY = const(20)  # struct.calcsize(_FMT)
_MAX_EPS = const(0x3FFFFFFF)  # 2**30 - 1 milli-epsilon: a small int on the ESP32
_MAX_PERIOD_S = const(0x3FFFFFFF)
_MAX_T = 1 << 40  # seconds (34,000 years); keeps the period index inside u64


class BudgetError(VeilError):
    """A bad argument to Budget (not an exhausted budget: spend() returns False)."""


def _check_int(x, lo, hi, what):
    if type(x) is not int or x < lo or x > hi:
        raise BudgetError("%s must be an int in [%d, %d]" % (what, lo, hi))


def _encode(period, spent, period_s):
    return struct.pack(_FMT, _MAGIC, period, spent, period_s)


def _decode(body):
    # (period, spent, period_s), or None for anything but one well-formed payload.
    if len(body) != _BODY:
        return None
    magic, period, spent, period_s = struct.unpack(_FMT, body)
    if magic != _MAGIC:
        return None
    return period, spent, period_s


class Budget:
    """Epsilon (in milli-units) spent per aligned period of `period_s` seconds."""

    def __init__(self, path, period_s, eps_period_milli):
        if type(path) is not str or not path:
            raise BudgetError("path must be a non-empty str")
        _check_int(period_s, 1, _MAX_PERIOD_S, "period_s")
        _check_int(eps_period_milli, 0, _MAX_EPS, "eps_period_milli")
        self._path = path
        self._period_s = period_s
        self._cap = eps_period_milli
        self._period = -1  # period of the record on file; -1: none yet
        self._spent = 0
        self._doubt = False  # the file could not be trusted: see _state()
        self._load()

    def _load(self):
        try:
            body = read_record(self._path)
        except StoreError:
            self._doubt = True
            return
        if body is None:
            return  # first boot: nothing spent
        rec = _decode(body)
        if rec is None or rec[2] != self._period_s:
            self._doubt = True
            return
        self._period, self._spent = rec[0], rec[1]

    def _write(self, period, spent):
        write_record(self._path, _encode(period, spent, self._period_s))

    def _state(self, t):
        # (period index of t, spent in it, or None when that period has no budget).
        _check_int(t, 0, _MAX_T, "t")
        p = t // self._period_s
        if self._doubt:
            # The file was untrustworthy: this period is spent. Record that verdict
            # (best effort: if the write fails, the file stays in doubt at next boot).
            self._doubt = False
            self._period, self._spent = p, self._cap
            try:
                self._write(p, self._cap)
            except OSError:
                pass
        if p < self._period:
            return p, None
        if p > self._period:
            return p, 0
        return p, self._spent

    def remaining(self, t):
        """Milli-epsilon still available in the period of event time `t` (int seconds)."""
        spent = self._state(t)[1]
        if spent is None or spent >= self._cap:
            return 0
        return self._cap - spent

    def spend(self, eps_milli, t):
        """Spend `eps_milli` in the period of `t`; True once the spend is on flash.

        False, with nothing spent, if it would exceed the period's budget. False also if
        the record could not be written; then the spend may or may not be on flash, so
        it counts as spent here (when in doubt, send nothing).
        """
        _check_int(eps_milli, 1, _MAX_EPS, "eps_milli")
        p, spent = self._state(t)
        if spent is None or spent + eps_milli > self._cap:
            return False
        spent += eps_milli
        self._period, self._spent = p, spent
        try:
            self._write(p, spent)
        except OSError:
            return False
        return True
