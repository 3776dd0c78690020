"""Put on PYTHONPATH, this makes llama-cpp-python unimportable in every Python started with it (a notebook's kernel
included), as after ``pip install kquant`` without the ``llama`` extra: ``import llama_cpp`` raises ImportError and
``importlib.util.find_spec("llama_cpp")`` is None, even where the package is installed."""

import sys

sys.modules["llama_cpp"] = None
