"""Exercises of notebook 15, I-quants: IQ4_NL's table, its blocks, and its scale."""

import numpy as np

from kquant import reference
from kquant.exercises.core import LLAMA_CPP, Exercise, Wrong, as_array, as_number, call
from kquant.formats import dequantize, iq4_nl, quantize

TABLE = iq4_nl.KVALUES.astype(np.int64)  # kvalues_iq4nl, as the notebook shows it
_MID = (TABLE[:-1] + TABLE[1:]) / 2


def _index_want(v: float) -> int:
    """best_index_int8 in exact arithmetic: the count of midpoints at or below v (a tie goes up)."""
    return int(np.searchsorted(_MID, v, side="right"))


def _check_nearest_index(fn, rng):
    # table values, the ends and random values, then the ties (the rule the obvious argmin gets wrong)
    cases = [13.0, 0.0, -127.0, 6.75, -60.25, 500.0, -500.0]
    cases += [float(v) for v in rng.uniform(-135, 120, 8).round(2)]
    cases += [7.0, -4.5, 101.0, -115.5, 31.5]
    for v in cases:
        what = f"nearest_index({v})"
        got = as_number(call(fn, v), what)
        want = _index_want(v)
        if got == want:
            continue
        lower = int(np.argmin(np.abs(TABLE - v)))
        if v in _MID and got == lower:
            raise Wrong(
                f"{what} = {got:g}: {v} is exactly halfway between {TABLE[lower]} and {TABLE[lower + 1]}; ggml's "
                "best_index_int8 keeps the lower one only if it is strictly closer, so a tie goes to the upper value"
            )
        if got in TABLE and got == TABLE[want]:
            raise Wrong(f"{what} = {got:g}: that is the table value; return its index, 0..15")
        if got == want + 1 and v in TABLE:  # a table value's index is unambiguous: one more is counting from 1
            raise Wrong(f"{what} = {got:g}: indices start at 0 (-127 is index 0, 113 is index 15)")
        if not 0 <= got <= 15:
            raise Wrong(f"{what} = {got:g}: an index lies in 0..15; beyond the table's ends, take the end")
        raise Wrong(f"{what} = {got:g}: that is not the index of the table value nearest {v}")
    return "the nearest table value's index, ties going up as in ggml, on 20 values"


q1 = Exercise(
    "nb15",
    "q1",
    "nearest_index(v)",
    _check_nearest_index,
    hints=[
        "TABLE is sorted. Find the two values around v; beyond the ends there is only one.",
        "Keep the lower neighbour only if v - lower < upper - v (strictly): a tie goes up. "
        "np.searchsorted(TABLE, v, side='right') gives the upper neighbour's index.",
    ],
    solution="""
    hi = int(np.clip(np.searchsorted(TABLE, v, side="right"), 1, 15))
    return hi - 1 if v - TABLE[hi - 1] < TABLE[hi] - v else hi
    """,
    forbidden=(iq4_nl.best_index, iq4_nl.best_index_c, iq4_nl.levels, quantize, reference, *LLAMA_CPP),
    task="the nearest table value",
)


def _block(rng) -> np.ndarray:
    d = np.float16(rng.choice([-1, 1]) * rng.uniform(0.5, 2) * 10.0 ** rng.integers(-4, -1))
    return iq4_nl.pack(iq4_nl.Fields(np.array([d]), rng.integers(0, 16, (1, 32)).astype(np.uint8)))[0]


def _check_decode(fn, rng):
    for k in range(8):
        block = _block(rng)
        what = f"decode_iq4_nl(<18 bytes>) (block {k + 1})"
        got = as_array(call(fn, block.tobytes()), (32,), what)
        want = iq4_nl.decode(iq4_nl.unpack(block[None, :]))[0]
        if np.array_equal(got.astype(np.float32), want):
            continue
        d = np.frombuffer(block[:2].tobytes(), "<f2")[0].astype(np.float32)
        b = block[2:].astype(np.int64)
        low_high = np.concatenate([b & 15, b >> 4])
        interleaved = np.stack([b & 15, b >> 4], axis=1).reshape(-1)
        if np.allclose(got, (low_high - 8) * d):
            raise Wrong(f"{what}: that is Q4_0's (q - 8) · d; IQ4_NL's index picks a value from TABLE: d · TABLE[q]")
        if np.allclose(got, d * TABLE[interleaved]):
            raise Wrong(f"{what}: the nibbles are not interleaved: low nibbles are weights 0-15, high ones 16-31")
        if np.allclose(got, d * TABLE[np.concatenate([b >> 4, b & 15])]):
            raise Wrong(f"{what}: low nibbles first: byte j holds weight j (low) and weight j + 16 (high)")
        if np.allclose(got, -want):
            raise Wrong(f"{what}: the sign is flipped: a weight is d · TABLE[q], d keeps its sign")
        if np.allclose(got, want, rtol=1e-3):
            raise Wrong(f"{what}: close but not exact: take d from the first 2 bytes as little-endian fp16")
        i = int(np.flatnonzero(got.astype(np.float32) != want)[0])
        raise Wrong(f"{what}: weight {i} came back as {got[i]:.6g}; llama.cpp decodes it differently")
    return "your decoder gives llama.cpp's 32 float32 weights, bit for bit, on 8 random blocks"


