"""Q4_0: 32 weights share one fp16 scale; each weight is a 4-bit level around 8.

    y = d * (q - 8)        q in 0..15,  d = max / -8

``max`` is the weight with the largest magnitude, *with its sign*: it lands exactly
on level 0 (= -8 d), the longer end of the asymmetric range -8..7. 4.5 bits per
weight, not 4: the fp16 scale costs 16/32 of a bit.
"""

from typing import NamedTuple

import numpy as np

from .cops import c_float_to_int8, c_semantics, c_to_uint8, f32, fp16_bytes, fp16_field, fp16_value, signed_absmax

QK = 32  # QK4_0
TYPE_SIZE = 18

# block_q4_0, 18 bytes:
#
#   offset  0      2                                   18
#           | d    | qs[16]                            |
#           | fp16 | byte j: weight j (low nibble),    |
#                    weight j + 16 (high nibble)       |


class Fields(NamedTuple):
    d: np.ndarray  # (n,) float16
    q: np.ndarray  # (n, 32) uint8 in 0..15


@c_semantics
def encode(x: np.ndarray) -> Fields:
    """quantize_row_q4_0_ref: x (n, 32) float32 -> Fields."""
    d = signed_absmax(x, axis=1) / f32(-8)
    id_ = np.where(d != 0, f32(1) / d, f32(0))  # the unrounded d, not fp16(d)
    # (int8_t)(x*id + 8.5f): truncation of a non-negative sum = round half up
    q = np.minimum(15, c_float_to_int8(x * id_[:, None] + f32(8.5)))
    return Fields(d.astype(np.float16), c_to_uint8(q).astype(np.uint8))


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 32) 4-bit values -> (n, 16) bytes: j low, j + 16 high. Shared by Q4_1, Q5_0, Q5_1."""
    return (q[:, :16] & 0xF) | ((q[:, 16:] & 0xF) << 4)


def unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    return np.concatenate([qs & 0xF, qs >> 4], axis=1)


def pack(f: Fields) -> np.ndarray:
    out = np.empty((f.q.shape[0], TYPE_SIZE), dtype=np.uint8)
    out[:, 0:2] = fp16_bytes(f.d)
    out[:, 2:18] = pack_nibbles(f.q)
    return out


def unpack(b: np.ndarray) -> Fields:
    return Fields(fp16_field(b[:, 0:2]), unpack_nibbles(b[:, 2:18]))


def decode(f: Fields) -> np.ndarray:
    y = f.q.astype(f32)
    y -= f32(8)  # exact: small integers
    y *= fp16_value(f.d)[:, None]
    return y


def quantize_blocks(x: np.ndarray) -> np.ndarray:
    return pack(encode(x))


def dequantize_blocks(b: np.ndarray) -> np.ndarray:
    return decode(unpack(b))
