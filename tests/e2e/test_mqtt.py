"""The device's MQTT transport and `edgeveil capture --mqtt`, against a real Mosquitto.

Device code runs in the MicroPython unix VM (the real interpreter and its `socket`) and
publishes to a broker each test starts on loopback (the `mosquitto` fixture); what arrives
is captured by the capture library or the `edgeveil capture` command, as a user would.
Payloads are made by formulas written here twice, once for the VM and once for CPython.
Only the DUP-flag test uses a fake broker: Mosquitto cannot be told to lose a PUBACK.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
from capturetest import Cli, wait_for
from edgeveil.boards import load_board
from edgeveil.capture import CaptureWriter, read_capture
from edgeveil.capture_sources import Limits, capture_mqtt
from edgeveil.cose import decrypt0
from edgeveil.demo import DeviceSecrets
from edgeveil.mpy import compile_tree
from edgeveil.paths import device_dir
from edgeveil.policy import compile_policy, default_policy
from edgeveil.replaygen import demo_recording, write_jsonl
from edgeveil.senml import decode_pack
from edgeveil.vm import micropython_path, run_code

HEAP = load_board("esp32-generic").heap_bytes
APP_HEAP = load_board("esp32-generic").vm_app_heap_bytes  # the whole application (demo's)
DEV_ID = bytes.fromhex("3f9a0c12d4e5b6a7")
TOPIC = "edgeveil/3f9a0c12d4e5b6a7/up"  # 28 bytes: remaining length = 32 + payload
# Payload sizes around MQTT's remaining-length boundaries (1, 2 and 3 length bytes).
SIZES = [1, 95, 96, 1000, 16351, 16352, 20000, 3]


def payload(i: int, n: int) -> bytes:
    return bytes((i * 7 + j) & 0xFF for j in range(n))


VM_PAYLOAD = "def payload(i, n):\n    return bytes((i * 7 + j) & 0xFF for j in range(n))\n"


def vm_transport(port: int, **kw: Any) -> str:
    args = "".join(", %s=%r" % kv for kv in kw.items())
    return "from veil.transport import get\nt = get('mqtt')('127.0.0.1', %d, %r%s)\n" % (
        port,
        DEV_ID,
        args,
    )


@contextmanager
def subscribed(host: str, port: int, out: Path, limits: Limits) -> Iterator[dict[str, Any]]:
    """capture_mqtt in a thread, entered once the broker acknowledged the subscription."""
    result: dict[str, Any] = {}
    ready = threading.Event()
    stop = threading.Event()

    def run() -> None:
        try:
            with CaptureWriter(out, "test") as w:
                result["stats"] = capture_mqtt(
                    w, host, port, limits=limits, stop=stop, ready=ready.set
                )
        except Exception as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc
            ready.set()

    th = threading.Thread(target=run)
    th.start()
    try:
        assert ready.wait(10), "no subscription"
        assert "error" not in result, result
        yield result
    finally:
        th.join(30)
        stop.set()
        th.join(5)


def test_device_publishes_exactly_what_the_subscriber_receives(
    mosquitto: Any, tmp_path: Path
) -> None:
    out = tmp_path / "a.capture"
    code = (
        VM_PAYLOAD
        + vm_transport(mosquitto.port)
        + "for i, n in enumerate(%r):\n    t.send(payload(i, n))\n" % SIZES
        + "t.close()\nprint('reconnects', t.reconnects)\n"
    )
    with subscribed(mosquitto.host, mosquitto.port, out, Limits(count=len(SIZES), duration=60)):
        res = run_code(code, HEAP)
        assert res.ok, (res.stdout + res.stderr).decode()
        assert res.stdout.split() == [b"reconnects", b"0"]
    cap = read_capture(out)
    assert cap.problems == []
    assert [r.data for r in cap.records] == [payload(i, n) for i, n in enumerate(SIZES)]
    assert {(r.channel, r.topic, r.source) for r in cap.records} == {
        ("mqtt", TOPIC, "mqtt://%s" % mosquitto.url)
    }


def test_device_reconnects_once_when_the_broker_comes_back(mosquitto: Any, tmp_path: Path) -> None:
    code = (
        VM_PAYLOAD + vm_transport(mosquitto.port) + "import sys\n"
        "t.send(payload(0, 50))\n"
        "print('sent', t.reconnects)\n"
        "sys.stdin.readline()\n"
        "t.send(payload(1, 50))\n"  # the old connection is dead: one reconnect
        "print('sent', t.reconnects)\n"
        "sys.stdin.readline()\n"
        "try:\n"
        "    t.send(payload(2, 50))\n"
        "except Exception as e:\n"
        "    print('raised', type(e).__name__, t.reconnects)\n"
    )
    with VM(code) as vm:
        assert vm.line() == "sent 0"
        mosquitto.kill()
        mosquitto.start()  # a new broker on the same port
        with subscribed(
            mosquitto.host, mosquitto.port, tmp_path / "a.capture", Limits(count=1, duration=30)
        ) as got:
            vm.say("go")
            assert vm.line() == "sent 1"
        assert got["stats"].messages == 1
        mosquitto.kill()  # and now gone for good: the reconnect fails too
        vm.say("go")
        assert vm.line() == "raised MqttError 2"
    assert [r.data for r in read_capture(tmp_path / "a.capture").records] == [payload(1, 50)]


def test_app_over_mqtt_then_the_broker_dies_reports_are_dropped_not_garbled(
    mosquitto: Any, tmp_path: Path
) -> None:
    secrets = DeviceSecrets.generate()
    blob = compile_policy(default_policy(), secrets.dev_id, secrets.policy_key)
    events = demo_recording()
    write_jsonl(events, tmp_path / "rec.jsonl")
    compile_tree(device_dir(), tmp_path / "lib")
    half = len(events) // 2
    code = _APP_CODE % {
        "blobs": secrets.nvs_values(blob),
        "port": mosquitto.port,
        "dev_id": secrets.dev_id,
        "half": half,
    }
    out = tmp_path / "app.capture"
    with Cli("--mqtt", mosquitto.url, "-o", str(out), "--every", "1") as cli:
        with VM(code, path=[tmp_path / "lib"], cwd=tmp_path, heap=APP_HEAP) as vm:
            paused = vm.line().split()
            assert paused[0] == "paused", paused
            sent_before = int(paused[1])
            assert sent_before >= 2  # reports went out over MQTT before the kill
            wait_for(lambda: len(read_capture(out).records) == sent_before)
            mosquitto.kill()
            vm.say("go")
            done = vm.line().split()
            dropped_lines = [x for x in vm.chatter if x.startswith("veil: report dropped")]
        assert done[0] == "done", done
        sent, dropped, reconnects = map(int, done[1:])
        assert sent == sent_before and dropped >= 1  # nothing sent once the broker died
        assert reconnects == dropped  # one reconnect attempt per report, then dropped
        assert len(dropped_lines) == dropped
        assert all("publish to 127.0.0.1:%d failed" % mosquitto.port in x for x in dropped_lines)
        assert cli.wait() == 2
        assert "lost the connection to the broker after %d messages" % sent in cli.stderr()
    cap = read_capture(out)
    assert cap.problems == [] and len(cap.records) == sent
    counters = []
    for rec in cap.records:
        assert rec.topic == "edgeveil/%s/up" % secrets.dev_id.hex()
        msg = decrypt0(secrets.cose_key, secrets.base_iv, rec.data, kid=secrets.dev_id)
        decode_pack(msg.plaintext)  # a well-formed SenML pack, not a fragment
        counters.append(msg.counter)
    assert counters == list(range(sent))


# The device application with a ready MqttTransport object (app.start's `transport`),
# paused halfway through the recording until the test says go.
_APP_CODE = """
import sys
from veil import app
from veil.egress import Counter
from veil.sources.replay import replay
from veil.transport.mqtt import MqttTransport

