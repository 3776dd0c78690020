"""How far a quantized tensor is from the original: the error measures the workbook uses.

Computed in float64 so that the measure itself adds no rounding of its own.

Notebooks 01-05 use it.
"""

from __future__ import annotations

import numpy as np


def rmse(x, x_hat) -> float:
    """Root mean square of the error x - x_hat, in the units of x."""
    d = np.asarray(x, dtype=np.float64) - np.asarray(x_hat, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d)))


def sqnr_db(x, x_hat) -> float:
    """Signal-to-quantization-noise ratio in decibels: 10 log10(sum x^2 / sum (x - x_hat)^2).

    Powers, hence 10 log10 (not 20). Each extra bit of a uniform grid halves the
    error amplitude, a quarter of the power: 10 log10(4) = 6.02 dB per bit.
    Infinite when x_hat == x exactly.
    """
    x = np.asarray(x, dtype=np.float64)
    d = x - np.asarray(x_hat, dtype=np.float64)
    noise = float(np.sum(d * d))
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(np.sum(x * x) / noise))
