"""Pictures for people: what privacy cost, at a glance.

    plot_windows(rows, "footfall.png", title="visitors per 5-minute window")

Each row is one window: its start (Unix seconds), the true value known from the replay,
and the value the board reported (None when it sent nothing for that window: fewer than k
contributed, or the budget was spent). matplotlib draws off-screen (Agg), so this works
on a CI machine without a display.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path


def plot_windows(
    rows: Sequence[tuple[int, int, int | None]],
    out: str | Path,
    *,
    title: str,
    ylabel: str = "visitors",
) -> Path:
    """Write a PNG of true versus reported values per window; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = [dt.datetime.fromtimestamp(t, dt.UTC).strftime("%H:%M") for t, _, _ in rows]
    xs = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(rows) + 2), 4.2), dpi=110)
    width = 0.4
    ax.bar(
        [x - width / 2 for x in xs],
        [r[1] for r in rows],
        width,
        label="true (replay)",
        color="#8aa9c9",
    )
    sent = [(x, r[2]) for x, r in zip(xs, rows, strict=True) if r[2] is not None]
    ax.bar(
        [x + width / 2 for x, _ in sent],
        [v for _, v in sent],
        width,
        label="reported (noised, k-suppressed)",
        color="#d9822b",
    )
    for x, r in zip(xs, rows, strict=True):
        if r[2] is None:
            ax.text(
                x + width / 2,
                0.3,
                "not sent",
                rotation=90,
                ha="center",
                va="bottom",
                fontsize=7,
                color="#555555",
            )
    ax.set_xticks(xs, labels, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("window start (UTC)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(out)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
