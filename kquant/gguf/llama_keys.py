"""The llama hyper-parameters: what llama_model_quantize reads, and refuses, before it writes a byte.

The structure of a GGUF file is checked by ``kquant.gguf.reader``; this module checks the keys a
llama model must carry, as llama.cpp's loader checks them. Quantizing (notebooks 06-10), the numpy
forward pass and the llama.cpp runner call ``check_llama`` before they use a model.
"""

from __future__ import annotations

import numpy as np
from gguf import GGUFValueType

from kquant.errors import KQuantError
from kquant.gguf.reader import TYPE_NAMES, GGUFFile, c_str, find_key, printable, show_name

V = GGUFValueType

# The llama hyper-parameters: what llama_model_quantize reads before it writes a byte.
#
# llama_model_quantize_impl (src/llama-quant.cpp) builds a llama_model_loader, then calls
# llama_model_create and load_hparams. Every key those read is checked here, as they check it:
# llama_model_loader::get_key<T> (src/llama-model-loader.cpp) throws when a key is present with a
# type other than T's exact GGUF type (a u32 key stored as i32, u64 or string is refused, even an
# optional one); get_key_or_arr takes one u32 or an array of n_layer u32 / i32 / bool; the
# GGML_ASSERTs of llama_model_base::load_hparams (src/llama-model.cpp) abort on bad ranges.

LLAMA_MAX_LAYERS = 512  # src/llama-hparams.h
LLAMA_MAX_EXPERTS = 1024  # src/llama-hparams.h
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # LLAMA_ROPE_SCALING_TYPES, src/llama-model.cpp


def check_llama(f: GGUFFile) -> None:
    """Refuse a llama model that llama_model_quantize refuses for its metadata; one KQuantError line.

    Mirrors, in order: llama_model_loader's constructor (general.architecture, split.count,
    general.file_type), llama_model_create (the architecture must be known: here, "llama"),
    llama_model_base::load_hparams, llama_model_llama::load_arch_hparams, and the copy of the
    metadata into the output (gguf_set_kv). What remains for the quantizer itself: the tensor
    data (NaN / Inf), already-quantized tensors, and the layer in a MoE tensor's name
    (kquant.mixes).
    """
    g = _Getter(f)
    arch = g.key("general.architecture", V.STRING)
    if arch is None:
        raise g.fail("has no general.architecture key, so llama.cpp cannot tell what model it is")
    arch = c_str(arch)
    g.key("general.file_type", V.UINT32)
    n_split = g.key("split.count", V.UINT16)  # uint16_t n_split in the loader's constructor
    if n_split is not None and n_split > 1:
        raise g.fail(f"is one shard of a model split in {n_split}", "merge the shards first (llama-gguf-split --merge)")
    if arch != "llama":
        raise g.fail(f"architecture {arch!r} is not supported", "kquant follows llama.cpp's mix rules for llama models")

    a = arch + "."
    g.key("general.name", V.STRING)
    g.key(a + "context_length", V.UINT32, required=True)
    n_embd = g.key(a + "embedding_length", V.UINT32, required=True)
    g.key(a + "embedding_length_out", V.UINT32)
    g.key(a + "attention.causal", V.BOOL)
    g.key(a + "pooling_type", V.UINT32)
    g.key(a + "classifier.pooling_type", V.UINT32)
    n_layer = g.key(a + "block_count", V.UINT32, required=True)
    if not 0 < n_layer <= LLAMA_MAX_LAYERS:  # GGML_ASSERT(n_layer_all > 0 && n_layer_all <= LLAMA_MAX_LAYERS)
        raise g.fail(f"{a}block_count is {n_layer}; llama.cpp accepts 1 to {LLAMA_MAX_LAYERS} layers")
    n_nextn = g.key(a + "nextn_predict_layers", V.UINT32) or 0
    if n_nextn > n_layer:
        raise g.fail(f"{a}nextn_predict_layers ({n_nextn}) exceeds block_count ({n_layer})")
    n_expert = g.key(a + "expert_count", V.UINT32) or 0
    used = g.key_or_arr(a + "expert_used_count", n_layer)
    n_groups = g.key(a + "expert_group_count", V.UINT32) or 0
    n_group_used = g.key(a + "expert_group_used_count", V.UINT32) or 0
    used_max = max(used) if used else 0
    # The expert asserts of load_hparams, as one rule each.
    if n_expert > LLAMA_MAX_EXPERTS:
        raise g.fail(f"{a}expert_count is {n_expert}; llama.cpp allows at most {LLAMA_MAX_EXPERTS}")
    if used_max > n_expert:
        raise g.fail(f"{a}expert_used_count ({used_max}) exceeds expert_count ({n_expert})")
    if n_expert > 0:
        if used_max == 0:
            raise g.fail(f"{a}expert_used_count is 0 in a model with {n_expert} experts")
        if n_groups >= n_expert:
            raise g.fail(f"{a}expert_group_count ({n_groups}) must be below expert_count ({n_expert})")
        if n_groups > 1 and (n_expert % n_groups or not 0 < n_group_used < n_groups):
            raise g.fail(f"{a}expert_group_count {n_groups} / expert_group_used_count {n_group_used} do not fit")
    elif n_groups != 0:
        raise g.fail(f"{a}expert_group_count is {n_groups} in a model without experts")

    g.key_or_arr(a + "feed_forward_length", n_layer)
    n_head = g.key_or_arr(a + "attention.head_count", n_layer)
    g.key_or_arr(a + "attention.head_count_kv", n_layer)
    g.key(a + "rope.scaling.finetuned", V.BOOL)
    g.key(a + "rope.scaling.original_context_length", V.UINT32)
    g.key(a + "rope.freq_base", V.FLOAT32)
    scaling = g.key(a + "rope.scaling.type", V.STRING)
    if scaling is not None and c_str(scaling) not in ROPE_SCALING_TYPES:
        raise g.fail(
            f"{a}rope.scaling.type is {show_name(c_str(scaling))}; llama.cpp knows {', '.join(ROPE_SCALING_TYPES)}"
        )
    if g.key(a + "rope.scaling.factor", V.FLOAT32) is None:
        g.key(a + "rope.scale_linear", V.FLOAT32)  # the old name, read only when the new one is absent
    g.key(a + "rope.scaling.attn_factor", V.FLOAT32)
    g.key(a + "rope.scaling.alpha", V.FLOAT32)

    n_head0 = n_head[0] if n_head else 0  # hparams.n_head() is layer 0's
    if n_head0 > 0:
        head_k = g.key(a + "attention.key_length", V.UINT32)
        head_k = n_embd // n_head0 if head_k is None else head_k
        g.key(a + "attention.value_length", V.UINT32)
        n_rot = g.key(a + "rope.dimension_count", V.UINT32)
        if n_rot is not None and n_rot != head_k:  # load_hparams: "invalid n_rot: %u, expected %u" (LLM_ARCH_LLAMA)
            raise g.fail(f"{a}rope.dimension_count is {n_rot}; for llama, llama.cpp requires the head size {head_k}")
    g.key(a + "attention.key_length_swa", V.UINT32)
    g.key(a + "attention.value_length_swa", V.UINT32)
    g.key(a + "rope.dimension_count_swa", V.UINT32)
    labels = find_key(f.fields, a + "classifier.output_labels")  # get_arr: ignored unless an array, then of strings
    if labels is not None and labels.type == V.ARRAY and labels.item_type != V.STRING:
        raise g.fail(f"{a}classifier.output_labels must be an array of strings, not {labels.type_name}")

    # llama_model_llama::load_arch_hparams (src/models/llama.cpp)
    if g.key(a + "vocab_size", V.UINT32) is None:
        tokens = find_key(f.fields, "tokenizer.ggml.tokens")  # get_arr_n: any array, but an array
        if tokens is not None and tokens.type != V.ARRAY:
            raise g.fail(f"tokenizer.ggml.tokens must be an array, not {tokens.type_name}")
    g.key(a + "attention.layer_norm_rms_epsilon", V.FLOAT32, required=True)

    # llama_model_quantize_impl then copies every pair with gguf_set_kv (ggml/src/gguf.cpp), which
    # re-creates each key from its C string: an empty one aborts (GGML_ASSERT(!key.empty()) in gguf_kv),
    # and gguf_check_reserved_keys aborts on a "general.alignment" that is not a power-of-2 u32.
    for key, fld in f.fields.items():
        c_key = key.split("\0", 1)[0]
        if not c_key:
            raise g.fail(f"has a key that starts with a NUL byte ({show_name(key)}), which llama.cpp aborts on copying")
        if c_key == "general.alignment" and (fld.type != V.UINT32 or not fld.value or fld.value & (fld.value - 1)):
            raise g.fail(
                f"has a key {show_name(key)} that llama.cpp copies as general.alignment, but it is not a power-of-2 u32"
            )


