"""What every figure of the workbook shares: colours, spacing, fast histograms, byte grids.

Drawing only; each notebook group's views are in kquant.viz.numbers, .kquants, .files, .models.
A widget redraws its whole figure on every slider move, so the views draw with one-artist
stand-ins for matplotlib calls that make an artist per item or lay text out on every draw (``labels``
for many short texts, ``legend``, ``title``, ``axis_labels``, ``bars``, ``rects``, ``stairs``,
``vlines``/``hlines``), and keep slider-independent work out of the redraw (``by_content``).
benchmarks/widgets.py times every view against an empty figure.
"""

from __future__ import annotations

import collections
import functools
import hashlib

import matplotlib
import numpy as np
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Rectangle, StepPatch
from matplotlib.textpath import text_to_path
from matplotlib.ticker import AutoLocator, FuncFormatter, LogFormatterSciNotation, LogLocator, MaxNLocator, NullLocator
from matplotlib.transforms import Affine2D, IdentityTransform, ScaledTranslation

SIGN, EXPONENT, MANTISSA = "#d62728", "#1f77b4", "#2ca02c"


FIELD_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


TYPE_COLORS = {
    "F32": "#d9d9d9",
    "F16": "#bdbdbd",
    "Q2_K": "#fde0dd",
    "Q3_K": "#fa9fb5",
    "Q4_0": "#c6dbef",
    "Q4_1": "#9ecae1",
    "Q4_K": "#6baed6",
    "Q5_0": "#c7e9c0",
    "Q5_1": "#a1d99b",
    "Q5_K": "#41ab5d",
    "Q6_K": "#fd8d3c",
    "Q8_0": "#d62728",
    "IQ4_NL": "#bcbddc",
}


# How the notebooks render figures. Jupyter's inline backend defaults to bbox_inches="tight", which lays
# every figure out twice (once to find the crop, once to draw); tidy() sizes the margins so no crop is
# needed. 80 dpi: a 11-inch figure is 880 px, about the width of a notebook's output area (more pixels
# would be scaled down by the browser, and each costs encoding time). PNG compression level 3, not
# PIL's default 6: the same pixels (PNG is lossless), files within a few % of the size, and a
# third less encoding time on every redraw of a widget (about 3 ms of a typical figure's ~70).
PRINT_FIGURE_KWARGS = {"bbox_inches": None, "pil_kwargs": {"compress_level": 3}}
# axes.titley fixed: with the default (None) every draw measures the tick labels to move each
# title clear of labels on top, which no view has. text.hinting "no_hinting": FreeType draws each
# glyph from its outline as is, without fitting it to the pixel grid first; a third less time per
# glyph, and text is much of a figure's drawing time (titles, tick labels, legends). At 80 dpi the
# unhinted glyphs are as legible (the small ones less smeared) and a little narrower.
RC = {"figure.dpi": 80, "savefig.dpi": "figure", "axes.titley": 1.0, "text.hinting": "no_hinting"}


def setup() -> None:
    """Render figures with one layout pass and a faster PNG encoder (every notebook's import cell calls this)."""
    import matplotlib

    matplotlib.rcParams.update(RC)
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: nothing to configure
        return
    shell = get_ipython()
    if shell is not None:  # a notebook's kernel (or IPython): its inline backend renders with these
        shell.run_line_magic("config", f"InlineBackend.print_figure_kwargs = {PRINT_FIGURE_KWARGS!r}")


def _content_key(arg):
    """An argument as a cache key: an array by its dtype, shape and a hash of its bytes (so an array
    changed in place is a new key), anything else as itself (it must be hashable)."""
    if isinstance(arg, np.ndarray):
        data = np.ascontiguousarray(arg)
        return ("ndarray", data.dtype.str, data.shape, hashlib.blake2b(data.view(np.uint8), digest_size=16).digest())
    return arg


def _read_only(value):
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, tuple):
        for v in value:
            _read_only(v)
    elif isinstance(value, dict):
        for v in value.values():
            _read_only(v)
    return value


def by_content(fn, maxsize: int = 8):
    """``fn`` remembering its last ``maxsize`` results, keyed by the content of its arguments.

    A widget redraws its whole figure on every slider move, but part of a view's work depends on the
    data only (a factorisation, a quantization at fixed settings): computed once per content, not
    once per redraw. Hashing costs about 1 ms per MB of array, so this pays only for work slower
    than that (a histogram of 200k weights is not). Cached arrays are returned read-only, so no
    caller can change them."""
    cache: collections.OrderedDict = collections.OrderedDict()

    @functools.wraps(fn)
    def cached(*args):
        key = tuple(_content_key(a) for a in args)
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = _read_only(fn(*args))
        cache[key] = value
        if len(cache) > maxsize:
            cache.popitem(last=False)
        return value

    return cached


def _lines(text: str) -> int:
    return text.count("\n") + 1 if text else 0


