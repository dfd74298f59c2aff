"""Egress: the single path from the pipeline to a transport.

    counter = Counter("veil.ctr")           # provisioned with Counter.create(path)
    egress = Egress(keys, counter, SerialTransport())
    egress.send(report)                     # report made by veil.gate, nothing else

A report becomes a SenML pack (RFC 8428 §6, CBOR representation with integer labels),
then COSE_Encrypt0 (RFC 9052 §5.2, AES-CCM-16-64-128) under the device key with the
message counter as Partial IV, then goes to the transport. Anything that fails drops the
report and counts it; nothing ever falls back to sending more.

The counter is reserved in blocks: before counter c is used, a value > c is durably
stored, and after a reboot counting resumes at the stored value. A power cut therefore
skips at most one block of counters and never reuses one (so never reuses a nonce).
"""

from micropython import const

from veil import VeilError, cbor, cose
from veil.gate import Report, sealed
from veil.store import read_record, write_record

_BLOCK = const(32)

# SenML labels (RFC 8428 §6, Table 4) and edgeveil's extension labels (docs/wire-format.md).
_BN = const(-2)
_BT = const(-3)
_N = const(0)
_V = const(2)


class EgressError(VeilError):
    pass


class Counter:
    """The COSE message counter, persisted ahead of use in reservation blocks."""

    def __init__(self, path, block=_BLOCK):
        rec = read_record(path)  # StoreError if torn or corrupt: refuse, never guess
        if rec is None or len(rec) != 8:
            raise EgressError("message counter not provisioned (%s)" % path)
        self._path = path
        self._block = block
        self._next = self._limit = int.from_bytes(rec, "big")

    @staticmethod
    def create(path, start=0):
        write_record(path, start.to_bytes(8, "big"))

    def take(self):
        """The next unused counter; persists a new reservation first when needed."""
        if self._next >= self._limit:
            limit = self._next + self._block
            if limit > cose.COUNTER_LIMIT:
                raise EgressError("message counter exhausted: re-key the device")
            write_record(self._path, limit.to_bytes(8, "big"))
            self._limit = limit
        c = self._next
        self._next = c + 1
        return c


def senml(report):
    """The SenML pack (list of maps) of a sealed report."""
    pack = []
    for name, value, eps in report.records:
        rec = {_N: name, _V: value, "k": report.k, "eps": eps}
        if not pack:
            rec[_BN] = report.base_name
            rec[_BT] = report.start
            rec["w"] = report.window
        pack.append(rec)
    return pack


class Egress:
    def __init__(self, keys, counter, transport):
        if keys is None:
            raise EgressError("no keys provisioned")
        self._keys = keys
        self._counter = counter
        self._transport = transport
        self.sent = 0
        self.dropped = 0

    def send(self, report):
        """Protect and transmit one report; returns True if it went out."""
        if not (isinstance(report, Report) and sealed(report)):
            self.dropped += 1
            raise EgressError("egress accepts only reports built by the policy gate")
        try:
            plaintext = cbor.dumps(senml(report))
            k = self._keys
            msg = cose.encrypt0(k.cose_key, k.base_iv, k.kid, self._counter.take(), plaintext)
            self._transport.send(msg)
        except Exception as e:  # noqa: BLE001 -- drop and count, never send more
            self.dropped += 1
            print("veil: report dropped:", e)
            return False
        self.sent += 1
        return True
