"""ggml's scale-and-min search for one group, candidate by candidate, to look at.

``kquant.formats.search.make_qkx2_quants`` runs the search for thousands of groups
at once and keeps only the winner. Its ``trace`` hook reports every candidate it
tries; this module runs it on a single group with that hook and collects the
candidates, so the notebooks draw the very search that writes the bytes.

The search, in words: for each of ``nstep + 1`` grids of slightly different
spacing, round the group onto the grid, then solve the weighted least-squares
problem "which scale and min best explain these levels"; keep the candidate with
the smallest weighted squared error. The grid's origin is not fixed: once a
candidate wins, the later grids start from its fitted min (and span max - min from
there), so the candidates depend on which earlier ones won. A grid search plus
least squares: no clustering.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kquant.formats.cops import f32
from kquant.formats.q4_k import subblock_weights
from kquant.formats.search import make_qkx2_quants


class Candidate(NamedTuple):
    step: float  # spacing of the rounding grid tried, 1 / iscale
    scale: float  # least-squares scale for the levels that grid gave (NaN if it had no solution)
    min: float  # least-squares min (<= 0); the group decodes as scale * L + min (stored as m = -min)
    error: float  # weighted squared error of scale * L + min against the group
    best_so_far: bool  # whether the search kept it when it was tried


class Trace(NamedTuple):
    initial: Candidate  # the plain min/max grid the search starts from
    candidates: list  # the nstep + 1 candidates, in the order tried
    scale: float  # the winner's scale
    the_min: float  # the winner's -min (>= 0), as Q4_K stores it
    levels: np.ndarray  # (n,) uint8: the winner's levels


def q4_k_weights(x: np.ndarray) -> np.ndarray:
    """Q4_K's importance of each weight in one 32-weight sub-block (``q4_k.subblock_weights``)."""
    return subblock_weights(np.asarray(x, dtype=f32)[:, None])[:, 0]


def qkx2_trace(x, w, nmax: int = 15, rmin: float = -1.0, rdelta: float = 0.1, nstep: int = 20) -> Trace:
    """Run make_qkx2_quants (Q4_K's parameters by default) on one group, recording every candidate.

    A flat group (all weights equal) is stored as levels 0 and -min alone; its
    candidates are then meaningless, and only ``scale``, ``the_min`` and ``levels`` count.
    """
    seen = []

    def record(iscale, scale, min, error, kept):  # the hook's own keyword names
        with np.errstate(divide="ignore"):
            step = float(f32(1) / iscale[0])
        seen.append(Candidate(step, float(scale[0]), float(min[0]), float(error[0]), bool(kept[0])))

    x = np.asarray(x, dtype=f32)[:, None]  # (n, 1): one group, as the encoder lays groups out
    w = np.asarray(w, dtype=f32)[:, None]
    scale, the_min, L = make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep, use_mad=False, trace=record)
    initial, *candidates = seen
    return Trace(initial, candidates, float(scale[0]), float(the_min[0]), L[:, 0])


def origins(trace: Trace) -> list:
    """The origin (the min the grid starts from) each candidate of ``trace`` was tried with.

    ggml's make_qkx2_quants starts at the data min (0 if every weight is positive) and,
    each time a candidate beats the best so far, moves the origin to that candidate's
    fitted min for every later candidate.
    """
    origin, out = trace.initial.min, []
    for c in trace.candidates:
        out.append(origin)
        if c.best_so_far:
            origin = c.min
    return out
