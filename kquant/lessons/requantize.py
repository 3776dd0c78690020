"""Re-quantizing a file that is already quantized (17): why its errors are not the original weights'.

A Q4_1 file holds, per block of 32 weights, a step ``d`` and a minimum ``m``; every weight
it gives back is ``m + q·d`` with q in 0..15: the weights *sit on a grid*. Quantizing them
again measures the new format against that grid, not against the weights the model was
trained with, which the file no longer has:

* Q4_1 again finds the same grid and reproduces every block byte for byte (error 0);
* a finer or differently aligned format (Q4_K, Q5_K) gets errors that are far too small,
  because a 16-level block is easy to describe;
* Q5_1, whose 32 levels split each Q4_1 step in two *almost* but not quite, looks worse than
  on real weights.

The original weights were within half a step of their grid point (Q4_1 rounds to the
nearest level), so ``off_grid`` stands in for them: each weight moved by a random amount
within ±d/2 of its block. The format's error on that stand-in is the honest one to compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kquant.formats import dequantize, quantize
from kquant.formats.q4_1 import QK, unpack


def relative_error(x: np.ndarray, qtype: str) -> float:
    """‖dequantize(quantize(x)) − x‖ / ‖x‖ for ``qtype`` (root-mean-square error over the RMS weight)."""
    x = np.asarray(x, dtype=np.float32)
    y = dequantize(quantize(x, qtype), qtype)
    return float(np.sqrt(np.sum((y - x).astype(np.float64) ** 2) / np.sum(x.astype(np.float64) ** 2)))


def q4_1_steps(q: np.ndarray) -> np.ndarray:
    """The step ``d`` of every 32-weight block of Q4_1 bytes ``q`` (rows, n_bytes), as float32 (rows, n_blocks)."""
    q = np.ascontiguousarray(q, dtype=np.uint8)
    rows = q.reshape(-1, q.shape[-1])
    d = unpack(rows.reshape(-1, 20)).d.astype(np.float32)
    return d.reshape(rows.shape[0], -1)


def off_grid(q: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The weights of Q4_1 bytes ``q`` and a stand-in for the originals: each moved by U(−d/2, d/2) of its block."""
    x = dequantize(q, "Q4_1")
    d = q4_1_steps(q)
    noise = (rng.random(x.shape, dtype=np.float32) - np.float32(0.5)) * np.repeat(d, QK, axis=-1).reshape(x.shape)
    return x, (x + noise).astype(np.float32)


@dataclass(frozen=True)
class TrapRow:
    """One format re-quantizing the file's weights: its error on them (on the grid) and on the stand-in."""

    qtype: str
    on_grid: float  # relative error on the weights as the file holds them
    off_grid: float  # relative error on the stand-in for the original weights

    @property
    def ratio(self) -> float:
        """How many times too small the on-grid error is (inf when it is 0)."""
        return self.off_grid / self.on_grid if self.on_grid else float("inf")


def trap(tensors: list[np.ndarray], qtypes, seed: int = 0) -> list[TrapRow]:
    """For each format, its pooled relative error over the Q4_1 byte arrays ``tensors``, on and off the grid."""
    rng = np.random.default_rng(seed)
    pairs = [off_grid(q, rng) for q in tensors]
    rows = []
    for qtype in qtypes:
        num_on = num_off = den_on = den_off = 0.0
        for x, noisy in pairs:
            for v, which in ((x, "on"), (noisy, "off")):
                err = dequantize(quantize(v, qtype), qtype) - v
                e, n = float(np.sum(err.astype(np.float64) ** 2)), float(np.sum(v.astype(np.float64) ** 2))
                if which == "on":
                    num_on, den_on = num_on + e, den_on + n
                else:
                    num_off, den_off = num_off + e, den_off + n
        rows.append(TrapRow(qtype, float(np.sqrt(num_on / den_on)), float(np.sqrt(num_off / den_off))))
    return rows


def same_bytes(q: np.ndarray) -> bool:
    """Whether re-quantizing the weights of Q4_1 bytes ``q`` to Q4_1 gives back exactly ``q``."""
    q = np.ascontiguousarray(q, dtype=np.uint8)
    again = quantize(dequantize(q, "Q4_1"), "Q4_1")
    return bool(np.array_equal(again.reshape(-1), q.reshape(-1)))