def tidy(
    fig,
    wspace: float = 0.3,
    hspace: float = 0.75,
    bottom: float = 0.55,
    right: float = 0.0,
    left: float = 0.0,
    outline_labels: bool = False,
):
    """Space the panels apart and leave margins, in inches, for the labels, titles and outside legends.

    Fixed margins instead of tight_layout or a "tight" crop: either would cost each redraw an extra
    layout pass. The sizes follow what the figure holds (title lines, a suptitle, a legend beside the
    axes); tests/test_viz.py checks that nothing falls outside the figure. ``bottom``: inches below the
    axes (more for rotated tick labels); ``right``: inches kept free on the right (text or a figure
    legend beside the axes); ``left``: at least this many inches on the left (long tick labels);
    ``outline_labels``: every axis label drawn as glyph outlines (``axis_labels``), for a slider's
    view, whose every redraw pays a ms or two per Text label (plain-text labels only).
    Default tick locators become cheaper ones: about 5 ticks on linear axes; on log axes no minor
    ticks and plain labels (each tick is several artists, each mathtext label a parse, every redraw)."""
    w, h = fig.get_size_inches()
    top_axes = [ax for ax in fig.axes if ax.get_subplotspec() and ax.get_subplotspec().is_first_row()]
    title_lines = max((_lines(ax.get_title()) for ax in top_axes), default=0)
    top = 0.12 + 0.2 * title_lines
    if fig._suptitle is not None and fig._suptitle.get_text():
        top += 0.1 + 0.22 * _lines(fig._suptitle.get_text())
    ylabel_lines = max((_lines(ax.get_ylabel()) for ax in fig.axes), default=1)
    left = max(left, 0.65 + 0.18 * ylabel_lines)
    right = max(0.3, right)
    renderer = None
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if type(axis.get_major_locator()) is AutoLocator:  # 5 ticks, not ~9: each tick label costs a text layout
                axis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
            if axis.get_scale() == "log":  # as log_y: a tick object per minor tick, mathtext labels, are slow
                if type(axis.get_minor_locator()) is LogLocator:
                    axis.set_minor_locator(NullLocator())
                if type(axis.get_major_formatter()) is LogFormatterSciNotation:
                    axis.set_major_formatter(_plain_log())
        legend = ax.get_legend()
        if legend is not None and legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1:
            renderer = renderer or fig.canvas.get_renderer()
            right = max(right, 0.3 + legend.get_window_extent(renderer).width / fig.dpi)
        for drawn in ax.collections:  # legends drawn by legend(): their size is known in points
            if isinstance(drawn, _Legend) and drawn.anchor_box[0][0] >= 1:  # anchored beside the axes
                right = max(right, 0.3 + drawn.size[0] / 72)
    fig.subplots_adjust(
        left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, wspace=wspace, hspace=hspace
    )
    if outline_labels:
        for ax in fig.axes:
            if ax.get_xlabel() or ax.get_ylabel():
                axis_labels(ax)


def _plain_log() -> FuncFormatter:
    """Log-axis tick labels as plain numbers (0.01, 1, 1e-05), not mathtext powers of ten: parsing those is slow."""
    return FuncFormatter(lambda v, _: f"{v:.0e}" if v < 1e-3 or v >= 1e5 else f"{v:g}")


def log_y(ax):
    """Log y axis with few, plainly labelled ticks: mathtext tick labels make redraws slow."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(numticks=6))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(_plain_log())


def stairs(ax, values, edges, *, color, fill=False, baseline=0, **kwargs):
    """``ax.stairs(values, edges, ...)``: the same outline, drawn the same, added faster.

    ``ax.stairs`` finds the new data limits by walking the outline segment by segment in Python,
    several ms for a 200-bin histogram on every redraw; the outline is straight lines, so the box
    around its vertices is the same limits, computed at once."""
    if fill:
        kwargs.setdefault("linewidth", 0)
        kwargs.setdefault("facecolor", color)
    else:
        kwargs.setdefault("edgecolor", color)
    patch = StepPatch(values, edges, baseline=baseline, fill=fill, **kwargs)
    ax.add_artist(patch)
    ax.update_datalim(patch.get_path().vertices)
    if baseline is not None:  # as ax.stairs: autoscaling adds no margin below the baseline
        patch.sticky_edges.y.append(np.min(baseline))
    ax.autoscale_view()
    return patch


def bars(ax, x, height, *, width=0.8, color, label=None, **kwargs):
    """``ax.bar(x, height, width, color=color, label=label)`` as one collection of the same rectangles.

    ax.bar makes a Rectangle artist per bar, and adding and drawing each costs a redraw time; one
    collection is one artist. Colours may be one or one per bar (``edgecolor``, ``linewidth`` too)."""
    x, height = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(height, dtype=float))
    x0 = x - width / 2
    x1 = x0 + width  # as a Rectangle at x0 of this width ends: the same floats as ax.bar
    zero = np.zeros_like(height)
    verts = np.stack([np.column_stack(c) for c in [(x0, zero), (x0, height), (x1, height), (x1, zero)]], axis=1)
    kwargs.setdefault("edgecolor", "none")
    collection = PolyCollection(verts, facecolors=color, label=label, **kwargs)
    collection.sticky_edges.y.append(0)  # as ax.bar: no margin below the bars' base
    ax.add_collection(collection)
    return collection


def rects(ax, x, y, width, height, *, autolim: bool = True, **kwargs) -> PolyCollection:
    """``PatchCollection([Rectangle((x, y), width, height), ...], **kwargs)`` added to ``ax``: the same
    rectangles (corners (x, y) and (x + width, y + height), data coordinates) as one collection, without
    a Rectangle per cell.

    A PatchCollection asks each Rectangle for its transformed path one by one in Python, a ms per
    hundred cells on every redraw (a file map has a cell per tensor); these corners are computed at
    once. ``autolim``: as ax.add_collection's (False where the caller sets the limits anyway)."""
    x, y, width, height = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x, y, width, height)))
    x0, y0 = x.ravel(), y.ravel()
    x1, y1 = x0 + width.ravel(), y0 + height.ravel()  # as a Rectangle's corner: the same floats
    verts = np.stack([np.column_stack(c) for c in [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]], axis=1)
    collection = PolyCollection(verts, **kwargs)
    ax.add_collection(collection, autolim=autolim)
    return collection


