"""AWQ: activation-aware weight quantization (Lin et al. 2023, arXiv 2306.00978), on a llama GGUF.

    >>> from kquant.methods import awq
    >>> from kquant.model import hub
    >>> result = awq.search(hub.bundled(), "Q4_K_M")          # α and scales per group, cached
    >>> path = awq.quantized(hub.bundled(), "Q4_K_M")         # a plain llama GGUF llama.cpp runs

A weight column that meets large activations matters more (notebook 10). AWQ protects such
columns without a mixed-precision format: it multiplies input channel j of a matrix by
``s_j > 1`` before quantizing and divides its activation by ``s_j``,

    y = W x = (W · diag(s)) · (diag(s)⁻¹ · x),

so the rounding error of the scaled column is, relative to its weights, about ``s_j`` times
smaller once divided back. The scale comes from the activations: ``s = x_mean^α`` with
``x_mean`` the mean |activation| of each input channel on calibration text, normalised by
``sqrt(max(s) · min(s))``, and α chosen from a grid of 20 values in [0, 1) by the error of the
*block's output* with the scaled weights quantized in the real format and divided back.
``diag(s)⁻¹`` costs nothing at run time: it is folded into whatever produces the input, the
RMSNorm weight in front of attn_q/k/v and of ffn_gate/ffn_up, ffn_up's rows in front of
ffn_down, attn_v's rows in front of attn_output (only when attn_v has as many rows as
attn_output has columns, i.e. without grouped-query attention; the bundled model has 4 query
and 2 key/value heads, so like the reference we skip that one). The file stays a plain llama
GGUF, quantized with llama.cpp's ordinary round-to-nearest (``quantize_gguf(weights=...)``).

This mirrors mit-han-lab/llm-awq, ``awq/quantize/auto_scale.py``: ``get_act_scale`` (mean |x|
per channel), ``auto_scale_block`` / ``_search_module_scale`` (grid of 20 ratios, clamp at
1e-4, normalisation, quantize ``W · s`` then divide by ``s``, loss = mean squared difference of
the inspected module's output: the whole attention for q/k/v, the whole SwiGLU for gate/up,
the matrix itself for attn_output and ffn_down) and ``apply_scale`` / ``scale_ln_fcs`` /
``scale_fc_fc``. As in ``run_awq`` every group of a layer is searched on the unscaled layer,
with inputs from the float model (scaling preserves the function, so one float pass gives
them), and only then are all scales applied. Two differences: the weights are quantized
with the file's own ggml format (``plan_gguf``'s type per tensor: Q4_0, Q4_K, Q6_K …)
instead of llm-awq's INT4 with groups of 128, and the optional clipping search
(``auto_clip.py``) is not done.

Notebook 12 uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kquant.errors import KQuantError
from kquant.formats import dequantize, quantize
from kquant.gguf.summary import sha256
from kquant.model import cache, calibrate
from kquant.model.forward import Llama, matmul_errors, rope_tables
from kquant.quantize_file import plan_gguf, quantize_gguf

GRID = 20  # auto_scale.py: n_grid = 20, ratios 0, 0.05, …, 0.95
CLAMP = 1e-4  # x_max.pow(ratio).clamp(min=1e-4): a silent channel must not get a zero scale
N_CHUNKS = 2  # calibration chunks of n_ctx tokens: 512 tokens for 256 channels (llm-awq: 128 samples of 512 tokens)


# --------------------------------------------------------------------------------------------
# The pieces: statistics, scales, the quantize-with-scales round trip
# --------------------------------------------------------------------------------------------


def activation_scale(x: np.ndarray) -> np.ndarray:
    """Mean |activation| of each input channel: ``x`` (n_tokens, n_channels) -> (n_channels,) (get_act_scale)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise KQuantError("x must be a 2-D array, one row per token and one column per input channel")
    return np.abs(x).mean(axis=0)


def scales(x_mean: np.ndarray, alpha: float) -> np.ndarray:
    """AWQ's per-channel scale ``x_mean^α``, clamped at 1e-4, divided by ``sqrt(max · min)``.

    The normalisation centres the scales around 1 on a log scale (the largest is as far above
    1 as the smallest is below), so the weights keep their overall size.
    """
    if not 0.0 <= alpha <= 1.0:
        raise KQuantError(f"alpha = {alpha}: AWQ searches α in [0, 1]")
    s = np.maximum(np.asarray(x_mean, dtype=np.float32) ** np.float32(alpha), np.float32(CLAMP))
    return (s / np.sqrt(s.max() * s.min())).astype(np.float32)


