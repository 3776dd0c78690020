"""The one exception kquant raises for bad input.

It subclasses ValueError so ``except ValueError`` keeps working, and every message
says what was wrong and what to do about it, in one line.

Notebooks 01 and 08 show such messages.
"""


class KQuantError(ValueError):
    """Bad input to kquant: the message names the problem and the fix."""
