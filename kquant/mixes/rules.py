"""llama.cpp's mix rules: which format a tensor gets under a mix, and the reason in words.

The rules are those of ``llama_tensor_get_type`` and ``llama_tensor_get_type_impl`` in
src/llama-quant.cpp of llama.cpp 0c1e57098 (the copy vendored by llama-cpp-python 0.3.36),
for the "llama" architecture, with or without an importance matrix (``has_imatrix``: for
the mixes here it changes one rule, Q4_0 / Q5_0 give ffn_down of the first n_layer/8
layers Q4_1 / Q5_1; IQ4_NL gives them Q5_K only *without* one). Of the i-quant file types only
IQ4_NL is here (every branch that names LLAMA_FTYPE_MOSTLY_IQ4_NL). Left out on purpose: the
Falcon, GLM5-NEXT and BailingMoE3 branches (other architectures) and the other IQ/TQ/MXFP4 file
types (kquant does not encode them).

The code below is the decision; the words are in ``REASONS``, one template per rule, so a
rule reads like the C it mirrors and its explanation can be read (or translated) apart
from it. Notebook 06 shows every reason for the bundled model.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from kquant.errors import KQuantError
from kquant.mixes.catalog import Mix
from kquant.mixes.tensors import ModelParams, TensorSpec, category, is_attn_v, kept_as_is, layer_of

T = GGMLQuantizationType

# Why a tensor gets its type: one template per rule. {what} is "attn_v of layer 3" and the
# like; {mix} and {default} the mix and its default type; {new} the type chosen.
REASONS = {
    # explicit options
    "kept": "{why} → stays {new}",
    "token_embd_type": "token_embedding_type {new} was asked for",
    "output_type": "output_tensor_type {new} was asked for",
    "override": "matches the override {pattern!r} → {new}",
    "pure": "pure {mix}: every matrix gets the default {default}",
    "float": "a {mix} file: every matrix is converted to {default}, with no per-tensor rules",
    "default": "{what}: the {mix} default {default}",
    # the output layer (and a tied token_embd, which doubles as it)
    "output.asked": "{role}: output_tensor_type {new} was asked for",
    "output.rows": "{role}: rows of {ncols} do not fit {default} blocks → Q8_0",
    "output.q6_k": "{role}: the output layer is the most sensitive matrix, every mix but Q8_0 gives it Q6_K",
    "output.q8_0": "{role}: the Q8_0 mix keeps it at Q8_0",
    "token_embd.untied": "token_embd (untied): the {mix} default {default}",
    # attn_v: few weights (GQA shares them), much influence
    "attn_v.q2_k.gqa": "{what}: Q2_K gives attn_v Q4_K when {n_gqa} query heads share a kv head (GQA ≥ 4)",
    "attn_v.q2_k": "{what}: Q2_K gives attn_v Q3_K (GQA {n_gqa} < 4)",
    "attn_v.q2_k_s.gqa": "{what}: Q2_K_S gives attn_v Q4_K when {n_gqa} query heads share a kv head (GQA ≥ 4)",
    "attn_v.first_2": "{what}: one of the first 2 attn_v tensors → Q5_K",
    "attn_v.q3_k_m": "{what}: Q3_K_M gives attn_v Q4_K after the first 2",
    "attn_v.q3_k_l": "{what}: Q3_K_L gives attn_v Q5_K",
    "attn_v.more_bits": "{what}: {more_bits} → {new}",
    "attn_v.first_4": "{what}: one of the first 4 attn_v tensors → Q5_K",
    "attn_v.iq4_nl.gqa": "{what}: IQ4_NL gives attn_v Q5_K when {n_gqa} query heads share a kv head (GQA ≥ 4)",
    "attn_v.70b": "{why}; 70B model: attn_v is 8x smaller than attn_q (GQA), so it gets Q5_K",
    "attn.8_experts": "{what}: 8-expert model (Mixtral-like): {cat} → Q8_0, a small price for quality",
    # ffn_down: the largest matrices' output side
    "ffn_down.q2_k": "{what}: Q2_K gives ffn_down Q3_K",
    "ffn_down.first_eighth": "{what}: layer {i} is in the first eighth of {n} → {new}",
    "ffn_down.first_sixteenth": "{what}: layer {i} is in the first sixteenth of {n} → Q5_K",
    "ffn_down.q3_k_m": "{what}: Q3_K_M gives ffn_down Q4_K (Q5_K only in the first sixteenth)",
    "ffn_down.q3_k_l": "{what}: Q3_K_L gives ffn_down Q5_K",
    "ffn_down.more_bits": "{what}: {more_bits} → {new}",
    "ffn_down.iq4_nl": (
        "{what}: without an importance matrix, IQ4_NL gives ffn_down of the first eighth of {n} layers Q5_K (layer {i})"
    ),
    "ffn_down.imatrix": (
        "{what}: with an importance matrix, {mix} gives ffn_down of the first eighth "
        "of {n} layers {new} (layer {i} < {n8})"
    ),
    # attn_output
    "attn_output.8_experts": "{what}: 8-expert model (Mixtral-like): attn_output → Q5_K",
    "attn_output.one_step": "{what}: {mix} gives attn_output one step more → {new}",
    # rows that do not hold whole blocks
    "fallback": "{why}; but its rows of {ncols} are not a multiple of {block} → falls back to {new}",
    "fallback.f16": "{why}; {ncols} is not a multiple of 32 either → F16",
}

# tensor_type_fallback: a type with smaller blocks for rows that do not hold whole 256-weight blocks.
SMALLER_BLOCKS = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's "layers that get more bits": the first eighth, the last eighth, every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def more_bits_words(i: int, n: int) -> str:
    """use_more_bits in words, for the reasons."""
    if i < n // 8:
        return f"a layer that gets more bits (in the first eighth of {n})"
    if i >= 7 * n // 8:
        return f"a layer that gets more bits (in the last eighth of {n})"
    if (i - n // 8) % 3 == 2:
        return f"a layer that gets more bits (every third layer between the first and last eighth of {n})"
    return "not one of the layers that get more bits (first eighth / last eighth / every third)"


def say(rule: str, new: GGMLQuantizationType, **words) -> tuple[GGMLQuantizationType, str]:
    """The type a rule chose, with its reason filled in from REASONS."""
    return new, REASONS[rule].format(new=new.name, **words)


@dataclass(frozen=True)
class Choice:
    """The plan for one tensor: the format it gets and the reason, in words."""

    name: str
    shape: tuple[int, ...]
    source: GGMLQuantizationType
    type: GGMLQuantizationType
    reason: str


@dataclass
class Rules:
    """llama.cpp's quantize_state_impl: the options, model-wide facts and running counters."""

    mix: Mix
    model: ModelParams
    pure: bool
    overrides: list  # (compiled regex, type) pairs, first match wins
    output_type: GGMLQuantizationType | None
    token_embd_type: GGMLQuantizationType | None
    has_imatrix: bool = False
    n_attn_v: int = 0  # counted over the whole model before the first choice
    tied: bool = True  # no output.weight: token_embd doubles as the output layer
    i_attn_v: int = 0
    i_ffn_down: int = 0

    def choose(self, t: TensorSpec) -> Choice:
        why_kept = kept_as_is(t)
        if why_kept:
            return Choice(t.name, t.shape, t.type, *say("kept", t.type, why=why_kept))
        return Choice(t.name, t.shape, t.type, *self.pick(t))

    def pick(self, t: TensorSpec) -> tuple[GGMLQuantizationType, str]:
        """llama_tensor_get_type: explicit options first, then the mix's rule, then the shape fallback."""
        cat = category(t.name)
        # Explicit --token-embedding-type / --output-tensor-type win outright, with no shape fallback.
        if self.token_embd_type is not None and cat == "token_embd" and not self.named_per_layer_embd(t):
            return say("token_embd_type", self.token_embd_type)
        if self.output_type is not None and cat == "output":
            return say("output_type", self.output_type)
        if GGML_QUANT_SIZES[self.mix.default][0] == 1:  # F16 / BF16 / F32: no overrides, rules or fallback
            return say("float", self.mix.default, mix=self.mix.name, default=self.mix.default.name)
        override = next(((p, q) for p, q in self.overrides if p.search(t.name)), None)
        if override:
            new, why = say("override", override[1], pattern=override[0].pattern)
        elif self.pure:
            new, why = say("pure", self.mix.default, mix=self.mix.name, default=self.mix.default.name)
        else:
            new, why = self.mix_rule(t, cat)
        return self.fallback(t, new, why)

    def named_per_layer_embd(self, t: TensorSpec) -> bool:
        # per_layer_token_embd follows token_embedding_type unless an override names it.
        return t.name == "per_layer_token_embd.weight" and any(p.search(t.name) for p, _ in self.overrides)

    def fallback(self, t: TensorSpec, new, why: str) -> tuple[GGMLQuantizationType, str]:
        """tensor_type_fallback: a row must hold whole blocks; if not, pick a type with smaller blocks."""
        ncols, block = t.row_length, GGML_QUANT_SIZES[new][0]
        if ncols % block == 0:
            return new, why
        if new in SMALLER_BLOCKS:
            fallback = SMALLER_BLOCKS[new]
        elif block <= 32:
            fallback = new  # already a 32-weight block: nothing smaller to demote to
        else:
            raise KQuantError(f"{t.name}: llama.cpp defines no fallback for {new.name} (rows of {ncols})")
        fallback, why = say("fallback", fallback, why=why, ncols=ncols, block=block)
        if ncols % GGML_QUANT_SIZES[fallback][0] != 0:
            fallback, why = say("fallback.f16", T.F16, why=why, ncols=ncols)
        return fallback, why

    def mix_rule(self, t: TensorSpec, cat: str) -> tuple[GGMLQuantizationType, str]:
        """llama_tensor_get_type_impl for the llama architecture and the mixes in MIXES (and IQ4_NL, Q2_K_S)."""
        mix, default = self.mix.name, self.mix.default
        words = dict(what=what(t, cat), mix=mix, default=default.name)
        if cat == "output" or (self.tied and cat == "token_embd"):
            return self.output_rule(t, cat, words)
        if cat == "token_embd":
            return say("token_embd.untied", default, **words)
        if is_attn_v(cat):
            return self.attn_v_rule(words)
        if cat == "attn_k" and self.model.n_expert == 8:
            return say("attn.8_experts", T.Q8_0, cat="attn_k", **words)
        if cat == "ffn_down":
            return self.ffn_down_rule(t, words)
        if cat in ("ffn_gate", "ffn_up"):
            self.ffn_layer(t, None)  # llama.cpp checks the layer of expert tensors here too
        if cat == "attn_output":
            if self.model.n_expert == 8 and mix in ("Q2_K", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M"):
                return say("attn_output.8_experts", T.Q5_K, **words)
            if self.model.n_expert != 8 and mix in ("Q2_K", "Q3_K_M", "Q3_K_L"):
                return say("attn_output.one_step", {"Q2_K": T.Q3_K, "Q3_K_M": T.Q4_K, "Q3_K_L": T.Q5_K}[mix], **words)
        return say("default", default, **words)

    def output_rule(self, t: TensorSpec, cat: str, words: dict) -> tuple[GGMLQuantizationType, str]:
        role = "output.weight" if cat == "output" else "token_embd (tied: it doubles as the output layer)"
        default = self.mix.default
        if self.output_type is not None:  # only a tied token_embd gets here with one
            return say("output.asked", self.output_type, role=role)
        if t.row_length % GGML_QUANT_SIZES[default][0] != 0:
            return say("output.rows", T.Q8_0, role=role, ncols=t.row_length, default=default.name)
        if default != T.Q8_0:
            return say("output.q6_k", T.Q6_K, role=role)
        return say("output.q8_0", default, role=role)

    def attn_v_rule(self, words: dict) -> tuple[GGMLQuantizationType, str]:
        i, n, m, mix = self.i_attn_v, self.n_attn_v, self.model, self.mix.name
        self.i_attn_v += 1
        new, why = say("default", self.mix.default, **words)
        if mix == "Q2_K" and m.n_gqa >= 4:
            new, why = say("attn_v.q2_k.gqa", T.Q4_K, n_gqa=m.n_gqa, **words)
        elif mix == "Q2_K":
            new, why = say("attn_v.q2_k", T.Q3_K, n_gqa=m.n_gqa, **words)
        elif mix == "Q2_K_S" and m.n_gqa >= 4:
            new, why = say("attn_v.q2_k_s.gqa", T.Q4_K, n_gqa=m.n_gqa, **words)
        elif mix == "Q3_K_M" and i < 2:
            new, why = say("attn_v.first_2", T.Q5_K, **words)
        elif mix == "Q3_K_M":
            new, why = say("attn_v.q3_k_m", T.Q4_K, **words)
        elif mix == "Q3_K_L":
            new, why = say("attn_v.q3_k_l", T.Q5_K, **words)
        elif mix == "IQ4_NL" and m.n_gqa >= 4:
            new, why = say("attn_v.iq4_nl.gqa", T.Q5_K, n_gqa=m.n_gqa, **words)
        elif mix in ("Q4_K_M", "Q5_K_M"):
            new = T.Q6_K if use_more_bits(i, n) else self.mix.default
            new, why = say("attn_v.more_bits", new, more_bits=more_bits_words(i, n), **words)
        elif mix == "Q4_K_S" and i < 4:
            new, why = say("attn_v.first_4", T.Q5_K, **words)
        if m.is_70b and new in (T.Q3_K, T.Q4_K):
            new, why = say("attn_v.70b", T.Q5_K, why=why)
        if m.n_expert == 8:
            new, why = say("attn.8_experts", T.Q8_0, cat="attn_v", **words)
        return new, why

    def ffn_down_rule(self, t: TensorSpec, words: dict) -> tuple[GGMLQuantizationType, str]:
        i, n, mix, default = self.ffn_layer(t, self.i_ffn_down), self.model.n_layer, self.mix.name, self.mix.default
        self.i_ffn_down += 1
        if mix == "Q2_K":
            return say("ffn_down.q2_k", T.Q3_K, **words)
        if mix == "Q2_K_S" and i < n // 8:
            return say("ffn_down.first_eighth", T.Q4_K, i=i, n=n, **words)
        if mix == "Q3_K_M":
            if i < n // 16:
                return say("ffn_down.first_sixteenth", T.Q5_K, i=i, n=n, **words)
            return say("ffn_down.q3_k_m", T.Q4_K, **words)
        if mix == "Q3_K_L":
            return say("ffn_down.q3_k_l", T.Q5_K, **words)
        if mix == "Q4_K_M":
            new = T.Q6_K if use_more_bits(i, n) else default
            return say("ffn_down.more_bits", new, more_bits=more_bits_words(i, n), **words)
        if mix == "IQ4_NL" and not self.has_imatrix and i < n // 8:
            return say("ffn_down.iq4_nl", T.Q5_K, i=i, n=n, **words)
        if mix == "Q5_K_M":
            new = T.Q6_K if use_more_bits(i, n) else default
            return say("ffn_down.more_bits", new, more_bits=more_bits_words(i, n), **words)
        if mix == "Q4_K_S" and i < n // 8:
            return say("ffn_down.first_eighth", T.Q5_K, i=i, n=n, **words)
        if mix in ("Q4_0", "Q5_0") and self.has_imatrix and i < n // 8:
            # llama.cpp's guard against "craziness" in the first ffn_down layers; only with an
            # imatrix, so that a file made without one stays what it always was.
            new = T.Q4_1 if mix == "Q4_0" else T.Q5_1
            return say("ffn_down.imatrix", new, i=i, n=n, n8=n // 8, **words)
        return say("default", default, **words)

    def ffn_layer(self, t: TensorSpec, counted: int | None) -> int | None:
        """Dense models count ffn tensors; MoE models read the layer from the name (experts are not in order)."""
        if self.model.n_expert <= 1:
            return counted
        i = layer_of(t.name)
        if i < 0:
            raise KQuantError(f"{t.name}: cannot tell its layer (expected a name like blk.N.…)")
        if i >= self.model.n_layer:
            raise KQuantError(f"{t.name}: layer {i} is outside the model's {self.model.n_layer} layers")
        return i


def what(t: TensorSpec, cat: str) -> str:
    """'attn_v of layer 3', 'output.weight', ... for the reasons."""
    layer = layer_of(t.name)
    role = cat if cat != "other" else t.name
    return f"{role} of layer {layer}" if layer >= 0 else role
