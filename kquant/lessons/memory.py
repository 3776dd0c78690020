"""How much memory weights take: parameters x bits per weight.

Two units are in use and they differ by 7%: file sizes in llama.cpp's tables are
GiB (2**30 bytes), marketing and most articles use GB (10**9 bytes).

Notebooks 01 and 09 use it.
"""

from __future__ import annotations

from kquant.errors import KQuantError

GB = 10**9
GIB = 2**30


def weight_bytes(n_params: float, bits_per_weight: float) -> float:
    """Bytes for ``n_params`` weights at ``bits_per_weight`` (8 bits to the byte)."""
    if n_params < 0 or bits_per_weight <= 0:
        raise KQuantError(f"need n_params >= 0 and bits_per_weight > 0, got {n_params} and {bits_per_weight}")
    return n_params * bits_per_weight / 8


def kv_cache_bytes(n_layer: int, n_kv_head: int, head_dim: int, n_ctx: int, bytes_per_value: float = 2) -> float:
    """Bytes of a KV cache: every layer keeps a key and a value vector per KV head for every position (F16: 2 bytes)."""
    return 2 * n_layer * n_kv_head * head_dim * n_ctx * bytes_per_value


def gib(n_bytes: float) -> float:
    return n_bytes / GIB


def gb(n_bytes: float) -> float:
    return n_bytes / GB
