"""Notebook 11's pictures: where GPTQ sends one column's rounding error, and what damping does to the total."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from kquant.blas import one_blas_thread
from kquant.formats import dequantize, quantize
from kquant.methods import gptq
from kquant.viz import style
from kquant.viz.style import EXPONENT, MANTISSA, SIGN, bars, by_content, legend, tidy

_SHOWN = 48  # later columns drawn to the right of the rounded one
DAMPINGS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)  # notebook 11's damping slider


def _solve(W: np.ndarray, H: np.ndarray, qtype: str, percdamp: float) -> tuple[np.ndarray, float, float]:
    """The upper Cholesky factor of the damped H⁻¹, and the output errors of round-to-nearest and of
    GPTQ at this damping: the same for every column the slider picks."""
    with one_blas_thread():  # small matrices: OpenBLAS's second thread only waits (kquant.blas)
        factor = gptq.inverse_factor(H, percdamp)
    got = gptq.quantize(W, H, qtype, percdamp=percdamp, factor=factor)  # the factor once, not twice
    rtn = dequantize(quantize(W, qtype), qtype)
    with one_blas_thread():
        return factor[0], gptq.output_error(W, rtn, H), gptq.output_error(W, got.values, H)


@by_content
def _every_damping(W: np.ndarray, H: np.ndarray, qtype: str) -> dict:
    """``_solve`` at each of the slider's dampings, all at once on the widget's first draw (~12 ms each):
    moving the damping slider then recomputes nothing, and the content is hashed once per redraw."""
    return {p: _solve(W, H, qtype, p) for p in DAMPINGS}


_solve_cached = by_content(_solve)  # a damping the slider does not offer: computed once, on its first visit


def gptq_view(W: np.ndarray, H: np.ndarray, column: int, percdamp: float, qtype: str = "Q4_0"):
    """Left: when column ``column`` is rounded, how much of its error each later column absorbs
    (row ``column`` of the upper Cholesky factor of the damped H⁻¹, divided by its diagonal),
    beside the correlation of input ``column`` with each later input. Right: the layer's output
    error ``tr(E H Eᵀ)`` of round-to-nearest and of GPTQ at this damping, on the same ggml grid.
    """
    W = np.asarray(W, dtype=np.float32)
    H = np.asarray(H, dtype=np.float64)
    n = H.shape[0]
    column = int(np.clip(column, 0, n - 1))
    U, e_rtn, e_gptq = (
        _every_damping(W, H, qtype)[percdamp] if percdamp in DAMPINGS else _solve_cached(W, H, qtype, percdamp)
    )
    stop = min(n, column + 1 + _SHOWN)
    later = np.arange(column + 1, stop)
    spread = -U[column, column + 1 : stop] / U[column, column]  # Δw_j per unit of error in the rounded column
    d = np.sqrt(np.diag(H))
    corr = H[column, column + 1 : stop] / (d[column] * d[column + 1 : stop] + 1e-30)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [2.2, 1]})
    bars(left, later, spread, color=EXPONENT, width=0.8, label="Δw_j per unit error of column c")
    left.plot(later, corr, "o", color=SIGN, markersize=3, label="correlation of input c with input j")
    left.axhline(0, color="grey", linewidth=0.8)
    left.set_xlim(column + 0.5, column + 1 + _SHOWN)
    top = 1.1 * max(np.abs(spread).max(initial=0), np.abs(corr).max(initial=0), 1e-3)
    left.set_ylim(-top, top)
    left.set_xlabel("later input column j")
    left.set_ylabel("per unit error / correlation")
    style.title(left, f"column c = {column} rounded: where its error goes (damping {percdamp:g})", fontsize=10)
    legend(left, fontsize=8, loc="lower right")
    right.bar([0, 1], [e_rtn, e_gptq], color=[MANTISSA, EXPONENT])
    right.set_xticks([0, 1], ["round to\nnearest", "GPTQ"])
    right.set_xlabel("same grid, same bytes")
    right.set_ylabel("output error tr(E H Eᵀ)")
    style.title(right, f"{qtype}, both: GPTQ at {e_gptq / e_rtn:.0%} of RTN", fontsize=10)
    right.grid(alpha=0.3, axis="y")
    tidy(fig, bottom=0.75, left=0.95, outline_labels=True)
    plt.show()
