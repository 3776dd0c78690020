"""Notebook 16's picture: every method on one plot of quality against bits per weight."""

from __future__ import annotations

import matplotlib.pyplot as plt

from kquant.viz.models import log_axis_labelled
from kquant.viz.style import EXPONENT, SIGN, tidy

# What each metric's axis shows, and whether lower is better. top-1 and sums are drawn as the share
# of positions (tasks) that differ from F16 (get wrong), so that lower is better on every panel.
METRICS = {
    "kl": ("KL divergence from F16 (nats/token)", True),
    "top1": ("top-1 disagreement with F16", True),
    "ppl": ("perplexity", False),
    "sums": ("share of sums answered wrong", True),
}


def point(r, metric: str) -> tuple[float, float, float]:
    """(value, low, high) of ``metric`` for one evaluate.Scores, drawn so that lower is better."""
    i = r.interval(metric)
    if metric in ("top1", "sums"):
        return 1 - i.value, 1 - i.high, 1 - i.low
    return i.value, i.low, i.high


def front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Labels no other point beats: none is as small or smaller AND as good or better, one strictly."""
    out = []
    for label, (b, v) in points.items():
        beaten = any(b2 <= b and v2 <= v and (b2 < b or v2 < v) for other, (b2, v2) in points.items() if other != label)
        if not beaten:
            out.append(label)
    return sorted(out, key=lambda k: points[k][0])


def methods_view(rows: dict, bits: dict[str, float], metric: str = "kl", reference: str = "F16"):
    """One row per file, smallest first: ``metric`` with its 95 % interval, the file's size in its label.

    ``rows``: label -> evaluate.Scores; ``bits``: label -> the bits per weight to show (the file's,
    or the format's own where the file is a stand-in, as NF4 run as F16). Filled markers: the Pareto
    front of the measured values, the files no other file beats on both size and quality.
    A row per file, not a scatter against size: many files share one size here, and their labels
    and intervals would sit on top of each other.
    """
    title, _ = METRICS[metric]
    shown = [k for k in rows if k != reference]
    values = {k: (bits[k], point(rows[k], metric)[0]) for k in shown}
    best = set(front(values))
    order = sorted(shown, key=lambda k: (bits[k], values[k][1]))
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(order) + 1.6))
    for y, k in enumerate(order):
        v, lo, hi = point(rows[k], metric)
        on = k in best
        ax.errorbar(
            v,
            y,
            xerr=[[v - lo], [hi - v]],
            fmt="o",
            capsize=3,
            markersize=7 if on else 5,
            color=SIGN if on else EXPONENT,
            markerfacecolor=SIGN if on else "white",
        )
    ax.set_yticks(range(len(order)), [f"{k}  ({bits[k]:.2f} bits)" for k in order], fontsize=8)
    ax.invert_yaxis()  # smallest file on top
    ax.set_ylabel("file (bits per weight)", fontsize=9)
    if metric == "ppl":
        ax.axvline(rows[reference].perplexity, color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            f"{reference}",
            (rows[reference].perplexity, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
            color="grey",
        )
    else:
        ax.set_xscale("log")
        log_axis_labelled(ax, axis="x")
    ax.set_xlabel(f"{title}  (lower is better)", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(
        f"{title}, each file with its 95 % interval; filled: on the Pareto front\n"
        "(no other file is as small or smaller and as good or better)",
        fontsize=10,
    )
    tidy(fig, left=2.2)
    plt.show()