def round_trip(w: np.ndarray, qtype) -> np.ndarray:
    """``w`` quantized to the ggml format ``qtype`` and decoded: what the file's numbers mean (float32)."""
    w = np.asarray(w, dtype=np.float32)
    return dequantize(quantize(w, qtype), qtype).reshape(w.shape)


def scaled_round_trip(w: np.ndarray, s: np.ndarray, qtype) -> np.ndarray:
    """Quantize ``W · diag(s)`` and divide the columns back by ``s``: the matrix the AWQ file computes with."""
    return round_trip(np.asarray(w, dtype=np.float32) * s, qtype) / s


# --------------------------------------------------------------------------------------------
# The groups of one llama block: who divides by s (prev), whose columns are scaled, what is inspected
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """One scale vector: ``prev`` absorbs 1/s, ``layers`` get their columns multiplied by s.

    ``inspect`` names the output whose error chooses α: "attention" (q, k, v through softmax and
    attn_output), "ffn" (gate and up through SwiGLU and ffn_down), or "matrix" (the matrix alone).
    """

    prev: str
    layers: tuple[str, ...]
    inspect: str


def groups(model: Llama, layer: int) -> list[Group]:
    """auto_scale_block's four groups for a LlamaDecoderLayer, under GGUF names (three with GQA)."""
    b = f"blk.{layer}."
    w = model.weights
    out = [Group(b + "attn_norm.weight", (b + "attn_q.weight", b + "attn_k.weight", b + "attn_v.weight"), "attention")]
    # llm-awq PR 67: v_proj -> o_proj only when their shapes match (no grouped-query attention), since
    # with GQA one row of attn_v feeds n_head / n_head_kv columns of attn_output.
    if w[b + "attn_v.weight"].shape == w[b + "attn_output.weight"].shape:
        out.append(Group(b + "attn_v.weight", (b + "attn_output.weight",), "matrix"))
    out.append(Group(b + "ffn_norm.weight", (b + "ffn_gate.weight", b + "ffn_up.weight"), "ffn"))
    out.append(Group(b + "ffn_up.weight", (b + "ffn_down.weight",), "matrix"))
    return out


def calibration_inputs(model: Llama, sequences) -> dict[str, list[np.ndarray]]:
    """Per weight matrix, its input on each calibration sequence (observe hook), one array per sequence."""
    seen: dict[str, list[np.ndarray]] = {}
    for seq in sequences:
        model.forward(np.asarray(seq), observe=lambda name, x: seen.setdefault(name, []).append(x))
    if not seen:
        raise KQuantError("no calibration sequences: pass at least one token sequence")
    return seen


def _block_output(model: Llama, group: Group, replaced: dict[str, np.ndarray], xs: list[np.ndarray]) -> np.ndarray:
    """The inspected output on every calibration sequence, with ``replaced`` weights, stacked (n_tokens, n_out)."""
    if group.inspect == "matrix":
        (name,) = group.layers
        return np.concatenate(xs) @ replaced.get(name, model.weights[name]).T
    # The model's own graph with some weights swapped: a shallow copy, the arrays are shared.
    m = Llama(model.cfg, {**model.weights, **replaced}, model.path)
    b = group.prev.split(".")[0] + "." + group.prev.split(".")[1] + "."
    outs = []
    for x in xs:
        if group.inspect == "attention":  # one causal attention per sequence, positions from 0
            cos, sin = rope_tables(len(x), model.cfg.head_dim, model.cfg.rope_base)
            outs.append(m._attention(x, b, cos, sin, None))
        else:
            outs.append(m._ffn(x, b, None))
    return np.concatenate(outs)


@dataclass
class GroupSearch:
    """What the α search of one group found: its loss per α, the best α and its scales."""

    group: Group
    x_mean: np.ndarray  # mean |x| per input channel on the calibration text
    alphas: np.ndarray  # the grid, 0, 0.05, …, 0.95
    losses: np.ndarray  # mean squared error of the inspected output, per α
    alpha: float  # the best α (α = 0: s = 1, plain round-to-nearest)
    scales: np.ndarray  # scales(x_mean, alpha)


