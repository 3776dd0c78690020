"""What the mix rules see of a model: its hyper-parameters, each tensor's name, shape and role.

A tensor's role (``category``) is found from its name by substring, in llama.cpp's order
(``tensor_get_category``); ``kept_as_is`` says which tensors are never quantized
(``tensor_allows_quantization``), with llama.cpp's reasons. Notebook 06 uses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gguf import GGMLQuantizationType


@dataclass(frozen=True)
class ModelParams:
    """The hyper-parameters the rules read (from the GGUF's ``{arch}.*`` keys)."""

    n_layer: int  # {arch}.block_count
    n_head: int  # {arch}.attention.head_count (of layer 0)
    n_head_kv: int  # {arch}.attention.head_count_kv (of layer 0; llama.cpp defaults it to n_head)
    n_expert: int = 0  # {arch}.expert_count (0 for a dense model)

    @property
    def n_gqa(self) -> int:
        """Query heads per key/value head (grouped-query attention); 1 without GQA."""
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        """llama.cpp's LLM_TYPE_70B for a llama model: 80 layers and GQA (65B had no GQA)."""
        return self.n_expert != 8 and self.n_layer == 80 and self.n_head != self.n_head_kv


@dataclass(frozen=True)
class TensorSpec:
    """What the rules see of a tensor: its name, numpy shape (..., rows, row_length) and type."""

    name: str
    shape: tuple[int, ...]
    type: GGMLQuantizationType

    @property
    def row_length(self) -> int:
        """ggml's ne[0] ("ncols"): the weights in one row, the axis blocks are cut along."""
        return self.shape[-1]

    @property
    def n_dims(self) -> int:
        """ggml_n_dims: the dimensions left once size-1 outer axes are dropped (at least 1)."""
        dims = list(self.shape)
        while len(dims) > 1 and dims[0] == 1:
            dims.pop(0)
        return len(dims)


def layer_of(name: str) -> int:
    """The N of "blk.N.…", or -1 for tensors outside the blocks (llama.cpp's sscanf "blk.%d.")."""
    m = re.match(r"blk\.(\d+)", name)
    return int(m.group(1)) if m else -1


def llama_order(name: str) -> tuple[int, str]:
    """llama.cpp's tensor order (weight_name_comparer): by layer, non-block tensors first, then by name."""
    return layer_of(name), name


# ---------------------------------------------------------------------------------------------
# Categories (tensor_get_category): broad roles found by substring, checked in this order.

_CATEGORIES = [
    ("attn_qkv", "attn_qkv.weight"),
    ("attn_kv_b", "attn_kv_b.weight"),
    ("attn_v", "attn_v.weight"),
    ("attn_k", "attn_k.weight"),
    ("attn_q", "attn_q.weight"),
    ("attn_output", "attn_output.weight"),
    ("ffn_up", "ffn_up"),
    ("ffn_gate", "ffn_gate"),
    ("ffn_down", "ffn_down"),
]


def category(name: str) -> str:
    """The role of a tensor as llama.cpp's mix rules see it ("other" for the rest)."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for cat, needle in _CATEGORIES:
        if needle in name:
            return cat
    return "other"


def is_attn_v(cat: str) -> bool:
    """attn_v and the fused tensors that contain it: the ones the attn_v rules count."""
    return cat in ("attn_v", "attn_qkv", "attn_kv_b")


# ---------------------------------------------------------------------------------------------
# Which tensors are quantized at all (tensor_allows_quantization).

# Substrings that keep a tensor as it is, with the reason llama.cpp's comments give.
_NEVER_QUANTIZED = [
    ("_norm.weight", "a norm weight"),
    ("ffn_gate_inp.weight", "an expert router (ffn_gate_inp)"),
    ("ffn_gate_tid2eid.weight", "a token-to-expert routing table"),
    ("altup", "a tiny altup matrix"),
    ("laurel", "a tiny laurel matrix"),
    ("per_layer_model_proj", "a small per-layer projection"),
    ("ssm_conv1d", "a small conv1d weight"),
    ("shortconv.conv.weight", "a small conv1d weight"),
    ("indexer.k_proj.weight", "a tiny indexer projection"),
    ("indexer.q_proj.weight", "a tiny indexer projection"),
    ("time_mix_first.weight", "a small RWKV weight"),
    ("time_mix_w0.weight", "a small RWKV weight"),
    ("time_mix_w1.weight", "a small RWKV weight"),
    ("time_mix_w2.weight", "a small RWKV weight"),
    ("time_mix_v0.weight", "a small RWKV weight"),
    ("time_mix_v1.weight", "a small RWKV weight"),
    ("time_mix_v2.weight", "a small RWKV weight"),
    ("time_mix_a0.weight", "a small RWKV weight"),
    ("time_mix_a1.weight", "a small RWKV weight"),
    ("time_mix_a2.weight", "a small RWKV weight"),
    ("time_mix_g1.weight", "a small RWKV weight"),
    ("time_mix_g2.weight", "a small RWKV weight"),
    ("time_mix_decay_w1.weight", "a small RWKV weight"),
    ("time_mix_decay_w2.weight", "a small RWKV weight"),
    ("time_mix_lerp_fused.weight", "a small RWKV weight"),
    ("attn_rel_b.weight", "a relative position bias"),
    (".position_embd", "a multimodal position embedding"),
    ("sam.pos_embd", "a multimodal position embedding"),
    ("sam.neck.", "a multimodal SAM neck weight"),
    ("sam.net_", "a multimodal SAM weight"),
    (".rel_pos", "a multimodal relative position weight"),
    (".patch_embd", "a multimodal patch embedding"),
    (".patch_merger", "a multimodal patch merger"),
    ("a.rvq.codebook", "an audio codebook"),
    ("mm.a.code_embd", "an audio codebook"),
]


def kept_as_is(t: TensorSpec) -> str | None:
    """Why llama.cpp copies this tensor unchanged, or None when it may be quantized."""
    if t.n_dims < 2:
        return "1-D tensor: llama.cpp quantizes only matrices (2-D and 3-D)"
    if not t.name.endswith("weight"):
        return "not a weight (the name does not end in 'weight')"
    if t.name in ("position_embd.weight", "token_types.weight"):
        return "positional and token-type embeddings are never quantized"
    for needle, what in _NEVER_QUANTIZED:
        if needle in t.name:
            return f"{what}: llama.cpp never quantizes these"
    return None
