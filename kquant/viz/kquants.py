"""Notebooks 04-05: the Q4_K scale search and bit packing, the K family's blocks.

Each ``*_view`` is a widget callback: it draws one complete figure and ends with ``plt.show()``.
"""

from __future__ import annotations

import functools

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PatchCollection
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from kquant.formats import dequantize, get_format, q4_k, quantize
from kquant.lessons import kfamily, metrics, scale_search
from kquant.viz import style
from kquant.viz.style import EXPONENT, FIELD_COLORS, SIGN, labels, legend, tidy, weights_on_levels


def scale_search_view(x, j: int):
    """Q4_K's search for sub-block ``j`` of a 256-weight super-block: every candidate, and the winner's fit.

    Candidates tried after a win start from the winner's min (the grid's origin moves),
    so they are drawn in another colour: that is what makes ggml's search a sequence.
    """
    sub = np.asarray(x, dtype=np.float32)[32 * j : 32 * j + 32]
    trace = scale_search.qkx2_trace(sub, scale_search.q4_k_weights(sub))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.9))
    steps = np.array([c.step for c in trace.candidates])
    errors = np.array([c.error for c in trace.candidates])
    origins = np.array(scale_search.origins(trace))
    moved = origins != trace.initial.min
    # Plot in units of 10^k so the tick labels stay short and no offset text collides with the title.
    sx = 10.0 ** np.floor(np.log10(np.nanmax(np.abs(steps)) or 1.0))
    sy = 10.0 ** np.floor(np.log10(np.nanmax(np.abs(errors)) or 1.0))
    # Points, not a line: when a candidate wins, the origin moves and later grids shift, so steps are not in order.
    left.plot(steps[~moved] / sx, errors[~moved] / sy, "o", color="0.5", ms=5, label="grid from the data min")
    if moved.any():
        left.plot(
            steps[moved] / sx, errors[moved] / sy, "o", color=FIELD_COLORS[1], ms=5, label="grid from a moved origin"
        )
    left.plot(
        [trace.initial.step / sx],
        [trace.initial.error / sy],
        "s",
        color=EXPONENT,
        ms=8,
        label="start: (max − min) / 15",
    )
    kept = [c for c in trace.candidates if c.best_so_far]
    if kept:
        left.plot([kept[-1].step / sx], [kept[-1].error / sy], "*", color=SIGN, ms=14, label="winner")
    left.xaxis.set_major_locator(MaxNLocator(5))
    left.set_xlabel(f"candidate grid step (× {sx:.0e} weight units)")
    left.set_ylabel(f"weighted squared error (× {sy:.0e})")
    style.title(
        left, f"sub-block {j}: {len(trace.candidates)} candidates, {len(kept)} improved on the best so far", fontsize=10
    )
    legend(left, fontsize=7)
    left.grid(alpha=0.3)
    y = trace.scale * trace.levels.astype(np.float32) - trace.the_min
    levels = trace.scale * np.arange(16) - trace.the_min
    weights_on_levels(right, sub, y, levels, "scale·L − m", f"weight index in sub-block {j}", "upper left", (1.0, 1.0))
    style.title(right, f"winner: scale {trace.scale:.3g}, m {trace.the_min:.3g} (grey: the 16 levels)", fontsize=10)
    tidy(fig, outline_labels=True)
    plt.show()


@functools.lru_cache(maxsize=1)
def scale_bit_owners():
    """(12, 8) array of (field, sub-block, bit) for every bit of Q4_K's 12 scale bytes.

    Found by asking the packer itself: set one bit of one scale or min, pack, see
    which output bit lights up. So the drawing can never disagree with ``pack_scales``.
    """
    owners = np.empty((12, 8), dtype=object)
    for field in ("sc", "m"):
        for j in range(8):
            for bit in range(6):
                sc, m = np.zeros((1, 8), np.uint8), np.zeros((1, 8), np.uint8)
                (sc if field == "sc" else m)[0, j] = 1 << bit
                packed = q4_k.pack_scales(sc, m)[0]
                byte = int(np.flatnonzero(packed)[0])
                owners[byte, int(packed[byte]).bit_length() - 1] = (field, j, bit)
    return owners


