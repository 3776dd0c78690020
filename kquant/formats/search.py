"""ggml's scale searches, named as in ``ggml-quants.c``.

A K-quant block is split into small groups (16 or 32 weights). For each group the
encoder looks for the scale (and, for the asymmetric types, the min) that makes
``scale * L + min`` closest to the weights, with L an integer level. The search is
a short grid of candidate scales followed by a weighted least-squares fit:
no clustering, no k-means.

Every function works on many groups at once. Arrays are shaped ``(n, G)``: the n
weights of a group down axis 0, the G groups side by side, so that each sum runs
in C order (see ``cops``). Results are per group, shape ``(G,)``.

The arithmetic is written operation for operation as in C, in float32, because a
different rounding order changes which candidate wins and so the bytes.

Notebook 04 draws make_qkx2_quants candidate by candidate (through kquant.lessons.scale_search).
"""

import math
import threading

import numpy as np

from kquant.formats.alloc import empty_aligned
from kquant.formats.cops import NEAREST_INT_MAGIC, c_semantics, c_to_uint8, f32, nearest_int, seqsum, signed_absmax

GROUP_MAX_EPS = f32(1e-15)  # a group whose largest |x| is below this is treated as all zeros

_RINT_SAFE = f32(4.0e6)  # below ggml's nearest_int limit of 4194303, with room for rounding


_scratch = threading.local()