q2 = Exercise(
    "nb15",
    "q2",
    "decode_iq4_nl(block)",
    _check_decode,
    hints=[
        "np.frombuffer(block[:2], '<f2')[0] is d; np.frombuffer(block[2:], np.uint8) are 16 bytes of two indices each.",
        "Indices: low nibbles (b & 15) are weights 0-15, high nibbles (b >> 4) weights 16-31; each weight is "
        "d · TABLE[index] in float32.",
    ],
    solution="""
    d = np.frombuffer(block[:2], dtype="<f2")[0].astype(np.float32)
    b = np.frombuffer(block[2:18], dtype=np.uint8)
    q = np.concatenate([b & 15, b >> 4])
    return d * TABLE[q].astype(np.float32)
    """,
    forbidden=(
        iq4_nl.decode,
        iq4_nl.unpack,
        iq4_nl.dequantize_blocks,
        dequantize,
        reference,
        "gguf.quants",
        *LLAMA_CPP,
    ),
    task="the IQ4_NL decoder",
)


def _check_fit_scale(fn, rng):
    cases = []
    for _ in range(5):
        x = (rng.standard_t(4, 32) * 0.02).astype(np.float32)
        w = (rng.random(32) ** 2 * 3).astype(np.float32)
        # the values a first guess 1/d = -127/max picks for each weight (the search's first step)
        q = TABLE[[_index_want(v) for v in x * (-127 / x[np.argmax(np.abs(x))])]]
        cases.append((x, w, q.astype(np.float32)))
    x = cases[0][0]
    cases.append((x, np.zeros(32, np.float32), cases[0][2]))  # no weight counts: ggml's d is 0
    for k, (x, w, q) in enumerate(cases):
        what = f"fit_scale(<x>, <w>, <q>) (case {k + 1})"
        x64, w64, q64 = x.astype(np.float64), w.astype(np.float64), q.astype(np.float64)
        den = float((w64 * q64 * q64).sum())
        raw = call(fn, x, w, q)
        try:
            nan = den == 0 and not np.isfinite(float(np.asarray(raw).reshape(())))
        except (TypeError, ValueError, OverflowError):
            nan = False
        if nan:
            raise Wrong(f"{what} = {raw}: every weight w is 0, so Σ w q² is 0; ggml then returns d = 0")
        got = as_number(raw, what)
        want = float((w64 * q64 * x64).sum()) / den if den > 0 else 0.0
        if np.isclose(got, want, rtol=1e-5, atol=1e-12):
            continue
        if den == 0:
            raise Wrong(f"{what} = {got:.4g}: every weight w is 0, so Σ w q² is 0; ggml then returns d = 0")
        if np.isclose(got, (q64 * x64).sum() / (q64 * q64).sum(), rtol=1e-5):
            raise Wrong(f"{what} = {got:.4g}: that ignores w; weigh each term by its weight w")
        if np.isclose(got, (w64 * q64 * q64).sum() / (w64 * q64 * x64).sum(), rtol=1e-5):
            raise Wrong(f"{what} = {got:.4g}: that is 1/d; d = Σ w q x / Σ w q²")
        if np.isclose(got, x64[np.argmax(np.abs(x64))] / 127, rtol=1e-5) or np.isclose(
            got, x64[np.argmax(np.abs(x64))] / -127, rtol=1e-5
        ):
            raise Wrong(f"{what} = {got:.4g}: that is the starting guess max/127; fit d to the chosen values q")
        if np.isclose(got, (w64 * x64).sum() / (w64 * q64).sum(), rtol=1e-5):
            raise Wrong(f"{what} = {got:.4g}: minimise Σ w (x − d q)²: its derivative gives Σ w q x / Σ w q²")
        raise Wrong(f"{what} = {got:.4g}: that is not the d minimising Σ w (x − d q)²")
    return "the weighted least-squares scale of 5 random blocks, and of one that no weight counts in"


q3 = Exercise(
    "nb15",
    "q3",
    "fit_scale(x, w, q)",
    _check_fit_scale,
    hints=[
        "The error is Σ w (x − d q)². Set its derivative in d to 0.",
        "d = Σ w q x / Σ w q², and 0 when Σ w q² is 0 (as ggml does).",
    ],
    solution="""
    den = float(np.sum(w.astype(np.float64) * q * q))
    return float(np.sum(w.astype(np.float64) * q * x)) / den if den > 0 else 0.0
    """,
    forbidden=(iq4_nl.search, iq4_nl.search_steps, quantize, reference, *LLAMA_CPP),
    task="the least-squares scale",
)
