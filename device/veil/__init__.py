"""veil: the on-device privacy pipeline of edgeveil.

sensor sample -> source -> window -> aggregators -> policy gate -> SenML/CBOR ->
COSE_Encrypt0 -> egress -> transport. Nothing raw leaves; when in doubt, send nothing.
"""

VERSION = "0.1.0"

# Veil time: event timestamps inside the pipeline are seconds since 2023-11-14T00:00:00Z
# (a whole number of days after the Unix epoch), so they stay below 2**30, an ESP32
# small int, until 2057. Sources convert on the way in; reports convert back (bt).
T0 = 1699920000


class VeilError(Exception):
    """Base of the errors veil raises on purpose."""
