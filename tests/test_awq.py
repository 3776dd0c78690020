"""AWQ (kquant.methods.awq), specified: the scale trick, the search, the folding, the files.

What must hold, whatever the model: the scales are ``x_mean^α`` centred on 1; α = 0 is plain
round-to-nearest; scaling the columns of a matrix and dividing its input computes the same
product; folding 1/s into the RMSNorm (and into the matrix in front) leaves the model's function
unchanged before any quantization, in numpy and in llama.cpp; the quantized AWQ file is an
ordinary llama GGUF of the same types, which llama.cpp loads and runs. And what AWQ is for:
where a few input channels are much larger than the rest, it cuts the output error of
round-to-nearest; the search never picks an α worse than α = 0 on its own calibration data.
"""

from __future__ import annotations

import numpy as np
import pytest

from kquant.errors import KQuantError
from kquant.gguf.summary import inspect_gguf
from kquant.gguf.summary import sha256 as summary_sha
from kquant.methods import awq
from kquant.model import cache, hub, runner
from kquant.model.forward import Llama
from tests.tiny_llama import write_tiny_llama

RNG = np.random.default_rng(12)


@pytest.fixture(scope="module")
def bundled():
    return Llama.load(hub.bundled())


@pytest.fixture(scope="module")
def result_q4_k_m():
    return awq.search(hub.bundled(), "Q4_K_M")


def _logits(path, tokens):
    m = runner.load(path, n_ctx=256)
    try:
        return m.logits(tokens)
    finally:
        m.close()


def test_scales_are_x_mean_to_the_alpha_centred_on_one():
    x_mean = RNG.uniform(0.01, 5.0, 64).astype(np.float32)
    assert np.array_equal(awq.scales(x_mean, 0.0), np.ones(64, np.float32))  # α = 0: no scaling at all
    for a in (0.25, 0.5, 0.95):
        s = awq.scales(x_mean, a)
        np.testing.assert_allclose(s.max() * s.min(), 1.0, rtol=1e-5)  # centred on 1 on a log scale
        ratio = s / x_mean**a
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)  # proportional to x_mean^α
        assert (np.argsort(s) == np.argsort(x_mean)).all()  # louder channel, larger scale


def test_a_silent_channel_gets_the_clamped_scale_not_zero():
    s = awq.scales(np.array([0.0, 1.0, 2.0], np.float32), 0.5)
    assert np.isfinite(s).all() and (s > 0).all()


def test_the_scale_trick_computes_the_same_product():
    w = RNG.standard_normal((32, 64)).astype(np.float32)
    x = RNG.standard_normal((10, 64)).astype(np.float32)
    s = awq.scales(np.abs(x).mean(0), 0.7)
    np.testing.assert_allclose((x / s) @ (w * s).T, x @ w.T, rtol=1e-4, atol=1e-4)


def test_alpha_zero_is_round_to_nearest():
    w = RNG.standard_normal((16, 256)).astype(np.float32)
    assert np.array_equal(awq.scaled_round_trip(w, awq.scales(np.ones(256), 0.0), "Q4_0"), awq.round_trip(w, "Q4_0"))


def test_the_grid_is_llm_awqs_twenty_ratios(result_q4_k_m):
    g = result_q4_k_m.searches[0]
    assert np.allclose(g.alphas, np.arange(20) / 20)
    assert g.alpha in g.alphas and g.losses[np.searchsorted(g.alphas, g.alpha)] == g.losses.min()


def test_the_bundled_model_has_three_groups_per_layer_because_of_grouped_query_attention(bundled):
    assert bundled.cfg.n_head_kv < bundled.cfg.n_head
    assert [g.inspect for g in awq.groups(bundled, 0)] == ["attention", "ffn", "matrix"]


def test_folding_preserves_the_bundled_models_function(bundled, result_q4_k_m):
    new = awq.apply(bundled.weights, result_q4_k_m)
    assert any(n.endswith("attn_norm.weight") for n in new) and any(n.endswith("ffn_up.weight") for n in new)
    for g in result_q4_k_m.searches:  # every group with α > 0 really rescaled its tensors (α = 0: s = 1)
        if g.alpha > 0:
            assert not any(np.array_equal(new[n], bundled.weights[n]) for n in (g.group.prev, *g.group.layers))
        elif g.group.prev.endswith("norm.weight"):
            assert np.array_equal(new[g.group.prev], bundled.weights[g.group.prev])
    rescaled = Llama(bundled.cfg, {**bundled.weights, **new})
    tokens = RNG.integers(0, bundled.cfg.n_vocab, 64)
    a, b = bundled.logits(tokens), rescaled.logits(tokens)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-3 * np.abs(a).max())


