"""The little pieces of C arithmetic that decide whether two encoders agree byte for byte.

ggml's quantizers are plain C on float32: every ``a*b+c`` is two roundings, every
sum runs left to right, and a few conversions (float -> int8, int -> uint8) wrap
or truncate in ways numpy does not do by default. Each helper here reproduces one
of them exactly, so the format modules can read like the C they mirror.

Layout convention used by every encoder: arrays are shaped ``(n, G)`` with the
in-block element axis FIRST and the G groups side by side. Then
``np.add.reduce(a, axis=0)`` adds rows strictly in order, exactly like C's
``for (i = 0; i < n; ++i) sum += a[i]`` (numpy's sum along the *last* axis uses
pairwise summation and gives different bits).

Every format module uses it; notebooks 03 and 04 encode blocks whose bytes depend on it.
"""

import functools

import numpy as np

f32 = np.float32


def c_semantics(fn):
    """Run ``fn`` with IEEE float behaviour as in C: overflow to inf, 0/0 to NaN, silently.

    The encoders meet such values on purpose (a subnormal block max, an all-zero group)
    and then do exactly what ggml does with them; numpy's warnings would only be noise.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper


# nearest_int() adds 1.5 * 2**23: the float's mantissa then holds round-half-even(v) + 2**22.
NEAREST_INT_MAGIC = f32(12582912.0)


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int``: round half to even via the float mantissa trick -> int32.

    Equals ``np.rint`` for |v| <= 4194303, and reproduces C's exact garbage outside
    that range (inf, NaN, huge values), which a degenerate block can produce.
    """
    if v.dtype != f32:  # int32 * float32 promotes to float64 in numpy: a silent exactness bug
        raise TypeError(f"nearest_int needs float32, got {v.dtype}")
    bits = (v + NEAREST_INT_MAGIC).view(np.int32)
    return (bits & 0x007FFFFF) - 0x00400000


def c_float_to_int(v: np.ndarray) -> np.ndarray:
    """C's ``(int)v`` for float32 (x86 ``cvttss2si``): truncate; NaN/out-of-range give INT_MIN."""
    ok = np.abs(v) < f32(2**31)  # False for NaN and +-inf too
    t = np.trunc(np.where(ok, v, 0)).astype(np.int64)
    return np.where(ok, t, -(2**31))


def c_float_to_int8(v: np.ndarray) -> np.ndarray:
    """C's ``(int8_t)v`` for float32: truncate, and wrap/garble like x86 outside the range.

    In range (the normal case) that is numpy's own cast; the general path is kept for
    blocks whose scale overflowed to inf.
    """
    if np.all(v > -129) and np.all(v < 128):  # False for NaN too
        return v.astype(np.int8)
    return c_to_int8(c_float_to_int(v))


def c_float_to_uint8(v: np.ndarray) -> np.ndarray:
    """C's ``(uint8_t)v`` for float32 (gcc converts through a 32-bit int, then keeps the low byte)."""
    if np.all(v > -1) and np.all(v < 256):
        return v.astype(np.uint8)
    return c_to_uint8(c_float_to_int(v))


def c_to_int8(i: np.ndarray) -> np.ndarray:
    """C's store of an int into ``int8_t``: keep the low byte, read it signed."""
    return (np.asarray(i, dtype=np.int64) & 0xFF).astype(np.uint8).view(np.int8)


def c_to_uint8(i: np.ndarray) -> np.ndarray:
    """C's store of an int into ``uint8_t``: keep the low byte (modulo 256)."""
    return (np.asarray(i, dtype=np.int64) & 0xFF).astype(np.uint8)


def columns(x: np.ndarray) -> np.ndarray:
    """``x.T`` as a new C-contiguous array: (n, k) blocks -> (k, n), the blocks side by side.

    Copied through tiles of 128 blocks (a tile fits in L1): ~35 % faster than numpy's direct
    transposing copy, which streams every cache line of x k times. Always a copy.
    """
    n, k = x.shape
    if n % 128:
        return x.T.copy()
    tiles = np.ascontiguousarray(x.reshape(-1, 128, k).transpose(0, 2, 1))  # (n / 128, k, 128)
    return np.ascontiguousarray(tiles.transpose(1, 0, 2)).reshape(k, n)


