"""Exercises of notebook 10, importance matters: what an imatrix holds and what it weighs."""

import numpy as np

from kquant.exercises.core import Exercise, Foreign, Wrong, as_array, as_number, call
from kquant.imatrix import Entry


def _activations(rng, n: int, cols: int) -> np.ndarray:
    """Activations with a few loud columns, as a model's are."""
    x = rng.standard_normal((n, cols)).astype(np.float32)
    x[:, rng.choice(cols, 3, replace=False)] *= rng.uniform(5, 30, 3).astype(np.float32)
    return x + np.float32(rng.normal())  # a shared offset: mean(x)² and mean(x²) then differ


def _check_column_importance(fn, rng):
    for k in range(5):
        n, cols = int(rng.integers(16, 80)), int(rng.integers(8, 64))
        x = _activations(rng, n, cols)
        what = f"column_importance(<{n} tokens × {cols} columns>) (case {k + 1})"
        raw = call(fn, x)
        if np.shape(raw) == (n,) and n != cols:
            raise Wrong(
                f"{what} has one value per token (shape ({n},)); average over the tokens, axis 0, one value per column"
            )
        got = as_array(raw, (cols,), what)
        want = (x.astype(np.float64) ** 2).mean(axis=0)
        if np.allclose(got, want, rtol=1e-5):
            continue
        if np.allclose(got, want * n, rtol=1e-5):
            raise Wrong(f"{what}: that is the sum over tokens; llama-quantize divides it by the token count")
        if np.allclose(got, np.abs(x).mean(axis=0), rtol=1e-5):
            raise Wrong(
                f"{what}: that is the mean absolute value; the error a column causes grows with x², so average x²"
            )
        if np.allclose(got, x.mean(axis=0) ** 2, rtol=1e-5):
            raise Wrong(f"{what}: that squares the mean; square first, then average (mean of x², not mean(x)²)")
        raise Wrong(f"{what} differs from the mean of x² over the tokens")
    return "the mean squared activation of every column, on 5 random batches"


q1 = Exercise(
    "nb10",
    "q1",
    "column_importance(x)",
    _check_column_importance,
    hints=[
        "x has one row per token and one column per input of the weight matrix.",
        "Square every activation, then average down the tokens: (x ** 2).mean(axis=0).",
    ],
    solution="""
    return (x.astype(np.float64) ** 2).mean(axis=0)
    """,
)


def _check_from_file(fn, rng):
    for k in range(5):
        n_mat, cols = int(rng.choice([1, 1, 4, 8])), int(rng.integers(4, 40))
        in_sum2 = (rng.random((n_mat, cols)) * 100).astype(np.float32)
        counts = rng.integers(16, 5000, n_mat).astype(np.int64)
        if n_mat > 1:
            counts[rng.integers(n_mat)] = 0  # an expert that no token was routed to
        what = f"importance_from_file(<in_sum2 {in_sum2.shape}>, <counts {counts.tolist()}>) (case {k + 1})"
        raw = call(fn, in_sum2.copy(), counts.copy())
        if raw is None or isinstance(raw, (Foreign, str, bytes)):
            as_array(raw, (n_mat * cols,), what)  # says what is wrong with it
        if np.shape(raw) == (n_mat, cols):
            raise Wrong(
                f"{what} has shape {(n_mat, cols)}: llama-quantize hands ggml one flat vector, ({n_mat * cols},)"
            )
        try:
            finite = np.isfinite(np.asarray(raw, dtype=np.float64)).all()
        except (TypeError, ValueError):
            finite = True  # not numbers at all: as_array says so below
        if not finite and (counts == 0).any():
            raise Wrong(
                f"{what} contains NaN or inf: a row whose count is 0 saw no token; llama-quantize gives it 1.0 in "
                "every column"
            )
        got = as_array(raw, (n_mat * cols,), what)
        want = Entry(in_sum2, counts).importance()
        if np.allclose(got, want, rtol=1e-6):
            continue
        if np.allclose(got, (in_sum2 / counts.sum()).reshape(-1), rtol=1e-6):
            raise Wrong(f"{what}: each row (expert) has its own count; divide row m by counts[m]")
        raise Wrong(f"{what} differs from in_sum2 / counts row by row (and 1 for a row whose count is 0)")
    return "importance vectors of dense and expert matrices, unrouted experts included"


q2 = Exercise(
    "nb10",
    "q2",
    "importance_from_file(in_sum2, counts)",
    _check_from_file,
    hints=[
        "Row m of in_sum2 holds matrix (or expert) m's sums of x²; counts[m] says over how many tokens.",
        "Divide each row by its count; a row whose count is 0 saw no token: llama-quantize gives it 1.0 "
        "everywhere. Flatten the result.",
    ],
    solution="""
    out = np.ones(in_sum2.shape, dtype=np.float32)
    seen = counts > 0
    out[seen] = in_sum2[seen] / counts[seen, None].astype(np.float32)
    return out.reshape(-1)
    """,
    forbidden=(Entry.importance,),
    task="the importance vector",
)


def _check_weighted_error(fn, rng):
    for k in range(5):
        rows, cols = int(rng.integers(2, 20)), int(rng.integers(4, 40))
        w = rng.standard_normal((rows, cols)).astype(np.float32)
        w_hat = (w + rng.normal(0, 0.1, w.shape)).astype(np.float32)
        imp = (rng.random(cols) * 10).astype(np.float32)
        what = f"weighted_error(<{rows}×{cols} w>, <w_hat>, <importance ({cols},)>) (case {k + 1})"
        got = as_number(call(fn, w, w_hat, imp), what)
        err2 = (w.astype(np.float64) - w_hat) ** 2
        want = float((err2 * imp).sum())
        if np.isclose(got, want, rtol=1e-5):
            continue
        if np.isclose(got, err2.sum(), rtol=1e-5):
            raise Wrong(f"{what} = {got:.4g}: that is the plain squared error; weigh each column j by importance[j]")
        if np.isclose(got, want / err2.size, rtol=1e-5) or np.isclose(got, want / rows, rtol=1e-5):
            raise Wrong(f"{what} = {got:.4g}: return the sum, not a mean")
        if np.isclose(got, float((np.abs(w - w_hat) * imp).sum()), rtol=1e-5):
            raise Wrong(f"{what} = {got:.4g}: square the errors (the output error grows with their square)")
        raise Wrong(f"{what} = {got:.4g}: that is not Σ importance[j] · (w − ŵ)² over every row and column j")
    return "the importance-weighted squared error of 5 random matrices"


q3 = Exercise(
    "nb10",
    "q3",
    "weighted_error(w, w_hat, importance)",
    _check_weighted_error,
    hints=[
        "importance has one value per column; numpy broadcasting applies it to every row of (w - w_hat) ** 2.",
        "np.sum(importance * (w - w_hat) ** 2).",
    ],
    solution="""
    return float(np.sum(importance * (w.astype(np.float64) - w_hat) ** 2))
    """,
)
