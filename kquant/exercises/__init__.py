"""Graded exercises for the workbook: one module of checks per notebook, one machinery for all.

In a notebook::

    from kquant.exercises import nb01 as ex
    ex.q1.check(to_fixed)     # tests your function on fresh random inputs
    ex.q1.hint()              # the next hint
    ex.q1.solution()          # a complete solution

``core`` holds the machinery (checks that never crash, "not attempted yet", grading
mode for nbgrader); ``notebook`` the shipped-vs-solutions convention of the answer
cells (read its docstring before editing a notebook's exercises).
"""

from kquant.exercises.core import CheckResult, Exercise, Message, exercises_in

__all__ = ["CheckResult", "Exercise", "Message", "exercises_in"]
