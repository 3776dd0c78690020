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
  cell's points. Which of the two is decided once, when the exercises are imported, from
  the environment the kernel *process was started with* (kquant.exercises.mode): a student
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

import hashlib
import inspect
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kquant.exercises.answer_key import (
    OffLimits,
    Watch,
    peek_message,
    peeks,
    referenced,
    replaced_message,
    replaced_tool,
    take_snapshot,
)
from kquant.exercises.guard import Foreign, guarded, plain, safe_text, type_name
from kquant.exercises.mode import grading

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
        take_snapshot()  # the modules the exercise's module has imported, before any student code runs

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
            replaced = replaced_tool()
            if replaced:
                raise Wrong(replaced_message(replaced))
            status, peek = guarded(lambda: peeks(fn), 2.0)  # the answer's attributes may be its own code
            if status != "ok":
                raise Wrong("your function could not be inspected: pass a plain function, defined with def")
            if peek:
                raise Wrong(peek_message(peek))
            if self.off_limits is not None:
                changed = self.off_limits.tampered()
                if changed:
                    raise Wrong(
                        f"`{changed}` has been replaced or rewritten in this kernel, so nothing can be checked: "
                        "restart the kernel and run the notebook again"
                    )
                status, found = guarded(lambda: referenced(fn, self.off_limits), 2.0)
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
            return CheckResult(label, INCORRECT, f"could not check this answer ({type_name(e)}: {safe_text(e)})")
        finally:
            _current = outer
        return CheckResult(label, CORRECT, message)

    def check(self, answer=None) -> CheckResult | None:
        """Check the reader's function on fresh random inputs and say what is right or wrong.

        Under nbgrader a pass is printed, not returned: nbgrader reads a check cell's
        result value as a partial-credit score, and warns about one that is not a number.
        """
        result = self.evaluate(answer)
        if not grading():
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
            f"expected the function `{name}` itself, got {_a(type_name(answer))}:"
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
    watch = Watch(run.off)

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
    status, value = guarded(thunk, run.left)
    run.left -= time.perf_counter() - t0
    replaced = replaced_tool()
    if replaced:
        raise Wrong(replaced_message(replaced))
    if watch.peek:
        raise Wrong(peek_message(watch.peek))
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
        raise Wrong(f"`{name}` should take {len(args)} argument(s) ({safe_text(e)})") from None
    raise Wrong(f"`{name}({_short(args)})` raised {type_name(e)}: {safe_text(e)}") from None


class _Tampered(Exception):
    """The student's function removed the profile hook that watches for the answer key."""


def _arity_mismatch(fn, n: int) -> bool:
    status, value = guarded(lambda: inspect.signature(fn).bind(*range(n)), 1.0)
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
        raise Wrong(f"{what} should be an array of numbers, got {type_name(value)} ({safe_text(e, 80)})") from None
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
        raise Wrong(f"{what} should be a single number, got {type_name(value)} {np.shape(value)}") from None
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
    raise Wrong(f"{what} should return True or False, got {_a(type_name(value))}")


def as_text(value, what: str, example: str) -> str:
    """``value`` as a plain str, or a Wrong that says a str was expected."""
    if value is None:
        _none(value, what)
    if not isinstance(value, str):
        raise Wrong(f"{what} should return a str such as {example!r}, got {_a(type_name(value))}")
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
            raise Wrong(f"{what} should be bytes (or a uint8 array), got {type_name(value)}") from None
        if arr.dtype.kind not in "iu" or arr.size and (arr.min() < 0 or arr.max() > 255):
            raise Wrong(f"{what} should be bytes (or a uint8 array), got {type_name(value)} of {arr.dtype}")
        out = arr.astype(np.uint8).tobytes()
    if len(out) != length:
        raise Wrong(f"{what} is {len(out)} bytes long, expected {length}")
    return out


def as_tuple(value, n: int, names: str, what: str) -> tuple:
    """``value`` as a tuple (or list) of ``n`` items, or a Wrong naming the items expected."""
    _none(value, what)
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise Wrong(
            f"{what} should return a tuple ({names}), got {_a(type_name(value))}"
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


take_snapshot()
