"""The oracle, tested against facts that do not come from the oracle.

Every byte-exactness test of kquant trusts kquant.reference, so a wrong binding
(a bad argtype, a mis-declared struct, a swapped pointer) would make all of them
meaningless. Here the oracle is checked against gguf-py (an independent numpy code
base: bit-exact for the five legacy quantizers and for every dequantizer), against
numpy's fp16 casts, and against properties any correct imatrix path must have.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as gguf_quants
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kquant import reference
from kquant.errors import KQuantError

T = GGMLQuantizationType
LEGACY = (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1)  # gguf-py can quantize these
ALL = reference.SUPPORTED

needs_lib = pytest.mark.skipif(not reference.available(), reason="llama-cpp-python==0.3.36 is not installed")


def bits(a: np.ndarray) -> np.ndarray:
    """Compare floats by bit pattern: tells -0.0 from 0.0 and matches NaN payloads."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def nasty_inputs(n_per_row: int = 512) -> dict[str, np.ndarray]:
    """Inputs that stress rounding, ties, degenerate blocks and the float range."""
    rng = np.random.default_rng(1234)
    shape = (8, n_per_row)
    ties = rng.integers(-8, 9, shape).astype(np.float32) * np.float32(0.5)  # exact .5 ties
    blocks = rng.standard_normal(shape, dtype=np.float32)
    blocks[0] = 0.0  # all-zero row
    blocks[1] = 3.25  # constant row
    blocks[2, :32] = -7.0  # one constant negative block
    outliers = rng.standard_normal(shape, dtype=np.float32)
    outliers[:, ::97] *= 1000.0
    finite_bits = rng.integers(0, 2**32, shape, dtype=np.uint64).astype(np.uint32).view(np.float32)
    finite_bits = np.where(np.isfinite(finite_bits), finite_bits, np.float32(1.0))
    return {
        "randn": rng.standard_normal(shape, dtype=np.float32),
        "uniform": rng.uniform(-1, 1, shape).astype(np.float32),
        "heavy_tailed": rng.standard_t(2, shape).astype(np.float32),
        "tiny": (rng.standard_normal(shape) * 1e-30).astype(np.float32),
        "subnormal": (rng.standard_normal(shape) * 1e-40).astype(np.float32),
        "huge": (rng.standard_normal(shape) * 3e4).astype(np.float32),
        "ties": ties,
        "degenerate_blocks": blocks,
        "outliers": outliers,
        "fp16_rounded": rng.standard_normal(shape).astype(np.float16).astype(np.float32),
        "random_bit_patterns": finite_bits.astype(np.float32),
    }


NASTY = nasty_inputs()


# (a) the legacy quantizers agree with gguf-py byte for byte ------------------------


@needs_lib
@pytest.mark.parametrize("name", sorted(NASTY))
@pytest.mark.parametrize("qtype", LEGACY, ids=lambda t: t.name)
def test_legacy_quantize_matches_gguf_py(qtype, name):
    x = NASTY[name]
    with np.errstate(all="ignore"):  # gguf-py overflows to inf on purpose for huge rows
        expected = gguf_quants.quantize(x, qtype)
    got = reference.quantize(x, qtype)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    assert np.array_equal(got, expected)


@needs_lib
@settings(max_examples=40, deadline=None)
@given(
    qtype=st.sampled_from(LEGACY),
    x=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.sampled_from([32, 64])),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=32),
    ),
)
def test_legacy_quantize_matches_gguf_py_property(qtype, x):
    x = x + np.float32(0.0)  # -0.0 -> +0.0: gguf-py differs from ggml on signed zeros (next test)
    with np.errstate(all="ignore"):
        expected = gguf_quants.quantize(x, qtype)
    assert np.array_equal(reference.quantize(x, qtype), expected)


@needs_lib
def test_signed_zeros_follow_the_c_source():
    # The one place gguf-py is not bit-exact: which zero ends up in a stored scale.
    # From quantize_row_q4_0_ref: `max` starts at +0.0 and is replaced only when
    # |v| > amax, so an all-zero block stores d = +0.0 / -8 = -0.0 (fp16 0x8000);
    # gguf-py takes max from argmax and may store +0.0 instead.
    neg_zeros = np.full((1, 32), -0.0, dtype=np.float32)
    assert reference.quantize(neg_zeros, "Q4_0")[0, :2].view(np.uint16)[0] == 0x8000
    assert reference.quantize(np.zeros((1, 32), np.float32), "Q4_0")[0, :2].view(np.uint16)[0] == 0x8000
    # From quantize_row_q4_1_ref: `if (v < min) min = v` keeps the FIRST of tied
    # zeros, so the stored m (bytes 2-3) has the sign of the first zero.
    plus_first = np.full((1, 32), -0.0, dtype=np.float32)
    plus_first[0, ::2] = 0.0
    minus_first = -plus_first
    assert reference.quantize(plus_first, "Q4_1")[0, 2:4].view(np.uint16)[0] == 0x0000
    assert reference.quantize(minus_first, "Q4_1")[0, 2:4].view(np.uint16)[0] == 0x8000


