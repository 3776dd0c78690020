"""A llama forward pass in plain numpy: what llama.cpp computes for a ``llama`` GGUF.

    >>> model = Llama.load("data/kquant-tiny-f16.gguf")
    >>> logits = model.logits([0, 71, 300, 12])      # (4, n_vocab) float32, one row per position

It reads the weights from the file (F32 or F16 tensors) and follows llama.cpp's graph
(``llm_build_llama``) step by step, so every number can be inspected:

    x = token_embd[tokens]
    per block:  x += attn_output · attention(RoPE(attn_q · n1(x)), RoPE(attn_k · n1(x)), attn_v · n1(x))
                x += ffn_down · (silu(ffn_gate · n2(x)) * (ffn_up · n2(x)))
    logits = output · norm(x)        (output is token_embd when the file has no output.weight)

with ``n(x) = x / sqrt(mean(x²) + eps) * weight`` (RMSNorm), RoPE rotating consecutive pairs
(x[2i], x[2i+1]) by ``pos · base^(-2i/head_dim)``, and grouped-query attention in which
query head h reads key/value head ``h // (n_head / n_head_kv)``.

It is a specification, not an engine: one sequence, no cache, float32 throughout.
Its job is to prove that an exported file means what its trainer meant (tests/test_model.py
compares it with llama.cpp's logits) and to let a reader look inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from .errors import KQuantError
from .export import Config
from .gguf_read import open_gguf

T = GGMLQuantizationType


@dataclass
class Llama:
    """A llama model's hyper-parameters and float32 weights (llama.cpp's tensor names)."""

    cfg: Config
    weights: dict[str, np.ndarray]

    @classmethod
    def load(cls, path) -> "Llama":
        """Read a llama GGUF whose tensors are F32 or F16."""
        path = Path(path)
        r = open_gguf(path)  # missing, truncated or corrupt: one clear error
        meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.")}
        if meta.get("general.architecture") != "llama":
            raise KQuantError(f"{path} is a {meta.get('general.architecture')!r} model; kquant.forward reads llama models")
        weights = {}
        for t in r.tensors:
            if t.tensor_type not in (T.F32, T.F16):
                raise KQuantError(f"{path}: {t.name} is {t.tensor_type.name}; kquant.forward reads F32/F16 files only")
            weights[t.name] = np.asarray(t.data, dtype=np.float32)  # numpy order: (rows, cols)
        a = "llama."
        cfg = Config(
            n_vocab=weights["token_embd.weight"].shape[0],
            n_ctx=int(meta[a + "context_length"]),
            n_embd=int(meta[a + "embedding_length"]),
            n_layer=int(meta[a + "block_count"]),
            n_head=int(meta[a + "attention.head_count"]),
            n_head_kv=int(meta.get(a + "attention.head_count_kv", meta[a + "attention.head_count"])),
            n_ff=int(meta[a + "feed_forward_length"]),
            rope_base=float(meta.get(a + "rope.freq_base", 10000.0)),
            norm_eps=float(meta[a + "attention.layer_norm_rms_epsilon"]),
        )
        return cls(cfg, weights)

    def logits(self, tokens) -> np.ndarray:
        """Logits (len(tokens), n_vocab) for every position of one sequence."""
        tokens = np.asarray(tokens)
        c, w = self.cfg, self.weights
        if tokens.ndim != 1 or len(tokens) == 0:
            raise KQuantError("tokens must be a non-empty 1-D sequence of token ids")
        if tokens.min() < 0 or tokens.max() >= c.n_vocab:
            raise KQuantError(f"token ids must lie in [0, {c.n_vocab}); got {tokens.min()}..{tokens.max()}")
        x = w["token_embd.weight"][tokens]
        cos, sin = rope_tables(len(tokens), c.head_dim, c.rope_base)
        for i in range(c.n_layer):
            b = f"blk.{i}."
            x = x + self._attention(rms_norm(x, w[b + "attn_norm.weight"], c.norm_eps), b, cos, sin)
            h = rms_norm(x, w[b + "ffn_norm.weight"], c.norm_eps)
            x = x + (silu(h @ w[b + "ffn_gate.weight"].T) * (h @ w[b + "ffn_up.weight"].T)) @ w[b + "ffn_down.weight"].T
        x = rms_norm(x, w["output_norm.weight"], c.norm_eps)
        return x @ w.get("output.weight", w["token_embd.weight"]).T

    def _attention(self, h, b, cos, sin):
        c, w = self.cfg, self.weights
        n, hd = len(h), c.head_dim
        q = rope((h @ w[b + "attn_q.weight"].T).reshape(n, c.n_head, hd), cos, sin)
        k = rope((h @ w[b + "attn_k.weight"].T).reshape(n, c.n_head_kv, hd), cos, sin)
        v = (h @ w[b + "attn_v.weight"].T).reshape(n, c.n_head_kv, hd)
        group = c.n_head // c.n_head_kv
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)  # query head h reads kv head h // group
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
        scores = scores + np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)  # causal: no peeking ahead
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out = np.einsum("hqk,khd->qhd", p, v).reshape(n, c.n_head * hd)
        return out @ w[b + "attn_output.weight"].T


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def rope_tables(n: int, head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of position · base^(-2i/head_dim), shape (n, 1, head_dim/2)."""
    freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angle = np.arange(n, dtype=np.float64)[:, None] * freq[None, :]
    return np.cos(angle)[:, None, :].astype(np.float32), np.sin(angle)[:, None, :].astype(np.float32)


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate each consecutive pair (x[2i], x[2i+1]) of every head (llama.cpp's ROPE_TYPE_NORM)."""
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out
