"""Exercises of notebook 01, Rounding π."""

import numpy as np

from kquant.exercises.core import Exercise, Wrong, as_array, as_number, as_text, call
from kquant.formats.q8_0 import roundf
from kquant.lessons import memory, rounding
from kquant.lessons.memory import GB, GIB


def _check_to_fixed(fn, rng):
    trials = 0
    for frac_bits in [0, 1, 3, *rng.integers(2, 20, 5)]:
        frac_bits = int(frac_bits)
        step = 2.0**-frac_bits
        ties = (rng.integers(-40, 40, 16) + 0.5) * step  # exactly halfway between two multiples
        x = np.concatenate([rng.uniform(-4, 4, 48), ties, [0.5 * step, -0.5 * step, 1.5 * step, -2.5 * step]])
        rng.shuffle(x)
        want = rounding.fixed_point(x, frac_bits).value
        got = as_array(call(fn, x, frac_bits), x.shape, f"to_fixed(x, {frac_bits})")
        if np.allclose(got, want, rtol=0, atol=1e-12):
            trials += 1
            continue
        if np.allclose(got, want / step, atol=1e-9):
            raise Wrong(
                f"you returned the integer codes x·2^{frac_bits}; return the values they stand for, code / 2**frac_bits"
            )
        for mode, why in [
            ("truncate", "your values are truncated toward zero: round to the *nearest* multiple of 2**-frac_bits"),
            ("half_up", "ties go up here (floor(v + 0.5)): a value exactly halfway goes to the *even* multiple"),
            ("half_away", "ties go away from zero here (C's roundf): a value exactly halfway goes to the *even* one"),
        ]:
            if np.allclose(got, rounding.fixed_point(x, frac_bits, mode).value, atol=1e-12):
                raise Wrong(why)
        if np.allclose(got, np.floor(x / step) * step, atol=1e-12):
            raise Wrong("your values are rounded down (floor): round to the *nearest* multiple of 2**-frac_bits")
        bad = ~np.isclose(got, want, rtol=0, atol=1e-12)
        if np.all(np.isin(np.flatnonzero(bad), np.flatnonzero(np.abs(x / step % 1 - 0.5) < 1e-12))):
            raise Wrong(f"to_fixed(x, {frac_bits}) is right except at exact ties: a tie goes to the even multiple")
        worst = int(np.argmax(np.abs(got - want)))
        raise Wrong(
            f"to_fixed({x[worst]:.6f}, {frac_bits}) gave {got[worst]!r}: not the nearest multiple of 2**-{frac_bits}"
        )
    pi3 = as_number(call(fn, np.pi, 3), "to_fixed(np.pi, 3)")
    if pi3 != 3.125:
        raise Wrong(f"to_fixed(np.pi, 3) gave {pi3}, but π·8 = 25.13 rounds to 25, which stands for 25/8")
    return f"to_fixed agrees with exact rounding on {trials} random arrays, exact ties included, and on π"


q1 = Exercise(
    "nb01",
    "q1",
    "to_fixed(x, frac_bits)",
    _check_to_fixed,
    hints=[
        "Count in steps of 2**-frac_bits: x / step is how many steps x is; round that, then turn steps back into a "
        "value.",
        "np.rint rounds to the nearest integer (ties to even) and works on whole arrays.",
    ],
    solution="""
    step = 2.0 ** -frac_bits
    return np.rint(np.asarray(x) / step) * step
    """,
    forbidden=(rounding.fixed_point, rounding.round_to_int),
    task="the rounding to a multiple of 2**-frac_bits",
)


def _check_round_half_away(fn, rng):
    ties = rng.integers(-20, 20, 40) + 0.5
    plain = rng.uniform(-50, 50, 40)
    v = np.concatenate([ties, plain, [0.0, 2.5, -2.5, 0.5, -0.5]])
    rng.shuffle(v)
    got = as_array(call(fn, v), v.shape, "round_half_away(v)")
    want = rounding.round_to_int(v, "half_away")
    if np.array_equal(got, want):
        return "ties go away from zero, everything else to the nearest integer: that is C's roundf"
    for mode, why in [
        (
            "half_even",
            "ties go to the even integer here (that is np.round / np.rint); roundf sends 2.5 to 3 and -2.5 to -3",
        ),
        ("half_up", "negative ties go up here (-2.5 -> -2); roundf sends them away from zero (-2.5 -> -3)"),
        ("truncate", "this truncates toward zero (2.7 -> 2); roundf rounds to the nearest integer"),
    ]:
        if np.array_equal(got, rounding.round_to_int(v, mode)):
            raise Wrong(why)
    bad = int(np.flatnonzero(got != want)[0])
    raise Wrong(f"round_half_away gave {got[bad]!r} for {v[bad]!r}")


q2 = Exercise(
    "nb01",
    "q2",
    "round_half_away(v)",
    _check_round_half_away,
    hints=[
        "Round the magnitude |v| half up with np.floor(|v| + 0.5), then put the sign back.",
        "np.copysign(a, v) gives a with the sign of v.",
    ],
    solution="""
    v = np.asarray(v, dtype=np.float64)
    return np.copysign(np.floor(np.abs(v) + 0.5), v)
    """,
    forbidden=(rounding.round_to_int, roundf),
    task="the rounding rule",
)


def _fp16_reference(x) -> str:
    return rounding.float_bits(x, "float16").bits


