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
    """One point per file: ``metric`` (95 % interval as a bar) against its bits per weight.

    ``rows``: label -> evaluate.Scores; ``bits``: label -> the bits per weight to plot (the file's,
    or the format's own where the file is a stand-in, as NF4 run as F16). The line joins the Pareto
    front of the measured values: files no other file beats on both size and quality.
    """
    title, _ = METRICS[metric]
    fig, ax = plt.subplots(figsize=(10, 4.6))
    shown = {k: r for k, r in rows.items() if k != reference}
    values = {}
    for label, r in shown.items():
        v, lo, hi = point(r, metric)
        values[label] = (bits[label], v)
        ax.errorbar(bits[label], v, yerr=[[v - lo], [hi - v]], fmt="o", color=EXPONENT, capsize=3, markersize=5)
        ax.annotate(label, (bits[label], v), textcoords="offset points", xytext=(6, 3), fontsize=8)
    best = front(values)
    ax.plot([values[k][0] for k in best], [values[k][1] for k in best], "-", color=SIGN, alpha=0.6, zorder=0)
    if metric == "ppl":
        v = rows[reference].perplexity
        ax.axhline(v, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"{reference}: {v:.4f}", (ax.get_xlim()[0], v), xytext=(4, 4), textcoords="offset points")
    else:
        ax.set_yscale("log")
        log_axis_labelled(ax)
    ax.set_xlabel("bits per weight")
    ax.set_ylabel(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.set_title(
        f"{title} against size; the line joins the files no other file beats on both\n"
        "(bars: 95 % intervals, bootstrap over the held-out documents or tasks)",
        fontsize=10,
    )
    tidy(fig)
    plt.show()
