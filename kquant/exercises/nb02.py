"""Exercises of notebook 02, Scale and zero point."""

import numpy as np

from kquant.exercises.core import Exercise, Wrong, as_array, as_number, as_tuple, call
from kquant.lessons import metrics, scale_zero_point


def _tensors(rng):
    """Fresh test tensors: bell-shaped, heavy-tailed, all positive, and one with a zero row."""
    g = rng.standard_normal((8, 64)) * rng.uniform(0.01, 3)
    yield "a Gaussian tensor", g
    yield "a heavy-tailed tensor", rng.standard_t(3, (4, 32)) * 0.02
    yield "an all-positive tensor", np.abs(g) + 0.1
    yield "an all-negative tensor", -np.abs(g) - 0.05


def _levels_match(got_q, want: scale_zero_point.Quantized, w, what: str) -> None:
    """Levels must equal ours except at exact rounding ties (where float order may differ)."""
    want_q = want.q.reshape(w.shape)
    if not np.all(got_q == np.round(got_q)):
        raise Wrong(f"{what}: the levels q are not whole numbers; round w / scale to integers")
    diff = got_q != want_q
    if not diff.any():
        return
    t = (w / want.scale[0, 0]) % 1.0
    near_tie = np.abs(t - 0.5) < 1e-6
    if np.all(near_tie[diff]) and np.all(np.abs(got_q - want_q)[diff] <= 1):
        return
    i = np.flatnonzero((diff & ~near_tie).ravel())[0]
    raise Wrong(f"{what}: level for w = {w.ravel()[i]:.6g} is {got_q.ravel()[i]:g}, not the nearest level")


def _unpack(result, n: int, names: str, what: str):
    return as_tuple(result, n, names, what)


def _check_absmax(fn, rng):
    for bits in (2, 3, 4, 8):
        for label, w in _tensors(rng):
            what = f"absmax_quantize({label}, {bits})"
            q, scale = _unpack(call(fn, w, bits), 2, "q, scale", what)
            q = as_array(q, w.shape, f"{what}: q")
            scale = as_number(scale, f"{what}: scale")
            want = scale_zero_point.absmax_quantize(w, bits)
            amax, qmax = np.abs(w).max(), 2 ** (bits - 1) - 1
            if not np.isclose(scale, want.scale[0, 0], rtol=1e-9):
                for wrong, why in [
                    (
                        amax / 2 ** (bits - 1),
                        "divide by 2**(bits-1) - 1, the largest level, so that max|w| lands on it",
                    ),
                    (
                        amax / (2**bits - 1),
                        "2**bits - 1 is the asymmetric range; symmetric levels run from -(2**(bits-1) - 1) to "
                        "2**(bits-1) - 1",
                    ),
                    (w.max() / qmax, "use the largest *magnitude* max|w|, not the largest value"),
                ]:
                    if np.isclose(scale, wrong, rtol=1e-9):
                        raise Wrong(f"{what}: scale {scale:.6g}: {why}")
                raise Wrong(f"{what}: scale {scale:.6g} should be max|w| / (2**(bits-1) - 1)")
            if np.abs(q).max() > qmax:
                raise Wrong(f"{what}: a level is {np.abs(q).max():g}, outside -{qmax}..{qmax}")
            _levels_match(q, want, w, what)
    return "scale = max|w| / (2^(b-1) − 1) and the nearest levels, on 16 fresh tensors"


q1 = Exercise(
    "nb02",
    "q1",
    "absmax_quantize(w, bits)",
    _check_absmax,
    hints=[
        "With b bits the symmetric levels are -(2**(b-1) - 1) .. 2**(b-1) - 1; the largest |w| should land on the "
        "top one.",
        "scale = np.abs(w).max() / qmax; q = np.rint(w / scale). Return q, scale.",
    ],
    solution="""
    qmax = 2 ** (bits - 1) - 1
    scale = np.abs(w).max() / qmax
    q = np.clip(np.rint(w / scale), -qmax, qmax)
    return q, scale
    """,
    forbidden=(scale_zero_point.absmax_quantize, scale_zero_point.fake_quantize, scale_zero_point.zero_point_quantize),
    task="absmax quantization",
)


