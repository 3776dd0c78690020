"""The plots and interactive views the notebooks share.

Drawing only: the numbers are computed by the rest of kquant (and, in the notebooks,
in front of the reader), then handed here. Functions named ``*_view`` are the
callbacks of the notebooks' widgets: each draws one complete figure from the
slider values and ends with ``plt.show()``, which is what makes ipywidgets put the
figure in its output area. ``benchmarks/widgets.py`` times every one of them.
"""

from __future__ import annotations

import functools

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PatchCollection
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from . import rounding

SIGN, EXPONENT, MANTISSA = "#d62728", "#1f77b4", "#2ca02c"


def _tidy(fig, wspace: float = 0.3, hspace: float = 0.75):
    """Space the panels apart. Fixed spacing instead of tight_layout: that would cost each
    redraw an extra layout pass, and the notebook crops the margins anyway (bbox "tight")."""
    fig.subplots_adjust(wspace=wspace, hspace=hspace)


def _log_y(ax):
    """Log y axis with few, plainly labelled ticks: mathtext tick labels make redraws slow."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(numticks=6))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}" if v < 1e-3 or v >= 1e5 else f"{v:g}"))


def _hist(ax, values, bins, color, alpha=0.8, label=None, log=True):
    """A histogram drawn as one filled outline: many times faster to render than ax.hist's bars."""
    counts, edges = np.histogram(np.asarray(values).ravel(), bins=bins)
    ax.stairs(counts, edges, fill=True, color=color, alpha=alpha, label=label)
    if log:
        _log_y(ax)
        ax.set_ylim(0.8, None)


# --- notebook 00: start here -----------------------------------------------------------


def levels_view(bits: int, x: float = 0.3):
    """The 2**bits evenly spaced levels that ``bits`` bits give on [-1, 1], and where ``x`` lands."""
    levels = np.linspace(-1, 1, 2**bits)
    nearest = levels[np.argmin(np.abs(levels - x))]
    fig, ax = plt.subplots(figsize=(9, 1.9))
    ax.vlines(levels, -1, 1, color=EXPONENT, lw=1 if bits < 7 else 0.4)
    ax.axvline(x, color=SIGN, lw=2, label=f"x = {x}")
    ax.plot([nearest], [0], "o", color="black", ms=7, label=f"stored as {nearest:.4f} (error {nearest - x:+.4f})")
    ax.set_xlim(-1.05, 1.05)
    ax.set_yticks([])
    ax.set_xlabel("value (blue: the levels)")
    ax.set_title(f"{bits} bit{'s' if bits > 1 else ''}: {2**bits} levels, {2.0 / (2**bits - 1):.4g} apart", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    _tidy(fig)
    plt.show()


# --- notebook 01: rounding π ----------------------------------------------------------


def pi_grid_view(frac_bits: int, int_bits: int = 2, max_bits: int = 20):
    """π on the grid of ``frac_bits`` fixed point, and the error of every bit depth."""
    fp = rounding.fixed_point(np.pi, frac_bits)
    step = 2.0**-frac_bits
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.2), gridspec_kw={"height_ratios": [1, 1.3]})
    grid = (int(fp.code) + np.arange(-3, 4)) * step
    top.vlines(grid, -1, 1, color="0.6", lw=1)
    top.axvline(np.pi, color=SIGN, lw=2, label="π")
    top.plot([fp.value], [0], "o", color=EXPONENT, ms=9, label=f"stored: {float(fp.value):.10g}")
    top.set_xlim(grid[0] - step / 2, grid[-1] + step / 2)
    top.set_yticks([])
    top.set_xlabel(f"value (grid lines: the representable numbers, one step = 2^-{frac_bits} apart)")
    code_bits = rounding.bit_string(int(fp.code), int_bits + frac_bits)
    top.set_title(f"π with {frac_bits} fractional bits ({int_bits + frac_bits} in all): code {code_bits}")
    top.legend(loc="upper right", fontsize=8)

    bits = np.arange(0, max_bits + 1)
    err = np.array([abs(rounding.fixed_point(np.pi, int(b)).value - np.pi) for b in bits])
    bottom.plot(bits, np.maximum(err, 1e-17), "o-", color="0.4", label="|stored − π|")
    bottom.plot(bits, 2.0**-bits / 2, "--", color=EXPONENT, label="half a step: the worst case")
    _log_y(bottom)
    bottom.plot([frac_bits], [max(float(abs(fp.value - np.pi)), 1e-17)], "o", color=SIGN, ms=10)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel("fractional bits")
    bottom.set_ylabel("rounding error (absolute)")
    bottom.set_title(f"error at {frac_bits} bits: {float(abs(fp.value - np.pi)):.3g}")
    bottom.legend(fontsize=8)
    _tidy(fig)
    plt.show()


