"""The plots of notebook 15 (I-quants): IQ4_NL's table against the weights, and its scale search.

Drawing only: the search's candidates come from ``kquant.formats.iq4_nl.search_steps``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from kquant.viz import style
from kquant.viz.style import EXPONENT, FIELD_COLORS, SIGN, bars, hist, tidy, weights_on_levels


def table_plot(u: np.ndarray, levels: dict, bins: int = 161):
    """Every block's weights over its signed max (the largest itself, at +1, left out), and level sets.

    ``levels``: label -> the values a format can give, in the same units (IQ4_NL's table mirrored
    so that -127 meets +1; Q4_0's 16 even steps of 1/8).
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 4.6), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    hist(top, u, np.linspace(-1.05, 1.05, bins), EXPONENT, alpha=0.6, log=False)
    top.set_ylabel("weights")
    top.set_xlabel("weight / block max")
    top.tick_params(labelbottom=True)
    top.set_title("every block's weights over its largest one (signed): dense near 0, sparse at the ends", fontsize=10)
    for k, (label, v) in enumerate(levels.items()):
        color = FIELD_COLORS[(k + 1) % len(FIELD_COLORS)]
        bottom.vlines(v, k + 0.6, k + 1.4, color=color, lw=2)
        bottom.text(-1.04, k + 1, label, va="center", fontsize=8)
    bottom.set_ylim(0.3, len(levels) + 0.7)
    bottom.set_yticks([])
    bottom.set_xlabel("weight / block max")
    bottom.set_title("the 16 values each format can give", fontsize=10)
    tidy(fig, hspace=0.8)
    plt.show()


def search_view(x: np.ndarray, w: np.ndarray, steps, k: int, table: np.ndarray):
    """Candidate ``k`` of one block's IQ4_NL search (``steps``: iq4_nl.search_steps(x, w)).

    Left: the weights and what candidate k's least-squares d gives them, on its grid d * table.
    Right: every candidate's weighted error Σ w (x − d q)² over the winner's; the winner (largest
    score, so smallest error) in red, candidate k outlined.
    """
    x64, w64 = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    err = np.array([np.sum(w64 * (x64 - float(steps.d[i]) * steps.q[i]) ** 2) for i in range(len(steps.d))])
    err = err / max(err[steps.chosen], 1e-300)  # relative to the winner's: the raw sums are tiny numbers
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.6), gridspec_kw={"width_ratios": [1.5, 1]})
    d = float(steps.d[k])
    weights_on_levels(left, x, d * steps.q[k], d * table.astype(np.float64), "decoded", "weight j of the block")
    label = "1/d = 127/max" if k == 0 else f"itry = {k - 8:+d}: 1/d = ({k - 8 - 127})/max"
    style.title(left, f"candidate {k}: {label}, least-squares d = {d:.3g}", fontsize=10)
    n = len(err)
    colors = [SIGN if i == steps.chosen else "0.7" for i in range(n)]
    edges = ["k" if i == k else "none" for i in range(n)]
    bars(right, np.arange(n), err, color=colors, edgecolor=edges, linewidth=1.5)  # one artist, not 16 Rectangles
    right.set_xticks([0, 4, 8, 12, 15], ["max/127", "-4", "0", "+4", "+7"])
    right.set_xlabel("candidate (itry)")
    right.set_ylabel("Σ w (x − d q)², / the winner's")
    right.set_ylim(0, max(1.1, float(err.max()) * 1.05))
    style.title(right, f"weighted error; the winner (red): candidate {steps.chosen}", fontsize=10)
    tidy(fig)
    plt.show()
