"""Keep native libraries' log lines off the user's terminal.

TensorFlow prints oneDNN/CUDA notes while it is imported, before absl's logging exists (so
``TF_CPP_MIN_LOG_LEVEL`` cannot stop them), and LiteRT prints an INFO line for every
interpreter it creates. Both write to file descriptor 2 from C++; the only switch is to point
that descriptor elsewhere while they run. ``FMNIST_EDGE_VERBOSE=1`` (``fmnist-edge
--verbose``) keeps everything.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

VERBOSE_ENV = "FMNIST_EDGE_VERBOSE"


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what is written to file descriptor 2 for the duration, unless
    ``$FMNIST_EDGE_VERBOSE`` is set. Exceptions still propagate (and are printed after)."""
    if os.environ.get(VERBOSE_ENV):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