def _segments(ax, a, lo, hi, vertical: bool, kwargs) -> LineCollection:
    a, lo, hi = np.broadcast_arrays(
        np.asarray(a, dtype=float), np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    )
    ends = [np.column_stack([a, lo]), np.column_stack([a, hi])]
    if not vertical:
        ends = [e[:, ::-1] for e in ends]
    collection = LineCollection(np.stack(ends, axis=1), **kwargs)
    ax.add_collection(collection, autolim=False)
    if a.size:  # as ax.vlines/hlines: the corners of the lines' box into the data limits
        points = np.concatenate(ends)
        ax.update_datalim([np.nanmin(points, axis=0), np.nanmax(points, axis=0)])
        ax._request_autoscale_view()
    return collection


def vlines(ax, x, ymin, ymax, **kwargs) -> LineCollection:
    """``ax.vlines(x, ymin, ymax, **kwargs)`` in data coordinates: the same lines and limits, added without
    its masked-array handling (a ms or two on every redraw)."""
    return _segments(ax, x, ymin, ymax, True, kwargs)


def hlines(ax, y, xmin, xmax, **kwargs) -> LineCollection:
    """``ax.hlines(y, xmin, xmax, **kwargs)`` in data coordinates, as ``vlines``."""
    return _segments(ax, y, xmin, xmax, False, kwargs)


def hist(ax, values, bins, color, alpha=0.8, label=None, log=True):
    """A histogram drawn as one filled outline: many times faster to render than ax.hist's bars."""
    counts, edges = np.histogram(np.asarray(values).ravel(), bins=bins)
    stairs(ax, counts, edges, fill=True, color=color, alpha=alpha, label=label)
    if log:
        log_y(ax)
        ax.set_ylim(0.8, None)


@functools.lru_cache(maxsize=4096)
def _label_path(text: str, fontsize: float, family: str, weight: str, ha: str, va: str):
    """``text``'s outline in points, placed as ax.text(..., ha=ha, va=va) places it about its anchor
    (one line of text; ``va="baseline"`` puts the baseline on the anchor)."""
    path, (w, h, d) = _measured_outline(text, fontsize, family, weight)
    lp_h, lp_d = _lp_extent(fontsize, family, weight)
    h, d = max(h, lp_h), max(d, lp_d)  # a line's box, as Text lays out one: same baseline for "ac" and "13"
    dx = {"left": 0.0, "center": -w / 2, "right": -w}[ha]
    dy = {"center": d - h / 2, "top": d - h, "baseline": 0.0}[va]
    return path.transformed(Affine2D().translate(dx, dy))


@functools.lru_cache(maxsize=4096)
def _measured_outline(text: str, fontsize: float, family: str, weight: str):
    """``_outline`` of ``text`` in this font, once per text: labels and legends ask again on every redraw."""
    return _outline(text, FontProperties(family=family, weight=weight, size=fontsize), fontsize)


_GLYPHS: dict = {}  # glyph outlines at TextToPath.FONT_SCALE, by font file and glyph: loaded once for every label


def _outline(text: str, prop, fontsize: float):
    """``TextPath((0, 0), text, size=fontsize, prop=prop)``: the same vertices, made faster; and the
    string's (width, height, descent) in points, as TextToPath.get_text_width_height_descent measures
    it (FreeType's box: the glyphs' control boxes, and the pen's advance across the string).

    TextPath loads every glyph's outline again for each text and joins them vertex by vertex in Python
    (~3 ms for a title, paid again for each new slider value), and measuring lays the string out once
    more; here the text is laid out once, as TextPath lays it out (matplotlib's shaping,
    ``_text_helpers.layout``), each glyph is loaded once, and the outlines are joined by numpy."""
    from matplotlib.path import Path

    if not _FAST_OUTLINE:
        return _public_outline(text, prop, fontsize)
    from matplotlib.ft2font import LoadFlags

    font = text_to_path._get_font(prop)  # the font at TextToPath's size, as TextPath takes it
    vertices, codes, pen = [], [], 0.0
    for item in font._layout(text, LoadFlags.NO_HINTING):  # what _text_helpers.layout iterates
        key = (item.ft_object.fname, item.glyph_index)
        glyph = _GLYPHS.get(key)
        if glyph is None:
            advance = item.ft_object.load_glyph(item.glyph_index, flags=LoadFlags.NO_HINTING).horiAdvance / 64
            glyph = _GLYPHS[key] = (*item.ft_object.get_path(), advance)
        vertices.append(glyph[0] + (item.x, item.y))
        codes.append(glyph[1])
        pen = item.x + glyph[2]
    scale = fontsize / text_to_path.FONT_SCALE
    if not vertices:
        return Path(np.empty((0, 2))), (pen * scale, 0.0, 0.0)
    path = Path(np.concatenate(vertices) * scale, np.concatenate(codes))
    ink = path.vertices[path.codes != Path.CLOSEPOLY]  # a CLOSEPOLY's vertex is a placeholder, not a point
    if not len(ink):
        return path, (pen * scale, 0.0, 0.0)
    (x0, y0), y1 = ink.min(axis=0), ink[:, 1].max()
    return path, (float(pen * scale - min(x0, 0.0)), float(y1 - y0), float(-y0))  # the advance, not the ink


def _has_ft2font_layout() -> bool:
    """matplotlib >= 3.10 lays text out with FT2Font._layout and has LoadFlags; Colab's may be older."""
    try:
        from matplotlib.ft2font import FT2Font, LoadFlags  # noqa: F401 -- imported to see that it exists
    except ImportError:
        return False
    return hasattr(FT2Font, "_layout")


