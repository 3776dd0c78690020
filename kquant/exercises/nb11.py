"""Exercises of notebook 11, GPTQ: the Hessian of a layer, one column's update, the damped inverse factor."""

import numpy as np

from kquant.exercises.core import Exercise, Wrong, as_array, call
from kquant.methods.gptq import inverse_factor


def _inputs(rng, n: int, cols: int) -> np.ndarray:
    """Correlated activations with an offset, so XᵀX, XXᵀ and the covariance all differ."""
    mix = rng.standard_normal((cols, cols)) / np.sqrt(cols) + np.eye(cols)
    return (rng.standard_normal((n, cols)) @ mix + rng.normal()).astype(np.float32)


def _check_hessian(fn, rng):
    for k in range(5):
        n, cols = int(rng.integers(20, 90)), int(rng.integers(4, 16))
        x = _inputs(rng, n, cols)
        what = f"hessian(<{n} tokens × {cols} columns>) (case {k + 1})"
        raw = call(fn, x.copy())
        if np.shape(raw) == (n, n):
            raise Wrong(f"{what} is ({n}, {n}), one entry per pair of tokens: H pairs input columns, XᵀX, not XXᵀ")
        got = as_array(raw, (cols, cols), what)
        x64 = x.astype(np.float64)
        want = 2 * x64.T @ x64 / n
        if np.allclose(got, want, rtol=1e-5):
            continue
        if np.allclose(got, want / 2, rtol=1e-5):
            raise Wrong(f"{what}: that is XᵀX / n; the second derivative of the squared error brings a factor 2")
        if np.allclose(got, want * n, rtol=1e-5) or np.allclose(got, want * n / 2, rtol=1e-5):
            raise Wrong(f"{what}: that is a sum over tokens; divide by the token count, so H does not grow with it")
        if np.allclose(got, 2 * np.cov(x64, rowvar=False, bias=True), rtol=1e-5):
            raise Wrong(
                f"{what}: that subtracts the mean (a covariance); the layer multiplies x itself, offset included"
            )
        if np.allclose(np.diag(got), np.diag(want), rtol=1e-5):
            raise Wrong(f"{what}: the diagonal is right but not the rest: every pair of columns j, k gets Σ x_j x_k")
        raise Wrong(f"{what} differs from 2·XᵀX / n")
    return "2·XᵀX/n for 5 batches of correlated inputs"


q1 = Exercise(
    "nb11",
    "q1",
    "hessian(x)",
    _check_hessian,
    hints=[
        "x has one row per token; H has one row and one column per input column of the matrix.",
        "The layer's squared output error is Σ_tokens ((ŵ − w)·x)²; its second derivative in ŵ is 2 Σ x xᵀ. "
        "Average over the tokens.",
    ],
    solution="""
    x = x.astype(np.float64)
    return 2 * x.T @ x / len(x)
    """,
)


def _check_column_step(fn, rng):
    for k in range(5):
        rows, cols = int(rng.integers(2, 10)), int(rng.integers(3, 12))
        U = inverse_factor(_spd(rng, cols), 0.01)[0]
        w = rng.standard_normal((rows, cols))
        q = np.round(w[:, 0] * 4) / 4  # column 0 on a grid of step 1/4
        what = f"column_step(<w {rows}×{cols}>, <q ({rows},)>, <u ({cols},)>) (case {k + 1})"
        raw = call(fn, w.copy(), q.copy(), U[0].copy())
        if np.shape(raw) == (rows, cols - 1):
            raise Wrong(
                f"{what} has shape {(rows, cols - 1)}: return the whole block, column 0 included (it becomes q)"
            )
        got = as_array(raw, (rows, cols), what)
        err = (w[:, 0] - q) / U[0, 0]
        want = w - np.outer(err, U[0])
        if np.allclose(got, want, rtol=1e-6, atol=1e-9):
            continue
        if np.allclose(got, w - np.outer(w[:, 0] - q, U[0]), rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: divide the rounding error by u[0], the diagonal of the factor, first")
        if np.allclose(got, w + np.outer(err, U[0]), rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: the sign is reversed: the later columns move to cancel the error, w − e·u")
        if np.allclose(got[:, 1:], want[:, 1:], rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: the later columns are right; column 0 must come out as q itself (e·u[0] = w − q)")
        if np.allclose(got, w, rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what} returned w unchanged: subtract the error, spread by u, from every column")
        raise Wrong(f"{what} is not w − outer((w[:, 0] − q) / u[0], u)")
    return "one GPTQ column step on 5 random blocks"


q2 = Exercise(
    "nb11",
    "q2",
    "column_step(w, q, u)",
    _check_column_step,
    hints=[
        "e = (w[:, 0] − q) / u[0] is column 0's error, scaled by the diagonal of the inverse factor.",
        "Every column j of the block moves by −e · u[j]: w − np.outer(e, u). Column 0 then equals q.",
    ],
    solution="""
    e = (w[:, 0] - q) / u[0]
    return w - np.outer(e, u)
    """,
)


def _spd(rng, cols: int) -> np.ndarray:
    x = _inputs(rng, 4 * cols, cols).astype(np.float64)
    return 2 * x.T @ x / len(x)


def _check_inverse_factor(fn, rng):
    for k in range(5):
        cols = int(rng.integers(4, 12))
        H = _spd(rng, cols)
        percdamp = float(rng.choice([0.01, 0.1, 0.5]))
        what = f"damped_inverse_factor(<H {cols}×{cols}>, percdamp={percdamp}) (case {k + 1})"
        got = as_array(call(fn, H.copy(), percdamp), (cols, cols), what)
        want = inverse_factor(H, percdamp)[0]
        if np.allclose(got, want, rtol=1e-6, atol=1e-9):
            continue
        if np.allclose(got, want.T, rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what} is lower triangular: GPTQ needs the upper factor U with H⁻¹ = UᵀU (row i: column i's)")
        damped = H + percdamp * np.mean(np.diag(H)) * np.eye(cols)
        if np.allclose(got, np.linalg.cholesky(damped).T, rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: that factors H itself; GPTQ factors the inverse, H⁻¹")
        raw = H + percdamp * np.eye(cols)
        if np.allclose(got, np.linalg.cholesky(np.linalg.inv(raw)).T, rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: the damping is percdamp times the MEAN of H's diagonal, not percdamp itself")
        if np.allclose(got, np.linalg.cholesky(np.linalg.inv(H)).T, rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: no damping was added; add percdamp · mean(diag H) to the diagonal first")
        if np.allclose(got, np.linalg.inv(np.linalg.cholesky(damped)), rtol=1e-6, atol=1e-9):
            raise Wrong(f"{what}: that is L⁻¹ (lower); GPTQ takes the upper Cholesky factor of the inverse")
        raise Wrong(f"{what} is not the upper Cholesky factor of (H + percdamp·mean(diag H)·I)⁻¹")
    return "the damped inverse factor of 5 Hessians, three damping levels"


q3 = Exercise(
    "nb11",
    "q3",
    "damped_inverse_factor(H, percdamp)",
    _check_inverse_factor,
    hints=[
        "Three steps: damp (add percdamp · mean of the diagonal to the diagonal), invert, factor.",
        "np.linalg.cholesky gives the LOWER factor L with A = L Lᵀ; its transpose is the upper U with A = Uᵀ U.",
    ],
    solution="""
    H = H + percdamp * np.mean(np.diag(H)) * np.eye(len(H))
    return np.linalg.cholesky(np.linalg.inv(H)).T
    """,
    forbidden=(inverse_factor,),
    task="the damped inverse factor",
)
