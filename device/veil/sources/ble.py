"""BLE presence: advertisements seen by a scan. Channels "ble" (6-byte address, bytes)
and "rssi" (dBm, int).

Replay event: {"t": 1700000000, "kind": "ble", "addr": "c4:7e:11:02:9a:3b", "rssi": -71}

On a board the same normalizer is fed from `bluetooth.BLE().gap_scan()` IRQ events
(_IRQ_SCAN_RESULT gives addr_type, addr, adv_type, rssi, adv_data). The address is only
ever handed to a distinct-count aggregator, which keeps keyed hashes of it in RAM.
"""

from veil.sources import SourceError, register


def parse_addr(text):
    if type(text) is not str or len(text) != 17:
        raise SourceError("ble.addr: 'xx:xx:xx:xx:xx:xx' required")
    try:
        return bytes(int(text[i : i + 2], 16) for i in range(0, 17, 3))
    except ValueError:
        raise SourceError("ble.addr: not hexadecimal")


def normalize(event, emit):
    rssi = event.get("rssi")
    if type(rssi) is not int or not -127 <= rssi <= 20:
        raise SourceError("ble.rssi: integer -127..20 required")
    emit("ble", parse_addr(event.get("addr")))
    emit("rssi", rssi)


register("ble", normalize)
