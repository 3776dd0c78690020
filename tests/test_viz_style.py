"""Specification of kquant.viz.style's fast stand-ins: each draws what the matplotlib call it replaces draws.

The views use them because a widget redraws its whole figure on every slider move (benchmarks/widgets.py
times that); these tests hold them to the same picture, limits and counts as the slow originals.
"""

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from kquant.viz import numbers, style


def _ink(fig) -> np.ndarray:
    """Bounding box (rows, columns) of the pixels that are not white."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    img = np.asarray(Image.open(buf).convert("L"))
    rows, cols = np.nonzero(img < 250)
    return np.array([rows.min(), rows.max(), cols.min(), cols.max()])


def _bare_axes():
    fig = plt.figure(figsize=(2, 1), dpi=80)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return fig, ax


@pytest.mark.parametrize("text", ["13", "ac", "ff", "0", "Q4_K", "byte  4 = 0xbf"])
@pytest.mark.parametrize("ha", ["center", "left"])
@pytest.mark.parametrize("va", ["center", "top"])
def test_labels_put_the_glyphs_where_ax_text_puts_them(text, ha, va):
    with matplotlib.rc_context(style.RC):
        boxes = []
        for draw in (
            lambda ax: ax.text(0.5, 0.5, text, ha=ha, va=va, fontsize=9, family="monospace"),
            lambda ax: style.labels(ax, [0.5], [0.5], [text], fontsize=9, family="monospace", ha=ha, va=va),
        ):
            fig, ax = _bare_axes()
            draw(ax)
            boxes.append(_ink(fig))
            plt.close(fig)
    assert np.abs(boxes[0] - boxes[1]).max() <= 1, f"text box {boxes[0]}, labels box {boxes[1]} (pixels)"


def test_labels_are_one_artist_for_any_number_of_labels():
    fig, ax = _bare_axes()
    before = len(ax.get_children())
    style.labels(ax, np.arange(96) / 96, 0.5, ["0", "1"] * 48, fontsize=9)
    assert len(ax.get_children()) == before + 1
    plt.close(fig)


def test_stairs_draws_and_autoscales_as_ax_stairs():
    counts, edges = np.array([3.0, 0.0, 7.0, 1.0]), np.array([-1.0, 0.0, 0.5, 2.0, 4.0])
    fig, (a, b) = plt.subplots(1, 2)
    ours = style.stairs(a, counts, edges, fill=True, color="C1", alpha=0.5, label="x")
    theirs = b.stairs(counts, edges, fill=True, color="C1", alpha=0.5, label="x")
    np.testing.assert_array_equal(ours.get_path().vertices, theirs.get_path().vertices)
    assert a.get_xlim() == b.get_xlim() and a.get_ylim() == b.get_ylim()
    assert (ours.get_facecolor(), ours.get_linewidth()) == (theirs.get_facecolor(), theirs.get_linewidth())
    a.set_yscale("log")  # and minpos for a log axis: the smallest positive vertex, as ax.stairs leaves it
    b.set_yscale("log")
    assert a.get_ylim() == b.get_ylim()
    plt.close(fig)


def test_bars_are_ax_bars_rectangles_with_its_limits():
    x, h = np.arange(10), np.array([3, -1, 2, 5, 0, 1, 2, 3, 4, -2.0])
    for heights in (h, np.abs(h)):  # the base at 0 is sticky, as ax.bar's
        fig, (a, b) = plt.subplots(1, 2)
        container = a.bar(x, heights, width=0.6)
        ours = style.bars(b, x, heights, width=0.6, color="C0")
        for rect, path in zip(container, ours.get_paths()):
            np.testing.assert_allclose(path.get_extents().get_points(), np.sort(rect.get_bbox().get_points(), axis=0))
        assert a.get_xlim() == b.get_xlim() and a.get_ylim() == b.get_ylim()
        plt.close(fig)


def _png(fig) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return np.asarray(Image.open(buf))


@pytest.mark.parametrize("autolim", [True, False])
def test_rects_are_a_patch_collection_of_rectangles_drawn_the_same(autolim):
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    x, y = np.array([0.0, 1.5, 3.0, -1.0]), np.array([0.0, -1.0, 2.0, 0.5])
    w, h = np.array([1.0, 0.25, 2.0, 0.5]), 0.75  # one height for all, broadcast as the file map passes it
    colors = ["C0", "C1", "C2", "C3"]
    pictures, limits = [], []
    for ours in (True, False):
        fig, ax = plt.subplots(figsize=(3, 2), dpi=80)
        if ours:
            drawn = style.rects(ax, x, y, w, h, facecolors=colors, edgecolors="white", linewidths=0.3, autolim=autolim)
        else:
            cells = [Rectangle((a, b), c, h) for a, b, c in zip(x, y, w)]
            drawn = PatchCollection(cells, facecolors=colors, edgecolors="white", linewidths=0.3)
            ax.add_collection(drawn, autolim=autolim)
        limits.append((ax.get_xlim(), ax.get_ylim()))
        pictures.append([p.vertices[:4] for p in drawn.get_paths()])
        pictures.append(_png(fig))
    np.testing.assert_array_equal(pictures[0], pictures[2])  # the same corners, in the same order
    np.testing.assert_array_equal(pictures[1], pictures[3])  # the same pixels
    assert limits[0] == limits[1]


def _label_ink(xlabel: str, ylabel: str, fontsize: float, ticks: bool, ours: bool) -> np.ndarray:
    """Ink boxes (rows, columns) of an axes' x and y labels: the pixels that differ from the same axes unlabelled."""
    with matplotlib.rc_context(style.RC):
        images = []
        for xl, yl in ((xlabel, ylabel), ("", "")):
            fig, ax = plt.subplots(figsize=(4, 3))
            if not ticks:
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_xlabel(xl)
            ax.set_ylabel(yl, fontsize=fontsize)
            if ours:
                style.axis_labels(ax)
            images.append(_png(fig).astype(int))
        ink = np.abs(images[0] - images[1]).max(axis=-1) > 0
        boxes = []
        for part in (ink[-60:, :], ink[:, :60]):  # the x label below the axes, the y label left of them
            rows, cols = np.nonzero(part)
            boxes.append([rows.min(), rows.max(), cols.min(), cols.max()])
        return np.array(boxes)