def scale_bits_view(sc, m, j: int = 0):
    """The 12 packed bytes of 8 six-bit scales and mins, bit by bit, sub-block ``j`` outlined."""
    sc = np.asarray(sc, dtype=np.uint8).reshape(1, 8)
    m = np.asarray(m, dtype=np.uint8).reshape(1, 8)
    packed = q4_k.pack_scales(sc, m)[0]
    owners = scale_bit_owners()
    fig, ax = plt.subplots(figsize=(9, 6.2))
    cells, faces, edges, widths = [], [], [], []
    ours, others, names = [], [], []  # (x, y, text) of the outlined sub-block's bits, the other bits, their names
    for byte in range(12):
        for pos in range(8):
            field, k, bit = owners[byte, pos]
            col = 7 - pos  # most significant bit on the left
            value = (packed[byte] >> pos) & 1
            cells.append(Rectangle((col, -byte - 1), 1, 1))
            faces.append(to_rgba(FIELD_COLORS[k], 0.6 if field == "sc" else 0.25))
            edges.append("black" if k == j else "white")
            widths.append(2.2 if k == j else 0.5)
            if k == j:  # name the outlined sub-block's bits; the colours say whose the others are
                ours.append((col + 0.5, -byte - 0.38, str(value)))
                names.append((col + 0.5, -byte - 0.8, f"{field}{k} bit {bit}"))
            else:
                others.append((col + 0.5, -byte - 0.5, str(value)))
    ax.add_collection(
        PatchCollection(cells, facecolors=faces, edgecolors=edges, linewidths=widths, zorder=0)
    )  # one artist: fast
    # 96 bits and their captions as three label collections, not 120 Text artists (each costs ~0.4 ms a redraw).
    labels(ax, *zip(*ours), fontsize=11, family="monospace", weight="bold")
    labels(ax, *zip(*others), fontsize=10, family="monospace", color="0.3")
    labels(ax, *zip(*names), fontsize=6.5)
    bytes_text = [f"byte {4 + byte:2d} = 0x{packed[byte]:02x}" for byte in range(12)]
    labels(ax, 8.15, -np.arange(12) - 0.5, bytes_text, fontsize=8, family="monospace", ha="left")
    ax.set_xlim(0, 10.2)
    ax.set_ylim(-12, 0)
    ax.set_xticks(np.arange(8) + 0.5, [f"bit {7 - c}" for c in range(8)], fontsize=7)
    ax.set_yticks([])
    ax.set_xlabel("bit position. Colour = sub-block (0-7): strong = its scale sc, pale = its min m")
    ax.set_title(
        f"Q4_K scales[12] (block bytes 4–15). Sub-block {j}: sc = {sc[0, j]} = {sc[0, j]:06b}, m = {m[0, j]} = "
        f"{m[0, j]:06b}",
        fontsize=10,
    )
    for spine in ax.spines.values():
        spine.set_visible(False)
    tidy(fig)
    plt.show()


def k_block_view(w, name: str, group: int = 0, row: int = 0):
    """One super-block of row ``row`` in the k-quant ``name``: its 256 weights, what is stored, and group ``group``'s
    grid."""
    lay, fmt = kfamily.layout(name), get_format(name)
    x = np.ascontiguousarray(np.asarray(w, dtype=np.float32)[row, :256])
    block = quantize(x[None, :], name)
    y = dequantize(block, name)[0]
    levels = kfamily.group_levels(block[0], name)
    group = min(group, lay.groups - 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
    idx = np.arange(256)
    left.plot(idx, x, ".", ms=3, color="0.45", label="weight")
    left.plot(idx, y, "_", ms=4, color=EXPONENT, label="decoded")
    left.axvspan(group * lay.group - 0.5, (group + 1) * lay.group - 0.5, color=SIGN, alpha=0.12, label=f"group {group}")
    # The group boundaries, full height: one collection, not an axvline (a Line2D) each.
    left.vlines(
        np.arange(lay.group, 256, lay.group) - 0.5,
        0,
        1,
        transform=left.get_xaxis_transform(),
        color="0.85",
        lw=0.5,
        zorder=0,
    )
    left.set_xlabel(f"weight index in the super-block ({lay.groups} groups of {lay.group})")
    left.set_ylabel("weight value")
    style.title(
        left,
        f"{name}: {fmt.bits_per_weight:g} bits/weight, SQNR of this block {metrics.sqnr_db(x, y):.1f} dB",
        fontsize=10,
    )
    legend(left, fontsize=7, loc="lower right")
    sl = slice(group * lay.group, (group + 1) * lay.group)
    weights_on_levels(right, x[sl], y[sl], levels[group], "decoded", f"weight index in group {group}")
    step = float(np.abs(np.diff(levels[group])).mean()) if lay.level_bits else 0.0
    style.title(right, f"group {group}: {2**lay.level_bits} evenly spaced levels (grey),\nstep {step:.3g}", fontsize=10)
    tidy(fig, outline_labels=True)
    plt.show()
