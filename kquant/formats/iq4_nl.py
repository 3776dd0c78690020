"""IQ4_NL: Q4_0's block (32 weights, one fp16 scale, 4-bit indices), but an index picks one of
16 unevenly spaced values instead of a level on an even grid.

    y = d * kvalues_iq4nl[q]        q in 0..15

``kvalues_iq4nl`` (ggml-common.h) = -127 -104 -83 -65 -49 -35 -22 -10 1 13 25 38 53 69 89 113:
the gaps are 11-13 near zero and 20-24 at the ends, because weights are dense near zero and
sparse in the tails. 4.5 bits per weight, the size of Q4_0.

The encoder mirrors ggml's ``quantize_iq4_nl``, which ``ggml_quantize_chunk`` calls with or
without an importance matrix: ``quantize_row_iq4_nl_impl(QK4_NL, 32, ..., ntry=7)``. Per block:

1. weights: ``x**2`` without an imatrix; with one, ``qw * sqrt(sigma2 + x**2)``, sigma2 being
   twice the block's mean square (the block's, not the row's as in Q4_0's imatrix path);
2. a first scale ``d = max / 127`` (``max`` the signed weight of largest magnitude), each weight
   mapped to its nearest table value (``best_index_int8``), then the weighted least-squares
   ``d = sum(w q x) / sum(w q q)``;
3. 15 more candidates ``1/d = (itry - 127) / max``, itry = -7..7: each maps ``max`` near the far
   end of the table (-127 ... -120 on the *negative* side), and so tries the other sign of d;
   the candidate whose least-squares d explains most (``sumqx**2 / sumq2``) wins;
4. the indices are chosen again with ``1/d`` of the winner's (unrounded) d, and d stored as fp16.

The paper behind the i-quants is llama.cpp PR #5590 (ikawrakow, "IQ4_NL: 4-bit non-linear
quants with blocks of 32"); the code mirrored is ggml-quants.c's ``quantize_row_iq4_nl_impl``,
``best_index_int8`` and ``dequantize_row_iq4_nl``.

Notebook 15 builds it step by step.
"""

from typing import NamedTuple

import numpy as np

from kquant.formats.cops import (
    c_semantics,
    columns,
    f32,
    fp16_field,
    fp16_value,
    per_weight,
    put_field,
    put_fp16,
    seqsum,
    signed_absmax,
    to_fp16,
)
from kquant.formats.q4_0 import pack_nibbles, unpack_nibbles
from kquant.formats.search import GROUP_MAX_EPS, blocks_and_importance, importance_weights

QK = 32  # QK4_NL
TYPE_SIZE = 18  # sizeof(block_iq4_nl): fp16 d + 16 bytes of nibbles, Q4_0's layout

# kvalues_iq4nl, ggml-common.h
KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
_VALUES = KVALUES.astype(f32)  # C compares and subtracts them as float (int8 promoted)
NTRY = 7  # quantize_iq4_nl passes ntry = 7: candidates itry = -7 .. 7 around 1/d = -127 / max

# 16 candidate scales per block, each a pass over the whole chunk: 2**16 weights keep the
# dozen (32, n) float temporaries in L2.
ENCODE_CHUNK = 1 << 16

# block_iq4_nl, 18 bytes (as block_q4_0):
#
# offset  0      2                                   18
# | d    | qs[16]                            |
# | fp16 | byte j: index j (low nibble),     |
#          index j + 16 (high nibble)


class Fields(NamedTuple):
    d: np.ndarray  # (n,) float16
    q: np.ndarray  # (n, 32) uint8 in 0..15: indices into KVALUES


def best_index_c(x: np.ndarray) -> np.ndarray:
    """ggml's ``best_index_int8(16, kvalues_iq4nl, x)`` transcribed: the index of the table value nearest x -> int64.

    C bisects to the pair ``val[mu-1] <= x < val[mu]`` and returns ``mu - 1`` only if
    ``x - val[mu-1] < val[mu] - x`` in float32: an exact tie goes *up*, to ``mu`` (x = 7 between
    1 and 13 gives 13). Below -127 or above 113 it clamps to the ends; NaN lands on 15, as C's
    bisection does (every ``x < val`` is false). ``best_index`` is the fast equivalent.
    """
    x = np.asarray(x, dtype=f32)
    mu = np.searchsorted(_VALUES, x, side="right")  # first value > x: C's mu; NaN sorts last
    mu = np.asarray(mu)
    mu = np.clip(mu, 1, 15)  # the clamps need no branch: the comparison below picks the end
    lo, hi = _VALUES[mu - 1], _VALUES[mu]
    return mu - ((x - lo) < (hi - x))  # float32 differences, as C computes them