def float_fields_view(x: float, formats=("float32", "float16", "bfloat16")):
    """The sign, exponent and mantissa bits of ``x`` in each float format, one row each."""
    fig, axes = plt.subplots(len(formats), 1, figsize=(10, 1.25 * len(formats) + 0.4))
    for ax, fmt in zip(np.atleast_1d(axes), formats):
        fb = rounding.float_bits(x, fmt)
        _draw_bit_row(ax, fb)
    fig.suptitle(f"{x!r} stored in three float formats (sign | exponent | mantissa)", fontsize=11)
    _tidy(fig)
    plt.show()


def _draw_bit_row(ax, fb: rounding.FloatBits) -> None:
    n = len(fb.bits)
    width = 32  # every row is drawn on float32's width, so the fields line up by meaning
    for i, bit in enumerate(fb.bits):
        color = SIGN if i == 0 else EXPONENT if i <= fb.exponent_bits else MANTISSA
        ax.add_patch(Rectangle((i, 0), 1, 1, facecolor=color, alpha=0.25 + 0.5 * (bit == "1"), edgecolor="white"))
        ax.text(i + 0.5, 0.5, bit, ha="center", va="center", fontsize=9, family="monospace", in_layout=False)
    ax.set_xlim(0, width)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xticks([])
    ax.set_xlabel(f"bit (1 sign, {fb.exponent_bits} exponent, {fb.mantissa_bits} mantissa)", fontsize=8)
    e = fb.exponent - fb.bias
    ax.set_title(
        f"{fb.format}: sign {fb.sign}, exponent {fb.exponent} − {fb.bias} = {e}, "
        f"mantissa {fb.mantissa}/2^{fb.mantissa_bits}  →  stores {fb.value!r}",
        fontsize=9,
        loc="left",
    )
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.text(n + 0.3, 0.5, f"{n} bits", va="center", fontsize=8, color="0.4")


