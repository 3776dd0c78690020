"""GPTQ: round one input column at a time and push its error onto the columns not yet rounded.

Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers" (ICLR 2023, arXiv 2210.17323). The loop mirrors the
reference implementation, IST-DASLab/gptq ``gptq.py``, ``GPTQ.add_batch`` and
``GPTQ.fasterquant``:

* ``H = 2 XᵀX / n`` from the inputs X (one row per token) that a matrix meets on calibration
  text (``add_batch``); the layer's output error ``‖(Ŵ − W) Xᵀ‖²`` is ``tr((Ŵ − W) H (Ŵ − W)ᵀ) / 2 · n``.
  (``add_batch`` counts n in sequences, not tokens: a constant factor, which changes nothing below,
  since the damping is relative to H's own diagonal);
* dead inputs (``H_ii = 0``) get ``H_ii = 1`` and their weights are set to 0, as the reference does;
* damping: ``percdamp · mean(diag H)`` added to the diagonal (``percdamp = 0.01``);
* ``Hinv = cholesky(H⁻¹, upper)``: row i of that factor holds what column i's error does to the
  columns after it, given that columns before i are fixed;
* columns in blocks of ``blocksize = 128``: inside a block each rounded column's error
  ``e = (w − q) / Hinv[i, i]`` is subtracted at once from the block's later columns
  (``W1[:, i:] -= e ⊗ Hinv1[i, i:]``), the rest of the matrix gets the block's errors in one
  matrix product at the block's end (the "lazy batch" update).

What differs, and why:

* The grid is a real ggml block format (Q4_0 or Q4_K, byte-exact through ``kquant.formats``),
  not the reference's per-row min-max grid. A group's scales are found when the loop reaches
  the group's first column, from the group's *current* (error-updated) weights, with ggml's
  own rule: Q4_0's signed absmax / -8 in fp16; Q4_K's make_qkx2 search per 32 columns and the
  6-bit scale / min quantization over the 256 columns of the super-block. Each column is then
  rounded on that grid exactly as ggml rounds (C float32 arithmetic), clamped to the grid
  (where ggml never needs to clamp, because its scale came from those very values).
  With ``H = I`` nothing is pushed anywhere, and GPTQ gives ``kquant.quantize``'s bytes
  (tests/test_gptq.py checks it on random and nasty matrices).
* The reference's ``find_params(W[:, i:i+groupsize])`` reads the *outer* W, which inside a
  block has not yet received the block's own updates; here the group's weights are the
  current ones (a group starts at a block start, or lies inside one block, so they are at hand).
* No act-order: ggml's blocks need the input columns in their own order.
* The whole-file function ``quantize_file`` follows the reference's sequential scheme
  (``llama_sequential``): the inputs of block i are computed through blocks 0 … i−1 already
  quantized; within a block, all Hessians come from the block's inputs with the block still
  unquantized (the reference's default, not ``--true-sequential``). q, k and v share attn_norm's
  output, gate and up share ffn_norm's, so they share one Hessian. ``token_embd.weight`` (the
  bundled model ties it to the output) is left to llama.cpp's round-to-nearest: the reference
  quantizes only the transformer blocks' linear layers, and an embedding is a row lookup.

Notebook 11 uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from kquant import formats, imatrix
from kquant.blas import one_blas_thread
from kquant.errors import KQuantError
from kquant.formats import q4_0, q4_k
from kquant.formats.cops import c_float_to_int8, c_semantics, c_to_uint8, f32, fp16_value, signed_absmax
from kquant.formats.search import requantize_levels
from kquant.gguf.summary import sha256
from kquant.model import cache, calibrate
from kquant.model.forward import Llama
from kquant.quantize_file import quantize_gguf

T = GGMLQuantizationType

PERCDAMP = 0.01  # the reference's default --percdamp
BLOCKSIZE = 128  # the reference's default blocksize of the lazy batch updates

# The matrices of one transformer block, and whose input each one's Hessian is (q, k, v see the same
# normed input, as do gate and up): {matrix: the matrix whose observed input it shares}.
SHARED_INPUT = {
    "attn_q": "attn_q",
    "attn_k": "attn_q",
    "attn_v": "attn_q",
    "attn_output": "attn_output",
    "ffn_gate": "ffn_gate",
    "ffn_up": "ffn_gate",
    "ffn_down": "ffn_down",
}

# Each GPTQ type, and the llama.cpp mix that, with pure=True, gives every matrix that type.
MIXES = {"Q4_0": "Q4_0", "Q4_K": "Q4_K_M"}


# --- the grids: ggml's scale rule at a group's first column, ggml's rounding per column -------------


class _Q4_0:
    """Q4_0: 32 columns per group; d = (signed absmax) / -8, stored fp16; q = min(15, (int8)(x/d + 8.5))."""

    qtype, group = T.Q4_0, q4_0.QK

    @c_semantics
    def start(self, wg: np.ndarray) -> dict:
        d = signed_absmax(wg, axis=1) / f32(-8)  # the first largest |x|, with its sign (C's scan)
        id_ = np.where(d != 0, f32(1) / d, f32(0))  # C uses the unrounded d for the levels
        return {"d": d.astype(np.float16), "id": id_.astype(f32)}

    @c_semantics
    def round(self, w: np.ndarray, s: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
        v = w * s["id"] + f32(8.5)  # float32 product, then float32 sum, as in C
        # C: MIN(15, (int8_t)v), a truncation, with v >= 0 whenever the scale came from these very values.
        # After GPTQ's updates v can leave the grid: clamp to its ends (C would wrap below 0).
        q = np.clip(v, f32(0), f32(15)).astype(np.uint8)
        odd = ~np.isfinite(s["id"])  # a subnormal block max whose 1/d overflowed: C's own wrap-around
        if odd.any():
            q[odd] = np.minimum(15, c_to_uint8(c_float_to_int8(v[odd])))
        return q, (q.astype(np.int8) - np.int8(8)).astype(f32) * fp16_value(s["d"])

    def pack(self, levels: np.ndarray, states: list[dict]) -> np.ndarray:
        rows = levels.shape[0]
        d = np.stack([s["d"] for s in states], axis=1).reshape(-1)  # (rows * groups,), row-major: ggml's order
        q = levels.reshape(-1, self.group)
        return q4_0.pack(q4_0.Fields(d, q)).reshape(rows, -1)


class _Q4_K:
    """Q4_K: 256 columns per super-block; its 8 scales and mins from ggml's search, 6-bit under fp16 d, dmin."""

    qtype, group = T.Q4_K, q4_k.QK

    def start(self, wg: np.ndarray) -> dict:
        f = q4_k.encode(np.ascontiguousarray(wg, dtype=f32))  # (rows, 256): one super-block per row
        dq = (fp16_value(f.d)[:, None] * f.sc).astype(f32)  # (rows, 8), as requantize and decode use them
        dm = (fp16_value(f.dmin)[:, None] * f.m).astype(f32)
        # A sub-block whose 6-bit scale is 0 keeps its levels from the search (C skips it; they decode to -dm).
        return {"fields": f, "dq": dq, "dm": dm, "search": f.q}

    @c_semantics
    def round(self, w: np.ndarray, s: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
        j = k // 32
        q = requantize_levels(w[:, None].astype(f32), s["dq"][:, j], s["dm"][:, j], 0, 15, s["search"][:, k][None, :])
        q = q[:, 0]
        return q, q.astype(f32) * s["dq"][:, j] - s["dm"][:, j]  # decode: (d*sc)*q - dmin*m

    def pack(self, levels: np.ndarray, states: list[dict]) -> np.ndarray:
        rows = levels.shape[0]

        def field(name):
            return np.stack([getattr(s["fields"], name) for s in states], axis=1).reshape(rows * len(states), -1)

        f = q4_k.Fields(field("d")[:, 0], field("dmin")[:, 0], field("sc"), field("m"), levels.reshape(-1, 256))
        return q4_k.pack(f).reshape(rows, -1)


GRIDS = {"Q4_0": _Q4_0(), "Q4_K": _Q4_K()}


def grid(qtype) -> _Q4_0 | _Q4_K:
    name = qtype.name if isinstance(qtype, T) else str(qtype).upper()
    if name not in GRIDS:
        raise KQuantError(f"GPTQ here writes {', '.join(GRIDS)} blocks; got {qtype!r}: pick one of those")
    return GRIDS[name]


# --- one matrix ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One matrix quantized by GPTQ: its ggml blocks, their values, and the reference's loss per weight."""

    blocks: np.ndarray  # (rows, row_bytes) uint8: what kquant.quantize would return for this type
    values: np.ndarray  # (rows, cols) float32: the blocks decoded
    losses: np.ndarray  # (rows, cols): (w - q)² / Hinv[i, i]² / 2, the reference's Losses


def inverse_factor(H: np.ndarray, percdamp: float = PERCDAMP) -> tuple[np.ndarray, np.ndarray]:
    """The reference's preparation of H: dead columns, damping, then the upper Cholesky factor of H⁻¹.

    Returns (Hinv, dead): Hinv (n, n) float64 upper triangular; dead (n,) bool, the inputs that
    were never active (their weights are set to 0).
    """
    H = np.array(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1] or not np.isfinite(H).all():
        raise KQuantError(f"H must be a finite square matrix (n_cols × n_cols); got shape {H.shape}")
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    H[np.diag_indices_from(H)] += percdamp * np.mean(np.diag(H))
    try:
        L = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        raise KQuantError(
            "H is not positive definite even after damping: pass 2·XᵀX/n of real inputs, or raise percdamp"
        ) from None
    Linv = np.linalg.inv(L)
    Hinv_full = Linv.T @ Linv  # torch.cholesky_inverse(L)
    return np.linalg.cholesky(Hinv_full).T, dead  # torch.linalg.cholesky(·, upper=True)


def quantize(
    W: np.ndarray,
    H: np.ndarray,
    qtype="Q4_0",
    *,
    percdamp: float = PERCDAMP,
    blocksize: int = BLOCKSIZE,
    factor: tuple[np.ndarray, np.ndarray] | None = None,
) -> Result:
    """GPTQ of one matrix W (rows, cols) with Hessian H (cols, cols) onto a ggml grid: ``fasterquant``.

    ``H = I`` (no correlation, no compensation) gives ``kquant.quantize(W, qtype)``'s bytes exactly.
    ``factor``: ``inverse_factor(H, percdamp)`` when the caller has it already (it is most of the cost
    for a small W), so it is not computed twice.
    """
    with one_blas_thread():
        return _quantize(W, H, grid(qtype), percdamp, blocksize, factor)


def _quantize(W, H, g, percdamp: float, blocksize: int, factor=None) -> Result:
    W = np.array(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[1] % g.group or not np.isfinite(W).all():
        raise KQuantError(
            f"W must be a finite (rows, cols) matrix with cols a multiple of {g.group} for {g.qtype.name}; "
            f"got shape {W.shape}"
        )
    if np.shape(H) != (W.shape[1], W.shape[1]):
        raise KQuantError(f"H must be ({W.shape[1]}, {W.shape[1]}) for W of shape {W.shape}; got {np.shape(H)}")
    if blocksize % g.group and g.group % blocksize:
        raise KQuantError(f"blocksize {blocksize}: use a multiple or a divisor of {g.qtype.name}'s group of {g.group}")
    Hinv, dead = inverse_factor(H, percdamp) if factor is None else factor
    W[:, dead] = 0
    rows, cols = W.shape
    levels = np.empty((rows, cols), dtype=np.uint8)
    Q = np.empty((rows, cols), dtype=f32)
    losses = np.empty((rows, cols))
    states = []
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].copy()
        Err1 = np.empty_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            c = i1 + i
            if c % g.group == 0:
                # The group's current weights: at a block's start all of W is up to date; later in a block
                # the group lies inside it (blocksize is a multiple of the group), in W1.
                wg = W[:, c : c + g.group] if i == 0 else W1[:, i : i + g.group]
                state = g.start(wg.astype(f32))
                states.append(state)
            w = W1[:, i]
            q_levels, q = g.round(w.astype(f32), state, c % g.group)
            levels[:, c], Q[:, c] = q_levels, q
            d = Hinv1[i, i]
            losses[:, c] = (w - q) ** 2 / d**2 / 2
            err = (w - q) / d
            W1[:, i:] -= np.outer(err, Hinv1[i, i:])
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Result(g.pack(levels, states), Q, losses)


def output_error(W: np.ndarray, Q: np.ndarray, H: np.ndarray) -> float:
    """``tr((Q − W) H (Q − W)ᵀ)``: the layer's summed squared output error per token, times 2 (H = 2XᵀX/n)."""
    E = np.asarray(Q, dtype=np.float64) - np.asarray(W, dtype=np.float64)
    return float(np.sum((E @ np.asarray(H, dtype=np.float64)) * E))  # a matrix product: einsum's loop is ~50x slower


# --- Hessians from calibration text -------------------------------------------------------------------------


class _Done(Exception):
    """Raised from observe() once the last input wanted has been seen: the rest of the forward pass is skipped."""


def hessians(llama: Llama, sequences, layer: int | None = None) -> dict[str, np.ndarray]:
    """``2 XᵀX / n`` of each block matrix's input, over the token sequences (``add_batch``), float64.

    Keyed by the weight name; q/k/v get attn_q's entry, gate/up ffn_gate's. ``layer``: only that
    block's (the forward pass stops after its ffn_down).
    """
    sums: dict[str, np.ndarray] = {}
    count = 0
    wanted = {f"blk.{i}.{m}.weight" for i in range(llama.cfg.n_layer) for m in set(SHARED_INPUT.values())}
    if layer is not None:
        wanted = {n for n in wanted if n.startswith(f"blk.{layer}.")}
    last = f"blk.{layer}.ffn_down.weight" if layer is not None else None

    def observe(name: str, x: np.ndarray) -> None:
        if name in wanted:
            x = x.astype(np.float64)
            if name in sums:
                sums[name] += x.T @ x
            else:
                sums[name] = x.T @ x
        if name == last:
            raise _Done

    with one_blas_thread():
        for seq in sequences:
            try:
                llama.forward(seq, observe)
            except _Done:
                pass
            count += len(seq)
    out = {}
    for name in sorted(sums):
        i = name.split(".")[1]
        for m, src in SHARED_INPUT.items():
            if name == f"blk.{i}.{src}.weight":
                out[f"blk.{i}.{m}.weight"] = 2 * sums[name] / count
    return out


def calibration(llama: Llama, n_chunks: int, n_ctx: int | None) -> list[np.ndarray]:
    """Calibration chunks as notebook 10's imatrix uses them: held-out text, BOS-started n_ctx-token chunks."""
    n_ctx = llama.cfg.n_ctx if n_ctx is None else int(n_ctx)
    return calibrate.chunks(llama, calibrate.calibration_text(), n_ctx, n_chunks)


def quantize_model(
    src,
    qtype="Q4_0",
    *,
    n_chunks: int = 8,
    n_ctx: int | None = None,
    percdamp: float = PERCDAMP,
    blocksize: int = BLOCKSIZE,
    sequential: bool = True,
) -> dict[str, np.ndarray]:
    """GPTQ blocks of every block matrix of the llama GGUF ``src``: {name: uint8 blocks}, plus
    ``"proxy/<name>"``: [output error of GPTQ, of round-to-nearest] (``output_error`` on its Hessian).

    ``sequential``: the reference's scheme (block i's inputs through the quantized blocks < i);
    otherwise every Hessian comes from the unquantized model.
    """
    g = grid(qtype)
    llama = Llama.load(src)
    sequences = calibration(llama, n_chunks, n_ctx)
    work = Llama(llama.cfg, dict(llama.weights), llama.path)  # its block weights become GPTQ's, block by block
    out: dict[str, np.ndarray] = {}
    with one_blas_thread():
        everything = None if sequential else hessians(llama, sequences)
        for i in range(llama.cfg.n_layer):
            if sequential:
                Hs = hessians(work, sequences, i)
            else:
                Hs = {k: v for k, v in everything.items() if k.startswith(f"blk.{i}.")}
            for name, r in quantize_block(llama.weights, Hs, g.qtype, percdamp=percdamp, blocksize=blocksize).items():
                W, H = llama.weights[name], Hs[name]
                rtn = formats.dequantize(formats.quantize(W, g.qtype), g.qtype)
                out[name] = r.blocks
                out["proxy/" + name] = np.array([output_error(W, r.values, H), output_error(W, rtn, H)])
                work.weights[name] = r.values
    return out


def quantize_block(weights: dict, Hs: dict, qtype="Q4_0", **options) -> dict[str, Result]:
    """GPTQ of the matrices named in ``Hs`` ({name: H}, one transformer block's, as ``hessians`` gives them).

    Matrices that share an input share H, and GPTQ treats rows independently: q, k, v run as one
    stacked matrix, gate and up as another (the same result as one by one, with a third of the work on H).
    """
    out = {}
    for names in _shared(Hs):
        r = quantize(np.concatenate([weights[n] for n in names]), Hs[names[0]], qtype, **options)
        start = 0
        for name in names:
            rows = slice(start, start + len(weights[name]))
            start = rows.stop
            out[name] = Result(r.blocks[rows], r.values[rows], r.losses[rows])
    return out


def _shared(Hs: dict) -> list[list[str]]:
    """The names in ``Hs`` grouped by the input they read (attn_q's group holds q, k, v; ffn_gate's gate, up)."""
    groups: dict[str, list[str]] = {}
    for name in Hs:
        parts = name.split(".")
        source = ".".join(parts[:2] + [SHARED_INPUT.get(parts[2], parts[2])] + parts[3:])
        groups.setdefault(source, []).append(name)
    return list(groups.values())


def cached_hessians(src, layer: int, n_chunks: int = 8, n_ctx: int | None = None) -> dict[str, np.ndarray]:
    """``hessians`` of one block of the unquantized model ``src``, from kquant's cache (computed when missing)."""

    def compute():
        llama = Llama.load(src)
        return hessians(llama, calibration(llama, n_chunks, n_ctx), layer)

    return cache.arrays(
        "gptq-hessians",
        compute,
        src=sha256(src),
        layer=layer,
        n_chunks=n_chunks,
        n_ctx=n_ctx,
        calibration_seed=calibrate.CALIBRATION_SEED,
    )


def cached_imatrix(src, n_chunks: int = 8) -> Path:
    """Notebook 10's imatrix file of ``src`` (the same calibration text, ``n_chunks`` chunks), from kquant's cache.

    GPTQ's comparison quantizes with it: the same calibration tokens, used the imatrix way.
    """

    def make(path):
        im = calibrate.collect(
            src, calibrate.calibration_text(), n_chunks=n_chunks, dataset=calibrate.CALIBRATION_DATASET
        )
        imatrix.save(im, path)

    return cache.made(
        "imatrix",
        make,
        f"{Path(src).stem}.imatrix.gguf",
        src=sha256(src),
        n_chunks=n_chunks,
        calibration_seed=calibrate.CALIBRATION_SEED,
    )


def settings(qtype="Q4_0", **options) -> dict:
    """Everything a GPTQ file depends on, for the cache key (defaults filled in)."""
    s = {"qtype": grid(qtype).qtype.name, "n_chunks": 8, "n_ctx": None, "percdamp": PERCDAMP}
    s |= {"blocksize": BLOCKSIZE, "sequential": True, "calibration_seed": calibrate.CALIBRATION_SEED}
    s |= options
    return s


def quantize_file(src, dst, qtype="Q4_0", *, overwrite: bool = False, **options):
    """Write ``src`` with every block matrix GPTQ-quantized to ``qtype`` (Q4_0 or Q4_K), the rest as llama.cpp's
    pure mix of that type (``token_embd`` round-to-nearest, norms F32). Returns quantize_gguf's FileSummary."""
    made = quantize_model(src, qtype, **options)
    blocks = {k: v for k, v in made.items() if not k.startswith("proxy/")}
    return quantize_gguf(
        src, dst, MIXES[grid(qtype).qtype.name], pure=True, blocks=blocks, overwrite=overwrite, progress=False
    )


def cached_model(src, qtype="Q4_0", **options) -> dict[str, np.ndarray]:
    """``quantize_model``'s result from kquant's cache (computed when missing), keyed by the model's sha256."""
    s = settings(qtype, **options)
    return cache.arrays("gptq", lambda: quantize_model(src, qtype, **options), src=sha256(src), **s)


def cached_file(src, qtype="Q4_0", **options) -> Path:
    """The GPTQ file of ``src`` from kquant's cache (made when missing); its name says the type."""
    s = settings(qtype, **options)

    def make(path):
        made = cached_model(src, qtype, **options)
        blocks = {k: v for k, v in made.items() if not k.startswith("proxy/")}
        quantize_gguf(src, path, MIXES[s["qtype"]], pure=True, blocks=blocks, overwrite=True, progress=False)

    return cache.made("gptq-file", make, f"{Path(src).stem}-{s['qtype']}-gptq.gguf", src=sha256(src), **s)