# (b) every dequantizer agrees with gguf-py ----------------------------------------


@needs_lib
@pytest.mark.parametrize("qtype", ALL, ids=lambda t: t.name)
def test_dequantize_matches_gguf_py(qtype):
    for name, x in NASTY.items():
        q = reference.quantize(x, qtype)
        with np.errstate(all="ignore"):
            expected = gguf_quants.dequantize(q, qtype)
        got = reference.dequantize(q, qtype)
        assert got.dtype == np.float32 and got.shape == x.shape
        assert np.array_equal(bits(got), bits(expected)), name


@needs_lib
@pytest.mark.parametrize("qtype", ALL, ids=lambda t: t.name)
def test_dequantize_random_bytes_matches_gguf_py(qtype):
    # Bytes no quantizer would write (inf/NaN scales, every bit pattern of the packed
    # fields): decoding is pure unpacking and arithmetic, so both must still agree.
    type_size = GGML_QUANT_SIZES[qtype][1]
    q = np.random.default_rng(7).integers(0, 256, (16, 4 * type_size), dtype=np.uint8)
    with np.errstate(all="ignore"):
        expected = gguf_quants.dequantize(q, qtype)
        got = reference.dequantize(q, qtype)
    assert np.array_equal(bits(got), bits(expected))


@needs_lib
@pytest.mark.parametrize("qtype", ALL, ids=lambda t: t.name)
def test_shapes_and_row_independence(qtype):
    # Leading axes are kept, and rows are quantized independently of each other.
    x = NASTY["randn"].reshape(2, 4, -1)
    block, type_size = GGML_QUANT_SIZES[qtype]
    q = reference.quantize(x, qtype)
    assert q.shape == (2, 4, x.shape[-1] // block * type_size)
    assert np.array_equal(q[1, 2], reference.quantize(x[1, 2], qtype))
    assert reference.dequantize(q, qtype).shape == x.shape


@needs_lib
def test_error_is_small_and_shrinks_with_bits():
    # A sanity fact independent of gguf-py: more bits, less error, all well under 1 sigma.
    x = NASTY["randn"]
    rmse = {t: np.sqrt(np.mean((reference.dequantize(reference.quantize(x, t), t) - x) ** 2)) for t in ALL}
    assert rmse[T.Q2_K] > rmse[T.Q3_K] > rmse[T.Q4_K] > rmse[T.Q5_K] > rmse[T.Q6_K] > rmse[T.Q8_0]
    assert rmse[T.Q4_0] > rmse[T.Q5_0] > rmse[T.Q8_0]
    assert rmse[T.Q2_K] < 0.5


# (c) the imatrix really reaches C ---------------------------------------------------


@needs_lib
def test_imatrix_changes_q4_k_and_lowers_weighted_error():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 1024), dtype=np.float32)
    importance = (rng.uniform(0, 1, 1024) ** 4).astype(np.float32)  # very non-uniform
    plain = reference.quantize(x, "Q4_K")
    weighted = reference.quantize(x, "Q4_K", imatrix=importance)
    assert not np.array_equal(plain, weighted)

    # What the imatrix is for: a smaller error where the importance is large.
    def weighted_error(q):
        return float(np.sum(importance * (reference.dequantize(q, "Q4_K") - x) ** 2))

    assert weighted_error(weighted) < weighted_error(plain)
    # Deterministic, and independent of the array object passed.
    assert np.array_equal(weighted, reference.quantize(x, "Q4_K", imatrix=list(importance)))


@needs_lib
def test_q8_0_ignores_imatrix():
    # ggml's quantize_q8_0 never reads the importance vector (llama.cpp source).
    x = NASTY["randn"]
    importance = np.random.default_rng(4).uniform(0, 1, x.shape[-1]).astype(np.float32)
    assert np.array_equal(reference.quantize(x, "Q8_0", importance), reference.quantize(x, "Q8_0"))


# (d) fp16 helpers equal numpy ----------------------------------------------------------


@needs_lib
def test_fp32_to_fp16_matches_numpy():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2**32, 1 << 16, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = x[~np.isnan(x)]  # ggml canonicalises NaN payloads; numpy keeps them
    x = np.concatenate([x, np.float32([0.0, -0.0, 65504.0, 65520.0, 2.0**-24, 2.0**-25, 1e-45, np.inf, -np.inf])])
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16)
    got = reference.fp32_to_fp16(x)
    assert got.dtype == np.float16 and got.shape == x.shape
    assert np.array_equal(got.view(np.uint16), expected.view(np.uint16))


@needs_lib
def test_kquants_to_fp16_matches_ggmls_own_conversion_on_its_integer_path():
    # to_fp16 (every stored kquant scale) against ggml_fp32_to_fp16_row itself: random bit patterns
    # below 65520 (larger ones send the whole array to numpy's cast), ties, subnormals and zeros.
    from kquant.formats.cops import to_fp16

    rng = np.random.default_rng(6)
    bits = rng.integers(0, 0x477FF000, 1 << 16, dtype=np.uint64).astype(np.uint32)
    ties = (np.arange(0, 1 << 13, dtype=np.uint32) << 13) | 0x1000  # every kept mantissa, dropped bits at half
    x = np.concatenate([bits, ties | (112 << 23), ties | (130 << 23)]).view(np.float32)  # 2**-15, 2**3
    x = np.concatenate([x, -x, np.float32([0.0, -0.0, 65504.0, 65519.996, 2.0**-24, 2.0**-25, 1e-45])])
    assert np.array_equal(to_fp16(x).view(np.uint16), reference.fp32_to_fp16(x).view(np.uint16))