def test_folding_into_attn_v_preserves_a_multi_head_models_function(tmp_path):
    """Without GQA the fourth group (attn_v's rows absorb 1/s of attn_output's columns) is used."""
    path = write_tiny_llama(tmp_path / "mha.gguf", n_layer=2, n_head=4, n_head_kv=4)
    model = Llama.load(path)
    assert [g.inspect for g in awq.groups(model, 0)] == ["attention", "matrix", "ffn", "matrix"]
    seqs = [RNG.integers(0, model.cfg.n_vocab, 32) for _ in range(2)]
    result = awq.search_model(model, seqs, awq.types_for(path, "Q4_0", pure=True), grid=4)
    result.searches[1].scales[:] = RNG.uniform(0.2, 5.0, model.cfg.n_embd)  # a strong fold, whatever α won
    new = awq.apply(model.weights, result)
    assert "blk.0.attn_v.weight" in new
    tokens = RNG.integers(0, model.cfg.n_vocab, 40)
    a = model.logits(tokens)
    b = Llama(model.cfg, {**model.weights, **new}).logits(tokens)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-3 * np.abs(a).max())


def test_the_rescaled_f16_file_computes_what_the_original_does_in_llama_cpp(bundled):
    f16 = awq.quantized(hub.bundled(), "Q4_K_M", out_mix="F16")
    tokens = list(RNG.integers(2, bundled.cfg.n_vocab, 128))
    la, lb = (_logits(p, tokens) for p in (hub.bundled(), f16))
    # The rescaled weights are rounded to F16 once more (relative 2^-11): the logits move by
    # rounding noise, far less than any 4-bit quantization moves them, and no argmax changes.
    assert np.abs(lb - la).max() < 0.02 * np.abs(la).max()
    assert (lb.argmax(-1) == la.argmax(-1)).mean() > 0.99


@pytest.mark.parametrize("mix, pure", [("Q4_0", True), ("Q4_K_M", False)])
def test_the_awq_file_is_a_plain_llama_gguf_that_llama_cpp_runs(mix, pure):
    path = awq.quantized(hub.bundled(), mix, pure=pure)
    rtn = cache.quantized(hub.bundled(), mix, pure=pure)
    # Every tensor has the type and size of round-to-nearest's file: AWQ changes values, not the format.
    assert [(t.name, t.type, t.nbytes) for t in inspect_gguf(path).rows] == [
        (t.name, t.type, t.nbytes) for t in inspect_gguf(rtn).rows
    ]
    assert summary_sha(path) != summary_sha(rtn)
    m = runner.load(path, n_ctx=256)
    try:
        text = m.generate("Once upon a time", max_tokens=16, temperature=0.0)
        logits = m.logits(m.tokenize("Once upon a time", bos=True))
    finally:
        m.close()
    assert np.isfinite(logits).all() and len(text) > 0


def test_undo_gives_back_each_matrix_near_the_original(bundled, result_q4_k_m):
    """Undoing the scales of the quantized AWQ file gives matrices close to the F16 ones (not the scaled ones)."""
    path = awq.quantized(hub.bundled(), "Q4_K_M")
    eff = awq.undo(Llama.load(path), result_q4_k_m)
    for name in ("blk.2.ffn_down.weight", "blk.2.ffn_up.weight", "blk.2.attn_q.weight"):
        w = bundled.weights[name]
        assert np.linalg.norm(eff.weights[name] - w) / np.linalg.norm(w) < 0.2


def test_outlier_channels_make_awq_beat_round_to_nearest(bundled):
    """With 4 channels 50× larger, AWQ picks α > 0 and its output error is far below round-to-nearest's."""
    name = "blk.3.ffn_gate.weight"
    x = RNG.standard_normal((768, 256)).astype(np.float32)
    (run,) = awq.outlier_experiment(bundled.weights[name], x[:512], x[512:], [50.0], "Q4_0")
    assert run.alpha > 0
    assert run.awq.mean() < 0.7 * run.rtn.mean()


def test_bad_input_is_one_clear_error():
    with pytest.raises(KQuantError, match="alpha"):
        awq.scales(np.ones(4), 1.5)
    with pytest.raises(KQuantError, match="2-D"):
        awq.activation_scale(np.ones(4))
    with pytest.raises(KQuantError, match="column"):
        awq.search_matrix(np.ones((4, 32)), np.ones((3, 16)), "Q4_0")
