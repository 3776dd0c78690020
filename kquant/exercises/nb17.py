"""Exercises of notebook 17, a real model: which tensors can take K-quants, and re-quantization errors.

The shapes are the ones real models have (SmolLM2-135M's 576-wide matrices, Llama's 4096);
the errors are checked against ``kquant.lessons.requantize``, the code behind the notebook's table.
"""

import numpy as np

from kquant.exercises.core import Exercise, Wrong, as_bool, as_number, call
from kquant.formats import dequantize, quantize
from kquant.lessons import requantize

QK_K = 256

# (numpy shape, what it is): each case exposes one misreading of "a multiple of 256".
_SHAPES = [
    ((576, 1536), "SmolLM2's ffn_down: 576 rows of 1536"),
    ((10, 96), "10 rows of 96"),
    ((49152, 576), "SmolLM2's token_embd: 49152 rows of 576"),
    ((1536, 576), "SmolLM2's ffn_up: 1536 rows of 576"),
    ((256, 96), "256 rows of 96"),
    ((576,), "a norm of 576"),
    ((4096,), "a norm of 4096"),
    ((3, 2048), "3 rows of 2048"),
]

# What a reader may test instead of the row length, and what to say about it (in the order they are tried:
# the total first, since a shape whose rows fit has a total that fits too).
_MISREADINGS = [
    (
        lambda s: int(np.prod(s)) % QK_K == 0,
        "the total number of weights is a multiple of 256 here, but a block "
        "never spans two rows: each row must hold whole blocks of 256",
    ),
    (
        lambda s: s[0] % QK_K == 0,
        "that tests the number of rows; a block runs along a row, so the row length "
        "shape[-1] (ggml's ne[0]) must be a multiple of 256",
    ),
    (lambda s: s[-1] % 32 == 0, "32 is the block of Q4_0, Q4_1, Q5_0 and Q8_0; the K-quants use super-blocks of 256"),
]


def _check_takes(fn, rng):
    for shape, what in _SHAPES:
        label = f"takes_k_quants({shape}) ({what})"
        got = as_bool(call(fn, shape), label)
        want = shape[-1] % QK_K == 0
        if got == want:
            continue
        for misreading, message in _MISREADINGS:
            if misreading(shape) == got:
                raise Wrong(f"{label} = {got}: {message}")
        raise Wrong(f"{label} = {got}: a K-quant needs every row (the last axis) to hold whole blocks of 256 weights")
    return f"the right answer for {len(_SHAPES)} shapes, SmolLM2's 576-wide matrices included"


q1 = Exercise(
    "nb17",
    "q1",
    "takes_k_quants(shape)",
    _check_takes,
    hints=[
        "A numpy shape is (rows, row length); ggml's ne[0] is the row length, the LAST axis.",
        "return shape[-1] % 256 == 0",
    ],
    solution="""
    return shape[-1] % 256 == 0
    """,
    task="the K-quant test",
)


def _weights(shapes) -> np.ndarray:
    return np.array([int(np.prod(s)) for s in shapes], dtype=np.float64)


