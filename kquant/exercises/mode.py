"""Grading or practice: decided once, when the exercises are imported, from how the kernel was started.

A check that fails raises under nbgrader's autograde or validate (0 points) and prints otherwise.
The decision is read from the environment the kernel *process* started with, so a student who
sets ``os.environ["NBGRADER_EXECUTION"]`` later changes nothing (kquant.exercises.core).
"""

from __future__ import annotations

import os
import pathlib

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
