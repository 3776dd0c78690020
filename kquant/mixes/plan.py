"""Plan a whole model: the format and the reason for every tensor, in the order llama.cpp writes them.

    >>> from kquant.mixes import ModelParams, TensorSpec, plan
    >>> from gguf import GGMLQuantizationType as T
    >>> model = ModelParams(n_layer=16, n_head=4, n_head_kv=4)
    >>> tensors = [TensorSpec("blk.0.attn_norm.weight", (256,), T.F32),
    ...            TensorSpec("blk.0.attn_q.weight", (256, 256), T.F32)]
    >>> [(c.type.name, c.reason) for c in plan(tensors, model, "Q4_K_M")]  # doctest: +NORMALIZE_WHITESPACE
    [('F32', '1-D tensor: llama.cpp quantizes only matrices (2-D and 3-D) → stays F32'),
     ('Q4_K', 'attn_q of layer 0: the Q4_K_M default Q4_K')]

Notebook 06 draws the plan; ``kquant.quantize_file`` applies it to a real file.
"""

from __future__ import annotations

import re

from kquant.errors import KQuantError
from kquant.formats import ggml_type
from kquant.mixes.catalog import Mix, get_mix
from kquant.mixes.rules import Choice, Rules
from kquant.mixes.tensors import ModelParams, category, is_attn_v, llama_order


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
    rules = Rules(
        mix=mix,
        model=model,
        pure=pure,
        overrides=[(_regex(p), ggml_type(t)) for p, t in _pairs(overrides)],
        output_type=None if output_type is None else ggml_type(output_type),
        token_embd_type=None if token_embd_type is None else ggml_type(token_embd_type),
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
