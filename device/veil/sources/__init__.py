"""Sources turn raw sensor events into integer samples on named channels.

A source registers a normalizer for the event kinds it understands:

    register("hr", normalize_hr)          # normalize_hr(event, emit) calls emit(channel, v)

Values are integers (fixed point where the sensor gives fractions: the unit is in the
source's docstring) or short bytes (identifiers such as a BLE address). The replay source
feeds recorded events through the same normalizers, so the pipeline cannot tell a replay
from a sensor. Optional sources register on import: a board that leaves one out pays
nothing for it.
"""

from veil import VeilError

_NORMALIZERS = {}


class SourceError(VeilError):
    pass


def register(kind, normalizer):
    _NORMALIZERS[kind] = normalizer


def normalizer(kind):
    n = _NORMALIZERS.get(kind)
    if n is None:
        try:
            __import__("veil.sources." + kind)
        except ImportError:
            raise SourceError("no source for event kind %r" % kind)
        n = _NORMALIZERS.get(kind)
        if n is None:
            raise SourceError("no source for event kind %r" % kind)
    return n


def fixed(text, places):
    """Parse a decimal string such as "21.375" to an int scaled by 10**places, no floats."""
    if type(text) is int:
        return text * 10**places
    if type(text) is not str or not text:
        raise SourceError("decimal text required, got %r" % (text,))
    neg = text[0] == "-"
    s = text[1:] if neg else text
    whole, _, frac = s.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise SourceError("not a decimal number: %r" % text)
    frac = (frac + "0" * places)[:places]  # truncates extra digits toward zero
    v = int(whole) * 10**places + (int(frac) if frac else 0)
    return -v if neg else v