_FAST_OUTLINE = _has_ft2font_layout()  # else _outline takes the public route


def _public_outline(text: str, prop, fontsize: float):
    """``_outline`` through matplotlib's public TextPath and measure: the same result, ~3x slower."""
    from matplotlib.textpath import TextPath

    return TextPath((0, 0), text, size=fontsize, prop=prop), text_to_path.get_text_width_height_descent(
        text, prop, ismath=False
    )


@functools.lru_cache(maxsize=64)
def _lp_extent(fontsize: float, family: str, weight: str) -> tuple[float, float]:
    """(height, descent) in points of "lp": the least box Text gives a line, the same for every label."""
    prop = FontProperties(family=family, weight=weight, size=fontsize)
    _, h, d = text_to_path.get_text_width_height_descent("lp", prop, ismath=False)
    return h, d


def labels(
    ax,
    x,
    y,
    texts,
    *,
    fontsize: float,
    color="black",
    family="sans-serif",
    weight="normal",
    ha="center",
    va="center",
    transform=None,
):
    """Many short labels at points (x, y) (data coordinates, or ``transform``'s), placed like ``ax.text``'s.

    One artist for all: the glyph outlines of each label, filled. ax.text per label costs about half a
    millisecond of layout and glyph rendering on every redraw, and byte and bit grids have a hundred."""
    paths = [_label_path(str(t), float(fontsize), family, weight, ha, va) for t in texts]
    points_to_pixels = Affine2D().scale(1 / 72) + ax.figure.dpi_scale_trans  # follows the figure's dpi
    collection = PathCollection(
        paths,
        offsets=np.column_stack([np.broadcast_to(x, len(paths)), np.broadcast_to(y, len(paths))]),
        offset_transform=ax.transData if transform is None else transform,
        transform=points_to_pixels,
        facecolors=color,
        edgecolors="none",
        linewidths=0,
        zorder=3,  # above patches and lines, as text is
        clip_on=False,
        in_layout=False,  # inside the axes, as the grid cells they label
    )
    ax.add_collection(collection, autolim=False)
    return collection


def y_labels(ax, y, texts, *, fontsize: float) -> float:
    """Tick labels at data heights ``y`` left of the axes, as one label collection; returns their width in inches.

    A tick and its label per row cost as much to redraw as the rest of a small panel. The axis
    label keeps its place left of these labels, as it would of tick labels.
    """
    texts = [str(t) for t in texts]
    ax.set_yticks([])
    left = ax.get_yaxis_transform() + ScaledTranslation(-3.5 / 72, 0, ax.figure.dpi_scale_trans)  # the tick pad
    labels(ax, 0, y, texts, fontsize=fontsize, ha="right", transform=left)
    widest = max(text_width(t, fontsize) for t in texts)
    ax.yaxis.labelpad = 3.5 + widest * 72 + 4  # points
    return widest


def byte_grid(ax, block: np.ndarray, fields: list, per_row: int, base: int = 0):
    """Bytes as hex values in rows of ``per_row``, each field a colour; row labels count from ``base``."""
    block = np.asarray(block, dtype=np.uint8)
    rows = -(-block.size // per_row)
    index, faces, handles = [], [], []
    for k, (name, start, end) in enumerate(fields):
        color = FIELD_COLORS[k % len(FIELD_COLORS)]
        index.append(np.arange(start, end))
        faces += [to_rgba(color, 0.35)] * (end - start)
        # The legend's swatch only: handed to legend(), not added to the axes, where it would be one more
        # (empty) patch to draw on every redraw.
        handles.append(Rectangle((0, 0), 0, 0, facecolor=color, alpha=0.35, label=f"{name}: bytes {start}–{end - 1}"))
    index = np.concatenate(index) if index else np.zeros(0, dtype=int)
    r, c = np.divmod(index, per_row)
    # One collection of cells and one of hex values, not a patch and a Text per byte: adding and
    # drawing hundreds of artists is most of a redraw.
    rects(ax, c, -r - 1, 1, 1, facecolors=faces, edgecolors="white", autolim=False)
    if index.size:
        labels(ax, c + 0.5, -r - 0.5, [f"{v:02x}" for v in block[index]], fontsize=8, family="monospace")
    ax.set_xlim(0, per_row)
    ax.set_ylim(-rows, 0)
    # Column numbers under the cells where tick labels would be, as one label collection: a tick and
    # its label per column (24 of them) would be most of the grid's drawing time.
    ax.set_xticks([])
    under = ax.get_xaxis_transform() + ScaledTranslation(0, -3.5 / 72, ax.figure.dpi_scale_trans)
    labels(ax, np.arange(per_row) + 0.5, 0, range(per_row), fontsize=7, va="top", transform=under)
    ax.xaxis.labelpad = 16  # points: the axis label goes below those numbers, as below tick labels
    # Row starts left of the rows, one label collection too (a tick and its label per row cost as much).
    y_labels(ax, -np.arange(rows) - 0.5, [str(base + r * per_row) for r in range(rows)], fontsize=7)
    ax.set_xlabel("byte offset within the row (hex values shown)")
    ax.set_ylabel("row starts at byte")
    axis_labels(ax)  # a caller's own set_ylabel later is drawn too: the outlines follow the label's text
    legend(ax, handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))


