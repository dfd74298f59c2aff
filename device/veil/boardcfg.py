"""The board's config file (/veil.json, docs/footfall.md) and what it sets up at boot:
Wi-Fi, the clock (NTP), the transport.

    from veil import boardcfg
    cfg, transport = boardcfg.setup("/veil.json", nvs, now)  # then app.start(nvs, transport)

Used once, at boot: veil.footfall unloads this module afterwards, so its bytecode does
not sit in the heap while the board counts (docs/memory.md: code is most of the heap).
A file that is not valid JSON, holds an unknown entry or a value out of range raises
ConfigError: the board then sends nothing.
"""

import json
import time

from micropython import const

from veil import VeilError

_WIFI_WAIT_MS = const(20000)
_ENOENT = const(2)
DEFAULTS = {"interval_us": 100000, "window_us": 50000, "ring": 128, "poll_ms": 50}


class ConfigError(VeilError):
    pass


def _int(d, key, lo, hi, where):
    v = d.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise ConfigError("%s.%s: integer in %d..%d required" % (where, key, lo, hi))
    return v


def _text(d, key, where):
    v = d.get(key)
    if type(v) is not str or not v:
        raise ConfigError("%s.%s: text required" % (where, key))
    return v


def parse_config(text):
    """The checked config of /veil.json's text (None: no file); ConfigError says why."""
    cfg = {"transport": "serial", "scan": dict(DEFAULTS), "mqtt": None, "wifi": None}
    if text is None:
        return cfg
    try:
        d = json.loads(text)
    except ValueError:
        raise ConfigError("not JSON")
    if type(d) is not dict:
        raise ConfigError("a JSON object is required")
    for key in d:
        if key not in cfg:
            raise ConfigError("unknown entry %r" % key)
    t = d.get("transport", "serial")
    if t not in ("serial", "mqtt"):
        raise ConfigError("transport: 'serial' or 'mqtt' required")
    cfg["transport"] = t
    scan = d.get("scan", {})
    if type(scan) is not dict:
        raise ConfigError("scan: an object is required")
    for key in scan:
        if key not in DEFAULTS:
            raise ConfigError("scan: unknown entry %r" % key)
    s = cfg["scan"]
    s.update(scan)
    _int(s, "interval_us", 2500, 10240000, "scan")  # BLE: 2.5 ms .. 10.24 s
    if _int(s, "window_us", 2500, 10240000, "scan") > s["interval_us"]:
        raise ConfigError("scan.window_us: at most scan.interval_us")
    _int(s, "ring", 2, 1024, "scan")
    _int(s, "poll_ms", 1, 10000, "scan")
    if t == "mqtt" or "mqtt" in d:
        m = d.get("mqtt")
        if type(m) is not dict:
            raise ConfigError("mqtt: an object with host and port is required")
        cfg["mqtt"] = (_text(m, "host", "mqtt"), _int(m, "port", 1, 65535, "mqtt"))
    if "wifi" in d:
        w = d["wifi"]
        if type(w) is not dict:
            raise ConfigError("wifi: an object with ssid and key is required")
        key = w.get("key", "")
        if type(key) is not str:
            raise ConfigError("wifi.key: text required")
        cfg["wifi"] = (_text(w, "ssid", "wifi"), key)
    return cfg


def read_config(path):
    """parse_config() of the file at `path`; a missing file gives the defaults, one that
    is there but cannot be read raises ConfigError (when in doubt, send nothing)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        if e.errno != _ENOENT:
            raise ConfigError("%s cannot be read: %s" % (path, e))
        text = None
    return parse_config(text)


def _wifi(ssid, key):
    import network

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(ssid, key)
        t0 = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), t0) > _WIFI_WAIT_MS:
                raise ConfigError("wifi: no connection to %r" % ssid)
            time.sleep_ms(100)


def _ntp(now):
    # A board without an RTC starts in 2000, before veil time: set the clock if we can.
    if now() >= 0:
        return
    try:
        import ntptime

        ntptime.settime()
    except (ImportError, OSError) as e:
        print("veil: the clock could not be set over NTP:", e)


def setup(path, nvs, now):
    """(config, transport) for app.start: the checked config of the file at `path` (a
    missing file gives the defaults), Wi-Fi joined and, if the clock `now()` (veil time)
    is unset, set over NTP, and the transport's name ("serial") or object (MQTT). Raises
    ConfigError, OSError or VeilError (MissingKeys: the MQTT client id needs the dev id)."""
    cfg = read_config(path)
    if cfg["wifi"] is not None:
        _wifi(*cfg["wifi"])
        _ntp(now)
    if cfg["transport"] == "serial":
        return cfg, "serial"
    from veil import keys
    from veil.transport import get

    dev_id = keys.load(nvs).dev_id  # MissingKeys: refuse, as app.start would
    host, port = cfg["mqtt"]
    return cfg, get("mqtt")(host, port, dev_id)
