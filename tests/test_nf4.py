"""NF4 (kquant.formats.nf4) against its definition, and byte for byte against bitsandbytes.

The first half needs nothing but numpy: the levels, the thresholds, a weight exactly on a
threshold, packing, zeros and constant blocks, double quantization, bad input, and the error
against Q4_0 and a plain absmax int4. The second half runs where bitsandbytes is installed
(`make oracle-nf4` installs torch's CPU build and bitsandbytes==0.50.2 into .venv/bnb and runs
this file there): every byte of quantize_4bit(quant_type="nf4") and every float of
dequantize_4bit must agree.
"""

import os

import numpy as np
import pytest

import kquant
from kquant import KQuantError
from kquant.formats import nf4

f32 = np.float32


def bits(a) -> np.ndarray:
    return np.asarray(a, dtype=f32).view(np.int32)


# --------------------------------------------------------------------- without bitsandbytes


def test_the_levels_are_normal_quantiles_to_the_bit():
    """create_normal_map(offset=0.9677083), recomputed with the stdlib's inverse normal CDF."""
    assert np.array_equal(bits(nf4.normal_levels()), bits(nf4.NF4_LEVELS))
    levels = nf4.NF4_LEVELS
    assert levels[0] == -1 and levels[7] == 0 and levels[15] == 1 and (np.diff(levels) > 0).all()
    assert (levels > 0).sum() == 8 and (levels < 0).sum() == 7, "one more level above zero than below"
    assert not np.array_equal(nf4.normal_levels(0.99), levels), "the offset moves the levels"
    symmetric = nf4.normal_levels(use_extra_value=False)
    assert symmetric.size == 15 and np.array_equal(symmetric, -symmetric[::-1])


def test_the_thresholds_are_the_float32_midpoints_of_the_tree():
    midpoints = (nf4.NF4_LEVELS[:-1] + nf4.NF4_LEVELS[1:]) / f32(2)
    assert np.array_equal(bits(nf4.NF4_THRESHOLDS), bits(midpoints))


def test_a_weight_exactly_on_a_threshold_takes_the_lower_level():
    t = nf4.NF4_THRESHOLDS
    assert nf4.encode_levels(t).tolist() == list(range(15))
    assert nf4.encode_levels(np.nextafter(t, f32(2))).tolist() == list(range(1, 16))
    # A nearest-level search measures float32 distances, which need not tie on a threshold:
    naive = nf4.nearest_level_codes(t)
    assert np.flatnonzero(naive != np.arange(15)).tolist() == [0, 1, 3, 4, 12, 14]
    # ...and through the whole encoder: a block whose absmax is 2 scales 2t back to t exactly.
    x = np.concatenate([[f32(2)], f32(2) * t]).astype(f32)
    assert nf4.quantize_nf4(x, double_quant=False).codes[1:].tolist() == list(range(15))


def test_two_codes_per_byte_the_first_in_the_high_nibble():
    assert nf4.pack(np.array([1, 2, 3], np.uint8)).tolist() == [0x12, 0x37], "odd count: pad with code 7 (0.0)"
    t = nf4.quantize_nf4(np.array([-1, 1, 0], f32), double_quant=False)
    assert t.packed.tolist() == [0x0F, 0x77] and t.codes.tolist() == [0, 15, 7]


def test_zero_and_constant_blocks():
    z = nf4.quantize_nf4(np.zeros(100, f32), double_quant=False)
    assert (z.codes == 7).all() and not nf4.dequantize_nf4(z).any()
    assert z.absmax.tolist() == [0, nf4.TINY], "bitsandbytes stores only the partial block's absmax clamped"
    for c in (f32(0.37), f32(-3e-5)):
        t = nf4.quantize_nf4(np.full(130, c, f32))
        assert (t.codes == (15 if c > 0 else 0)).all()
        assert np.abs(nf4.dequantize_nf4(t) - c).max() <= 1e-3 * abs(c)  # the scale went through 8 bits


def test_round_trip_error_and_requantizing_is_a_fixed_point():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((48, 200)) * rng.uniform(0.01, 3, (48, 1))).astype(f32)  # 9600: a partial block
    t = nf4.quantize_nf4(x, double_quant=False)
    y = nf4.dequantize_nf4(t)
    assert y.shape == x.shape and y.dtype == f32
    scale = np.repeat(t.absmax, 64)[: x.size].reshape(x.shape)
    widest_half_gap = np.diff(nf4.NF4_LEVELS).max() / 2
    assert (np.abs(y - x) <= widest_half_gap * scale * (1 + 1e-6)).all()
    again = nf4.quantize_nf4(y, double_quant=False)
    assert np.array_equal(again.packed, t.packed) and np.array_equal(again.absmax, t.absmax)


