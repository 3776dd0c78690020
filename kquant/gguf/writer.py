"""The one atomic writer: a file appears whole at its destination, or not at all.

``atomic_output(dst)`` hands out a temporary path in the destination's folder; the caller
writes the whole file there; on success the temp file is flushed to disk (fsync) and
committed under its final name, then the folder is fsynced so the name survives a crash:

    with atomic_output("model-Q4_K_M.gguf", protect=[src]) as tmp:
        write_everything_to(tmp)
    # here model-Q4_K_M.gguf is complete; on any error (or Ctrl-C, SIGTERM, SIGHUP) nothing is left

Why each piece:

* The temp file lives in the destination folder (a rename never crosses file systems) under
  a short name, ``.kquant-<host>-<pid>-<8 hex>.partial`` (host: 6 hex digits of the machine's
  name), whatever the destination's length, so a legal 250-byte file name still works. The pid
  lets the next run in that folder recognise and delete the leftover of a run that was killed
  outright (SIGKILL, power loss); the host keeps it from deleting the file of a live run on
  another machine sharing the folder (NFS) or in another container, whose pids it cannot see.
* No clobbering without ``overwrite``: the commit is ``os.link(tmp, dst)``, which fails if
  ``dst`` exists, even when it appeared while we were writing (a check-then-rename would
  silently replace it). ``overwrite=True`` commits with ``os.replace``.
* Only regular files are ever replaced: a destination that is a device, FIFO, socket or folder
  (also behind a symlink) is refused even with ``overwrite`` (``--force`` onto /dev/null must
  not replace the device node with a file).
* ``protect``: paths the destination must not be (the input), compared with
  ``os.path.samefile``, so a symlink or hard link to the input is caught too.
* The new file's mode is ``0o666 & ~umask``, like any file a program creates.

Notebooks 06-10 write their files through it (via quantize_gguf, export and imatrix.save).

``GGUFWriter`` is gguf-py's writer with one change, for speed: a metadata array goes out in one
piece instead of item by item (a vocabulary is three arrays of 32 000+ items, and packing them
one Python call each cost a tenth of a second on every file written).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import signal
import socket
import stat
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import gguf
import numpy as np
from gguf import GGUFEndian, GGUFValueType

from kquant.errors import KQuantError

_TEMP_RE = re.compile(r"^\.kquant-([0-9a-f]{6})-(\d+)-[0-9a-f]{8}\.partial$")
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM / SIGHUP while a file is being written, so cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def temp_name() -> str:
    """A fresh temp file name: short, hidden, and carrying this process's pid."""
    return f".kquant-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.partial"


def remove_stale_temps(folder) -> list[Path]:
    """Delete the temp files that runs which no longer exist left in ``folder``; return them."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _TEMP_RE.match(name)
        if m is None or m.group(1) != _HOST:
            continue  # not ours, or another machine's: its pid means nothing here
        pid = int(m.group(2))
        if pid == os.getpid() or _alive(pid):
            continue
        path = Path(folder, name)
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):
        return True  # someone else's process (or a pid we cannot ask about): leave its file alone
    return True


def check_destination(dst, *, overwrite: bool = False, protect: Iterable = ()) -> Path:
    """Refuse a destination kquant must not write: one KQuantError line. Returns ``dst`` as a Path."""
    dst = Path(dst)
    folder = dst.parent
    if not folder.is_dir():
        raise KQuantError(f"cannot write {dst}: the folder {folder} does not exist; create it first")
    for p in protect:
        with contextlib.suppress(OSError):
            if os.path.samefile(dst, p):
                raise KQuantError(f"refusing to overwrite the input {p} (as {dst}): choose another output file")
    try:
        st = os.stat(dst)  # follows symlinks: a link to /dev/null is a character device here
    except FileNotFoundError:
        if os.path.islink(dst) and not overwrite:
            raise KQuantError(
                f"{dst} is a symbolic link to a missing file: remove it, or replace it (--force)"
            ) from None
        return dst
    except OSError as e:
        raise KQuantError(f"cannot write {dst} ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise KQuantError(f"{dst} is a folder: give a file name for the output")
    if not stat.S_ISREG(st.st_mode):
        raise KQuantError(
            f"{dst} exists and is not a regular file (a device, FIFO or socket): kquant never replaces one"
        )
    if not overwrite:
        raise KQuantError(f"{dst} already exists: pass overwrite=True (--force on the command line) to replace it")
    return dst


@contextlib.contextmanager
def atomic_output(dst, *, overwrite: bool = False, protect: Iterable = ()) -> Iterator[Path]:
    """Yield a temp Path next to ``dst``; commit it as ``dst`` if the block succeeds, else delete it.

    Raises KQuantError (one line) for a bad destination, a destination that appeared during the
    write (without ``overwrite``), or an OSError while writing (a full disk): nothing is written then.
    SIGTERM and SIGHUP (when called in the main thread) delete the temp file, then end the process
    with the signal's usual status; Ctrl-C deletes it and raises KeyboardInterrupt.
    """
    protect = list(protect)
    dst = check_destination(dst, overwrite=overwrite, protect=protect)
    folder = dst.parent
    remove_stale_temps(folder)
    tmp = folder / temp_name()
    try:
        # O_EXCL: never write into someone else's file; mode 0o666 is reduced by the umask by open(2).
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
    except OSError as e:
        raise KQuantError(f"could not write {dst} ({e.strerror or e}); nothing was written") from None

    old = _install_handlers()
    try:
        yield tmp
        _fsync_path(tmp)
        check_destination(dst, overwrite=True, protect=protect)  # again: it may have become a device meanwhile
        _commit(tmp, dst, overwrite)
        _fsync_path(folder)
    except _Terminated as e:
        _remove(tmp)
        _restore_handlers(old)
        old = None
        signal.raise_signal(e.signum)  # the previous handler (by default: the process ends with this signal)
        raise SystemExit(128 + e.signum) from None
    except OSError as e:
        _remove(tmp)
        raise KQuantError(f"could not write {dst} ({e.strerror or e}); nothing was written") from None
    except BaseException:
        _remove(tmp)
        raise
    finally:
        if old is not None:
            _restore_handlers(old)


def _commit(tmp: Path, dst: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst)  # fails with EEXIST if dst exists, whenever it appeared
    except FileExistsError:
        raise KQuantError(
            f"{dst} appeared while kquant was writing it; it was left untouched: choose another name or --force"
        ) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # A file system without hard links: reserve the name exclusively, then rename onto our own file.
        try:
            os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise KQuantError(f"{dst} appeared while kquant was writing it; it was left untouched") from None
        os.replace(tmp, dst)
        return
    tmp.unlink()


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if path.is_dir():
            return  # some systems cannot open a folder; the data itself was synced
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF) or not path.is_dir():
            raise
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _install_handlers():
    """While writing, SIGTERM / SIGHUP raise _Terminated so the temp file is removed (main thread only:
    Python runs signal handlers there). A signal that is ignored (nohup) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return None
    old = {}
    for s in _SIGNALS:
        prev = signal.getsignal(s)
        if prev is signal.SIG_IGN or prev is None:
            continue
        old[s] = prev
        signal.signal(s, _raise_terminated)
    return old


