"""Exercises of notebook 00, Start here: warm-ups that show how every exercise works."""

import math

import numpy as np

from kquant.exercises.core import Exercise, Wrong, as_array, as_number, call


def _check_levels(fn, rng):
    for bits in [
        3,
        5,
        1,
        2,
        4,
        8,
        *rng.integers(3, 17, 4),
    ]:  # 3 and 5 first: there, every mistake below gives a different number
        bits = int(bits)
        got = as_number(call(fn, bits), f"levels({bits})")
        if got == 2**bits:
            continue
        for wrong, why in [
            (2 * bits, "that is 2·bits; each extra bit *doubles* the number of levels"),
            (2**bits - 1, "that is the number of steps *between* the levels; there is one level more"),
            (bits**2, "that is bits²; the count doubles with every bit: 2 to the power bits"),
        ]:
            if got == wrong:
                raise Wrong(f"levels({bits}) gave {got:g}: {why}")
        raise Wrong(f"levels({bits}) gave {got:g}: count the distinct patterns {bits} bits can hold")
    return "2 ** bits distinct levels, for 8 bit depths"


q1 = Exercise(
    "nb00",
    "q1",
    "levels(bits)",
    _check_levels,
    hints=["1 bit: 0 or 1, two levels. 2 bits: 00, 01, 10, 11, four. What does each extra bit do to the count?"],
    solution="""
    return 2**bits
    """,
)


def _check_bits_needed(fn, rng):
    cases = [1, 2, 3, 4, 5, 16, 17, 255, 256, 257, *(int(n) for n in rng.integers(2, 10**6, 6))]
    for n in cases:
        got = as_number(call(fn, n), f"bits_needed({n})")
        want = math.ceil(math.log2(n))
        if got == want:
            continue
        if got != round(got):
            raise Wrong(f"bits_needed({n}) gave {got:g}: bits come in whole numbers; round *up* (math.ceil)")
        if got == want - 1:
            raise Wrong(f"bits_needed({n}) gave {got:g}, one too few: {got:g} bits hold only {2 ** int(got)} levels")
        if got == want + 1 and n & (n - 1) == 0:
            raise Wrong(
                f"bits_needed({n}) gave {got:g}, one too many: {n} is a power of two, and {want} bits hold exactly "
                f"{n} levels"
            )
        raise Wrong(f"bits_needed({n}) gave {got:g}: the fewest bits b with 2**b >= {n} is another number")
    return "the fewest bits that hold n levels, for n from 1 to a million, powers of two included"


q2 = Exercise(
    "nb00",
    "q2",
    "bits_needed(n_levels)",
    _check_bits_needed,
    hints=[
        "You need the smallest b with 2**b >= n_levels.",
        "math.ceil(math.log2(n_levels)) does it; check n_levels = 256 (8 bits) and 257 (9 bits).",
    ],
    solution="""
    return math.ceil(math.log2(n_levels))
    """,
)


def _check_levels_in_range(fn, rng):
    for _ in range(6):
        lo = float(rng.uniform(-5, 0))
        hi = lo + float(rng.uniform(0.1, 10))
        bits = int(rng.integers(1, 9))
        what = f"levels_in_range({lo:.3f}, {hi:.3f}, {bits})"
        result = call(fn, lo, hi, bits)
        n = np.size(result) if result is not None and not isinstance(result, str) else None
        if n == bits:
            raise Wrong(f"{what} returned {bits} levels; {bits} bits give 2**{bits} = {2**bits}")
        got = as_array(result, (2**bits,), what)
        want = np.linspace(lo, hi, 2**bits)
        if np.allclose(got, want, rtol=1e-9, atol=1e-12):
            continue
        if np.isclose(got[0], lo) and not np.isclose(got[-1], hi):
            raise Wrong(
                f"{what}: the last level should be hi itself; the levels run from lo to hi inclusive, evenly "
                "spaced (np.linspace)"
            )
        raise Wrong(f"{what}: expected {2**bits} evenly spaced levels from lo to hi inclusive")
    return "2**bits evenly spaced levels from lo to hi, on 6 fresh ranges"


q3 = Exercise(
    "nb00",
    "q3",
    "levels_in_range(lo, hi, bits)",
    _check_levels_in_range,
    hints=[
        "How many levels? Your levels(bits). Where? Evenly spaced, the first at lo and the last at hi.",
        "np.linspace(lo, hi, count) gives count evenly spaced numbers, both ends included.",
    ],
    solution="""
    return np.linspace(lo, hi, 2**bits)
    """,
)
