"""How far a quantized model's predictions moved: perplexity, KL divergence, top-1 agreement.

Pure numpy on logits (positions × vocabulary), whoever computed them: llama.cpp
(kquant.model.runner) or kquant's own forward pass (kquant.model.forward).

* **perplexity**: exp(mean negative log-likelihood of the next token). On easy text it
  hardly moves, even at Q2_K (tiny-model-notes.md measured 1.321 → 1.322).
* **KL divergence** KL(reference ‖ file), nats per token, averaged over the same positions:
  how far the whole next-token distribution moved. Zero only for identical logits.
* **top-1 agreement**: the share of positions where both pick the same most likely token.

Notebook 08 computes them by hand and compares with these.
"""

from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def nll(logits: np.ndarray, tokens) -> np.ndarray:
    """Negative log-likelihood of each next token: position i predicts tokens[i + 1]; shape (n - 1,)."""
    tokens = np.asarray(tokens)
    return -log_softmax(logits[:-1])[np.arange(len(tokens) - 1), tokens[1:]]


def perplexity(logits: np.ndarray, tokens) -> float:
    """exp(mean negative log-likelihood of the next token) of one sequence."""
    return float(np.exp(nll(logits, tokens).mean()))


def kl_per_position(ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(reference ‖ file) at every position, in nats: Σ p_ref · (log p_ref − log p)."""
    lp_ref, lp = log_softmax(ref_logits), log_softmax(logits)
    return (np.exp(lp_ref) * (lp_ref - lp)).sum(-1)


def kl_divergence(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean KL(reference ‖ file) over the positions of one sequence."""
    return float(kl_per_position(ref_logits, logits).mean())


def top1_agreement(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Share of positions where both pick the same most likely token."""
    return float(np.mean(ref_logits.argmax(-1) == logits.argmax(-1)))
