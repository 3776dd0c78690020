"""How far a quantized model's predictions moved: perplexity, KL divergence, top-1 agreement.

Pure numpy on logits (positions × vocabulary), whoever computed them: llama.cpp
(kquant.model.runner) or kquant's own forward pass (kquant.model.forward).

* **perplexity**: exp(mean negative log-likelihood of the next token). On easy text it
  hardly moves, even at Q2_K (tiny-model-notes.md measured 1.321 → 1.322).
* **KL divergence** KL(reference ‖ file), nats per token, averaged over the same positions:
  how far the whole next-token distribution moved. Zero only for identical logits.
* **top-1 agreement**: the share of positions where both pick the same most likely token.
* **95 % intervals** for all of them (``Interval``, ``bootstrap``, ``paired_difference``): a
  bootstrap over documents with a fixed seed, paired when two files are compared on the same text.

Notebook 08 computes them by hand and compares with these.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# --- 95 % intervals -------------------------------------------------------------------------
#
# Positions of one document are not independent samples (a model that misreads a name misreads
# it for the rest of the story), so the unit of resampling is the document: draw as many
# documents as there are, with replacement, recompute the statistic from their per-document
# sums, repeat. Tasks are resampled one by one. A fixed seed makes every interval reproducible.
#
# Two files scored on the same documents are compared *paired*: each bootstrap draw takes the
# same documents for both, so what the documents share (an easy story is easy for both) cancels
# and only the difference between the files is left to vary.

N_BOOT = 2000
SEED = 0


@dataclass(frozen=True)
class Interval:
    """A measured value and its 95 % interval (``low`` … ``high``), from a bootstrap."""

    value: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes(self, x: float = 0.0) -> bool:
        """True when ``x`` lies outside the interval (for a difference: more than noise)."""
        return not self.low <= x <= self.high

    def format(self, spec: str = ".3g") -> str:
        """``value ± half-width`` when the interval is symmetric within 10 %, else ``value [low, high]``."""
        lo, hi = self.value - self.low, self.high - self.value
        if abs(lo - hi) <= 0.1 * max(lo, hi) or max(lo, hi) == 0:
            return f"{self.value:{spec}} ± {self.half_width:{spec}}"
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def __str__(self) -> str:
        return self.format()


def bootstrap(per_unit: dict, statistic, *, n_boot: int = N_BOOT, seed: int = SEED, level: float = 0.95) -> Interval:
    """A percentile bootstrap interval of ``statistic`` over units (documents or tasks).

    ``per_unit``: name -> one number per unit (e.g. ``{"nll": summed NLL of each document,
    "n": its positions}``), every array the same length. ``statistic`` maps a dict of *totals*
    (the same names) to the value; it must work on arrays of totals (one per draw) too.
    Resampling per-unit sums is cheap: no logits are recomputed.
    """
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in per_unit.items()}
    n = len(next(iter(arrays.values())))
    value = float(statistic({k: v.sum() for k, v in arrays.items()}))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    draws = np.asarray(statistic({k: v[idx].sum(axis=1) for k, v in arrays.items()}), dtype=np.float64)
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Interval(value, float(min(low, value)), float(max(high, value)))


def mean_interval(values, **kwargs) -> Interval:
    """Interval of the mean of independent values (one per unit), e.g. 0/1 task verdicts."""
    values = np.asarray(values, dtype=np.float64)
    return bootstrap({"x": values, "n": np.ones_like(values)}, lambda t: t["x"] / t["n"], **kwargs)


def paired_difference(a, b, **kwargs) -> Interval:
    """Interval of mean(a) − mean(b) where a[i] and b[i] were measured on the same unit i."""
    return mean_interval(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), **kwargs)


def unpaired_difference(a, b, *, n_boot: int = N_BOOT, seed: int = SEED, level: float = 0.95) -> Interval:
    """Interval of mean(a) − mean(b), resampling a and b independently: what ignoring the pairing gives."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    da = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
    db = b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
    value = float(a.mean() - b.mean())
    low, high = np.quantile(da - db, [(1 - level) / 2, (1 + level) / 2])
    return Interval(value, float(min(low, value)), float(max(high, value)))
