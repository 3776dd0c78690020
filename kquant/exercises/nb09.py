"""Exercises of notebook 09, claims and measurements: the arithmetic that settles them."""

import numpy as np

from kquant.exercises.core import Exercise, Wrong, as_bool, as_number, call
from kquant.formats import dequantize, quantize
from kquant.lessons import kfamily, memory


def _check_model_gb(fn, rng):
    cases = [(70e9, 4.8944), (8e9, 16.0), (14e9, 8.5)] + [
        (float(rng.uniform(0.1, 400)) * 1e9, float(rng.uniform(1.5, 32))) for _ in range(4)
    ]
    for n, bpw in cases:
        what = f"model_gigabytes({n:.4g}, {bpw:.4g})"
        got = as_number(call(fn, n, bpw), what)
        want = memory.gb(memory.weight_bytes(n, bpw))
        if np.isclose(got, want, rtol=1e-9):
            continue
        if np.isclose(got, want * 8, rtol=1e-9):
            raise Wrong(f"{what} = {got:.4g}: that counts bits as bytes; divide by 8")
        if np.isclose(got, memory.gib(memory.weight_bytes(n, bpw)), rtol=1e-9):
            raise Wrong(f"{what} = {got:.4g}: that is GiB (2**30 bytes); the answer is in GB (10**9 bytes)")
        if np.isclose(got, want * 1e9, rtol=1e-9):
            raise Wrong(f"{what} = {got:.4g}: that is bytes; divide by 10**9 for GB")
        raise Wrong(f"{what} = {got:.4g} GB; that is not n_params × bpw / 8 bytes in GB")
    return "weights in GB for 7 models, published bits per weight included"


q2 = Exercise(
    "nb09",
    "q2",
    "model_gigabytes(n_params, bpw)",
    _check_model_gb,
    hints=[
        "Each weight takes bpw bits, and a byte is 8 bits.",
        "n_params * bpw / 8 is the size in bytes; a GB is 10**9 bytes.",
    ],
    solution="""
    return n_params * bpw / 8 / 1e9
    """,
    forbidden=(memory.weight_bytes, memory.gb, memory.gib),
    task="the size in GB",
)


def _check_kv(fn, rng):
    cases = [
        (8, 2, 64, 256, 4),
        (48, 8, 128, 8192, 2),
        (80, 8, 128, 4096, 2),
    ]  # bytes 4 first: 2 would hide which factor is missing
    cases += [
        (
            int(rng.integers(4, 100)),
            int(rng.choice([1, 2, 4, 8, 16])),
            int(rng.choice([64, 96, 128])),
            int(rng.choice([512, 2048, 32768])),
            int(rng.choice([1, 2, 4])),
        )
        for _ in range(4)
    ]
    for args in cases:
        what = f"kv_cache_bytes{args}"
        got = as_number(call(fn, *args), what)
        want = memory.kv_cache_bytes(*args)
        if got == want:
            continue
        if got == want / 2:
            raise Wrong(f"{what} = {got:g}: the cache holds keys AND values, two tensors per layer")
        if got == want / args[4]:
            raise Wrong(f"{what} = {got:g}: that counts values; multiply by bytes_per_value for bytes")
        raise Wrong(f"{what} = {got:g} bytes; expected 2 (K and V) × layers × KV heads × head size × positions × bytes")
    return "the KV cache of 7 model layouts, in bytes"


q3 = Exercise(
    "nb09",
    "q3",
    "kv_cache_bytes(n_layer, n_kv_head, head_dim, n_ctx, bytes_per_value)",
    _check_kv,
    hints=[
        "Every layer keeps, for every position, one key and one value vector per KV head, each head_dim numbers long.",
        "2 * n_layer * n_kv_head * head_dim * n_ctx values, each bytes_per_value bytes.",
    ],
    solution="""
    return 2 * n_layer * n_kv_head * head_dim * n_ctx * bytes_per_value
    """,
    forbidden=(memory.kv_cache_bytes,),
    task="the KV-cache size",
)


