"""Notebooks 00-03: numbers on a grid, rounding, float bit fields, scale and zero point, blocks.

Each ``*_view`` is a widget callback: it draws one complete figure and ends with ``plt.show()``.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PatchCollection
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, NullLocator
from matplotlib.transforms import ScaledTranslation

from kquant.lessons import metrics, rounding, scale_zero_point
from kquant.viz import style
from kquant.viz.style import (
    EXPONENT,
    FIELD_COLORS,
    MANTISSA,
    SIGN,
    byte_grid,
    hist,
    labels,
    legend,
    log_y,
    stairs,
    tidy,
    vlines,
)


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
    tidy(fig)
    plt.show()


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
    style.title(top, f"π with {frac_bits} fractional bits ({int_bits + frac_bits} in all): code {code_bits}")
    legend(top, loc="upper right", fontsize=8)

    bits = np.arange(0, max_bits + 1)
    err = np.array([abs(rounding.fixed_point(np.pi, int(b)).value - np.pi) for b in bits])
    bottom.plot(bits, np.maximum(err, 1e-17), "o-", color="0.4", label="|stored − π|")
    bottom.plot(bits, 2.0**-bits / 2, "--", color=EXPONENT, label="half a step: the worst case")
    log_y(bottom)
    bottom.plot([frac_bits], [max(float(abs(fp.value - np.pi)), 1e-17)], "o", color=SIGN, ms=10)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel("fractional bits")
    bottom.set_ylabel("rounding error (absolute)")
    style.title(bottom, f"error at {frac_bits} bits: {float(abs(fp.value - np.pi)):.3g}")
    legend(bottom, fontsize=8)
    tidy(fig, outline_labels=True)
    plt.show()


def float_fields_view(x: float, formats=("float32", "float16", "bfloat16")):
    """The sign, exponent and mantissa bits of ``x`` in each float format, one row each."""
    fig, axes = plt.subplots(len(formats), 1, figsize=(10, 1.25 * len(formats) + 0.4))
    for ax, fmt in zip(np.atleast_1d(axes), formats):
        fb = rounding.float_bits(x, fmt)
        _draw_bit_row(ax, fb)
    fig.suptitle(f"{x!r} stored in three float formats (sign | exponent | mantissa)", fontsize=11)
    tidy(fig, right=0.6)  # room for the "32 bits" beside the rows
    plt.show()


def _draw_bit_row(ax, fb: rounding.FloatBits) -> None:
    n = len(fb.bits)
    width = 32  # every row is drawn on float32's width, so the fields line up by meaning
    faces = []
    for i, bit in enumerate(fb.bits):
        color = SIGN if i == 0 else EXPONENT if i <= fb.exponent_bits else MANTISSA
        faces.append(to_rgba(color, 0.25 + 0.5 * (bit == "1")))
    # One collection of cells and one of digits, not a patch and a Text per bit: far fewer artists to
    # add and draw on every redraw.
    cells = [Rectangle((i, 0), 1, 1) for i in range(n)]
    ax.add_collection(PatchCollection(cells, facecolors=faces, edgecolors="white"))
    labels(ax, np.arange(n) + 0.5, 0.5, list(fb.bits), fontsize=9, family="monospace")
    ax.set_xlim(0, width)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xticks([])
    ax.set_xlabel(f"bit (1 sign, {fb.exponent_bits} exponent, {fb.mantissa_bits} mantissa)", fontsize=8)
    ax.set_title(f"{fb.format}: {_fields_in_words(fb)}  →  stores {fb.value!r}", fontsize=9, loc="left")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.text(n + 0.3, 0.5, f"{n} bits", va="center", fontsize=8, color="0.4")


def _fields_in_words(fb: rounding.FloatBits) -> str:
    """How the fields decode: normal numbers, subnormals (exponent field 0) and inf/NaN (all ones)."""
    m = f"mantissa {fb.mantissa}/2^{fb.mantissa_bits}"
    if fb.exponent == 2**fb.exponent_bits - 1:  # all ones: no number
        what = "NaN" if fb.mantissa else "infinity (too large for this format)"
        return f"sign {fb.sign}, exponent field all ones = {what}"
    if fb.exponent == 0:  # subnormal (or zero): exponent fixed at 1 - bias, no implicit 1
        return f"sign {fb.sign}, exponent field 0: subnormal, 2^{1 - fb.bias} with no implicit 1, {m}"
    return f"sign {fb.sign}, exponent {fb.exponent} − {fb.bias} = {fb.exponent - fb.bias}, 1 + {m}"


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
    tidy(fig)
    plt.show()


def weight_histogram(w, title: str, unit: str = "weight value"):
    """Histogram of a tensor's values on a log count axis, so the tails show."""
    w = np.asarray(w).ravel()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    hist(ax, w, 201, EXPONENT)
    ax.axvline(w.max(), color=SIGN, ls="--", lw=1, label=f"max {w.max():.3f}")
    ax.axvline(w.min(), color=SIGN, ls=":", lw=1, label=f"min {w.min():.3f}")
    ax.set_xlabel(unit)
    ax.set_ylabel("number of weights (log scale)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    tidy(fig)
    plt.show()


def quant_error_view(w, bits: int, scheme: str = "absmax", block_size=None):
    """The levels a scheme can store, and the histogram of its rounding error, for one bit depth."""
    w = np.asarray(w, dtype=np.float64)
    qz = scale_zero_point.SCHEMES[scheme](w, bits, block_size)
    w_hat = qz.dequantize()
    err = w - w_hat
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    hist(left, w, 201, "0.6", alpha=1.0)
    if block_size is None:  # one grid for the whole tensor: draw its levels
        lo = int(qz.q.min())  # the codes in use, by counting (np.unique sorts all 200k of them)
        used = np.flatnonzero(np.bincount((qz.q - lo).ravel())) + lo
        levels = (used - qz.zero[0, 0]) * qz.scale[0, 0]
        vlines(left, levels, 0.8, left.get_ylim()[1], color=EXPONENT, lw=0.6, alpha=0.7)
        style.title(left, f"{scheme}, {bits} bits: {levels.size} levels in use, step {qz.scale[0, 0]:.2g}", fontsize=10)
    else:
        style.title(left, f"{scheme}, {bits} bits, one scale per {block_size} weights", fontsize=10)
    left.set_xlabel("weight value (blue lines: levels used)")
    left.set_ylabel("weights (log scale)")
    _abs_error_histogram(
        right, err, qz.scale.max() / 2, "half a step" if block_size is None else "half the largest step"
    )
    zeros = np.mean(w_hat == 0) * 100
    style.title(right, f"SQNR {metrics.sqnr_db(w, w_hat):.1f} dB, {zeros:.0f}% of weights stored as 0", fontsize=10)
    tidy(fig, outline_labels=True)
    plt.show()


# |error| from 2^-24 to 2^0 in bins of a quarter octave: the same axis at every bit depth,
# so one more bit (half the step, half the error) moves the histogram one octave left.
_ERR_OCTAVES = (-24, 0)
_ERR_BINS = 2.0 ** np.arange(_ERR_OCTAVES[0], _ERR_OCTAVES[1] + 0.125, 0.25)
_TICK_FONTSIZE = 10.0  # xtick.labelsize "medium": the default font size


def _log2_histogram(a: np.ndarray) -> np.ndarray:
    """``np.histogram(a, bins=_ERR_BINS)[0]`` for ``a`` within the bins, without its sort (a few ms
    for a 200k-weight tensor on every redraw): each value's bin from its log2, then moved by one
    where float rounding put it on the wrong side of an edge, so the counts are np.histogram's."""
    n = len(_ERR_BINS) - 1
    k = np.clip(np.floor((np.log2(a) - _ERR_OCTAVES[0]) * 4).astype(np.intp), 0, n - 1)
    k -= a < _ERR_BINS[k]
    k += (a >= _ERR_BINS[k + 1]) & (k < n - 1)  # the last bin holds its right edge, as np.histogram's
    return np.bincount(k, minlength=n)


def _abs_error_histogram(ax, err, half_step: float, what: str = "half a step") -> None:
    """Histogram of |error| on a fixed log2 axis, with the worst case (half a step) marked."""
    a = np.abs(np.asarray(err, dtype=np.float64)).ravel()
    # Weights stored exactly (error 0, or float rounding below 2^-24) have no place on a log
    # axis: the legend counts them instead.
    # Binned without first copying out the others (a boolean-index copy of every weight): clipped into the
    # bins, the exact ones land in the first and are taken out of it again; errors above the top edge
    # land in the last bin (_log2_histogram clips its index), as np.minimum(a, top) would put them.
    exact = int(np.count_nonzero(a < _ERR_BINS[0]))
    counts, edges = _log2_histogram(np.maximum(a, _ERR_BINS[0])), _ERR_BINS
    counts[0] -= exact
    stairs(ax, counts, edges, fill=True, color=SIGN, alpha=0.8, label=f"{exact:,} stored exactly: not drawn")
    ax.axvline(half_step, color="black", ls="--", lw=1, label=f"{what} = {half_step:.2g}")
    ax.set_xscale("log", base=2)
    ax.set_xlim(_ERR_BINS[0], _ERR_BINS[-1])
    ticks = 2.0 ** np.arange(_ERR_OCTAVES[0], _ERR_OCTAVES[1] + 1, 4)
    # The tick marks are matplotlib's; their labels one collection of glyph outlines where the tick labels
    # go (tick length + pad below the axis, 10 pt): a Text per tick is ~0.4 ms of layout and glyphs a redraw.
    ax.set_xticks(ticks, [""] * len(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    tick = float(matplotlib.rcParams["xtick.major.size"] + matplotlib.rcParams["xtick.major.pad"])
    under = ax.get_xaxis_transform() + ScaledTranslation(0, -tick / 72, ax.figure.dpi_scale_trans)
    labels(ax, ticks, 0, [f"2^{int(np.log2(t))}" for t in ticks], fontsize=_TICK_FONTSIZE, va="top", transform=under)
    ax.xaxis.labelpad = matplotlib.rcParams["axes.labelpad"] + _TICK_FONTSIZE  # below them, as below tick labels
    ax.set_xlabel("|w − ŵ|, the rounding error (log2 axis)")
    ax.set_ylabel("weights")
    legend(ax, fontsize=8, loc="upper left")


def outlier_view(w, gain: float, gains, curve, bits: int = 4):
    """Scale the single largest weight by ``gain``: what a per-tensor absmax code does to the others.

    ``gains`` and ``curve`` (SQNR of the other weights at each gain) are computed once
    by the notebook; the view adds the point for the slider's ``gain``.
    """
    w, others = scale_zero_point.scale_largest(w, gain)
    w_hat = scale_zero_point.fake_quantize(w, bits)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    left.plot(gains, curve, "-", color="0.4")
    left.plot([gain], [metrics.sqnr_db(w[others], w_hat[others])], "o", color=SIGN, ms=9)
    left.set_xlabel("largest weight multiplied by")
    left.set_ylabel("SQNR of all other weights (dB)")
    style.title(left, f"per-tensor absmax, {bits} bits: one weight sets everyone's step", fontsize=10)
    left.grid(alpha=0.3)
    zero = np.mean(w_hat[others] == 0) * 100
    step = np.abs(w).max() / (2 ** (bits - 1) - 1)
    hist(right, w[others], 201, "0.6", alpha=1.0, label="the other weights")
    right.axvspan(-step / 2, step / 2, color=SIGN, alpha=0.2, label="rounds to 0")
    right.set_xlabel("weight value")
    right.set_ylabel("weights (log scale)")
    style.title(
        right,
        f"largest weight {np.abs(w).max():.3f}: step {step:.3f}, {zero:.0f}% of the others stored as 0",
        fontsize=10,
    )
    legend(right, fontsize=8, loc="upper right")
    tidy(fig, outline_labels=True)
    plt.show()


def tradeoff_plot(series: dict, title: str, label_offsets=None):
    """SQNR against bits per weight, one labelled line of points per series.

    ``series``: name -> list of (bits per weight, SQNR dB, point label).
    ``label_offsets``: one (dx, dy) in points per series, where its point labels go
    (a negative dx right-aligns the label left of its point); by default the series
    alternate below-right and above-left.
    """
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for k, (name, points) in enumerate(series.items()):
        bpw, db, labels = zip(*points)
        ax.plot(bpw, db, "o-", color=FIELD_COLORS[k % len(FIELD_COLORS)], label=name)
        dx, dy = label_offsets[k] if label_offsets else ((4, -11) if k % 2 == 0 else (-10, 7))
        for x, y, text in zip(bpw, db, labels):
            ax.annotate(
                text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=7, ha="right" if dx < 0 else "left"
            )
    ax.set_xlabel("bits per weight (levels + scales)")
    ax.set_ylabel("SQNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    tidy(fig)
    plt.show()


def block_view(w, block_size: int, bits: int = 4, row: int = 0, show: int = 256):
    """One row's weights with each block's absmax range, and the error histogram of the whole tensor."""
    w = np.asarray(w, dtype=np.float64)
    w_hat = scale_zero_point.fake_quantize(w, bits, "absmax", block_size)
    x = w[row, :show]
    amax = (
        np.abs(x.reshape(-1, min(block_size, show))).max(axis=1)
        if block_size <= show
        else np.full(1, np.abs(w[row, :block_size]).max())
    )
    edges = np.arange(0, show + 1, min(block_size, show))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1.4, 1]})
    left.plot(np.arange(show), x, ".", ms=3, color="0.4", label="weights")
    stairs(left, amax, edges, color=SIGN, label="block's max|w|")
    stairs(left, -amax, edges, color=SIGN)
    left.set_xlabel(f"weight index in row {row} (first {show})")
    left.set_ylabel("weight value")
    style.title(left, f"one scale per {block_size} weights", fontsize=10)
    legend(left, fontsize=8, loc="lower right")
    qmax = 2 ** (bits - 1) - 1  # absmax's top level: a block's step is its max|w| / qmax
    n = w.shape[1] // block_size * block_size
    steps = np.abs(w[:, :n]).reshape(-1, block_size).max(axis=1) / qmax if n else np.abs(w).max(axis=1) / qmax
    _abs_error_histogram(right, w - w_hat, float(np.median(steps)) / 2, "half the median block's step")
    bpw = scale_zero_point.bits_per_weight(bits, block_size)
    style.title(
        right, f"{bits}-bit absmax: {bpw:.3f} bits/weight, SQNR {metrics.sqnr_db(w, w_hat):.1f} dB", fontsize=10
    )
    tidy(fig, outline_labels=True)
    plt.show()


def error_along_row(curves: dict, outlier_at: int, title: str, block: int = 32):
    """|error| of each weight along one row (thin) and its RMS per block of ``block`` weights (steps).

    ``curves``: name -> errors. The y axis starts just below the smallest error that is
    not exactly 0 (weights stored exactly, such as each block's largest, drop off the
    bottom), so the axis spans the errors that matter and not 17 decades.
    """
    fig, ax = plt.subplots(figsize=(9, 3.6))
    nonzero = np.concatenate([np.abs(e)[np.abs(e) > 0] for e in curves.values()])
    floor = np.percentile(nonzero, 1) / 2 if nonzero.size else 1e-12
    for k, (name, err) in enumerate(curves.items()):
        err = np.abs(np.asarray(err, dtype=np.float64))
        color = FIELD_COLORS[k]
        ax.plot(np.where(err > 0, err, np.nan), lw=0.5, color=color, alpha=0.45)
        n = err.size // block * block
        rms = np.sqrt(np.mean(err[:n].reshape(-1, block) ** 2, axis=1))
        stairs(ax, rms, np.arange(0, n + 1, block), baseline=None, color=color, lw=2, label=f"{name}: RMS per block")
    ax.axvline(outlier_at, color=SIGN, ls=":", lw=1, label="the outlier")
    log_y(ax)
    top = max(float(np.abs(np.asarray(e)).max()) for e in curves.values())
    ax.set_ylim(floor, top * 30)  # room above the curves for the legend
    ax.set_xlabel("weight index along the row")
    ax.set_ylabel("|w − ŵ| (weight units, log)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    tidy(fig)
    plt.show()


def block_bytes(block: np.ndarray, fields: list, title: str, per_row: int = 16):
    """A block's bytes as a grid of hex values, coloured by field.

    ``fields``: (name, first byte, end byte) in order; every byte should belong to one.
    """
    block = np.asarray(block, dtype=np.uint8)
    rows = -(-block.size // per_row)
    fig, ax = plt.subplots(figsize=(per_row * 0.6 + 0.6, rows * 0.55 + 1.0))
    byte_grid(ax, block, fields, per_row)
    ax.set_title(title, fontsize=10)
    tidy(fig)
    plt.show()
