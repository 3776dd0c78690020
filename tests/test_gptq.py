"""GPTQ onto ggml's grids (kquant.methods.gptq), as specifications.

* With an identity Hessian there is nothing to compensate: GPTQ is round-to-nearest, and its
  blocks are ``kquant.quantize``'s bytes (ggml's), on random and nasty matrices, Q4_0 and Q4_K.
* With a real Hessian each rounded column's error is pushed onto the columns not yet rounded,
  through the upper Cholesky factor of H⁻¹; the layer's output error ``tr(E H Eᵀ)`` falls below
  round-to-nearest's, on the same grid type.
* The lazy block updates change the order of the arithmetic, not the algorithm.
* Dead inputs get zero weights; bad input is one KQuantError line.
* The whole bundled model, GPTQ'd layer by layer, is a GGUF file llama.cpp loads and runs, with
  every block matrix GPTQ's blocks and every other tensor llama.cpp's own.
"""

from __future__ import annotations

import numpy as np
import pytest

import kquant
from kquant import reference
from kquant.errors import KQuantError
from kquant.gguf.reader import open_gguf
from kquant.methods import gptq
from kquant.model import cache, hub, runner
from kquant.model.forward import Llama

TYPES = ["Q4_0", "Q4_K"]


def nasty(cols: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, cols)).astype(np.float32)
    spikes = np.where(rng.random((8, cols)) < 0.01, np.float32(300), np.float32(1))
    ties = np.round(x * 4) / 4  # many values on exact half-steps of simple scales
    mixed = x.copy()
    mixed[:, ::7] = 0
    mixed[2] = -0.0
    mixed[3] = 1e-39  # subnormal: 1/d overflows in Q4_0
    mixed[4, :32] = -2.5  # a constant block, negative
    return {
        "gaussian": x,
        "zeros": np.zeros((3, cols), np.float32),
        "negative zeros": np.full((3, cols), -0.0, np.float32),
        "constant": np.full((3, cols), 0.7, np.float32),
        "outliers": x * spikes,
        "ties": ties.astype(np.float32),
        "mixed": mixed,
        "float16 weights": x.astype(np.float16).astype(np.float32),
    }


def correlated_inputs(cols: int, n: int = 4096, seed: int = 1) -> np.ndarray:
    """Inputs whose columns are correlated and unevenly loud, as a layer's activations are."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((cols, cols)) / np.sqrt(cols) + np.eye(cols)
    loud = np.exp(rng.standard_normal(cols))
    return (rng.standard_normal((n, cols)) @ mix) * loud


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("case", list(nasty(512)))
def test_identity_hessian_is_round_to_nearest_byte_for_byte(qtype, case):
    W = nasty(512)[case]
    got = gptq.quantize(W, np.eye(512), qtype)
    want = kquant.quantize(W, qtype)
    assert np.array_equal(got.blocks, want)
    assert np.array_equal(got.values, kquant.dequantize(want, qtype))


@pytest.mark.parametrize("qtype", TYPES)
def test_identity_hessian_gives_ggml_own_bytes(qtype):
    W = nasty(768, seed=3)["outliers"]
    assert np.array_equal(gptq.quantize(W, np.eye(768), qtype).blocks, reference.quantize(W, qtype))


@pytest.mark.parametrize("qtype", TYPES)
def test_a_real_hessian_lowers_the_output_error_below_round_to_nearest(qtype):
    rng = np.random.default_rng(2)
    W = rng.standard_normal((64, 256)).astype(np.float32)
    X = correlated_inputs(256)
    H = 2 * X.T @ X / len(X)
    got = gptq.quantize(W, H, qtype)
    rtn = kquant.dequantize(kquant.quantize(W, qtype), qtype)
    assert gptq.output_error(W, got.values, H) < 0.7 * gptq.output_error(W, rtn, H)
    # ...while the weights themselves move further from W: the error went where X cannot see it.
    assert np.sum((got.values - W) ** 2) > np.sum((rtn - W) ** 2)
    # The blocks are a valid encoding of the values GPTQ reports.
    assert np.array_equal(kquant.dequantize(got.blocks, qtype), got.values)


def test_the_first_column_error_is_pushed_by_the_inverse_hessian():
    """Column 0 is rounded as it is; its error e moves column j by -e · H⁻¹[0, j] / H⁻¹[0, 0] (OBS)."""
    rng = np.random.default_rng(4)
    W = rng.standard_normal((16, 64)).astype(np.float32)
    X = correlated_inputs(64, seed=5)
    H = 2 * X.T @ X / len(X)
    U, dead = gptq.inverse_factor(H, percdamp=0.01)
    Hd = H + 0.01 * np.mean(np.diag(H)) * np.eye(64)
    Hi = np.linalg.inv(Hd)
    assert not dead.any()
    assert np.allclose(U.T @ U, Hi)  # the upper Cholesky factor of the damped H's inverse
    assert np.allclose(U[0] / U[0, 0], Hi[0] / Hi[0, 0])  # so row 0 of U carries the OBS update
    got = gptq.quantize(W, H, "Q4_0")
    # Rounded alone, column 0 equals round-to-nearest's first column (its group's scale is W's own).
    assert np.array_equal(got.values[:, 0], kquant.dequantize(kquant.quantize(W, "Q4_0"), "Q4_0")[:, 0])


@pytest.mark.parametrize("qtype", TYPES)
def test_lazy_block_updates_change_the_arithmetic_not_the_result(qtype):
    rng = np.random.default_rng(6)
    W = rng.standard_normal((32, 512)).astype(np.float32)
    X = correlated_inputs(512, seed=7)
    H = 2 * X.T @ X / len(X)
    a = gptq.quantize(W, H, qtype, blocksize=128).values
    b = gptq.quantize(W, H, qtype, blocksize=512).values
    # Float sums in another order may flip a level that sat on a rounding edge; nearly all agree.
    assert np.mean(a == b) > 0.99


def test_dead_inputs_get_zero_weights():
    rng = np.random.default_rng(8)
    W = rng.standard_normal((8, 64)).astype(np.float32)
    X = correlated_inputs(64, seed=9)
    X[:, [5, 40]] = 0  # two inputs that never fire
    got = gptq.quantize(W, 2 * X.T @ X / len(X), "Q4_0")
    assert (got.values[:, [5, 40]] == 0).all()


def test_bad_input_is_one_clear_error():
    W = np.ones((4, 64), np.float32)
    with pytest.raises(KQuantError, match="Q4_0, Q4_K"):
        gptq.quantize(W, np.eye(64), "Q5_1")
    with pytest.raises(KQuantError, match="multiple of 256"):
        gptq.quantize(W, np.eye(64), "Q4_K")
    with pytest.raises(KQuantError, match=r"H must be \(64, 64\)"):
        gptq.quantize(W, np.eye(32), "Q4_0")
    with pytest.raises(KQuantError, match="positive definite"):
        gptq.quantize(W, -np.eye(64), "Q4_0")
    with pytest.raises(KQuantError, match="blocksize"):
        gptq.quantize(W, np.eye(64), "Q4_0", blocksize=48)


@pytest.fixture(scope="module", params=TYPES)
def bundled_gptq(request, tmp_path_factory):
    """The bundled model GPTQ'd with the default settings (a fresh cache: the cold path runs)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KQUANT_DATA", str(tmp_path_factory.mktemp("cache")))
    try:
        qtype = request.param
        yield qtype, gptq.cached_file(hub.bundled(), qtype), gptq.cached_model(hub.bundled(), qtype)
    finally:
        mp.undo()