class _Getter:
    """llama_model_loader::get_key / get_key_or_arr, with kquant's one-line errors."""

    def __init__(self, f: GGUFFile):
        self.f = f

    def fail(
        self, problem: str, fix: str = "llama.cpp refuses this model too; fix the converter's output"
    ) -> KQuantError:
        return KQuantError(f"{printable(self.f.path)} {problem}; {fix}")

    def key(self, key: str, vtype: GGUFValueType, required: bool = False):
        fld = find_key(self.f.fields, key)
        if fld is None:
            if required:
                raise self.fail(f"lacks the key {key}, which llama.cpp needs to load the model")
            return None
        if fld.type != vtype:  # GGUFMeta::GKV::get_kv: "key %s has wrong type %s but expected type %s"
            raise self.fail(f"has key {key} of type {fld.type_name}, but llama.cpp reads it as {TYPE_NAMES[vtype]}")
        return fld.value

    def key_or_arr(self, key: str, n_layer: int) -> list[int] | None:
        """One u32 for every layer, or an array of n_layer u32 / i32 / bool (cast to u32 as C does)."""
        fld = find_key(self.f.fields, key)
        if fld is None:
            return None
        if fld.type != V.ARRAY:
            return [self.key(key, V.UINT32)] * n_layer
        if len(fld.value) != n_layer:
            raise self.fail(f"has key {key} with {len(fld.value)} values, but block_count is {n_layer}")
        if fld.item_type not in (V.UINT32, V.INT32, V.BOOL):
            raise self.fail(f"has key {key} of type {fld.type_name}; llama.cpp reads u32, i32 or bool arrays")
        return np.asarray(fld.value).astype(np.uint32).tolist()
