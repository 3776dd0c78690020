"""Linear quantization of a tensor: a scale (and maybe a zero point) per tensor or per block.

    symmetric (absmax):     q = round(w / s),          s = max|w| / (2^(b-1) - 1),   w ≈ s * q
    asymmetric (zero point): q = round(w / s) + z,     s = (max - min) / (2^b - 1),  w ≈ s * (q - z)

These are the textbook schemes (as in PyTorch's quantization), rounding half to
even. ggml's block formats are variations on them: Q8_0 is absmax per 32 weights,
Q4_1 stores a float minimum instead of an integer zero point (notebook 03).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kquant.errors import KQuantError


class Quantized(NamedTuple):
    """Integer levels and what turns them back into numbers. Shapes for n blocks of B weights:"""

    q: np.ndarray  # (n, B) int64 levels
    scale: np.ndarray  # (n, 1) float64, one per block
    zero: np.ndarray  # (n, 1) int64 zero points (all 0 for absmax)
    shape: tuple  # the original tensor's shape

    def dequantize(self) -> np.ndarray:
        return ((self.q - self.zero) * self.scale).reshape(self.shape)


def _blocks(w, block_size: int | None) -> tuple[np.ndarray, tuple]:
    w = np.asarray(w, dtype=np.float64)
    if w.size == 0:
        raise KQuantError("cannot quantize an empty tensor: pass at least one weight")
    if block_size is None:  # per tensor: the whole tensor is one block
        return w.reshape(1, -1), w.shape
    if not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise KQuantError(f"block_size must be a positive integer or None (per tensor), got {block_size!r}")
    if w.shape[-1] % block_size:
        raise KQuantError(
            f"rows of {w.shape[-1]} weights do not split into blocks of {block_size}: pick a divisor of the row length"
        )
    return w.reshape(-1, int(block_size)), w.shape


def _check_bits(bits, lowest: int) -> int:
    if not isinstance(bits, (int, np.integer)) or not lowest <= bits <= 16:
        raise KQuantError(f"bits must be an integer from {lowest} to 16, got {bits!r}")
    return int(bits)


def _divide(w, scale):
    """w / scale, with 0 where the scale is 0 (an all-zero block stores zeros)."""
    return np.divide(w, scale, out=np.zeros_like(w), where=scale != 0)


def absmax_quantize(w, bits: int, block_size: int | None = None) -> Quantized:
    """Symmetric: the largest |w| of each block maps to ±(2^(bits-1) - 1); zero stays exactly 0."""
    bits = _check_bits(bits, 2)
    x, shape = _blocks(w, block_size)
    qmax = 2 ** (bits - 1) - 1
    scale = np.abs(x).max(axis=1, keepdims=True) / qmax
    q = np.clip(np.rint(_divide(x, scale)), -qmax, qmax).astype(np.int64)
    return Quantized(q, scale, np.zeros_like(scale, dtype=np.int64), shape)


def zero_point_quantize(w, bits: int, block_size: int | None = None) -> Quantized:
    """Asymmetric: [min, max] of each block (widened to include 0) maps onto 0 .. 2^bits - 1.

    Widening to include 0 keeps 0 exactly representable (zeros, padding, ReLU outputs),
    as PyTorch does; ggml's K-quants do the same with ``if (min > 0) min = 0``.
    """
    bits = _check_bits(bits, 1)
    x, shape = _blocks(w, block_size)
    top = 2**bits - 1
    lo = np.minimum(x.min(axis=1, keepdims=True), 0)
    hi = np.maximum(x.max(axis=1, keepdims=True), 0)
    scale = (hi - lo) / top
    zero = np.clip(np.rint(_divide(-lo, scale)), 0, top).astype(np.int64)
    q = np.clip(np.rint(_divide(x, scale)) + zero, 0, top).astype(np.int64)
    return Quantized(q, scale, zero, shape)


SCHEMES = {"absmax": absmax_quantize, "zero point": zero_point_quantize}


def fake_quantize(w, bits: int, scheme: str = "absmax", block_size: int | None = None) -> np.ndarray:
    """Quantize and dequantize in one go: the tensor as the model would see it."""
    if scheme not in SCHEMES:
        raise KQuantError(f"unknown scheme {scheme!r}: use one of {', '.join(SCHEMES)}")
    return SCHEMES[scheme](w, bits, block_size).dequantize()


def bits_per_weight(bits: int, block_size: int, scale_bits: int = 16, zero_bits: int = 0) -> float:
    """Storage per weight once each block's scale (and zero point or min) is paid for."""
    return bits + (scale_bits + zero_bits) / block_size


def scale_largest(w, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """A float64 copy of ``w`` with its largest-magnitude weight multiplied by ``gain``.

    Returns (the new tensor, a boolean mask of all the *other* weights), to measure
    what one outlier does to everyone else.
    """
    w = np.array(w, dtype=np.float64)
    i = np.unravel_index(np.argmax(np.abs(w)), w.shape)
    w[i] *= gain
    others = np.ones(w.shape, dtype=bool)
    others[i] = False
    return w, others