def test_the_whole_model_file_is_gptq_blocks_in_llama_cpp_plan(bundled_gptq):
    qtype, path, made = bundled_gptq
    rtn = cache.quantized(hub.bundled(), gptq.MIXES[qtype], pure=True)
    ours, theirs = open_gguf(path), open_gguf(rtn)
    by_name = {t.name: t for t in theirs.tensors}
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    n_layer = Llama.load(hub.bundled()).cfg.n_layer
    for t in ours.tensors:
        assert t.type == by_name[t.name].type
        assert t.type.name in (qtype, "F32")
        data = np.asarray(t.data).reshape(-1)
        if t.name.startswith("blk.") and t.name.split(".")[2] in gptq.SHARED_INPUT:
            assert np.array_equal(data, made[t.name].reshape(-1))
            assert not np.array_equal(data, np.asarray(by_name[t.name].data).reshape(-1))
        else:  # token_embd and the norms: llama.cpp's own
            assert np.array_equal(data, np.asarray(by_name[t.name].data).reshape(-1))
    assert len([k for k in made if not k.startswith("proxy/")]) == 7 * n_layer


def test_every_matrix_output_error_is_below_round_to_nearest(bundled_gptq):
    _, _, made = bundled_gptq
    proxies = {k: v for k, v in made.items() if k.startswith("proxy/")}
    assert proxies and all(g < r for g, r in proxies.values())


def test_the_file_loads_and_runs_in_llama_cpp(bundled_gptq):
    _, path, _ = bundled_gptq
    m = runner.load(path)
    try:
        ids = m.tokenize("Once upon a time", bos=True)
        logits = m.logits(ids)
        assert logits.shape[0] == len(ids) and np.isfinite(logits).all()
        ref = Llama.load(path).logits(ids)  # the numpy pass reads the same blocks
        assert np.corrcoef(ref[-1], logits[-1])[0, 1] > 0.99
    finally:
        m.close()


def test_damping_pulls_gptq_towards_round_to_nearest():
    """percdamp · mean(diag H) on the diagonal: the steps shrink, and the output error climbs to round-to-nearest's."""
    rng = np.random.default_rng(10)
    W = rng.standard_normal((32, 256)).astype(np.float32)
    X = correlated_inputs(256, seed=11)
    H = 2 * X.T @ X / len(X)
    rtn = gptq.output_error(W, kquant.dequantize(kquant.quantize(W, "Q4_0"), "Q4_0"), H)
    errors, steps = [], []
    for percdamp in [0.01, 1.0, 100.0, 1e5]:
        errors.append(gptq.output_error(W, gptq.quantize(W, H, "Q4_0", percdamp=percdamp).values, H))
        U, _ = gptq.inverse_factor(H, percdamp)
        steps.append(np.abs(np.triu(U / np.diag(U)[:, None], 1)).max())
    assert errors[0] < errors[2] < errors[3] and errors[3] > 0.95 * rtn
    assert steps == sorted(steps, reverse=True) and steps[-1] < 1e-3


def test_a_precomputed_inverse_factor_gives_the_same_blocks():
    """quantize(..., factor=inverse_factor(H, p)) is quantize(..., percdamp=p): the factor is not computed twice."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 64)) * np.linspace(0.1, 3, 64)
    H = 2 * X.T @ X / len(X)
    W = rng.standard_normal((8, 64)).astype(np.float32)
    for percdamp in (0.01, 1.0):
        plain = gptq.quantize(W, H, "Q4_0", percdamp=percdamp)
        given = gptq.quantize(W, H, "Q4_0", percdamp=percdamp, factor=gptq.inverse_factor(H, percdamp))
        np.testing.assert_array_equal(plain.blocks, given.blocks)
        assert not np.array_equal(plain.blocks, gptq.quantize(W, H, "Q4_0", percdamp=100 * percdamp).blocks)