def weights_on_levels(
    ax, x, y, levels, decoded_label: str, xlabel: str, loc: str = "lower right", bbox_to_anchor=None
) -> None:
    """One group's weights (dots), what they decode to (dashes, joined by their error), and the grid (grey);
    the legend at ``loc`` (of the point ``bbox_to_anchor``, as ``legend``)."""
    idx = np.arange(len(x))
    hlines(ax, levels, -0.5, len(x) - 0.5, color="0.85", lw=0.5, zorder=0)
    vlines(ax, idx, y, x, color=SIGN, lw=1)
    ax.plot(idx, x, "o", color="0.3", ms=4, label="weight")
    ax.plot(idx, y, "_", color=EXPONENT, ms=10, mew=2, label=decoded_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("weight value")
    legend(ax, fontsize=7, loc=loc, bbox_to_anchor=bbox_to_anchor)


# Legend layout, in units of the font size: matplotlib's defaults (rcParams "legend.*"), so a legend drawn
# by ``legend`` has the size and place ax.legend gives it.
_BORDERPAD, _LABELSPACING, _HANDLELENGTH, _HANDLEHEIGHT, _HANDLETEXTPAD, _BORDERAXESPAD = 0.4, 0.5, 2.0, 0.7, 0.8, 0.5
_LOCS = {  # loc -> (horizontal, vertical) side of the anchor box, as ax.legend's loc strings
    "upper right": ("right", "upper"),
    "upper left": ("left", "upper"),
    "lower left": ("left", "lower"),
    "lower right": ("right", "lower"),
    "right": ("right", "center"),
    "center left": ("left", "center"),
    "center right": ("right", "center"),
    "lower center": ("center", "lower"),
    "upper center": ("center", "upper"),
    "center": ("center", "center"),
}


@functools.lru_cache(maxsize=64)
def _line_metrics(fontsize: float, family: str) -> tuple[float, float, float]:
    """(ascent, descent, line gap) in points of one line of text, as Text lays it out: the font's own metrics."""
    from matplotlib.font_manager import findfont, get_font

    font = get_font(findfont(FontProperties(family=family, size=fontsize)))
    os2 = font.get_sfnt_table("OS/2")
    table = os2 or font.get_sfnt_table("hhea")
    ascent, descent = ("sTypoAscender", "sTypoDescender") if "sTypoAscender" in table else ("ascent", "descent")
    scale = fontsize / font.get_sfnt_table("head")["unitsPerEm"]
    return table[ascent] * scale, -table[descent] * scale, (os2["sTypoLineGap"] if os2 else 0) * scale


def _line_extent(fontsize: float, family: str) -> tuple[float, float]:
    """(ascent, descent) in points of one line of text (``_line_metrics`` without the gap)."""
    return _line_metrics(fontsize, family)[:2]


def text_width(text: str, fontsize: float) -> float:
    """The width in inches of a one-line ``text`` in the default font: room to leave for labels a caller names."""
    return _text_extent(str(text), float(fontsize), matplotlib.rcParams["font.family"][0])[0] / 72


@functools.lru_cache(maxsize=4096)
def _text_extent(text: str, fontsize: float, family: str) -> tuple[float, float, float]:
    """(width, ascent, descent) in points of a one-line ``text``, as Text lays it out."""
    _, (w, h, d) = _measured_outline(text, fontsize, family, "normal")
    ascent, descent = _line_extent(fontsize, family)
    return w, max(h - d, ascent), max(d, descent)


def _handle_paths(handle, x0: float, y0: float, width: float, height: float) -> list:
    """What ax.legend's handler draws for ``handle`` in the box (x0, y0, width, height) (points), as
    (path, facecolor, edgecolor, linewidth, linestyle): a line with its marker, or a filled swatch."""
    from matplotlib.collections import Collection, LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.markers import MarkerStyle
    from matplotlib.patches import Patch
    from matplotlib.path import Path

    none = (0.0, 0.0, 0.0, 0.0)
    y = y0 + height / 2
    line = Path([(x0, y), (x0 + width, y)])
    swatch = Path.unit_rectangle().transformed(Affine2D().scale(width, height).translate(x0, y0))
    if isinstance(handle, Line2D):
        out = []
        if handle.get_linestyle() not in ("None", "none", "", " "):
            color = to_rgba(handle.get_color(), handle.get_alpha())
            out.append((line, none, color, handle.get_linewidth(), handle.get_linestyle()))
        marker = MarkerStyle(handle.get_marker(), handle.get_fillstyle())
        if marker.get_marker() not in ("None", "none", "", " ", None):
            size = handle.get_markersize()
            where = marker.get_transform() + Affine2D().scale(size).translate(x0 + width / 2, y)
            face = to_rgba(handle.get_markerfacecolor(), handle.get_alpha()) if marker.is_filled() else none
            edge = to_rgba(handle.get_markeredgecolor(), handle.get_alpha())
            out.append((marker.get_path().transformed(where), face, edge, handle.get_markeredgewidth(), "solid"))
        return out
    if isinstance(handle, StepPatch) and not handle.get_fill():
        return [(line, none, handle.get_edgecolor(), handle.get_linewidth(), handle.get_linestyle())]
    if isinstance(handle, Patch):
        return [(swatch, handle.get_facecolor(), handle.get_edgecolor(), handle.get_linewidth(), "solid")]
    if isinstance(handle, LineCollection):
        color, lw, ls = handle.get_colors()[0], handle.get_linewidths()[0], handle.get_linestyles()[0]
        return [(line, none, color, lw, ls)]
    if isinstance(handle, Collection):
        faces, edges = handle.get_facecolors(), handle.get_edgecolors()
        face, edge = (faces[0] if len(faces) else none), (edges[0] if len(edges) else none)
        return [(swatch, face, edge, handle.get_linewidths()[0], "solid")]
    raise TypeError(f"legend: no swatch for a {type(handle).__name__}; pass a Line2D or a Patch as its handle")


class _Legend(PathCollection):
    """A legend drawn as one collection: frame, handles and label glyphs, laid out in points with the
    legend's lower-left corner at 0, placed at ``loc``'s corner of its anchor box (axes coordinates)."""

    def __init__(self, paths, size, texts, loc, anchor_box, fontsize, **kwargs):
        self._shift = Affine2D()  # points: from the anchor corner to the legend's lower-left corner
        super().__init__(paths, offsets=[(0.0, 0.0)], transform=self._shift, **kwargs)
        self.size, self.texts, self.loc, self.anchor_box, self.fontsize = size, texts, loc, anchor_box, fontsize
        self._place("upper right" if loc == "best" else loc)  # "best" is chosen again when drawn

    def set_figure(self, fig):  # the points-to-pixels scale follows the figure's dpi
        super().set_figure(fig)
        self.set_transform(self._shift + Affine2D().scale(1 / 72) + fig.dpi_scale_trans)

    def _place(self, loc: str):
        """Anchor the legend at ``loc``: that corner (or side's middle) of the anchor box, borderaxespad
        inside it, as matplotlib pads the anchor box inwards (outwards of a point's)."""
        horizontal, vertical = _LOCS[loc]
        (x0, y0), (x1, y1) = self.anchor_box
        width, height = self.size
        gap = _BORDERAXESPAD * self.fontsize
        ax_, dx = {"left": (x0, gap), "right": (x1, -gap - width), "center": ((x0 + x1) / 2, -width / 2)}[horizontal]
        ay_, dy = {"lower": (y0, gap), "upper": (y1, -gap - height), "center": ((y0 + y1) / 2, -height / 2)}[vertical]
        self.anchor, self.offset = (ax_, ay_), (dx, dy)
        self.set_offsets([self.anchor])
        self._shift.clear().translate(dx, dy)

    def _best(self) -> str:
        """ax.legend's loc="best", at draw time: the first place, in matplotlib's order, whose box holds
        the fewest data points and crosses the fewest lines and patches (display coordinates)."""
        from matplotlib.transforms import Bbox

        ax = self.axes
        points, paths, boxes = [], [], []
        for line in ax.lines:
            if line.get_visible():
                path = line.get_transform().transform_path(line.get_path())
                points.append(path.vertices)
                paths.append(path)
        for patch in ax.patches:
            if patch.get_visible():
                boxes.append(patch.get_window_extent().get_points())
        for drawn in ax.collections:
            if drawn is not self and drawn.get_visible() and not isinstance(drawn, _Legend):
                offsets = drawn.get_offsets()
                if len(offsets) > 1:
                    points.append(drawn.get_offset_transform().transform(offsets))
                else:
                    boxes.append(drawn.get_window_extent().get_points())
        points = np.concatenate(points) if points else np.empty((0, 2))
        best, fewest = "upper right", None
        for loc in list(_LOCS)[:4] + list(_LOCS)[5:]:  # matplotlib's order; "right" is "center right"
            self._place(loc)
            box = self.get_window_extent()
            (bx0, by0), (bx1, by1) = box.get_points()
            inside = np.count_nonzero(
                (points[:, 0] >= bx0) & (points[:, 0] <= bx1) & (points[:, 1] >= by0) & (points[:, 1] <= by1)
            )
            crossed = sum(p.intersects_bbox(box, filled=False) for p in paths)
            overlaps = Bbox(np.array([[bx0, by0], [bx1, by1]])).count_overlaps([Bbox(b) for b in boxes])
            badness = inside + crossed + overlaps
            if fewest is None or badness < fewest:
                best, fewest = loc, badness
            if badness == 0:
                break
        return best

    def draw(self, renderer):
        if self.loc == "best":
            self._place(self._best())
        super().draw(renderer)

    def get_window_extent(self, renderer=None):
        """The frame in display coordinates, as Legend.get_window_extent: the layout tests see the legend."""
        from matplotlib.transforms import Bbox

        x, y = self.get_offset_transform().transform(self.anchor)
        scale = self.axes.figure.dpi / 72
        (dx, dy), (w, h) = self.offset, self.size
        return Bbox.from_bounds(x + dx * scale, y + dy * scale, w * scale, h * scale)

    def get_tightbbox(self, renderer=None):
        return self.get_window_extent(renderer)


def legend(ax, handles=None, *, loc: str = "best", fontsize: float = 8, bbox_to_anchor=None, title=None):
    """``ax.legend(handles, loc=loc, fontsize=fontsize, bbox_to_anchor=bbox_to_anchor, title=title)`` as one artist.

    The same entries (``handles``, or the axes' labelled artists, in the same order), the same swatches
    and the same box in the same place, sized by matplotlib's legend defaults; only the labels are glyph
    outlines, as in ``labels``. ax.legend lays out a Text, a handle artist and packing boxes per entry
    on every draw, several ms for a few entries; this is laid out once, in points (the layout depends
    on the font only), and drawn as one collection. ``loc``: one of ax.legend's location names, or
    "best": as ax.legend's, the first place that covers the least data, chosen when drawn.
    ``bbox_to_anchor``: a point (x, y) in axes coordinates whose ``loc`` corner the legend's is."""
    from matplotlib.patches import BoxStyle

    from kquant.errors import KQuantError

    if loc not in _LOCS and loc != "best":
        raise KQuantError(f"legend: loc {loc!r} is not 'best' or one of {', '.join(map(repr, _LOCS))}")
    if handles is None:
        handles, texts = ax.get_legend_handles_labels()
    else:
        texts = [h.get_label() for h in handles]
    fs, family = float(fontsize), "sans-serif"
    extents = [_text_extent(t, fs, family) for t in texts]
    handle_w, handle_h = _HANDLELENGTH * fs, _HANDLEHEIGHT * fs
    entries_w = handle_w + _HANDLETEXTPAD * fs + max((w for w, _, _ in extents), default=0.0)
    rows = [max(a, handle_h) + d for _, a, d in extents]
    title_fs = float(matplotlib.rcParams["font.size"])  # ax.legend's title: legend.title_fontsize None, the default
    title_extent = _text_extent(title, title_fs, family) if title else None
    inner_w = max(entries_w, title_extent[0] if title else 0.0)
    inner_h = sum(rows) + _LABELSPACING * fs * (len(rows) - 1)
    if title:
        inner_h += title_extent[1] + title_extent[2] + _LABELSPACING * fs
    pad = _BORDERPAD * fs
    width, height = inner_w + 2 * pad, inner_h + 2 * pad
    frame = BoxStyle("round", pad=0, rounding_size=0.2)(0, 0, width, height, fs)
    face = to_rgba(ax.get_facecolor(), 0.8)  # legend.facecolor "inherit", legend.framealpha 0.8
    items = [(frame, face, to_rgba("0.8", 0.8), 1.0, "solid")]
    glyphs = []
    top = height - pad  # laid out from the top inner edge down
    if title:  # centred above the entries, as VPacker(align="center") puts it
        tw, ta, td = title_extent
        glyphs.append(
            _label_path(title, title_fs, family, "normal", "left", "baseline").transformed(
                Affine2D().translate(pad + (inner_w - tw) / 2, top - ta)
            )
        )
        top -= ta + td + _LABELSPACING * fs
    x0 = pad + (inner_w - entries_w) / 2
    for handle, text, (_, a, _d), row in zip(handles, texts, extents, rows):
        baseline = top - max(a, handle_h)  # handle box and text share a baseline (HPacker align="baseline")
        items += _handle_paths(handle, x0, baseline, handle_w, handle_h)
        glyphs.append(
            _label_path(text, fs, family, "normal", "left", "baseline").transformed(
                Affine2D().translate(x0 + handle_w + _HANDLETEXTPAD * fs, baseline)
            )
        )
        top -= row + _LABELSPACING * fs
    items += [(g, to_rgba("black"), (0.0, 0.0, 0.0, 0.0), 0.0, "solid") for g in glyphs]
    paths, faces, edges, widths, styles = zip(*items)
    anchor_box = ((0.0, 0.0), (1.0, 1.0)) if bbox_to_anchor is None else (tuple(bbox_to_anchor),) * 2
    collection = _Legend(
        list(paths),
        (width, height),
        list(texts),
        loc,
        anchor_box,
        fs,
        offset_transform=ax.transAxes,
        facecolors=faces,
        edgecolors=edges,
        linewidths=widths,
        linestyles=styles,
        zorder=5,  # as a Legend: above the data
        clip_on=False,
    )
    ax.add_collection(collection, autolim=False)
    return collection


class _Title(PathCollection):
    """A title drawn as the glyph outlines of its lines, in points about its anchor (axes coordinates)."""

    def __init__(self, paths, anchor, extent, **kwargs):
        super().__init__(paths, offsets=[anchor], **kwargs)
        self.anchor, self.extent = anchor, extent  # extent: (x0, y0, x1, y1) in points from the anchor

    def get_window_extent(self, renderer=None):
        from matplotlib.transforms import Bbox

        x, y = self.get_offset_transform().transform(self.anchor)
        scale = self.axes.figure.dpi / 72
        x0, y0, x1, y1 = self.extent
        return Bbox([[x + x0 * scale, y + y0 * scale], [x + x1 * scale, y + y1 * scale]])

    def get_tightbbox(self, renderer=None):
        return self.get_window_extent(renderer)


def title(ax, text: str, *, fontsize=None, loc: str = "center"):
    """``ax.set_title(text, fontsize=fontsize, loc=loc)``, drawn as glyph outlines in one artist.

    The Text keeps the title (``ax.get_title`` and ``tidy`` read it) but is hidden; its lines are drawn
    where it would draw them: above the axes by axes.titlepad, the last line's baseline there and the
    others above it, spaced as Text spaces lines. A long title is a couple of ms of text layout and glyph
    rendering on every redraw; its outline is made once per text and then only filled."""
    text = str(text)
    hidden = ax.set_title(text, loc=loc, **({} if fontsize is None else {"fontsize": fontsize}))  # None: "large"
    hidden.set_visible(False)
    fs = float(hidden.get_fontsize())
    family = hidden.get_fontfamily()[0]
    weight = hidden.get_fontweight()
    lines = text.split("\n")
    # Text adds the font's line gap between lines, half above and half below each
    gap = _line_metrics(fs, family)[2] if len(lines) > 1 else 0.0
    extents = [_text_extent(line, fs, family) for line in lines]
    paths, baseline, top = [], 0.0, None
    for k in range(len(lines) - 1, -1, -1):  # from the last line up
        w, a, d = extents[k]
        if k < len(lines) - 1:
            baseline += extents[k + 1][1] + gap / 2 + d + gap / 2  # this line's descent, the next one's ascent
        paths.append(
            _label_path(lines[k], fs, family, weight, loc, "baseline").transformed(Affine2D().translate(0, baseline))
        )
        top = baseline + a + (gap / 2 if len(lines) > 1 else 0.0)
    pad = float(matplotlib.rcParams["axes.titlepad"])
    width = max(w for w, _, _ in extents)
    x0 = {"left": 0.0, "center": -width / 2, "right": -width}[loc]
    bottom = -(extents[-1][2] + (gap / 2 if len(lines) > 1 else 0.0))
    shift = Affine2D().translate(0, pad)
    collection = _Title(
        [p.transformed(shift) for p in paths],
        ({"left": 0.0, "center": 0.5, "right": 1.0}[loc], 1.0),
        (x0, bottom + pad, x0 + width, top + pad),
        offset_transform=ax.transAxes,
        transform=Affine2D().scale(1 / 72) + ax.figure.dpi_scale_trans,
        facecolors=to_rgba(hidden.get_color()),
        edgecolors="none",
        linewidths=0,
        zorder=3,
        clip_on=False,
    )
    ax.add_collection(collection, autolim=False)
    return collection


@functools.lru_cache(maxsize=256)
def _text_block(text: str, fontsize: float, family: str, weight: str, ha: str, va: str, rotation: float):
    """``text``'s lines as one outline in points about its anchor, laid out as Text._get_layout lays them out
    (rotation_mode "anchor": aligned unrotated, then turned about the anchor), and its box's corners.

    Each line's ascent and descent are at least the font's, plus half the font's line gap when there are
    several lines; the lines are centred, left- or right-aligned in the box as ``ha`` (Text's multialignment)."""
    from matplotlib.path import Path

    ascent, descent, gap = _line_metrics(fontsize, family)
    lines = text.split("\n")
    gap = gap if len(lines) > 1 else 0.0
    outlines, layout, y = [], [], 0.0
    for line in lines:
        path, (w, h, d) = _measured_outline(line, fontsize, family, weight) if line else (None, (0.0, 0.0, 0.0))
        a, d = max(h - d, ascent) + gap / 2, max(d, descent) + gap / 2
        y -= a
        outlines.append(path)
        layout.append((w, y))  # width and baseline, from the box's top (0) down
        y -= d
    width, bottom, last_baseline = max(w for w, _ in layout), y, layout[-1][1]
    dx = {"left": 0.0, "center": width / 2, "right": width}[ha]
    dy = {"bottom": bottom, "top": 0.0, "center": bottom / 2, "baseline": last_baseline}[va]
    turn = Affine2D().rotate_deg(rotation)
    indent = {"left": 0.0, "center": 0.5, "right": 1.0}[ha]  # of the room a line leaves in the box
    pieces = [
        p.transformed(Affine2D().translate(indent * (width - w) - dx, y - dy))
        for p, (w, y) in zip(outlines, layout)
        if p is not None and len(p.vertices)
    ]
    path = Path.make_compound_path(*pieces).transformed(turn) if pieces else Path(np.empty((0, 2)))
    corners = turn.transform([(-dx, bottom - dy), (width - dx, bottom - dy), (width - dx, -dy), (-dx, -dy)])
    return path, (*corners.min(axis=0), *corners.max(axis=0))


class _AxisLabel(PathCollection):
    """An axis's (hidden) label drawn as glyph outlines: its text, font, colour and alignment are read from the
    label when drawn, and the outline put where the axis has just placed the label (axes draw their axes first)."""

    def __init__(self, label, **kwargs):
        super().__init__([], offsets=[(0.0, 0.0)], offset_transform=IdentityTransform(), **kwargs)
        self.label = label

    def _layout(self):
        label = self.label
        rotation = label.get_rotation()
        if rotation and label.get_rotation_mode() != "anchor":
            from kquant.errors import KQuantError

            raise KQuantError("axis_labels: a label turned without rotation_mode='anchor'; leave it to matplotlib")
        return _text_block(
            label.get_text(),
            float(label.get_fontsize()),
            label.get_fontfamily()[0],
            label.get_fontweight(),
            label.get_horizontalalignment(),
            label.get_verticalalignment(),
            float(rotation),
        )

    def _anchor(self):
        return self.label.get_transform().transform(self.label.get_position())

    def draw(self, renderer):
        path, _ = self._layout()
        self.set_paths([path])
        self.set_facecolor(to_rgba(self.label.get_color(), self.label.get_alpha()))
        self.set_offsets([self._anchor()])
        super().draw(renderer)

    def get_window_extent(self, renderer=None):
        from matplotlib.transforms import Bbox

        (x, y), scale = self._anchor(), self.axes.figure.dpi / 72
        x0, y0, x1, y1 = self._layout()[1]
        return Bbox([[x + x0 * scale, y + y0 * scale], [x + x1 * scale, y + y1 * scale]])

    def get_tightbbox(self, renderer=None):
        return self.get_window_extent(renderer)


def axis_labels(ax) -> None:
    """``ax``'s x and y axis labels drawn as glyph outlines, one artist each, where the axes draws them.

    The axes keep their labels (``ax.get_xlabel``, ``set_xlabel`` and ``tidy`` work as before) and place them
    as always, from the tick labels and ``labelpad``; only the Text is hidden and its glyphs filled instead.
    An axis label is a couple of ms of text layout and glyph rendering on every redraw (a turned or
    two-line one more); its outline is made once per text. Plain text only, as ``labels``: no mathtext."""
    for axis in (ax.xaxis, ax.yaxis):
        if any(isinstance(c, _AxisLabel) and c.label is axis.label for c in ax.collections):
            continue  # already drawn as outlines
        axis.label.set_visible(False)
        ax.add_collection(
            _AxisLabel(
                axis.label,
                transform=Affine2D().scale(1 / 72) + ax.figure.dpi_scale_trans,  # points, at the figure's dpi
                edgecolors="none",
                linewidths=0,
                zorder=3,  # after the axes' axis artists, which place the label
                clip_on=False,
            ),
            autolim=False,
        )
