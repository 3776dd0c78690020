"""One exercise: a task, its check, its hints and its solution.

Every exercise in the workbook asks the reader to complete a *function*. That one
convention makes the three ways of using the workbook agree:

* self-paced: ``ex.q1.check(my_function)`` calls the function on fresh random
  inputs and answers in one line; ``ex.q1.hint()`` and ``ex.q1.solution()`` help.
* as shipped: the function body is nbgrader's stub, ``raise NotImplementedError()``.
  Defining the function cannot fail, so a fresh notebook runs top to bottom, and
  the check recognises the stub and says "not attempted yet".
* classroom: when the kernel was started by nbgrader to autograde or validate, a check
  that does not pass raises ``AssertionError``, which is how nbgrader's autograder awards
  0 points; one that passes prints its message and returns nothing, which earns the
  cell's points. Which of the two is decided once, when this module is imported, from
  the environment the kernel *process was started with* (see :func:`grading`): a student
  who sets ``os.environ["NBGRADER_EXECUTION"]`` later changes nothing.

A check never lets a student's mistake escape, and cannot be fooled from inside the
student's function:

* every call of the student's function runs under a time limit (``time_limit`` seconds
  for the whole check, 5 by default): a function that runs away is stopped and reported;
* any exception it raises, ``SystemExit`` and a self-raised ``KeyboardInterrupt``
  included, becomes a one-line message (a real interrupt from the reader still stops
  the check); an exception whose ``__str__`` itself fails is reported by its type;
* what it returns is turned into plain ``bool`` / ``int`` / ``float`` / ``str`` /
  ``bytes`` / ``ndarray`` / ``tuple`` / ``list`` values before any comparison, so an
  object that claims to equal everything compares as what it really holds;
* an exercise that asks the reader to *write* something lists the library functions
  that already do it (its ``forbidden``): an answer that calls one of them, directly
  or through an alias, a lambda, a closure, ``functools.partial`` or a module
  attribute, is rejected with "this exercise asks you to write ... yourself";
* an answer that reads the check's frames or objects (``sys._getframe``, tracebacks, ``gc``)
  instead of computing, or a kernel where numpy's, the builtins' or kquant's functions were
  replaced (``np.allclose = lambda *a: True``), gets a message that says so, not a pass.

What no in-kernel check can prevent (rebinding ``ex``, editing this module) is left to
nbgrader's read-only, checksummed check cells and to the instructor: docs/teaching.md.

Expected byte strings are compared by SHA-256 digest and never printed, and no message
prints the expected value of a numeric answer.
"""

from __future__ import annotations

import builtins
import ctypes
import dis
import functools
import gc
import hashlib
import importlib.util
import inspect
import math
import os
import pathlib
import signal
import struct
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CORRECT, INCORRECT, NOT_ATTEMPTED = "correct", "incorrect", "not attempted"
_MARK = {CORRECT: "✔", INCORRECT: "✘", NOT_ATTEMPTED: "…"}
DEFAULT_TIME_LIMIT = 5.0  # seconds of the student's own code per check
LLAMA_CPP = ("gguf.quants", "llama_cpp")  # off limits wherever an exercise asks for a format's own code


class Wrong(Exception):
    """Raised inside a checker: the answer is wrong, and the message says how."""


class NotAttempted(Exception):
    """Raised inside a checker: the answer is still the shipped stub."""


@dataclass(frozen=True)
class CheckResult:
    """What a check found. Truthy only when correct; displays as its one-line message."""

    exercise: str
    status: str
    message: str

    def __bool__(self) -> bool:
        return self.status == CORRECT

    def __repr__(self) -> str:
        return f"{_MARK[self.status]} {self.exercise}: {self.message}"


@dataclass(frozen=True)
class Message:
    """Text for the reader (a hint, a solution) that displays without quotes or escapes."""

    text: str

    def __repr__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


# --- grading or practice: decided once ---------------------------------------------------

_GRADING_MODES = ("autograde", "validate")


