"""Notebook 13's figures: the sensitivity heat map, the allocation at a budget, the two costs side by side.

Drawing only; the measurements and allocations come from ``kquant.methods.budget``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from kquant.methods import budget
from kquant.viz.style import TYPE_COLORS, labels, tidy

KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def _short(name: str) -> str:
    return name.removesuffix(".weight").removeprefix("blk.")


def sensitivity_map(m: budget.Measurement, which: str = "kl", title: str = ""):
    """Heat map of log10(cost), matrix (rows) × type (columns): which matrices the model feels."""
    c = m.cost(which)
    fig, ax = plt.subplots(figsize=(7.5, 10))
    im = ax.imshow(np.log10(np.maximum(c, 1e-12)), aspect="auto", cmap="magma_r")
    ax.set_xticks(range(len(m.types)), m.types)
    ax.set_yticks(range(len(m.names)), [_short(n) for n in m.names], fontsize=7)
    label = "KL(F16 ‖ only this matrix quantized), nats/token" if which == "kl" else "relative output error ‖ΔY‖²/‖Y‖²"
    fig.colorbar(im, ax=ax, label=f"log10 {label}", orientation="horizontal", fraction=0.04, pad=0.06)
    ax.set_xlabel("type")
    ax.set_ylabel("matrix")
    fig.suptitle(title or f"{which}: every matrix at every type")
    fig.tight_layout()
    plt.show()


def _grid(m: budget.Measurement, choice: np.ndarray) -> np.ndarray:
    """Type index per (layer, kind) plus a last row for token_embd (in its first cell; the rest -1)."""
    n_layer = 1 + max(int(n.split(".")[1]) for n in m.names if n.startswith("blk."))
    grid = np.full((n_layer + 1, len(KINDS)), -1)
    for name, j in zip(m.names, choice):
        if name.startswith("blk."):
            _, layer, kind, _ = name.split(".")
            grid[int(layer), KINDS.index(kind)] = j
        else:
            grid[n_layer, 0] = j
    return grid


def allocation_view(m: budget.Measurement, bpw: float, cost: str = "kl"):
    """Widget: the types chosen at ``bpw`` bits per weight (whole file) to minimise the summed ``cost``."""
    a = budget.allocate(m, bpw, cost)
    grid = _grid(m, a.choice)
    cmap = ListedColormap(["white"] + [TYPE_COLORS[t] for t in m.types])
    fig, ax = plt.subplots(figsize=(9, 4.6))
    ax.imshow(grid + 1, cmap=cmap, vmin=0, vmax=len(m.types), aspect="auto")
    rows, cols = np.nonzero(grid >= 0)
    labels(ax, cols, rows, [m.types[j] for j in grid[rows, cols]], fontsize=8)  # one artist, not a Text per cell
    ax.set_xticks(range(len(KINDS)), KINDS)
    ax.set_yticks(range(grid.shape[0]), [f"layer {i}" for i in range(grid.shape[0] - 1)] + ["token_embd"])
    ax.set_xlabel("matrix")
    ax.set_ylabel("layer")
    ax.set_title(
        f"budget {bpw:.2f} bpw → file {a.bpw:.3f} bpw; predicted Σ KL {a.predicted('kl'):.2e}, "
        f"Σ output error {a.predicted('output_error'):.2e} (allocated for {cost})",
        fontsize=10,
    )
    tidy(fig, left=1.4)  # fixed margins, not tight_layout's extra layout pass; room for "token_embd"
    plt.show()


def costs_compared(m: budget.Measurement, type_name: str = "Q4_K", title: str = ""):
    """Per matrix at one type: its own output error (x) against the whole model's KL (y), by kind of matrix."""
    j = m.types.index(type_name)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    kinds = [n.split(".")[2] if n.startswith("blk.") else "token_embd" for n in m.names]
    for i, kind in enumerate(dict.fromkeys(kinds)):
        sel = [k == kind for k in kinds]
        ax.scatter(m.output_error[sel, j], m.kl[sel, j], label=kind, color=plt.cm.tab10(i), s=28)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("the matrix's own output error ‖ΔY‖²/‖Y‖² (calibration activations)")
    ax.set_ylabel("KL(F16 ‖ only this matrix quantized), nats/token")
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(title or f"two costs of the same {type_name} matrices")
    fig.tight_layout()
    plt.show()
