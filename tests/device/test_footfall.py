# The board loop (veil.footfall) in the MicroPython VM with a fake radio, clock and
# pipeline, and the config file's checks (veil.boardcfg). main() with the whole app runs
# from .mpy in tests/host/test_footfall_vm.py (all of it from source does not fit here).
from bletest import Clock, FakeBLE
from bletest import adv as _adv
from bletest import mac as _mac

START = 81000  # veil time


class FakePipe:
    """Pipeline's feed/tick, recorded: serve()'s order of work is what is tested here."""

    def __init__(self):
        self.log = []

    def feed(self, t, channel, value):
        self.log.append(("feed", t, channel, bytes(value) if channel == "ble" else value))

    def tick(self, t):
        self.log.append(("tick", t))


def test_serve_drains_then_ticks_with_the_clock_reading():
    from veil.footfall import serve
    from veil.sources.ble_live import Scanner

    radio = Clock(0)
    sc = Scanner(FakeBLE(), 8, radio)
    heard = {START + 3: 1, START + 9: 2, START + 10: 3}
    clock = Clock(START - 5)

    def step():
        # The board clock moves 5 s a pass; what the radio heard meanwhile is in the ring.
        clock.t += 5
        for t in sorted(heard):
            if clock.t - 5 < t <= clock.t:
                radio.t = t
                sc._irq(5, _adv(_mac(heard[t]), -60))
        return clock.t

    pipe = FakePipe()
    serve(pipe, sc, step, 1, until=START + 15)
    assert pipe.log == [
        ("tick", START),
        ("feed", START + 3, "ble", _mac(1)),
        ("feed", START + 3, "rssi", -60),
        ("tick", START + 5),
        ("feed", START + 9, "ble", _mac(2)),
        ("feed", START + 9, "rssi", -60),
        ("feed", START + 10, "ble", _mac(3)),
        ("feed", START + 10, "rssi", -60),
        ("tick", START + 10),
        ("tick", START + 15),
    ]


def test_serve_never_ticks_an_unset_clock():
    from veil.footfall import serve
    from veil.sources.ble_live import Scanner

    pipe = FakePipe()
    readings = [-10, -5, 0]
    serve(pipe, Scanner(FakeBLE(), 4, Clock(0)), lambda: readings.pop(0), 1, until=0)
    assert pipe.log == [("tick", 0)]


def test_config_defaults_and_checks():
    from veil.boardcfg import ConfigError, parse_config

    cfg = parse_config(None)
    assert cfg["transport"] == "serial" and cfg["mqtt"] is None and cfg["wifi"] is None
    assert cfg["scan"] == {"interval_us": 100000, "window_us": 50000, "ring": 128, "poll_ms": 50}
    cfg = parse_config(
        '{"transport": "mqtt", "mqtt": {"host": "10.0.0.2", "port": 1883},'
        ' "wifi": {"ssid": "shop", "key": "k"}, "scan": {"ring": 64}}'
    )
    assert cfg["mqtt"] == ("10.0.0.2", 1883) and cfg["wifi"] == ("shop", "k")
    assert cfg["scan"]["ring"] == 64 and cfg["scan"]["poll_ms"] == 50
    for bad in (
        "[",
        "[]",
        '{"transport": "lora"}',
        '{"transport": "mqtt"}',
        '{"mqtt": {"host": "h", "port": 0}}',
        '{"scan": {"ring": 1}}',
        '{"scan": {"interval_us": 10000, "window_us": 20000}}',
        '{"scan": {"speed": 1}}',
        '{"wifi": {"key": "k"}}',
        '{"extra": 1}',
        '{"wifi": {"ssid": "shop", "key": 7}}',
    ):
        try:
            parse_config(bad)
        except ConfigError:
            continue
        raise AssertionError("accepted: " + bad)


def test_an_unreadable_config_is_refused_a_missing_one_is_the_default():
    import os

    from veil.boardcfg import ConfigError, read_config

    assert read_config("no-such-file.json")["transport"] == "serial"
    os.mkdir("cfgdir")  # there, but not readable as a file
    try:
        read_config("cfgdir")
    except ConfigError:
        return
    raise AssertionError("an unreadable config was taken for the defaults")
