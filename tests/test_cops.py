"""The C arithmetic helpers that byte-exactness rests on, checked against plain loops."""

import numpy as np
import pytest

from kquant.formats import q4_0, q5_0
from kquant.formats.cops import (
    c_float_to_int8,
    fp16_nonfinite,
    inverse_or_zero,
    lane_max_min,
    lanes,
    lanes_to_rows,
    nearest_int,
    put_fp16,
    seqsum,
    signed_absmax,
    to_fp16,
    widen_fp16,
)


@pytest.mark.parametrize("shape", [(16, 1), (32, 1), (8, 2), (32, 3), (256, 1000)])
def test_seqsum_adds_in_c_order_for_any_number_of_columns(shape):
    # Wildly mixed magnitudes: pairwise and sequential summation give different bits.
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(shape) * np.exp(rng.uniform(-20, 20, shape))).astype(np.float32)
    expected = a[0].copy()
    for row in a[1:]:
        expected = expected + row  # float32 + float32, one rounding per step, like C
    np.testing.assert_array_equal(seqsum(a).view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("columns", [1, 2, 100])
def test_seqsum_is_not_numpys_default_sum(columns):
    # 1e8 then ones: in C order each +1 is lost to rounding (float32 spacing at 1e8 is 8);
    # numpy's pairwise sum adds the ones together first and keeps them.
    a = np.ones((32, columns), np.float32)
    a[0] = 1e8
    assert (seqsum(a) == np.float32(1e8)).all()
    assert (np.sum(np.ascontiguousarray(a.T), axis=1) > np.float32(1e8)).all()


def test_seqsum_along_a_middle_axis():
    a = np.random.default_rng(1).standard_normal((2, 32, 1)).astype(np.float32) * 1e6
    expected = a[:, 0].copy()
    for i in range(1, 32):
        expected = expected + a[:, i]
    np.testing.assert_array_equal(seqsum(a, axis=1), expected)


def test_nearest_int_rounds_half_to_even_like_ggml():
    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999998, 7.0], np.float32)
    np.testing.assert_array_equal(nearest_int(v), [0, 2, 2, 0, -2, -2, 2, 7])


def test_nearest_int_refuses_float64_which_would_silently_change_the_bits():
    with pytest.raises(TypeError):
        nearest_int(np.array([0.5]))


def test_float_to_int8_truncates_and_garbles_like_x86():
    v = np.array([1.9, -1.9, 127.5, np.inf, np.nan, 300.0], np.float32)
    # trunc; trunc; trunc; cvttss2si gives INT_MIN (low byte 0) for inf/NaN; 300 wraps to 44
    np.testing.assert_array_equal(c_float_to_int8(v), [1, -1, 127, 0, 0, 44])


@pytest.mark.parametrize("columns", [1, 3])
def test_seqsum_of_negative_zeros_has_the_sign_c_gives_it(columns):
    # float s = 0; s += -0.0 ... is +0.0; float s = a[0]; s += a[1] ... is -0.0.
    a = np.full((4, columns), -0.0, np.float32)
    assert not np.signbit(seqsum(a)).any()
    assert np.signbit(seqsum(a, first=True)).all()
    a[2] = 1.5
    np.testing.assert_array_equal(seqsum(a, first=True), seqsum(a))