def error_vs_bits(bits, measured_db, fitted_db, slope: float):
    """SQNR measured at each bit depth, with its straight-line fit."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.plot(bits, measured_db, "o", color=EXPONENT, label="measured on 100,000 random numbers")
    ax.plot(bits, fitted_db, "-", color="0.4", label=f"straight-line fit: {slope:.2f} dB per bit")
    ax.set_xlabel("fractional bits")
    ax.set_ylabel("signal-to-noise ratio (dB)")
    ax.set_title("Every bit adds about 6 dB: the rounding error halves")
    ax.grid(alpha=0.3)
    ax.legend()
    _tidy(fig)
    plt.show()


# --- notebook 02: scale and zero point ------------------------------------------------


def weight_histogram(w, title: str, unit: str = "weight value"):
    """Histogram of a tensor's values on a log count axis, so the tails show."""
    w = np.asarray(w).ravel()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    _hist(ax, w, 201, EXPONENT)
    ax.axvline(w.max(), color=SIGN, ls="--", lw=1, label=f"max {w.max():.3f}")
    ax.axvline(w.min(), color=SIGN, ls=":", lw=1, label=f"min {w.min():.3f}")
    ax.set_xlabel(unit)
    ax.set_ylabel("number of weights (log scale)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _tidy(fig)
    plt.show()


def quant_error_view(w, bits: int, scheme: str = "absmax", block_size=None):
    """The levels a scheme can store, and the histogram of its rounding error, for one bit depth."""
    from . import linear, metrics

    w = np.asarray(w, dtype=np.float64)
    qz = linear.SCHEMES[scheme](w, bits, block_size)
    w_hat = qz.dequantize()
    err = w - w_hat
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    _hist(left, w, 201, "0.6", alpha=1.0)
    if block_size is None:  # one grid for the whole tensor: draw its levels
        levels = (np.unique(qz.q) - qz.zero[0, 0]) * qz.scale[0, 0]
        left.vlines(levels, 0.8, left.get_ylim()[1], color=EXPONENT, lw=0.6, alpha=0.7)
        left.set_title(f"{scheme}, {bits} bits: {levels.size} levels in use, step {qz.scale[0, 0]:.2g}", fontsize=10)
    else:
        left.set_title(f"{scheme}, {bits} bits, one scale per {block_size} weights", fontsize=10)
    left.set_xlabel("weight value (blue lines: levels used)")
    left.set_ylabel("weights (log scale)")
    _hist(right, err, 101, SIGN)
    right.set_xlabel("rounding error  w − ŵ  (weight units)")
    right.set_ylabel("weights (log scale)")
    zeros = np.mean(w_hat == 0) * 100
    right.set_title(f"SQNR {metrics.sqnr_db(w, w_hat):.1f} dB, {zeros:.0f}% of weights stored as 0", fontsize=10)
    _tidy(fig)
    plt.show()


def outlier_view(w, gain: float, gains, curve, bits: int = 4):
    """Scale the single largest weight by ``gain``: what a per-tensor absmax code does to the others.

    ``gains`` and ``curve`` (SQNR of the other weights at each gain) are computed once
    by the notebook; the view adds the point for the slider's ``gain``.
    """
    from . import linear, metrics

    w, others = linear.scale_largest(w, gain)
    w_hat = linear.fake_quantize(w, bits)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    left.plot(gains, curve, "-", color="0.4")
    left.plot([gain], [metrics.sqnr_db(w[others], w_hat[others])], "o", color=SIGN, ms=9)
    left.set_xlabel("largest weight multiplied by")
    left.set_ylabel("SQNR of all other weights (dB)")
    left.set_title(f"per-tensor absmax, {bits} bits: one weight sets everyone's step", fontsize=10)
    left.grid(alpha=0.3)
    zero = np.mean(w_hat[others] == 0) * 100
    step = np.abs(w).max() / (2 ** (bits - 1) - 1)
    _hist(right, w[others], 201, "0.6", alpha=1.0, label="the other weights")
    right.axvspan(-step / 2, step / 2, color=SIGN, alpha=0.2, label="rounds to 0")
    right.set_xlabel("weight value")
    right.set_ylabel("weights (log scale)")
    right.set_title(
        f"largest weight {np.abs(w).max():.3f}: step {step:.3f}, {zero:.0f}% of the others stored as 0", fontsize=10
    )
    right.legend(fontsize=8, loc="upper right")
    _tidy(fig)
    plt.show()


# --- notebook 03: blocks --------------------------------------------------------------

FIELD_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def tradeoff_plot(series: dict, title: str):
    """SQNR against bits per weight, one labelled line of points per series.

    ``series``: name -> list of (bits per weight, SQNR dB, point label).
    """
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for k, (name, points) in enumerate(series.items()):
        bpw, db, labels = zip(*points)
        ax.plot(bpw, db, "o-", color=FIELD_COLORS[k % len(FIELD_COLORS)], label=name)
        for x, y, text in zip(bpw, db, labels):
            ax.annotate(
                text, (x, y), textcoords="offset points", xytext=(4, -11) if k % 2 == 0 else (-10, 7), fontsize=7
            )
    ax.set_xlabel("bits per weight (levels + scales)")
    ax.set_ylabel("SQNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _tidy(fig)
    plt.show()


def block_view(w, block_size: int, bits: int = 4, row: int = 0, show: int = 256):
    """One row's weights with each block's absmax range, and the error histogram of the whole tensor."""
    from . import linear, metrics

    w = np.asarray(w, dtype=np.float64)
    w_hat = linear.fake_quantize(w, bits, "absmax", block_size)
    x = w[row, :show]
    amax = (
        np.abs(x.reshape(-1, min(block_size, show))).max(axis=1)
        if block_size <= show
        else np.full(1, np.abs(w[row, :block_size]).max())
    )
    edges = np.arange(0, show + 1, min(block_size, show))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1.4, 1]})
    left.plot(np.arange(show), x, ".", ms=3, color="0.4", label="weights")
    left.stairs(amax, edges, color=SIGN, label="block's max|w|")
    left.stairs(-amax, edges, color=SIGN)
    left.set_xlabel(f"weight index in row {row} (first {show})")
    left.set_ylabel("weight value")
    left.set_title(f"one scale per {block_size} weights", fontsize=10)
    left.legend(fontsize=8, loc="lower right")
    _hist(right, w - w_hat, 101, SIGN)
    right.set_xlabel("rounding error  w − ŵ  (weight units)")
    right.set_ylabel("weights (log scale)")
    bpw = linear.bits_per_weight(bits, block_size)
    right.set_title(f"{bits}-bit absmax: {bpw:.3f} bits/weight, SQNR {metrics.sqnr_db(w, w_hat):.1f} dB", fontsize=10)
    _tidy(fig)
    plt.show()


