"""Writing a file atomically: the destination appears whole, or not at all.

The bytes go to a temporary file in the destination's folder; only once they are
complete and on disk is it renamed over the destination. A crash, Ctrl-C or a full
disk leaves no partial file. Every file kquant writes (quantized models, imatrix
files) goes through ``atomic_output``.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(dst: Path):
    """Yield a temporary path beside ``dst``; rename it to ``dst`` only if the block completes."""
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".partial")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, dst)
    except BaseException:  # including KeyboardInterrupt: never leave a partial file behind
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
