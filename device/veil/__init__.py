"""veil: the on-device privacy pipeline of edgeveil.

sensor sample -> source -> window -> aggregators -> policy gate -> SenML/CBOR ->
COSE_Encrypt0 -> egress -> transport. Nothing raw leaves; when in doubt, send nothing.
"""

VERSION = "0.1.0"


class VeilError(Exception):
    """Base of the errors veil raises on purpose."""
