"""VRAM and offloading arithmetic: which bits per weight fit, which layers go on the GPU, how fast a token is.

Three small formulas (notebook 13), each with its terms stated:

* ``bpw_for_vram``: the most bits per weight a model of ``n_params`` weights can have so that its
  weights, its KV cache and a fixed overhead (compute buffers, the CUDA context: an assumption
  the caller states) fit in a card's memory: ``8 · (vram − kv − overhead) / n_params``.
* ``gpu_layers``: llama.cpp's ``n_gpu_layers`` placement. In the llama.cpp that
  llama-cpp-python 0.3.36 vendors (src/llama-model.cpp, ``load_tensors``),
  ``i_gpu_start = max(n_layer + 1 − n_gpu_layers, 0)``: of the n_layer + 1 slots (the repeating
  layers, then the output layer), the *last* n_gpu_layers go on the GPU; the input layer (the
  token embedding, a row lookup) always stays on the CPU. ``layers_that_fit`` is the largest
  n_gpu_layers whose slots fit.
* ``seconds_per_token``: generating one token reads every weight once, and the devices work one
  after another, so time ≈ Σ over devices of bytes read there / that device's memory bandwidth.
  That is a lower bound for memory-bound decoding (large models, one sequence); it says nothing
  about prompt processing, which is compute-bound.

What is arithmetic and what is measured is the caller's to say: bandwidths passed in are
assumptions unless measured (``measured_bandwidth`` measures this machine's, with numpy).
"""

from __future__ import annotations

import time

import numpy as np

from kquant.errors import KQuantError
from kquant.lessons.memory import GB


def bpw_for_vram(vram_bytes: float, n_params: float, kv_bytes: float = 0.0, overhead_bytes: float = 0.0) -> float:
    """Most bits per weight whose weights fit next to the KV cache and the overhead: 8·(vram − kv − overhead)/n."""
    if n_params <= 0 or vram_bytes <= 0 or kv_bytes < 0 or overhead_bytes < 0:
        raise KQuantError("need vram_bytes > 0, n_params > 0, kv_bytes >= 0 and overhead_bytes >= 0")
    free = vram_bytes - kv_bytes - overhead_bytes
    if free <= 0:
        raise KQuantError(
            f"the KV cache and overhead ({(kv_bytes + overhead_bytes) / GB:.2f} GB) leave no room for weights in "
            f"{vram_bytes / GB:.2f} GB: shorten the context or offload layers"
        )
    return 8 * free / n_params


def gpu_layers(n_layer: int, n_gpu_layers: int) -> list[int]:
    """The slots llama.cpp puts on the GPU for ``n_gpu_layers``: layer indices, ``n_layer`` meaning the output layer."""
    if n_layer < 1 or n_gpu_layers < 0:
        raise KQuantError("need n_layer >= 1 and n_gpu_layers >= 0")
    start = max(n_layer + 1 - n_gpu_layers, 0)
    return list(range(start, n_layer + 1))


def layers_that_fit(layer_bytes, output_bytes: float, vram_bytes: float, reserved_bytes: float = 0.0) -> int:
    """The largest ``n_gpu_layers`` whose slots (last layers first, the output layer first of all) fit in VRAM.

    ``layer_bytes[i]``: bytes of layer i's weights (plus its share of the KV cache, if you count it
    there); ``reserved_bytes``: whatever else the GPU must hold (compute buffers).
    """
    sizes = np.append(np.asarray(layer_bytes, dtype=np.float64), output_bytes)  # slot n_layer: the output
    if sizes.ndim != 1 or len(sizes) < 2 or (sizes < 0).any() or vram_bytes < 0 or reserved_bytes < 0:
        raise KQuantError("layer_bytes must be one non-negative size per layer; sizes and VRAM non-negative")
    taken = np.cumsum(sizes[::-1])  # the output, then the last layer, the one before, …
    return int(np.searchsorted(taken, vram_bytes - reserved_bytes, side="right"))


def seconds_per_token(bytes_per_device, bandwidth_per_device) -> float:
    """Σ bytes read on each device / its bandwidth (bytes/s): the devices run one after another."""
    b = np.asarray(bytes_per_device, dtype=np.float64)
    bw = np.asarray(bandwidth_per_device, dtype=np.float64)
    if b.shape != bw.shape or (b < 0).any() or (bw <= 0).any():
        raise KQuantError("need one non-negative byte count and one positive bandwidth per device")
    return float((b / bw).sum())


def measured_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """This machine's memory read bandwidth in bytes/s, as numpy sees it: the best of ``repeats`` sums of a large array.

    The array (256 MiB by default) is far larger than any CPU cache, so each sum streams it from
    RAM; one thread, so a multi-threaded reader (llama.cpp) may see more.
    """
    x = np.ones(n_bytes // 8)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.nbytes / best
