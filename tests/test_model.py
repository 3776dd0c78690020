"""The bundled model and its export: llama.cpp computes what kquant.model.forward (numpy) computes.

kquant/forward.py is a readable numpy llama; if llama.cpp's logits on held-out text equal its
logits, then the file means what the trainer meant: tensor names, layouts, RoPE pairing,
grouped-query attention, norms and the tokenizer all agree. The KV cache is F32 on the
llama.cpp side, as everywhere in kquant.model.runner (the default F16 cache alone moves logits by
about 6e-3; tiny-model-notes.md §2).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from gguf import GGUFReader

from kquant.errors import KQuantError
from kquant.model import bpe, corpus, hub, runner
from kquant.model.config import Config, tensor_shapes
from kquant.model.export import write_gguf
from kquant.model.forward import Llama


def _held_out_ids(model: runner.LlamaCppModel, n: int = 200) -> list[int]:
    ids = model.tokenize(corpus.text(corpus.documents(corpus.HELD_OUT_SEED, 6, held_out=True)))
    assert len(ids) >= n
    return ids[:n]


def _random_model(tmp_path, name="random.gguf", cfg=None, permute_qk=False, dtype="F32"):
    """A random llama with sharp q/k (so a RoPE mistake shows), written with kquant.model.export."""
    cfg = cfg or Config(n_vocab=300, n_ctx=128, n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=256)
    rng = np.random.default_rng(0)
    w = {}
    for k, shape in tensor_shapes(cfg).items():
        std = 0.1 if ("attn_q" in k or "attn_k" in k) else 0.02
        w[k] = (1.0 + 0.1 * rng.standard_normal(shape) if len(shape) == 1 else std * rng.standard_normal(shape)).astype(
            np.float32
        )
    tokens, merges = bpe.learn(corpus.text(corpus.documents(1, 200)), cfg.n_vocab - 258)
    if permute_qk:  # rotate_half's pairing (i, i + hd/2) instead of llama's (2i, 2i+1)
        hd = cfg.head_dim
        perm = np.concatenate([np.arange(0, hd, 2), np.arange(1, hd, 2)])
        for k in w:
            if "attn_q" in k or "attn_k" in k:
                heads = w[k].reshape(-1, hd, cfg.n_embd)
                w[k] = heads[:, perm].reshape(w[k].shape)
    path = write_gguf(tmp_path / name, cfg, w, tokens, merges, dtype=dtype, extra={"seed": 0})
    return path, w


def test_llama_cpp_logits_equal_the_numpy_forward_pass_for_an_exported_f32_model(tmp_path):
    path, _ = _random_model(tmp_path)
    m = runner.load(path)
    ids = list(np.random.default_rng(1).integers(2, 300, size=100))
    diff = np.abs(m.logits(ids) - Llama.load(path).logits(ids)).max()
    assert diff < 1e-4


def test_the_comparison_notices_a_wrong_rope_pairing(tmp_path):
    """Same weights, rows of q and k in the other RoPE order: the logits must disagree."""
    good, w = _random_model(tmp_path)
    bad, _ = _random_model(tmp_path, "bad.gguf", permute_qk=True)
    ids = list(np.random.default_rng(1).integers(2, 300, size=100))
    reference = Llama.load(good).logits(ids)
    assert np.abs(runner.load(bad).logits(ids) - reference).max() > 0.05


def test_the_bundled_model_gives_llama_cpps_logits_in_numpy():
    path = hub.bundled()
    m = runner.load(path)
    ids = _held_out_ids(m)
    ours, theirs = Llama.load(path).logits(ids), m.logits(ids)
    # F16 weights: llama.cpp's CPU matmul rounds the activations to F16 too, numpy does not.
    assert np.abs(ours - theirs).max() < 2e-2
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() > 0.99


def test_the_bundled_model_is_a_llama_the_k_quants_fit():
    r = GGUFReader(hub.bundled())
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.t")}
    assert meta["general.architecture"] == "llama" and meta["llama.block_count"] >= 8
    assert meta["llama.attention.head_count_kv"] < meta["llama.attention.head_count"]  # grouped-query attention
    for t in r.tensors:
        if len(t.shape) == 2:
            assert t.tensor_type.name == "F16" and t.shape[0] % 256 == 0, t.name  # shape[0] is the row length
        else:
            assert t.tensor_type.name == "F32", t.name
    assert r.tensors[0].name == "token_embd.weight" and "output.weight" not in {t.name for t in r.tensors}  # tied


def test_the_bundled_model_records_how_it_was_trained():
    r = GGUFReader(hub.bundled())
    training = json.loads(r.fields["kquant.training"].contents())
    assert training["script"] == "scripts/train_model.py" and isinstance(training["seed"], int)
    cfg = training["config"]
    assert cfg["n_layer"] == r.fields["llama.block_count"].contents()
    assert cfg["n_vocab"] == len(r.fields["tokenizer.ggml.tokens"].contents())
    assert training["steps"] == training["planned_steps"]  # a complete run, not one cut short


def test_the_tokenizer_round_trips_held_out_text_and_keeps_digits_apart():
    m = runner.load(hub.bundled())
    text = "\n".join(corpus.documents(corpus.HELD_OUT_SEED, 20, held_out=True))
    ids = m.tokenize(text)
    assert m.detokenize(ids) == text
    assert [m.detokenize([i]) for i in m.tokenize("347 + 589 = 936")] == [
        "3",
        "4",
        "7",
        " +",
        " ",
        "5",
        "8",
        "9",
        " =",
        " ",
        "9",
        "3",
        "6",
    ]
    assert m.tokenize("<s>hi</s>")[0] == m.llm.token_bos()


def test_export_refuses_bad_weights_and_leaves_no_file(tmp_path):
    cfg = Config(n_vocab=300, n_ctx=64, n_embd=256, n_layer=1, n_head=4, n_head_kv=2, n_ff=256)
    w = {k: np.zeros(s, np.float32) for k, s in tensor_shapes(cfg).items()}
    tokens = [f"t{i}" for i in range(298)] + ["<s>", "</s>"]
    w["blk.0.ffn_up.weight"] = np.zeros((256, 512), np.float32)
    with pytest.raises(KQuantError, match="ffn_up.weight has shape"):
        write_gguf(tmp_path / "m.gguf", cfg, w, tokens, [])
    w["blk.0.ffn_up.weight"] = np.full((256, 256), np.nan, np.float32)
    with pytest.raises(KQuantError, match="NaN"):
        write_gguf(tmp_path / "m.gguf", cfg, w, tokens, [])
    with pytest.raises(KQuantError, match="n_head_kv"):
        Config(n_vocab=300, n_head=4, n_head_kv=3).check()
    assert list(tmp_path.iterdir()) == []


def test_q4_k_m_gives_some_layers_more_bits_and_the_file_stays_small():
    from kquant.quantize_file import plan_gguf

    six = {c.name for c in plan_gguf(hub.bundled(), "Q4_K_M") if c.type.name == "Q6_K"}
    # use_more_bits(i, 8): i < 1, i >= 7, or (i - 1) % 3 == 2 (llama-quant.cpp)
    assert six == {"token_embd.weight"} | {f"blk.{i}.{t}.weight" for i in (0, 3, 6, 7) for t in ("attn_v", "ffn_down")}
    assert hub.bundled().stat().st_size < 20e6


# Quantized files: kquant.model.forward decodes the weights exactly (kquant.dequantize equals ggml's
# dequantizers) but multiplies them with float32 activations, while llama.cpp's CPU kernels
# first round the activations to 8 bits: Q8_0 blocks of 32 for Q8_0/Q4_0/Q5_0 weights, Q8_1 for
# Q4_1/Q5_1, Q8_K blocks of 256 (one float scale per 256 values, so coarser) for the K-quants.
# Measured on 200 held-out tokens of the bundled model (logits span about ±15): RMS difference
# 0.021-0.025 (Q8_0/Q8_1 paths) and 0.040-0.046 (Q8_K paths), max 0.09-0.22, top-1 agreement
# >= 98.5%; F16 gives RMS 0.0007, max 0.004. Rounding the activations the same way in numpy
# (to Q8_0 / Q8_K) halves the K-quant gap, which is where it comes from. The bounds below
# leave ~30% headroom; a decoding mistake (a wrong scale, a swapped nibble) moves logits by whole units.
QUANTIZED_TOLERANCE = {"rms": 0.06, "max": 0.3, "top1": 0.98}


@pytest.mark.parametrize("mix", ["Q8_0", "Q4_1", "Q2_K", "Q4_K_M"])  # the Q8_0, Q8_1 and Q8_K activation paths
def test_a_quantized_files_numpy_logits_are_close_to_llama_cpps(mix, tmp_path):
    from kquant.quantize_file import quantize_gguf

    path = quantize_gguf(hub.bundled(), tmp_path / f"{mix}.gguf", mix, progress=False).path
    m = runner.load(path)
    ids = _held_out_ids(m)
    ours, theirs = Llama.load(path).logits(ids), m.logits(ids)
    assert np.sqrt(((ours - theirs) ** 2).mean()) < QUANTIZED_TOLERANCE["rms"]
    assert np.abs(ours - theirs).max() < QUANTIZED_TOLERANCE["max"]
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() >= QUANTIZED_TOLERANCE["top1"]
    # ...and they are the quantized file's logits, not the F16 file's.
    f16 = Llama.load(hub.bundled()).logits(ids)
    assert np.abs(ours - f16).max() > 0.05


def test_the_forward_pass_shows_every_matmul_input_and_every_layers_output():
    model = Llama.load(hub.bundled())
    seen = []
    f = model.forward([0, 71, 300, 12, 5], observe=lambda name, x: seen.append((name, x.shape, x.dtype)))
    c = model.cfg
    per_block = [
        ("attn_q", c.n_embd),
        ("attn_k", c.n_embd),
        ("attn_v", c.n_embd),
        ("attn_output", c.n_embd),
        ("ffn_gate", c.n_embd),
        ("ffn_up", c.n_embd),
        ("ffn_down", c.n_ff),
    ]
    expected = [(f"blk.{i}.{r}.weight", (5, cols), np.float32) for i in range(c.n_layer) for r, cols in per_block]
    assert seen == expected + [
        ("token_embd.weight", (5, c.n_embd), np.float32)
    ]  # tied: the output matmul uses token_embd
    assert len(f.layers) == c.n_layer and all(x.shape == (5, c.n_embd) for x in f.layers)
    from kquant.model.forward import rms_norm

    last = rms_norm(f.layers[-1], model.weights["output_norm.weight"], c.norm_eps)
    np.testing.assert_allclose(last @ model.weights["token_embd.weight"].T, f.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model.logits([0, 71, 300, 12, 5]), f.logits)


def test_the_forward_pass_refuses_types_it_cannot_decode(tmp_path):
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter

    src = GGUFReader(hub.bundled())
    w = GGUFWriter(tmp_path / "iq.gguf", "llama")
    del w.kv_data[0]["general.architecture"]
    from kquant.gguf.reader import open_gguf
    from kquant.quantize_file import metadata

    for key, value, vtype, sub in metadata(open_gguf(hub.bundled())):
        w.add_key_value(key, value, vtype, sub_type=sub)
    for t in src.tensors:
        if t.name == "blk.0.ffn_up.weight":  # 768 rows of 256: one IQ4_XS block of 136 bytes each
            w.add_tensor(t.name, np.zeros((768, 136), np.uint8), raw_dtype=GGMLQuantizationType.IQ4_XS)
        else:
            w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(KQuantError, match="blk.0.ffn_up.weight is IQ4_XS, which kquant cannot decode"):
        Llama.load(tmp_path / "iq.gguf")


def test_layer_errors_locate_where_a_quantized_file_departs_from_the_reference(tmp_path):
    from kquant.model.forward import layer_errors
    from kquant.quantize_file import quantize_gguf

    f16 = Llama.load(hub.bundled())
    ids = list(range(2, 66))
    assert np.array_equal(layer_errors(f16, f16, ids), np.zeros(f16.cfg.n_layer))
    q2 = Llama.load(quantize_gguf(hub.bundled(), tmp_path / "q2.gguf", "Q2_K", progress=False).path)
    q8 = Llama.load(quantize_gguf(hub.bundled(), tmp_path / "q8.gguf", "Q8_0", progress=False).path)
    e2, e8 = layer_errors(f16, q2, ids), layer_errors(f16, q8, ids)
    assert e2.shape == (f16.cfg.n_layer,) and (e2 > 0).all()
    assert (e8 < e2).all()  # 8 bits per weight stay closer than ~2.6 at every layer


def test_matmul_errors_measure_each_matrix_on_the_references_own_inputs(tmp_path):
    from kquant.model.forward import matmul_errors
    from kquant.quantize_file import quantize_gguf

    f16 = Llama.load(hub.bundled())
    ids = list(range(2, 66))
    q4 = Llama.load(quantize_gguf(hub.bundled(), tmp_path / "q4.gguf", "Q4_K_M", progress=False).path)
    errors = matmul_errors(f16, q4, ids)
    # every matmul of the graph: 7 per block, plus the tied output (token_embd)
    assert len(errors) == 7 * f16.cfg.n_layer + 1 and "token_embd.weight" in errors
    assert set(matmul_errors(f16, f16, ids).values()) == {0.0}
    # Q4_K_M gives attn_v Q6_K in layer 0 and Q4_K in layer 1: more bits, smaller own error
    assert errors["blk.0.attn_v.weight"] < errors["blk.1.attn_v.weight"]
    x = {}
    f16.forward(np.array(ids), observe=x.__setitem__)
    name = "blk.3.ffn_down.weight"
    y = x[name] @ f16.weights[name].T
    assert errors[name] == pytest.approx(np.linalg.norm(x[name] @ q4.weights[name].T - y) / np.linalg.norm(y), rel=1e-6)


def test_the_forward_pass_refuses_models_it_does_not_run(tmp_path):
    from tiny_llama import write_tiny_llama

    moe = write_tiny_llama(tmp_path / "moe.gguf", n_layer=1, n_expert=8, n_ff=256, rows=16)
    with pytest.raises(
        KQuantError, match="mixture-of-experts llama; kquant.model.forward runs dense llama models only"
    ):
        Llama.load(moe)
    with pytest.raises(KQuantError, match="tokens must be a non-empty 1-D sequence of integer token ids"):
        Llama.load(hub.bundled()).logits([])
