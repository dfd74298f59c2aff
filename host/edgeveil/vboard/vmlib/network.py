"""Emulated `network` of the virtual ESP32: a WLAN that connects.

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    wlan.connect("ssid", "key")       # associated after ~1.5 s of board time
    while not wlan.isconnected():
        time.sleep_ms(100)

There is no radio: sockets already reach the host, because the unix VM's `socket` module
is the host's (connect to 127.0.0.1 for a broker or server the test runs). `ifconfig()`
therefore reports 127.0.0.1 once connected. By default any SSID connects; with
`cfg['wlan']` = {ssid: key} only those networks exist, and a wrong key or an unknown SSID
ends in STAT_WRONG_PASSWORD or STAT_NO_AP_FOUND, as on the board. The MAC addresses are
ESP-IDF's: the station uses the base MAC, the access point the base MAC + 1.
"""

import vbclock
from micropython import const

STA_IF = const(0)
AP_IF = const(1)
STAT_IDLE = const(1000)  # extmod/modnetwork.h
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)
STAT_BEACON_TIMEOUT = const(200)  # ESP-IDF wifi_err_reason_t
STAT_NO_AP_FOUND = const(201)
STAT_WRONG_PASSWORD = const(202)
STAT_ASSOC_FAIL = const(203)
STAT_HANDSHAKE_TIMEOUT = const(204)
AUTH_OPEN = const(0)
AUTH_WEP = const(1)
AUTH_WPA_PSK = const(2)
AUTH_WPA2_PSK = const(3)
AUTH_WPA_WPA2_PSK = const(4)

_CONNECT_US = const(1500000)  # board time from connect() to an address
_ZERO = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

_mac = bytes(6)
_nets = None  # {ssid: key}, or None: every SSID connects
_hostname = "mpy-esp32"
_ifs = {}  # interface -> state dict, so that every WLAN(n) shares one interface


def _init(cfg):
    global _mac, _nets
    _mac = bytes(cfg["mac"])
    _nets = cfg.get("wlan")
    _ifs.clear()


def hostname(name=None):
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


class WLAN:
    IF_STA = const(0)
    IF_AP = const(1)

    def __init__(self, interface_id=STA_IF):
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        self._if = interface_id
        s = _ifs.get(interface_id)
        if s is None:
            last = (_mac[5] + interface_id) & 0xFF  # ESP-IDF: softAP MAC = base MAC + 1
            ap = "ESP_%02X%02X%02X" % (_mac[3], _mac[4], last)
            s = _ifs[interface_id] = {
                "active": False,
                "mac": _mac[:5] + bytes((last,)),
                "ssid": ap if interface_id == AP_IF else "",
                "status": STAT_IDLE,
                "due": None,
                "ifconfig": None,
            }
        self._s = s

    def active(self, state=None):
        s = self._s
        if state is not None:
            s["active"] = bool(state)
            if not state:
                self.disconnect()
        return s["active"]

    def _need_active(self):
        if not self._s["active"]:
            raise OSError("Wifi Not Started")

    def connect(self, ssid=None, key=None, *, bssid=None):
        self._need_active()
        if self._if != STA_IF:
            raise OSError("Wifi Invalid Mode")
        s = self._s
        if ssid is not None:
            s["ssid"] = ssid
            s["key"] = key
        s["status"] = STAT_CONNECTING
        s["due"] = vbclock._now() + _CONNECT_US

    def disconnect(self):
        s = self._s
        s["status"] = STAT_IDLE
        s["due"] = None

    def status(self, param=None):
        if param == "rssi":
            if not self.isconnected():
                raise OSError("Wifi Not Connected")
            return -55
        s = self._s
        if s["status"] == STAT_CONNECTING and vbclock._now() >= s["due"]:
            nets = _nets
            ssid = s["ssid"]
            if nets is None or (ssid in nets and nets[ssid] == s.get("key")):
                s["status"] = STAT_GOT_IP
            else:
                s["status"] = STAT_WRONG_PASSWORD if ssid in nets else STAT_NO_AP_FOUND
        return s["status"]

    def isconnected(self):
        if self._if == AP_IF:
            return False  # no station ever joins the virtual access point
        return self.status() == STAT_GOT_IP

    def ifconfig(self, config=None):
        s = self._s
        if config is not None:
            s["ifconfig"] = tuple(config)
            return None
        if s["ifconfig"] is not None:
            return s["ifconfig"]
        if self._if == AP_IF:
            return ("192.168.4.1", "255.255.255.0", "192.168.4.1", "0.0.0.0")
        return (
            ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1") if self.isconnected() else _ZERO
        )

    def config(self, *args, **kw):
        s = self._s
        if args:
            p = args[0]
            if p == "mac":
                return s["mac"]
            if p in ("ssid", "essid"):
                return s["ssid"]
            if p == "hostname" or p == "dhcp_hostname":
                return _hostname
            if p == "channel":
                return 1
            raise ValueError("unknown config param")
        for k, v in kw.items():
            if k in ("ssid", "essid"):
                s["ssid"] = v
            elif k in ("hostname", "dhcp_hostname"):
                hostname(v)

    def scan(self):
        self._need_active()
        if _nets is None:
            return []
        return [(n.encode(), bytes(6), 1, -55, AUTH_WPA2_PSK, False) for n in _nets]
