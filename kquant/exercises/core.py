"""One exercise: a task, its check, its hints and its solution.

Every exercise in the workbook asks the reader to complete a *function*. That one
convention makes the three ways of using the workbook agree:

* self-paced: ``ex.q1.check(my_function)`` calls the function on fresh random
  inputs and answers in one line; ``ex.q1.hint()`` and ``ex.q1.solution()`` help.
* as shipped: the function body is nbgrader's stub, ``raise NotImplementedError()``.
  Defining the function cannot fail, so a fresh notebook runs top to bottom, and
  the check recognises the stub and says "not attempted yet".
* classroom: under nbgrader (``NBGRADER_EXECUTION`` set), a check that does not
  pass raises ``AssertionError``, which is how nbgrader's autograder awards 0 points;
  one that passes prints its message and returns nothing, which earns the cell's points.

A check never lets a student's mistake escape as a traceback: a wrong type, a wrong
shape, an exception inside the student's code all become a one-line message.
Expected byte strings are compared by SHA-256 digest and never printed, so a failed
check says *where* bytes differ, not what they should be.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CORRECT, INCORRECT, NOT_ATTEMPTED = "correct", "incorrect", "not attempted"
_MARK = {CORRECT: "✔", INCORRECT: "✘", NOT_ATTEMPTED: "…"}


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


def grading() -> bool:
    """True while nbgrader autogrades or validates a notebook (it sets NBGRADER_EXECUTION)."""
    return os.environ.get("NBGRADER_EXECUTION", "").lower() in ("autograde", "validate")


class Exercise:
    """A graded exercise: the reader completes ``def <signature>:``.

    ``checker(answer, rng)`` tests the reader's function on inputs drawn from ``rng``
    and returns a short success message, or raises :class:`Wrong` / :class:`NotAttempted`.
    ``solution`` is the function *body*: the text that goes between the notebook's
    ``### BEGIN SOLUTION`` and ``### END SOLUTION`` markers.
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
    ):
        self.notebook = notebook
        self.name = name
        self.signature = signature
        self.function_name = signature.split("(", 1)[0]
        self._checker = checker
        self.hints = list(hints)
        self.solution_code = textwrap.dedent(solution).strip("\n")
        self.points = points
        self._hints_shown = 0

    @property
    def grade_id(self) -> str:
        """Stem of the nbgrader ids of this exercise's cells: ``nb01-q1``."""
        return f"{self.notebook}-{self.name}"

    def evaluate(self, answer=None, seed=None) -> CheckResult:
        """Check ``answer`` without side effects (no grading-mode exception). ``seed`` fixes the inputs."""
        label = f"{self.notebook} {self.name}"
        rng = np.random.default_rng(seed)
        try:
            fn = expect_function(answer, self.function_name)
            with np.errstate(all="ignore"):  # the student's numpy warnings are not our message
                message = self._checker(fn, rng)
        except NotAttempted as e:
            return CheckResult(label, NOT_ATTEMPTED, str(e))
        except Wrong as e:
            return CheckResult(label, INCORRECT, str(e))
        except Exception as e:  # a check must answer, whatever the answer was
            return CheckResult(label, INCORRECT, f"could not check this answer ({type(e).__name__}: {e})")
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
            f"expected the function `{name}` itself, got {_a(type(answer).__name__)}:"
            f" write the name without parentheses, e.g. check({name})"
        )
    return answer


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def call(fn: Callable, *args, name: str | None = None):
    """Call the reader's function on copies of ``args``; its exceptions become one-line messages."""
    name = name or getattr(fn, "__name__", "your function")
    args_copy = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    try:
        return fn(*args_copy)
    except NotImplementedError:
        raise NotAttempted(
            f"not attempted yet: replace `raise NotImplementedError()` in `{name}` with your code"
        ) from None
    except TypeError as e:
        if _arity_mismatch(fn, len(args)):
            raise Wrong(f"`{name}` should take {len(args)} argument(s) ({e})") from None
        raise Wrong(f"`{name}({_short(args)})` raised TypeError: {e}") from None
    except Exception as e:  # any error in the reader's code is reported, not raised
        raise Wrong(f"`{name}({_short(args)})` raised {type(e).__name__}: {e}") from None