def error_along_row(curves: dict, outlier_at: int, title: str):
    """|error| of each weight along one row, for several codes (``curves``: name -> errors)."""
    fig, ax = plt.subplots(figsize=(9, 3.4))
    for k, (name, err) in enumerate(curves.items()):
        ax.plot(np.abs(err), lw=0.8, color=FIELD_COLORS[k], label=name)
    ax.axvline(outlier_at, color=SIGN, ls=":", lw=1, label="the outlier")
    _log_y(ax)
    ax.set_xlabel("weight index along the row")
    ax.set_ylabel("|w − ŵ| (weight units, log)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _tidy(fig)
    plt.show()


def block_bytes(block: np.ndarray, fields: list, title: str, per_row: int = 16):
    """A block's bytes as a grid of hex values, coloured by field.

    ``fields``: (name, first byte, end byte) in order; every byte should belong to one.
    """
    block = np.asarray(block, dtype=np.uint8)
    rows = -(-block.size // per_row)
    fig, ax = plt.subplots(figsize=(per_row * 0.6 + 0.6, rows * 0.55 + 1.0))
    _byte_grid(ax, block, fields, per_row)
    ax.set_title(title, fontsize=10)
    _tidy(fig)
    plt.show()


def _byte_grid(ax, block: np.ndarray, fields: list, per_row: int, base: int = 0):
    """Bytes as hex values in rows of ``per_row``, each field a colour; row labels count from ``base``."""
    block = np.asarray(block, dtype=np.uint8)
    rows = -(-block.size // per_row)
    for k, (name, start, end) in enumerate(fields):
        color = FIELD_COLORS[k % len(FIELD_COLORS)]
        for i in range(start, end):
            r, c = divmod(i, per_row)
            ax.add_patch(Rectangle((c, -r - 1), 1, 1, facecolor=color, alpha=0.35, edgecolor="white"))
            ax.text(
                c + 0.5,
                -r - 0.5,
                f"{block[i]:02x}",
                ha="center",
                va="center",
                fontsize=8,
                family="monospace",
                in_layout=False,
            )
        ax.add_patch(Rectangle((0, 0), 0, 0, facecolor=color, alpha=0.35, label=f"{name}: bytes {start}–{end - 1}"))
    ax.set_xlim(0, per_row)
    ax.set_ylim(-rows, 0)
    ax.set_xticks(np.arange(per_row) + 0.5, [str(i) for i in range(per_row)], fontsize=7)
    ax.set_yticks(-np.arange(rows) - 0.5, [str(base + r * per_row) for r in range(rows)], fontsize=7)
    ax.set_xlabel("byte offset within the row (hex values shown)")
    ax.set_ylabel("row starts at byte")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))


# --- notebook 04: Q4_K ------------------------------------------------------------------


def _weights_on_levels(ax, x, y, levels, decoded_label: str, xlabel: str) -> None:
    """One group's weights (dots), what they decode to (dashes, joined by their error), and the grid (grey)."""
    idx = np.arange(len(x))
    ax.hlines(levels, -0.5, len(x) - 0.5, color="0.85", lw=0.5, zorder=0)
    ax.vlines(idx, y, x, color=SIGN, lw=1)
    ax.plot(idx, x, "o", color="0.3", ms=4, label="weight")
    ax.plot(idx, y, "_", color=EXPONENT, ms=10, mew=2, label=decoded_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("weight value")
    ax.legend(fontsize=7, loc="lower right")


def scale_search_view(x, j: int):
    """Q4_K's search for sub-block ``j`` of a 256-weight super-block: every candidate, and the winner's fit."""
    from . import scale_search

    sub = np.asarray(x, dtype=np.float32)[32 * j : 32 * j + 32]
    trace = scale_search.qkx2_trace(sub, scale_search.q4_k_weights(sub))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    steps = np.array([c.step for c in trace.candidates])
    errors = np.array([c.error for c in trace.candidates])
    # Points, not a line: when a candidate wins, the min moves and later grids shift, so steps are not in order.
    left.plot(steps, errors, "o", color="0.5", ms=5, label="candidate grids (least-squares fit each)")
    left.plot([trace.initial.step], [trace.initial.error], "s", color=EXPONENT, ms=8, label="start: (max − min) / 15")
    kept = [c for c in trace.candidates if c.best_so_far]
    if kept:
        left.plot([kept[-1].step], [kept[-1].error], "*", color=SIGN, ms=14, label="winner")
    left.set_xlabel("candidate grid step (weight units)")
    left.set_ylabel("weighted squared error")
    left.set_title(
        f"sub-block {j}: {len(trace.candidates)} candidates, {len(kept)} improved on the start", fontsize=10, pad=14
    )
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    y = trace.scale * trace.levels.astype(np.float32) - trace.the_min
    levels = trace.scale * np.arange(16) - trace.the_min
    _weights_on_levels(right, sub, y, levels, "scale·L − min", f"weight index in sub-block {j}")
    right.set_title(f"winner: scale {trace.scale:.3g}, min −{trace.the_min:.3g} (grey: the 16 levels)", fontsize=10)
    _tidy(fig)
    plt.show()


@functools.lru_cache(maxsize=1)
def _scale_bit_owners():
    """(12, 8) array of (field, sub-block, bit) for every bit of Q4_K's 12 scale bytes.

    Found by asking the packer itself: set one bit of one scale or min, pack, see
    which output bit lights up. So the drawing can never disagree with ``pack_scales``.
    """
    from .formats import q4_k

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
    from .formats import q4_k

    sc = np.asarray(sc, dtype=np.uint8).reshape(1, 8)
    m = np.asarray(m, dtype=np.uint8).reshape(1, 8)
    packed = q4_k.pack_scales(sc, m)[0]
    owners = _scale_bit_owners()
    fig, ax = plt.subplots(figsize=(9, 6.2))
    cells, faces, edges, widths = [], [], [], []
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
                ax.text(
                    col + 0.5,
                    -byte - 0.38,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=11,
                    family="monospace",
                    weight="bold",
                    in_layout=False,
                )
                ax.text(
                    col + 0.5,
                    -byte - 0.8,
                    f"{field}{k} bit {bit}",
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    in_layout=False,
                )
            else:
                ax.text(
                    col + 0.5,
                    -byte - 0.5,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=10,
                    family="monospace",
                    color="0.3",
                    in_layout=False,
                )
        ax.text(
            8.15,
            -byte - 0.5,
            f"byte {4 + byte:2d} = 0x{packed[byte]:02x}",
            va="center",
            fontsize=8,
            family="monospace",
            in_layout=False,
        )
    ax.add_collection(
        PatchCollection(cells, facecolors=faces, edgecolors=edges, linewidths=widths, zorder=0)
    )  # one artist: fast
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
    _tidy(fig)
    plt.show()


# --- notebook 05: the K family ----------------------------------------------------------


def k_block_view(w, name: str, group: int = 0, row: int = 0):
    """One super-block of row ``row`` in the k-quant ``name``: its 256 weights, what is stored, and group ``group``'s
    grid."""
    from . import kfamily, metrics
    from .formats import dequantize, get_format, quantize

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
    for b in range(lay.group, 256, lay.group):
        left.axvline(b - 0.5, color="0.85", lw=0.5, zorder=0)
    left.set_xlabel(f"weight index in the super-block ({lay.groups} groups of {lay.group})")
    left.set_ylabel("weight value")
    left.set_title(
        f"{name}: {fmt.bits_per_weight:g} bits/weight, SQNR of this block {metrics.sqnr_db(x, y):.1f} dB", fontsize=10
    )
    left.legend(fontsize=7, loc="lower right")
    sl = slice(group * lay.group, (group + 1) * lay.group)
    _weights_on_levels(right, x[sl], y[sl], levels[group], "decoded", f"weight index in group {group}")
    step = float(np.abs(np.diff(levels[group])).mean()) if lay.level_bits else 0.0
    right.set_title(f"group {group}: {2**lay.level_bits} evenly spaced levels (grey), step {step:.3g}", fontsize=10)
    _tidy(fig)
    plt.show()


# --- notebook 06: the mixes -------------------------------------------------------------

TYPE_COLORS = {
    "F32": "#d9d9d9",
    "F16": "#bdbdbd",
    "Q2_K": "#fde0dd",
    "Q3_K": "#fa9fb5",
    "Q4_0": "#c6dbef",
    "Q4_1": "#9ecae1",
    "Q4_K": "#6baed6",
    "Q5_0": "#c7e9c0",
    "Q5_1": "#a1d99b",
    "Q5_K": "#41ab5d",
    "Q6_K": "#fd8d3c",
    "Q8_0": "#d62728",
}


def _plan_grid(ax, choices, title: str):
    """One plan as a grid: a row per layer, a column per kind of tensor, each cell coloured and named by its type."""
    from .mixes import layer_of

    kinds, layers, outside = [], set(), []
    for c in choices:
        i = layer_of(c.name)
        if i < 0:
            outside.append(c)
            continue
        layers.add(i)
        kind = c.name.split(".")[2]
        if kind not in kinds:
            kinds.append(kind)
    order = [
        k
        for k in (
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        )
        if k in kinds
    ]
    kinds = order + [k for k in kinds if k not in order]
    n_layer = max(layers) + 1 if layers else 0
    cells, faces = [], []
    for c in choices:
        i = layer_of(c.name)
        if i < 0:
            continue
        col = kinds.index(c.name.split(".")[2])
        cells.append(Rectangle((col, -i - 1), 1, 1))
        faces.append(TYPE_COLORS.get(c.type.name, "white"))
        ax.text(col + 0.5, -i - 0.5, c.type.name, ha="center", va="center", fontsize=7, in_layout=False)
    ax.add_collection(PatchCollection(cells, facecolors=faces, edgecolors="white", linewidths=1))
    ax.set_xlim(0, len(kinds))
    ax.set_ylim(-n_layer, 0)
    ax.set_xticks(np.arange(len(kinds)) + 0.5, kinds, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(-np.arange(n_layer) - 0.5, [str(i) for i in range(n_layer)], fontsize=7)
    ax.set_ylabel("layer (blk.N)")
    ax.set_xlabel("tensor kind in the layer")
    extra = ", ".join(f"{c.name.removesuffix('.weight')} {c.type.name}" for c in outside)
    ax.set_title(f"{title}\noutside the layers: {extra}", fontsize=9)
    for spine in ax.spines.values():
        spine.set_visible(False)


def plan_picture(plans: dict, suptitle: str):
    """Plans side by side (``plans``: panel title -> list of mixes.Choice), one colour per ggml type."""
    fig, axes = plt.subplots(1, len(plans), figsize=(4.2 * len(plans) + 1.2, 4.6), squeeze=False)
    used = set()
    for ax, (title, choices) in zip(axes[0], plans.items()):
        _plan_grid(ax, choices, title)
        used |= {c.type.name for c in choices}
    handles = [
        Rectangle((0, 0), 1, 1, facecolor=TYPE_COLORS.get(t, "white"), label=t) for t in TYPE_COLORS if t in used
    ]
    fig.legend(handles=handles, loc="center right", fontsize=8, title="type")
    fig.suptitle(suptitle, fontsize=11, y=1.02)
    fig.subplots_adjust(wspace=0.45, right=1 - 1.1 / fig.get_figwidth())
    plt.show()


def mix_view(tensors, params, mix: str):
    """The plan of one mix for a model (``tensors``: mixes.TensorSpec list), with the file's average bits per weight."""
    from .mixes import plan
    from .summary import plan_summary

    choices = plan(tensors, params, mix)
    bpw = plan_summary("", choices).bpw
    plan_picture({mix: choices}, f"{mix}: {bpw:.3f} bits per weight on average over the whole file (tensor data)")


# --- notebook 07: inside a GGUF file ----------------------------------------------------


def _file_map(ax, y: float, layout, name: str):
    """One file as a horizontal bar (x in MB): the part before the data, then every tensor's data, coloured by type."""
    cells, faces = [Rectangle((0, y - 0.3), layout.data_start / 1e6, 0.6)], ["black"]
    for t in layout.tensors:
        start = layout.data_start + t.offset
        cells.append(Rectangle((start / 1e6, y - 0.3), t.nbytes / 1e6, 0.6))
        faces.append(TYPE_COLORS.get(t.type.name, "white"))
    ax.add_collection(PatchCollection(cells, facecolors=faces, edgecolors="white", linewidths=0.3))
    start, end = layout.data_range(name)
    ax.add_patch(Rectangle((start / 1e6, y - 0.42), (end - start) / 1e6, 0.84, fill=False, edgecolor=SIGN, linewidth=2))
    ax.annotate(
        f"bytes {start:,}–{end - 1:,}",
        ((start + end) / 2e6, y + 0.42),
        ha="center",
        va="bottom",
        fontsize=8,
        color=SIGN,
    )


def gguf_map_view(files: dict, name: str):
    """Where tensor ``name`` lies in each file, and its info record's bytes.

    ``files``: label -> (bytes, gguf_anatomy.Layout).

    Top: every file to the same scale; black is the header, metadata and tensor infos, the
    other colours are the tensors' data by type, the red frame is ``name``'s data. Below: the
    bytes of ``name``'s tensor info record in each file, coloured by field.
    """
    n = len(files)
    heights = [0.9 + 0.55 * n] + [1.25] * n
    fig, axes = plt.subplots(1 + n, 1, figsize=(10, sum(heights) + 0.6), gridspec_kw={"height_ratios": heights})
    top = axes[0]
    used = set()
    for i, (_buf, layout) in enumerate(files.values()):
        _file_map(top, -i, layout, name)
        used |= {t.type.name for t in layout.tensors}
    top.set_xlim(0, max(layout.size for _buf, layout in files.values()) / 1e6)
    top.set_ylim(-n + 0.4, 0.9)
    top.set_yticks(-np.arange(n), list(files), fontsize=8)
    top.set_ylabel("file")
    top.set_xlabel("position in the file (MB)")
    first = next(iter(files.values()))[1]
    top.set_title(
        f"{name}: where its data lies (red frame)\nblack = header, metadata and tensor infos ({first.data_start:,} "
        f"bytes in the {next(iter(files))} file)",
        fontsize=10,
    )
    handles = [
        Rectangle((0, 0), 1, 1, facecolor=TYPE_COLORS.get(t, "white"), label=t) for t in TYPE_COLORS if t in used
    ]
    top.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="data type")
    for ax, (label, (buf, layout)) in zip(axes[1:], files.items()):
        t = layout.tensor(name)
        _byte_grid(ax, np.frombuffer(buf, np.uint8, t.end - t.start, t.start), t.fields(), per_row=24, base=t.start)
        ax.set_ylabel("record row starts\nat file byte", fontsize=8)
        ax.set_title(
            f"{label}: its tensor info record, bytes {t.start:,}–{t.end - 1:,} ({t.type.name}, ne {t.ne}, offset "
            f"{t.offset:,})",
            fontsize=9,
        )
    _tidy(fig, hspace=0.9)
    plt.show()


# --- notebook 08: running the model -----------------------------------------------------


def next_token_view(models: dict, prompt: str, name: str, k: int = 8):
    """The ``k`` likeliest next tokens after ``prompt`` for the first model (the reference) and ``name``.

    ``models``: label -> kquant.run.Model, the reference first. The title gives the KL
    divergence between the two whole distributions at this one position.
    """
    from .run import kl_divergence, log_softmax, next_token_logits

    ref_label = next(iter(models))
    ref_logits, logits = next_token_logits(models[ref_label], prompt), next_token_logits(models[name], prompt)
    p_ref, p = np.exp(log_softmax(ref_logits))[0], np.exp(log_softmax(logits))[0]
    top = np.argsort(-p_ref, kind="stable")[:k]
    kl = kl_divergence(ref_logits, logits)
    labels = [repr(models[ref_label].detokenize([int(t)])) for t in top]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    x = np.arange(k)
    ax.bar(x - 0.2, p_ref[top], 0.4, color=EXPONENT, label=ref_label)
    ax.bar(x + 0.2, p[top], 0.4, color=SIGN, label=name)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(f"next token after {prompt!r}: KL({ref_label} ‖ {name}) = {kl:.2e} nats", fontsize=10)
    ax.legend(fontsize=8)
    _tidy(fig)
    plt.show()


def scores_vs_bpw(rows, title: str):
    """KL divergence and top-1 disagreement against bits per weight, one point per file (kquant.run.Scores)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    quantized = [r for r in rows if r.kl > 0]
    for ax, metric, label in [
        (axes[0], lambda r: r.kl, "KL divergence vs the reference (nats/token)"),
        (axes[1], lambda r: 1 - r.top1, "top-1 disagreement (share of positions)"),
    ]:
        ax.plot([r.bpw for r in quantized], [metric(r) for r in quantized], "o", color=EXPONENT)
        for r in quantized:
            ax.annotate(
                r.path.stem.rsplit("-", 1)[-1],
                (r.bpw, metric(r)),
                textcoords="offset points",
                xytext=(4, 3),
                fontsize=8,
            )
        _log_y(ax)
        ax.set_xlabel("bits per weight (whole file)")
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    _tidy(fig)
    plt.show()


# --- notebook 09: claims and measurements -------------------------------------------------


def memory_view(model: str, mix: str, n_ctx: int, layouts: dict, bpw: dict, gpu_gb: float = 24.0):
    """Memory for a model's weights (at every mix's bits per weight) and its F16 KV cache, against one GPU.

    ``layouts``: model name -> (parameters, layers, KV heads, head size); ``bpw``: mix ->
    bits per weight of the whole file. The chosen ``mix`` is outlined; the dashed line is
    ``gpu_gb`` (a 24 GB consumer card).
    """
    from .memory import gb, kv_cache_bytes, weight_bytes

    n_params, n_layer, n_kv_head, head_dim = layouts[model]
    kv = gb(kv_cache_bytes(n_layer, n_kv_head, head_dim, n_ctx, bytes_per_value=2))
    names = list(bpw)
    weights = [gb(weight_bytes(n_params, bpw[m])) for m in names]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(names))
    ax.bar(x, weights, color=EXPONENT, label="weights")
    ax.bar(x, [kv] * len(names), bottom=weights, color=MANTISSA, label=f"KV cache, F16, {n_ctx:,} positions")
    i = names.index(mix)
    ax.bar(x[i], weights[i] + kv, fill=False, edgecolor=SIGN, linewidth=2)
    ax.annotate(
        f"{weights[i] + kv:.1f} GB",
        (x[i], weights[i] + kv),
        textcoords="offset points",
        xytext=(0, 4),
        ha="center",
        fontsize=9,
        color=SIGN,
    )
    ax.axhline(gpu_gb, color="black", linestyle="--", linewidth=1)
    ax.annotate(
        f"{gpu_gb:g} GB", (len(names) - 0.5, gpu_gb), textcoords="offset points", xytext=(0, 3), ha="right", fontsize=8
    )
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("GB (10⁹ bytes)")
    ax.set_title(
        f"{model}: {n_params / 1e9:g}B parameters, {n_layer} layers, {n_kv_head} KV heads × {head_dim}", fontsize=10
    )
    ax.legend(fontsize=8, loc="upper left")
    _tidy(fig)
    plt.show()


# --- notebook 10: importance matters ------------------------------------------------------


def importance_view(vectors: dict, name: str, top: int = 5):
    """One weight matrix's importance per input column (``vectors``: name -> mean squared activation).

    Left: every column's importance, the ``top`` loudest marked. Right: the share of the
    total importance held by the loudest k % of the columns (a straight diagonal would mean
    every column matters equally).
    """
    imp = np.asarray(vectors[name], dtype=np.float64)
    order = np.argsort(-imp, kind="stable")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1.6, 1]})
    left.plot(imp, color=EXPONENT, linewidth=0.8)
    left.plot(order[:top], imp[order[:top]], "o", color=SIGN, clip_on=False)
    _log_y(left)
    left.set_xlabel("input column j")
    left.set_ylabel("importance (mean x_j²)")
    left.set_title(f"{name}\nred: the loudest {top}, columns {sorted(order[:top].tolist())}", fontsize=10)
    share = np.cumsum(imp[order]) / imp.sum()
    k = np.arange(1, len(imp) + 1) / len(imp)
    right.plot(100 * k, 100 * share, color=EXPONENT)
    right.plot([0, 100], [0, 100], color="grey", linestyle=":", linewidth=1)
    right.set_xlabel("loudest columns (%)")
    right.set_ylabel("share of all importance (%)")
    i10 = max(1, len(imp) // 10)
    right.set_title(f"the loudest 10 % hold {100 * share[i10 - 1]:.0f} %", fontsize=10)
    right.grid(alpha=0.3)
    _tidy(fig)
    plt.show()


def layer_errors_plot(curves: dict, title: str, ylabel: str = "‖x − x_F16‖ / ‖x_F16‖"):
    """A relative error per layer, one line per file (``curves``: label -> (n_layer,) array)."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for k, (label, err) in enumerate(curves.items()):
        ax.plot(np.arange(len(err)), err, "o-", color=FIELD_COLORS[k % len(FIELD_COLORS)], label=label)
    _log_y(ax)
    ax.set_xlabel("block")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _tidy(fig)
    plt.show()
