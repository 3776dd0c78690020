"""Importance matrices: which input columns of each weight matrix matter, measured on real text.

A weight ``W[r, j]`` only ever meets the activation ``x[j]`` (``y = W · x``), so an error in
column j costs about ``x[j]²`` on average. llama.cpp's llama-imatrix runs calibration text
through the model and records, for every weight matrix, the *sum of squared inputs per
column* and the number of rows (tokens) summed. llama-quantize divides one by the other
(the mean squared activation) and hands that vector to ggml as the weights of its error
(``kquant.quantize(x, qtype, imatrix=...)``): columns that see large activations are
rounded more carefully.

    >>> import kquant
    >>> from kquant import imatrix, hub
    >>> text = imatrix.calibration_text()                                   # held-out corpus text, seed 4242
    >>> im = imatrix.collect(hub.bundled(), text, dataset=imatrix.CALIBRATION_DATASET)  # numpy forward pass
    >>> im.save("tiny.imatrix.gguf")                                        # llama.cpp's file format
    >>> im = imatrix.Imatrix.load("tiny.imatrix.gguf")                      # or a file llama-imatrix wrote
    >>> im.importance("blk.0.ffn_down.weight")                              # (768,) float32: sums / count
    >>> kquant.quantize_gguf(hub.bundled(), "tiny-Q4_K_M.gguf", "Q4_K_M", imatrix="tiny.imatrix.gguf")

What llama-imatrix records (tools/imatrix/imatrix.cpp of llama.cpp 0c1e57098), and so what
``collect`` records:

* the input (``src1``) of every ``MUL_MAT`` whose weight is named ``blk.*``: attn_q, attn_k,
  attn_v (all three see the same normed input), attn_output, ffn_gate, ffn_up, ffn_down;
* ``output.weight`` only with ``--process-output`` (``process_output=True``), and never
  ``token_embd.weight``: it is a row lookup, and in a tied model the output matmul uses a
  weight named token_embd.weight, which is neither ``blk.*`` nor ``output.weight``;
* only batches of at least 16 tokens (smaller ones are ignored: ``src1->ne[1] < 16``);
* one count per matrix, the number of token rows summed. 3-D expert tensors
  (``MUL_MAT_ID``) get one row of sums and one count per expert; kquant.model.forward runs dense
  llama models only, but files with expert entries load, save and quantize.

Text is cut as llama-imatrix cuts it: tokenized once (BOS first, special tokens parsed as
with ``--parse-special``), split into chunks of ``n_ctx`` tokens (the remainder is dropped),
the first token of every chunk replaced by BOS, each chunk evaluated as its own sequence.

Format version: the GGUF imatrix format exactly as llama.cpp 0c1e57098 writes it
(tools/imatrix/imatrix.cpp ``save_imatrix``, a GGUF v3 file, 32-byte alignment) and reads it
(common/imatrix-loader.cpp ``common_imatrix_load``, then tools/quantize/quantize.cpp
``load_imatrix``). The file carries no version number of its own; it is:

* metadata, in this order: ``general.type`` = "imatrix" (string), ``imatrix.datasets``
  (array of strings), ``imatrix.chunk_count`` (uint32), ``imatrix.chunk_size`` (uint32);
* two F32 tensors per entry, entries sorted by name: ``<name>.in_sum2`` with ggml shape
  ne = (n_cols, n_mat) and ``<name>.counts`` with ne = (1, n_mat) (a GGUF drops the
  trailing 1s, so a dense matrix's are 1-D: (n_cols,) and (1,)); counts are token counts
  stored as floats (rounded with lround on reading).

llama-quantize's importance for column j of matrix m is ``in_sum2[m, j] / counts[m]``, and
1.0 for every column of a matrix whose count is 0 (an expert never routed to). The legacy
``.dat`` format (llama-imatrix ``--output-format dat``) loads too.

Notebook 10 teaches it.
"""

from kquant.imatrix.files import as_importance, load, quantize_keys, save
from kquant.imatrix.stats import Entry, Imatrix

__all__ = ["Entry", "Imatrix", "as_importance", "load", "quantize_keys", "save"]