def _started_for_grading() -> bool:
    """Was this process started by nbgrader to autograde or validate?

    nbgrader sets ``NBGRADER_EXECUTION`` in its own environment before it starts the
    kernel, so the kernel *inherits* it. On Linux the environment a process was started
    with stays readable in /proc/self/environ whatever the process later does to
    ``os.environ``; elsewhere the value at import time counts. Either saying "grading" is
    enough: nothing a student does after the kernel started can switch grading off.
    """
    values = [os.environ.get("NBGRADER_EXECUTION", "")]
    try:
        for item in pathlib.Path("/proc/self/environ").read_bytes().split(b"\0"):
            if item.startswith(b"NBGRADER_EXECUTION="):
                values.append(item.split(b"=", 1)[1].decode("utf-8", "replace"))
    except OSError:
        pass
    return any(v.strip().lower() in _GRADING_MODES for v in values)


_GRADING = _started_for_grading()


def grading() -> bool:
    """True when this kernel was started by nbgrader to autograde or validate (fixed at import)."""
    return _GRADING


# --- the student's code, run under guard -------------------------------------------------


class _Expired(BaseException):
    """Raised inside the student's code when its time is up (never escapes :func:`_guarded`)."""


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


def _guarded(thunk: Callable, seconds: float):
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


def _type_name(value) -> str:
    try:
        return str.__str__(vars(type)["__name__"].__get__(type(value), type))
    except BaseException:
        return "object"


def _safe_text(e: BaseException, limit: int = 160) -> str:
    """``str(e)`` on one line, or a note that it could not be printed (its ``__str__`` failed or hung)."""
    status, text = _guarded(lambda: str.__str__(str(e)), 1.0)
    if status != "ok":
        return f"<an exception whose message cannot be printed: {_type_name(e)}>"
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
        return Foreign("deeply nested " + _type_name(value))
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
        return Foreign(_type_name(value)) if arr.dtype.kind == "O" else arr[()]
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
            return Foreign("very long " + _type_name(value))
        out = [plain(v, _depth + 1) for v in items]
        return tuple(out) if isinstance(value, tuple) else out
    if hasattr(type(value), "__array__") or hasattr(type(value), "__array_interface__"):
        return plain(np.asarray(value), _depth + 1)  # torch, jax, pandas ... as arrays
    if hasattr(type(value), "__float__") and not hasattr(type(value), "__len__"):
        return float.__float__(float(value))  # Fraction, Decimal
    return Foreign(_type_name(value))


# --- "write it yourself": answers that call the answer key ------------------------------


def _module_files(module) -> tuple[str, ...]:
    """The source file of a module, or the folder of a package, for matching code objects."""
    if isinstance(module, str):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            return ()
        origin = spec.origin
        is_package = spec.submodule_search_locations is not None
    else:
        origin = getattr(module, "__file__", None)
        if origin is None:
            return ()
        is_package = hasattr(module, "__path__")
    path = pathlib.Path(origin)
    if is_package:
        folder = str(path.parent) + os.sep
        return (folder, os.path.realpath(folder) + os.sep)
    return (str(path), os.path.realpath(path))


def _unwrap(f):
    while isinstance(f, functools.partial):
        f = f.func
    return getattr(f, "__func__", f)


