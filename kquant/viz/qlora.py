"""Notebook 14: NF4's sixteen levels on a matrix's weights, and LoRA's training curves.

``nf4_view`` is a widget callback: it draws one complete figure and ends with ``plt.show()``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from kquant.formats.nf4 import NF4_LEVELS, dequantize_nf4, quantize_nf4
from kquant.viz.style import EXPONENT, MANTISSA, SIGN, hist, log_y, tidy

# The grid a plain absmax 4-bit code would use: 16 evenly spaced levels on [-1, 1] (no exact 0).
UNIFORM_LEVELS = np.linspace(-1.0, 1.0, 16, dtype=np.float32)


def uniform_roundtrip(w: np.ndarray, blocksize: int) -> np.ndarray:
    """Absmax per block, then the nearest of 16 evenly spaced levels: NF4's recipe with a uniform grid."""
    blocks = w.reshape(-1, blocksize)
    absmax = np.abs(blocks).max(axis=1, keepdims=True)
    s = blocks / np.where(absmax > 0, absmax, 1)
    q = np.abs(s[..., None] - UNIFORM_LEVELS).argmin(-1)
    return (UNIFORM_LEVELS[q] * absmax).reshape(w.shape)


def nf4_view(w: np.ndarray, name: str, blocksize: int = 64, grid: str = "NF4"):
    """Weights of one matrix divided by their block's absmax, with the 16 levels of ``grid`` drawn on top.

    ``grid``: "NF4" (normal quantiles, bitsandbytes' table) or "uniform" (16 evenly spaced levels,
    the same absmax blocks). The title gives the relative RMS error of the whole matrix with that grid.
    """
    w = np.asarray(w, dtype=np.float32)
    blocks = w.reshape(-1, blocksize)
    absmax = np.abs(blocks).max(axis=1, keepdims=True)
    s = (blocks / np.where(absmax > 0, absmax, 1)).ravel()
    if grid == "NF4":
        levels, back = NF4_LEVELS, dequantize_nf4(quantize_nf4(w, blocksize, double_quant=False))
    elif grid == "uniform":
        levels, back = UNIFORM_LEVELS, uniform_roundtrip(w, blocksize)
    else:
        raise ValueError(f"grid {grid!r}: choose 'NF4' or 'uniform'")
    err = float(np.linalg.norm(back - w) / np.linalg.norm(w))
    fig, ax = plt.subplots(figsize=(9, 3.4))
    hist(ax, s, np.linspace(-1, 1, 161), EXPONENT, alpha=0.6, label="weights / block absmax", log=False)
    top = ax.get_ylim()[1]
    ax.vlines(levels, 0, top, color=SIGN if grid == "NF4" else MANTISSA, linewidth=1.2, label=f"{grid} levels")
    ax.set_ylim(0, top)
    ax.set_xlabel("weight / absmax of its block")
    ax.set_ylabel("weights")
    ax.set_title(
        f"{name}, blocks of {blocksize}: {grid} grid, relative RMS error {err:.4f}\n"
        f"the ±1 ends hold one weight per block (the absmax itself)",
        fontsize=10,
    )
    ax.legend(loc="upper left", fontsize=8)
    tidy(fig, outline_labels=True)
    plt.show()


def levels_plot(levels: dict):
    """Each grid's 16 levels on one line per grid (``levels``: label -> 16 values in [-1, 1])."""
    fig, ax = plt.subplots(figsize=(9, 0.7 + 0.45 * len(levels)))
    for i, v in enumerate(levels.values()):
        ax.plot(v, np.full(len(v), i), "o", color=[SIGN, MANTISSA, EXPONENT][i % 3], markersize=5)
    ax.set_yticks(range(len(levels)), list(levels))
    ax.set_ylim(-0.6, len(levels) - 0.4)
    ax.set_xlabel("level (fraction of the block's absmax)")
    ax.set_ylabel("grid")
    ax.set_title("16 levels each: NF4 crowds them near 0, where most weights are", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    tidy(fig, left=1.6)
    plt.show()


def loss_curves(curves: dict, title: str):
    """Training loss per step, one line per run (``curves``: label -> losses)."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for (label, losses), color in zip(curves.items(), [SIGN, EXPONENT, MANTISSA]):
        ax.plot(np.arange(1, len(losses) + 1), losses, color=color, label=label, linewidth=1.2)
    log_y(ax)
    ax.set_xlabel("Adam step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    tidy(fig)
    plt.show()
