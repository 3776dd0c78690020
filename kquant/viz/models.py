"""Notebooks 08-11: next-token distributions, scores against bits, memory, importance, layer errors, re-quantizing.

Each ``*_view`` is a widget callback: it draws one complete figure and ends with ``plt.show()``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from kquant.formats import dequantize, quantize
from kquant.lessons.memory import gb, kv_cache_bytes, weight_bytes
from kquant.lessons.requantize import relative_error
from kquant.model.runner import next_token_logits
from kquant.model.scores import kl_divergence, log_softmax
from kquant.viz.style import EXPONENT, FIELD_COLORS, MANTISSA, SIGN, tidy


def next_token_view(models: dict, prompt: str, name: str, k: int = 8):
    """The ``k`` likeliest next tokens after ``prompt`` for the first model (the reference) and ``name``.

    ``models``: label -> kquant.model.runner.LlamaCppModel, the reference first. The title gives the KL
    divergence between the two whole distributions at this one position.
    """
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
    ax.set_xlabel(f"the {k} likeliest next tokens for {ref_label}")
    ax.set_ylabel("probability")
    ax.set_title(f"next token after {prompt!r}: KL({ref_label} ‖ {name}) = {kl:.2e} nats", fontsize=10)
    ax.legend(fontsize=8)
    tidy(fig)
    plt.show()


def log_axis_labelled(ax, axis: str = "y"):
    """A log axis that always shows several labelled ticks, however few decades the data spans.

    Call after plotting: the ticks are chosen from the axis' range (evenly spaced values when it
    spans under one decade, 1, 2 and 5 per decade under two, 1 and 3 under four, else every decade).
    """
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    decades = np.log10(hi / lo)
    target = ax.yaxis if axis == "y" else ax.xaxis
    if decades < 1:
        target.set_major_locator(MaxNLocator(nbins=5))
    else:
        subs = (1.0, 2.0, 5.0) if decades < 2 else (1.0, 3.0) if decades < 4 else (1.0,)
        target.set_major_locator(LogLocator(subs=subs, numticks=15))
    target.set_minor_locator(NullLocator())
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}" if v < 1e-3 or v >= 1e5 else f"{v:g}"))


def scores_vs_bpw(rows, title: str):
    """KL divergence and top-1 disagreement against bits per weight, one point per file (evaluate.Scores).

    The error bars are the 95 % intervals (``Scores.interval``: bootstrap over the documents).
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    quantized = [r for r in rows if r.kl > 0]
    for ax, metric, flip, label in [
        (axes[0], "kl", False, "KL divergence vs the reference (nats/token)"),
        (axes[1], "top1", True, "top-1 disagreement (share of positions)"),
    ]:
        for r in quantized:
            i = r.interval(metric)
            v, lo, hi = (1 - i.value, 1 - i.high, 1 - i.low) if flip else (i.value, i.low, i.high)
            ax.errorbar(r.bpw, v, yerr=[[v - lo], [hi - v]], fmt="o", color=EXPONENT, capsize=3, markersize=5)
            ax.annotate(
                r.path.stem.rsplit("-", 1)[-1], (r.bpw, v), textcoords="offset points", xytext=(6, 2), fontsize=8
            )
        ax.set_yscale("log")
        log_axis_labelled(ax)
        ax.set_xlabel("bits per weight (whole file)")
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}\n(bars: 95 % intervals, bootstrap over the held-out documents)", fontsize=10)
    tidy(fig)
    plt.show()