def test_double_quantization_costs_about_an_eighth_of_a_bit():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(64 * 256 * 4).astype(f32)
    plain, dq = nf4.quantize_nf4(x, double_quant=False), nf4.quantize_nf4(x)
    assert nf4.bits_per_weight(plain) == 4.5
    assert nf4.bits_per_weight(dq) == pytest.approx(4 + 8 / 64 + 32 / (64 * 256) + 32 / x.size)
    assert dq.absmax.dtype == np.uint8 and dq.absmax2.size == 4 and np.array_equal(dq.packed, plain.packed)
    rel = np.abs(dq.scales() - plain.absmax) / plain.absmax
    assert rel.max() < 0.02, "the 8-bit dynamic map keeps each absmax within a few percent"


def test_the_lut_index_does_not_depend_on_a_fused_multiply_add():
    v = np.random.default_rng(3).uniform(-1, 1, 1_000_000).astype(f32)
    v = np.concatenate([v, np.linspace(-1, 1, 65535 * 4 + 1, dtype=f32), [f32(-1), f32(1)]])
    assert np.array_equal(nf4.lut_index(v), nf4.lut_index(v, fused=True))


def test_the_absmax_codes_are_the_nearest_dynamic_value_up_to_the_lut_step():
    v = np.random.default_rng(4).uniform(-1, 1, 5000).astype(f32)
    v[0] = 1
    q, absmax = nf4.quantize_blockwise(v, 5000)
    assert absmax.tolist() == [1.0]
    err = np.abs(nf4.DYNAMIC_MAP[q] - v)
    best = np.abs(nf4.DYNAMIC_MAP[None, :] - v[:, None]).min(axis=1)
    assert (err <= best + 2 / 65535).all()


def test_the_cascade_sum_is_a_sum():
    import math

    rng = np.random.default_rng(5)
    for n in (1, 7, 8, 100, 1000, 40000):
        a = rng.uniform(0, 3, n).astype(f32)
        assert abs(float(nf4.torch_sum(a)) - math.fsum(a.tolist())) <= 1e-6 * math.fsum(a.tolist())
    a = np.ones(20, f32)
    assert nf4.torch_mean(a) == 1


@pytest.mark.parametrize(
    ("x", "kwargs", "says"),
    [
        (np.ones(64, f32), {"blocksize": 48}, "blocksize 48"),
        (np.ones(64), {}, "float64"),
        (np.ones(64, np.int8), {}, "int8"),
        (np.array([1, np.nan], f32), {}, "NaN"),
        (np.zeros(0, f32), {}, "at least one"),
    ],
)
def test_bad_input_says_what_to_do_in_one_line(x, kwargs, says):
    with pytest.raises(KQuantError) as e:
        nf4.quantize_nf4(x, **kwargs)
    assert says in str(e.value) and "\n" not in str(e.value)


def _snr_db(x, y):
    return float(10 * np.log10((x.astype(np.float64) ** 2).mean() / ((y - x).astype(np.float64) ** 2).mean()))


def test_on_normal_weights_nf4_beats_absmax_int4_and_nearly_matches_q4_0_with_fewer_bits():
    """QLoRA's argument, on N(0, 1) weights: levels at normal quantiles beat evenly spaced ones.

    The paper compares with a symmetric absmax Int4 (15 levels); llama.cpp's Q4_0 is a better
    int4 (16 levels, the signed max on the long end, blocks of 32 at 4.5 bpw), and it keeps a
    small edge over NF4's 4.127 bits.
    """
    x = np.random.default_rng(6).standard_normal((256, 1024)).astype(f32)
    nf = _snr_db(x, nf4.dequantize_nf4(nf4.quantize_nf4(x)))
    blocks = x.reshape(-1, 64)
    am = np.abs(blocks).max(axis=1, keepdims=True)
    int4 = _snr_db(x, (np.round(blocks / am * 7) * am / 7).reshape(x.shape))
    q4_0 = _snr_db(x, kquant.dequantize(kquant.quantize(x, "Q4_0"), "Q4_0").reshape(x.shape))
    assert nf - int4 > 1.0
    assert 0 < q4_0 - nf < 1.0
    nf32 = nf4.quantize_nf4(x, blocksize=32)  # 4.25 bits per weight: closer still
    assert abs(_snr_db(x, nf4.dequantize_nf4(nf32)) - q4_0) < 0.3