def _grid_cases(rng):
    """(values, n_levels, is it a linear code?) triples: decoded k-quant groups, and sets that are not."""
    cases = []
    for qtype in ("Q4_K", "Q5_K", "Q2_K", "Q6_K"):
        x = rng.standard_normal((1, 256)).astype(np.float32) * float(rng.uniform(0.01, 2))
        y = dequantize(quantize(x, qtype), qtype)[0]
        lay = kfamily.LAYOUTS[qtype]
        j = int(rng.integers(0, 256 // lay.group))
        cases.append((y[j * lay.group : (j + 1) * lay.group], 2**lay.level_bits, True))
    cases.append((np.full(32, 0.25, dtype=np.float32), 16, True))  # one level used: trivially a grid
    cases.append(
        (np.array([-1.5, -0.5, 0.5, 2.5, 2.5, -1.5], dtype=np.float32), 16, True)
    )  # levels skipped: still a grid
    # Not a linear code of n_levels: IQ4_NL's 16 values, cluster centroids, a log scale, a grid too fine.
    iq4 = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)
    cases.append((iq4 * float(rng.uniform(0.001, 0.01)), 16, False))
    cases.append((np.sort(rng.standard_normal(8)).astype(np.float32), 16, False))
    cases.append((1.5 ** np.arange(5, dtype=np.float32), 16, False))  # every gap 1.5 times the last
    cases.append((np.arange(21, dtype=np.float32) * 0.01, 16, False))  # even, but 21 levels do not fit in 4 bits
    order = rng.permutation(len(cases))
    return [cases[i] for i in order]


def _check_grid(fn, rng):
    for k, (values, n_levels, want) in enumerate(_grid_cases(rng)):
        what = f"is_linear_code(<{len(values)} values>, {n_levels}) (case {k + 1})"
        got = as_bool(call(fn, values.copy(), n_levels), what)
        if got == want:
            continue
        distinct = np.unique(values)
        if want and len(distinct) <= 1:
            raise Wrong(f"{what} is False for values that are all equal: a single level is (trivially) a grid")
        if want and not np.allclose(np.diff(distinct), np.diff(distinct)[0], rtol=1e-3):
            raise Wrong(
                f"{what} is False, but these values are points of one even grid with some points unused: "
                "the step need not be the smallest gap; try steps that split max − min into j equal parts"
            )
        if want:
            raise Wrong(
                f"{what} is False, but the values lie on an even grid of at most {n_levels} points "
                "(allow for float32 rounding, e.g. 1e-3 of a step)"
            )
        if np.allclose(np.diff(distinct), np.diff(distinct)[0], rtol=1e-3):
            raise Wrong(
                f"{what} is True: the values are evenly spaced, but {len(distinct)} levels do not fit in {n_levels}"
            )
        raise Wrong(f"{what} is True, but no even grid of at most {n_levels} points holds these values")
    return "decoded k-quant groups recognised as linear codes; IQ4_NL's values and cluster-like sets as not"


q1 = Exercise(
    "nb09",
    "q1",
    "is_linear_code(values, n_levels)",
    _check_grid,
    hints=[
        "If the values sit on an even grid of step s, then max − min = j·s for a whole j below n_levels, and every "
        "(v − min) / s is whole.",
        "Try j = 1, 2, …, n_levels − 1: steps = (values − min) / (max − min) · j; accept when np.allclose(steps, "
        "np.round(steps), atol=1e-3).",
    ],
    solution="""
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi == lo:
        return True
    for j in range(1, n_levels):
        steps = (np.asarray(values, dtype=np.float64) - lo) / (hi - lo) * j
        if np.allclose(steps, np.round(steps), atol=1e-3):
            return True
    return False
    """,
    forbidden=(kfamily.on_even_grid,),
    task="the grid test",
)
