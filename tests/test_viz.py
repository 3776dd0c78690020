"""Specification of the notebooks' figures: every view draws a complete, labelled figure and shows it.

ipywidgets only puts a figure into a widget's output when the callback calls plt.show(),
so every ``*_view`` must end with it; and every plot needs a title and labelled axes.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from kquant import gguf_anatomy, hub, linear, metrics, samples, viz
from kquant.formats import q4_k

W = samples.example_weights().weights
GAINS = np.linspace(1, 20, 5)
CURVE = [metrics.sqnr_db(w[o], linear.fake_quantize(w, 8)[o]) for w, o in (linear.scale_largest(W, g) for g in GAINS)]
X = W[0, :256]
F = q4_k.encode(X[None, :])
BUNDLED = hub.bundled().read_bytes()

CALLS = {
    "levels_view": lambda: viz.levels_view(3, 0.3),
    "pi_grid_view": lambda: viz.pi_grid_view(5),
    "float_fields_view": lambda: viz.float_fields_view(0.1),
    "error_vs_bits": lambda: viz.error_vs_bits([1, 2, 3], [6.0, 12.0, 18.1], [6.0, 12.0, 18.0], 6.0),
    "weight_histogram": lambda: viz.weight_histogram(W, "weights"),
    "quant_error_view": lambda: viz.quant_error_view(W, 4, "zero point"),
    "quant_error_view (blocks)": lambda: viz.quant_error_view(W, 4, "absmax", 32),
    "outlier_view": lambda: viz.outlier_view(W, 5.0, GAINS, CURVE, 8),
    "tradeoff_plot": lambda: viz.tradeoff_plot({"a": [(4.5, 17.0, "32")], "b": [(5, 7.0, "5 bits")]}, "trade-off"),
    "block_view": lambda: viz.block_view(W, 64, 4),
    "error_along_row": lambda: viz.error_along_row({"x": np.ones(64), "y": np.full(64, 0.1)}, 3, "row"),
    "block_bytes": lambda: viz.block_bytes(np.arange(18, dtype=np.uint8), [("d", 0, 2), ("qs", 2, 18)], "bytes"),
    "scale_search_view": lambda: viz.scale_search_view(X, 5),
    "scale_bits_view": lambda: viz.scale_bits_view(F.sc[0], F.m[0], 6),
    "gguf_map_view": lambda: viz.gguf_map_view(
        {"bundled": (BUNDLED, gguf_anatomy.read_layout(BUNDLED))}, "blk.0.attn_q.weight"
    ),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_every_view_draws_a_titled_labelled_figure_and_shows_it(name, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(plt.gcf()))
    CALLS[name]()
    assert len(shown) == 1, "a view must end with plt.show() (exactly once)"
    fig = shown[0]
    suptitle = fig._suptitle.get_text() if fig._suptitle else ""
    for ax in fig.axes:
        assert ax.get_title() or ax.get_title(loc="left") or suptitle, f"{name}: an axes without a title"
        assert ax.get_xlabel(), f"{name}: an axes without an x label"
        assert ax.get_ylabel() or not ax.get_yticks().size, f"{name}: an axes with y ticks but no y label"
    plt.close("all")


def test_the_q4_k_bit_drawing_accounts_for_all_96_bits_exactly_once():
    owners = viz._scale_bit_owners()
    assert owners.shape == (12, 8) and all(o is not None for o in owners.ravel())
    assert len({o for o in owners.ravel()}) == 96  # 2 fields x 8 sub-blocks x 6 bits
