"""Replay source: recorded raw events (JSON Lines, docs/replay.md) fed through the same
normalizers as live sensors, in file order. Time is the event's "t" (integer seconds),
never the wall clock, so a replay runs as fast as the pipeline goes.

    n = replay(open("rec.jsonl"), pipeline.feed)     # returns (events, rejected)

A malformed line is rejected and counted, never passed on.
"""

import json

from veil import T0
from veil.sources import SourceError, normalizer


def replay(lines, feed):
    """Feed each event to `feed(t, channel, value)` (t in veil time); -> (ok, rejected, last_t)."""
    ok = rejected = 0
    last_t = None
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            t = event.get("t")
            if type(t) is not int or t < T0:
                raise SourceError("t: integer Unix seconds after 2023-11-14 required")
            t -= T0
            norm = normalizer(event.get("kind"))
            norm(event, lambda ch, v: feed(t, ch, v))
        except (ValueError, SourceError, AttributeError) as e:
            rejected += 1
            print("veil: replay line rejected:", e)
            continue
        ok += 1
        last_t = t
    return ok, rejected, last_t