def _random_model(rng):
    """The matrix and norm shapes of a made-up llama: a width, a feed-forward width, a vocabulary."""
    n_embd = int(rng.choice([576, 768, 960, 1024, 2048]))
    n_ff = int(rng.choice([1536, 2560, 3072, 4096]))
    vocab = int(rng.integers(1000, 60000))
    layer = [(n_embd, n_embd), (n_embd // 3, n_embd), (n_ff, n_embd), (n_ff, n_embd), (n_embd, n_ff), (n_embd,)]
    return [(vocab, n_embd)] + layer * int(rng.integers(1, 4)) + [(n_embd,)]


def _check_share(fn, rng):
    smol = [(49152, 576)] + [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
    cases = [smol] + [_random_model(rng) for _ in range(5)]
    for k, shapes in enumerate(cases):
        label = f"k_quant_share(<{len(shapes)} shapes>) (case {k + 1})"
        got = as_number(call(fn, shapes), label)
        n = _weights(shapes)
        fits = np.array([s[-1] % QK_K == 0 for s in shapes])
        want = float(n[fits].sum() / n.sum())
        if np.isclose(got, want, rtol=1e-9, atol=1e-12):
            continue
        if np.isclose(got, fits.mean(), rtol=1e-9):
            raise Wrong(f"{label} = {got:.4g}: that is the share of tensors; count weights (np.prod of each shape)")
        if np.isclose(got, 100 * want, rtol=1e-9):
            raise Wrong(f"{label} = {got:.4g}: that is a percentage; return the share, between 0 and 1")
        if np.isclose(got, 1 - want, rtol=1e-9):
            raise Wrong(f"{label} = {got:.4g}: that is the share that CANNOT take K-quants (the fallbacks)")
        rows = np.array([s[0] % QK_K == 0 for s in shapes])
        if np.isclose(got, n[rows].sum() / n.sum(), rtol=1e-9):
            raise Wrong(f"{label} = {got:.4g}: test the row length shape[-1], not the number of rows shape[0]")
        raise Wrong(f"{label} = {got:.4g}: that is not the weights in 256-multiple rows over all the weights")
    return "the share of weights that can take K-quants, for SmolLM2's layer and 5 made-up models"


q2 = Exercise(
    "nb17",
    "q2",
    "k_quant_share(shapes)",
    _check_share,
    hints=[
        "A tensor of shape s has np.prod(s) weights; it can take K-quants when s[-1] % 256 == 0.",
        "Sum the weights of the tensors that can, and divide by the sum of all the weights.",
    ],
    solution="""
    sizes = [int(np.prod(s)) for s in shapes]
    fit = sum(n for n, s in zip(sizes, shapes) if s[-1] % 256 == 0)
    return fit / sum(sizes)
    """,
    task="the share of weights",
)


def _check_roundtrip(fn, rng):
    for k, qtype in enumerate(["Q4_0", "Q4_K", "Q8_0", "Q5_1", "Q6_K", "Q2_K"]):
        x = rng.standard_normal((int(rng.integers(1, 4)), 256 * int(rng.integers(1, 3)))) * rng.uniform(0.01, 2.0)
        x = x.astype(np.float32)
        label = f"roundtrip_error(<x {x.shape}>, {qtype!r}) (case {k + 1})"
        got = as_number(call(fn, x, qtype), label)
        want = requantize.relative_error(x, qtype)
        if np.isclose(got, want, rtol=1e-4):
            continue
        err = (dequantize(quantize(x, qtype), qtype) - x).astype(np.float64)
        if np.isclose(got, np.sqrt(np.mean(err**2)), rtol=1e-4):
            raise Wrong(f"{label} = {got:.4g}: that is the RMS error itself; divide by the RMS of x (or ‖x‖)")
        if np.isclose(got, want**2, rtol=1e-4):
            raise Wrong(f"{label} = {got:.4g}: that is the squared ratio; take the square root of the sums' ratio")
        if np.isclose(got, np.abs(err).max() / np.abs(x).max(), rtol=1e-4) or np.isclose(
            got, np.abs(err).max(), rtol=1e-4
        ):
            raise Wrong(f"{label} = {got:.4g}: that is the largest error; the table uses the root-mean-square")
        if np.isclose(got, abs(err.mean()) / np.sqrt(np.mean(x.astype(np.float64) ** 2)), rtol=1e-4):
            raise Wrong(f"{label} = {got:.4g}: signed errors cancel in a mean; square them first")
        raise Wrong(f"{label} = {got:.4g}: expected ‖dequantize(quantize(x)) − x‖ / ‖x‖")
    return "the relative RMS error of 6 formats on random weights"


q3 = Exercise(
    "nb17",
    "q3",
    "roundtrip_error(x, qtype)",
    _check_roundtrip,
    hints=[
        "y = kquant.dequantize(kquant.quantize(x, qtype), qtype) is what the format gives back.",
        "np.linalg.norm(y - x) / np.linalg.norm(x)",
    ],
    solution="""
    y = kquant.dequantize(kquant.quantize(x, qtype), qtype)
    return float(np.linalg.norm(y - x) / np.linalg.norm(x))
    """,
    forbidden=(requantize.relative_error,),
    task="the relative error",
)