def test_on_the_bundled_models_weights_nf4_trails_q4_0_and_q4_k():
    """The tiny model's matrices are close to normal, and the ranking is the one on N(0, 1):
    Q4_K (4.5 bpw) > Q4_0 (4.5 bpw) > NF4 (4.127 bpw) in SNR, on every matrix tried."""
    from kquant.gguf.reader import open_gguf
    from kquant.model import hub

    with open_gguf(hub.bundled()) as g:
        mats = [np.array(t.data, dtype=f32) for t in g.tensors if len(t.shape) == 2 and t.shape[-1] % 256 == 0][:4]
    assert len(mats) == 4
    for x in mats:
        nf = _snr_db(x, nf4.dequantize_nf4(nf4.quantize_nf4(x)))
        q4_0, q4_k = (
            _snr_db(x, kquant.dequantize(kquant.quantize(x, q), q).reshape(x.shape)) for q in ("Q4_0", "Q4_K")
        )
        assert nf < q4_0 < q4_k and q4_k - nf > 1.5


# --------------------------------------------------------------------- against bitsandbytes

# The pinned oracle: its CPU quantize_4bit bucketizes with the tree's midpoints (before 0.50 it
# took a nearest-level argmin), and its quantize_blockwise uses the 65536-entry table.
BNB_VERSION = "0.50.2"


@pytest.fixture(scope="module")
def bnb():
    if os.environ.get("KQUANT_NF4_ORACLE"):  # `make oracle-nf4`, in CI: the oracle must be there
        import bitsandbytes
    else:
        pytest.importorskip("torch", reason="the NF4 oracle needs torch and bitsandbytes: run `make oracle-nf4`")
        bitsandbytes = pytest.importorskip("bitsandbytes", reason="the NF4 oracle: run `make oracle-nf4`")
    import torch

    assert bitsandbytes.__version__ == BNB_VERSION, f"the oracle is bitsandbytes {BNB_VERSION}"
    torch.set_num_threads(1)  # quantize_nf4's default; torch.mean's last bit depends on it from 32768 blocks
    return bitsandbytes.functional


def _inputs():
    """name -> float32 array: the shapes and values where an encoder could go wrong."""
    rng = np.random.default_rng(14)
    t = nf4.NF4_THRESHOLDS
    on_thresholds = np.concatenate([[f32(2)], f32(2) * t[rng.integers(0, 15, 4095)]]).astype(f32)
    near = np.concatenate([[f32(1)], np.nextafter(t[rng.integers(0, 15, 1000)], f32(rng.choice([-2, 2])))])
    outliers = rng.standard_normal(4096).astype(f32)
    outliers[rng.integers(0, 4096, 40)] *= 100
    half_zero = rng.standard_normal(64 * 300).astype(f32)
    half_zero[: 64 * 150] = 0
    cases = {
        "normal": rng.standard_normal(64 * 256 * 3).astype(f32),
        "matrix": (rng.standard_normal((96, 128)) * 0.02).astype(f32),
        "on_thresholds": on_thresholds,
        "on_thresholds_odd_absmax": on_thresholds * f32(0.7),
        "next_to_thresholds": near.astype(f32),
        "outliers": outliers,
        "zeros": np.zeros(1000, f32),
        "half_zero": half_zero,
        "constant": np.full(5000, f32(0.37)),
        "negative_constant": np.full(700, f32(-1.5)),
        "tiny": (rng.standard_normal(640) * 1e-30).astype(f32),
        "subnormal": (rng.standard_normal(640) * 1e-40).astype(f32),
        "huge": (rng.standard_normal(640) * 1e30).astype(f32),
        "one": np.array([0.5], f32),
        "odd": rng.standard_normal(3).astype(f32),
        "partial_block": rng.standard_normal(64 * 20 + 37).astype(f32),
        "partial_absmax_block": rng.laplace(size=64 * 256 + 65).astype(f32),
        "many_blocks": rng.standard_t(3, 64 * 1500).astype(f32),
    }
    return cases


CASES = _inputs()


def _bnb_quantize(F, x, blocksize, double_quant):
    import torch

    return F.quantize_4bit(torch.from_numpy(x), blocksize=blocksize, compress_statistics=double_quant, quant_type="nf4")


@pytest.mark.parametrize("double_quant", [True, False], ids=["dq", "plain"])
@pytest.mark.parametrize("blocksize", [64, 32, 256, 4096])
@pytest.mark.parametrize("name", sorted(CASES))
def test_byte_exact_with_bitsandbytes(bnb, name, blocksize, double_quant):
    x = CASES[name]
    packed, state = _bnb_quantize(bnb, x, blocksize, double_quant)
    t = nf4.quantize_nf4(x, blocksize, double_quant)
    assert np.array_equal(packed.numpy().reshape(-1), t.packed)
    if double_quant:
        assert np.array_equal(state.absmax.numpy(), t.absmax)
        assert bits(state.offset.numpy()) == bits(t.offset)
        assert np.array_equal(bits(state.state2.absmax.numpy()), bits(t.absmax2))
    else:
        assert np.array_equal(bits(state.absmax.numpy()), bits(t.absmax))
    if x.ndim == 1 or x.shape[-1] % blocksize == 0:  # see the AVX-512 test below for the others
        y = bnb.dequantize_4bit(packed, state).numpy()  # 1-D comes back as (1, n)
        assert y.size == x.size and np.array_equal(bits(y.reshape(x.shape)), bits(nf4.dequantize_nf4(t)))


