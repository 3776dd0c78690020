"""What a GGUF file holds, as a table: every tensor's type, bytes and bits per weight.

Bits per weight (bpw) is the honest size measure: a "4-bit" Q4_K tensor costs 4.5 bpw
once its block scales are counted, and a Q4_K_M file averages more than that because
some tensors get Q6_K and the norms stay F32.

Notebooks 06, 07 and 10 use it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from kquant.gguf.reader import Field, StringArray, open_gguf, shape_of


def sha256(path) -> str:
    """The file's SHA-256, hex: "the same file" in this workbook means the same sha256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class TensorRow:
    """One tensor of a file: name, numpy shape, ggml type, bytes, and (when planned) why."""

    name: str
    shape: tuple[int, ...]
    type: GGMLQuantizationType
    nbytes: int
    reason: str = ""
    seconds: float = 0.0

    @property
    def n_weights(self) -> int:
        return math.prod(self.shape)

    @property
    def bpw(self) -> float:
        return 8 * self.nbytes / self.n_weights


@dataclass
class FileSummary:
    """A GGUF file's tensors (in file order) and metadata; ``print()`` it for the table."""

    path: Path
    rows: list[TensorRow]
    metadata: list[tuple[str, str]] = field(default_factory=list)  # (key, value shortened for display)
    seconds: float | None = None  # time taken to write the file, when kquant wrote it
    mix: str | None = None

    @property
    def n_weights(self) -> int:
        return sum(r.n_weights for r in self.rows)

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data (without metadata and padding), as llama-quantize reports it."""
        return sum(r.nbytes for r in self.rows)

    @property
    def bpw(self) -> float:
        """The file's average bits per weight: 8 x tensor bytes / weights (NaN for a file without tensors)."""
        return 8 * self.nbytes / self.n_weights if self.n_weights else float("nan")

    def table(self, reasons: bool = False) -> str:
        width = max([len(r.name) for r in self.rows] + [6])
        head = f"{'tensor':<{width}}  {'shape':>14}  {'type':<5} {'bytes':>12}  {'bpw':>6}"
        lines = [head + ("  reason" if reasons else ""), "-" * len(head)]
        for r in self.rows:
            line = f"{r.name:<{width}}  {str(r.shape):>14}  {r.type.name:<5} {r.nbytes:>12,}  {r.bpw:>6.3f}"
            lines.append(line + (f"  {r.reason}" if reasons else ""))
        lines.append("-" * len(head))
        total = f"{len(self.rows)} tensors, {self.n_weights:,} weights"
        lines.append(f"{total:<{width + 22}} {self.nbytes:>12,}  {self.bpw:>6.3f}  (average bits per weight)")
        if self.seconds is not None:
            lines.append(f"written in {self.seconds:.2f} s" + (f" as {self.mix}" if self.mix else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def plan_summary(path, choices) -> FileSummary:
    """The table a plan would give: each tensor's planned type, its size in that type, and why."""
    rows = []
    for c in choices:
        block, type_size = GGML_QUANT_SIZES[c.type]
        rows.append(TensorRow(c.name, c.shape, c.type, math.prod(c.shape) // block * type_size, c.reason))
    return FileSummary(Path(path), rows)


def inspect_gguf(path) -> FileSummary:
    """Read any GGUF file (quantized or not) and summarize its metadata and tensors."""
    with open_gguf(path) as f:
        rows = [TensorRow(t.name, shape_of(t), t.type, t.n_bytes) for t in f.tensors]
        meta = [(field.name, _show(field)) for field in f.fields.values()]
    return FileSummary(Path(path), rows, meta)


def _show(f: Field, limit: int = 60) -> str:
    """A metadata value, shortened: long arrays show their length and first items."""
    v = f.value
    if isinstance(v, StringArray):
        n, items = len(v), [b.decode("utf-8", errors="replace") for b in v[:3]]
    elif isinstance(v, np.ndarray):
        n, items = len(v), [_value(x) for x in v[:3]]
    if isinstance(v, (StringArray, np.ndarray)):
        text = f"[{n} {f.item_type.name.lower()}: " + ", ".join(map(repr, items)) + (", ...]" if n > 3 else "]")
    elif isinstance(v, bytes):
        text = repr(v.decode("utf-8", errors="replace"))
    else:
        text = repr(_value(np.float32(v)) if f.type == GGUFValueType.FLOAT32 else v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _value(x):
    """A numpy scalar as Python shows it best: float32 0.1 as 0.1, not 0.10000000149011612."""
    return float(str(x)) if x.dtype.kind == "f" else x.item()