@pytest.mark.parametrize(
    "xlabel, ylabel, fontsize, ticks",
    [
        ("byte offset within the row (hex values shown)", "record row starts\nat file byte", 8, False),
        ("position in the file (MB)", "file", 10, True),
        ("x", "row starts at byte", 7, False),
        ("two\nlines below", "a much longer first line\nshort", 9, True),
    ],
)
def test_axis_labels_put_the_glyphs_where_the_axes_put_their_labels(xlabel, ylabel, fontsize, ticks):
    theirs = _label_ink(xlabel, ylabel, fontsize, ticks, ours=False)
    ours = _label_ink(xlabel, ylabel, fontsize, ticks, ours=True)
    assert np.abs(theirs - ours).max() <= 1, f"axes' labels at {theirs.tolist()}, axis_labels' at {ours.tolist()}"


def test_axis_labels_follow_a_label_set_afterwards_and_keep_it_readable():
    fig, ax = plt.subplots()
    ax.set_xlabel("before")
    style.axis_labels(ax)
    style.axis_labels(ax)  # twice: still one outline per label
    ax.set_ylabel("after", fontsize=7)
    fig.canvas.draw()
    drawn = [c for c in ax.collections if c.get_paths()]
    assert len(drawn) == 2 and ax.get_xlabel() == "before" and ax.get_ylabel() == "after"
    heights = sorted(c.get_window_extent().height for c in drawn)  # the turned y label: its width on screen
    assert heights[0] < heights[1]  # "before" lies flat; "after" stands, longer than a line is high
    plt.close(fig)


def test_axis_labels_refuse_a_label_turned_without_anchor():
    from kquant.errors import KQuantError

    fig, ax = plt.subplots()
    ax.set_xlabel("slanted", rotation=30)
    style.axis_labels(ax)
    with pytest.raises(KQuantError, match="rotation_mode"):
        fig.canvas.draw()
    plt.close(fig)


def test_the_log2_error_histogram_counts_as_np_histogram_does_on_and_beside_every_edge():
    edges = numbers._ERR_BINS
    rng = np.random.default_rng(0)
    a = np.concatenate(
        [
            2.0 ** rng.uniform(-24, 0, 20_000),
            edges,
            np.nextafter(edges, 0)[1:],
            np.nextafter(edges, 2)[:-1],
        ]
    )
    np.testing.assert_array_equal(numbers._log2_histogram(a), np.histogram(a, edges)[0])


