"""The mixes llama.cpp offers (its file types, ``llama_ftype``): names, ids, default formats.

"Q4_K_M" is not a block format: it is a recipe that gives every tensor of a model its own
format. This module lists the recipes; ``kquant.mixes.rules`` holds what each one does.
Notebook 06 uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGMLQuantizationType, LlamaFileType

from kquant.errors import KQuantError

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

# I-quant file types kquant writes: IQ4_NL (4.5 bits, kquant.formats.iq4_nl), which llama.cpp
# writes with or without an importance matrix (tensor_requires_imatrix names only the 1-3 bit
# i-quants). Kept apart from MIXES so that the k-quant loops (the demo, notebooks 06 and 08)
# stay the k-quant story; notebook 15 and the whole-file tests use it.
IQUANT_MIXES: dict[str, Mix] = {
    "IQ4_NL": Mix("IQ4_NL", LlamaFileType.MOSTLY_IQ4_NL, T.IQ4_NL, " 4.50 bpw non-linear quantization"),
}

# Float file types: every matrix converted to one float type, no per-tensor rules, overrides or
# fallbacks (llama_tensor_get_type applies them only when the default type is quantized); only
# --token-embedding-type and --output-tensor-type still apply. Notebooks 12, 14 and 16 write their
# rescaled, merged or dequantized weights this way, so a file says what it holds (general.file_type).
FLOAT_MIXES: dict[str, Mix] = {
    "F16": Mix("F16", LlamaFileType.MOSTLY_F16, T.F16, "14.00G, +0.0020 ppl @ Mistral-7B"),
    "BF16": Mix("BF16", LlamaFileType.MOSTLY_BF16, T.BF16, "14.00G, -0.0050 ppl @ Mistral-7B"),
    "F32": Mix("F32", LlamaFileType.ALL_F32, T.F32, "26.00G              @ 7B"),
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
    if name in IQUANT_MIXES:
        return IQUANT_MIXES[name]
    if name in FLOAT_MIXES:
        return FLOAT_MIXES[name]
    if name not in MIXES:
        every = [*MIXES, *IMATRIX_MIXES, *IQUANT_MIXES, *FLOAT_MIXES]
        raise KQuantError(f"unknown mix {mix!r}: use one of {', '.join(every)}")
    return MIXES[name]


def requires_imatrix(name: str, new_type: GGMLQuantizationType, mix: str | Mix) -> bool:
    """tensor_requires_imatrix for the types kquant writes: Q2_K in a Q2_K_S file, except token_embd and output."""
    if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    return new_type == T.Q2_K and get_mix(mix).name == "Q2_K_S"
