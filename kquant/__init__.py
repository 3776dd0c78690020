"""kquant: llama.cpp's weight formats, byte-exact, in readable numpy.

    >>> import numpy as np, kquant
    >>> x = np.random.default_rng(0).standard_normal((4, 256), dtype=np.float32)
    >>> q = kquant.quantize(x, "Q4_K")          # (4, 144) uint8: llama.cpp's exact bytes
    >>> y = kquant.dequantize(q, "Q4_K")        # (4, 256) float32

The API mirrors gguf-py's ``gguf.quants.quantize`` / ``dequantize``, so either can
stand in for the other.

Every notebook imports it; notebooks 03-05 call ``quantize`` / ``dequantize`` directly.
"""

from kquant import imatrix, mixes
from kquant.errors import KQuantError
from kquant.formats import FORMATS, Format, dequantize, get_format, quantize
from kquant.gguf.summary import inspect_gguf
from kquant.quantize_file import plan_gguf, quantize_gguf

__all__ = [
    "FORMATS",
    "Format",
    "KQuantError",
    "dequantize",
    "get_format",
    "imatrix",
    "inspect_gguf",
    "mixes",
    "plan_gguf",
    "quantize",
    "quantize_gguf",
]
__version__ = "0.1.0"