def test_by_content_recomputes_when_an_array_changes_in_place_and_hands_out_read_only_results():
    calls = []

    @style.by_content
    def double(x, k):
        calls.append(k)
        return x * 2

    x = np.arange(5.0)
    first = double(x, 1)
    assert double(x.copy(), 1) is first and calls == [1]  # same content: computed once
    x[0] = 10.0
    assert double(x, 1)[0] == 20.0 and calls == [1, 1]  # changed in place: a new key
    double(x, 2)
    assert calls == [1, 1, 2]
    with pytest.raises(ValueError):
        first[0] = 1.0


def _legend_axes():
    """Axes with the handles the views label: line with marker, dashes, marker only, filled step outline,
    a span, bars and vertical lines; the data fill the upper right, so "best" is elsewhere."""
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=80)
    x = np.linspace(0.5, 1, 20)
    ax.plot(x, x, "o-", color="0.4", label="|stored − π|")
    ax.plot(x, x**2, "--", color="C0", label="half a step")
    ax.plot([0.9], [0.8], "*", color="C3", ms=14, label="winner")
    style.stairs(ax, np.array([0.6, 0.9]), np.array([0.6, 0.8, 1.0]), fill=True, color="C3", alpha=0.8, label="hist")
    ax.axvspan(0.7, 0.8, color="C3", alpha=0.2, label="rounds to 0")
    style.bars(ax, [0.85, 0.95], [0.7, 0.9], width=0.05, color="C0", label="Δw per unit error")
    ax.vlines([0.75], 0.5, 1, color="C2", label="vlines")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return fig, ax


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loc": "upper left"},
        {"loc": "lower right", "fontsize": 7},
        {"loc": "best"},
        {"loc": "upper left", "bbox_to_anchor": (1.01, 1), "title": "data type"},
    ],
)
def test_legend_is_ax_legend_in_one_artist(kwargs):
    with matplotlib.rc_context(style.RC):
        boxes, entries = [], []
        for ours in (False, True):
            fig, ax = _legend_axes()
            before = len(ax.get_children())
            drawn = style.legend(ax, **kwargs) if ours else ax.legend(**{"fontsize": 8, **kwargs})
            fig.canvas.draw()
            boxes.append(drawn.get_window_extent(fig.canvas.get_renderer()).get_points())
            entries.append(drawn.texts if ours else [t.get_text() for t in drawn.get_texts()])
            if ours:
                assert len(ax.get_children()) == before + 1
            plt.close(fig)
    assert entries[0] == entries[1]  # the same labels in the same order
    # The same box in the same place, to within a pixel or two of text measurement.
    assert np.abs(boxes[0] - boxes[1]).max() <= 2.5, f"ax.legend {boxes[0].round(1)}, legend {boxes[1].round(1)}"


def test_legend_names_a_place_it_does_not_know():
    from kquant.errors import KQuantError

    fig, ax = _legend_axes()
    with pytest.raises(KQuantError, match="loc"):
        style.legend(ax, loc="top")
    plt.close(fig)


@pytest.mark.parametrize("text", ["SQNR 33.1 dB, 3% of weights stored as 0", "group 0: 64 levels (grey),\nstep 0.0012"])
@pytest.mark.parametrize("kwargs", [{"fontsize": 10}, {}, {"fontsize": 9, "loc": "left"}])
def test_title_puts_the_glyphs_where_set_title_puts_them(text, kwargs):
    with matplotlib.rc_context(style.RC):
        boxes, extents = [], []
        for ours in (False, True):
            fig = plt.figure(figsize=(5, 2), dpi=80)
            ax = fig.add_axes((0.05, 0.1, 0.9, 0.5))
            ax.set_axis_off()
            drawn = style.title(ax, text, **kwargs) if ours else ax.set_title(text, **kwargs)
            boxes.append(_ink(fig))
            extents.append(drawn.get_window_extent(fig.canvas.get_renderer()).get_points())
            assert ax.get_title(loc=kwargs.get("loc", "center")) == text  # the title is still the axes' title
            plt.close(fig)
    assert np.abs(boxes[0] - boxes[1]).max() <= 1, f"set_title ink {boxes[0]}, title ink {boxes[1]} (pixels)"
    assert np.abs(extents[0] - extents[1]).max() <= 1.5, f"set_title box {extents[0]}, title box {extents[1]}"