LANES = 4  # neighbouring weights lanes() moves as one item: 4 float32 = one 16-byte complex128


def lanes(x: np.ndarray) -> np.ndarray:
    """(n, k) blocks -> (k // 4, n, 4): the blocks side by side, four neighbouring weights kept together.

    The legacy encoders' layout: weight j of block b sits at ``[j // 4, b, j % 4]``. As with
    ``columns``, a per-block reduction then runs down axis 0 over long rows, leaving only the
    4 lanes to combine (``lane_max_min``). Moving 4 floats as one 16-byte item is ~2.5x
    cheaper than ``columns``' one float at a time: numpy's transposing copy pays per item.
    Always a copy.
    """
    n, k = x.shape
    items = np.ascontiguousarray(x).view(np.complex128)  # (n, k // 4): only a view of the floats
    out = np.empty((k // LANES, n), dtype=np.complex128)
    # 256 KB of blocks at a time: numpy's transposing copy writes one output row at a time, reading
    # the input k // 4 times over; a slice this size stays in the 1 MB L2 across those reads (a whole
    # 2**18-weight chunk did not: the legacy encoders ran 6-19 % slower, measured on a 2 M-weight matrix).
    step = max(1, (256 << 10) // (4 * k))
    for a in range(0, n, step):
        np.copyto(out[:, a : a + step], items[a : a + step].T)
    return out.view(f32).reshape(k // LANES, n, LANES)


def lanes_to_rows(q: np.ndarray) -> np.ndarray:
    """(k // 4, n, 4) bytes laid out as ``lanes`` -> (n, k) C-contiguous rows: four bytes (a uint32) moved at a time."""
    m, n, _ = q.shape
    return q.view(np.uint32).reshape(m, n).T.copy().view(np.uint8)


def inverse_or_zero(d: np.ndarray) -> tuple[np.ndarray, bool]:
    """C's ``id = d ? 1.0f/d : 0.0f`` for float32 d, and whether every id is finite.

    1/d is inf or NaN wherever d is 0 (and where C's id is not finite either), so when every 1/d
    is finite no d was 0 and the select is skipped: three numpy calls, not five, in the usual case.
    """
    id_ = f32(1) / d
    if np.isfinite(id_).all():
        return id_, True
    id_ = np.where(d != 0, id_, f32(0))
    return id_, bool(np.isfinite(id_).all())


def per_lane(v: np.ndarray) -> np.ndarray:
    """(n,) per-block values -> (n, 4), each repeated for its block's 4 lanes: broadcasts over a lanes() array."""
    return v.repeat(LANES).reshape(-1, LANES)  # the method: np.repeat's Python wrapper costs ~25 % on small n


def lane_max_min(xl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each block's maximum and minimum from its ``lanes`` layout (k // 4, n, 4) -> two (n,) arrays.

    Exact, except for the sign of a zero (numpy may return either): callers look zeros up.
    NaN propagates, so a block holding one shows it in both.
    """
    hi = np.maximum.reduce(xl, axis=0).reshape(-1)  # (n * 4,): down the long rows, block b at 4b .. 4b+3
    lo = np.minimum.reduce(xl, axis=0).reshape(-1)
    # Then across the lanes: lane l against lane l + 2 as two shifted views of the flat array (one
    # contiguous pass; its items 4b+2, 4b+3 mix neighbouring blocks and are never read), then the
    # two halves. ~1.4x faster than one strided column per lane, which pays per item.
    top, bottom = np.maximum(hi[:-2], hi[2:]), np.minimum(lo[:-2], lo[2:])
    return np.maximum(top[0::LANES], top[1::LANES]), np.minimum(bottom[0::LANES], bottom[1::LANES])


def to_fp16(v) -> np.ndarray:
    """``GGML_FP32_TO_FP16`` of an array: numpy's float32 -> float16 cast, bit for bit, ~2.5x faster.

    numpy converts one value at a time (~2.5 ns each here, a few % of a legacy encoder, which
    converts one or two scales per 32 weights). The same rounding (to nearest, ties to even) in
    integer steps numpy vectorises, on the float32 bits s eeeeeeee mmm...m (1, 8, 23):

        2**-14 <= |v| < 65520 (a normal fp16): add 0xFFF plus the lowest mantissa bit kept, so the
            13 bits dropped round to nearest even, then rebias the exponent (127 -> 15) and shift
            right 13: fp16's e eeee mmmmmmmmmm, a carry out of the mantissa stepping the exponent;
        |v| < 2**-14 (an fp16 subnormal, or zero): fp16 holds k * 2**-24, and k = rint(|v| * 2**24)
            (an exact scaling; rint ties to even as the cast does);

    and the sign on top. An array holding a value that rounds to inf (or inf, or NaN: quantize()
    refuses those before) takes numpy's own cast.
    """
    v = np.asarray(v, dtype=f32)
    b = np.ascontiguousarray(v).reshape(-1).view(np.uint32)
    a = b & 0x7FFFFFFF  # |v|'s bits
    if a.size == 0 or a.max() >= 0x477FF000:  # 65520 and above round to inf
        with np.errstate(over="ignore"):  # as C's conversion: inf, silently (callers refuse it)
            return v.astype(np.float16)
    h = a >> 13
    h &= 1  # the lowest mantissa bit kept: a tie rounds to the even neighbour
    h += a
    h += (0xFFF - (112 << 23)) % 2**32  # round, and rebias the exponent by 127 - 15 = 112
    h >>= 13
    small = a < 0x38800000  # below 2**-14
    if small.any():
        h[small] = np.rint(np.abs(b[small].view(f32)) * f32(2.0**24))
    sign = b >> 16
    sign &= 0x8000
    h |= sign
    return h.astype(np.uint16).view(np.float16).reshape(v.shape)


def put_fp16(out: np.ndarray, start: int, v: np.ndarray) -> None:
    """``GGML_FP32_TO_FP16(v)`` stored as little-endian bytes into ``out[:, start:start + 2]``.

    Stored through a little-endian fp16 view of the two bytes: one strided store of n items, without
    an intermediate (n, 2) byte array and its copy (~2x faster). ggml rounds to nearest, ties to even;
    numpy's cast does the same for every non-NaN float32 (no NaN is packed: quantize() refuses a NaN
    weight or scale first). An fp16 field (an encoder's d) is already rounded and goes in as it is.
    """
    v = np.asarray(v)
    if v.dtype != np.float16:  # through float32, as C converts a float
        v = to_fp16(v)
    out[:, start : start + 2].view("<f2")[:, 0] = v


# Every fp16 bit pattern's float32 value, by numpy's own cast: looking an fp16 array up here
# runs ~2.5x faster than numpy's fp16 -> float32 cast (a decoder converts one d per block).
_FP16_TO_F32 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(f32)


def fp16_value(v: np.ndarray) -> np.ndarray:
    """The float32 a value becomes after a round trip through fp16 (what the decoder will see)."""
    if isinstance(v, np.ndarray) and v.dtype == np.float16 and v.ndim:  # already fp16 (a decoded field)
        return _FP16_TO_F32.take(v.view(np.uint16))
    h = to_fp16(v)
    return _FP16_TO_F32.take(h.view(np.uint16)) if h.ndim else h.astype(f32)  # (take would give a scalar)


def fp16_nonfinite(h: np.ndarray) -> bool:
    """Whether an array of fp16 values (or their uint16 bits) holds an Inf or a NaN: an exponent of all ones.

    Two passes over the 2-byte values, half the memory of a test on the widened floats.
    """
    bits = np.asarray(h).view(np.uint16)
    return bool(bits.size) and int(np.maximum.reduce(bits & 0x7FFF, axis=None)) >= 0x7C00


def widen_fp16(h: np.ndarray, finite: bool | None = None) -> np.ndarray:
    """``GGML_FP16_TO_FP32`` for a large array: fp16 values (or their uint16 bits) -> float32, exact.

    numpy's fp16 -> float32 cast converts one value at a time (~2 ms per million here); a model's
    F16 tensors are read through this instead, ~4x faster, with integer steps numpy vectorises:

        fp16  s eeeee mmmmmmmmmm                    (bit 15, 14-10, 9-0)
        int16 -> int32, << 13:  sss s eeeee mmmmmmmmmm 0000000000000   (the sign copied by sign extension)
        clear bits 30-28:       s 000 eeeee mmmmmmmmmm 0...            a float32 with exponent e - 127
        * 2**112:               exponent e - 15, fp16's bias: the same value, exact (a power of two)

    A subnormal fp16 (e = 0) lands on a subnormal float32 that the power of two scales exactly too.
    Only Inf and NaN (e = 31) come out wrong, as finite values of magnitude >= 2**16, above fp16's
    largest 65504: the rare array holding one has those values converted by numpy's cast.
    ``finite``: what ``fp16_nonfinite(h)`` said, if the caller has asked already (None: ask here).
    """
    if finite is None:
        finite = not fp16_nonfinite(h)
    x = np.asarray(h).view(np.int16).astype(np.int32)
    x <<= 13
    x &= np.int32(~0x7000_0000)
    f = x.view(f32)
    f *= f32(2.0**112)
    if not finite:
        bad = np.abs(f) >= 2**16
        f[bad] = np.asarray(h).view(np.float16)[bad].astype(f32)
    return f


def fp16_field(b: np.ndarray) -> np.ndarray:
    """An fp16 field read from its little-endian bytes: (n, 2) uint8 -> (n,) float16."""
    if b.strides[-1] == 1:  # the pair viewed as one fp16 per row: a 1-D copy, not one per row
        return np.ascontiguousarray(b.view("<f2")[:, 0])
    return np.ascontiguousarray(b).view("<f2")[:, 0]


def byte_field(b: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of (n, k) bytes, typically one field sliced out of every block.

    Copied as one k-byte item per row (a 'V' dtype): one 1-D copy, ~10x faster than numpy's
    row-by-row copy of short rows.
    """
    if b.strides[-1] != 1:
        return np.ascontiguousarray(b)
    return np.ascontiguousarray(b.view(f"V{b.shape[-1]}")).view(np.uint8).reshape(b.shape)


def bit_planes(b: np.ndarray, bits: int, run: int) -> np.ndarray:
    """(n, k) bytes -> (n, k * 8 // bits) fields of ``bits`` bits, plane by plane within each run of bytes.

    For every run of ``run`` bytes, the field at bit 0 of each of its bytes, then the field at
    bit ``bits``, and so on: the order of the K-quants' crumbs, nibbles and high bits (e.g.
    bits=4, run=16 is Q4_0's "low nibbles, then high nibbles"). Each plane is cut out of 8
    bytes at a time (little-endian uint64 words) and the planes interleaved as items of
    ``run`` bytes: a few 1-D passes, where shifting bytes along short rows pays per row.
    """
    n, k = b.shape
    w = byte_field(b).view("<u8")
    mask = _in_every_byte((1 << bits) - 1)
    planes = np.empty((n * k // run, 8 // bits, run), dtype=np.uint8)
    items = planes.view(f"V{run}")  # (m, 8 // bits, 1): one item per plane of a run
    for p in range(8 // bits):
        items[:, p] = ((w >> np.uint64(p * bits)) & mask).view(np.uint8).reshape(-1, run).view(f"V{run}")
    return planes.reshape(n, -1)


def _in_every_byte(byte: int) -> np.uint64:
    """A uint64 word holding ``byte`` in each of its 8 bytes: a mask for 8 bytes at a time."""
    return np.uint64(int.from_bytes(bytes([byte] * 8), "little"))


def mask_bytes(a: np.ndarray, keep: int) -> np.ndarray:
    """``a & keep`` for (n, k) uint8 with k a multiple of 8, as a new array, 8 bytes at a time (as shift_bytes)."""
    w = np.ascontiguousarray(a, dtype=np.uint8).view("<u8") & _in_every_byte(keep)
    return w.view(np.uint8).reshape(a.shape)


def shift_bytes(a: np.ndarray, s: int) -> np.ndarray:
    """``a << s`` (s > 0) or ``a >> -s`` (s < 0) for (n, k) uint8 with k a multiple of 8, as a new array.

    Worked 8 bytes at a time, as little-endian uint64 words with the bits that cross into the
    next byte masked off: x86 has no SIMD shift of single bytes, so numpy shifts those one by
    one, ~8x slower.
    """
    w = np.ascontiguousarray(a).view("<u8")
    keep = (0xFF << s if s >= 0 else 0xFF >> -s) & 0xFF  # the bits of each byte that stay inside it
    w = (w << np.uint64(s)) if s >= 0 else (w >> np.uint64(-s))
    w &= _in_every_byte(keep)
    return w.view(np.uint8).reshape(a.shape)


def join_planes(fields: np.ndarray, bits: int, run: int) -> np.ndarray:
    """bit_planes' inverse: (n, m) fields of ``bits`` bits -> (n, m * bits // 8) bytes.

    For every run of ``run`` bytes (a multiple of 8), field run 0 of the fields goes to bit 0
    of its bytes, field run 1 to bit ``bits``, and so on. The fields must be below 2**bits.
    Each run of fields is cut out as one item and the runs are joined 8 bytes at a time
    (little-endian uint64 words): a few 1-D passes, where shifting bytes along short rows
    pays per row.
    """
    n, m = fields.shape
    per = 8 // bits
    if per == 2:  # nibbles: every word joined with the word one run later, in two contiguous passes
        w = np.ascontiguousarray(fields).view("<u8").reshape(-1)
        r = run // 8  # words per run
        t = np.left_shift(w[r:], np.uint64(bits))
        t |= w[:-r]  # right where word i opens a pair of runs: those runs are kept, one item each
        # one gather of the kept runs, not one per plane: ~10-20 % faster than the general path below
        return np.ascontiguousarray(t.view(f"V{run}")[0::2]).view(np.uint8).reshape(n, m // 2)
    items = np.ascontiguousarray(fields).reshape(-1, per, run).view(f"V{run}")  # (m', per, 1)
    words = np.ascontiguousarray(items[:, 0]).view("<u8")
    for p in range(1, per):
        words |= np.ascontiguousarray(items[:, p]).view("<u8") << np.uint64(p * bits)
    return words.view(np.uint8).reshape(n, m // per)


def put_field(out: np.ndarray, start: int, b: np.ndarray) -> None:
    """``out[:, start:start + k] = b`` for (n, k) bytes b, copied as one k-byte item per row.

    ~10x faster than numpy's row-by-row copy of short rows (as byte_field, the other way).
    """
    k = b.shape[1]
    out[:, start : start + k].view(f"V{k}")[:, 0] = np.ascontiguousarray(b).view(f"V{k}")[:, 0]


def split_nibbles(qs: np.ndarray, run: int) -> np.ndarray:
    """(n, k) bytes -> (n, 2k) 4-bit values: for every run of bytes, its low nibbles, then its high ones."""
    return bit_planes(qs, 4, run)


def as_float(q: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Small integer levels (n, k) -> float32 (exact), written into ``out`` (any shape of n*k) if given."""
    y = np.empty(q.shape, dtype=f32) if out is None else out.reshape(q.shape)
    np.copyto(y, q, casting="unsafe")
    return y


def per_weight(v: np.ndarray, group: int) -> np.ndarray:
    """(n, g) per-group values -> (n, g * group), each repeated for its group's weights.

    A flat multiply by this runs ~3x faster than broadcasting along rows of 16 or 32.
    """
    return np.repeat(v.reshape(-1), group).reshape(v.shape[0], -1)


def seqsum(a: np.ndarray, axis: int = 0, first: bool = False) -> np.ndarray:
    """C's sequential ``sum += a[i]`` down ``axis`` of an (n, G) array (see the module docstring).

    C starts such a sum either at 0 (``float sum = 0;``, the default here) or at the first
    term (``float sum = a[0];``, ``first=True``). The two differ only in the sign of a zero
    sum of -0.0 terms: 0 + -0.0 is +0.0, and a sum started at 0 is never -0.0.

    numpy adds rows in order only while there are several columns side by side: with a
    single column the summed axis becomes the contiguous one, and numpy switches to
    pairwise summation. ``accumulate`` is sequential always, so that case takes it.
    """
    if a.shape[-1] == 1:
        total = np.add.accumulate(a, axis=axis).take(-1, axis=axis)  # started at the first term
        return total if first else total + a.dtype.type(0)  # + 0.0 turns a -0.0 into +0.0, nothing else
    # numpy's reduce starts at +0.0; -0.0 + a[0] is a[0] exactly, so that starts at the first term.
    return np.add.reduce(a, axis=axis, initial=-0.0 if first else 0.0)


def signed_absmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """The value with the largest |x| (first one wins), as ggml's ``if (amax < fabsf(v)) {amax = ...; max = v;}``.

    An all-zero group keeps the C initial value +0.0, whatever the sign of its zeros.
    """
    if axis != 0:  # numpy reduces a short contiguous axis ~30x slower than axis 0 of the transpose
        x = np.ascontiguousarray(np.moveaxis(x, axis, 0))
    flat = x.reshape(x.shape[0], -1)
    # A max and a min reduction run at memory speed, where argmax(|x|) crawls (~10x slower).
    return absmax_of(np.max(x, axis=0), np.min(x, axis=0), lambda cols: flat[:, cols].T)


def absmax_of(hi: np.ndarray, lo: np.ndarray, groups) -> np.ndarray:
    """``signed_absmax`` from each group's max and min: whichever is larger in magnitude.

    ``groups(idx)`` returns those groups' values in order, shape (len(idx), k); it is called
    only for groups holding both +a and -a as extremes, where the first one wins, as in C's scan.
    """
    minus_lo = -lo
    picked = np.where(minus_lo > hi, lo, hi)
    tie = minus_lo == hi  # +a and -a (or an all-zero group, harmless: its first zero is +-0 too)
    if tie.any():
        cols = np.flatnonzero(tie)
        xs = groups(cols)  # (m, k)
        picked.reshape(-1)[cols] = xs[np.arange(cols.size), np.argmax(np.abs(xs), axis=1)]
    return picked + f32(0)  # -0.0 + 0.0 is +0.0 (C's initial max); every other value is unchanged


def first_min_max(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Minimum and maximum as C's strict ``if (v < min)`` / ``if (v > max)`` scans find them.

    Only the sign of a zero can differ from ``np.min``: the first zero seen wins, as in C.
    """
    if axis != 0:  # numpy reduces a short contiguous axis ~30x slower than axis 0 of the transpose
        x = np.ascontiguousarray(np.moveaxis(x, axis, 0))
    flat = x.reshape(x.shape[0], -1)
    return first_zeros(np.min(x, axis=0), np.max(x, axis=0), lambda cols: flat[:, cols].T)


def first_zeros(lo: np.ndarray, hi: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    """``first_min_max`` from numpy's min and max: a zero extreme becomes the first zero of its group.

    ``groups(idx)`` returns those groups' values in order, shape (len(idx), k). Works in place.
    """
    for v in (lo, hi):
        if v.all():  # no zero extreme (NaN counts as true): one reduction, the common case
            continue
        zero = v == 0  # numpy may return either zero: look up the first one, as C's scan keeps it
        if zero.any():
            cols = np.flatnonzero(zero)
            xs = groups(cols)
            v.reshape(-1)[cols] = xs[np.arange(cols.size), np.argmax(xs == 0, axis=1)]
    return lo, hi
