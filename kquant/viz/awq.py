"""Notebook 12 (AWQ): channel magnitudes, the α slider, α search curves, the outlier experiment."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from kquant.methods.awq import round_trip, scaled_round_trip, scales
from kquant.viz import style
from kquant.viz.style import EXPONENT, FIELD_COLORS, SIGN, legend, tidy


def channel_magnitudes_plot(curves: dict, title: str):
    """Each curve: one matrix input's mean |x| per channel, divided by its median, sorted (``label -> array``)."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for k, (label, m) in enumerate(curves.items()):
        m = np.sort(np.asarray(m, dtype=np.float64))[::-1] / np.median(m)
        ax.plot(100 * np.arange(1, len(m) + 1) / len(m), m, color=FIELD_COLORS[k % len(FIELD_COLORS)], label=label)
    ax.set_yscale("log")
    ax.set_xlabel("channels, loudest first (%)")
    ax.set_ylabel("mean |x| / median channel's")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    tidy(fig)
    plt.show()


def alpha_view(w: np.ndarray, x: np.ndarray, qtype: str, alphas: np.ndarray, losses: np.ndarray, alpha: float):
    """One matrix quantized with AWQ's scales at ``alpha``: what each channel costs, and the search curve.

    Left: per input channel, its share of the output error, ``mean|x_j| · RMS over rows of (Ŵ − W)[:, j]``,
    against its mean |x|, for round-to-nearest (grey) and for AWQ at ``alpha`` (colour). Right: the
    output error for every α of the grid (``losses``, computed once), the chosen one marked.
    """
    x_mean = np.abs(x).mean(0)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.4, 1]})
    for w_hat, color, label in [
        (round_trip(w, qtype), "0.6", "round-to-nearest"),
        (scaled_round_trip(w, scales(x_mean, alpha), qtype), SIGN, f"AWQ, α = {alpha:.2f}"),
    ]:
        cost = x_mean * np.sqrt(np.mean((w_hat - w) ** 2, axis=0))
        left.plot(x_mean, cost, "o", color=color, markersize=3, alpha=0.7, label=label)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("channel's mean |x| (calibration)")
    left.set_ylabel("mean|x_j| · RMS error of column j")
    style.title(left, f"{qtype}: each channel's part of the output error", fontsize=10)
    legend(left, fontsize=8, loc="upper left")
    left.grid(alpha=0.3)
    rel = np.asarray(losses) / losses[0]
    right.plot(alphas, rel, "o-", color=EXPONENT, markersize=3)
    i = int(np.argmin(np.abs(np.asarray(alphas) - alpha)))
    right.plot([alphas[i]], [rel[i]], "o", color=SIGN, markersize=8)
    right.axhline(1.0, color="0.6", lw=0.8)
    right.set_xlabel("α")
    right.set_ylabel("output MSE / round-to-nearest's")
    style.title(right, f"α = {alphas[i]:.2f}: {rel[i]:.2f}× round-to-nearest's error", fontsize=10)
    right.grid(alpha=0.3)
    tidy(fig, outline_labels=True)
    plt.show()


def search_curves_plot(curves: dict, title: str):
    """AWQ's α search: the inspected output's MSE relative to α = 0's, per α (``label -> (alphas, losses)``)."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for k, (label, (alphas, losses)) in enumerate(curves.items()):
        rel = np.asarray(losses) / losses[0]
        color = FIELD_COLORS[k % len(FIELD_COLORS)]
        ax.plot(alphas, rel, "o-", color=color, markersize=3, label=label)
        ax.plot([alphas[int(np.argmin(rel))]], [rel.min()], "*", color=color, markersize=10)
    ax.axhline(1.0, color="0.6", lw=0.8)
    ax.set_xlabel("α  (s = mean|x|^α)")
    ax.set_ylabel("output MSE / α = 0's")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    tidy(fig)
    plt.show()


def outlier_plot(factors, rtn, awq, title: str):
    """Output error against the outlier channels' factor: ``rtn`` and ``awq`` are lists of Intervals."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for values, color, label in [(rtn, "0.5", "round-to-nearest"), (awq, SIGN, "AWQ")]:
        v = np.array([i.value for i in values])
        lo, hi = np.array([i.low for i in values]), np.array([i.high for i in values])
        ax.errorbar(factors, v, yerr=[v - lo, hi - v], fmt="o-", color=color, capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("the outlier channels' activations × this factor")
    ax.set_ylabel("mean relative output error")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    tidy(fig)
    plt.show()
