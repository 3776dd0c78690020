"""Tiny llama-architecture GGUF models with random weights, for tests and benchmarks.

The files carry everything llama.cpp's loader asks for (hyper-parameters, a small gpt2
tokenizer) plus one metadata key of every GGUF value type, so a copy of the metadata is
checked too. ``general.file_type`` is written in the middle on purpose: llama-quantize
moves it to the end, and kquant must do the same.

``rows=k`` keeps every row length (what the mix rules read) but gives each matrix only k
rows. Such a file is no longer a runnable model, but ``llama_model_quantize`` accepts it (it
never checks shapes against the hyper-parameters), which makes 80-layer models cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

T = GGMLQuantizationType

_FILE_TYPE = {"F32": 0, "F16": 1, "BF16": 32}


def write_tiny_llama(
    path,
    *,
    n_layer: int = 2,
    n_embd: int = 256,
    n_head: int = 4,
    n_head_kv: int | None = None,
    n_ff: int = 512,
    n_vocab: int = 300,
    n_expert: int = 0,
    tied: bool = True,
    dtype: str = "F32",
    rows: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a random llama model to ``path`` and return the path.

    ``dtype`` (F32, F16, BF16) is the type of the matrices; norms stay F32 as in
    convert_hf_to_gguf.py. Tensors are written in the converter's order (embeddings, then
    each block, then the output), not in llama.cpp's sorted order.
    """
    path = Path(path)
    n_head_kv = n_head if n_head_kv is None else n_head_kv
    head_dim = n_embd // n_head
    rng = np.random.default_rng(seed)

    w = GGUFWriter(path, "llama")
    w.add_name("kquant tiny llama")
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(_FILE_TYPE[dtype])  # not last: llama-quantize moves it to the end
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(2)
    _add_tokenizer(w, n_vocab)
    _add_one_key_of_each_type(w)

    def matrix(name, *shape):
        shape = (*shape[:-2], rows or shape[-2], shape[-1])
        # Rows of different scales, like real weights; a few exact zeros for the "skip" paths.
        x = rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.01, 0.1, (*shape[:-1], 1)).astype(np.float32)
        x.reshape(-1)[::97] = 0.0
        _add(w, name, x, dtype)

    def norm(name):
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n_embd)).astype(np.float32))

    matrix("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        norm(f"blk.{i}.attn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", n_head * head_dim, n_embd)
        matrix(f"blk.{i}.attn_k.weight", n_head_kv * head_dim, n_embd)
        matrix(f"blk.{i}.attn_v.weight", n_head_kv * head_dim, n_embd)
        matrix(f"blk.{i}.attn_output.weight", n_embd, n_head * head_dim)
        norm(f"blk.{i}.ffn_norm.weight")
        if n_expert:
            matrix(f"blk.{i}.ffn_gate_inp.weight", n_expert, n_embd)
            matrix(f"blk.{i}.ffn_gate_exps.weight", n_expert, n_ff, n_embd)
            matrix(f"blk.{i}.ffn_up_exps.weight", n_expert, n_ff, n_embd)
            matrix(f"blk.{i}.ffn_down_exps.weight", n_expert, n_embd, n_ff)
        else:
            matrix(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
            matrix(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
            matrix(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    norm("output_norm.weight")
    if not tied:
        matrix("output.weight", n_vocab, n_embd)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _add(w: GGUFWriter, name: str, x: np.ndarray, dtype: str) -> None:
    if dtype == "F32":
        w.add_tensor(name, x)
    elif dtype == "F16":
        w.add_tensor(name, x.astype(np.float16))
    elif dtype == "BF16":
        bits = x.view(np.uint32)
        bf16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
        w.add_tensor(name, bf16, raw_dtype=T.BF16)
    else:
        raise ValueError(f"dtype must be F32, F16 or BF16, not {dtype!r}")


def _add_tokenizer(w: GGUFWriter, n_vocab: int) -> None:
    """A gpt2-style byte-level vocabulary: <s>, </s>, 256 bytes, then made-up merges."""
    tokens = ["<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"tok{i}" for i in range(n_vocab - len(tokens))]
    tokens = tokens[:n_vocab]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([3, 3] + [1] * (len(tokens) - 2))
    w.add_token_merges(["t o", "to k"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_add_bos_token(True)


def _add_one_key_of_each_type(w: GGUFWriter) -> None:
    """Metadata of every GGUF value type, so that copying them all is tested."""
    V = GGUFValueType
    w.add_key_value("kquant.test.u8", 200, V.UINT8)
    w.add_key_value("kquant.test.i8", -100, V.INT8)
    w.add_key_value("kquant.test.u16", 60000, V.UINT16)
    w.add_key_value("kquant.test.i16", -30000, V.INT16)
    w.add_key_value("kquant.test.u32", 4_000_000_000, V.UINT32)
    w.add_key_value("kquant.test.i32", -2_000_000_000, V.INT32)
    w.add_key_value("kquant.test.u64", 2**63 + 5, V.UINT64)
    w.add_key_value("kquant.test.i64", -(2**62), V.INT64)
    w.add_key_value("kquant.test.f32", 0.1, V.FLOAT32)
    w.add_key_value("kquant.test.f64", 0.1, V.FLOAT64)
    w.add_key_value("kquant.test.bool", False, V.BOOL)
    w.add_key_value("kquant.test.string", "héllo ☃", V.STRING)
    w.add_key_value("kquant.test.floats", [0.5, -1.25, 3e-8], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("kquant.test.u64s", [1, 2**64 - 1], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("kquant.test.bools", [True, False, True], V.ARRAY, sub_type=V.BOOL)