class OffLimits:
    """The functions and modules one exercise's answer must not call, and how to name them."""

    def __init__(self, what: str, items):
        self.what = what
        self.codes: dict[int, str] = {}
        self.modules: list[tuple[tuple[str, ...], str]] = []
        self.objects: dict[int, str] = {}
        self.bindings: list[tuple[object, str, object, object]] = []  # (module, attr, object, code)
        self._keep = []
        for item in items:
            self._add(item)
        self.native = any(name == "llama_cpp" for _, name in self.modules)  # llama.cpp's C code is off limits

    def _add(self, item):
        if isinstance(item, str):  # a module by name, not imported: "llama_cpp"
            files = _module_files(item)
            if files:
                self.modules.append((files, item))
            return
        if isinstance(item, types.ModuleType):
            self.modules.append((_module_files(item), item.__name__))
            self.objects[id(item)] = item.__name__
            self._keep.append(item)
            return
        f = _unwrap(item)
        inner = inspect.unwrap(f)  # a decorator's wrapper shares its code with every function it wraps
        name = f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', getattr(f, '__name__', '?'))}"
        self.objects[id(item)] = name
        self.objects[id(f)] = name
        self.objects[id(inner)] = name
        self._keep += [item, f, inner]
        code = getattr(inner, "__code__", None)
        if code is not None:
            self.codes[id(code)] = name
            self._keep.append(code)
            module = sys.modules.get(getattr(f, "__module__", ""))
            attr = getattr(f, "__name__", "")
            if module is not None and vars(module).get(attr) is f:
                self.bindings.append((module, attr, inner, code))

    def prefixes(self) -> tuple[str, ...]:
        return tuple(p for files, _ in self.modules for p in files)

    def module_name(self, filename: str) -> str | None:
        for files, name in self.modules:
            if any(filename == p or (p.endswith(os.sep) and filename.startswith(p)) for p in files):
                return name
        return None

    def tampered(self) -> str | None:
        """The answer key this kernel has replaced or rewritten, if any (the check's own reference)."""
        for module, attr, inner, code in self.bindings:
            bound = vars(module).get(attr)
            if bound is None or inspect.unwrap(_unwrap(bound)) is not inner or inner.__code__ is not code:
                return f"{module.__name__}.{attr}"
        return None

    def message(self, name: str) -> str:
        return f"this exercise asks you to write {self.what} yourself; `{name}` is the answer key"


_BANNED_NAMES = {"ctypes", "CDLL", "cdll", "pythonapi", "llama_cpp", "ggml_quantize_chunk", "_lib"}


def _referenced(fn, off: OffLimits, seen=None) -> str | None:
    """A name of ``off`` that ``fn`` refers to in its code, closures, defaults or partial arguments."""
    seen = set() if seen is None else seen
    if id(fn) in seen or len(seen) > 500:
        return None
    seen.add(id(fn))
    if id(fn) in off.objects:
        return off.objects[id(fn)]
    if isinstance(fn, (ctypes.CDLL, ctypes._CFuncPtr)):
        return "llama.cpp's C library (through ctypes)"
    if isinstance(fn, functools.partial):
        for part in (fn.func, *fn.args, *fn.keywords.values()):
            found = _referenced(part, off, seen)
            if found:
                return found
        return None
    if isinstance(fn, types.MethodType):
        return _referenced(fn.__func__, off, seen)
    if isinstance(fn, types.ModuleType):
        name = off.module_name(getattr(fn, "__file__", "") or "")
        return name
    if not isinstance(fn, types.FunctionType):
        method = inspect.getattr_static(type(fn), "__call__", None)
        return _referenced(method, off, seen) if isinstance(method, types.FunctionType) else None
    related = list(fn.__defaults__ or ()) + list((fn.__kwdefaults__ or {}).values())
    for cell in fn.__closure__ or ():
        try:
            related.append(cell.cell_contents)
        except ValueError:
            pass
    found = _scan_code(fn.__code__, fn.__globals__, off)
    if found:
        return found
    for obj in related:
        if callable(obj) or isinstance(obj, types.ModuleType):
            found = _referenced(obj, off, seen)
            if found:
                return found
    # functions of the student's own notebook that this one calls
    for name in _all_names(fn.__code__):
        obj = fn.__globals__.get(name)
        own = getattr(obj, "__module__", None) == fn.__module__
        if own and isinstance(obj, (types.FunctionType, functools.partial)):
            found = _referenced(obj, off, seen)
            if found:
                return found
    return None


def _all_names(code) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _all_names(const)
    return names