class DictNVS:
    def __init__(self, blobs):
        self.blobs = blobs
    def get_blob(self, key, buf):
        if key not in self.blobs:
            raise OSError(-4354)
        v = self.blobs[key]
        buf[: len(v)] = v
        return len(v)

Counter.create("veil.ctr")
t = MqttTransport("127.0.0.1", %(port)d, %(dev_id)r, timeout_s=2)
pipe = app.start(DictNVS(%(blobs)r), transport=t)

def lines():
    with open("rec.jsonl") as f:
        for n, line in enumerate(f):
            if n == %(half)d:
                print("paused", pipe.egress.sent, pipe.egress.dropped)
                sys.stdin.readline()
            yield line

_ok, _bad, last_t = replay(lines(), pipe.feed)
pipe.flush(last_t)
print("done", pipe.egress.sent, pipe.egress.dropped, t.reconnects)
"""


def test_capture_killed_by_sigkill_keeps_every_record_it_wrote(
    mosquitto: Any, tmp_path: Path
) -> None:
    import paho.mqtt.client as mqtt

    out = tmp_path / "k.capture"
    sent: list[bytes] = []
    stop = threading.Event()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()

    def publish() -> None:
        i = 0
        while not stop.is_set():
            msg = i.to_bytes(4, "big") + os.urandom(i % 300)
            sent.append(msg)
            pub.publish(TOPIC, msg, qos=1)
            i += 1
            time.sleep(0.002)

    with Cli("--mqtt", mosquitto.url, "-o", str(out), "--every", "1") as cli:
        th = threading.Thread(target=publish)
        th.start()
        try:
            wait_for(lambda: cli.progress() >= 200)
            cli.proc.send_signal(signal.SIGKILL)
            assert cli.wait() == -signal.SIGKILL
            reported = cli.progress()  # each line was printed after its record was written
            # The publisher goes on past the kill, so the stream did not end with it.
            wait_for(lambda: len(sent) > reported + 20)
        finally:
            stop.set()
            th.join()
            pub.loop_stop()
            pub.disconnect()
    cap = read_capture(out)
    got = [r.data for r in cap.records]
    assert len(got) >= reported >= 200
    first = sent.index(got[0])
    assert got == sent[first : first + len(got)]  # in order, none lost, none garbled
    assert len(sent) > first + len(got)  # the kill came mid-stream
    assert all(line == len(got) + 2 for line, _, _ in cap.problems)  # a torn last line only


def test_capture_stops_on_sigterm_idle_and_duration(mosquitto: Any, tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    try:
        out = tmp_path / "t.capture"
        with Cli("--mqtt", mosquitto.url, "-o", str(out), "--every", "1", "--json") as cli:
            for i in range(5):
                pub.publish(TOPIC, b"m%d" % i, qos=1).wait_for_publish(5)
            wait_for(lambda: cli.progress() == 5)
            cli.proc.send_signal(signal.SIGTERM)
            assert cli.wait() == 0
            summary = cli.json()
        assert summary["stopped_by"] == "signal" and summary["messages"] == 5
        assert [r.data for r in read_capture(out).records] == [b"m%d" % i for i in range(5)]
    finally:
        pub.loop_stop()
        pub.disconnect()

    for limit, value, why in (("--idle", "0.5", "idle"), ("--duration", "0.8", "duration")):
        t0 = time.monotonic()
        with Cli(
            "--mqtt",
            mosquitto.url,
            "-o",
            str(tmp_path / (why + ".capture")),
            limit,
            value,
            "--json",
        ) as cli:
            assert cli.wait() == 0
            assert cli.json()["stopped_by"] == why
        assert time.monotonic() - t0 < 10


def test_dup_flag_and_the_same_packet_on_the_one_resend(tmp_path: Path) -> None:
    broker = FakeBroker(["drop-after-publish", "ack"])
    code = (
        VM_PAYLOAD
        + vm_transport(broker.port, timeout_s=2, keepalive=30)
        + "t.send(payload(5, 300))\nprint('ok', t.reconnects)\n"
    )
    res = run_code(code, HEAP)
    broker.close()
    assert res.stdout.split() == [b"ok", b"1"], (res.stdout + res.stderr).decode()
    (connect1, pub1), (connect2, pub2) = broker.seen
    client_id = b"veil-" + DEV_ID.hex().encode()
    # CONNECT (MQTT 3.1.1 §3.1): "MQTT", level 4, clean session, keep alive 30, client id.
    assert connect1 == connect2 == b"\x00\x04MQTT\x04\x02\x00\x1e" + b"\x00\x15" + client_id
    assert pub1[0] == 0x32 and pub2[0] == 0x3A  # QoS 1; then the same with DUP
    assert pub1[1:] == pub2[1:]
    body = _body(pub1)
    assert body[: 2 + len(TOPIC)] == len(TOPIC).to_bytes(2, "big") + TOPIC.encode()
    assert body[2 + len(TOPIC) + 2 :] == payload(5, 300)


@pytest.mark.parametrize(
    ("script", "why"),
    [(["silent", "silent"], "no answer from the broker"), (["refuse", "refuse"], "code 5")],
)
def test_a_broker_that_fails_twice_makes_send_raise(script: list[str], why: str) -> None:
    broker = FakeBroker(script)
    code = vm_transport(broker.port, timeout_s=0.5) + (
        "try:\n    t.send(b'x')\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    res = run_code(code, HEAP, timeout=30)
    broker.close()
    text = res.stdout.decode()
    assert text.startswith("MqttError publish to 127.0.0.1") and why in text, text
    assert len(broker.seen) == 2  # the first try and one reconnect, no more


# --- helpers ----------------------------------------------------------------------------------


class VM:
    """Device code in the MicroPython VM as a process the test talks to (lines in, out)."""

    def __init__(
        self, code: str, path: list[Path] | None = None, cwd: Path | None = None, heap: int = HEAP
    ) -> None:
        env = dict(os.environ, MICROPYPATH=":".join(str(p) for p in path or [device_dir()]))
        self.chatter: list[str] = []  # the device's "veil: ..." console lines
        self.proc = subprocess.Popen(
            [micropython_path(), "-X", "heapsize=%d" % heap, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
        )

    def __enter__(self) -> VM:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout):
            if f:
                f.close()

    def line(self) -> str:
        """The next line that is not the device's own console chatter ("veil: ...")."""
        assert self.proc.stdout is not None
        while True:
            raw = _readline(self.proc.stdout, 60)
            if not raw:
                raise AssertionError("VM ended:\n" + self.rest())
            if not raw.startswith(b"veil: "):
                return raw.decode().strip()
            self.chatter.append(raw.decode().strip())

    def say(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def rest(self) -> str:
        assert self.proc.stdout is not None
        self.proc.wait(60)
        return self.proc.stdout.read().decode("utf-8", "replace")


def _readline(f: IO[bytes], timeout: float) -> bytes:
    box: list[bytes] = []
    th = threading.Thread(target=lambda: box.append(f.readline()), daemon=True)
    th.start()
    th.join(timeout)
    assert box, "no line within %g s" % timeout
    return box[0]


def _body(packet: bytes) -> bytes:
    """A packet's body after its fixed header (MQTT 3.1.1 §2.2)."""
    i, n, shift = 1, 0, 0
    while True:
        b = packet[i]
        n |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    assert len(packet) - i == n
    return packet[i:]


class FakeBroker:
    """A fake MQTT broker with one scripted behaviour per connection; records what came.

    ack: CONNACK, then PUBACK the PUBLISH. drop-after-publish: CONNACK, read the PUBLISH,
    close without PUBACK. silent: answer nothing. refuse: CONNACK with code 5.
    `seen`: (CONNECT body, whole PUBLISH packet or b"") per connection.
    """

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)
        self.seen: list[tuple[bytes, bytes]] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for how in self.script:
            conn, _ = self.server.accept()
            with conn:
                conn.settimeout(10)
                connect = _body(self._packet(conn))
                publish = b""
                if how == "silent":
                    conn.recv(1)  # until the client gives up and closes
                elif how == "refuse":
                    conn.sendall(b"\x20\x02\x00\x05")
                else:
                    conn.sendall(b"\x20\x02\x00\x00")
                    publish = self._packet(conn)
                    if how == "ack":
                        conn.sendall(b"\x40\x02" + _body(publish)[2 + len(TOPIC) : 4 + len(TOPIC)])
                self.seen.append((connect, publish))

    @staticmethod
    def _packet(conn: socket.socket) -> bytes:
        head = conn.recv(2)
        data = bytearray(head)
        while data[-1] & 0x80:
            data += conn.recv(1)
        i, n, shift = 1, 0, 0
        while True:
            n |= (data[i] & 0x7F) << shift
            if not data[i] & 0x80:
                break
            i, shift = i + 1, shift + 7
        while len(data) < i + 1 + n:
            data += conn.recv(i + 1 + n - len(data))
        return bytes(data)

    def close(self) -> None:
        self.thread.join(10)
        self.server.close()
