"""Write a llama-architecture model to GGUF with gguf-py's GGUFWriter, as llama.cpp loads it.

The model is a dict of numpy arrays under llama.cpp's tensor names, each in the shape of a
PyTorch ``nn.Linear.weight`` (``[out, in]``). GGUFWriter stores a numpy array of shape
``(rows, cols)`` with GGUF dimensions ``ne = (cols, rows)``, which is exactly the layout
ggml's matrix product expects, so no transpose is needed anywhere.

What llama.cpp insists on (tiny-model-notes.md §1 tested each key by removing it):
context length, embedding length, block count and the RMS epsilon are hard-required;
feed-forward length and head counts default to values that break the tensor shapes; the
gpt2 tokenizer needs its merges, its pre-tokenizer name, and explicit BOS/EOS ids (the
gpt2 default is 11 for both) with ``add_bos_token`` set, or ``tokenize`` adds no BOS.

RoPE: llama.cpp's ``llama`` architecture rotates consecutive pairs (x[2i], x[2i+1]). The
model this writes must have been trained (or built) that way; nothing here permutes rows.

Notebook 07 reads the file it wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType

from kquant.errors import KQuantError
from kquant.gguf.writer import atomic_output
from kquant.model.config import Config, tensor_shapes


def write_gguf(
    path,
    cfg: Config,
    weights: dict[str, np.ndarray],
    tokens: list[str],
    merges: list[str],
    *,
    dtype: str = "F16",
    name: str = "kquant-tiny",
    extra: dict | None = None,
) -> Path:
    """Write the model to ``path`` atomically (a temporary file, renamed when complete).

    ``dtype`` is the type of the matrices, "F16" or "F32"; norms always stay F32, as in
    llama.cpp's own converter. ``extra`` is stored as JSON under ``kquant.training`` (the
    training config and seed, so the file says how to make it again).
    """
    cfg.check()
    path = Path(path)
    if dtype not in ("F16", "F32"):
        raise KQuantError(f"dtype {dtype!r}: write F16 or F32 (quantize afterwards with kquant.quantize_gguf)")
    if len(tokens) != cfg.n_vocab:
        raise KQuantError(f"{len(tokens)} tokens but n_vocab is {cfg.n_vocab}")
    shapes = tensor_shapes(cfg)
    if set(weights) != set(shapes):
        missing, unknown = sorted(set(shapes) - set(weights)), sorted(set(weights) - set(shapes))
        raise KQuantError(f"weights do not match the config: missing {missing[:3]}, unexpected {unknown[:3]}")
    for k, shape in shapes.items():
        if tuple(weights[k].shape) != shape:
            raise KQuantError(f"{k} has shape {tuple(weights[k].shape)}, the config says {shape}")
        if not np.isfinite(weights[k]).all():
            raise KQuantError(f"{k} has NaN or Inf weights; refusing to write a broken model")
    with atomic_output(path, overwrite=True) as tmp:  # like saving any file: a second export replaces the first
        w = GGUFWriter(tmp, "llama")
        _metadata(w, cfg, tokens, merges, dtype, name, extra)
        for k in shapes:  # converter order: embeddings, blocks, output norm
            a = np.asarray(weights[k], dtype=np.float32)
            w.add_tensor(k, a.astype(np.float16) if dtype == "F16" and a.ndim == 2 else a)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def _metadata(w: GGUFWriter, cfg: Config, tokens, merges, dtype, name, extra) -> None:
    w.add_name(name)
    w.add_context_length(cfg.n_ctx)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.n_ff)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_head_kv)
    w.add_rope_dimension_count(cfg.head_dim)  # llama requires n_rot == head_dim
    w.add_rope_freq_base(cfg.rope_base)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.n_vocab)
    w.add_file_type({"F32": 0, "F16": 1}[dtype])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    # CONTROL keeps "<s>" typed in text from being read as the special token.
    w.add_token_types([TokenType.CONTROL if t in ("<s>", "</s>") else TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<s>"))
    w.add_eos_token_id(tokens.index("</s>"))
    w.add_add_bos_token(True)
    if extra is not None:
        w.add_string("kquant.training", json.dumps(extra, sort_keys=True))
