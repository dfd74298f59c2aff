"""The device's provisioned secrets, read from NVS (namespace "veil").

    keys = load(esp32.NVS("veil"))      # on a board; KeyError-free: MissingKeys says which

| NVS key | bytes | what |
|---|---|---|
| dev_id | 8 | random device id (never derived from the MAC or serial number) |
| cose_key | 16 | AES-128 key for COSE_Encrypt0 (AES-CCM-16-64-128) |
| base_iv | 13 | COSE Base IV; nonce = base_iv XOR padded Partial IV (RFC 9052 §3.1) |
| pseudo_key | 32 | HMAC-SHA256 key of pseudonyms, rotated per epoch by derivation |
| policy_key | 32 | HMAC-SHA256 key authenticating the policy (COSE_Mac0) |
| policy | ≤ 2048 | the COSE_Mac0 policy itself |

The COSE key id (kid) is the device id. `machine.unique_id()` (the base MAC) is never
read here and never appears in anything sent.
"""

from veil import VeilError

SIZES = (("dev_id", 8), ("cose_key", 16), ("base_iv", 13), ("pseudo_key", 32), ("policy_key", 32))
_POLICY_MAX = 2048


class MissingKeys(VeilError):
    pass


class Keys:
    def __init__(self, dev_id, cose_key, base_iv, pseudo_key, policy_key, policy=None):
        for (name, size), value in zip(SIZES, (dev_id, cose_key, base_iv, pseudo_key, policy_key)):
            if not isinstance(value, (bytes, bytearray)) or len(value) != size:
                raise MissingKeys("key %s missing or not %d bytes" % (name, size))
        self.dev_id = bytes(dev_id)
        self.kid = self.dev_id
        self.cose_key = bytes(cose_key)
        self.base_iv = bytes(base_iv)
        self.pseudo_key = bytes(pseudo_key)
        self.policy_key = bytes(policy_key)
        self.policy = policy


def _blob(nvs, name, size):
    buf = bytearray(size)
    try:
        n = nvs.get_blob(name, buf)
    except OSError:
        return None
    return bytes(buf[:n])


def load(nvs):
    """Read every secret from an `esp32.NVS`-like object; MissingKeys names what is missing."""
    values = []
    for name, size in SIZES:
        v = _blob(nvs, name, size)
        if v is None or len(v) != size:
            raise MissingKeys("key %s is not provisioned" % name)
        values.append(v)
    return Keys(*values, policy=_blob(nvs, "policy", _POLICY_MAX))
