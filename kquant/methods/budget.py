"""Measured bit allocation: EXL2's idea (measure every choice, then spend a bit budget) written as a normal GGUF.

llama.cpp's mixes (Q4_K_M …) are hand-written rules: attn_v and ffn_down of some layers get Q6_K,
the rest Q4_K. ExLlamaV2's EXL2 format (turboderp/exllamav2) instead *measures*: its
``conversion/measure.py`` (``measure_quant``) quantizes every module at every candidate setting
and records its error on calibration activations (``1 - accuracy`` of the module's output) and
its cost (``total_bits``); then ``conversion/optimize.py`` (``optimize``) searches, by simulated
annealing over those per-module options (``ext_c.sim_anneal``), for the choice that fits
``numel × target_bpw`` bits with the least error, which is how EXL2 hits fractional budgets such
as 4.65 bpw. Two honest differences: EXL2 mixes bit widths *inside* a matrix (groups of columns
at different widths, its ``qparams``), and its unit of choice is a layer's attention or MLP block;
here the unit is one whole matrix and the options are ggml's own types (Q2_K, Q3_K, Q4_K, Q5_K,
Q6_K, Q8_0), so the result is a plain GGUF, written with llama-quantize's ``--tensor-type``
overrides (``quantize_gguf(…, overrides={regex: type})``), that any llama.cpp runs.

    >>> m = measure(hub.bundled())                          # every matrix × every type, cached
    >>> a = allocate(m, 4.65, cost="kl")                    # at most 4.65 bits per weight, whole file
    >>> write(hub.bundled(), "tiny-4.65.gguf", a)             # quantize_gguf(…, overrides=a.overrides())

**Measuring** (``measure``). For each matrix W and type t, with Ŵ = dequantize(quantize(W, t)):

* ``bits``: the exact size of the quantized tensor (rows × blocks per row × the type's block
  bytes from ``GGML_QUANT_SIZES``, × 8);
* ``output_error``: ‖X Ŵᵀ − X Wᵀ‖² / ‖X Wᵀ‖² on calibration activations X (what the F16
  model feeds that matrix, through ``Llama``'s ``observe`` hook): the matrix's own error, EXL2's
  kind of measurement;
* ``kl``: KL(F16 ‖ the model with only that matrix quantized), nats per token, on calibration
  tokens (never the evaluation text), from ``kquant.model.forward`` with one weight swapped; the
  F16 logits are computed once and reused.

**The additivity assumption.** Allocation adds the costs of the chosen types over matrices. For KL
that assumes the damage of several quantized matrices is the sum of their damages alone: true to
first order when errors are small and independent, and checked (``additivity``) on whole
allocations: the predicted sum against the KL of the model with all of them quantized at once.

**Allocating** (``allocate``): minimise Σᵢ cost[i, tᵢ] subject to Σᵢ bits[i, tᵢ] + fixed ≤
budget × n_weights, a multiple-choice knapsack. ``method="greedy"`` is the convexified greedy
(equivalently, a Lagrangian sweep over the price of a bit): each matrix keeps only the types on the
lower convex hull of its (bits, cost) points; every matrix starts at its cheapest hull type; the
upgrades (one hull step of one matrix) are taken in order of cost saved per bit, largest first,
while they fit. Whenever the upgrades it took are the first ones in that order (none passed over
for not fitting), its choice minimises cost + λ·bits for λ the price of the last step, and such a
minimiser is optimal among all choices using no more bits (Everett's theorem of Lagrange
multipliers, 1963). When an upgrade does not fit and smaller ones after it are taken instead, it
can miss the optimum (tests/test_budget.py has a three-matrix case), and a type off the hull is
never chosen even where the exact optimum would use it.
``method="exact"`` solves the knapsack exactly by dynamic programming over the budget in units of
the greatest common divisor of the sizes (the tiny model's layers: 2,048 bits, about 15,000
states; its odd-sized embedding is tried type by type beside the table), to show how far the
greedy is from the optimum.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from kquant.blas import one_blas_thread  # the model's small matrices run faster on one BLAS thread
from kquant.errors import KQuantError
from kquant.formats import dequantize, quantize
from kquant.gguf.summary import sha256
from kquant.model import cache, calibrate
from kquant.model.forward import Llama
from kquant.model.scores import kl_per_position
from kquant.quantize_file import plan_gguf, quantize_gguf

T = GGMLQuantizationType

# The candidate types, fewest bits first: the K family and Q8_0.
TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0")
COSTS = ("kl", "output_error")


def tensor_bits(shape, type_name: str) -> int:
    """Exact bits of a (rows, cols) tensor stored as ``type_name``: rows × cols/block × block bytes × 8."""
    block, nbytes = GGML_QUANT_SIZES[T[type_name]]
    rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
    if cols % block:
        raise KQuantError(f"rows of {cols} weights are not a multiple of {type_name}'s block of {block}")
    return rows * (cols // block) * nbytes * 8


@dataclass
class Measurement:
    """Every matrix × every type: bits and the two costs; plus the tensors allocation leaves alone."""

    names: list[str]  # the matrices, in the file's order
    types: tuple[str, ...]
    n_weights: np.ndarray  # (n_matrices,)
    bits: np.ndarray  # (n_matrices, n_types) int64, exact
    kl: np.ndarray  # (n_matrices, n_types) nats per token
    output_error: np.ndarray  # (n_matrices, n_types) relative squared error of the matrix's output
    fixed_bits: int  # bits of the tensors no type is chosen for (the F32 norms)
    fixed_weights: int

    @property
    def total_weights(self) -> int:
        return int(self.n_weights.sum()) + self.fixed_weights

    def cost(self, which: str) -> np.ndarray:
        if which not in COSTS:
            raise KQuantError(f"cost must be one of {', '.join(COSTS)}, got {which!r}")
        return getattr(self, which)

    def budget_bits(self, bpw: float) -> int:
        """Bits the chosen types may take at ``bpw`` bits per weight over the whole file (fixed tensors included)."""
        return math.floor(bpw * self.total_weights + 1e-6) - self.fixed_bits


def measure(path, *, n_ctx: int = 128, n_chunks: int = 1) -> Measurement:
    """Measure every 2-D tensor of a llama GGUF at every type in ``TYPES`` (cached, keyed by the file's sha256).

    Calibration tokens: ``n_chunks`` chunks of ``n_ctx`` tokens of ``calibrate.calibration_text()``
    (documents from a seed of their own, never the evaluation text). Cost: one forward pass per
    chunk for every (matrix, type), 342 for the bundled model, each from the matrix's own layer on
    (``_tail``): about 9 s of one core.
    """
    path = Path(path)
    if n_ctx < 16 or n_chunks < 1:
        raise KQuantError("measure needs n_ctx >= 16 and n_chunks >= 1")
    plan = plan_gguf(path, "Q8_0")  # which tensors are matrices, and their shapes
    names = [c.name for c in plan if len(c.shape) == 2]
    fixed = [c for c in plan if len(c.shape) != 2]
    fixed_bits = sum(math.prod(c.shape) * 8 * GGML_QUANT_SIZES[c.type][1] // GGML_QUANT_SIZES[c.type][0] for c in fixed)
    shapes = {c.name: c.shape for c in plan}

    def compute():
        model = Llama.load(path)
        seqs = calibrate.chunks(model, calibrate.calibration_text(), n_ctx, n_chunks)
        inputs: dict[str, list] = {}
        runs = [model.forward(s, observe=lambda n, x: inputs.setdefault(n, []).append(x)) for s in seqs]
        ref = [r.logits for r in runs]
        kl = np.zeros((len(names), len(TYPES)))
        err = np.zeros_like(kl)
        for i, name in enumerate(names):
            w = model.weights[name]
            x = np.concatenate(inputs[name])
            y = x @ w.T
            layer = int(name.split(".")[1]) if name.startswith("blk.") else 0
            # A matrix of layer L changes nothing before L: run layers L… only, from the F16 stream entering L.
            streams = [r.layers[layer - 1] if layer else None for r in runs]
            for j, t in enumerate(TYPES):
                wq = dequantize(quantize(w, t), t).reshape(w.shape)
                err[i, j] = float(np.sum((x @ wq.T - y) ** 2) / np.sum(y * y))
                model.weights[name] = wq
                tails = [_tail(model, layer, x_in, s) for x_in, s in zip(streams, seqs)]
                kl[i, j] = np.mean(np.concatenate([kl_per_position(r, m.logits(s)) for r, (m, s) in zip(ref, tails)]))
            model.weights[name] = w
        return {"kl": np.maximum(kl, 0.0), "output_error": err}

    def on_one_thread():
        with one_blas_thread():
            return compute()

    got = cache.arrays("budget.measure", on_one_thread, model=sha256(path), types=TYPES, n_ctx=n_ctx, n_chunks=n_chunks)
    return Measurement(
        names=names,
        types=TYPES,
        n_weights=np.array([math.prod(shapes[n]) for n in names], dtype=np.int64),
        bits=np.array([[tensor_bits(shapes[n], t) for t in TYPES] for n in names], dtype=np.int64),
        kl=got["kl"],
        output_error=got["output_error"],
        fixed_bits=int(fixed_bits),
        fixed_weights=sum(math.prod(c.shape) for c in fixed),
    )


def _tail(model: Llama, layer: int, stream, tokens):
    """(model, tokens) computing ``model``'s logits from ``layer`` on, given the F16 residual stream entering it.

    Layers 0 … layer-1 are the same with or without the quantized matrix, so they are not run again:
    a model of the remaining layers whose embedding *table* is that stream, one row per position,
    read with tokens 0, 1, …, n-1, gives the same logits as the whole model (same positions, so the
    same RoPE), about half the work on average. Build it after swapping a matrix in: it takes the
    model's arrays as they are then. The output matmul keeps the real (tied) embedding as output.weight.
    """
    if stream is None:  # layer 0, or the embedding itself (it is also the input lookup): the whole model
        return model, tokens
    w = model.weights
    kept = {k: v for k, v in w.items() if not k.startswith("blk.")}
    for k, v in w.items():
        if k.startswith("blk.") and int(k.split(".")[1]) >= layer:
            kept[f"blk.{int(k.split('.')[1]) - layer}.{k.split('.', 2)[2]}"] = v
    kept.setdefault("output.weight", w["token_embd.weight"])
    kept["token_embd.weight"] = stream
    cfg = dataclasses.replace(model.cfg, n_layer=model.cfg.n_layer - layer, n_vocab=len(stream))
    return Llama(cfg, kept), np.arange(len(stream))


# --- allocation ------------------------------------------------------------------------------


def lower_hull(bits: np.ndarray, cost: np.ndarray) -> list[int]:
    """Indices of one matrix's options on the lower convex hull of (bits, cost), fewest bits first.

    An option costing more than a smaller one (dominated) or lying above the chord of its
    neighbours is never the greedy's choice: spending bits on it buys less than its neighbours do.
    """
    order = sorted(range(len(bits)), key=lambda j: (bits[j], cost[j]))
    hull: list[int] = []
    for j in order:
        if hull and (bits[j] == bits[hull[-1]] or cost[j] >= cost[hull[-1]]):
            continue  # same size but not cheaper, or more bits for no less cost
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is above the chord a -> j: slope(a, b) > slope(a, j) (a point on the chord stays: a finer step)
            if (cost[b] - cost[a]) * (bits[j] - bits[a]) > (cost[j] - cost[a]) * (bits[b] - bits[a]):
                hull.pop()
            else:
                break
        hull.append(j)
    return hull


def greedy(bits, cost, budget: int) -> np.ndarray:
    """Convexified greedy for min Σ cost[i, c_i] s.t. Σ bits[i, c_i] <= budget: one chosen column per row."""
    bits, cost = _check_problem(bits, cost)
    hulls = [lower_hull(b, c) for b, c in zip(bits, cost)]
    choice = np.array([h[0] for h in hulls])
    used = int(bits[np.arange(len(bits)), choice].sum())
    if used > budget:
        raise KQuantError(f"even the smallest type everywhere takes {used} bits, more than the budget of {budget}")
    steps = []  # (cost saved per bit, matrix, hull position)
    for i, h in enumerate(hulls):
        for k in range(1, len(h)):
            db, dc = bits[i, h[k]] - bits[i, h[k - 1]], cost[i, h[k]] - cost[i, h[k - 1]]
            steps.append((-dc / db, i, k))
    steps.sort(key=lambda s: (-s[0], s[1], s[2]))  # on the hull a matrix's own steps come out in order
    blocked = set()
    for _, i, k in steps:
        if i in blocked:
            continue
        extra = int(bits[i, hulls[i][k]] - bits[i, hulls[i][k - 1]])
        if used + extra <= budget:
            choice[i], used = hulls[i][k], used + extra
        else:
            blocked.add(i)  # its later steps need this one first
    return choice


def exact(bits, cost, budget: int, max_states: int = 2_000_000) -> np.ndarray:
    """The optimum of the same problem: dynamic programming over the budget, in units of the sizes' gcd.

    A matrix whose sizes share only a small gcd with the rest (the bundled model's 958-row
    embedding) would make the unit tiny and the table huge; such matrices are set aside, each
    combination of their types tried (6 for one matrix), and the table of the others looked up
    for the bits left over. Still exact: every combination is covered.
    """
    bits, cost = _check_problem(bits, cost)
    if bits.min(axis=1).sum() > budget:
        raise KQuantError(f"even the smallest type everywhere takes {bits.min(axis=1).sum()} bits, over {budget}")
    row_gcd = np.array([reduce(math.gcd, row.tolist()) for row in bits])
    n_types = bits.shape[1]

    def work(u):  # table cells plus combinations tried, for the unit u
        return (budget // u) * int((row_gcd % u == 0).sum()) + n_types ** int((row_gcd % u != 0).sum())

    unit = min({reduce(math.gcd, row_gcd[row_gcd % d == 0].tolist()) for d in set(row_gcd.tolist())}, key=work)
    main = np.flatnonzero(row_gcd % unit == 0)
    aside = np.flatnonzero(row_gcd % unit != 0)
    n = budget // unit
    if n + 1 > max_states or n_types ** len(aside) > max_states:
        raise KQuantError(f"{n + 1} states for the exact allocation: too many; use method='greedy'")
    best, picks = _table(bits[main] // unit, cost[main], n)
    choice = np.zeros(len(bits), dtype=int)
    best_total, best_combo = np.inf, None
    for combo in itertools.product(range(n_types), repeat=len(aside)):
        left = budget - int(bits[aside, combo].sum()) if len(aside) else budget
        if left < 0 or not np.isfinite(best[left // unit]):
            continue
        total = best[left // unit] + (float(cost[aside, combo].sum()) if len(aside) else 0.0)
        if total < best_total:
            best_total, best_combo = total, combo
    choice[aside] = best_combo
    u = (budget - int(bits[aside, best_combo].sum())) // unit if len(aside) else n
    for k in range(len(main) - 1, -1, -1):
        choice[main[k]] = picks[k, u]
        u -= int(bits[main[k], choice[main[k]]] // unit)
    return choice


def _table(size: np.ndarray, cost: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """best[u]: least summed cost of these matrices within u units; picks[i, u]: matrix i's option there."""
    best = np.zeros(n + 1)
    picks = np.zeros((len(size), n + 1), dtype=np.int16)
    for i in range(len(size)):
        new = np.full(n + 1, np.inf)
        for j in range(size.shape[1]):
            s = int(size[i, j])
            if s > n:
                continue
            cand = np.full(n + 1, np.inf)
            cand[s:] = best[: n + 1 - s] + cost[i, j]
            better = cand < new
            new[better], picks[i, better] = cand[better], j
        best = new
    return best, picks


def _check_problem(bits, cost):
    bits, cost = np.asarray(bits, dtype=np.int64), np.asarray(cost, dtype=np.float64)
    if bits.ndim != 2 or bits.shape != cost.shape or bits.size == 0:
        raise KQuantError("bits and cost must be two (n_matrices, n_types) arrays of the same shape")
    if (bits <= 0).any() or not np.isfinite(cost).all():
        raise KQuantError("bits must be positive and costs finite")
    return bits, cost


@dataclass
class Allocation:
    """One type per matrix, its bits and its predicted (summed) cost."""

    measurement: Measurement
    choice: np.ndarray  # index into measurement.types, per matrix
    cost_name: str
    budget_bpw: float

    @property
    def types(self) -> dict[str, str]:
        return {n: self.measurement.types[j] for n, j in zip(self.measurement.names, self.choice)}

    @property
    def bits(self) -> int:
        m = self.measurement
        return int(m.bits[np.arange(len(m.names)), self.choice].sum()) + m.fixed_bits

    @property
    def bpw(self) -> float:
        """Bits per weight of the whole file's tensor data (what ``evaluate.bits_per_weight`` reads)."""
        return self.bits / self.measurement.total_weights

    def predicted(self, which: str | None = None) -> float:
        """The summed cost (the additivity assumption) of ``which`` cost, by default the one allocated for."""
        c = self.measurement.cost(which or self.cost_name)
        return float(c[np.arange(len(c)), self.choice].sum())

    def overrides(self) -> dict[str, str]:
        """llama-quantize ``--tensor-type`` overrides, one anchored regex per matrix."""
        return {f"^{re.escape(n)}$": t for n, t in self.types.items()}


def allocate(m: Measurement, bpw: float, cost: str = "kl", method: str = "greedy") -> Allocation:
    """The types that minimise the summed ``cost`` within ``bpw`` bits per weight of the whole file."""
    if method not in ("greedy", "exact"):
        raise KQuantError(f"method must be 'greedy' or 'exact', got {method!r}")
    if not isinstance(bpw, (int, float)) or not math.isfinite(bpw) or bpw <= 0:
        raise KQuantError(f"the budget must be a positive number of bits per weight, got {bpw!r}")
    c = m.cost(cost)
    solve = greedy if method == "greedy" else exact
    a = Allocation(m, solve(m.bits, c, m.budget_bits(bpw)), cost, bpw)
    if a.bits > bpw * m.total_weights + 1e-6:  # cannot happen: both solvers respect the budget; a guard, not a test
        raise RuntimeError(f"allocation of {a.bits} bits exceeds {bpw} bpw")
    return a


def write(src, dst, a: Allocation, *, overwrite: bool = False) -> Path:
    """Write the allocation as a GGUF (llama-quantize's --tensor-type overrides); check its bpw is within budget.

    The mix named is Q4_K_M (its general.file_type); every matrix matches an override, so the mix's own
    rules decide nothing but the 1-D tensors, which stay F32 in every mix.
    """
    summary = quantize_gguf(src, dst, "Q4_K_M", overrides=a.overrides(), overwrite=overwrite, progress=False)
    if summary.bpw > a.budget_bpw + 1e-9:
        raise KQuantError(f"{dst} has {summary.bpw:.4f} bpw, over the budget of {a.budget_bpw}")
    return Path(dst)


def cached_file(src, a: Allocation, name: str) -> Path:
    """``write`` through kquant's cache, keyed by the source's content and the chosen types."""
    return cache.made(
        "budget.file",
        lambda p: write(src, p, a, overwrite=True),
        name,
        src=sha256(src),
        types=sorted(a.types.items()),
    )


def additivity(path, a: Allocation, *, n_ctx: int = 128, n_chunks: int = 1) -> tuple[float, float]:
    """(predicted Σ single-matrix KLs, measured KL of the model with every chosen type at once), numpy, cached."""

    def compute():
        model = Llama.load(path)
        seqs = calibrate.chunks(model, calibrate.calibration_text(), n_ctx, n_chunks)
        ref = [model.logits(s) for s in seqs]
        for name, t in a.types.items():
            w = model.weights[name]
            model.weights[name] = dequantize(quantize(w, t), t).reshape(w.shape)
        kl = np.mean(np.concatenate([kl_per_position(r, model.logits(s)) for r, s in zip(ref, seqs)]))
        return {"kl": np.array(kl)}

    def on_one_thread():
        with one_blas_thread():
            return compute()

    got = cache.arrays(
        "budget.additivity",
        on_one_thread,
        model=sha256(path),
        types=sorted(a.types.items()),
        n_ctx=n_ctx,
        n_chunks=n_chunks,
    )
    return a.predicted("kl"), float(got["kl"])