def test_float16_weights(bnb):
    import torch

    x = (np.random.default_rng(7).standard_normal(64 * 50) * 0.05).astype(np.float16)
    packed, state = bnb.quantize_4bit(torch.from_numpy(x), compress_statistics=True, quant_type="nf4")
    t = nf4.quantize_nf4(x)
    assert np.array_equal(packed.numpy().reshape(-1), t.packed) and np.array_equal(state.absmax.numpy(), t.absmax)
    y = bnb.dequantize_4bit(packed, state).numpy().reshape(-1)  # float16 out: kquant's float32, rounded
    assert np.array_equal(y.view(np.int16), nf4.dequantize_nf4(t).astype(np.float16).view(np.int16))


def test_the_tables_and_the_thresholds_are_bitsandbytes(bnb):
    from bitsandbytes.backends.default.ops import _get_4bit_quantize_bounds

    assert np.array_equal(bits(bnb.get_4bit_type("nf4", device="cpu").numpy()), bits(nf4.NF4_LEVELS))
    assert np.array_equal(bits(bnb.create_dynamic_map().numpy()), bits(nf4.DYNAMIC_MAP))
    bounds, _order = _get_4bit_quantize_bounds("nf4", __import__("torch").device("cpu"))
    assert np.array_equal(bits(bounds.numpy()), bits(nf4.NF4_THRESHOLDS))


@pytest.mark.parametrize("use_extra_value", [True, False])
@pytest.mark.parametrize("offset", [0.9677083, 0.99, 0.95])
def test_normal_levels_are_create_normal_map(bnb, offset, use_extra_value):
    table = bnb.create_normal_map(offset, use_extra_value).numpy()  # 256 values, padded with zeros
    levels = nf4.normal_levels(offset, use_extra_value)
    assert levels.size == (16 if use_extra_value else 15)
    assert np.array_equal(bits(np.unique(table)), bits(levels))


def test_on_a_threshold_bitsandbytes_takes_the_lower_level_where_nearest_search_does_not(bnb):
    x = np.concatenate([[f32(1)], nf4.NF4_THRESHOLDS, [f32(0)]]).astype(f32)  # 17: an odd count too
    packed, _ = _bnb_quantize(bnb, x, 64, False)
    t = nf4.quantize_nf4(x, double_quant=False)
    assert np.array_equal(packed.numpy().reshape(-1), t.packed)
    assert t.codes[1:16].tolist() == list(range(15))
    assert not np.array_equal(nf4.nearest_level_codes(x[1:16]), t.codes[1:16])


def test_the_absmax_mean_is_torchs_to_the_bit(bnb):
    import torch

    rng = np.random.default_rng(8)
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for n in (1, 5, 8, 15, 16, 17, 63, 64, 65, 100, 257, 1000, 4099, 20000, 32768, 40000, 100003):
                a = rng.uniform(0, 3, n).astype(f32)
                assert bits(torch.from_numpy(a).mean().numpy()) == bits(nf4.torch_mean(a, threads=threads)), (
                    n,
                    threads,
                )
    finally:
        torch.set_num_threads(1)


def test_bitsandbytes_avx512_dequantizer_takes_blocks_per_row(bnb):
    """A (4, 48) tensor's blocks of 64 run across rows; bitsandbytes' AVX-512 dequantizer
    indexes absmax per row (csrc/cpu_ops.cpp), so there it disagrees with its own quantizer and
    its CUDA and torch kernels. kquant follows those: the blocks are flat."""
    import torch
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("only bitsandbytes' AVX-512 path indexes blocks per row")
    x = np.random.default_rng(9).standard_normal((4, 48)).astype(f32)
    packed, state = _bnb_quantize(bnb, x, 64, False)
    t = nf4.quantize_nf4(x, double_quant=False)
    assert np.array_equal(packed.numpy().reshape(-1), t.packed)
    ours = nf4.dequantize_nf4(t)
    assert not np.array_equal(bnb.dequantize_4bit(packed, state).numpy(), ours)
    code = bnb.get_4bit_type("nf4", device="cpu")
    flat = _dequantize_4bit_compute(packed.reshape(-1), state.absmax, code, 64, (4, 48), torch.float32).numpy()
    assert np.array_equal(bits(flat), bits(ours))
