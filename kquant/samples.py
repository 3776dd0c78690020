"""The example weights the notebooks quantize: the one place to switch them to a real model.

Until the workbook's bundled model is there, the notebooks use synthetic weights
shaped like a transformer's linear layer: a bell curve with heavier tails than a
Gaussian, a standard deviation of 0.02 (the usual initialisation scale of GPT-2 and
LLaMA-style models), and a few input columns with much larger weights. Columns
like these are what outlier-aware methods such as LLM.int8() (Dettmers et al. 2022,
arXiv:2208.07339) and AWQ (Lin et al. 2023, arXiv:2306.00978) are built around.
The notebooks say that these weights are synthetic whenever they use them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import KQuantError


class Sample(NamedTuple):
    weights: np.ndarray  # float32 (rows, cols): one linear layer, rows = outputs
    source: str  # one line saying where the weights come from


def synthetic_weights(rows: int = 256, cols: int = 1024, *, seed: int = 0, std: float = 0.02, tail_dof: float = 5.0,
                      outlier_cols: int = 4, outlier_gain: float = 5.0) -> np.ndarray:  # fmt: skip
    """Student-t weights scaled to ``std``, with ``outlier_cols`` input columns ``outlier_gain`` times larger.

    Student-t with ``tail_dof`` degrees of freedom has heavier tails than a Gaussian
    (kurtosis 9 for 5 degrees of freedom, against 3). Seeded: the same call gives the same weights.
    """
    if rows < 1 or cols < 1 or not 0 <= outlier_cols <= cols or tail_dof <= 2:
        raise KQuantError(f"need rows, cols >= 1, 0 <= outlier_cols <= cols and tail_dof > 2; got {rows}, {cols}, {outlier_cols}, {tail_dof}")
    rng = np.random.default_rng(seed)
    t = rng.standard_t(tail_dof, size=(rows, cols))
    w = t * (std / np.sqrt(tail_dof / (tail_dof - 2)))  # a t variable's std is sqrt(dof / (dof - 2))
    cols_hit = rng.choice(cols, size=outlier_cols, replace=False)
    w[:, cols_hit] *= outlier_gain
    return w.astype(np.float32)


def example_weights() -> Sample:
    """The weight matrix the notebooks use (256 x 1024 float32)."""
    return Sample(synthetic_weights(), "synthetic: Student-t (5 dof), std 0.02, 4 of 1024 input columns 5x larger, seed 0")