# best_index_int8 is "x >= midpoint m_k" counted over the 15 midpoints: near a midpoint both
# float differences are exact (multiples of x's ulp, far below 2**24 ulps), so C's comparison is
# the exact x < m_k there, a tie going up; away from it rounding cannot reorder them. The
# midpoints are multiples of 1/2, so x >= m_k  <=>  floor(2x) >= 2 m_k, an integer: a table
# indexed by floor(2x) answers for every float (4 fast passes; the bisection's searchsorted
# runs ~4x slower). Tests check it against best_index_c on every midpoint's neighbours.
_TWICE_MID = (KVALUES[:-1].astype(np.int64) + KVALUES[1:]).astype(np.int64)  # 2 m_k: -231, -187, ..., 202
_LO, _HI = int(_TWICE_MID[0]) - 1, int(_TWICE_MID[-1])  # floor(2x) clamped here: below -> 0, above -> 15
_INDEX = np.searchsorted(_TWICE_MID, np.arange(_LO, _HI + 1), side="right").astype(np.uint8)
_VALUE = _VALUES[_INDEX]  # the same table giving the value itself (the search needs only values)


def _lookup(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    t = np.multiply(x, f32(2))  # exact
    np.floor(t, out=t)
    # fmin/fmax, unlike clip, send NaN to the bound: fmin(NaN, HI) = HI, index 15 as in C
    np.fmin(t, f32(_HI), out=t)
    np.fmax(t, f32(_LO), out=t)
    i = t.astype(np.int32)
    i -= _LO
    return table[i]


def best_index(x: np.ndarray) -> np.ndarray:
    """ggml's ``best_index_int8(16, kvalues_iq4nl, x)`` for float32 x -> uint8 indices (ties go up)."""
    x = np.asarray(x, dtype=f32)
    return _lookup(x.reshape(-1), _INDEX).reshape(x.shape)


def _sums(xt: np.ndarray, w: np.ndarray, inv_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One candidate: values for ``inv_d * x``, then C's ``sumqx += w*q*x``, ``sumq2 += w*q*q`` in order."""
    q = _lookup(inv_d * xt, _VALUE)
    wq = w * q
    return seqsum(wq * xt), seqsum(wq * q)


@c_semantics
def search(xt: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The scale search of ``quantize_row_iq4_nl_impl`` (ntry = 7) on (32, n) blocks side by side -> d (n,) float32.

    ``w`` (32, n) are the weights of the least-squares fits. Returns the unrounded float d
    (0 for a block whose largest |x| is below GROUP_MAX_EPS), whose sign may be either.
    """
    max_ = signed_absmax(xt, axis=0)
    zero = np.abs(max_) < GROUP_MAX_EPS  # C skips these (scale 0); here they run along, then get 0
    # d = ntry > 0 ? -max/values[0] : ...; values[0] = -127 promoted to float
    d = -max_ / f32(-127)
    sumqx, sumq2 = _sums(xt, w, f32(1) / d)
    d = np.where(sumq2 > 0, sumqx / sumq2, f32(0))
    best = d * sumqx
    for itry in range(-NTRY, NTRY + 1):
        # id = (itry + values[0])/max: an int over a float, so float division
        sumqx, sumq2 = _sums(xt, w, f32(itry - 127) / max_)
        better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        np.copyto(d, sumqx / sumq2, where=better)
        np.copyto(best, d * sumqx, where=better)
    d[zero] = 0
    return d


class Steps(NamedTuple):
    """The 16 candidates of one block's search, in the order C tries them (notebook 15 draws them)."""

    inv_d: np.ndarray  # (16,) the candidate 1/d: 127/max first, then (itry - 127)/max for itry = -7..7
    q: np.ndarray  # (16, 32) the table value each weight gets under that candidate
    d: np.ndarray  # (16,) the least-squares d = sum(w q x) / sum(w q q) of those values
    score: np.ndarray  # (16,) sum(w q x)**2 / sum(w q q): how much of the weighted signal that d explains
    chosen: int  # the winner: C keeps a later candidate only if its score is strictly larger


ITRY = np.arange(-NTRY, NTRY + 1)  # the candidates after the first


@c_semantics
def search_steps(x: np.ndarray, w: np.ndarray) -> Steps:
    """One block's search laid out candidate by candidate: x, w (32,) float32 -> Steps (``search`` on one block).

    The same arithmetic as ``search``: the 16 candidates become 16 columns side by side.
    """
    x, w = np.asarray(x, dtype=f32), np.asarray(w, dtype=f32)
    max_ = signed_absmax(x[:, None])[0]
    inv_d = np.concatenate([[f32(1) / (-max_ / f32(-127))], (ITRY - 127).astype(f32) / max_]).astype(f32)
    xt = np.repeat(x[:, None], 16, axis=1)  # (32, 16): one column per candidate
    q = _lookup(inv_d * xt, _VALUE)
    wq = w[:, None] * q
    sumqx, sumq2 = seqsum(wq * xt), seqsum(wq * q)
    d = np.where(sumq2 > 0, sumqx / sumq2, f32(0))
    score = d * sumqx
    chosen, best = 0, score[0]
    for k in range(1, 16):
        if sumq2[k] > 0 and sumqx[k] * sumqx[k] > best * sumq2[k]:
            chosen, best = k, score[k]
    return Steps(inv_d, np.ascontiguousarray(q.T), d, score, chosen)


@c_semantics
def levels(xt: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The final indices: ``best_index_int8(id * x)`` with ``id = d ? 1/d : 0`` of the unrounded d -> (32, n) uint8.

    A zero scale maps every weight to 0 * x = 0, whose nearest table value is 1 (index 8).
    """
    inv_d = np.where(d != 0, f32(1) / d, f32(0))
    return _lookup(inv_d * xt, _INDEX)


def default_weights(xt: np.ndarray) -> np.ndarray:
    """The weights without an imatrix: ``weight[j] = xb[j]*xb[j]`` (big weights matter more)."""
    return xt * xt


def block_importance(xt: np.ndarray, qwt: np.ndarray) -> np.ndarray:
    """The weights with an imatrix: ``qw * sqrtf(sigma2 + x*x)``, sigma2 = 2/32 * sum(x*x) of the block, in C order."""
    sigma2 = seqsum(xt * xt) * f32(2.0 / QK)  # sigma2 *= 2.f/super_block_size: 0.0625, exact
    return importance_weights(xt, qwt, sigma2)


def _encode_columns(xt: np.ndarray, w: np.ndarray) -> Fields:
    d = search(xt, w)
    return Fields(to_fp16(d), np.ascontiguousarray(levels(xt, d).T))


def encode(x: np.ndarray) -> Fields:
    """quantize_iq4_nl without an imatrix: x (n, 32) float32 -> Fields."""
    xt = columns(x)
    return _encode_columns(xt, default_weights(xt))


def encode_impl(rows: np.ndarray, imatrix: np.ndarray) -> Fields:
    """quantize_iq4_nl with an imatrix: rows (r, n_per_row) float32, one importance per column -> Fields."""
    x, qw = blocks_and_importance(rows, imatrix, QK)
    xt = columns(x)
    return _encode_columns(xt, block_importance(xt, columns(np.ascontiguousarray(qw))))


def pack(f: Fields) -> np.ndarray:
    out = np.empty((f.q.shape[0], TYPE_SIZE), dtype=np.uint8)
    put_fp16(out, 0, f.d)
    put_field(out, 2, pack_nibbles(f.q))  # q4[j] = L[j] | L[j + 16] << 4
    return out


def unpack(b: np.ndarray) -> Fields:
    return Fields(fp16_field(b[:, 0:2]), unpack_nibbles(b[:, 2:18]))


def decode(f: Fields, out: np.ndarray | None = None) -> np.ndarray:
    """dequantize_row_iq4_nl: d * kvalues_iq4nl[q] (``out``, if given, receives the result)."""
    y = np.empty(f.q.shape, dtype=f32) if out is None else out.reshape(f.q.shape)
    np.take(_VALUES, f.q, out=y)  # the table as float32 (exact): one gather, ~1.3x faster than KVALUES[q]
    y *= per_weight(fp16_value(f.d)[:, None], QK)
    return y


def dequantize_blocks(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return decode(unpack(b), out)
