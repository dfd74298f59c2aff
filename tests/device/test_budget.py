# veil.budget in the MicroPython VM: the epsilon budget per period survives reboots,
# refuses overspending, and treats a damaged record as a spent period. Each test runs
# in its own empty directory (the runner's cwd), as on the board's flash.
import os

import veil.budget as vb
from veil import VeilError, store
from veil.budget import Budget, BudgetError

P = "budget.bin"
DAY = 86400
T0 = 20000 * DAY + 3600  # an event time inside period 20000


def _reboot():
    return Budget(P, DAY, 1000)


def _raises(fn, *args):
    try:
        fn(*args)
    except BudgetError:
        return True
    return False


def _read():
    with open(P, "rb") as f:
        return f.read()


def _write(data):
    with open(P, "wb") as f:
        f.write(data)


def test_first_boot_has_full_budget():
    b = Budget(P, DAY, 1000)
    assert b.remaining(T0) == 1000
    assert P not in os.listdir()  # a query on a fresh budget writes nothing


def test_spend_within_budget_and_refuse_beyond():
    b = Budget(P, DAY, 1000)
    assert b.spend(300, T0)
    assert b.remaining(T0) == 700
    assert b.spend(700, T0 + 60)
    assert b.remaining(T0) == 0
    assert not b.spend(1, T0 + 120)
    assert b.remaining(T0) == 0


def test_refused_spend_spends_nothing():
    b = Budget(P, DAY, 1000)
    assert b.spend(600, T0)
    before = _read()
    assert not b.spend(401, T0)  # 600 + 401 > 1000
    assert b.remaining(T0) == 400
    assert _read() == before
    assert b.spend(400, T0)


def test_exhausted_budget_survives_reboot():
    b = Budget(P, DAY, 1000)
    assert b.spend(1000, T0)
    b = _reboot()
    assert b.remaining(T0) == 0
    assert not b.spend(1, T0 + 10)


def test_partial_spend_survives_reboot():
    assert Budget(P, DAY, 1000).spend(250, T0)
    b = _reboot()
    assert b.remaining(T0) == 750
    assert not b.spend(751, T0)
    assert b.spend(750, T0)


def test_new_period_resets():
    b = Budget(P, DAY, 1000)
    assert b.spend(1000, T0)
    start = (T0 // DAY + 1) * DAY
    assert b.remaining(start - 1) == 0  # last second of the period
    assert b.remaining(start) == 1000  # first second of the next
    assert b.spend(400, start)
    assert _reboot().remaining(start + 5) == 600


def test_earlier_period_gets_nothing():
    # A clock that went back: the spends of the earlier period are no longer known.
    b = Budget(P, DAY, 1000)
    assert b.spend(10, T0)
    assert b.remaining(T0 - DAY) == 0
    assert not b.spend(1, T0 - DAY)
    assert _reboot().remaining(T0 - DAY) == 0


def test_spend_is_on_disk_before_returning():
    # Wrap the store's rename: record what the file holds when it runs, and
    # check the record is already there when spend() returns True.
    seen = []

    def recording_rename(a, b):
        os.rename(a, b)
        seen.append(_read())

    store.rename = recording_rename
    try:
        b = Budget(P, DAY, 1000)
        assert b.spend(300, T0)
        assert len(seen) == 1 and seen[0] == _read()
        assert Budget(P, DAY, 1000).remaining(T0) == 700  # what a reboot now sees
    finally:
        store.rename = os.rename


def test_failed_write_returns_false_and_counts():
    b = Budget(P, DAY, 1000)
    assert b.spend(100, T0)

    def broken_rename(a, b):  # power cut after the .tmp was written, before the rename
        raise OSError(5)

    store.rename = broken_rename
    try:
        assert not b.spend(200, T0)
    finally:
        store.rename = os.rename
    # In RAM the 200 counts (it may or may not be on flash)...
    assert b.remaining(T0) == 700
    # ...and after a reboot the old record holds; the torn .tmp is ignored.
    assert "budget.bin.tmp" in os.listdir()
    assert _reboot().remaining(T0) == 900


def test_leftover_tmp_is_ignored():
    assert Budget(P, DAY, 1000).spend(800, T0)
    # A .tmp from an interrupted write: a valid-looking record granting more, and junk.
    with open(P + ".tmp", "wb") as f:
        body = vb._encode(T0 // DAY, 0, DAY)
        f.write(body + store._check(body))
    assert _reboot().remaining(T0) == 200
    with open(P + ".tmp", "wb") as f:
        f.write(b"\x00" * 7)
    b = _reboot()
    assert b.remaining(T0) == 200
    assert b.spend(200, T0)  # and the next write replaces the stale .tmp
    assert _reboot().remaining(T0) == 0


def _corrupt_counts_as_spent(damage):
    assert Budget(P, DAY, 1000).spend(100, T0)
    data = _read()
    assert len(data) == 28
    _write(damage(data))
    b = _reboot()
    assert b.remaining(T0) == 0
    assert not b.spend(1, T0)
    # The verdict is on flash: still spent after another reboot...
    assert _reboot().remaining(T0) == 0
    # ...and the next period starts clean.
    assert _reboot().remaining(T0 + DAY) == 1000


def test_flipped_byte_counts_as_spent():
    for i in (0, 5, 12, 17, 22, 27):  # magic, period, spent, period_s, checksum

        def flip(d, i=i):
            d = bytearray(d)
            d[i] ^= 0x01
            return bytes(d)

        _corrupt_counts_as_spent(flip)
        os.remove(P)


def test_truncated_file_counts_as_spent():
    _corrupt_counts_as_spent(lambda d: d[: len(d) // 2])


def test_empty_file_counts_as_spent():
    _corrupt_counts_as_spent(lambda d: b"")


def test_trailing_garbage_counts_as_spent():
    _corrupt_counts_as_spent(lambda d: d + b"\x00")


def test_unreadable_path_counts_as_spent():
    os.mkdir(P)  # open() fails, but not with ENOENT
    b = Budget(P, DAY, 1000)
    assert b.remaining(T0) == 0
    assert not b.spend(1, T0)


def test_changed_period_length_counts_as_spent():
    assert Budget(P, DAY, 1000).spend(100, T0)
    b = Budget(P, 3600, 1000)  # indices of another period length are not comparable
    assert b.remaining(T0) == 0
    assert b.remaining(T0 + 3600) == 1000


def test_lowered_budget_leaves_nothing():
    assert Budget(P, DAY, 1000).spend(800, T0)
    b = Budget(P, DAY, 500)
    assert b.remaining(T0) == 0
    assert not b.spend(1, T0)


def test_bad_arguments():
    assert issubclass(BudgetError, VeilError)
    assert _raises(Budget, "", DAY, 1000)
    assert _raises(Budget, None, DAY, 1000)
    assert _raises(Budget, P, 0, 1000)
    assert _raises(Budget, P, 1.5, 1000)
    assert _raises(Budget, P, DAY, -1)
    assert _raises(Budget, P, DAY, 1 << 30)
    b = Budget(P, DAY, 1000)
    assert _raises(b.spend, 0, T0)
    assert _raises(b.spend, -5, T0)
    assert _raises(b.spend, 1.0, T0)
    assert _raises(b.spend, True, T0)
    assert _raises(b.spend, 10, -1)
    assert _raises(b.spend, 10, 1.5)
    assert _raises(b.remaining, None)
    assert b.remaining(T0) == 1000  # nothing spent by the refused calls
    assert P not in os.listdir()


def test_zero_budget_never_spends():
    b = Budget(P, DAY, 0)
    assert b.remaining(T0) == 0
    assert not b.spend(1, T0)
