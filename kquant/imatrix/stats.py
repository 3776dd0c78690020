"""What an importance matrix holds: per weight matrix, sums of squared inputs and token counts.

llama-imatrix's ``Stats`` (tools/imatrix/imatrix.cpp of llama.cpp 0c1e57098), and the vector
llama-quantize derives from them for ggml's encoders. Notebook 10 uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kquant.errors import KQuantError


@dataclass
class Entry:
    """What llama-imatrix keeps for one weight matrix (its ``Stats``)."""

    in_sum2: np.ndarray  # (n_mat, n_cols) float32: sum over tokens of x[j]², one row per expert (1 for dense)
    counts: np.ndarray  # (n_mat,) int64: tokens summed into each row

    def importance(self, legacy: bool = False) -> np.ndarray:
        """The vector llama-quantize hands to ggml: (n_mat * n_cols,) float32, mean squared input per column."""
        sums = np.asarray(self.in_sum2, dtype=np.float32)
        if legacy:  # .dat files store sums already divided by the token count and multiplied by ncall
            ncall = int(self.counts[0])
            return (sums / np.float32(ncall) if ncall > 0 else sums).reshape(-1)
        out = np.ones(sums.shape, dtype=np.float32)  # a matrix that saw no token: every column 1
        seen = np.asarray(self.counts) > 0
        # float32 / float32, as (float) sums / (float) count in C
        out[seen] = sums[seen] / np.asarray(self.counts)[seen, None].astype(np.float32)
        return out.reshape(-1)


@dataclass
class Imatrix:
    """Per weight matrix, the sums of squared inputs and the token counts; plus where they came from."""

    entries: dict[str, Entry]
    datasets: list[str] = field(default_factory=list)  # imatrix.datasets: the calibration text's name(s)
    chunk_count: int = 0  # imatrix.chunk_count: chunks of chunk_size tokens processed
    chunk_size: int = 0  # imatrix.chunk_size: tokens per chunk (n_ctx)
    file: str | None = None  # the file it was loaded from or saved to (llama-quantize records it)
    legacy: bool = False  # loaded from a legacy .dat file (sums already normalised)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        return sorted(self.entries)

    def importance(self, name: str) -> np.ndarray:
        """Mean squared input per column of ``name``, as llama-quantize computes it from the file."""
        if name not in self.entries:
            raise KQuantError(
                f"the imatrix has no entry {name!r}; it has {len(self.entries)} entries, e.g. {self.names()[:3]}"
            )
        return self.entries[name].importance(self.legacy)

    def vectors(self) -> dict[str, np.ndarray]:
        """Every entry's importance: the name -> floats table llama-quantize passes to llama_model_quantize."""
        return {name: self.importance(name) for name in self.names()}