def _check_zero_point(fn, rng):
    for bits in (1, 2, 4, 8):
        for label, w in _tensors(rng):
            what = f"zero_point_quantize({label}, {bits})"
            q, scale, zero = _unpack(call(fn, w, bits), 3, "q, scale, zero", what)
            q = as_array(q, w.shape, f"{what}: q")
            scale = as_number(scale, f"{what}: scale")
            zero = as_number(zero, f"{what}: zero")
            want = scale_zero_point.zero_point_quantize(w, bits)
            top = 2**bits - 1
            if not np.isclose(scale, want.scale[0, 0], rtol=1e-9):
                if np.isclose(scale, (w.max() - w.min()) / top, rtol=1e-9):
                    raise Wrong(
                        f"{what}: widen [min, max] to include 0 first (min = min(w.min(), 0), max = max(w.max(), "
                        "0)) so that 0 stays exact"
                    )
                if np.isclose(scale, (w.max() - w.min()) / 2**bits, rtol=1e-9) or np.isclose(
                    scale, want.scale[0, 0] * top / 2**bits, rtol=1e-9
                ):
                    raise Wrong(
                        f"{what}: {bits} bits give {top + 1} levels, so {top} steps: divide the range by 2**bits - 1"
                    )
                raise Wrong(
                    f"{what}: scale {scale:.6g} should be (max - min) / (2**bits - 1), with [min, max] widened to "
                    "include 0"
                )
            if zero != round(zero):
                raise Wrong(
                    f"{what}: the zero point {zero:.4g} is not a whole number; round -min / scale so that 0 maps "
                    "to a level exactly"
                )
            if zero != want.zero[0, 0]:
                raise Wrong(
                    f"{what}: zero point {zero:g}: it should be the level that stands for 0, round(-min / scale)"
                )
            if q.min() < 0 or q.max() > top:
                raise Wrong(f"{what}: levels must lie in 0..{top}, got {q.min():g}..{q.max():g}")
            _levels_match(q, want, w, what)
    return "scale, zero point and levels right on 16 fresh tensors, all-positive and all-negative ones included"


q2 = Exercise(
    "nb02",
    "q2",
    "zero_point_quantize(w, bits)",
    _check_zero_point,
    hints=[
        "lo = min(w.min(), 0), hi = max(w.max(), 0): then 0 is inside the range and gets a level of its own.",
        "scale = (hi - lo) / (2**bits - 1); zero = round(-lo / scale); q = round(w / scale) + zero, clipped to 0 "
        ".. 2**bits - 1.",
    ],
    solution="""
    top = 2**bits - 1
    lo, hi = min(w.min(), 0), max(w.max(), 0)
    scale = (hi - lo) / top
    zero = np.rint(-lo / scale)
    q = np.clip(np.rint(w / scale) + zero, 0, top)
    return q, scale, zero
    """,
    forbidden=(scale_zero_point.zero_point_quantize, scale_zero_point.fake_quantize, scale_zero_point.absmax_quantize),
    task="zero-point quantization",
)


def _check_sqnr(fn, rng):
    for k in range(6):
        w = rng.standard_normal(500) * rng.uniform(0.01, 10)
        if k == 0:
            w = w + 3 * np.abs(w).max()  # far from zero on average: variance and power differ
        w_hat = w + rng.standard_normal(500) * np.abs(w).mean() * rng.uniform(0.001, 0.5)
        got = as_number(call(fn, w, w_hat), "sqnr_db(w, w_hat)")
        want = metrics.sqnr_db(w, w_hat)
        if np.isclose(got, want, rtol=1e-6):
            continue
        if np.isclose(got, 2 * want, rtol=1e-6):
            raise Wrong(
                "that is twice the SQNR: these are power ratios (sums of squares), so use 10·log10, not 20·log10"
            )
        if np.isclose(got, want / 2, rtol=1e-6):
            raise Wrong("that is half the SQNR: compare powers (sums of squares), not amplitudes")
        if np.isclose(got, -want, rtol=1e-6):
            raise Wrong("the ratio is upside down: signal power over noise power")
        if np.isclose(got, want * np.log(10), rtol=1e-6):
            raise Wrong("that is a natural log: decibels use log10")
        err = w - w_hat
        if np.isclose(got, 10 * np.log10(np.var(w) / np.sum(err**2) * len(w)), rtol=1e-6) or np.isclose(
            got, 10 * np.log10(np.var(w) / np.var(err)), rtol=1e-6
        ):
            raise Wrong("that subtracts the mean (np.var / np.std): signal power is the plain mean (or sum) of w²")
        raise Wrong(f"sqnr_db gave {got:.4g} dB: that is not 10·log10(Σw² / Σ(w − ŵ)²)")
    return "10·log10 of signal power over error power, right on 6 fresh pairs"


q3 = Exercise(
    "nb02",
    "q3",
    "sqnr_db(w, w_hat)",
    _check_sqnr,
    hints=[
        "Signal power: the sum of w². Noise power: the sum of (w − ŵ)². Take their ratio.",
        "Power ratios in decibels: 10 * np.log10(ratio).",
    ],
    solution="""
    w, w_hat = np.asarray(w, dtype=np.float64), np.asarray(w_hat, dtype=np.float64)
    return 10 * np.log10(np.sum(w**2) / np.sum((w - w_hat) ** 2))
    """,
    forbidden=(metrics.sqnr_db,),
    task="the SQNR",
)