def _scan_code(code, globals_: dict, off: OffLimits) -> str | None:
    """Follow ``a.b.c`` chains and ``from a import b`` in ``code`` (and the code nested in it)."""
    if off.native and set(code.co_names) & _BANNED_NAMES:
        return "llama.cpp's C library (through ctypes)"
    obj = None
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            name = ins.argval
            obj = globals_.get(name)
        elif ins.opname == "IMPORT_NAME":
            obj = sys.modules.get(ins.argval)
            if obj is None and off.module_name(_spec_origin(ins.argval) or "") is not None:
                return ins.argval
        elif ins.opname in ("LOAD_ATTR", "LOAD_METHOD", "IMPORT_FROM") and isinstance(obj, types.ModuleType):
            obj = vars(obj).get(ins.argval)
        elif ins.opname not in ("CACHE", "PRECALL", "PUSH_NULL", "EXTENDED_ARG"):
            obj = None
            continue
        else:
            continue
        if obj is None:
            continue
        if id(obj) in off.objects:
            return off.objects[id(obj)]
        unwrapped = _unwrap(obj)
        if callable(unwrapped) and hasattr(unwrapped, "__wrapped__"):
            unwrapped = inspect.unwrap(unwrapped)
        code_of = getattr(unwrapped, "__code__", None)
        if code_of is not None and id(code_of) in off.codes:
            return off.codes[id(code_of)]
        if isinstance(obj, types.ModuleType):
            hit = off.module_name(getattr(obj, "__file__", "") or "")
            if hit:
                return hit
        if isinstance(obj, (ctypes.CDLL, ctypes._CFuncPtr)):
            return "llama.cpp's C library (through ctypes)"
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found = _scan_code(const, globals_, off)
            if found:
                return found
    return None