def memory_view(
    model: str, mix: str, n_ctx: int, layouts: dict, bpw: dict, gpu_gb: float = 24.0, max_ctx: dict | None = None
):
    """Memory for a model's weights (at every mix's bits per weight) and its F16 KV cache, against one GPU.

    ``layouts``: model name -> (parameters, layers, KV heads, head size); ``bpw``: mix ->
    bits per weight of the whole file; ``max_ctx``: model name -> the longest context it was
    trained for (a longer ``n_ctx`` is cut to it, and the title says so). The chosen ``mix`` is
    outlined; the dashed line is ``gpu_gb`` (a 24 GB consumer card). The y axis stops a quarter
    above the 8-bit bar, so the 16- and 32-bit bars run off the top with their heights written on them.
    """
    n_params, n_layer, n_kv_head, head_dim = layouts[model]
    limit = (max_ctx or {}).get(model, n_ctx)
    ctx = min(n_ctx, limit)
    kv = gb(kv_cache_bytes(n_layer, n_kv_head, head_dim, ctx, bytes_per_value=2))
    names = list(bpw)
    weights = [gb(weight_bytes(n_params, bpw[m])) for m in names]
    totals = [w + kv for w in weights]
    top = 1.25 * max([t for m, t in zip(names, totals) if bpw[m] <= 9] + [gpu_gb])  # Q8_0 and below
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(names))
    ax.bar(x, weights, color=EXPONENT, label="weights")
    ax.bar(x, [kv] * len(names), bottom=weights, color=MANTISSA, label=f"KV cache, F16, {ctx:,} positions")
    for k, t in enumerate(totals):
        if t > top:
            ax.annotate(
                f"{t:.0f} GB ↑",
                (x[k], top),
                textcoords="offset points",
                xytext=(0, -12),
                ha="center",
                fontsize=8,
                color="white",
                fontweight="bold",
            )
    i = names.index(mix)
    ax.bar(x[i], min(totals[i], top), fill=False, edgecolor=SIGN, linewidth=2)
    ax.annotate(
        f"{totals[i]:.1f} GB",
        (x[i], min(totals[i], top)),
        textcoords="offset points",
        xytext=(0, 4 if totals[i] <= top else -26),
        ha="center",
        fontsize=9,
        color=SIGN,
    )
    ax.axhline(gpu_gb, color="black", linestyle="--", linewidth=1)
    ax.annotate(
        f"one {gpu_gb:g} GB card",
        (-0.45, gpu_gb),
        textcoords="offset points",
        xytext=(0, 3),
        ha="left",
        fontsize=8,
        bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
    )
    ax.set_ylim(0, top)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_xlabel("mix")
    ax.set_ylabel("GB (10⁹ bytes)")
    cut = f"; {n_ctx:,} positions asked, cut to its maximum {limit:,}" if n_ctx > limit else ""
    ax.set_title(
        f"{model}: {n_params / 1e9:g}B parameters, {n_layer} layers, {n_kv_head} KV heads × {head_dim}{cut}",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper right")
    tidy(fig)
    plt.show()


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
    log_axis_labelled(left)
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
    tidy(fig, outline_labels=True)
    plt.show()


def layer_errors_plot(curves: dict, title: str, ylabel: str = "‖x − x_F16‖ / ‖x_F16‖"):
    """A relative error per layer, one line per file (``curves``: label -> (n_layer,) array)."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for k, (label, err) in enumerate(curves.items()):
        ax.plot(np.arange(len(err)), err, "o-", color=FIELD_COLORS[k % len(FIELD_COLORS)], label=label)
    log_axis_labelled(ax)
    ax.set_xlabel("block")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    tidy(fig)
    plt.show()


def requantization_view(x: np.ndarray, stand_in: np.ndarray, qtype: str, n: int = 96):
    """Re-quantizing a Q4_1 file's weights ``x`` and a stand-in for the originals with ``qtype``: the errors.

    ``x`` and ``stand_in`` are rows of weights (kquant.lessons.requantize.off_grid); the first ``n`` weights of
    the first row are drawn, the title gives each one's relative error over all the rows.
    """
    fig, ax = plt.subplots(figsize=(9, 3.4))
    i = np.arange(n)
    for v, color, label in [(x, EXPONENT, "the file's weights (on the Q4_1 grid)"), (stand_in, SIGN, "the stand-in")]:
        err = dequantize(quantize(v, qtype), qtype)[0, :n] - v[0, :n]
        ax.plot(i, err, "o", color=color, markersize=3.5, label=f"{label}: {relative_error(v, qtype):.4f}")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel(f"weight (the first {n} of row 0)")
    ax.set_ylabel(f"{qtype} value − weight")
    ax.set_title(f"re-quantized as {qtype}; relative error over all rows in the legend", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    tidy(fig, left=1.05)  # tick labels such as -0.0050 are wider than the default margin
    plt.show()
