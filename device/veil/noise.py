"""Exact discrete Laplace noise with integer arithmetic only (no floating point anywhere).

    from veil.noise import Sampler, NoisePool
    s = Sampler()                       # randomness from os.urandom
    s.discrete_laplace(5, 2)            # P(x) ~ exp(-|x| / t), scale t = 5/2
    s.laplace_for(1, 500)               # sensitivity 1, epsilon 0.5 -> scale 2
    pool = NoisePool(s, 16)
    pool.refill(*laplace_scale(1, 500)) # at window open / in idle time
    noisy = count + pool.take()         # at window close: constant time

Algorithms: C. Canonne, G. Kamath, T. Steinke, "The Discrete Gaussian for Differential
Privacy" (NeurIPS 2020, arXiv:2004.00010), Algorithm 1 (Bernoulli(exp(-gamma))) and
Algorithm 2 (discrete Laplace). Every probability is a ratio of integers and every coin
is drawn by rejection sampling on random bytes, so the output distribution is exactly
the mathematical one (no float rounding, which is what breaks textbook Laplace noise:
Mironov, "On Significance of the Least Significant Bits for Differential Privacy",
CCS 2012).

Scales are fractions num/den of positive ints. For a released statistic the scale is
sensitivity / epsilon with epsilon in milli-units (`eps_milli` 500 = 0.5), so the scale
is (sensitivity * 1000) / eps_milli; fractions are reduced by their gcd first, which
keeps the intermediates small.

Integers and allocation (the ESP32 has 31-bit small ints; ints >= 2**30 allocate):
noise is drawn outside the per-sample path (at window open or in idle time, through
NoisePool), so the samplers may allocate. They do: `rand` returns a new bytes object per
32 random bytes, and products such as den * k (Algorithm 1) and u + t * v (Algorithm 2)
become long ints once a reduced scale's numerator or denominator nears 2**30. The bit
reservoir stays below 2**30 by construction (see `_bits`). `NoisePool.take()` neither
allocates nor loops, and is the only call meant for the window-close path.
"""

import os

from micropython import const

from veil import VeilError

_BUF = const(32)  # random bytes fetched per call of the byte source
_CHUNK = const(16)  # bits per piece when a uniform draw needs more than _MAXBITS
_MAXBITS = const(22)  # largest single _bits() request: keeps the reservoir < 2**30
_MILLI = const(1000)  # epsilon is given in milli-units


class NoiseError(VeilError):
    """Bad scale or probability, a broken byte source, or an empty noise pool."""


def _check_pos(x, what):
    if type(x) is not int or x < 1:
        raise NoiseError(what + " must be a positive int")


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def _reduce(num, den):
    g = _gcd(num, den)
    return num // g, den // g


def _bitlen(x):
    # Number of bits of x >= 0 (MicroPython's int has no bit_length()).
    n = 0
    while x >= 256:
        x >>= 8
        n += 8
    while x:
        x >>= 1
        n += 1
    return n


def laplace_scale(sensitivity, eps_milli):
    """The reduced scale (num, den) = sensitivity / (eps_milli / 1000) of a release."""
    _check_pos(sensitivity, "sensitivity")
    _check_pos(eps_milli, "eps_milli")
    return _reduce(sensitivity * _MILLI, eps_milli)