@pytest.mark.parametrize(
    "text", ["column c = 40 rounded: where its error goes", "0x3f", "π → ŵ, Δw_j", " x ", "-", "g_j"]
)
def test_label_outlines_are_textpaths_measured_as_matplotlib_measures_them(text):
    """Glyphs loaded once and joined by numpy give TextPath's own vertices and codes, text after text,
    and the width, height and descent TextToPath measures (spaces and a glyph above the baseline too)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath, text_to_path

    for size in (7.0, 10.0):
        prop = FontProperties(family="sans-serif", size=size)
        (ours, measured), theirs = style._outline(text, prop, size), TextPath((0, 0), text, size=size, prop=prop)
        np.testing.assert_allclose(ours.vertices, theirs.vertices, atol=1e-9)
        np.testing.assert_array_equal(ours.codes, theirs.codes)
        expected = text_to_path.get_text_width_height_descent(text, prop, ismath=False)
        np.testing.assert_allclose(measured, expected, atol=0.02)  # points; FreeType rounds to 1/64 px


def test_label_outlines_take_the_public_route_on_a_matplotlib_without_ft2font_layout(monkeypatch):
    """style._outline uses matplotlib >= 3.10's FT2Font._layout; an older matplotlib (Colab's may be)
    must still draw every label, legend, title and axis label, through TextPath, and measure them the same."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath, text_to_path

    assert style._FAST_OUTLINE  # this environment's matplotlib has it: the other tests check that route
    monkeypatch.setattr(style, "_FAST_OUTLINE", False)
    prop = FontProperties(family="sans-serif", size=9.0)
    ours, measured = style._outline("byte 4 = 0xbf", prop, 9.0)
    theirs = TextPath((0, 0), "byte 4 = 0xbf", size=9.0, prop=prop)
    np.testing.assert_allclose(ours.vertices, theirs.vertices, atol=1e-9)
    np.testing.assert_allclose(measured, text_to_path.get_text_width_height_descent("byte 4 = 0xbf", prop, False))
    fig, ax = plt.subplots()
    ax.plot([0, 1], label="a line")
    style.legend(ax, loc="upper left")
    style.title(ax, "drawn through TextPath")
    ax.set_ylabel("axis label\nthrough TextPath")
    style.axis_labels(ax)
    fig.canvas.draw()
    plt.close(fig)


@pytest.mark.parametrize("which", ["vlines", "hlines"])
def test_vlines_and_hlines_are_ax_lines_with_their_limits(which):
    at, lo, hi = np.array([0.5, 2.0, -1.0]), np.array([0.0, -3.0, 1.0]), 4.0
    fig, (a, b) = plt.subplots(1, 2)
    ours = getattr(style, which)(a, at, lo, hi, color="C1", lw=0.5, zorder=0)
    theirs = getattr(b, which)(at, lo, hi, color="C1", lw=0.5, zorder=0)
    for p, q in zip(ours.get_segments(), theirs.get_segments()):
        np.testing.assert_array_equal(p, q)
    assert a.get_xlim() == b.get_xlim() and a.get_ylim() == b.get_ylim()
    assert (ours.get_color().tolist(), ours.get_linewidth().tolist(), ours.get_zorder()) == (
        theirs.get_color().tolist(),
        theirs.get_linewidth().tolist(),
        theirs.get_zorder(),
    )
    plt.close(fig)


def test_the_error_histogram_draws_np_histograms_counts_and_counts_the_exact_ones_apart():
    rng = np.random.default_rng(1)
    err = rng.standard_normal(20000) * 10.0 ** rng.uniform(-9, 0.5, 20000)
    err[rng.integers(0, err.size, 300)] = 0.0
    err[:4] = [2.0**-24, 1.0, 3.0, -1e-9]  # the bottom edge, the top edge, above the top, below the bottom
    fig, ax = plt.subplots()
    numbers._abs_error_histogram(ax, err, 0.01)
    a = np.abs(err)
    kept = a >= numbers._ERR_BINS[0]
    expected = np.histogram(np.minimum(a[kept], numbers._ERR_BINS[-1]), bins=numbers._ERR_BINS)[0]
    drawn = next(p for p in ax.patches if isinstance(p, matplotlib.patches.StepPatch))
    np.testing.assert_array_equal(drawn.get_data().values, expected)
    assert drawn.get_label() == f"{np.count_nonzero(~kept):,} stored exactly: not drawn"
    plt.close(fig)
