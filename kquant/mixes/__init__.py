"""llama.cpp's quantization mixes: which format each tensor of a model gets, and why.

"Q4_K_M" is not a block format. It is a recipe (llama.cpp calls it a *file type*,
``llama_ftype``) that gives every tensor of a model its own format: most matrices get
the mix's default (Q4_K), a few sensitive ones get more bits (Q6_K), norms stay F32.

    >>> from kquant import mixes
    >>> plan = mixes.plan(tensors, mixes.ModelParams(n_layer=16, n_head=4, n_head_kv=4), "Q4_K_M")

* ``catalog``: the mixes (``MIXES``; ``IMATRIX_MIXES`` for Q2_K_S, which llama.cpp writes only
  with an importance matrix; ``IQUANT_MIXES`` for IQ4_NL; ``FLOAT_MIXES`` F16 / BF16 / F32) and ``get_mix``;
* ``tensors``: what the rules see of a model, and which tensors are never quantized;
* ``rules``: llama.cpp's ``llama_tensor_get_type``, with every reason as data in ``REASONS``;
* ``plan``: the whole model, in llama.cpp's order.

This package is pure logic: names, shapes and hyper-parameters in, a plan out;
``kquant.quantize_file`` applies it to a real file. Notebook 06 teaches it.
"""

from kquant.mixes.catalog import (
    ALIASES,
    FLOAT_MIXES,
    IMATRIX_MIXES,
    IQUANT_MIXES,
    LLAMA_CPP_VERSION,
    MIXES,
    Mix,
    get_mix,
    requires_imatrix,
)
from kquant.mixes.plan import plan
from kquant.mixes.rules import REASONS, Choice, use_more_bits
from kquant.mixes.tensors import ModelParams, TensorSpec, category, is_attn_v, kept_as_is, layer_of, llama_order

__all__ = [
    "ALIASES",
    "IMATRIX_MIXES",
    "FLOAT_MIXES",
    "IQUANT_MIXES",
    "LLAMA_CPP_VERSION",
    "MIXES",
    "REASONS",
    "Choice",
    "Mix",
    "ModelParams",
    "TensorSpec",
    "category",
    "get_mix",
    "is_attn_v",
    "kept_as_is",
    "layer_of",
    "llama_order",
    "plan",
    "requires_imatrix",
    "use_more_bits",
]
