""" "Write it yourself": answers that call the answer key, look into the check, or replaced its tools.

An exercise lists what it forbids (``OffLimits``); an answer is refused when it reaches one of
those functions (statically: names, closures, partials, module attributes; and while it runs:
a profile hook), when it reads the check's frames or objects, or when numpy's, the builtins'
or kquant's functions were replaced in the kernel.
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
import struct
import sys
import types

import numpy as np

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


def referenced(fn, off: OffLimits, seen=None) -> str | None:
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
            found = referenced(part, off, seen)
            if found:
                return found
        return None
    if isinstance(fn, types.MethodType):
        return referenced(fn.__func__, off, seen)
    if isinstance(fn, types.ModuleType):
        name = off.module_name(getattr(fn, "__file__", "") or "")
        return name
    if not isinstance(fn, types.FunctionType):
        method = inspect.getattr_static(type(fn), "__call__", None)
        return referenced(method, off, seen) if isinstance(method, types.FunctionType) else None
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
            found = referenced(obj, off, seen)
            if found:
                return found
    # functions of the student's own notebook that this one calls
    for name in _all_names(fn.__code__):
        obj = fn.__globals__.get(name)
        own = getattr(obj, "__module__", None) == fn.__module__
        if own and isinstance(obj, (types.FunctionType, functools.partial)):
            found = referenced(obj, off, seen)
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


def peeks(fn, seen=None) -> str | None:
    """A frame- or object-walking name in ``fn``'s code (or the code it closes over / calls in its notebook)."""
    seen = set() if seen is None else seen
    if id(fn) in seen or len(seen) > 500:
        return None
    seen.add(id(fn))
    if isinstance(fn, functools.partial):
        return next(filter(None, (peeks(f, seen) for f in (fn.func, *fn.args) if callable(f))), None)
    if isinstance(fn, types.MethodType):
        return peeks(fn.__func__, seen)
    if not isinstance(fn, types.FunctionType):
        method = inspect.getattr_static(type(fn), "__call__", None)
        return peeks(method, seen) if isinstance(method, types.FunctionType) else None
    found = _peek_in_code(fn.__code__)
    if found:
        return found
    for cell in fn.__closure__ or ():
        try:
            obj = cell.cell_contents
        except ValueError:
            continue
        if callable(obj):
            found = peeks(obj, seen)
            if found:
                return found
    for name in _all_names(fn.__code__):
        obj = fn.__globals__.get(name)
        if isinstance(obj, types.FunctionType) and obj.__module__ == fn.__module__:
            found = peeks(obj, seen)
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


def peek_message(name: str) -> str:
    return (
        f"your function uses `{name}`, which looks into the running program (its frames, tracebacks or objects):"
        " an answer computes its result from its arguments"
    )


# --- a kernel whose tools were replaced ----------------------------------------------------

_GUARDED_MODULES = (builtins, np, math, struct, hashlib, functools, inspect)
_MUTABLE = {("kquant.exercises.guard", "_prev_sigint")}
_BUILTINS = frozenset(
    "isinstance issubclass len float int bool str bytes bytearray tuple list dict set frozenset abs min max sum "
    "sorted range enumerate zip any all round next iter map filter type getattr hasattr callable repr format "
    "id vars memoryview slice object".split()
)
_snapshot: dict[tuple[str, str], int] = {}
_snapshot_modules: dict[str, types.ModuleType] = {}


def _is_tool(obj) -> bool:
    return callable(obj) or isinstance(obj, types.ModuleType)  # numpy's functions are dispatcher objects


def take_snapshot() -> None:
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


def replaced_tool() -> str | None:
    """The first recorded function (numpy.allclose, builtins.isinstance, ...) this kernel has replaced."""
    for (module_name, attr), ident in _snapshot.items():
        if id(vars(_snapshot_modules[module_name]).get(attr)) != ident:
            return f"{module_name}.{attr}"
    return None


def replaced_message(name: str) -> str:
    return (
        f"`{name}` has been replaced or rewritten in this kernel, so nothing can be checked: restart the kernel and"
        " run the notebook again"
    )


class Watch:
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
