"""Specification of the notebooks' figures: every view draws a complete, labelled figure and shows it.

ipywidgets only puts a figure into a widget's output when the callback calls plt.show(),
so every ``*_view`` must end with it; and every plot needs a title and labelled axes.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from views import views

from kquant import viz

VIEWS = {v.name: v for v in views()}


@pytest.mark.parametrize("name", list(VIEWS))
def test_every_view_draws_a_titled_labelled_figure_and_shows_it(name, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(plt.gcf()))
    VIEWS[name].draw(VIEWS[name].values[0])
    assert len(shown) == 1, "a view must end with plt.show() (exactly once)"
    fig = shown[0]
    suptitle = fig._suptitle.get_text() if fig._suptitle else ""
    for ax in fig.axes:
        assert ax.get_title() or ax.get_title(loc="left") or suptitle, f"{name}: an axes without a title"
        assert ax.get_xlabel(), f"{name}: an axes without an x label"
        assert ax.get_ylabel() or not ax.get_yticks().size, f"{name}: an axes with y ticks but no y label"
    plt.close("all")


@pytest.mark.parametrize("name", list(VIEWS))
def test_every_view_fits_its_figure_without_a_tight_crop(name, monkeypatch):
    """The notebooks render without bbox_inches="tight" (viz.setup()): the margins must hold every label."""
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(plt.gcf()))
    viz.setup()
    VIEWS[name].draw(VIEWS[name].values[-1])  # the last value: the other end of the slider from the test above
    fig = shown[0]
    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches: everything drawn, labels and legends included
    width, height = fig.get_size_inches()
    slack = 0.03  # inches: antialiasing at the edge
    cut = {"left": -box.x0, "right": box.x1 - width, "bottom": -box.y0, "top": box.y1 - height}
    assert max(cut.values()) < slack, f"{name}: drawn outside the figure by {cut} (inches)"
    plt.close("all")


def test_the_q4_k_bit_drawing_accounts_for_all_96_bits_exactly_once():
    owners = viz.kquants.scale_bit_owners()
    assert owners.shape == (12, 8) and all(o is not None for o in owners.ravel())
    assert len({o for o in owners.ravel()}) == 96  # 2 fields x 8 sub-blocks x 6 bits