def test_lanes_put_weight_j_of_block_b_at_j_div_4_b_j_mod_4_and_lanes_to_rows_undoes_it():
    x = np.arange(5 * 32, dtype=np.float32).reshape(5, 32)  # weight j of block b is 32 b + j
    xl = lanes(x)
    assert xl.shape == (8, 5, 4)
    b, j = np.meshgrid(np.arange(5), np.arange(32), indexing="ij")
    np.testing.assert_array_equal(xl[j // 4, b, j % 4], x)
    q = (x % 251).astype(np.uint8)
    np.testing.assert_array_equal(lanes_to_rows(lanes(q.astype(np.float32)).astype(np.uint8)), q)


def test_lane_max_min_are_each_blocks_extremes():
    x = np.random.default_rng(0).normal(size=(300, 32)).astype(np.float32)
    x[7] = 0.0
    x[8, 31] = 50.0  # an extreme in the last lane of the last row
    hi, lo = lane_max_min(lanes(x))
    np.testing.assert_array_equal(hi, x.max(axis=1))
    np.testing.assert_array_equal(lo, x.min(axis=1))


def test_lane_max_min_of_one_block_and_of_a_block_holding_nan():
    x = np.arange(64, dtype=np.float32).reshape(2, 32)[::-1].copy()  # the extremes at the two ends
    x[1, 13] = np.nan
    hi, lo = lane_max_min(lanes(x))
    np.testing.assert_array_equal(hi, [63.0, np.nan])
    np.testing.assert_array_equal(lo, [32.0, np.nan])
    hi, lo = lane_max_min(lanes(x[:1]))
    np.testing.assert_array_equal(hi, [63.0])
    np.testing.assert_array_equal(lo, [32.0])


def test_inverse_or_zero_is_cs_d_if_nonzero_else_zero_and_says_whether_all_are_finite():
    # 1/1e-39 overflows to inf (C's id is inf too); 0 and -0 give 0; NaN stays NaN.
    d = np.array([2.0, -0.5, 0.0, -0.0, 1e-39, np.nan, 3e38], np.float32)
    with np.errstate(all="ignore"):
        expected = np.where(d != 0, np.float32(1) / d, np.float32(0))
        got, finite = inverse_or_zero(d)
        assert not finite
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
        got, finite = inverse_or_zero(d[[0, 1, 6]])
    assert finite
    np.testing.assert_array_equal(got.view(np.uint32), expected[[0, 1, 6]].view(np.uint32))


@pytest.mark.parametrize("start", [0, 3])
def test_put_fp16_writes_the_little_endian_fp16_of_each_value(start):
    v = np.random.default_rng(2).normal(size=50).astype(np.float32) * np.float32(1e3)
    out = np.random.default_rng(3).integers(0, 256, (50, 9), dtype=np.uint8)
    expected = out.copy()
    expected[:, start : start + 2] = v.astype("<f2").view(np.uint8).reshape(-1, 2)  # numpy's cast: ties to even
    put_fp16(out, start, v)  # float32 in: rounded to fp16
    np.testing.assert_array_equal(out, expected)
    put_fp16(out, start, v.astype(np.float16))
    np.testing.assert_array_equal(out, expected)


def test_signed_absmax_keeps_the_first_of_a_and_minus_a_as_c_does():
    x = np.zeros((32, 3), np.float32)  # (elements, groups)
    x[[2, 9], 0] = [-3.0, 3.0]  # -3 first
    x[[2, 9], 1] = [3.0, -3.0]  # +3 first
    x[5, 2] = -0.0  # an all-zero group keeps C's initial +0.0
    got = signed_absmax(x)
    np.testing.assert_array_equal(got, [-3.0, 3.0, 0.0])
    assert not np.signbit(got[2])


def test_nibbles_and_fifth_bits_pack_as_the_c_struct_says():
    q = np.random.default_rng(1).integers(0, 32, (64, 32), dtype=np.uint8)
    qs = q4_0.pack_nibbles(q)  # byte j = low nibble of q[j] | low nibble of q[j + 16] << 4
    np.testing.assert_array_equal(qs, (q[:, :16] & 0xF) | ((q[:, 16:] & 0xF) << 4))
    qh = q5_0.pack_qh(q).astype(np.uint32)  # bit j of the little-endian uint32 = bit 4 of q[j]
    word = qh[:, 0] | qh[:, 1] << 8 | qh[:, 2] << 16 | qh[:, 3] << 24
    np.testing.assert_array_equal((word[:, None] >> np.arange(32, dtype=np.uint32)) & 1, (q >> 4) & 1)


def test_widen_fp16_gives_every_fp16_bit_pattern_the_float32_numpy_casts_it_to():
    # All 65536 patterns: zeros of both signs, subnormals, normals, the largest finite, Inf, NaN.
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    expected = bits.view(np.float16).astype(np.float32)
    got = widen_fp16(bits)
    assert got.dtype == np.float32 and got.shape == bits.shape
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    # Inf / NaN are the slow path's; a finite-only array takes the bit route alone.
    finite = bits[np.isfinite(expected)].view(np.float16).reshape(-1, 32)
    np.testing.assert_array_equal(widen_fp16(finite).view(np.uint32), finite.astype(np.float32).view(np.uint32))
    assert widen_fp16(np.zeros((0, 4), np.float16)).shape == (0, 4)


def test_to_fp16_rounds_every_float32_as_numpys_cast_ties_carries_subnormals_and_edges_included():
    # Every scale an encoder stores goes through to_fp16 (integer steps, not numpy's per-value cast).
    # Checked once over all 2**32 float32 bit patterns; here, the cases each step exists for.
    rng = np.random.default_rng(0)
    exponents = np.arange(256, dtype=np.uint32) << 23
    mantissas = np.concatenate(
        [
            rng.integers(0, 1 << 23, 64, dtype=np.uint32),
            # the 13 dropped bits at a tie, just below and above it, with the kept bit even and odd
            np.array([0x1000, 0x0FFF, 0x1001, 0x3000, 0x2FFF, 0x3001, 0x7FF000, 0x7FEFFF, 0x7FFFFF, 0], np.uint32),
        ]
    )
    bits = (exponents[:, None] | mantissas[None, :]).reshape(-1)  # every exponent
    # (an array holding a value that rounds to inf takes numpy's cast whole: the finite ones apart)
    finite = bits[bits < 0x477FF000]
    halfway = (np.arange(0, 1025) + 0.5).astype(np.float32) * np.float32(2.0**-24)  # subnormal fp16 ties
    edges = np.array([2.0**-14, 65504, 65519.99, 65520, np.inf, np.nan, 0.0], np.float32)
    for v in (
        finite.view(np.float32),
        bits.view(np.float32),
        np.concatenate([halfway, np.nextafter(halfway, 0), np.nextafter(halfway, 1)]),
        edges[:3],  # finite, below where rounding reaches inf: the integer path
        edges,
        rng.normal(0, 1e-3, 10_000).astype(np.float32),
    ):
        v = np.concatenate([v, -v])
        with np.errstate(all="ignore"):
            assert np.array_equal(to_fp16(v).view(np.uint16), v.astype(np.float16).view(np.uint16))
    assert to_fp16(np.zeros((2, 3), np.float32)).shape == (2, 3)


def test_fp16_nonfinite_says_whether_any_fp16_value_is_inf_or_nan():
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    flags = np.array([fp16_nonfinite(every[i : i + 1]) for i in range(0, 1 << 16, 7)] + [fp16_nonfinite(every[-1:])])
    want = ~np.isfinite(every.view(np.float16)[list(range(0, 1 << 16, 7)) + [(1 << 16) - 1]])
    np.testing.assert_array_equal(flags, want)
    finite = every.view(np.float16)[np.isfinite(every.view(np.float16))]
    assert not fp16_nonfinite(finite) and fp16_nonfinite(every) and not fp16_nonfinite(finite[:0])