@needs_lib
def test_fp16_to_fp32_matches_numpy_for_every_code():
    codes = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    codes = codes[~np.isnan(codes.view(np.float16))]
    expected = codes.view(np.float16).astype(np.float32)
    assert np.array_equal(bits(reference.fp16_to_fp32(codes)), bits(expected))
    assert np.array_equal(bits(reference.fp16_to_fp32(codes.view(np.float16))), bits(expected))


# (e) bad input raises KQuantError, before anything reaches C ----------------------------


X = np.zeros((2, 256), dtype=np.float32)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: reference.quantize(X, "q4_z"), id="unknown-name"),
        pytest.param(lambda: reference.quantize(X, "IQ2_XXS"), id="unsupported-name"),
        pytest.param(lambda: reference.quantize(X, T.IQ2_XXS), id="unsupported-enum"),  # would abort in C
        pytest.param(lambda: reference.quantize(X, 99), id="unknown-int"),
        pytest.param(lambda: reference.quantize(X, T.F16), id="not-quantized"),
        pytest.param(lambda: reference.quantize(X[:, :255], "Q4_K"), id="row-not-multiple-of-block"),
        pytest.param(lambda: reference.quantize(X[:, :48], "Q4_0"), id="row-not-multiple-of-32"),
        pytest.param(lambda: reference.quantize(np.zeros((0, 256), np.float32), "Q4_K"), id="empty"),
        pytest.param(lambda: reference.quantize(np.float32(1.0), "Q8_0"), id="scalar"),
        pytest.param(lambda: reference.quantize(np.where(X == 0, np.nan, X), "Q4_K"), id="nan"),
        pytest.param(lambda: reference.quantize(np.full((1, 32), np.inf, np.float32), "Q8_0"), id="inf"),
        pytest.param(lambda: reference.quantize(np.full((1, 32), 1e39), "Q8_0"), id="overflows-float32"),
        pytest.param(lambda: reference.quantize(X.astype(complex), "Q8_0"), id="complex"),
        pytest.param(lambda: reference.quantize(X.astype(np.int32), "Q8_0"), id="integer"),
        pytest.param(lambda: reference.quantize(X, "Q4_K", np.ones(255, np.float32)), id="imatrix-length"),
        pytest.param(lambda: reference.quantize(X, "Q4_K", np.ones((2, 256), np.float32)), id="imatrix-2d"),
        pytest.param(lambda: reference.quantize(X, "Q4_K", -np.ones(256, np.float32)), id="imatrix-negative"),
        pytest.param(lambda: reference.quantize(X, "Q4_K", np.full(256, np.nan, np.float32)), id="imatrix-nan"),
        pytest.param(lambda: reference.dequantize(np.zeros((2, 143), np.uint8), "Q4_K"), id="bytes-length"),
        pytest.param(lambda: reference.dequantize(np.zeros((2, 0), np.uint8), "Q4_K"), id="bytes-empty"),
        pytest.param(lambda: reference.dequantize(np.zeros((2, 144), np.int16), "Q4_K"), id="bytes-dtype"),
        pytest.param(lambda: reference.dequantize(np.zeros((2, 144), np.uint8), "nope"), id="bytes-qtype"),
        pytest.param(lambda: reference.fp16_to_fp32(np.zeros(4, np.float32)), id="fp16-dtype"),
    ],
)
def test_bad_input_raises_kquant_error(call):
    with pytest.raises(KQuantError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) > 20
    assert isinstance(info.value, ValueError)


@needs_lib
@pytest.mark.parametrize("qtype", ["q4_k", "Q4_K", " q4_K ", T.Q4_K, int(T.Q4_K), np.int32(12)], ids=repr)
def test_qtype_spellings(qtype):
    assert np.array_equal(reference.quantize(X, qtype), reference.quantize(X, T.Q4_K))


# availability and loading ---------------------------------------------------------------


@needs_lib
def test_library_path_points_at_ggml_base():
    path = reference.library_path()
    assert path.is_file() and "ggml-base" in path.name


def test_missing_library_raises_oracle_unavailable(monkeypatch):
    monkeypatch.setattr(reference.ggml, "_candidate_folders", lambda: iter(()))
    reference.ggml.library.cache_clear()
    try:
        assert reference.available() is False
        hint = r'pip install "kquant\[llama\]" \(llama-cpp-python==0\.3\.36'
        with pytest.raises(reference.OracleUnavailable, match=hint):
            reference.quantize(X, "Q4_K")
        assert issubclass(reference.OracleUnavailable, KQuantError)
    finally:
        monkeypatch.undo()
        reference.ggml.library.cache_clear()  # the next test loads the real library again
