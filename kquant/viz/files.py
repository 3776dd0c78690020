"""Notebooks 06-07: a quantization plan as a picture, a GGUF file as a map.

Each ``*_view`` is a widget callback: it draws one complete figure and ends with ``plt.show()``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from kquant.gguf.summary import plan_summary
from kquant.mixes import layer_of, plan
from kquant.model.config import BLOCK_TENSORS
from kquant.viz import style
from kquant.viz.style import SIGN, TYPE_COLORS, byte_grid, labels, legend, rects, tidy


def _plan_grid(ax, choices, title: str):
    """One plan as a grid: a row per layer, a column per kind of tensor, each cell coloured and named by its type."""
    kinds, layers, outside = [], set(), []
    for c in choices:
        i = layer_of(c.name)
        if i < 0:
            outside.append(c)
            continue
        layers.add(i)
        kind = c.name.split(".")[2]
        if kind not in kinds:
            kinds.append(kind)
    order = [k for k in BLOCK_TENSORS if k in kinds]
    kinds = order + [k for k in kinds if k not in order]
    n_layer = max(layers) + 1 if layers else 0
    cells, faces, names = [], [], []
    for c in choices:
        i = layer_of(c.name)
        if i < 0:
            continue
        col = kinds.index(c.name.split(".")[2])
        cells.append((col, -i - 1))
        faces.append(TYPE_COLORS.get(c.type.name, "white"))
        names.append((col + 0.5, -i - 0.5, c.type.name))
    if cells:  # one collection of the cells, without a Rectangle each (limits set below)
        rects(ax, *zip(*cells), 1, 1, facecolors=faces, edgecolors="white", linewidths=1, autolim=False)
    if names:  # one artist for every cell's type name, not a Text each
        labels(ax, *zip(*names), fontsize=7)
    ax.set_xlim(0, len(kinds))
    ax.set_ylim(-n_layer, 0)
    ax.set_xticks(np.arange(len(kinds)) + 0.5, kinds, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(-np.arange(n_layer) - 0.5, [str(i) for i in range(n_layer)], fontsize=7)
    ax.set_ylabel("layer (blk.N)")
    ax.set_xlabel("tensor kind in the layer")
    extra = ", ".join(f"{c.name.removesuffix('.weight')} {c.type.name}" for c in outside)
    ax.set_title(f"{title}\noutside the layers: {extra}", fontsize=9)
    for spine in ax.spines.values():
        spine.set_visible(False)


def plan_picture(plans: dict, suptitle: str):
    """Plans side by side (``plans``: panel title -> list of mixes.Choice), one colour per ggml type."""
    fig, axes = plt.subplots(1, len(plans), figsize=(4.2 * len(plans) + 1.2, 4.6), squeeze=False)
    used = set()
    for ax, (title, choices) in zip(axes[0], plans.items()):
        _plan_grid(ax, choices, title)
        used |= {c.type.name for c in choices}
    handles = [
        Rectangle((0, 0), 1, 1, facecolor=TYPE_COLORS.get(t, "white"), label=t) for t in TYPE_COLORS if t in used
    ]
    fig.legend(handles=handles, loc="center right", fontsize=8, title="type")
    fig.suptitle(suptitle, fontsize=11)
    tidy(fig, wspace=0.45, bottom=1.0, right=1.1)  # rotated tensor kinds below, the type legend on the right
    plt.show()


def mix_view(tensors, params, mix: str):
    """The plan of one mix for a model (``tensors``: mixes.TensorSpec list), with the file's average bits per weight."""
    choices = plan(tensors, params, mix)
    bpw = plan_summary("", choices).bpw
    plan_picture({mix: choices}, f"{mix}: {bpw:.3f} bits per weight on average\nover the whole file (tensor data)")