def _workspace(*specs: tuple) -> list[np.ndarray]:
    """Uninitialised arrays, one per (shape, dtype), from this thread's workspace, which the next
    call gets again (grown when too small). For a search's temporaries only: never returned,
    and not for two callers at once (make_qx_scale is its one user)."""
    views = getattr(_scratch, "views", {})
    if specs in views:  # a tensor's chunks (and a model's tensors) repeat their shapes
        return views[specs]
    sizes = [math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in specs]
    starts = np.cumsum([0] + [-(-n // 64) * 64 for n in sizes])  # each array on a cache line
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.size < starts[-1]:
        # On a cache line (see empty_aligned): 8-10 % of the search's time at 2048-4096 groups,
        # 3-8 % at 12-16 k, measured.
        buf = _scratch.buf = empty_aligned(starts[-1], np.uint8)
        views = {}  # views of the old buffer would keep it alive
    if len(views) > 64:
        views = {}
    views[specs] = [buf[a : a + n].view(dtype).reshape(shape) for a, n, (shape, dtype) in zip(starts, sizes, specs)]
    _scratch.views = views
    return views[specs]


# make_qx_quants' candidates in C's order: is = 0 (its first guess, -nmax/max), then -9..9 without 0.
_QX_STEPS = np.array([0, *range(-9, 0), *range(1, 10)], dtype=f32)
_QX_ROWS = np.arange(len(_QX_STEPS), dtype=np.uint8)[:, None]
_QX_STEPS_INT = tuple(int(s) for s in _QX_STEPS)


@c_semantics
def make_qx_quants(x: np.ndarray, nmax: int, qw: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric levels L in [0, 2*nmax) with x ≈ scale * (L - nmax), rmse_type 1 (Q6_K, Q3_K imatrix).

    x: (n, G). Weights are ``qw`` if given, else x**2. Returns (scale (G,), L (n, G) uint8).
    Tries 19 scales around ``nmax/max`` and keeps the one whose least-squares fit
    explains most of the weighted signal (``sumlx**2 / suml2`` largest).
    """
    scale, iscale = make_qx_scale(x, nmax, qw)
    return scale, qx_levels(x, iscale, nmax)


def qx_levels(x: np.ndarray, iscale: np.ndarray, nmax: int) -> np.ndarray:
    """make_qx_quants' levels from its winning iscale: clamp(nearest_int(iscale * x), -nmax, nmax - 1) + nmax.

    x: (n, G); iscale: (G,), 0 for an all-zero group (C returns early with L = 0). Returns (n, G) uint8.
    """
    l = x * iscale  # |l| <= nmax + 0.9 (+ rounding): np.rint is nearest_int here
    L = np.clip(np.rint(l, out=l), f32(-nmax), f32(nmax - 1), out=l) + f32(nmax)
    L[:, iscale == 0] = 0
    return L.astype(np.uint8)


@c_semantics
def make_qx_scale(x: np.ndarray, nmax: int, qw: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """make_qx_quants' search without its levels: (scale (G,), iscale (G,)), iscale 0 for an all-zero group.

    For a caller that needs the levels of a few groups only (Q6_K rounds every weight again
    against its stored scales, and uses the search's levels only where that scale is 0):
    ``qx_levels(x, iscale, nmax)`` gives them.
    """
    max_ = signed_absmax(x, axis=0)
    zero = np.abs(max_) < GROUP_MAX_EPS
    any_zero = zero.any()  # rare in real weights: the masked writes for them are skipped otherwise
    # C returns early for an all-zero group; here it goes through the search with max 1
    # (its result is overwritten below), so that every candidate maps |x| to at most
    # nmax + 1 and np.rint is exactly nearest_int: no inf or NaN to guard against.
    if any_zero:
        max_[zero] = 1
    lo, hi = f32(-nmax), f32(nmax - 1)
    # The search's arrays come from this thread's workspace, kept from call to call and on cache
    # lines: under glibc's defaults fresh arrays this large are mmaps whose pages fault on first
    # touch, which cost a third of Q6_K's time on a small model's tensors (alloc.py keeps freed
    # memory too, but only once quantize() has set it up; the lessons call the search directly).
    G = x.shape[1]
    ws, iscales, sums, per_candidate, kept, rows = _workspace(
        ((6, *x.shape), f32), ((19, G), f32), ((19, 2, G), f32), ((3, 19, G), f32), ((19, G), bool), ((19, G), np.uint8)
    )
    # All 19 candidate iscales in one division, in C's order (-nmax/max first, then is = -9..9
    # without 0): fl(-(nmax + 0.1f*is) / max), each factor rounded in float32 as in C.
    np.divide(-(f32(nmax) + f32(0.1) * _QX_STEPS)[:, None], max_, out=iscales)  # (19, G)
    # Buffers reused by all 19 candidates; wx and w stacked so one multiply serves both sums.
    l, top, W, T = ws[0], ws[1], ws[2:4], ws[4:6]
    if qw is None:
        np.multiply(x, x, out=W[1])  # w = x*x, written in place (a fresh array costs one more pass)
    else:
        W[1] = qw
    np.multiply(W[1], x, out=W[0])
    top[...] = hi  # np.minimum with an array runs ~3x faster than with a scalar

    # Each candidate's [sumlx, suml2] over the whole tensor first; C's running comparison after,
    # on (G,) rows: the per-candidate loop then makes 6 numpy calls, not 12, whose fixed cost
    # shows on small tensors (measured: 0.87x the time at 64 groups, 0.97x at 2048).
    for k, is_ in enumerate(_QX_STEPS_INT):
        np.multiply(x, iscales[k], out=l)
        np.rint(l, out=l)
        # |x * iscale| <= nmax + 0.1 * is_ (+ float rounding, far below 0.1). Rounding can
        # reach -nmax - 1 only for is_ >= 5, and nmax or more only for is_ >= -5: the clamps
        # that cannot bite are skipped.
        if is_ >= 5:
            np.clip(l, lo, hi, out=l)
        elif is_ >= -5:
            np.minimum(l, top, out=l)
        np.multiply(W, l, out=T)  # [w*x*l, w*l]
        np.multiply(T[1], l, out=T[1])  # (w*l)*l
        # Both sums in C order, down the n axis, from 0 (seqsum's rule; a single group takes seqsum).
        if G == 1:
            sums[k] = seqsum(T, axis=1)
        else:
            np.add.reduce(T, axis=1, initial=0.0, out=sums[k])
    sumlx, suml2 = sums[:, 0], sums[:, 1]  # (19, G) each
    scales, gains, square = per_candidate
    np.divide(sumlx, suml2, out=scales)
    scales[0][suml2[0] == 0] = 0  # C's first guess: scale = suml2 ? sumlx/suml2 : 0
    np.multiply(scales, sumlx, out=gains)  # best = scale*sumlx, where a candidate is kept
    np.multiply(sumlx, sumlx, out=square)
    best, prod = gains[0].copy(), np.empty(G, dtype=f32)
    kept[0] = True
    for k in range(1, 19):
        # C: if (suml2 > 0 && sumlx*sumlx > best*suml2) {scale = sumlx/suml2; best = scale*sumlx;}
        # The weights are >= 0, so suml2 is 0 only where every w*l is 0, and then sumlx is 0 too
        # and 0 > best*0 is False already (the product is a signed zero or NaN): the first test
        # is implied, one pass saved.
        np.multiply(best, suml2[k], out=prod)
        np.greater(square[k], prod, out=kept[k])
        np.putmask(best, kept[k], gains[k])  # ~2x faster than np.copyto(where=) for a mask half True
    # The winner is the last candidate kept: its row is the largest k * kept[k] (bytes: a cheap pass).
    win = np.maximum.reduce(np.multiply(kept, _QX_ROWS, out=rows), axis=0) * np.intp(G) + np.arange(G)
    scale, best_iscale = scales.reshape(-1).take(win), iscales.reshape(-1).take(win)
    if any_zero:
        scale[zero] = 0  # C returns early: all-zero groups get L = 0 (not nmax) and scale 0
        best_iscale[zero] = 0
    return scale, best_iscale


_Q3_TILE = 1 << 14  # groups per tile of make_q3_quants' first rounding


@c_semantics
def make_q3_quants(x: np.ndarray, nmax: int = 4, levels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Q3_K's symmetric fit with weights x**2, refined by coordinate descent (do_rmse = true).

    x: (16, G). Returns (scale (G,), L (16, G) uint8 in [0, 2*nmax)); L is None if not ``levels``
    (Q3_K's encoder needs the search's levels only for the few groups whose 6-bit scale rounds
    to 0, and asks for those groups again).
    After the first rounding, each level is nudged in turn to the value that best fits
    the current least-squares scale, for up to five sweeps over the group.

    This is the one search that ggml's C runs faster than numpy (a little on large tensors, about
    2x on small ones): its up to 80 steps (16 levels x 5 sweeps) each depend on the one before,
    so numpy can only go across groups, paying a few passes over every group and a few dozen
    calls on the candidates per step, where C spends a few scalar operations on a level that,
    97 times in 100, stays where it is.
    """
    n, G = x.shape
    # The levels L, each level's terms of sumlx and suml2 (P = w*x*L and Q = w*L*L, w = x*x) and
    # the sums. A step subtracts a stored term (one pass) instead of recomputing it (three), and
    # updates it where a level moves. Each has a spare column, G: a step sends its rejected
    # updates there, which is cheaper than cutting them out of its arrays.
    L, P, Q = np.empty((3, n, G + 1), dtype=f32)
    sumlx, suml2 = np.empty((2, G + 1), dtype=f32)
    zero = np.empty(G, dtype=bool)
    lo, hi = f32(-nmax), f32(nmax - 1)
    top = np.full(min(G, _Q3_TILE), hi)  # np.minimum with a row runs ~3.5x faster than with a scalar
    # The first rounding a tile of groups at a time: a tile's arrays stay in cache from one pass
    # to the next (over 2^16 groups, the same passes take ~1.5x as long per group).
    for c0 in range(0, G, _Q3_TILE):
        c = slice(c0, min(c0 + _Q3_TILE, G))
        xc = x[:, c]
        max_ = signed_absmax(xc, axis=0)
        zero[c] = z = np.abs(max_) < GROUP_MAX_EPS
        iscale = f32(-nmax) / max_
        Lc = np.multiply(iscale, xc, out=L[:, c])
        if z.any():  # an all-zero group's iscale is inf (its x * iscale NaN): C's exact rounding
            Lc[...] = np.clip(nearest_int(Lc), -nmax, nmax - 1)
        else:
            # |iscale * x| <= nmax (+ a rounding, far below 0.5), and the group's max lands on
            # -nmax: np.rint is nearest_int here, and only the clamp at nmax - 1 can bite.
            np.minimum(np.rint(Lc, out=Lc), top[: Lc.shape[1]], out=Lc)
        _q3_terms(xc, L[:, c], P[:, c], Q[:, c])
        sumlx[c] = seqsum(P[:, c])
        suml2[c] = seqsum(Q[:, c])
    # C stops a group after a sweep that changes nothing. Such a sweep leaves the state
    # as it was, so every later sweep would change nothing too: each sweep need only
    # visit the groups the previous sweep changed (in real weights about 1 in 5, then 1 in
    # 4 of those...). The first sweep works in place; each later one on compact copies.
    # One set of step buffers for all steps: a fresh 128 KiB array per step would be an mmap
    # whose pages fault on first touch.
    buf = np.empty((4, G), dtype=f32)
    active = None  # the groups a later sweep works on (indices into all G)
    xa, La, Pa, Qa, slx_a, sl2_a = x, L, P, Q, sumlx, suml2
    for _sweep in range(5):  # C's itry
        m = xa.shape[1]
        slx, sl2, v, r = buf[:, :m]
        changed = np.zeros(m + 1, dtype=bool)
        slx_m, sl2_m = slx_a[:m], sl2_a[:m]  # without the spare column, for the passes over every group
        for i in range(n):
            xi, Li, Pi, Qi = xa[i], La[i], Pa[i], Qa[i]  # rows first: row[j] is ~4x cheaper than array[i, j]
            np.subtract(slx_m, Pi[:m], out=slx)
            np.subtract(sl2_m, Qi[:m], out=sl2)
            np.multiply(xi, sl2, out=v)
            np.divide(v, slx, out=v)
            # A level can only move where rint(v) differs from it: about 3 groups in 100 (NaN, v
            # beyond nearest_int's range, and groups with slx <= 0, which C skips, land here too:
            # testing slx > 0 on these few is cheaper than on every group). The rest of the step
            # runs on those groups alone, with C's exact rounding.
            # (Up to 80 steps per chunk: each uses ufuncs and array methods, not np.clip,
            # np.max or np.flatnonzero, whose Python wrappers cost more than the work here.)
            j = (np.rint(v, out=r) != Li[:m]).nonzero()[0]
            if j.size == 0:
                continue
            rj = r[j]
            if np.maximum.reduce(np.abs(rj)) <= _RINT_SAFE:  # False for NaN: that takes C's exact path
                new_l = np.minimum(np.maximum(rj, lo), hi)
            else:
                new_l = np.clip(nearest_int(v[j]), lo, hi).astype(f32)
            # w and w*x again from x, as C computes them: x's row is in cache from this step's
            # pass, stored w's would not be.
            xj = xi[j]
            wj = xj * xj
            p = (wj * xj) * new_l
            q = (wj * new_l) * new_l
            slx_j = slx[j]
            slx_new = slx_j + p
            sl2_new = sl2[j] + q
            sumlx_j = slx_a[j]
            # C: if (slx > 0) {... if (new_l != L[i]) {...; if (sl2 > 0 && slx*slx*suml2 > sumlx*sumlx*sl2)
            # (np.minimum keeps a NaN, which fails the test, as in C)
            take = (new_l != Li[j]) & (np.minimum(slx_j, sl2_new) > f32(0))
            take &= (slx_new * slx_new) * sl2_a[j] > (sumlx_j * sumlx_j) * sl2_new
            j = np.where(take, j, m)  # a rejected update lands in the spare column
            Li[j], Pi[j], Qi[j] = new_l, p, q
            slx_a[j], sl2_a[j] = slx_new, sl2_new
            changed[j] = True
        if active is not None:  # the copies' sums (and levels) go back (the first sweep worked in place)
            sumlx[active], suml2[active] = slx_m, sl2_m
            if levels:
                for row in range(n):  # row by row: ~2x faster than numpy's 2-D fancy assignment
                    L[row][active] = La[row, :m]
        keep = changed[:m].nonzero()[0]
        if keep.size == 0:
            break
        # The next sweep's copies, cut from this sweep's (smaller than the full arrays); the
        # terms are recomputed from x and L (same arithmetic, fewer gathers).
        k = keep.size
        active = keep if active is None else active[keep]
        xa, La_m = np.take(xa, keep, axis=1), La  # take: ~2x faster than xa[:, keep]
        La, Pa, Qa = np.empty((3, n, k + 1), dtype=f32)
        # (from the whole array: take is ~2.5x slower from a strided view; "clip": no buffered copy)
        np.take(La_m, keep, axis=1, out=La[:, :k], mode="clip")
        _q3_terms(xa, La[:, :k], Pa[:, :k], Qa[:, :k])
        slx_a, sl2_a = np.empty((2, k + 1), dtype=f32)
        slx_a[:k], sl2_a[:k] = slx_m[keep], sl2_m[keep]
    sumlx, suml2 = sumlx[:G], suml2[:G]
    scale = np.where(suml2 > 0, sumlx / suml2, f32(0))
    scale[zero] = 0
    if not levels:
        return scale, None
    L = L[:, :G] + f32(nmax)
    L[:, zero] = 0
    return scale, L.astype(np.uint8)


def _q3_terms(x: np.ndarray, L: np.ndarray, P: np.ndarray, Q: np.ndarray) -> None:
    """make_q3_quants' terms of sumlx and suml2, into P and Q: (w*x)*L and (w*L)*L with w = x*x, C's order."""
    w = np.multiply(x, x, out=Q)  # computed in P and Q themselves: no temporaries
    np.multiply(np.multiply(w, x, out=P), L, out=P)
    np.multiply(np.multiply(w, L, out=Q), L, out=Q)


@c_semantics
def make_qkx2_quants(
    x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int, use_mad: bool, trace=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric levels L in [0, nmax] with x ≈ scale * L - the_min (Q2_K, Q4_K, Q5_K).

    x, w: (n, G). Returns (scale (G,), the_min (G,) >= 0, L (n, G) uint8).
    Candidate i uses iscale = (nmax + rmin + rdelta*i) / (max - min); for each, the
    best scale and min for those levels are solved by weighted least squares, and
    the candidate with the smallest weighted error (|.| if use_mad, else squared) wins.

    The trap: ``min`` is the best min found *so far*, so later candidates are
    computed from it. Freezing it at the data minimum breaks about half the blocks.

    ``trace``, if given, is called once per candidate (the starting grid first) with
    (G,) arrays ``iscale, scale, min, error, kept`` so a notebook can draw the search;
    a candidate whose least-squares system has no solution shows scale NaN.
    """
    min_ = x.min(axis=0)
    max_ = x.max(axis=0)  # its sign never matters: only max - min and max == min use it
    # C's scan keeps the first of equal minima, which decides the sign of a zero min
    # (Q4_1/Q5_1 store the min itself); numpy may return either zero, so look it up.
    zero_min = min_ == 0
    if zero_min.any():
        cols = np.flatnonzero(zero_min)
        first = np.argmax(x[:, cols] == 0, axis=0)
        min_[cols] = x[first, cols]
    sum_w = seqsum(w, first=True)  # C: sum_w = w[0]; sum_x = sum_w * x[0]; then += from i = 1
    sum_x = seqsum(w * x, first=True)
    min_ = np.where(min_ > 0, f32(0), min_)
    flat = max_ == min_
    data_min = min_
    # C returns before the search for a flat group; here it runs the search on a range of 1
    # (its result is overwritten below), so that no candidate meets max - min = 0.
    max_ = np.where(flat, min_ + f32(1), max_)

    # Buffers reused by every candidate. l shares an array with x, so that one multiply by
    # w*l gives both (w*l)*x and (w*l)*l; the three sums then come from one reduction.
    G = x.shape[1]
    XL = np.empty((2, *x.shape), dtype=f32)
    XL[0] = x
    l = XL[1]
    S = np.empty((3, *x.shape), dtype=f32)  # [w*l, (w*l)*x, (w*l)*l]
    t = np.empty_like(x)
    # Per-group rows, written with out= (no fresh array per candidate). Z holds sum_x beside the
    # three sums, ordered so that both least-squares numerators come from one (2, G) product each.
    Z = np.empty((4, G), dtype=f32)  # [sum_x, sum_l, sum_xl, sum_l2]
    Z[0] = sum_x
    s_l, s_xl, s_l2 = Z[1], Z[2], Z[3]
    w_x = np.stack([sum_w, sum_x])  # times [sum_xl, sum_l2]
    A, B = np.empty((2, 2, G), dtype=f32)
    D, g = np.empty((2, G), dtype=f32)
    solved, clamp = np.empty((2, G), dtype=bool)
    kept = np.empty((5, G), dtype=bool)  # better, repeated for each row of the state
    better = kept[0]

    def total(a, out, axis=0):  # seqsum(a, axis) written into out (a single group takes seqsum's own path)
        if G == 1:
            out[...] = seqsum(a, axis=axis)
        else:
            np.add.reduce(a, axis=axis, initial=0.0, out=out)
        return out

    def levels(iscale, m):
        np.subtract(x, m, out=l)
        np.multiply(l, iscale, out=l)
        # The bound for the fast rounding: |iscale * (x - m)| <= max(|iscale * (max - m)|,
        # |iscale * (data_min - m)|), and every iscale here is c / (max - m) with c < nmax + 2,
        # so only the second term can be large. (Ufuncs with out=, and the reduction called
        # directly: np.max's wrapper costs more than the work on a few thousand groups.)
        np.subtract(data_min, m, out=g)
        np.multiply(g, iscale, out=g)
        if np.maximum.reduce(np.abs(g, out=g)) < _RINT_SAFE:  # False for NaN: that takes the exact path
            np.rint(l, out=l)
            return np.clip(l, f32(0), f32(nmax), out=l)
        l[...] = np.clip(nearest_int(l), 0, nmax)
        return l

    def error(scale, m, out):
        np.multiply(l, scale, out=t)  # C: scale * L + min - x, rounded after each step
        np.add(t, m, out=t)
        np.subtract(t, x, out=t)
        np.abs(t, out=t) if use_mad else np.multiply(t, t, out=t)
        return total(np.multiply(t, w, out=t), out)

    iscale = f32(nmax) / (max_ - min_)
    levels(iscale, min_)
    # The search's state, one row each, so that one masked copy updates it all per candidate;
    # cand holds the same rows for the candidate being tried.
    state = np.stack([error(f32(1) / iscale, min_, g), iscale, min_, f32(1) / iscale, min_])
    best, best_iscale, best_min_used, scale, min_ = state
    cand = np.empty_like(state)
    cur, iscale, min_used, this_scale, this_min = cand
    if trace is not None:
        trace(iscale=best_iscale, scale=scale, min=min_, error=best, kept=np.ones_like(flat))
    for is_ in range(nstep + 1):
        np.divide((f32(rmin) + f32(rdelta) * f32(is_)) + f32(nmax), np.subtract(max_, min_, out=g), out=iscale)
        levels(iscale, min_)
        np.multiply(w, l, out=S[0])  # w*l
        np.multiply(S[0], XL, out=S[1:])  # (w*l)*x, (w*l)*l
        total(S, Z[1:], axis=1)  # sum_l, sum_xl, sum_l2
        np.multiply(sum_w, s_l2, out=D)  # D = sum_w * sum_l2 - sum_l * sum_l
        np.subtract(D, np.multiply(s_l, s_l, out=g), out=D)
        # this_scale = (sum_w * sum_xl - sum_x * sum_l) / D; this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        np.multiply(w_x, Z[2:4], out=A)  # [sum_w * sum_xl, sum_x * sum_l2]
        np.multiply(Z[0:3:2], s_l, out=B)  # [sum_x * sum_l, sum_xl * sum_l]
        np.divide(np.subtract(A, B, out=A), D, out=cand[3:])
        # if (this_min > 0) {this_min = 0; this_scale = sum_xl / sum_l2;}
        np.greater(this_min, 0, out=clamp)
        np.divide(s_xl, s_l2, out=this_scale, where=clamp)
        np.copyto(this_min, f32(0), where=clamp)
        error(this_scale, this_min, cur)
        np.copyto(min_used, min_)
        np.greater(D, 0, out=solved)
        np.logical_and(solved, np.less(cur, best, out=better), out=better)
        if trace is not None:
            trace(
                iscale=iscale.copy(),
                scale=np.where(solved, this_scale, np.nan),
                min=np.where(solved, this_min, np.nan),
                error=np.where(solved, cur, np.nan),
                kept=better.copy(),
            )
        kept[1:] = better
        np.putmask(state, kept, cand)  # ~1.5-2x faster than np.copyto(state, cand, where=better)
    # The winning levels, recomputed once from the iscale and min that produced them.
    L = levels(best_iscale, best_min_used)
    L[:, flat] = 0
    scale = np.where(flat, f32(0), scale)
    the_min = -np.where(flat, data_min, min_)
    return scale, the_min, L.astype(np.uint8)


@c_semantics
def requantize_levels(x: np.ndarray, dq: np.ndarray, dm: np.ndarray | None, lo: int, hi: int, L: np.ndarray | None):
    """The final level of every weight against the scale (and min) the decoder will use.

    ``clamp(nearest_int((x + dm) / dq), lo, hi) - lo`` as uint8, as every K-quant's C code
    ends. x: (G, n), one group per ROW (the blocks' own layout, so the levels need no
    transpose back); dq, dm: (G,), dm None for the symmetric types. A group whose dq is 0
    keeps its levels from the search, L ((n, G), already offset by -lo): C skips it. (L may
    be None where no dq is 0.)
    """
    skip = dq == 0
    # Per-group values repeated to every weight and applied to the flat array: ~25 % faster
    # than broadcasting them along rows of 16 or 32 (numpy pays per row).
    n = x.shape[1]
    v = x.reshape(-1) if dm is None else x.reshape(-1) + np.repeat(dm, n)
    v = np.divide(v, np.repeat(np.where(skip, f32(1), dq), n), out=None if dm is None else v)  # skipped: / 1
    # nearest_int as C computes it, in place: the float's mantissa bits after adding 1.5 * 2**23 hold
    # level + 2**22 (exact for every v, inf and NaN included: no range check, one path). Clamped
    # there, the low byte is the level itself (2**22 is a multiple of 256), and + (-lo) wraps to l - lo.
    if v.dtype != f32:  # the bit trick reads float32 bits (a float64 here would be a silent garbage bug)
        raise TypeError(f"requantize_levels needs float32 weights and scales, got {v.dtype}")
    bits = np.add(v, NEAREST_INT_MAGIC, out=v).view(np.int32)
    np.bitwise_and(bits, 0x7FFFFF, out=bits)
    np.clip(bits, 0x400000 + lo, 0x400000 + hi, out=bits)
    q = bits.astype(np.uint8).reshape(x.shape)
    q += np.uint8(-lo)
    if skip.any():
        q[skip] = L[:, skip].T
    return q


# --- the imatrix paths (quantize_row_*_impl) -------------------------------------------


def blocks_and_importance(rows: np.ndarray, imatrix: np.ndarray, qk: int) -> tuple[np.ndarray, np.ndarray]:
    """(r, n_per_row) rows and one importance per column -> (n, qk) blocks and their (n, qk) importances."""
    x = rows.reshape(-1, qk)
    qw = np.broadcast_to(imatrix, rows.shape).reshape(-1, qk)
    return x, qw


def row_mean_square(rows: np.ndarray) -> np.ndarray:
    """sum(x**2) / n_per_row of every row, summed in C order: (r, n_per_row) -> (r,)."""
    t = np.ascontiguousarray(rows.T)
    return seqsum(t * t) / f32(rows.shape[1])


def importance_weights(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """Per-weight importance of the imatrix paths: ``qw * sqrt(sigma2 + x**2)``.

    ``qw`` is the imatrix entry of each weight's column (how strongly that input is
    activated); ``sigma2`` is a mean square of the block or row around it, so that
    small weights still count. Shapes broadcast; all float32.
    """
    t = x * x
    t += sigma2
    np.sqrt(t, out=t)
    return np.multiply(qw, t, out=t)


def make_qkx3_quants(x: np.ndarray, w: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The imatrix paths' asymmetric fit: make_qkx2_quants on a finer grid, squared error.

    37 candidates (rmin -0.9, rdelta 0.05, nstep 36). ggml's separate function differs
    only in testing ``max <= min`` for a flat group, which for finite input (min <= 0 <
    max whenever min was raised to 0) is the same test as ``max == min``.
    """
    return make_qkx2_quants(x, w, nmax, -0.9, 0.05, 36, use_mad=False)


@c_semantics
def make_qp_quants(x: np.ndarray, nmax: int, qw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantize non-negative values (a block's sub-block scales or mins) to levels 0..nmax.

    x, qw: (n, G). Returns (scale (G,), L (n, G) uint8) with x ≈ scale * L.
    Tries 9 scales around ``nmax / max`` by weighted squared error, then refines the
    levels by coordinate descent as make_q3_quants does, for up to five sweeps.
    """
    max_ = np.maximum(x.max(axis=0), f32(0))  # MAX(max, x[i]) from 0
    zero = max_ < GROUP_MAX_EPS
    wx = qw * x

    def mse(iscale, clamp):
        l = nearest_int(iscale * x)
        if clamp:
            l = np.minimum(nmax, l)
        else:
            l = c_to_uint8(l)  # the first pass stores into uint8_t L[] without a clamp
        diff = x - (f32(1) / iscale) * l.astype(f32)
        return seqsum((qw * diff) * diff)

    iscale = f32(nmax) / max_
    best = mse(iscale, clamp=False)
    for is_ in range(-4, 5):
        if is_ == 0:
            continue
        iscale_is = (f32(0.1) * f32(is_) + f32(nmax)) / max_
        cur = mse(iscale_is, clamp=True)
        better = cur < best
        best = np.where(better, cur, best)
        iscale = np.where(better, iscale_is, iscale)

    l = np.minimum(nmax, nearest_int(iscale * x)).astype(f32)  # the int level, used in the sums
    sumlx = seqsum(wx * l)
    suml2 = seqsum((qw * l) * l)
    L = c_to_uint8(l.astype(np.int32)).astype(f32)  # what L[] holds
    for _ in range(5):  # a sweep that changes nothing is a fixed point: no early exit needed
        for i in range(x.shape[0]):
            Li = L[i]
            slx = sumlx - wx[i] * Li
            sl2 = suml2 - (qw[i] * Li) * Li
            new_l = np.minimum(nmax, nearest_int((x[i] * sl2) / slx)).astype(f32)
            slx_new = slx + wx[i] * new_l
            sl2_new = sl2 + (qw[i] * new_l) * new_l
            take = (slx > 0) & (sl2 > 0) & (new_l != Li) & ((slx_new * slx_new) * suml2 > (sumlx * sumlx) * sl2_new)
            L[i] = np.where(take, c_to_uint8(new_l.astype(np.int32)), Li)
            sumlx = np.where(take, slx_new, sumlx)
            suml2 = np.where(take, sl2_new, suml2)
    scale = np.where(suml2 > 0, sumlx / suml2, f32(0))
    L[:, zero] = 0
    scale[zero] = 0
    return scale, L.astype(np.uint8)