# Fixed cases with the mistake each one exposes: a float16 is more than a sign, 5 + 10 bits cut from a float.
_FP16_CASES = [
    (-0.0, "−0.0 is stored with its sign bit set; a test like x < 0 misses it (np.signbit does not)"),
    (2.0**-24, "the smallest float16 above 0 is 2**-24, a subnormal: exponent field 00000 and no implicit 1"),
    (3.0e-6, "numbers below 2**-14 are subnormal in float16: exponent field 00000 and no implicit leading 1"),
    (65504.0, "65504 is the largest float16: exponent 11110 and every mantissa bit set"),
    (1.0e5, "numbers beyond float16's range are stored as infinity: exponent 11111, mantissa 0"),
    (1.0 + 2.0**-11, "1 + 2**-11 lies exactly halfway between two float16 values: the tie goes to the even one"),
    (1.0 + 3 * 2.0**-11, "the 10-bit mantissa is *rounded* to nearest, ties to even, not truncated"),
    (0.1, "0.1 is not exact in binary: its mantissa is rounded to the nearest 10 bits"),
]


def _check_fp16_bits(fn, rng):
    magnitudes = np.exp(rng.uniform(np.log(1e-4), np.log(6e4), 30))
    xs = [(np.pi, None), (1.0, None), (-2.0, None)] + _FP16_CASES
    xs += [(float(np.float32(v)), None) for v in magnitudes * rng.choice([-1, 1], 30)]
    for x, why in xs:
        got = call(fn, float(x))
        if isinstance(got, (int, np.integer)) and not isinstance(got, (bool, np.bool_)):
            raise Wrong(
                "return the bits as a string of 16 '0'/'1' characters, e.g. format(code, '016b'), not an integer"
            )
        got = as_text(got, f"fp16_bits({x!r})", "0100001001001000")
        bits = got.replace(" ", "").replace("_", "").removeprefix("0b")
        if len(bits) != 16 or set(bits) - {"0", "1"}:
            raise Wrong(f"fp16_bits({x!r}) gave {got[:40]!r}: expected exactly 16 characters, each '0' or '1'")
        if bits != _fp16_reference(x):
            if bits == rounding.float_bits(x, "float32").bits[:16]:
                raise Wrong(
                    "those are the top 16 bits of the float32 (8 exponent bits); convert to float16 first: "
                    "np.float16(x)"
                )
            if bits == rounding.float_bits(x, "bfloat16").bits:
                raise Wrong("those are bfloat16's bits (8 exponent bits); float16 has 5 exponent and 10 mantissa bits")
            if why:
                raise Wrong(f"fp16_bits({x!r}) is wrong: {why}")
            raise Wrong(f"fp16_bits({x!r}) gave {bits}, which is not how float16 stores it")
    return f"the float16 bit fields are right for {len(xs)} numbers: −0, subnormals, overflow and ties included"


q3 = Exercise(
    "nb01",
    "q3",
    "fp16_bits(x)",
    _check_fp16_bits,
    hints=[
        "np.float16(x) rounds x to half precision; .view(np.uint16) reads the same 16 bits as an integer.",
        "format(n, '016b') writes an integer as 16 binary digits, most significant first.",
    ],
    solution="""
    code = int(np.float16(x).view(np.uint16))
    return format(code, "016b")
    """,
    forbidden=(rounding.float_bits, rounding.bit_string),
    task="the float16 bit fields",
)


def _check_model_gib(fn, rng):
    for _ in range(20):
        n = float(rng.uniform(1e8, 1e11))
        bpw = float(rng.choice([2.625, 4.5, 5.5, 6.5625, 8.5, 16.0, 32.0, float(rng.uniform(2, 32))]))
        got = as_number(call(fn, n, bpw), f"model_gib({n:.3g}, {bpw})")
        want = n * bpw / 8 / GIB
        if np.isclose(got, want, rtol=1e-9):
            continue
        for value, why in [
            (n * bpw / 8 / GB, "that is GB (10**9 bytes); a GiB is 2**30 bytes, about 7% more"),
            (n * bpw / GIB, "that counts bits, not bytes: divide by 8 bits per byte"),
            (n * bpw / 8, "that is bytes; divide by 2**30 bytes per GiB"),
            (n * bpw / 8 / 2**20, "that is MiB; a GiB is 2**30 bytes"),
        ]:
            if np.isclose(got, value, rtol=1e-9):
                raise Wrong(f"model_gib({n:.3g}, {bpw}) gave {got:.6g}: {why}")
        raise Wrong(f"model_gib({n:.3g}, {bpw}) gave {got:.6g}: expected parameters × bits / 8 bytes, in GiB")
    return "parameters × bits / 8 bytes, in GiB of 2**30 bytes: right for 20 random models"


q4 = Exercise(
    "nb01",
    "q4",
    "model_gib(n_params, bits_per_weight)",
    _check_model_gib,
    hints=[
        "Each weight takes bits_per_weight bits, and a byte has 8 bits.",
        "1 GiB = 2**30 bytes (llama.cpp's tables use GiB); 1 GB = 10**9 bytes.",
    ],
    solution="""
    return n_params * bits_per_weight / 8 / 2**30
    """,
    forbidden=(memory.weight_bytes, memory.gib, memory.gb),
    task="the size in GiB",
)
