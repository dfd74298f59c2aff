"""Air quality in a home: CO2 concentration (channel "co2", ppm) and temperature
(channel "temp", centi-degrees Celsius, fixed point).

Replay event: {"t": 1700000000, "kind": "co2", "ppm": 812, "temp": "21.37"}
"""

from veil.sources import SourceError, fixed, register


def normalize(event, emit):
    ppm = event.get("ppm")
    if type(ppm) is not int or not 0 <= ppm <= 40000:
        raise SourceError("co2.ppm: integer 0..40000 required")
    emit("co2", ppm)
    if "temp" in event:
        emit("temp", fixed(event["temp"], 2))


register("co2", normalize)
