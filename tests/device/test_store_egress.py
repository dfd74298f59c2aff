# Persistence of small records and of the COSE message counter (power loss included).
import os

from fakes import SinkTransport
from veil import store
from veil.egress import Counter, Egress, EgressError
from veil.store import StoreError, read_record, write_record


def test_record_round_trip_and_missing():
    assert read_record("nothing") is None
    write_record("r", b"\x01\x02\x03")
    assert read_record("r") == b"\x01\x02\x03"
    write_record("r", b"")
    assert read_record("r") == b""


def test_corrupt_record_raises():
    write_record("r", b"hello world")
    with open("r", "rb") as f:
        data = bytearray(f.read())
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with open("r", "wb") as f:
            f.write(bad)
        try:
            read_record("r")
            raise AssertionError("flipped byte %d not detected" % i)
        except StoreError:
            pass
    with open("r", "wb") as f:
        f.write(data[:5])
    try:
        read_record("r")
        raise AssertionError("torn record not detected")
    except StoreError:
        pass


def test_leftover_tmp_from_torn_write_is_ignored():
    write_record("r", b"old")
    with open("r.tmp", "wb") as f:
        f.write(b"ne")  # power cut while writing the new record
    assert read_record("r") == b"old"
    write_record("r", b"new")
    assert read_record("r") == b"new"


def test_counter_never_repeats_across_reboots():
    Counter.create("ctr")
    used = []
    c = Counter("ctr", block=8)
    for _ in range(20):
        used.append(c.take())
    assert used == list(range(20))
    c = Counter("ctr", block=8)  # reboot: resumes after the last reservation
    nxt = c.take()
    assert nxt >= 20 and nxt == 24
    assert nxt not in used


def test_counter_power_cut_during_reservation():
    Counter.create("ctr")
    c = Counter("ctr", block=4)
    used = [c.take() for _ in range(4)]
    real_rename = store.rename

    def cut(a, b):
        raise OSError(5)  # power lost before the rename: the new reservation never landed

    store.rename = cut
    try:
        try:
            c.take()
            raise AssertionError("counter handed out without a durable reservation")
        except OSError:
            pass
    finally:
        store.rename = real_rename
    c = Counter("ctr", block=4)  # reboot
    after = [c.take() for _ in range(6)]
    for x in after:
        assert x not in used
    assert os.stat("ctr")[6] > 0


def test_counter_missing_or_corrupt_refuses():
    for setup in ("missing", "corrupt"):
        if setup == "corrupt":
            Counter.create("ctr2", 5)
            with open("ctr2", "r+b") as f:
                f.seek(3)
                f.write(b"\xff")
        try:
            Counter("ctr2")
            raise AssertionError("counter accepted when " + setup)
        except (EgressError, StoreError):
            pass


def test_egress_refuses_anything_but_a_gate_report():
    from veil.keys import Keys

    Counter.create("ctr")
    k = Keys(b"\x01" * 8, b"\x02" * 16, b"\x03" * 13, b"\x04" * 32, b"\x05" * 32)
    sink = SinkTransport()
    e = Egress(k, Counter("ctr"), sink)
    for fake in ([{0: "x", 2: 1}], b"raw", {"records": []}):
        try:
            e.send(fake)
            raise AssertionError("egress sent a non-gate object")
        except EgressError:
            pass
    assert sink.sent == []
    try:
        Egress(None, Counter("ctr"), sink)
        raise AssertionError("egress without keys")
    except EgressError:
        pass