def _arity_mismatch(fn, n: int) -> bool:
    try:
        inspect.signature(fn).bind(*range(n))
    except TypeError:
        return True
    except ValueError:  # builtins without a signature
        return False
    return False


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


def as_array(value, shape: tuple, what: str, dtype=np.float64) -> np.ndarray:
    """``value`` as an array of ``shape``, or a Wrong saying why it is not one."""
    if value is None:
        raise Wrong(f"{what} is None: did the function forget to `return` its result?")
    try:
        arr = np.asarray(value, dtype=dtype)
    except OverflowError:
        raise Wrong(f"{what} holds a number far too large to be right") from None
    except (TypeError, ValueError) as e:
        raise Wrong(f"{what} should be an array of numbers, got {type(value).__name__} ({e})") from None
    if arr.shape != tuple(shape):
        raise Wrong(f"{what} has shape {arr.shape}, expected {tuple(shape)}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise Wrong(f"{what} contains NaN or inf at {int(np.flatnonzero(~np.isfinite(arr))[0])} (flat index)")
    return arr


def as_number(value, what: str) -> float:
    """``value`` as a finite float, or a Wrong saying why it is not one."""
    if value is None:
        raise Wrong(f"{what} is None: did the function forget to `return` its result?")
    if isinstance(value, (str, bytes)):
        raise Wrong(f"{what} should be a number, got the {type(value).__name__} {value!r}")
    try:
        x = float(np.asarray(value).reshape(()))
    except OverflowError:
        raise Wrong(f"{what} is far too large to be right ({str(value)[:20]}...)") from None
    except (TypeError, ValueError):
        raise Wrong(f"{what} should be a single number, got {type(value).__name__} {np.shape(value)}") from None
    if not np.isfinite(x):
        raise Wrong(f"{what} is {x}, expected a finite number")
    return x


def as_bytes(value, length: int, what: str) -> bytes:
    """``value`` (bytes, bytearray, uint8 array, list of 0..255) as bytes of ``length``."""
    if value is None:
        raise Wrong(f"{what} is None: did the function forget to `return` its result?")
    if isinstance(value, (bytes, bytearray, memoryview)):
        out = bytes(value)
    else:
        arr = np.asarray(value)
        if arr.dtype.kind not in "iu" or arr.size and (arr.min() < 0 or arr.max() > 255):
            raise Wrong(f"{what} should be bytes (or a uint8 array), got {type(value).__name__} of {arr.dtype}")
        out = arr.astype(np.uint8).tobytes()
    if len(out) != length:
        raise Wrong(f"{what} is {len(out)} bytes long, expected {length}")
    return out


def digest(b: bytes) -> str:
    """SHA-256 of a byte string: what byte answers are compared by."""
    return hashlib.sha256(bytes(b)).hexdigest()


def same_bytes(got: bytes, want: bytes, what: str = "the bytes") -> None:
    """Compare by digest; on a mismatch say where the first difference is, never what it should be."""
    if digest(got) == digest(want):
        return
    i = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
    raise Wrong(f"{what} differ from llama.cpp's: first difference at byte {i} of {len(want)}")


def random_k_block(rng, nbytes: int) -> np.ndarray:
    """Random bytes of a Q4_K/Q5_K block whose fp16 d and dmin (bytes 0-3) are ordinary numbers.

    Real blocks never carry inf or NaN scales, so a check should not feed them to students.
    """
    block = rng.integers(0, 256, nbytes).astype(np.uint8)
    block[0:4] = np.array([rng.uniform(1e-4, 1e-2), rng.uniform(1e-4, 1e-2)], dtype="<f2").view(np.uint8)
    return block
