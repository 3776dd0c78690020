"""A llama forward pass in plain numpy: what llama.cpp computes for a ``llama`` GGUF.

    >>> model = Llama.load("kquant/data/kquant-tiny-f16.gguf")
    >>> logits = model.logits([0, 71, 300, 12])      # (4, n_vocab) float32, one row per position

It reads the weights from the file (F32, F16, BF16, or any block format kquant decodes:
Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K … Q6_K, dequantized to float32 once at load time) and
follows llama.cpp's graph (``llm_build_llama``) step by step, so every number can be inspected:

    x = token_embd[tokens]
    per block:  x += attn_output · attention(RoPE(attn_q · n1(x)), RoPE(attn_k · n1(x)), attn_v · n1(x))
                x += ffn_down · (silu(ffn_gate · n2(x)) * (ffn_up · n2(x)))
    logits = output · norm(x)        (output is token_embd when the file has no output.weight)

with ``n(x) = x / sqrt(mean(x²) + eps) * weight`` (RMSNorm), RoPE rotating consecutive pairs
(x[2i], x[2i+1]) by ``pos · base^(-2i/head_dim)``, and grouped-query attention in which
query head h reads key/value head ``h // (n_head / n_head_kv)``.

Two ways to look inside:

* ``model.logits(tokens, observe=f)`` calls ``f(name, x)`` before every weight matrix
  multiplication, with the weight's GGUF name ("blk.3.ffn_down.weight") and its input
  ``x`` of shape (n_tokens, n_cols) float32. That input is what llama.cpp's llama-imatrix
  records (kquant.imatrix collects it through this hook).
* ``model.forward(tokens).layers[i]`` is the residual stream after block i, shape
  (n_tokens, n_embd): compare a quantized file's layers with the F16 file's to see where
  the error enters and how it grows (``layer_errors(f16_model, q_model, tokens)``).

It is a specification, not an engine: one sequence, float32 throughout; ``generate`` keeps a KV
cache (``forward(tokens, cache=...)``) so that each new token costs one position, not the whole text.
Its job is to prove that an exported file means what its trainer meant (tests/test_model.py
compares it with llama.cpp's logits) and to let a reader look inside. With quantized weights
it is not bit-for-bit llama.cpp: llama.cpp's CPU kernels also round the *activations*
(to F16 for F16 weights, to Q8_0 / Q8_1 / Q8_K blocks for quantized ones) before each dot
product, and numpy does not; tests/test_model.py measures the difference.

Notebook 10 runs it to see every matrix's input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from kquant.errors import KQuantError
from kquant.formats import FORMATS, dequantize
from kquant.gguf.llama_keys import check_llama
from kquant.gguf.reader import GGUFFile, Tensor, open_gguf
from kquant.gguf.reader import weights as float_weights
from kquant.model.config import BLOCK_TENSORS, Config

T = GGMLQuantizationType

# What Llama.load reads: plain floats, and every block format kquant can decode.
FLOAT_TYPES = (T.F32, T.F16, T.BF16)
READABLE = FLOAT_TYPES + tuple(FORMATS)


# observe(name, x): name of the weight matrix, x its (n_tokens, n_cols) float32 input.
Observer = Callable[[str, np.ndarray], None]


@dataclass
class Forward:
    """One forward pass: the logits and the residual stream after every block."""

    logits: np.ndarray  # (n_tokens, n_vocab)
    layers: list[np.ndarray] = field(repr=False)  # layers[i]: (n_tokens, n_embd), x after block i


@dataclass
class KVCache:
    """The keys (after RoPE) and values of every position so far, per layer: (n_past, n_head_kv, head_dim)."""

    keys: list[np.ndarray]
    values: list[np.ndarray]

    @property
    def n_past(self) -> int:
        return len(self.keys[0]) if self.keys else 0


@dataclass
class Llama:
    """A llama model's hyper-parameters and float32 weights (llama.cpp's tensor names)."""

    cfg: Config
    weights: dict[str, np.ndarray]
    path: Path | None = None  # the GGUF it was read from (kquant.imatrix tokenizes with it)

    @classmethod
    def load(cls, path) -> Llama:
        """Read a llama GGUF; quantized tensors are decoded to float32 with kquant.dequantize."""
        path = Path(path)
        with open_gguf(path) as f:  # missing, truncated, corrupt or hostile: one clear error
            return cls._from_file(path, f)

    @classmethod
    def _from_file(cls, path: Path, r: GGUFFile) -> Llama:
        meta = {k: r.get(k) for k in r.fields if not k.startswith("tokenizer.ggml.")}
        if meta.get("general.architecture") != "llama":
            raise KQuantError(
                f"{path} is a {meta.get('general.architecture')!r} model; kquant.model.forward reads llama models"
            )
        if int(meta.get("llama.expert_count", 0) or 0) > 0:
            raise KQuantError(
                f"{path} is a mixture-of-experts llama; kquant.model.forward runs dense llama models only"
            )
        check_llama(r)  # what llama.cpp's loader refuses (a 10^9-layer model, a wrong-typed key) is refused here
        weights = {t.name: _read_tensor(path, t) for t in r.tensors}
        a = "llama."
        for key in (
            "context_length",
            "embedding_length",
            "block_count",
            "attention.head_count",
            "feed_forward_length",
            "attention.layer_norm_rms_epsilon",
        ):
            if a + key not in meta:
                raise KQuantError(
                    f"{path} lacks the metadata key {a + key}: kquant.model.forward (like llama.cpp) needs it"
                )
        if "token_embd.weight" not in weights:
            raise KQuantError(f"{path} has no token_embd.weight: kquant.model.forward needs a complete llama model")
        cfg = Config(
            n_vocab=weights["token_embd.weight"].shape[0],
            n_ctx=int(meta[a + "context_length"]),
            n_embd=int(meta[a + "embedding_length"]),
            n_layer=int(meta[a + "block_count"]),
            n_head=_layer0(meta[a + "attention.head_count"]),
            n_head_kv=_layer0(meta.get(a + "attention.head_count_kv", meta[a + "attention.head_count"])),
            n_ff=int(meta[a + "feed_forward_length"]),
            rope_base=float(meta.get(a + "rope.freq_base", 10000.0)),
            norm_eps=float(meta[a + "attention.layer_norm_rms_epsilon"]),
        )
        needed = ["output_norm.weight"] + [f"blk.{i}.{n}.weight" for i in range(cfg.n_layer) for n in BLOCK_TENSORS]
        missing = [n for n in needed if n not in weights]
        if missing:
            raise KQuantError(
                f"{path} lacks {missing[0]} ({len(missing)} tensors missing): kquant.model.forward needs a complete "
                "llama model"
            )
        return cls(cfg, weights, path)

    def logits(self, tokens, observe: Observer | None = None) -> np.ndarray:
        """Logits (len(tokens), n_vocab) for every position of one sequence."""
        return self.forward(tokens, observe).logits

    def forward(self, tokens, observe: Observer | None = None, cache: KVCache | None = None) -> Forward:
        """The logits and the residual stream after each block; ``observe`` sees every matmul input.

        With a ``cache``, ``tokens`` continue the sequence it holds (their positions start at
        ``cache.n_past``) and their keys and values are appended to it.
        """
        tokens = self._check_tokens(tokens)
        c, w = self.cfg, self.weights
        n_past = 0 if cache is None else cache.n_past
        if n_past + len(tokens) > c.n_ctx:
            raise KQuantError(f"{n_past + len(tokens)} positions: the model's context is {c.n_ctx}")
        x = w["token_embd.weight"][tokens]  # (n, n_embd): a row lookup, not a matmul
        cos, sin = rope_tables(n_past + len(tokens), c.head_dim, c.rope_base)
        cos, sin = cos[n_past:], sin[n_past:]
        layers = []
        for i in range(c.n_layer):
            b = f"blk.{i}."
            h = rms_norm(x, w[b + "attn_norm.weight"], c.norm_eps)
            x = x + self._attention(h, b, cos, sin, observe, None if cache is None else (cache, i))
            x = x + self._ffn(rms_norm(x, w[b + "ffn_norm.weight"], c.norm_eps), b, observe)
            layers.append(x)
        x = rms_norm(x, w["output_norm.weight"], c.norm_eps)
        # A tied model multiplies by token_embd.weight itself (llama.cpp names the matmul after it).
        out = "output.weight" if "output.weight" in w else "token_embd.weight"
        return Forward(self._mul_mat(out, x, observe), layers)

    def cache(self) -> KVCache:
        """An empty KV cache for ``forward(tokens, cache=...)`` and ``generate``."""
        empty = np.zeros((0, self.cfg.n_head_kv, self.cfg.head_dim), dtype=np.float32)
        return KVCache([empty] * self.cfg.n_layer, [empty] * self.cfg.n_layer)

    def generate(self, tokens, max_tokens: int, stop=()) -> list[int]:
        """Greedy continuation of ``tokens``: up to ``max_tokens`` new ids, ending early at one in ``stop``.

        The prompt runs once; then each new token is one position through the model, its keys and
        values appended to a KV cache (llama.cpp does the same), instead of the whole sequence again.
        """
        cache = self.cache()
        logits = self.forward(tokens, cache=cache).logits[-1]
        out: list[int] = []
        for _ in range(max_tokens):
            nxt = int(np.argmax(logits))
            out.append(nxt)
            if nxt in stop or cache.n_past >= self.cfg.n_ctx:
                break
            logits = self.forward([nxt], cache=cache).logits[-1]
        return out

    def _mul_mat(self, name: str, x: np.ndarray, observe: Observer | None) -> np.ndarray:
        """x @ W.T for the weight ``name``: (n, n_cols) -> (n, n_rows); the one place activations meet weights."""
        if observe is not None:
            observe(name, x)
        return x @ self.weights[name].T

    def _attention(self, h, b, cos, sin, observe, cached=None):
        c = self.cfg
        n, hd = len(h), c.head_dim
        q = rope(self._mul_mat(b + "attn_q.weight", h, observe).reshape(n, c.n_head, hd), cos, sin)
        k = rope(self._mul_mat(b + "attn_k.weight", h, observe).reshape(n, c.n_head_kv, hd), cos, sin)
        v = self._mul_mat(b + "attn_v.weight", h, observe).reshape(n, c.n_head_kv, hd)
        n_past = 0
        if cached is not None:  # the earlier positions' keys and values, kept instead of recomputed
            cache, layer = cached
            n_past = len(cache.keys[layer])
            k = cache.keys[layer] = np.concatenate([cache.keys[layer], k])
            v = cache.values[layer] = np.concatenate([cache.values[layer], v])
        group = c.n_head // c.n_head_kv
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)  # query head h reads kv head h // group
        q, k, v = (a.transpose(1, 0, 2) for a in (q, k, v))  # (n_head, n, hd): one matrix per head
        scores = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(hd))  # (n_head, n, n_past + n): query i · key j
        # causal: query i sits at position n_past + i and sees the keys up to it, no peeking ahead
        scores = scores + np.triu(np.full((n, n_past + n), -np.inf, dtype=np.float32), 1 + n_past)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out = (p @ v).transpose(1, 0, 2).reshape(n, c.n_head * hd)  # back to (n, n_head * hd)
        return self._mul_mat(b + "attn_output.weight", out, observe)

    def _ffn(self, h, b, observe):
        """SwiGLU: ffn_down · (silu(ffn_gate · h) * (ffn_up · h))."""
        gate = silu(self._mul_mat(b + "ffn_gate.weight", h, observe))
        up = self._mul_mat(b + "ffn_up.weight", h, observe)
        return self._mul_mat(b + "ffn_down.weight", gate * up, observe)

    def _check_tokens(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.ndim != 1 or len(tokens) == 0 or tokens.dtype.kind not in "iu":
            raise KQuantError("tokens must be a non-empty 1-D sequence of integer token ids")
        if tokens.min() < 0 or tokens.max() >= self.cfg.n_vocab:
            raise KQuantError(f"token ids must lie in [0, {self.cfg.n_vocab}); got {tokens.min()}..{tokens.max()}")
        return tokens


def layer_errors(reference: Llama, model: Llama, tokens) -> np.ndarray:
    """Per block, how far ``model``'s residual stream is from ``reference``'s: (n_layer,) relative RMS.

    ``||x_model - x_ref|| / ||x_ref||`` after each block, on the same tokens: plot it to see
    where a quantized file's error enters and how it grows through the layers.
    """
    if reference.cfg != model.cfg:
        raise KQuantError("the two models have different hyper-parameters: compare two files of the same model")
    ref, other = reference.forward(tokens), model.forward(tokens)
    return np.array([np.linalg.norm(b - a) / np.linalg.norm(a) for a, b in zip(ref.layers, other.layers)])


def matmul_errors(reference: Llama, model: Llama, tokens) -> dict[str, float]:
    """Per weight matrix, the relative error of its output when ``model``'s weights replace ``reference``'s.

    Both multiply the *same* inputs, the ones the reference meets on ``tokens``:
    ``||x Ŵᵀ − x Wᵀ|| / ||x Wᵀ||``. This is one matrix's own error on real activations, with
    the errors of the layers before it left out (``layer_errors`` shows them adding up).
    """
    if reference.cfg != model.cfg:
        raise KQuantError("the two models have different hyper-parameters: compare two files of the same model")
    inputs: dict[str, np.ndarray] = {}
    reference.forward(tokens, observe=inputs.__setitem__)
    out = {}
    for name, x in inputs.items():
        y = x @ reference.weights[name].T
        out[name] = float(np.linalg.norm(x @ model.weights[name].T - y) / np.linalg.norm(y))
    return out


def _layer0(v) -> int:
    """A per-layer hyper-parameter: one number, or an array with one per layer (this pass uses layer 0's)."""
    return int(v[0]) if isinstance(v, np.ndarray) else int(v)


def _read_tensor(path: Path, t: Tensor) -> np.ndarray:
    """One tensor as float32 in numpy order (rows, cols), whatever its GGUF type."""
    if t.type in FLOAT_TYPES:
        return float_weights(t)
    if t.type in FORMATS:
        return dequantize(t.data.reshape(-1, t.data.shape[-1]), t.type).reshape(t.shape)
    raise KQuantError(
        f"{path}: {t.name} is {t.type.name}, which kquant cannot decode; kquant.model.forward reads "
        f"{', '.join(q.name for q in READABLE)}"
    )


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
