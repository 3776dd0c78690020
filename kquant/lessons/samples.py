"""The example weights the notebooks quantize: the one place that chooses them.

They are real: matrices of the workbook's bundled model (kquant/data/kquant-tiny-f16.gguf).
Where that file is missing (a kquant installed without its package data), synthetic weights
shaped like a transformer's linear layer stand in: a bell curve with heavier tails than
a Gaussian, a standard deviation of 0.02 (the usual initialisation scale of GPT-2 and
LLaMA-style models), and a few input columns with much larger weights. Columns like
these are what outlier-aware methods such as LLM.int8() (Dettmers et al. 2022,
arXiv:2208.07339) and AWQ (Lin et al. 2023, arXiv:2306.00978) are built around.
Every sample carries a one-line ``source`` the notebooks print, so a reader always
knows which it got.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kquant.errors import KQuantError


class Sample(NamedTuple):
    weights: np.ndarray  # float32 (rows, cols): one linear layer, rows = outputs
    source: str  # one line saying where the weights come from


def synthetic_weights(
    rows: int = 256,
    cols: int = 1024,
    *,
    seed: int = 0,
    std: float = 0.02,
    tail_dof: float = 5.0,
    outlier_cols: int = 4,
    outlier_gain: float = 5.0,
) -> np.ndarray:
    """Student-t weights scaled to ``std``, with ``outlier_cols`` input columns ``outlier_gain`` times larger.

    Student-t with ``tail_dof`` degrees of freedom has heavier tails than a Gaussian
    (kurtosis 9 for 5 degrees of freedom, against 3). Seeded: the same call gives the same weights.
    """
    if rows < 1 or cols < 1 or not 0 <= outlier_cols <= cols or tail_dof <= 2:
        raise KQuantError(
            f"need rows, cols >= 1, 0 <= outlier_cols <= cols and tail_dof > 2; got {rows}, {cols}, "
            f"{outlier_cols}, {tail_dof}"
        )
    rng = np.random.default_rng(seed)
    t = rng.standard_t(tail_dof, size=(rows, cols))
    w = t * (std / np.sqrt(tail_dof / (tail_dof - 2)))  # a t variable's std is sqrt(dof / (dof - 2))
    cols_hit = rng.choice(cols, size=outlier_cols, replace=False)
    w[:, cols_hit] *= outlier_gain
    return w.astype(np.float32)


def synthetic_example() -> Sample:
    """The synthetic stand-in (256 x 1024 float32), used when the bundled model is missing."""
    return Sample(
        synthetic_weights(), "synthetic: Student-t (5 dof), std 0.02, 4 of 1024 input columns 5x larger, seed 0"
    )


def example_weights() -> Sample:
    """The weight matrix notebooks 02-04 quantize: the bundled model's ffn_down of its middle layer.

    A feed-forward down projection (rows: the model's 256 outputs; columns: its 768
    hidden units), or the synthetic stand-in when the model file is missing.
    """
    sample = model_weights(("ffn_down",))
    ((name, weights),) = sample.weights.items()
    return Sample(
        weights,
        sample.source if name == "synthetic" else f"{sample.source}, {name} {weights.shape[0]} x {weights.shape[1]}",
    )


class ModelSample(NamedTuple):
    weights: dict  # tensor name -> float32 (rows, cols), in numpy order
    source: str  # one line saying where the weights come from


# The kinds of matrix model_weights() picks from the middle layer: one attention, one value, one feed-forward.
MIDDLE_LAYER_KINDS = ("attn_q", "attn_v", "ffn_down")


def model_weights(kinds=MIDDLE_LAYER_KINDS) -> ModelSample:
    """A few real matrices of the bundled model (kquant/data/kquant-tiny-f16.gguf), from its middle layer.

    If the model file is absent, one synthetic matrix (``example_weights``) stands in, and
    ``source`` says so: the notebooks print it.
    """
    from kquant.gguf.reader import open_gguf, weights
    from kquant.model import hub

    if not hub.BUNDLED.is_file():
        sample = synthetic_example()
        return ModelSample(
            {"synthetic": sample.weights}, f"{sample.source} (the bundled model {hub.BUNDLED.name} is absent)"
        )
    with open_gguf(hub.BUNDLED) as f:
        n_layer = int(f.get("llama.block_count", 1))
        middle = n_layer // 2
        tensors = {t.name: t for t in f.tensors}
        names = [f"blk.{middle}.{kind}.weight" for kind in kinds]
        missing = [n for n in names if n not in tensors]
        if missing:
            raise KQuantError(
                f"{hub.BUNDLED} has no tensor {missing[0]}: choose kinds among attn_q, attn_k, attn_v, attn_output, "
                "ffn_gate, ffn_up, ffn_down"
            )
        chosen = {n: weights(tensors[n]) for n in names}  # float32 copies: they outlive the file
    return ModelSample(chosen, f"the bundled model {hub.BUNDLED.name}: layer {middle} of layers 0-{n_layer - 1}")
