"""A progress bar for long runs: a widget in Jupyter, a text bar in a terminal.

tqdm comes with gguf-py (it is one of gguf's own dependencies), and ``tqdm.auto`` picks
the notebook widget when it runs inside Jupyter. The bar shows up only once a run has
taken more than a second, so quick runs stay quiet.
"""

from __future__ import annotations


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A bar counting ``total`` weights; call ``.update(n)`` and ``.close()`` (or use ``with``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="w", unit_scale=True, delay=1.0, disable=not enabled, leave=False)
