"""Beyond round-to-nearest: the methods the popular explainers name, on the bundled model (notebooks 11-16).

Each module is one method, with its paper and reference implementation cited in its docstring,
and each writes its result as a GGUF file llama.cpp runs, through ``kquant.quantize_gguf``
(``weights=`` for methods that change the weights, ``blocks=`` for methods that choose the
blocks themselves). Block formats that are not ggml's own (NF4) and ggml's I-quants live in
``kquant.formats`` with the other codecs; what needs a model (activations, gradients, scores)
lives here.
"""
