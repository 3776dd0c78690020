"""Exercises of notebook 12, AWQ: salient channels by activation, the fold into the norm, the α search."""

import numpy as np

from kquant.exercises.core import Exercise, Wrong, as_array, as_number, as_tuple, call
from kquant.methods import awq


def _activations(rng, n: int, cols: int, loud: int = 3) -> np.ndarray:
    """Activations of both signs with a few loud channels, and one channel with one huge spike."""
    x = rng.standard_normal((n, cols)).astype(np.float32)
    x[:, rng.choice(cols, loud, replace=False)] *= rng.uniform(8, 30, loud).astype(np.float32)
    return x


def _check_salient(fn, rng):
    for k in range(5):
        n, cols, top = int(rng.integers(40, 90)), int(rng.integers(20, 48)), int(rng.integers(2, 5))
        x = _activations(rng, n, cols, loud=top + 1)
        # Adversarial: one quiet channel with a single spike (largest max, small mean), one channel of
        # big values that alternate in sign (mean x ≈ 0 but mean |x| large), and large weights on quiet
        # channels (the weight-magnitude choice differs).
        quiet = np.argsort(np.abs(x).mean(0))[: cols // 2]
        x[int(rng.integers(n)), quiet[0]] = 400.0
        x[:, quiet[1]] = np.float32(12.0) * np.where(np.arange(n) % 2, 1, -1)
        w = rng.standard_normal((int(rng.integers(8, 24)), cols)).astype(np.float32)
        w[:, quiet[len(quiet) // 2 - 2 : len(quiet) // 2 + 2]] *= 50  # mid-loud channels, not the quietest
        what = f"salient_channels(<w {w.shape}>, <x {x.shape}>, {top}) (case {k + 1})"
        got = as_array(call(fn, w, x, top), (top,), what)
        if not np.allclose(got, np.round(got)) or got.min() < 0 or got.max() >= cols:
            raise Wrong(f"{what}: return {top} channel indices (integers from 0 to {cols - 1})")
        got = set(int(i) for i in got)
        mean_abs = np.abs(x.astype(np.float64)).mean(0)
        if got == set(np.argsort(-mean_abs)[:top].tolist()):
            continue
        if got == set(np.argsort(-np.abs(w).mean(0))[:top].tolist()) or got == set(
            np.argsort(-np.linalg.norm(w, axis=0))[:top].tolist()
        ):
            raise Wrong(f"{what}: those are the largest *weights*; AWQ's salient channels meet the largest activations")
        if got == set(np.argsort(-np.abs(x).max(0))[:top].tolist()):
            raise Wrong(f"{what}: one spike is not a loud channel; rank by the mean |x| over the tokens, not the max")
        if got == set(np.argsort(-x.mean(0))[:top].tolist()) or got == set(
            np.argsort(-np.abs(x.mean(0)))[:top].tolist()
        ):
            raise Wrong(f"{what}: positive and negative activations cancel in mean(x); average |x|")
        if got == set(np.argsort(mean_abs)[:top].tolist()):
            raise Wrong(f"{what}: those are the quietest channels; take the largest mean |x|")
        raise Wrong(f"{what}: not the {top} channels with the largest mean |x| over the tokens")
    return "the loudest channels of 5 batches with spikes, sign flips and large weights on quiet channels"


q1 = Exercise(
    "nb12",
    "q1",
    "salient_channels(w, x, k)",
    _check_salient,
    hints=[
        "x has one row per token and one column per input channel; w is there only to tempt you.",
        "Average |x| down the tokens (axis 0), then take the indices of the k largest: np.argsort(-m)[:k].",
    ],
    solution="""
    m = np.abs(x).mean(axis=0)
    return np.argsort(-m)[:k]
    """,
    forbidden=(awq.activation_scale,),
    task="the mean |activation| of each channel",
)


def _check_fold(fn, rng):
    for k in range(5):
        cols = int(rng.integers(8, 40))
        rows = cols if k == 0 else int(rng.integers(4, 60))  # a square matrix: rows and columns look alike
        norm = (1 + 0.2 * rng.standard_normal(cols)).astype(np.float32)
        w = rng.standard_normal((rows, cols)).astype(np.float32)
        s = rng.uniform(0.3, 4.0, cols).astype(np.float32)
        what = f"fold(<norm ({cols},)>, <w {w.shape}>, <s ({cols},)>) (case {k + 1})"
        new_norm, new_w = as_tuple(call(fn, norm.copy(), w.copy(), s.copy()), 2, "new_norm, new_w", what)
        new_norm = as_array(new_norm, (cols,), what + ", its new_norm")
        new_w = as_array(new_w, (rows, cols), what + ", its new_w")
        ok_norm, ok_w = np.allclose(new_norm, norm / s, rtol=1e-5), np.allclose(new_w, w * s, rtol=1e-5)
        if ok_norm and ok_w:
            continue
        if np.allclose(new_norm, norm * s, rtol=1e-5) and np.allclose(new_w, w / s, rtol=1e-5):
            raise Wrong(
                f"{what}: the wrong way round: the weights get the larger numbers (W·diag(s)), the norm divides by s"
            )
        if ok_norm and rows == cols and np.allclose(new_w, w * s[:, None], rtol=1e-5):
            raise Wrong(f"{what}: that scales the rows of w; s belongs to its columns, the input channels (w * s)")
        if ok_norm and np.allclose(new_w, w, rtol=1e-5):
            raise Wrong(f"{what}: the norm divides by s, so w must multiply its columns by s, or the output changes")
        if ok_w and np.allclose(new_norm, norm, rtol=1e-5):
            raise Wrong(f"{what}: w was scaled but the norm was not: divide the norm's weight by s")
        raise Wrong(f"{what}: the folded pair does not compute what norm and w computed")
    return "the fold into the norm of 5 random layers (a square one among them): the output is unchanged"


q2 = Exercise(
    "nb12",
    "q2",
    "fold(norm, w, s)",
    _check_fold,
    hints=[
        "RMSNorm ends by multiplying channel j by norm[j]; that product is the input of w's column j.",
        "Divide norm by s and multiply every row of w by s (broadcast over the columns): return norm / s, w * s.",
    ],
    solution="""
    return norm / s, w * s
    """,
)


def _round4(w):
    """A simple 4-bit quantizer: blocks of 16 along the row, absmax scale, levels −8 … 7 (Q4_0-like)."""
    b = w.reshape(-1, 16).astype(np.float64)
    m = b[np.arange(len(b)), np.abs(b).argmax(1)][:, None]
    d = np.where(m == 0, 1.0, m / -8)
    return (np.clip(np.round(b / d), -8, 7) * d).reshape(w.shape)


def _normalised(x_mean, a):
    s = np.maximum(x_mean**a, 1e-4)
    return s / np.sqrt(s.max() * s.min())


def _losses(w, x, alphas, variant="right"):
    x_mean, y = np.abs(x).mean(0), x @ w.T
    out = []
    for a in alphas:
        s = _normalised(x_mean, a) if variant != "max" else _normalised(np.abs(x).max(0), a)
        q = _round4(w * s)
        if variant == "weights":
            out.append(np.mean((q / s - w) ** 2))
        elif variant == "no divide":
            out.append(np.mean((x @ q.T - y) ** 2))
        else:
            out.append(np.mean((x @ (q / s).T - y) ** 2))
    return np.array(out)


_ALPHA_MISTAKES = {
    "no divide": "the quantized W·diag(s) must be divided back by s before it meets x",
    "weights": "that minimises the weight error; AWQ chooses α by the output error x·Ŵᵀ − x·Wᵀ",
    "max": "s comes from the mean |x| per channel, not its max (one spike is not a loud channel)",
    "argmax": "that α gives the largest output error; take the smallest",
}


def _check_alpha(fn, rng):
    alphas = np.arange(10) / 10
    failed = []  # (what, got, the mistakes that give got): one case can fit several, the next tells them apart
    for k in range(5):
        rows, cols, n = 16, 16 * int(rng.integers(2, 5)), int(rng.integers(60, 120))
        x = _activations(rng, n, cols, loud=int(rng.integers(2, 5)))
        x[int(rng.integers(n)), int(rng.integers(cols))] = 300.0  # a spike: the max misleads
        w = rng.standard_normal((rows, cols))
        what = f"best_alpha(<w {w.shape}>, <x {x.shape}>, alphas, quantize) (case {k + 1})"
        got = as_number(call(fn, w.copy(), x.copy(), alphas.copy(), _round4), what)
        right = _losses(w, x, alphas)
        i = int(np.argmin(np.abs(alphas - got)))
        if abs(alphas[i] - got) > 1e-9:
            raise Wrong(f"{what} = {got}: return one of the α values you were given")
        if right[i] <= right.min() * (1 + 1e-9):
            continue
        picks = {v: alphas[int(np.argmin(_losses(w, x, alphas, v)))] for v in ("no divide", "weights", "max")}
        picks["argmax"] = alphas[int(np.argmax(right))]
        failed.append((what, got, {v for v, a in picks.items() if a == got}))
    if failed:
        what, got, _ = failed[0]
        common = set.intersection(*(m for _, _, m in failed))
        for mistake, why in _ALPHA_MISTAKES.items():
            if mistake in common:
                raise Wrong(f"{what} = {got}: {why}")
        raise Wrong(f"{what} = {got}: another α gives a smaller output error")
    return "the best α of 5 matrices whose inputs have loud channels and spikes"


q3 = Exercise(
    "nb12",
    "q3",
    "best_alpha(w, x, alphas, quantize)",
    _check_alpha,
    hints=[
        "For each α: s = mean|x|^α per channel, divided by sqrt(max(s) · min(s)); Ŵ = quantize(w * s) / s.",
        "Measure np.mean((x @ Ŵ.T − x @ w.T) ** 2) for each α and return the α with the smallest.",
    ],
    solution="""
    x_mean, y = np.abs(x).mean(axis=0), x @ w.T
    losses = []
    for a in alphas:
        s = np.maximum(x_mean**a, 1e-4)
        s = s / np.sqrt(s.max() * s.min())
        w_hat = quantize(w * s) / s
        losses.append(np.mean((x @ w_hat.T - y) ** 2))
    return alphas[int(np.argmin(losses))]
    """,
    forbidden=(awq.search_matrix, awq.scales, awq.scaled_round_trip),
    task="the α search",
)
