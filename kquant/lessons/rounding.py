"""Putting a real number on a grid: fixed point, rounding modes, and the bit fields of floats.

Quantization starts here: a value is stored as an integer count of steps, and
something has to decide which integer. ggml's quantizers round ties by three different
rules in different formats (half to even, half away from zero, half up); truncation is
not a fourth rule but the C cast with which Q4_0..Q5_1 build half up. An encoder that picks
another rule writes other bytes (notebook 01).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kquant.errors import KQuantError
from kquant.formats.q8_0 import roundf

# mode -> (what it does, where ggml uses it). The first three are the rounding rules of
# ggml-quants.c; "truncate" is the C cast float -> int, which rounds nothing by itself:
# applied to v + 0.5 >= 0 it *is* half up, which is how Q4_0..Q5_1 use it.
MODES = {
    "half_even": ("ties to the even integer", "nearest_int() in every K-quant (Q2_K..Q6_K)"),
    "half_away": ("ties away from zero", "C's roundf() in Q8_0"),
    "half_up": ("ties up, toward +inf: floor(v + 0.5)", "(int8_t)(v + 8.5f) in Q4_0, (int8_t)(v + 0.5f) in Q4_1"),
    "truncate": ("drop the fraction, toward zero", "not a rule of its own: the C cast that builds half up above"),
}
RULES = ("half_even", "half_away", "half_up")  # the three tie rules ggml's quantizers use


def round_to_int(v, mode: str = "half_even") -> np.ndarray:
    """Round to an integer-valued float array by one of :data:`MODES`, in ``v``'s own precision.

    ``half_up`` adds 0.5 in that precision first, as the C code does, so a float32
    just below .5 can round up; that too is part of "what ggml does".
    """
    v = np.asarray(v)
    if v.dtype.kind != "f":
        v = v.astype(np.float64)
    if mode == "half_even":
        return np.rint(v)
    if mode == "half_away":
        return np.asarray(roundf(v))
    if mode == "half_up":
        return np.floor(v + v.dtype.type(0.5))
    if mode == "truncate":
        return np.trunc(v)
    raise KQuantError(f"unknown rounding mode {mode!r}: use one of {', '.join(MODES)}")


class FixedPoint(NamedTuple):
    code: np.ndarray  # the stored integer: x * 2**frac_bits, rounded
    value: np.ndarray  # what the code stands for: code / 2**frac_bits
    frac_bits: int


def fixed_point(x, frac_bits: int, mode: str = "half_even") -> FixedPoint:
    """``x`` on the grid of multiples of ``2**-frac_bits``: the stored integer and its value."""
    if not isinstance(frac_bits, (int, np.integer)) or not 0 <= frac_bits <= 52:
        raise KQuantError(f"frac_bits must be an integer from 0 to 52 (float64's mantissa), got {frac_bits!r}")
    step = 2.0**-frac_bits
    code = round_to_int(np.asarray(x, dtype=np.float64) / step, mode)
    return FixedPoint(code.astype(np.int64), code * step, int(frac_bits))


def bit_string(code: int, width: int) -> str:
    """An unsigned integer as ``width`` binary digits, most significant first."""
    if not 0 <= int(code) < 2**width:
        raise KQuantError(f"{code} does not fit in {width} unsigned bits (0..{2**width - 1})")
    return format(int(code), f"0{width}b")


# --- floating point --------------------------------------------------------------------

# name -> (exponent bits, mantissa bits). One sign bit each.
FLOAT_FORMATS = {"float32": (8, 23), "float16": (5, 10), "bfloat16": (8, 7)}


class FloatBits(NamedTuple):
    """One number as a float format stores it: the three fields and the value they decode to."""

    format: str
    sign: int
    exponent: int  # the stored (biased) exponent field
    mantissa: int  # the stored fraction field, without the implicit leading 1
    value: float  # the number actually stored (x after rounding)

    @property
    def exponent_bits(self) -> int:
        return FLOAT_FORMATS[self.format][0]

    @property
    def mantissa_bits(self) -> int:
        return FLOAT_FORMATS[self.format][1]

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def bits(self) -> str:
        """All bits, sign first, as stored (most significant first)."""
        return (
            str(self.sign)
            + bit_string(self.exponent, self.exponent_bits)
            + bit_string(self.mantissa, self.mantissa_bits)
        )

    def from_fields(self) -> float:
        """The value recomputed from the fields by the textbook formula (inf/NaN excepted)."""
        if self.exponent == 2**self.exponent_bits - 1:
            return float("nan") if self.mantissa else (-1) ** self.sign * float("inf")
        fraction = self.mantissa / 2**self.mantissa_bits
        if self.exponent == 0:  # subnormal: no implicit 1, exponent fixed at 1 - bias
            return (-1) ** self.sign * fraction * 2.0 ** (1 - self.bias)
        return (-1) ** self.sign * (1 + fraction) * 2.0 ** (self.exponent - self.bias)


def float_bits(x: float, fmt: str = "float32") -> FloatBits:
    """The fields of ``x`` stored as ``fmt`` (rounded to nearest, ties to even, like ggml)."""
    if fmt not in FLOAT_FORMATS:
        raise KQuantError(f"unknown float format {fmt!r}: use one of {', '.join(FLOAT_FORMATS)}")
    code, value = _encode(x, fmt)
    e_bits, m_bits = FLOAT_FORMATS[fmt]
    return FloatBits(fmt, code >> (e_bits + m_bits), (code >> m_bits) & (2**e_bits - 1), code & (2**m_bits - 1), value)


def _encode(x: float, fmt: str) -> tuple[int, float]:
    with np.errstate(over="ignore"):  # too large for the format: stored as inf, which the fields show
        f = np.float32(x)
        if fmt == "float32":
            return int(f.view(np.uint32)), float(f)
        if fmt == "float16":
            h = f.astype(np.float16)
            return int(h.view(np.uint16)), float(h)
    # bfloat16 keeps the top 16 bits of the float32, rounded to nearest even (ggml_compute_fp32_to_bf16).
    u = int(f.view(np.uint32))
    code = (u >> 16) | 0x40 if np.isnan(f) else (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return code, float(np.uint32(code << 16).view(np.float32))


def float_max(fmt: str) -> float:
    """The largest finite number ``fmt`` can store (65504 for float16)."""
    e_bits, m_bits = FLOAT_FORMATS[fmt]
    bias = 2 ** (e_bits - 1) - 1
    return (2 - 2.0**-m_bits) * 2.0 ** (2**e_bits - 2 - bias)


def relative_step(fmt: str) -> float:
    """The gap between 1 and the next float above it (machine epsilon): the relative precision."""
    return 2.0 ** -FLOAT_FORMATS[fmt][1]
