"""Python's garbage collector paused around a timed span, as `timeit` does: a collection of the
sweep's own objects is not charged to what is measured. No torch here: the serving load
generator pauses it too."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
