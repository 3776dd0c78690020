"""The plots and interactive views the notebooks share, one module per group of notebooks.

Drawing only: the numbers are computed by the rest of kquant (and, in the notebooks,
in front of the reader), then handed here. Functions named ``*_view`` are the
callbacks of the notebooks' widgets: each draws one complete figure from the
slider values and ends with ``plt.show()``, which is what makes ipywidgets put the
figure in its output area. ``tests/views.py`` lists every view with inputs like its
notebook's; the tests draw each once and ``benchmarks/widgets.py`` times them.

* ``numbers``: notebooks 00-03   * ``kquants``: 04-05   * ``files``: 06-07   * ``models``: 08-10, 17
* ``gptq``: 11   * ``awq``: 12   * ``budget``: 13   * ``qlora``: 14   * ``iquants``: 15   * ``compare``: 16
* ``style``: what they share (colours, spacing, fast histograms, byte grids, one-artist labels, legends,
  titles and bars); ``setup()``, which every notebook's import cell calls, renders figures at 80 dpi without the inline
  backend's "tight" crop, unhinted text and a faster PNG encoding
"""

from kquant.viz.awq import alpha_view, channel_magnitudes_plot, outlier_plot, search_curves_plot
from kquant.viz.files import gguf_map_view, mix_view, plan_picture
from kquant.viz.gptq import gptq_view
from kquant.viz.iquants import search_view, table_plot
from kquant.viz.kquants import k_block_view, scale_bits_view, scale_search_view
from kquant.viz.models import (
    importance_view,
    layer_errors_plot,
    memory_view,
    next_token_view,
    requantization_view,
    scores_vs_bpw,
)
from kquant.viz.numbers import (
    block_bytes,
    block_view,
    error_along_row,
    error_vs_bits,
    float_fields_view,
    levels_view,
    outlier_view,
    pi_grid_view,
    quant_error_view,
    tradeoff_plot,
    weight_histogram,
)
from kquant.viz.style import setup

__all__ = [
    "alpha_view",
    "channel_magnitudes_plot",
    "outlier_plot",
    "search_curves_plot",
    "block_bytes",
    "block_view",
    "error_along_row",
    "error_vs_bits",
    "float_fields_view",
    "gguf_map_view",
    "gptq_view",
    "importance_view",
    "k_block_view",
    "layer_errors_plot",
    "levels_view",
    "memory_view",
    "mix_view",
    "next_token_view",
    "outlier_view",
    "pi_grid_view",
    "plan_picture",
    "quant_error_view",
    "requantization_view",
    "scale_bits_view",
    "scale_search_view",
    "search_view",
    "scores_vs_bpw",
    "setup",
    "table_plot",
    "tradeoff_plot",
    "weight_histogram",
]
