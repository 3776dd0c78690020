"""The student's code, run under guard: a time limit, no exception escapes, answers made plain.

Every call of a student's function in a check runs through ``guarded``: SIGALRM in the main
thread (a watchdog thread elsewhere) stops a runaway answer; ``plain`` turns what it returned
into ordinary values, so an object that claims to equal everything compares as what it holds.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Callable

import numpy as np

# --- the student's code, run under guard -------------------------------------------------


class _Expired(BaseException):
    """Raised inside the student's code when its time is up (never escapes :func:`guarded`)."""


class Foreign:
    """What the student returned when it is none of the plain types a check compares."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


_live = None  # the token of the guarded run in progress, or None
_interrupted = False  # the reader pressed interrupt during a guarded run
_prev_sigint = None


_fired = False  # the time limit of the guarded run in progress has passed


def _on_alarm(signum, frame):
    global _fired
    if _live is not None:
        _fired = True
        raise _Expired()


def _on_sigint(signum, frame):
    global _interrupted
    _interrupted = True
    if callable(_prev_sigint) and _prev_sigint is not _on_sigint:
        _prev_sigint(signum, frame)
    raise KeyboardInterrupt


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def guarded(thunk: Callable, seconds: float):
    """Run ``thunk()`` for at most ``seconds``: ("ok", value) | ("raised", exc) | ("expired", None).

    In the main thread (where Jupyter runs cells) a SIGALRM timer raises inside the
    student's code, even in ``time.sleep``; elsewhere a watchdog thread sets an
    asynchronous exception. Either way the timer is disarmed before this returns. A
    ``KeyboardInterrupt`` is re-raised only when the reader really interrupted (a SIGINT
    arrived); one the student's code raised itself is just an exception.
    """
    global _live, _interrupted, _prev_sigint, _fired
    if _live is not None:  # already inside a guarded run: its timer and handlers stay in charge
        try:
            return ("ok", thunk())
        except (_Expired, KeyboardInterrupt):
            raise
        except BaseException as e:
            return ("raised", e)
    token = object()
    use_signal = _in_main_thread() and hasattr(signal, "setitimer")
    watchdog = None
    pending = _Pending()
    old_alarm = old_sigint = None
    seconds = max(float(seconds), 0.001)
    if use_signal:
        old_alarm = signal.signal(signal.SIGALRM, _on_alarm)
        old_sigint = signal.getsignal(signal.SIGINT)
        if old_sigint is not _on_sigint:
            _prev_sigint = old_sigint
            signal.signal(signal.SIGINT, _on_sigint)
    _interrupted = _fired = False
    outcome = None
    try:
        try:
            _live = token
            if use_signal:
                signal.setitimer(signal.ITIMER_REAL, seconds, 0.25)  # repeats, in case the first is swallowed
            else:
                tid = threading.get_ident()
                watchdog = threading.Timer(seconds, _async_expire, (tid, token, pending))
                watchdog.daemon = True
                watchdog.start()
            try:
                outcome = ("ok", thunk())
            finally:
                with pending.lock:  # from here on the watchdog schedules nothing
                    _live = None
                if use_signal:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except _Expired:
            pending.delivered = True
            _live = None
            outcome = ("expired", None)
        except KeyboardInterrupt as e:
            if _interrupted:
                raise
            outcome = ("raised", e)
        except BaseException as e:  # SystemExit, GeneratorExit, anything the student raised
            outcome = ("raised", e)
    except _Expired:  # a tick that landed between the student's return and the disarm
        pending.delivered = True
        outcome = outcome or ("expired", None)
    finally:
        _live = None
        if use_signal:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_alarm if old_alarm is not None else signal.SIG_DFL)
            if old_sigint is not None and old_sigint is not _on_sigint:
                signal.signal(signal.SIGINT, old_sigint)
        elif watchdog is not None:
            with pending.lock:
                _live = None
            watchdog.cancel()
            watchdog.join()
            if pending.scheduled and not pending.delivered:
                _absorb()
    if _fired:  # time ran out, even if the student's code caught that and went on to return something
        outcome = ("expired", None)
    return outcome


class _Pending:
    """The watchdog's asynchronous exception: scheduled, and delivered to the student's thread?"""

    def __init__(self):
        self.lock = threading.Lock()
        self.scheduled = self.delivered = False


def _async_expire(tid: int, token, pending: _Pending) -> None:
    global _fired
    with pending.lock:
        if _live is token:
            _fired = pending.scheduled = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(_Expired))


def _absorb() -> None:
    """Take delivery of a scheduled asynchronous exception that arrived after the student's code ended.

    (Clearing it with PyThreadState_SetAsyncExc(tid, NULL) would leave CPython 3.11's
    interpreter-wide "async exception pending" flag set, and every thread would then
    stop at every bytecode to look for it.)
    """
    try:
        for _ in range(100_000):
            pass
    except _Expired:
        pass


def type_name(value) -> str:
    try:
        return str.__str__(vars(type)["__name__"].__get__(type(value), type))
    except BaseException:
        return "object"


def safe_text(e: BaseException, limit: int = 160) -> str:
    """``str(e)`` on one line, or a note that it could not be printed (its ``__str__`` failed or hung)."""
    status, text = guarded(lambda: str.__str__(str(e)), 1.0)
    if status != "ok":
        return f"<an exception whose message cannot be printed: {type_name(e)}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_MAX_ITEMS = 10**6


def plain(value, _depth: int = 0):
    """``value`` as plain data: exact bool, int, float, str, bytes, ndarray, tuple, list; else :class:`Foreign`.

    The base types' own methods are used (``str.__str__``, ``float.__float__``, ...), so a
    subclass that overrides ``__eq__`` or its methods is reduced to the value it holds.
    """
    if value is None or value is Ellipsis or type(value) in (bool, int, float, str, bytes):
        return value
    if _depth > 20:
        return Foreign("deeply nested " + type_name(value))
    if isinstance(value, np.ndarray):
        arr = np.array(value, copy=True, subok=False)
        if arr.dtype.kind == "O":
            if arr.size > _MAX_ITEMS:
                return Foreign("object array")
            out = np.empty(arr.shape, dtype=object)
            for i, item in enumerate(arr.ravel()):
                out.flat[i] = plain(item, _depth + 1)
            return out
        return arr
    if isinstance(value, np.generic):
        arr = np.array(value, subok=False)
        return Foreign(type_name(value)) if arr.dtype.kind == "O" else arr[()]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(memoryview(value))
    if isinstance(value, (tuple, list)):
        items = tuple.__getitem__(value, slice(None)) if isinstance(value, tuple) else list.copy(value)
        if len(items) > _MAX_ITEMS:
            return Foreign("very long " + type_name(value))
        out = [plain(v, _depth + 1) for v in items]
        return tuple(out) if isinstance(value, tuple) else out
    if hasattr(type(value), "__array__") or hasattr(type(value), "__array_interface__"):
        return plain(np.asarray(value), _depth + 1)  # torch, jax, pandas ... as arrays
    if hasattr(type(value), "__float__") and not hasattr(type(value), "__len__"):
        return float.__float__(float(value))  # Fraction, Decimal
    return Foreign(type_name(value))
