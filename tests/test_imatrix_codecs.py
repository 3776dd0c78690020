"""Specification of the importance-matrix encoders: ggml's quantize_row_*_impl, byte for byte.

With an imatrix (one importance per column, as llama.cpp's imatrix files hold),
ggml switches every type but Q8_0 to a different, weighted search. kquant.quantize
with ``imatrix=`` must give the same bytes as ggml_quantize_chunk given the same vector.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_codecs import FAMILIES, TYPES, _weights, assert_same_bytes

import kquant
from kquant import reference


def _importance(kind: str, n: int, seed: int = 0) -> np.ndarray:
    """Importance vectors of the shapes real imatrix files have, and some awkward ones."""
    rng = np.random.default_rng(seed)
    vectors = {
        # Mean squared activations: positive, heavy-tailed, a few columns far above the rest.
        "activations": rng.standard_normal(n) ** 2 * np.exp(rng.standard_normal(n)),
        "uniform": np.ones(n),
        "some_dead_columns": np.where(rng.random(n) < 0.3, 0.0, rng.random(n)),
        "one_hot_columns": np.where(np.arange(n) % 37 == 0, 1e4, 1e-4),
        "all_zero": np.zeros(n),
        "tiny": 1e-30 * rng.random(n),
    }
    return vectors[kind].astype(np.float32)


IMPORTANCE = ["activations", "uniform", "some_dead_columns", "one_hot_columns", "all_zero", "tiny"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("qtype", TYPES)
def test_imatrix_bytes_equal_ggml_on_every_input_family(qtype, family):
    x = _weights(family, rows=4, n=512)
    qw = _importance("activations", 512)
    assert_same_bytes(kquant.quantize(x, qtype, imatrix=qw), reference.quantize(x, qtype, imatrix=qw), qtype)


@pytest.mark.parametrize("kind", IMPORTANCE)
@pytest.mark.parametrize("qtype", TYPES)
def test_imatrix_bytes_equal_ggml_for_every_kind_of_importance(qtype, kind):
    x = _weights("heavy_tailed", rows=6, n=768, seed=1)
    qw = _importance(kind, 768, seed=2)
    assert_same_bytes(kquant.quantize(x, qtype, imatrix=qw), reference.quantize(x, qtype, imatrix=qw), qtype)


@pytest.mark.parametrize("qtype", TYPES)
def test_imatrix_bytes_equal_ggml_across_rows_and_chunks(qtype):
    # The legacy paths take a mean square over each whole row: rows must not be split.
    x = _weights("gaussian", rows=40, n=2304, seed=3)
    qw = _importance("activations", 2304, seed=4)
    assert_same_bytes(kquant.quantize(x, qtype, imatrix=qw), reference.quantize(x, qtype, imatrix=qw), qtype)
    np.testing.assert_array_equal(
        kquant.quantize(x[7], qtype, imatrix=qw), reference.quantize(x[7:8], qtype, imatrix=qw)[0]
    )


@pytest.mark.parametrize("qtype", TYPES)
def test_imatrix_bytes_equal_ggml_on_generated_arrays(qtype):
    n = 256

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.just(n)), elements=st.floats(-1e3, 1e3, width=32)),
        hnp.arrays(np.float32, (n,), elements=st.floats(0, 1e3, width=32)),
    )
    def check(x, qw):
        assert_same_bytes(kquant.quantize(x, qtype, imatrix=qw), reference.quantize(x, qtype, imatrix=qw), qtype)

    check()


@pytest.mark.parametrize("qtype", [t for t in TYPES if t != "Q8_0"])
def test_an_imatrix_changes_the_search_even_when_it_is_uniform(qtype):
    # A flat imatrix is not "no imatrix": ggml then runs a different, finer search.
    x = _weights("gaussian", rows=8, n=512, seed=5)
    plain = kquant.quantize(x, qtype)
    assert not np.array_equal(kquant.quantize(x, qtype, imatrix=np.ones(512, np.float32)), plain)


def test_q8_0_ignores_the_imatrix_as_ggml_does():
    x = _weights("gaussian", rows=4, n=256)
    np.testing.assert_array_equal(
        kquant.quantize(x, "Q8_0", imatrix=_importance("activations", 256)), kquant.quantize(x, "Q8_0")
    )


@pytest.mark.parametrize("qtype", ["Q2_K", "Q3_K", "Q4_K", "Q4_0"])
def test_important_columns_are_reproduced_more_closely(qtype):
    # The point of the imatrix: error moves away from the columns that matter.
    x = _weights("gaussian", rows=64, n=512, seed=6)
    qw = np.where(np.arange(512) % 8 == 0, 100.0, 1.0).astype(np.float32)
    err_plain = (kquant.dequantize(kquant.quantize(x, qtype), qtype) - x) ** 2
    err_imat = (kquant.dequantize(kquant.quantize(x, qtype, imatrix=qw), qtype) - x) ** 2
    assert (err_imat @ qw).sum() < (err_plain @ qw).sum()


@pytest.mark.parametrize(
    "imatrix, message",
    [
        (np.ones(255, np.float32), r"shape \(255,\), the rows have 256 columns"),
        (np.ones((2, 256), np.float32), "shape"),
        (np.full(256, np.nan, np.float32), "finite and >= 0"),
        (np.full(256, -1.0, np.float32), "finite and >= 0"),
        (np.array(["a"] * 256), "dtype"),
    ],
)
def test_a_bad_imatrix_raises_one_clear_error(imatrix, message):
    with pytest.raises(kquant.KQuantError, match=message):
        kquant.quantize(np.zeros((2, 256), np.float32), "Q4_K", imatrix=imatrix)


@pytest.mark.parametrize("qtype", ["Q4_1", "Q5_1", "Q2_K", "Q4_K", "Q5_K"])
def test_a_sum_of_negative_zeros_keeps_its_sign_as_in_c(qtype):
    # make_qkx3_quants starts sum_x at its first term (w[0] * x[0]), not at 0: over a block of
    # -0.0 and one weight that has no importance, the sum is -0.0, and the stored min's sign shows it.
    # (numpy's reduce starts at +0.0; found by the generated-arrays test.)
    x = np.full((1, 256), -0.0, np.float32)
    x[0, 65] = -778.5
    qw = np.zeros(256, np.float32)
    qw[64] = 23.0
    assert_same_bytes(kquant.quantize(x, qtype, imatrix=qw), reference.quantize(x, qtype, imatrix=qw), qtype)


def test_q4_k_levels_use_the_scales_as_read_back_from_their_6_bit_fields():
    # Found by the generated test: with almost every column's importance 0, the weighted search gives a
    # sub-block a negative scale; ggml stores it unclamped into a 6-bit field, where it wraps and its top
    # bits spill into another sub-block's scale, and the final levels use the scales as read back.
    runs = [(0.0, 1), (998.0, 1), (1000.0, 1), (940.15625, 1), (0.0, 2), (433.3125, 1), (0.0, 1), (127.25, 1)]
    runs += [(0.0, 1), (-633.0, 87), (-731.0, 1), (-490.0, 1), (-633.0, 29), (789.875, 1), (0.0, 1)]
    runs += [(-633.0, 94), (234.125, 1), (-633.0, 31)]
    x = np.concatenate([np.full(n, v, np.float32) for v, n in runs])[None, :]
    qw = np.zeros(256, np.float32)
    qw[96] = 223.0
    ours, theirs = kquant.quantize(x, "Q4_K", imatrix=qw), reference.quantize(x, "Q4_K", imatrix=qw)
    assert_same_bytes(ours, theirs, "Q4_K")
    from kquant.formats import q4_k

    assert (q4_k.unpack(ours).sc > 63).sum() == 0  # the fields hold what the decoder reads
