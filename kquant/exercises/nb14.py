"""Exercises of notebook 14, NF4 and QLoRA: NF4's bits per weight, LoRA's gradient for B, the merge."""

import numpy as np

from kquant.exercises.core import Exercise, Wrong, as_array, as_number, call
from kquant.methods import lora


def _check_nf4_bpw(fn, rng):
    cases = [(64, 256), (64, 256), (128, 256), (32, 256), (64, 128)]
    for k, (blocksize, blocksize2) in enumerate(cases):
        what = f"nf4_bits_per_weight({blocksize}, {blocksize2}) (case {k + 1})"
        got = as_number(call(fn, blocksize, blocksize2), what)
        want = 4 + 8 / blocksize + 32 / (blocksize * blocksize2)
        if abs(got - want) < 1e-9:
            continue
        if abs(got - 4) < 1e-9:
            raise Wrong(f"{what} = 4: the codes are 4 bits, but every block also stores its scale")
        if abs(got - (4 + 32 / blocksize)) < 1e-9:
            raise Wrong(
                f"{what}: that is a float32 scale per block, without double quantization; the scales are stored "
                "in 8 bits, with one float32 per group of scales"
            )
        if abs(got - (4 + 8 / blocksize)) < 1e-9:
            raise Wrong(f"{what}: the 8-bit scales need their own float32 scale, one per {blocksize2} blocks")
        if abs(got - (4 + 8 / blocksize + 32 / blocksize2)) < 1e-9:
            raise Wrong(
                f"{what}: one float32 per {blocksize2} *blocks* is shared by {blocksize * blocksize2} weights, "
                f"not {blocksize2}"
            )
        raise Wrong(f"{what} is not the bits of the codes, the 8-bit scales and the float32 second-level scales")
    return "4-bit codes + 8-bit block scales + a float32 per group of scales, for 5 layouts"


q1 = Exercise(
    "nb14",
    "q1",
    "nf4_bits_per_weight(blocksize, blocksize2)",
    _check_nf4_bpw,
    hints=[
        "Count the bits a block of `blocksize` weights stores, then divide by `blocksize`.",
        "Each weight: 4 bits. Each block: one 8-bit scale code. Each group of `blocksize2` blocks: one float32 "
        "(32 bits).",
    ],
    solution="""
    return 4 + 8 / blocksize + 32 / (blocksize * blocksize2)
    """,
)


def _lora_case(rng, n, n_in, n_out, r):
    x = rng.standard_normal((n, n_in))
    A = rng.standard_normal((r, n_in)) / np.sqrt(n_in)
    dy = rng.standard_normal((n, n_out))
    return x, A, dy, float(rng.choice([0.5, 2.0, 4.0]))


def _check_grad_b(fn, rng):
    for k in range(5):
        n, n_in, n_out, r = int(rng.integers(5, 20)), int(rng.integers(20, 40)), int(rng.integers(41, 60)), 4
        x, A, dy, scale = _lora_case(rng, n, n_in, n_out, r)
        what = f"grad_B(<x {x.shape}>, <A {A.shape}>, <dy {dy.shape}>, scale={scale}) (case {k + 1})"
        raw = call(fn, x.copy(), A.copy(), dy.copy(), scale)
        if np.shape(raw) == (n_out, n_in):
            raise Wrong(
                f"{what} has W's shape {(n_out, n_in)}: that is the full matrix's gradient; LoRA only needs B's, "
                f"({n_out}, {r}), which goes through x Aᵀ"
            )
        if np.shape(raw) == (r, n_out):
            raise Wrong(f"{what} has shape {(r, n_out)}: B is ({n_out}, {r}), so its gradient is too (transpose)")
        got = as_array(raw, (n_out, r), what)
        want = scale * dy.T @ (x @ A.T)
        if np.allclose(got, want, rtol=1e-6, atol=1e-9):
            continue
        if np.allclose(got, want / scale, rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: the forward pass multiplies B A x by scale = α/r, so B's gradient has it too")
        if np.allclose(got, want / n, rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: dy already holds the loss's gradient for each token; sum over tokens, do not average")
        raise Wrong(f"{what} is not the chain rule through y = scale · (x Aᵀ) Bᵀ")
    return "B's gradient, scale · dyᵀ (x Aᵀ), on 5 random layers"


q2 = Exercise(
    "nb14",
    "q2",
    "grad_B(x, A, dy, scale)",
    _check_grad_b,
    hints=[
        "The adapter's output is y = scale · t Bᵀ with t = x Aᵀ (one row per token, r columns).",
        "For y = t Bᵀ the gradient of B is dyᵀ t: shape (n_out, n) @ (n, r) = (n_out, r). Keep the scale.",
    ],
    solution="""
    return scale * dy.T @ (x @ A.T)
    """,
)


def _check_merge(fn, rng):
    for k in range(5):
        n_in, n_out, r = int(rng.integers(20, 40)), int(rng.integers(41, 60)), int(rng.choice([2, 4, 8]))
        alpha = float(rng.choice([8.0, 16.0, 32.0]))
        W = rng.standard_normal((n_out, n_in))
        A = rng.standard_normal((r, n_in))
        B = rng.standard_normal((n_out, r))
        what = f"merge(<W {W.shape}>, <A {A.shape}>, <B {B.shape}>, alpha={alpha}, r={r}) (case {k + 1})"
        got = as_array(call(fn, W.copy(), A.copy(), B.copy(), alpha, r), W.shape, what)
        want = W + alpha / r * B @ A
        if np.allclose(got, want, rtol=1e-6, atol=1e-9):
            continue
        if np.allclose(got, alpha / r * B @ A, rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: that is the adapter alone; the merged matrix keeps the frozen W and adds to it")
        if np.allclose(got, W + B @ A, rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: the adapter's output is scaled by α/r in training; the merge must scale it too")
        if np.allclose(got, W + alpha * B @ A, rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: the scale is α/r, not α")
        if np.allclose(got, W + r / alpha * B @ A, rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: the scale is α/r, not r/α")
        raise Wrong(f"{what} is not W + (α/r)·B A")
    return "W + (α/r)·B A on 5 random layers"


q3 = Exercise(
    "nb14",
    "q3",
    "merge(W, A, B, alpha, r)",
    _check_merge,
    hints=[
        "Training computed W x + (α/r)·B A x for every input x: which single matrix gives that?",
        "B is (n_out, r) and A is (r, n_in): B @ A has W's shape. Add it to W, scaled by alpha / r.",
    ],
    solution="""
    return W + alpha / r * B @ A
    """,
    forbidden=(lora.merge, lora.LoRA.delta),
)
