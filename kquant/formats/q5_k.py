"""Q5_K: Q4_K with a fifth bit per level.

    y = (d * sc[j]) * q[e] - (dmin * m[j])        q in 0..31

Same super-block, same 12 bytes of 6-bit scales and mins, same search with a finer
grid (nmax 31). The fifth bits live in ``qh``. 5.5 bits per weight.
"""

from typing import NamedTuple

import numpy as np

from kquant.formats.cops import (
    bit_planes,
    c_semantics,
    columns,
    fp16_field,
    join_planes,
    mask_bytes,
    put_fp16,
    shift_bytes,
)
from kquant.formats.q4_k import decode as _decode_q4_k
from kquant.formats.q4_k import (
    fit_block_scales,
    pack_nibbles,
    pack_scales,
    quantize_scales,
    requantize_rows,
    subblock_fit,
    subblock_fit_impl,
    unpack_nibbles,
    unpack_scales,
)
from kquant.formats.search import blocks_and_importance

QK = 256  # QK_K
TYPE_SIZE = 176

# block_q5_K, 176 bytes:
#
# offset  0      2      4             16           48                     176
# | d    | dmin | scales[12]  | qh[32]     | qs[128]              |
# | fp16 | fp16 | as in Q4_K  | fifth bits | low nibbles, as Q4_K |
#
# qh[l] bit j = bit 4 of weight 32j + l (j is the sub-block).


class Fields(NamedTuple):
    d: np.ndarray  # (n,) float16
    dmin: np.ndarray  # (n,) float16
    sc: np.ndarray  # (n, 8) uint8 in 0..63
    m: np.ndarray  # (n, 8) uint8 in 0..63
    q: np.ndarray  # (n, 256) uint8 in 0..31


@c_semantics
def encode(x: np.ndarray) -> Fields:
    """quantize_row_q5_K_ref: x (n, 256) float32 -> Fields."""
    n = x.shape[0]
    xt = columns(x.reshape(n * 8, 32))  # (32, G)
    scales, mins, L = subblock_fit(xt, nmax=31, rmin=-0.5, rdelta=0.1, nstep=15)
    d, dmin, sc, m = quantize_scales(scales.reshape(n, 8), mins.reshape(n, 8))
    q = requantize_rows(x.reshape(-1, 32), L, d, dmin, sc, m, nmax=31)
    return Fields(d, dmin, sc, m, q.reshape(n, 256))


def encode_impl(rows: np.ndarray, imatrix: np.ndarray) -> Fields:
    """quantize_row_q5_K_impl: rows (r, n_per_row) float32 and imatrix (n_per_row,) -> Fields."""
    x, qw = blocks_and_importance(rows, imatrix, QK)
    n = x.shape[0]
    xs, scales, mins, L, sw = subblock_fit_impl(x, qw, nmax=31)
    d, dmin, sc, m = fit_block_scales(scales.reshape(n, 8), mins.reshape(n, 8), sw.reshape(n, 8))
    sc, m = np.minimum(sc, 63), np.minimum(m, 63)  # Q5_K clamps here; Q4_K's C code does not
    q = requantize_rows(x.reshape(-1, 32), L, d, dmin, sc, m, nmax=31)
    return Fields(d, dmin, sc, m, q.reshape(n, 256))


def pack_high_bits(bits: np.ndarray) -> np.ndarray:
    """(n, 256) bits 0/1 -> (n, 32) bytes: byte l, bit j = bit of weight 32j + l. Also Q3_K's hmask."""
    return join_planes(bits, 1, 32)  # bit j of byte l from weight 32j + l, 8 bytes at a time (~4x faster)


def unpack_high_bits(qh: np.ndarray) -> np.ndarray:
    """(n, 32) bytes -> (n, 256) bits 0/1, already in weight order (j major, l minor)."""
    return bit_planes(qh, 1, 32)


def pack(f: Fields) -> np.ndarray:
    out = np.empty((f.q.shape[0], TYPE_SIZE), dtype=np.uint8)
    put_fp16(out, 0, f.d)
    put_fp16(out, 2, f.dmin)
    out[:, 4:16] = pack_scales(f.sc, f.m)
    out[:, 16:48] = pack_high_bits(f.q >> 4)
    out[:, 48:176] = pack_nibbles(mask_bytes(f.q, 0x0F))  # the low 4 bits; the fifth go to qh
    return out


def unpack(b: np.ndarray) -> Fields:
    sc, m = unpack_scales(b[:, 4:16])
    q = shift_bytes(unpack_high_bits(b[:, 16:48]), 4)  # the fifth bit, << 4 (8 bytes at a time: ~6x faster)
    q |= unpack_nibbles(b[:, 48:176])
    return Fields(fp16_field(b[:, 0:2]), fp16_field(b[:, 2:4]), sc, m, q)


def decode(f: Fields, out: np.ndarray | None = None) -> np.ndarray:
    """dequantize_row_q5_K: the Q4_K formula with 5-bit levels."""
    return _decode_q4_k(f, out)


def dequantize_blocks(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return decode(unpack(b), out)