def _raise_terminated(signum, frame):
    raise _Terminated(signum)


def _restore_handlers(old) -> None:
    for s, prev in (old or {}).items():
        signal.signal(s, prev)


# Array item type -> its little-endian numpy dtype (gguf-py's _simple_value_packing, as numpy names it).
_ITEM_DTYPES = {
    GGUFValueType.UINT8: "<u1",
    GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4",
    GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
    GGUFValueType.BOOL: "?",
}
_U64 = struct.Struct("<Q")


class GGUFWriter(gguf.GGUFWriter):
    """gguf-py's GGUFWriter, packing a metadata array at once: the same bytes, without a call per item.

    An array of numbers (a list, or a numpy array) goes out as one numpy array's bytes; an array
    of strings as one join of (uint64 length, bytes) pairs. What numpy would store differently
    from gguf-py's struct.pack (a float beyond float32's range, which struct refuses) takes
    gguf-py's own path, and so does anything else.
    """

    def _pack_val(self, val, vtype, add_vtype, sub_type=None) -> bytes:
        if vtype != GGUFValueType.ARRAY or self.endianess != GGUFEndian.LITTLE or not len(val):
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        head = struct.pack("<I", vtype) if add_vtype else b""
        if sub_type == GGUFValueType.STRING and isinstance(val, list | tuple):
            encoded = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in val]
            items = b"".join(_U64.pack(len(b)) + b for b in encoded)
        elif sub_type in _ITEM_DTYPES and isinstance(val, list | tuple | np.ndarray):
            items = _as_item_bytes(np.asarray(val), np.dtype(_ITEM_DTYPES[sub_type]))
            if items is None:  # gguf-py packs it, or says what is wrong with it
                return super()._pack_val(val, vtype, add_vtype, sub_type)
        else:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        return head + struct.pack("<IQ", sub_type, len(val)) + items


def _as_item_bytes(a: np.ndarray, dt: np.dtype) -> bytes | None:
    """The bytes struct.pack would give ``a``'s values as items of ``dt``, or None where they might differ.

    struct.pack refuses an integer out of the item's range, a float for an integer item and a float
    beyond float32's range; numpy's casts would wrap, truncate or give inf instead: those go to gguf-py.
    """
    if a.ndim != 1 or a.dtype.kind not in "biuf":
        return None
    if dt.kind in "iu":
        info = np.iinfo(dt)
        if a.dtype.kind not in "biu" or a.min() < info.min or a.max() > info.max:
            return None
    if dt.kind == "f":
        try:
            with np.errstate(over="raise"):
                return a.astype(dt).tobytes()
        except FloatingPointError:
            return None
    return a.astype(dt).tobytes()