def _file_map(ax, y: float, layout, name: str, min_mb: float):
    """One file as a horizontal bar (x in MB): the part before the data, then every tensor's data, coloured by type.

    The part before the data (header, metadata, tensor infos) is a few tens of kB, too thin to see
    at this scale, so it is drawn at least ``min_mb`` wide, hatched, and the data after it shifted.
    """
    head = max(layout.data_start / 1e6, min_mb)
    shift = head - layout.data_start / 1e6
    starts = np.array([layout.data_start + t.offset for t in layout.tensors], dtype=float)
    sizes = np.array([t.nbytes for t in layout.tensors], dtype=float)
    faces = [TYPE_COLORS.get(t.type.name, "white") for t in layout.tensors]
    # One collection of a cell per tensor, without a Rectangle each: a file has dozens of tensors.
    rects(
        ax,
        starts / 1e6 + shift,
        y - 0.3,
        sizes / 1e6,
        0.6,
        facecolors=faces,
        edgecolors="white",
        linewidths=0.3,
        autolim=False,
    )
    ax.add_patch(Rectangle((0, y - 0.3), head, 0.6, facecolor="black", edgecolor="white", hatch="///", linewidth=0.3))
    start, end = layout.data_range(name)
    ax.add_patch(
        Rectangle((start / 1e6 + shift, y - 0.42), (end - start) / 1e6, 0.84, fill=False, edgecolor=SIGN, linewidth=2)
    )


def gguf_map_view(files: dict, name: str):
    """Where tensor ``name`` lies in each file, and its info record's bytes.

    ``files``: label -> (bytes, anatomy.FileLayout).

    Top: every file to the same scale; black (hatched, drawn wider) is the header, metadata and tensor infos, the
    other colours are the tensors' data by type, the red frame is ``name``'s data. Below: the
    bytes of ``name``'s tensor info record in each file, coloured by field.
    """
    n = len(files)
    heights = [0.9 + 0.55 * n] + [1.45] * n
    fig, axes = plt.subplots(1 + n, 1, figsize=(10, sum(heights) + 0.6), gridspec_kw={"height_ratios": heights})
    top = axes[0]
    used = set()
    width = max(layout.size for _buf, layout in files.values()) / 1e6
    for i, (_buf, layout) in enumerate(files.values()):
        _file_map(top, -i, layout, name, min_mb=0.012 * width)
        used |= {t.type.name for t in layout.tensors}
    top.set_xlim(0, width * 1.015)
    top.set_ylim(-n + 0.4, 0.9)
    names_width = style.y_labels(top, -np.arange(n), list(files), fontsize=8)  # inches
    top.set_ylabel("file")
    top.set_xlabel("position in the file (MB)")
    first = next(iter(files.values()))[1]
    style.title(
        top,
        f"{name}: where its data lies (red frame)\nblack, hatched = header, metadata and tensor infos "
        f"({first.data_start:,} bytes in the {next(iter(files))} file; drawn wider than to scale)",
        fontsize=10,
    )
    handles = [
        Rectangle((0, 0), 1, 1, facecolor=TYPE_COLORS.get(t, "white"), label=t) for t in TYPE_COLORS if t in used
    ]
    legend(top, handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="data type")
    for ax, (label, (buf, layout)) in zip(axes[1:], files.items()):
        t = layout.tensor(name)
        byte_grid(ax, np.frombuffer(buf, np.uint8, t.end - t.start, t.start), t.fields(), per_row=24, base=t.start)
        ax.set_ylabel("record row starts\nat file byte", fontsize=8)
        start, end = layout.data_range(name)
        index = [u.name for u in layout.tensors].index(name)
        style.title(
            ax,
            f"{label}: tensor {index + 1} of {len(layout.tensors)} in this file's order, "
            f"data at bytes {start:,}–{end - 1:,}\n"
            f"its info record, bytes {t.start:,}–{t.end - 1:,} ({t.type.name}, ne {t.ne}, offset {t.offset:,})",
            fontsize=9,
        )
    tidy(fig, hspace=1.25, left=0.5 + names_width, outline_labels=True)  # room for the files' names
    plt.show()
