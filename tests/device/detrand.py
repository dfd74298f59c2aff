"""A deterministic byte source for tests: SHA-256 in counter mode (MicroPython and CPython).

    rand = DetRand(b"seed")
    rand(32)  # sha256(seed || counter as 8 big-endian bytes) blocks, concatenated

Not a CSPRNG replacement for a board: the output is fixed by the seed, which is what a
test needs (a failure reproduces).
"""

import hashlib


class DetRand:
    def __init__(self, seed):
        self._seed = bytes(seed)
        self._ctr = 0
        self._left = b""

    def __call__(self, n):
        out = self._left
        while len(out) < n:
            block = hashlib.sha256(self._seed + self._ctr.to_bytes(8, "big")).digest()
            self._ctr += 1
            out += block
        self._left = out[n:]
        return out[:n]
