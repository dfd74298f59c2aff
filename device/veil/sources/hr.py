"""Heart rate (optical sensor or BLE heart-rate strap): channel "hr", beats per minute.

Replay event: {"t": 1700000000, "kind": "hr", "bpm": 72}
"""

from veil.sources import SourceError, register

_MAX_BPM = 300


def normalize(event, emit):
    bpm = event.get("bpm")
    if type(bpm) is not int or not 0 < bpm < _MAX_BPM:
        raise SourceError("hr.bpm: integer 1..299 required")
    emit("hr", bpm)


register("hr", normalize)