class Sampler:
    """Exact samplers over a byte source `rand` (a callable n -> n random bytes)."""

    def __init__(self, rand=None):
        self._rand = os.urandom if rand is None else rand
        self._buf = b""
        self._pos = 0
        self._acc = 0  # bit reservoir: holds _nacc random bits, always < 2**30
        self._nacc = 0

    def _byte(self):
        if self._pos >= len(self._buf):
            b = self._rand(_BUF)
            if type(b) not in (bytes, bytearray) or len(b) != _BUF:
                raise NoiseError("byte source returned the wrong length or type")
            self._buf = b
            self._pos = 0
        v = self._buf[self._pos]
        self._pos += 1
        return v

    def _bits(self, k):
        # k (1.._MAXBITS) uniform random bits as an int. Before a byte is shifted in,
        # _nacc < k <= 22, so the reservoir never exceeds 29 bits: a small int.
        acc = self._acc
        n = self._nacc
        while n < k:
            acc = (acc << 8) | self._byte()
            n += 8
        n -= k
        self._acc = acc & ((1 << n) - 1)
        self._nacc = n
        return acc >> n

    def uniform(self, n):
        """An exact uniform int in [0, n): rejection sampling on random bits.

        Draws bitlen(n - 1) bits and rejects values >= n (fewer than 2 tries expected).
        Allocates a long int only when n > 2**30.
        """
        _check_pos(n, "n")
        return self._uniform(n)

    def _uniform(self, n):
        k = _bitlen(n - 1)
        if k == 0:
            return 0
        while True:
            if k <= _MAXBITS:
                x = self._bits(k)
            else:
                x = 0
                left = k
                while left > 0:
                    c = _CHUNK if left > _CHUNK else left
                    x = (x << c) | self._bits(c)
                    left -= c
            if x < n:
                return x

    def bernoulli(self, num, den):
        """1 with probability num/den (0 <= num <= den), else 0."""
        _check_pos(den, "den")
        if type(num) is not int or num < 0 or num > den:
            raise NoiseError("need 0 <= num <= den")
        return 1 if self._uniform(den) < num else 0

    def _bern_exp_le1(self, num, den):
        # CKS 2020 Algorithm 1, gamma = num/den in [0, 1]: count the successes of
        # Bernoulli(gamma/k), k = 1, 2, ...; the final k is odd with probability
        # exp(-gamma) (alternating series of gamma**j / j!).
        if num == 0:
            return 1
        k = 1
        while self._uniform(den * k) < num:
            k += 1
        return k & 1

    def bernoulli_exp(self, num, den):
        """1 with probability exp(-num/den) (num >= 0, den >= 1), else 0.

        CKS 2020 Algorithm 1: for gamma > 1, floor(gamma) Bernoulli(exp(-1)) coins must
        all come up 1, then one coin for the remainder gamma - floor(gamma).
        """
        _check_pos(den, "den")
        if type(num) is not int or num < 0:
            raise NoiseError("need num >= 0")
        num, den = _reduce(num, den) if num else (0, 1)
        while num > den:
            if not self._bern_exp_le1(1, 1):
                return 0
            num -= den
        return self._bern_exp_le1(num, den)

    def geometric_exp(self, num, den):
        """An int y >= 0 with P(y) = (1 - e**(-1/t)) * e**(-y/t), scale t = num/den.

        CKS 2020 Algorithm 2, steps 2-6: X = U + num * V is geometric with parameter
        exp(-1/num) (U uniform on [0, num) accepted with prob. exp(-U/num), V counts
        Bernoulli(exp(-1)) successes); floor(X / den) is then geometric with parameter
        exp(-den/num).
        """
        _check_pos(num, "num")
        _check_pos(den, "den")
        num, den = _reduce(num, den)
        return self._geometric(num, den)

    def _geometric(self, num, den):
        while True:
            u = self._uniform(num)
            if self._bern_exp_le1(u, num):
                break
        v = 0
        while self._bern_exp_le1(1, 1):
            v += 1
        return (u + num * v) // den

    def discrete_laplace(self, num, den):
        """An int x with P(x) proportional to exp(-|x| * den / num): scale t = num/den.

        CKS 2020 Algorithm 2: a geometric magnitude and a fair sign, rejecting the
        negative zero so that 0 is not counted twice.
        """
        _check_pos(num, "num")
        _check_pos(den, "den")
        num, den = _reduce(num, den)
        while True:
            y = self._geometric(num, den)
            if self._bits(1):
                if y:
                    return -y
            else:
                return y

    def laplace_for(self, sensitivity, eps_milli):
        """Discrete Laplace noise for a statistic of this sensitivity at epsilon/1000."""
        num, den = laplace_scale(sensitivity, eps_milli)
        return self.discrete_laplace(num, den)


class NoisePool:
    """Noise drawn ahead of time, so that releasing a statistic takes constant time.

    Why: the samplers' running time grows with |noise| (Algorithm 2 loops once more per
    unit of magnitude, and rejections add more). Drawn at window close, the delay before
    the report leaves would tell an observer on the network roughly how much noise was
    added, and so part of the true value. Drawn here, at window open or in idle time,
    that delay is spent before the data exists; `take()` is one index and one store.
    `refill()` still takes a noise-dependent time: run it where nothing an observer sees
    waits for it. Values are popped in LIFO order and their slots zeroed (a known noise
    value un-noises its release). A Python list, not an `array`, holds them: an array's
    fixed-width slots would silently truncate a rare huge value.
    """

    def __init__(self, sampler, size):
        _check_pos(size, "size")
        self._sampler = sampler
        self._vals = [0] * size  # allocated once, here
        self._n = 0
        self._num = 0  # reduced scale of the values held; 0/0 while empty-and-unset
        self._den = 0

    def __len__(self):
        return self._n

    def scale(self):
        """The reduced scale (num, den) the pool's values were drawn at."""
        return self._num, self._den

    def refill(self, num, den):
        """Fill the pool with discrete Laplace values at scale num/den (allocates, slow).

        A different scale than the values held discards them first.
        """
        _check_pos(num, "num")
        _check_pos(den, "den")
        num, den = _reduce(num, den)
        vals = self._vals
        if num != self._num or den != self._den:
            for i in range(self._n):
                vals[i] = 0
            self._n = 0
            self._num = num
            self._den = den
        s = self._sampler
        while self._n < len(vals):
            vals[self._n] = s.discrete_laplace(num, den)
            self._n += 1

    def take(self, num=0, den=0):
        """Pop one pre-drawn value; never allocates, never falls back to no noise.

        If num and den are given, the pool's scale must be exactly num/den (compared
        by cross-multiplication: long ints only past 2**30).

        Raises:
            NoiseError: the pool is empty, or holds another scale than num/den.
        """
        n = self._n
        if n == 0:
            raise NoiseError("noise pool empty")
        if num and num * self._den != den * self._num:
            raise NoiseError("noise pool holds another scale")
        n -= 1
        v = self._vals[n]
        self._vals[n] = 0
        self._n = n
        return v
