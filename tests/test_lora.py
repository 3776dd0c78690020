"""LoRA on a frozen base (kquant.methods.lora): the hand-written backward pass against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from kquant.errors import KQuantError
from kquant.methods import lora as L
from kquant.model import corpus
from kquant.model.forward import Llama
from tests.tiny_llama import write_tiny_llama


@pytest.fixture(scope="module")
def model64(tmp_path_factory):
    """A random 2-layer llama in float64, so that central differences are accurate to ~1e-9."""
    m = Llama.load(write_tiny_llama(tmp_path_factory.mktemp("lora") / "tiny.gguf", n_layer=2, n_ff=512, seed=3))
    m.weights = {k: v.astype(np.float64) for k, v in m.weights.items()}
    return m


def _lora64(model, targets, seed=1):
    lo = L.init(model, rank=4, alpha=8.0, targets=targets, seed=seed)
    rng = np.random.default_rng(seed)
    lo.A = {t: a.astype(np.float64) for t, a in lo.A.items()}
    # B = 0 would make every gradient of A zero (and pass a wrong formula for dA): start from random B
    lo.B = {t: 0.05 * rng.standard_normal(b.shape) for t, b in lo.B.items()}
    return lo


@pytest.mark.parametrize("targets", [L.TARGETS, ("ffn_down",), ("ffn_gate",), ("ffn_up", "ffn_gate")])
def test_backward_matches_finite_differences(model64, targets):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, model64.cfg.n_vocab, 12), rng.integers(0, model64.cfg.n_vocab, 7)]
    fz = L.frozen(model64, seqs)
    lo = _lora64(model64, targets)
    loss, grads = L.loss_and_grads(model64, lo, fz)
    assert sorted(grads) == sorted([f"A/{t}" for t in targets] + [f"B/{t}" for t in targets])
    params = {**{f"A/{t}": lo.A[t] for t in targets}, **{f"B/{t}": lo.B[t] for t in targets}}
    eps = 1e-6
    for name, p in params.items():
        for _ in range(6):
            i = tuple(rng.integers(0, n) for n in p.shape)
            keep = p[i]
            p[i] = keep + eps
            up = L.loss_and_grads(model64, lo, fz)[0]
            p[i] = keep - eps
            down = L.loss_and_grads(model64, lo, fz)[0]
            p[i] = keep
            numeric = (up - down) / (2 * eps)
            assert grads[name][i] == pytest.approx(numeric, rel=1e-5, abs=1e-9), (name, i)


def test_b_zero_starts_at_the_base_model(model64):
    """B = 0: the adapted model's logits are the frozen model's, and the first gradient reaches B only."""
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, model64.cfg.n_vocab, 10)]
    fz = L.frozen(model64, seqs)
    lo = L.init(model64, rank=4, seed=2)
    full = model64.logits(seqs[0])
    np.testing.assert_allclose(L.logits(model64, lo, fz), full, rtol=1e-9, atol=1e-9)
    _, grads = L.loss_and_grads(model64, lo, fz)
    assert all(not grads[f"A/{t}"].any() for t in L.TARGETS)
    assert all(grads[f"B/{t}"].any() for t in L.TARGETS)


def test_merge_equals_adapters(model64):
    """W + (α/r)·B A in the weights gives the adapted model's logits through the whole forward pass."""
    rng = np.random.default_rng(2)
    seq = rng.integers(0, model64.cfg.n_vocab, 9)
    fz = L.frozen(model64, [seq])
    lo = _lora64(model64, L.TARGETS)
    merged = Llama(model64.cfg, {**model64.weights, **L.merge(model64.weights, lo)})
    np.testing.assert_allclose(merged.logits(seq), L.logits(model64, lo, fz), rtol=1e-6, atol=1e-6)


def test_training_lowers_the_loss(model64):
    rng = np.random.default_rng(3)
    seqs = [np.tile(rng.integers(0, model64.cfg.n_vocab, 5), 4)]
    fz = L.frozen(model64, seqs)
    lo = L.init(model64, rank=4, seed=0)
    lo.A = {t: a.astype(np.float64) for t, a in lo.A.items()}
    lo.B = {t: b.astype(np.float64) for t, b in lo.B.items()}
    losses = L.train(model64, lo, fz, steps=30, lr=1e-2, batch=16)
    assert losses[-1] < 0.5 * losses[0]
    again = L.LoRA.from_arrays(lo.arrays())
    assert again.targets == lo.targets and again.scale == lo.scale
    np.testing.assert_array_equal(again.delta("ffn_up"), lo.delta("ffn_up"))


def test_new_facts_are_new():
    old = {n for f in corpus.facts() for n in (f.country, f.capital)}
    new = [n for f in L.NEW_FACTS for n in (f.country, f.capital)]
    assert len(set(new)) == len(new) == 16 and not old & set(new)
    assert {f.animal for f in L.NEW_FACTS} <= {f.animal for f in corpus.facts()}


def test_bad_input(model64):
    with pytest.raises(KQuantError, match="targets"):
        L.init(model64, targets=("attn_q",))
    with pytest.raises(KQuantError, match="rank"):
        L.init(model64, rank=0)
    with pytest.raises(KQuantError, match="last block"):
        L.init(model64, layer=0)


def test_numpy_task_checks_agree_with_llama_cpp_on_the_bundled_model():
    """lora.task_set / task_results lay tasks out as kquant.model.evaluate does: same answers as llama.cpp's."""
    from kquant.llamacpp import Tokenizer
    from kquant.model import evaluate, hub, runner

    model = Llama.load(hub.bundled())
    tasks = L.fact_tasks() + evaluate.held_out_tasks(60)[:60] + list(corpus.tasks(0, 0))[:40]
    with Tokenizer(hub.bundled()) as tok:
        ts = L.task_set(lambda s: tok.tokenize(s, add_special=False, parse_special=True), tasks)
    mine = L.task_results(model, None, ts, L.frozen(model, ts.sequences))
    m = runner.load(hub.bundled(), n_ctx=256)
    theirs = evaluate.task_results(m, ts.tasks)
    m.close()
    kinds = np.array([t.kind for t in ts.tasks])
    for kind, right in theirs.items():
        agree = (mine[kinds == kind] == right).mean()
        assert agree >= 0.95, (kind, agree)
    assert mine[:8].sum() == 0  # the new facts are new to the model
    assert mine[kinds == "facts"][8:].all()  # and it knows its own
