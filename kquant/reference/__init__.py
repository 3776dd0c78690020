"""The oracle: llama.cpp's own code, which every "byte-exact" claim of kquant is checked against.

* ``kquant.reference.ggml``: ggml's block encoders and decoders (``ggml_quantize_chunk``,
  ``to_float``) and fp16 conversions, through ctypes;
* ``kquant.reference.llama_quantize``: llama.cpp's whole-file quantizer
  (``llama_model_quantize``), as the llama-quantize tool calls it;
* ``kquant.reference.recorded``: the same three answers for the notebooks, live with
  llama.cpp, and without it kquant's own, checked against the sha256 of llama.cpp's output
  recorded in the package (``kquant/data/llama_cpp_digests.json``).

Nothing in kquant's own encoders imports this package; tests, benchmarks and the notebooks
compare against it.
"""

from kquant.reference.ggml import (
    SUPPORTED,
    OracleUnavailable,
    available,
    dequantize,
    fp16_to_fp32,
    fp32_to_fp16,
    library,
    library_path,
    quantize,
    quantize_iq4_nl,
)
from kquant.reference.llama_quantize import model_quantize

__all__ = [
    "SUPPORTED",
    "OracleUnavailable",
    "available",
    "dequantize",
    "fp16_to_fp32",
    "fp32_to_fp16",
    "library",
    "library_path",
    "model_quantize",
    "quantize",
    "quantize_iq4_nl",
]
