"""llama.cpp's quantization mixes: which format each tensor of a model gets, and why.

"Q4_K_M" is not a block format. It is a recipe (llama.cpp calls it a *file type*,
``llama_ftype``) that gives every tensor of a model its own format: most matrices get
the mix's default (Q4_K), a few sensitive ones get more bits (Q6_K), norms stay F32.

    >>> from kquant.mixes import ModelParams, TensorSpec, plan
    >>> from gguf import GGMLQuantizationType as T
    >>> model = ModelParams(n_layer=16, n_head=4, n_head_kv=4)
    >>> tensors = [TensorSpec("blk.0.attn_norm.weight", (256,), T.F32), TensorSpec("blk.0.attn_q.weight", (256, 256),
    T.F32)]
    >>> [(c.type.name, c.reason) for c in plan(tensors, model, "Q4_K_M")]  # doctest: +NORMALIZE_WHITESPACE
    [('F32', '1-D tensor: llama.cpp quantizes only matrices (2-D and 3-D) → stays F32'),
     ('Q4_K', 'attn_q of layer 0: the Q4_K_M default Q4_K')]

The rules are those of ``llama_tensor_get_type`` in src/llama-quant.cpp of llama.cpp
0c1e57098 (the copy vendored by llama-cpp-python 0.3.36), for the "llama" architecture
with or without an importance matrix (``has_imatrix``: for the mixes here it changes one
rule, Q4_0 / Q5_0 give ffn_down of the first n_layer/8 layers Q4_1 / Q5_1). Left out on
purpose: the Falcon, GLM5-NEXT and BailingMoE3 branches (other architectures), the
IQ/TQ/MXFP4 file types (kquant does not encode them). Q2_K_S, which llama.cpp writes
only with an importance matrix, is in ``IMATRIX_MIXES``, apart from ``MIXES``. This module
is pure logic: names, shapes and hyper-parameters in, a plan out;
``kquant.gguf_file`` applies it to a real file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from .errors import KQuantError

T = GGMLQuantizationType

# The llama.cpp the rules (and kquant's file layout) follow, byte for byte.
LLAMA_CPP_VERSION = "0c1e57098"


@dataclass(frozen=True)
class Mix:
    """One llama.cpp file type: its id (written as general.file_type) and default format."""

    name: str
    file_type: LlamaFileType
    default: GGMLQuantizationType
    summary: str  # llama-quantize's own one-line description (tools/quantize/quantize.cpp)


MIXES: dict[str, Mix] = {
    m.name: m
    for m in (
        Mix("Q4_0", LlamaFileType.MOSTLY_Q4_0, T.Q4_0, "4.34G, +0.4685 ppl @ Llama-3-8B"),
        Mix("Q4_1", LlamaFileType.MOSTLY_Q4_1, T.Q4_1, "4.78G, +0.4511 ppl @ Llama-3-8B"),
        Mix("Q5_0", LlamaFileType.MOSTLY_Q5_0, T.Q5_0, "5.21G, +0.1316 ppl @ Llama-3-8B"),
        Mix("Q5_1", LlamaFileType.MOSTLY_Q5_1, T.Q5_1, "5.65G, +0.1062 ppl @ Llama-3-8B"),
        Mix("Q2_K", LlamaFileType.MOSTLY_Q2_K, T.Q2_K, "2.96G, +3.5199 ppl @ Llama-3-8B"),
        Mix("Q3_K_S", LlamaFileType.MOSTLY_Q3_K_S, T.Q3_K, "3.41G, +1.6321 ppl @ Llama-3-8B"),
        Mix("Q3_K_M", LlamaFileType.MOSTLY_Q3_K_M, T.Q3_K, "3.74G, +0.6569 ppl @ Llama-3-8B"),
        Mix("Q3_K_L", LlamaFileType.MOSTLY_Q3_K_L, T.Q3_K, "4.03G, +0.5562 ppl @ Llama-3-8B"),
        Mix("Q4_K_S", LlamaFileType.MOSTLY_Q4_K_S, T.Q4_K, "4.37G, +0.2689 ppl @ Llama-3-8B"),
        Mix("Q4_K_M", LlamaFileType.MOSTLY_Q4_K_M, T.Q4_K, "4.58G, +0.1754 ppl @ Llama-3-8B"),
        Mix("Q5_K_S", LlamaFileType.MOSTLY_Q5_K_S, T.Q5_K, "5.21G, +0.1049 ppl @ Llama-3-8B"),
        Mix("Q5_K_M", LlamaFileType.MOSTLY_Q5_K_M, T.Q5_K, "5.33G, +0.0569 ppl @ Llama-3-8B"),
        Mix("Q6_K", LlamaFileType.MOSTLY_Q6_K, T.Q6_K, "6.14G, +0.0217 ppl @ Llama-3-8B"),
        Mix("Q8_0", LlamaFileType.MOSTLY_Q8_0, T.Q8_0, "7.96G, +0.0026 ppl @ Llama-3-8B"),
    )
}

# Mixes llama.cpp refuses to write without an importance matrix (tensor_requires_imatrix:
# every Q2_K tensor of a Q2_K_S file but token_embd and output). Kept apart from MIXES, which
# every mix loop (the demo, the notebooks, the whole-file tests) can quantize without one.
IMATRIX_MIXES: dict[str, Mix] = {
    "Q2_K_S": Mix("Q2_K_S", LlamaFileType.MOSTLY_Q2_K_S, T.Q2_K, "2.96G, +3.1836 ppl @ Llama-3-8B"),
}

# llama-quantize accepts these short names too.
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


def get_mix(mix: str | Mix) -> Mix:
    """The Mix called ``mix`` ("Q4_K_M", "q4_k_m" and the alias "Q4_K" all work)."""
    if isinstance(mix, Mix):
        return mix
    name = str(mix).strip().upper()
    name = ALIASES.get(name, name)
    if name in IMATRIX_MIXES:
        return IMATRIX_MIXES[name]
    if name not in MIXES:
        raise KQuantError(f"unknown mix {mix!r}: use one of {', '.join([*MIXES, *IMATRIX_MIXES])}")
    return MIXES[name]


def requires_imatrix(name: str, new_type: GGMLQuantizationType, mix: str | Mix) -> bool:
    """tensor_requires_imatrix for the types kquant writes: Q2_K in a Q2_K_S file, except token_embd and output."""
    if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    return new_type == T.Q2_K and get_mix(mix).name == "Q2_K_S"


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


@dataclass(frozen=True)
class Choice:
    """The plan for one tensor: the format it gets and the reason, in words."""

    name: str
    shape: tuple[int, ...]
    source: GGMLQuantizationType
    type: GGMLQuantizationType
    reason: str


def plan(
    tensors,
    model: ModelParams,
    mix: str | Mix = "Q4_K_M",
    *,
    pure: bool = False,
    overrides=(),
    output_type=None,
    token_embd_type=None,
    has_imatrix: bool = False,
) -> list[Choice]:
    """Choose a format for every tensor, in the order llama.cpp writes them.

    ``tensors``: TensorSpecs (any order). ``pure``: every matrix gets the mix's default
    type (llama-quantize --pure). ``overrides``: (regex, type) pairs or a dict, first
    match wins (--tensor-type; Python's ``re.search`` stands in for ``std::regex_search``).
    ``output_type`` / ``token_embd_type``: --output-tensor-type / --token-embedding-type.
    ``has_imatrix``: an importance matrix will be used (--imatrix), which turns on the
    rules llama.cpp keeps for that case (qs.has_imatrix).
    """
    mix = get_mix(mix)
    rules = _Rules(
        mix=mix,
        model=model,
        pure=pure,
        overrides=[(_regex(p), qtype(t)) for p, t in _pairs(overrides)],
        output_type=None if output_type is None else qtype(output_type),
        token_embd_type=None if token_embd_type is None else qtype(token_embd_type),
        has_imatrix=has_imatrix,
    )
    ordered = sorted(tensors, key=lambda t: llama_order(t.name))
    names = [t.name for t in ordered]
    if len(set(names)) != len(names):
        raise KQuantError("two tensors share a name: a GGUF file holds each tensor once")
    # Counted over the whole model before the first choice, as llama.cpp does.
    rules.n_attn_v = sum(is_attn_v(category(n)) for n in names)
    rules.tied = "output.weight" not in names
    return [rules.choose(t) for t in ordered]


def _pairs(overrides):
    """(pattern, type) pairs from a dict or a sequence of pairs, keeping their order."""
    return list(overrides.items()) if isinstance(overrides, dict) else list(overrides)


def _regex(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise KQuantError(f"tensor override {pattern!r} is not a valid regular expression: {e}") from None


def qtype(t) -> GGMLQuantizationType:
    """A GGMLQuantizationType from itself, its id or its name ("q8_0")."""
    try:
        return T[t.strip().upper()] if isinstance(t, str) else T(t)
    except (KeyError, ValueError):
        raise KQuantError(f"unknown tensor type {t!r}: use a ggml type name such as Q8_0, Q4_K or F16") from None


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


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's "layers that get more bits": the first eighth, the last eighth, every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _more_bits_words(i: int, n: int) -> str:
    if i < n // 8:
        return f"a layer that gets more bits (in the first eighth of {n})"
    if i >= 7 * n // 8:
        return f"a layer that gets more bits (in the last eighth of {n})"
    if (i - n // 8) % 3 == 2:
        return f"a layer that gets more bits (every third layer between the first and last eighth of {n})"
    return "not one of the layers that get more bits (first eighth / last eighth / every third)"


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


# ---------------------------------------------------------------------------------------------
# The rules (llama_tensor_get_type and llama_tensor_get_type_impl).


@dataclass
class _Rules:
    mix: Mix
    model: ModelParams
    pure: bool
    overrides: list
    output_type: GGMLQuantizationType | None
    token_embd_type: GGMLQuantizationType | None
    has_imatrix: bool = False
    # Model-wide facts and running counters, as in llama.cpp's quantize_state_impl.
    n_attn_v: int = 0
    tied: bool = True
    i_attn_v: int = 0
    i_ffn_down: int = 0

    def choose(self, t: TensorSpec) -> Choice:
        why_kept = kept_as_is(t)
        if why_kept:
            return Choice(t.name, t.shape, t.type, t.type, f"{why_kept} → stays {t.type.name}")
        new, why = self._pick(t)
        return Choice(t.name, t.shape, t.type, new, why)

    def _pick(self, t: TensorSpec) -> tuple[GGMLQuantizationType, str]:
        cat = category(t.name)
        # Explicit --token-embedding-type / --output-tensor-type win outright, with no shape fallback.
        if self.token_embd_type is not None and cat == "token_embd" and not self._named_per_layer_embd(t):
            return self.token_embd_type, f"token_embedding_type {self.token_embd_type.name} was asked for"
        if self.output_type is not None and cat == "output":
            return self.output_type, f"output_tensor_type {self.output_type.name} was asked for"

        override = next(((p, q) for p, q in self.overrides if p.search(t.name)), None)
        if override:
            new, why = override[1], f"matches the override {override[0].pattern!r} → {override[1].name}"
        elif self.pure:
            new, why = self.mix.default, f"pure {self.mix.name}: every matrix gets the default {self.mix.default.name}"
        else:
            new, why = self._mix_rule(t, cat)
        return self._fallback(t, new, why)

    def _named_per_layer_embd(self, t: TensorSpec) -> bool:
        # per_layer_token_embd follows token_embedding_type unless an override names it.
        return t.name == "per_layer_token_embd.weight" and any(p.search(t.name) for p, _ in self.overrides)

    def _fallback(self, t: TensorSpec, new, why: str) -> tuple[GGMLQuantizationType, str]:
        """tensor_type_fallback: a row must hold whole blocks; if not, pick a type with smaller blocks."""
        ncols, block = t.row_length, GGML_QUANT_SIZES[new][0]
        if ncols % block == 0:
            return new, why
        smaller = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}
        if new in smaller:
            fallback = smaller[new]
        elif block <= 32:
            fallback = new  # already a 32-weight block: nothing smaller to demote to
        else:
            raise KQuantError(f"{t.name}: llama.cpp defines no fallback for {new.name} (rows of {ncols})")
        why = f"{why}; but its rows of {ncols} are not a multiple of {block} → falls back to {fallback.name}"
        if ncols % GGML_QUANT_SIZES[fallback][0] != 0:
            fallback = T.F16
            why += f"; {ncols} is not a multiple of 32 either → F16"
        return fallback, why

    def _mix_rule(self, t: TensorSpec, cat: str) -> tuple[GGMLQuantizationType, str]:
        """llama_tensor_get_type_impl for the llama architecture and the mixes in MIXES."""
        mix, default, m = self.mix.name, self.mix.default, self.model
        what = _what(t, cat)
        as_default = f"{what}: the {mix} default {default.name}"

        if cat == "output" or (self.tied and cat == "token_embd"):
            role = "output.weight" if cat == "output" else "token_embd (tied: it doubles as the output layer)"
            if self.output_type is not None:  # only a tied token_embd gets here with one
                return self.output_type, f"{role}: output_tensor_type {self.output_type.name} was asked for"
            if t.row_length % GGML_QUANT_SIZES[default][0] != 0:
                return T.Q8_0, f"{role}: rows of {t.row_length} do not fit {default.name} blocks → Q8_0"
            if default != T.Q8_0:
                return (
                    T.Q6_K,
                    f"{role}: the output layer is the most sensitive matrix, every mix but Q8_0 gives it Q6_K",
                )
            return default, f"{role}: the Q8_0 mix keeps it at Q8_0"

        if cat == "token_embd":
            return default, f"token_embd (untied): the {mix} default {default.name}"

        if is_attn_v(cat):
            i, n = self.i_attn_v, self.n_attn_v
            self.i_attn_v += 1
            new, why = default, as_default
            if mix == "Q2_K":
                if m.n_gqa >= 4:
                    new, why = (
                        T.Q4_K,
                        f"{what}: Q2_K gives attn_v Q4_K when {m.n_gqa} query heads share a kv head (GQA ≥ 4)",
                    )
                else:
                    new, why = T.Q3_K, f"{what}: Q2_K gives attn_v Q3_K (GQA {m.n_gqa} < 4)"
            elif mix == "Q2_K_S" and m.n_gqa >= 4:
                new, why = (
                    T.Q4_K,
                    f"{what}: Q2_K_S gives attn_v Q4_K when {m.n_gqa} query heads share a kv head (GQA ≥ 4)",
                )
            elif mix == "Q3_K_M" and i < 2:
                new, why = T.Q5_K, f"{what}: one of the first 2 attn_v tensors → Q5_K"
            elif mix == "Q3_K_M":
                new, why = T.Q4_K, f"{what}: Q3_K_M gives attn_v Q4_K after the first 2"
            elif mix == "Q3_K_L":
                new, why = T.Q5_K, f"{what}: Q3_K_L gives attn_v Q5_K"
            elif mix in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, n):
                new, why = T.Q6_K, f"{what}: {_more_bits_words(i, n)} → Q6_K"
            elif mix in ("Q4_K_M", "Q5_K_M"):
                why = f"{what}: {_more_bits_words(i, n)} → {default.name}"
            elif mix == "Q4_K_S" and i < 4:
                new, why = T.Q5_K, f"{what}: one of the first 4 attn_v tensors → Q5_K"
            if m.is_70b and new in (T.Q3_K, T.Q4_K):
                new, why = T.Q5_K, f"{why}; 70B model: attn_v is 8x smaller than attn_q (GQA), so it gets Q5_K"
            if m.n_expert == 8:
                new, why = T.Q8_0, f"{what}: 8-expert model (Mixtral-like): attn_v → Q8_0, a small price for quality"
            return new, why

        if cat == "attn_k" and m.n_expert == 8:
            return T.Q8_0, f"{what}: 8-expert model (Mixtral-like): attn_k → Q8_0, a small price for quality"

        if cat == "ffn_down":
            i, n = self._ffn_layer(t, self.i_ffn_down), m.n_layer
            self.i_ffn_down += 1
            if mix == "Q2_K":
                return T.Q3_K, f"{what}: Q2_K gives ffn_down Q3_K"
            if mix == "Q2_K_S":
                if i < n // 8:
                    return T.Q4_K, f"{what}: layer {i} is in the first eighth of {n} → Q4_K"
                return default, as_default
            if mix == "Q3_K_M":
                if i < n // 16:
                    return T.Q5_K, f"{what}: layer {i} is in the first sixteenth of {n} → Q5_K"
                return T.Q4_K, f"{what}: Q3_K_M gives ffn_down Q4_K (Q5_K only in the first sixteenth)"
            if mix == "Q3_K_L":
                return T.Q5_K, f"{what}: Q3_K_L gives ffn_down Q5_K"
            if mix in ("Q4_K_M", "Q5_K_M"):
                new = T.Q6_K if use_more_bits(i, n) else default
                return new, f"{what}: {_more_bits_words(i, n)} → {new.name}"
            if mix == "Q4_K_S" and i < n // 8:
                return T.Q5_K, f"{what}: layer {i} is in the first eighth of {n} → Q5_K"
            if mix in ("Q4_0", "Q5_0") and self.has_imatrix and i < n // 8:
                # llama.cpp's guard against "craziness" in the first ffn_down layers; only with an
                # imatrix, so that a file made without one stays what it always was.
                new = T.Q4_1 if mix == "Q4_0" else T.Q5_1
                return new, (
                    f"{what}: with an importance matrix, {mix} gives ffn_down of the first eighth "
                    f"of {n} layers {new.name} (layer {i} < {n // 8})"
                )
            return default, as_default

        if cat in ("ffn_gate", "ffn_up"):
            self._ffn_layer(t, None)  # llama.cpp checks the layer of expert tensors here too
            return default, as_default

        if cat == "attn_output":
            if m.n_expert == 8 and mix in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M"):
                return T.Q5_K, f"{what}: 8-expert model (Mixtral-like): attn_output → Q5_K"
            if m.n_expert != 8 and mix in ("Q2_K", "Q3_K_M", "Q3_K_L"):
                new = {"Q2_K": T.Q3_K, "Q3_K_M": T.Q4_K, "Q3_K_L": T.Q5_K}[mix]
                return new, f"{what}: {mix} gives attn_output one step more → {new.name}"

        return default, as_default

    def _ffn_layer(self, t: TensorSpec, counted: int | None) -> int | None:
        """Dense models count ffn tensors; MoE models read the layer from the name (experts are not in order)."""
        if self.model.n_expert <= 1:
            return counted
        i = layer_of(t.name)
        if i < 0:
            raise KQuantError(f"{t.name}: cannot tell its layer (expected a name like blk.N.…)")
        if i >= self.model.n_layer:
            raise KQuantError(f"{t.name}: layer {i} is outside the model's {self.model.n_layer} layers")
        return i


def _what(t: TensorSpec, cat: str) -> str:
    """'attn_v of layer 3', 'output.weight', ... for the reasons."""
    layer = layer_of(t.name)
    role = cat if cat != "other" else t.name
    return f"{role} of layer {layer}" if layer >= 0 else role