def _spec_origin(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec else None


# --- answers that look into the check instead of computing ------------------------------

# Names through which code reaches the frames (and so the local variables) of the running
# check, or any object at all: an answer computes from its arguments and needs none of them.
_PEEK_NAMES = frozenset(
    "_getframe _current_frames currentframe getouterframes getinnerframes f_back f_locals f_globals tb_frame "
    "gi_frame cr_frame ag_frame __traceback__ get_referrers get_referents get_objects settrace setprofile "
    "monitoring".split()
)
_PEEK_CALLS = {
    id(f): name
    for f, name in [
        (sys._getframe, "sys._getframe"),
        (sys._current_frames, "sys._current_frames"),
        (gc.get_objects, "gc.get_objects"),
        (gc.get_referrers, "gc.get_referrers"),
        (gc.get_referents, "gc.get_referents"),
        (sys.settrace, "sys.settrace"),
    ]
}
_PACKAGE_DIR = str(pathlib.Path(__file__).resolve().parents[1]) + os.sep
_TRUSTED = tuple(
    {p for base in (sys.prefix, sys.base_prefix, sys.exec_prefix) for p in (base, os.path.realpath(base))}
    | {_PACKAGE_DIR}
)


def _peeks(fn, seen=None) -> str | None:
    """A frame- or object-walking name in ``fn``'s code (or the code it closes over / calls in its notebook)."""
    seen = set() if seen is None else seen
    if id(fn) in seen or len(seen) > 500:
        return None
    seen.add(id(fn))
    if isinstance(fn, functools.partial):
        return next(filter(None, (_peeks(f, seen) for f in (fn.func, *fn.args) if callable(f))), None)
    if isinstance(fn, types.MethodType):
        return _peeks(fn.__func__, seen)
    if not isinstance(fn, types.FunctionType):
        method = inspect.getattr_static(type(fn), "__call__", None)
        return _peeks(method, seen) if isinstance(method, types.FunctionType) else None
    found = _peek_in_code(fn.__code__)
    if found:
        return found
    for cell in fn.__closure__ or ():
        try:
            obj = cell.cell_contents
        except ValueError:
            continue
        if callable(obj):
            found = _peeks(obj, seen)
            if found:
                return found
    for name in _all_names(fn.__code__):
        obj = fn.__globals__.get(name)
        if isinstance(obj, types.FunctionType) and obj.__module__ == fn.__module__:
            found = _peeks(obj, seen)
            if found:
                return found
    return None


def _peek_in_code(code) -> str | None:
    strings = {c for c in code.co_consts if isinstance(c, str)}
    hit = (set(code.co_names) | strings) & _PEEK_NAMES
    if hit:
        return sorted(hit)[0]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found = _peek_in_code(const)
            if found:
                return found
    return None


def _peek_message(name: str) -> str:
    return (
        f"your function uses `{name}`, which looks into the running program (its frames, tracebacks or objects):"
        " an answer computes its result from its arguments"
    )


# --- a kernel whose tools were replaced ----------------------------------------------------

_GUARDED_MODULES = (builtins, np, math, struct, hashlib, functools, inspect)
_MUTABLE = {("kquant.exercises.core", "_prev_sigint")}
_BUILTINS = frozenset(
    "isinstance issubclass len float int bool str bytes bytearray tuple list dict set frozenset abs min max sum "
    "sorted range enumerate zip any all round next iter map filter type getattr hasattr callable repr format "
    "id vars memoryview slice object".split()
)
_snapshot: dict[tuple[str, str], int] = {}
_snapshot_modules: dict[str, types.ModuleType] = {}


def _is_tool(obj) -> bool:
    return callable(obj) or isinstance(obj, types.ModuleType)  # numpy's functions are dispatcher objects


def _take_snapshot() -> None:
    """Record the functions of numpy, builtins and every loaded kquant module (before any student code runs)."""
    modules = list(_GUARDED_MODULES) + [
        m for name, m in list(sys.modules.items()) if (name == "kquant" or name.startswith("kquant.")) and m is not None
    ]
    for module in modules:
        if module.__name__ in _snapshot_modules:
            continue
        _snapshot_modules[module.__name__] = module
        for attr, obj in list(vars(module).items()):
            if module is builtins and attr not in _BUILTINS:
                continue  # IPython rebinds some (input, display) at every cell
            if _is_tool(obj) and (module.__name__, attr) not in _MUTABLE:
                _snapshot[(module.__name__, attr)] = id(obj)
                _keep_alive.append(obj)


_keep_alive: list = []


def _replaced_tool() -> str | None:
    """The first recorded function (numpy.allclose, builtins.isinstance, ...) this kernel has replaced."""
    for (module_name, attr), ident in _snapshot.items():
        if id(vars(_snapshot_modules[module_name]).get(attr)) != ident:
            return f"{module_name}.{attr}"
    return None


def _replaced_message(name: str) -> str:
    return (
        f"`{name}` has been replaced or rewritten in this kernel, so nothing can be checked: restart the kernel and"
        " run the notebook again"
    )


class _Watch:
    """A profile hook while the student's function runs: does the answer key run? does it look at frames?"""

    def __init__(self, off: OffLimits | None):
        self.codes = off.codes if off is not None else {}
        self.prefixes = off.prefixes() if off is not None else ()
        self.off = off
        self.hit: str | None = None
        self.peek: str | None = None

    def __call__(self, frame, event, arg):
        if event == "c_call":
            if id(arg) in _PEEK_CALLS and not frame.f_code.co_filename.startswith(_TRUSTED):
                self.peek = self.peek or _PEEK_CALLS[id(arg)]
        elif event == "call" and self.hit is None and self.off is not None:
            code = frame.f_code
            if id(code) in self.codes:
                self.hit = self.codes[id(code)]
            elif self.prefixes and code.co_filename.startswith(self.prefixes):
                self.hit = self.off.module_name(code.co_filename) or code.co_filename


# --- one check at a time -----------------------------------------------------------------


class _Run:
    """The state of the check in progress: time left and what is off limits."""

    def __init__(self, seconds: float, off: OffLimits | None):
        self.seconds = seconds
        self.left = seconds
        self.off = off


_current: _Run | None = None


class Exercise:
    """A graded exercise: the reader completes ``def <signature>:``.

    ``checker(answer, rng)`` tests the reader's function on inputs drawn from ``rng``
    and returns a short success message, or raises :class:`Wrong` / :class:`NotAttempted`.
    ``solution`` is the function *body*: the text that goes between the notebook's
    ``### BEGIN SOLUTION`` and ``### END SOLUTION`` markers. ``forbidden`` lists what an
    answer must not call (functions, modules, or module names such as ``"llama_cpp"``)
    and ``task`` names what the reader is asked to write, for the message that says so;
    ``time_limit`` bounds the seconds the reader's code may take over the whole check.
    """

    def __init__(
        self,
        notebook: str,
        name: str,
        signature: str,
        checker: Callable,
        hints: list[str],
        solution: str,
        points: int = 1,
        forbidden=(),
        task: str = "",
        time_limit: float = DEFAULT_TIME_LIMIT,
    ):
        self.notebook = notebook
        self.name = name
        self.signature = signature
        self.function_name = signature.split("(", 1)[0]
        self._checker = checker
        self.hints = list(hints)
        self.solution_code = textwrap.dedent(solution).strip("\n")
        self.points = points
        self.time_limit = float(time_limit)
        self.off_limits = OffLimits(task or f"`{self.function_name}`", forbidden) if forbidden else None
        self._hints_shown = 0
        _take_snapshot()  # the modules the exercise's module has imported, before any student code runs

    @property
    def grade_id(self) -> str:
        """Stem of the nbgrader ids of this exercise's cells: ``nb01-q1``."""
        return f"{self.notebook}-{self.name}"

    def evaluate(self, answer=None, seed=None) -> CheckResult:
        """Check ``answer`` without side effects (no grading-mode exception). ``seed`` fixes the inputs."""
        global _current
        label = f"{self.notebook} {self.name}"
        rng = np.random.default_rng(seed)
        outer, _current = _current, _Run(self.time_limit, self.off_limits)
        try:
            fn = expect_function(answer, self.function_name)
            replaced = _replaced_tool()
            if replaced:
                raise Wrong(_replaced_message(replaced))
            status, peek = _guarded(lambda: _peeks(fn), 2.0)  # the answer's attributes may be its own code
            if status != "ok":
                raise Wrong("your function could not be inspected: pass a plain function, defined with def")
            if peek:
                raise Wrong(_peek_message(peek))
            if self.off_limits is not None:
                changed = self.off_limits.tampered()
                if changed:
                    raise Wrong(
                        f"`{changed}` has been replaced or rewritten in this kernel, so nothing can be checked: "
                        "restart the kernel and run the notebook again"
                    )
                status, found = _guarded(lambda: _referenced(fn, self.off_limits), 2.0)
                if status != "ok":
                    raise Wrong("your function could not be inspected: pass a plain function, defined with def")
                if found:
                    raise Wrong(self.off_limits.message(found))
            with np.errstate(all="ignore"):  # the student's numpy warnings are not our message
                message = self._checker(fn, rng)
        except NotAttempted as e:
            return CheckResult(label, NOT_ATTEMPTED, str(e))
        except Wrong as e:
            return CheckResult(label, INCORRECT, " ".join(str(e).split()))
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # a check must answer, whatever the answer was
            return CheckResult(label, INCORRECT, f"could not check this answer ({_type_name(e)}: {_safe_text(e)})")
        finally:
            _current = outer
        return CheckResult(label, CORRECT, message)

    def check(self, answer=None) -> CheckResult | None:
        """Check the reader's function on fresh random inputs and say what is right or wrong.

        Under nbgrader a pass is printed, not returned: nbgrader reads a check cell's
        result value as a partial-credit score, and warns about one that is not a number.
        """
        result = self.evaluate(answer)
        if not _GRADING:
            return result
        if not result:
            raise AssertionError(repr(result))
        print(repr(result))
        return None

    def hint(self) -> Message:
        """The next hint (they cycle)."""
        if not self.hints:
            return Message(f"No hint for this one: try ex.{self.name}.solution()")
        i = self._hints_shown % len(self.hints)
        self._hints_shown += 1
        return Message(f"Hint {i + 1} of {len(self.hints)}: {self.hints[i]}")

    def solution(self) -> Message:
        """A complete solution, as the whole function."""
        return Message(f"def {self.signature}:\n" + textwrap.indent(self.solution_code, "    "))

    def __repr__(self) -> str:
        return f"<exercise {self.grade_id}: def {self.signature}, {self.points} point(s)>"


def exercises_in(module) -> list[Exercise]:
    """The exercises a ``kquant.exercises.nbXX`` module defines, in order q1, q2, ..."""
    found = [v for v in vars(module).values() if isinstance(v, Exercise)]
    return sorted(found, key=lambda e: int(e.name[1:]))


# --- helpers for checkers -------------------------------------------------------------


def expect_function(answer, name: str) -> Callable:
    """The reader's function, or a clear complaint about what was passed instead."""
    if answer is None or answer is Ellipsis:
        raise NotAttempted(f"not attempted yet: complete `{name}` in the cell above, run it, then run this check")
    if not callable(answer):
        raise Wrong(
            f"expected the function `{name}` itself, got {_a(_type_name(answer))}:"
            f" write the name without parentheses, e.g. check({name})"
        )
    return answer


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def call(fn: Callable, *args, name: str | None = None):
    """Call the reader's function on copies of ``args``, under the check's time limit and watch.

    Returns what it returned as :func:`plain` data. Its exceptions, a timeout and a call
    of the exercise's answer key become :class:`Wrong` / :class:`NotAttempted`.
    """
    run = _current or _Run(DEFAULT_TIME_LIMIT, None)
    if name is None:
        name = str.__str__(fn.__name__) if isinstance(fn, types.FunctionType) else "your function"
    args_copy = [a.copy() if isinstance(a, (np.ndarray, list, dict, bytearray)) else a for a in args]
    watch = _Watch(run.off)

    def thunk():
        previous = sys.getprofile()
        previous_threads = threading._profile_hook
        sys.setprofile(watch)
        threading.setprofile(watch)  # and in any thread the answer starts
        try:
            value = plain(fn(*args_copy))  # plain() too: a returned object's __array__ is the student's code
        finally:
            still = sys.getprofile()
            sys.setprofile(previous)
            threading.setprofile(previous_threads)
        if still is not watch:
            raise _Tampered()
        return value

    t0 = time.perf_counter()
    status, value = _guarded(thunk, run.left)
    run.left -= time.perf_counter() - t0
    replaced = _replaced_tool()
    if replaced:
        raise Wrong(_replaced_message(replaced))
    if watch.peek:
        raise Wrong(_peek_message(watch.peek))
    if watch.hit:
        raise Wrong(run.off.message(watch.hit))
    if status == "ok":
        return value
    if status == "expired":
        run.left = 0.0
        raise Wrong(
            f"your function did not finish within {run.seconds:g} s (`{name}({_short(args)})` was still running):"
            " look for a loop that never ends"
        )
    e = value
    if isinstance(e, _Tampered):
        raise Wrong(f"`{name}` switched off the check's watch (sys.setprofile); an answer may not do that")
    if isinstance(e, NotImplementedError):
        raise NotAttempted(
            f"not attempted yet: replace `raise NotImplementedError()` in `{name}` with your code"
        ) from None
    if isinstance(e, TypeError) and _arity_mismatch(fn, len(args)):
        raise Wrong(f"`{name}` should take {len(args)} argument(s) ({_safe_text(e)})") from None
    raise Wrong(f"`{name}({_short(args)})` raised {_type_name(e)}: {_safe_text(e)}") from None


class _Tampered(Exception):
    """The student's function removed the profile hook that watches for the answer key."""


def _arity_mismatch(fn, n: int) -> bool:
    status, value = _guarded(lambda: inspect.signature(fn).bind(*range(n)), 1.0)
    return status == "raised" and isinstance(value, TypeError)


def _short(args) -> str:
    """Arguments as a short readable string, for messages."""
    parts = []
    for a in args:
        if isinstance(a, np.ndarray):
            parts.append(f"<{a.dtype} array {a.shape}>")
        elif isinstance(a, (bytes, bytearray)):
            parts.append(f"<{len(a)} bytes>")
        else:
            r = repr(a)
            parts.append(r if len(r) <= 40 else r[:37] + "...")
    return ", ".join(parts)


def _none(value, what: str) -> None:
    if value is None:
        raise Wrong(f"{what} returned None: did the function forget to `return` its result?")
    if isinstance(value, Foreign):
        raise Wrong(f"{what} returned {_a(value.type_name)}, which is not a value this check can compare")


def as_array(value, shape: tuple, what: str, dtype=np.float64) -> np.ndarray:
    """``value`` as an array of ``shape``, or a Wrong saying why it is not one."""
    _none(value, what)
    if isinstance(value, (str, bytes)):
        raise Wrong(f"{what} should be an array of numbers, got {_a(type(value).__name__)}")
    try:
        arr = np.asarray(value, dtype=dtype)
    except OverflowError:
        raise Wrong(f"{what} holds a number far too large to be right") from None
    except (TypeError, ValueError) as e:
        raise Wrong(f"{what} should be an array of numbers, got {_type_name(value)} ({_safe_text(e, 80)})") from None
    if arr.shape != tuple(shape):
        raise Wrong(f"{what} has shape {arr.shape}, expected {tuple(shape)}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise Wrong(f"{what} contains NaN or inf at {int(np.flatnonzero(~np.isfinite(arr))[0])} (flat index)")
    return arr


def as_number(value, what: str) -> float:
    """``value`` as a finite float, or a Wrong saying why it is not one."""
    _none(value, what)
    if isinstance(value, (str, bytes)):
        raise Wrong(f"{what} should be a number, got the {type(value).__name__} {value[:40]!r}")
    try:
        x = float(np.asarray(value).reshape(()))
    except OverflowError:
        raise Wrong(f"{what} is far too large to be right") from None
    except (TypeError, ValueError):
        raise Wrong(f"{what} should be a single number, got {_type_name(value)} {np.shape(value)}") from None
    if not np.isfinite(x):
        raise Wrong(f"{what} is {x}, expected a finite number")
    return x


def as_bool(value, what: str) -> bool:
    """``value`` as a bool: ``True`` / ``False`` or numpy's booleans, never 0 / 1 or other numbers."""
    _none(value, what)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype == bool:
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        raise Wrong(f"{what} returned {int(value)}: return True or False (a bool), not the number {int(value)}")
    raise Wrong(f"{what} should return True or False, got {_a(_type_name(value))}")


def as_text(value, what: str, example: str) -> str:
    """``value`` as a plain str, or a Wrong that says a str was expected."""
    if value is None:
        _none(value, what)
    if not isinstance(value, str):
        raise Wrong(f"{what} should return a str such as {example!r}, got {_a(_type_name(value))}")
    return value


def as_bytes(value, length: int, what: str) -> bytes:
    """``value`` (bytes, bytearray, uint8 array, list of 0..255) as bytes of ``length``."""
    _none(value, what)
    if isinstance(value, bytes):
        out = value
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):
            raise Wrong(f"{what} should be bytes (or a uint8 array), got {_type_name(value)}") from None
        if arr.dtype.kind not in "iu" or arr.size and (arr.min() < 0 or arr.max() > 255):
            raise Wrong(f"{what} should be bytes (or a uint8 array), got {_type_name(value)} of {arr.dtype}")
        out = arr.astype(np.uint8).tobytes()
    if len(out) != length:
        raise Wrong(f"{what} is {len(out)} bytes long, expected {length}")
    return out


def as_tuple(value, n: int, names: str, what: str) -> tuple:
    """``value`` as a tuple (or list) of ``n`` items, or a Wrong naming the items expected."""
    _none(value, what)
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise Wrong(
            f"{what} should return a tuple ({names}), got {_a(_type_name(value))}"
            + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else "")
        )
    return tuple(value)


def digest(b: bytes) -> str:
    """SHA-256 of a byte string: what byte answers are compared by."""
    return hashlib.sha256(bytes(b)).hexdigest()


def same_bytes(got: bytes, want: bytes, what: str = "the bytes", whose: str = "llama.cpp's") -> None:
    """Compare by digest; on a mismatch say where the first difference is, never what it should be."""
    if digest(got) == digest(want):
        return
    i = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
    raise Wrong(f"{what} differ from {whose}: first difference at byte {i} of {len(want)}")


def random_k_block(rng, nbytes: int) -> np.ndarray:
    """Random bytes of a Q4_K/Q5_K block whose fp16 d and dmin (bytes 0-3) are ordinary numbers.

    Real blocks never carry inf or NaN scales, so a check should not feed them to students.
    """
    block = rng.integers(0, 256, nbytes).astype(np.uint8)
    block[0:4] = np.array([rng.uniform(1e-4, 1e-2), rng.uniform(1e-4, 1e-2)], dtype="<f2").view(np.uint8)
    return block


_take_snapshot()