def search_group(
    model: Llama, group: Group, xs: list[np.ndarray], types: dict, grid: int = GRID
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """_search_module_scale: (x_mean, alphas, losses) for one group; ``xs`` its input per sequence."""
    x_mean = activation_scale(np.concatenate(xs))
    reference = _block_output(model, group, {}, xs)
    alphas = np.arange(grid, dtype=np.float64) / grid
    losses = np.empty(grid)
    for i, a in enumerate(alphas):
        s = scales(x_mean, a)
        replaced = {n: scaled_round_trip(model.weights[n], s, types[n]) for n in group.layers}
        d = (_block_output(model, group, replaced, xs) - reference).astype(np.float64)
        losses[i] = np.mean(d * d)
    return x_mean, alphas, losses


@dataclass
class Result:
    """AWQ's search on one model and format: one GroupSearch per group, in layer order."""

    searches: list[GroupSearch]

    def by_prev(self, prev: str) -> GroupSearch:
        for g in self.searches:
            if g.group.prev == prev:
                return g
        raise KQuantError(f"no AWQ group follows {prev!r}; groups follow {[g.group.prev for g in self.searches]}")

    def column_scales(self) -> dict[str, np.ndarray]:
        """Per scaled matrix, the factor each of its columns was multiplied by."""
        return {n: g.scales for g in self.searches for n in g.group.layers}

    def row_scales(self) -> dict[str, np.ndarray]:
        """Per matrix that absorbed 1/s (ffn_up before ffn_down), the factor each of its rows was divided by."""
        return {g.group.prev: g.scales for g in self.searches if g.group.inspect == "matrix"}


def types_for(src, mix: str, pure: bool = False) -> dict:
    """The ggml type ``plan_gguf`` gives each tensor of ``src`` in ``mix``: what the search must quantize with."""
    return {c.name: c.type for c in plan_gguf(src, mix, pure=pure)}


def search_model(model: Llama, sequences, types: dict, grid: int = GRID, progress: Callable | None = None) -> Result:
    """auto_scale_block over every layer; inputs from one float pass (scaling preserves the function)."""
    inputs = calibration_inputs(model, sequences)
    found = []
    for layer in range(model.cfg.n_layer):
        for g in groups(model, layer):
            x_mean, alphas, losses = search_group(model, g, inputs[g.layers[0]], types, grid)
            best = int(np.argmin(losses))  # the first minimum, as `loss < best_error`
            found.append(GroupSearch(g, x_mean, alphas, losses, float(alphas[best]), scales(x_mean, alphas[best])))
        if progress is not None:
            progress(layer)
    return Result(found)


def group_errors(model: Llama, result: Result, sequences, types: dict) -> dict[str, tuple[float, float]]:
    """Per group (keyed by ``prev``), the inspected output's mean squared error on ``sequences``: (RTN, AWQ).

    The loss the search minimised, measured on other text (held-out sequences): round-to-nearest
    is α = 0 (s = 1), AWQ the scales the search chose. Inputs come from the float model.
    """
    inputs = calibration_inputs(model, sequences)
    out = {}
    for g in result.searches:
        xs = inputs[g.group.layers[0]]
        reference = _block_output(model, g.group, {}, xs)
        errors = []
        for s in (np.ones_like(g.scales), g.scales):
            replaced = {n: scaled_round_trip(model.weights[n], s, types[n]) for n in g.group.layers}
            d = (_block_output(model, g.group, replaced, xs) - reference).astype(np.float64)
            errors.append(float(np.mean(d * d)))
        out[g.group.prev] = (errors[0], errors[1])
    return out


def apply(weights: dict[str, np.ndarray], result: Result) -> dict[str, np.ndarray]:
    """apply_scale: the rescaled matrices and norm vectors, {name: float32 array} (``weights`` is not changed).

    scale_ln_fcs: the norm's weight is divided by s and the matrices' columns multiplied by s.
    scale_fc_fc: the previous matrix's rows are divided by s, the next matrix's columns multiplied.
    A tensor touched twice (ffn_up: its columns by the ffn_norm group, its rows by the ffn_down
    group) gets both, so the order does not matter.
    """
    out: dict[str, np.ndarray] = {}

    def get(name):
        return out.get(name, np.asarray(weights[name], dtype=np.float32))

    for g in result.searches:
        s = g.scales
        prev = get(g.group.prev)
        if prev.ndim == 1:
            out[g.group.prev] = prev / s
        else:
            # fc1.weight[-scales.size(0):].div_(...): the last len(s) rows feed the next matrix
            prev = prev.copy()
            prev[-len(s) :] /= s[:, None]
            out[g.group.prev] = prev
        for n in g.group.layers:
            out[n] = get(n) * s[None, :]
    return out


# --------------------------------------------------------------------------------------------
# Whole files, cached
# --------------------------------------------------------------------------------------------


def _sequences(model: Llama, n_chunks: int) -> list[np.ndarray]:
    return calibrate.chunks(model, calibrate.calibration_text(), model.cfg.n_ctx, n_chunks)


def search(src, mix: str = "Q4_K_M", *, pure: bool = False, n_chunks: int = N_CHUNKS, grid: int = GRID) -> Result:
    """AWQ's α search for every group of ``src`` quantized as ``mix``, from the cache (computed when missing).

    Calibration: ``n_chunks`` chunks of the model's context from ``calibrate.calibration_text()``
    (held-out documents of their own seed, never the evaluation text).
    """
    src = Path(src)
    model = Llama.load(src)
    types = types_for(src, mix, pure)
    names = [g for layer in range(model.cfg.n_layer) for g in groups(model, layer)]

    def compute():
        r = search_model(model, _sequences(model, n_chunks), types, grid)
        out = {}
        for g in r.searches:
            out[g.group.prev + "/x_mean"] = g.x_mean
            out[g.group.prev + "/losses"] = g.losses
        return out

    arrays = cache.arrays("awq-search", compute, src=sha256(src), mix=mix, pure=pure, n_chunks=n_chunks, grid=grid)
    alphas = np.arange(grid, dtype=np.float64) / grid
    found = []
    for g in names:
        x_mean, losses = arrays[g.prev + "/x_mean"], arrays[g.prev + "/losses"]
        best = float(alphas[int(np.argmin(losses))])
        found.append(GroupSearch(g, x_mean, alphas, losses, best, scales(x_mean, best)))
    return Result(found)


def quantized(src, mix: str = "Q4_K_M", *, pure: bool = False, n_chunks: int = N_CHUNKS, out_mix: str | None = None):
    """The AWQ file: ``src``'s weights rescaled by ``search(src, mix)`` and quantized as ``out_mix`` (cached).

    ``out_mix`` defaults to ``mix``; ``out_mix="F16"`` writes the rescaled model unquantized, the
    file that must compute what ``src`` computes.
    """
    src = Path(src)
    out_mix = out_mix or mix
    result = search(src, mix, pure=pure, n_chunks=n_chunks)
    model = Llama.load(src)
    new = apply(model.weights, result)

    def make(path):
        # out_mix "F16": llama-quantize's F16 file type, every matrix F16 and the norms F32
        quantize_gguf(src, path, out_mix, weights=new, pure=pure, overwrite=True, progress=False)

    tag = f"{out_mix}{'-pure' if pure else ''}"
    return cache.made(
        "awq-file",
        make,
        f"{src.stem}-AWQ-{tag}.gguf",
        src=sha256(src),
        mix=mix,
        out_mix=out_mix,
        pure=pure,
        n_chunks=n_chunks,
    )


def held_out_errors(src, mix: str = "Q4_K_M", *, pure: bool = False, tokens, n_chunks: int = N_CHUNKS) -> dict:
    """What AWQ changes inside, on held-out ``tokens``, from the cache (computed when missing).

    ``"group/<prev>"``: (RTN, AWQ) mean squared error of each group's inspected output
    (``group_errors``); ``"rtn/<matrix>"`` and ``"awq/<matrix>"``: each matrix's own relative output
    error (``forward.matmul_errors``) in the round-to-nearest file and in the AWQ file with its
    scales undone.
    """
    src = Path(src)
    tokens = np.asarray(tokens)

    def compute():
        f16 = Llama.load(src)
        result = search(src, mix, pure=pure, n_chunks=n_chunks)
        out = {
            f"group/{k}": np.array(v) for k, v in group_errors(f16, result, [tokens], types_for(src, mix, pure)).items()
        }
        rtn = Llama.load(cache.quantized(src, mix, pure=pure))
        awq = undo(Llama.load(quantized(src, mix, pure=pure, n_chunks=n_chunks)), result)
        for label, model in [("rtn", rtn), ("awq", awq)]:
            out.update({f"{label}/{k}": np.array(v) for k, v in matmul_errors(f16, model, tokens).items()})
        return out

    parts = dict(src=sha256(src), mix=mix, pure=pure, n_chunks=n_chunks, tokens=tokens.tolist())
    return cache.arrays("awq-held-out", compute, **parts)


def undo(model: Llama, result: Result) -> Llama:
    """The AWQ file's matrices with the scales taken out again: what each computes on the original inputs.

    Column j of a scaled matrix is divided by s_j and row i of a matrix that absorbed 1/s is
    multiplied back, so ``forward.matmul_errors(f16, undo(awq_model, result))`` compares each
    matrix's own output error with round-to-nearest's on the same inputs.
    """
    w = dict(model.weights)
    for name, s in result.column_scales().items():
        w[name] = w[name] / s[None, :]
    for name, s in result.row_scales().items():
        w[name] = w[name].copy()
        w[name][-len(s) :] *= s[:, None]
    for g in result.searches:
        if g.group.prev.endswith("norm.weight"):
            w[g.group.prev] = w[g.group.prev] * g.scales
    return Llama(model.cfg, w, model.path)


# --------------------------------------------------------------------------------------------
# One matrix on its own: the search, the salient-channel experiment, the outlier experiment
# --------------------------------------------------------------------------------------------


def search_matrix(w: np.ndarray, x: np.ndarray, qtype, grid: int = GRID) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The α search for one matrix ``w`` (rows, cols) on inputs ``x`` (tokens, cols): (x_mean, alphas, losses).

    The loss is the mean squared error of ``x · Wᵀ`` (what _search_module_scale measures for
    attn_output and ffn_down, whose inspected module is the matrix itself).
    """
    w, x = np.asarray(w, dtype=np.float32), np.asarray(x, dtype=np.float32)
    if w.ndim != 2 or x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise KQuantError(f"w {w.shape} and x {x.shape}: x needs one column per column of w, one row per token")
    x_mean = activation_scale(x)
    y = x @ w.T
    alphas = np.arange(grid, dtype=np.float64) / grid
    losses = np.array(
        [np.mean((x @ scaled_round_trip(w, scales(x_mean, a), qtype).T - y).astype(np.float64) ** 2) for a in alphas]
    )
    return x_mean, alphas, losses


def relative_output_error(w: np.ndarray, w_hat: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per token, ``||x Ŵᵀ − x Wᵀ|| / ||x Wᵀ||``: one number per row of ``x`` (for paired intervals)."""
    y = x @ np.asarray(w, dtype=np.float32).T
    return np.linalg.norm(x @ np.asarray(w_hat, dtype=np.float32).T - y, axis=1) / np.linalg.norm(y, axis=1)


def protect(w: np.ndarray, channels, qtype) -> np.ndarray:
    """Round-to-nearest, but the input channels (columns) ``channels`` kept at full precision.

    The AWQ paper's first experiment (its Table 1): keeping 1 % of the channels unquantized helps
    a lot when they are chosen by activation, little when chosen by weight magnitude. A mixed-
    precision matrix is awkward for hardware; the scale trick gets most of the benefit without one.
    """
    out = round_trip(w, qtype)
    channels = np.asarray(channels, dtype=np.int64)
    out[:, channels] = np.asarray(w, dtype=np.float32)[:, channels]
    return out


@dataclass
class OutlierRun:
    """One factor of the outlier experiment: both methods' per-token errors on held-out inputs."""

    factor: float  # the chosen channels' activations multiplied by this
    alpha: float  # the α AWQ chose on the calibration inputs
    rtn: np.ndarray  # per held-out token, relative output error of round-to-nearest
    awq: np.ndarray  # … and of AWQ


def outlier_experiment(
    w: np.ndarray,
    x_cal: np.ndarray,
    x_eval: np.ndarray,
    factors,
    qtype,
    n_outliers: int = 4,
    seed: int = 0,
) -> list[OutlierRun]:
    """A controlled experiment: make ``n_outliers`` input channels ``factor`` times larger, then compare.

    LLM.int8 (Dettmers et al. 2022) and AWQ report that large models have a few input channels
    far larger than the rest. Here the same few channels (drawn with ``seed``) of real
    inputs are multiplied by each factor, in the calibration inputs (which choose α) and in
    the held-out inputs (which measure), and round-to-nearest and AWQ quantize the same ``w``.
    """
    rng = np.random.default_rng(seed)
    chosen = rng.choice(np.asarray(w).shape[1], n_outliers, replace=False)
    runs = []
    for f in factors:
        gain = np.ones(np.asarray(w).shape[1], dtype=np.float32)
        gain[chosen] = f
        xc, xe = np.asarray(x_cal, np.float32) * gain, np.asarray(x_eval, np.float32) * gain
        x_mean, alphas, losses = search_matrix(w, xc, qtype)
        alpha = float(alphas[int(np.argmin(losses))])
        awq_w = scaled_round_trip(w, scales(x_mean, alpha), qtype)
        runs.append(
            OutlierRun(
                float(f),
                alpha,
                relative_output_error(w, round_trip(w, qtype), xe),
                relative_output_error(w, awq_w, xe),
            )
        )
    return runs
