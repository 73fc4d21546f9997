"""Pillow's decode warnings ("Corrupt EXIF data", ...) as notes of the image being decoded.

They are for the user, via `ImageInfo.notes`, not Python warnings on stderr. Only the
decoding thread's warnings are taken: those other threads raise meanwhile (torch on the main
thread of a batch) keep their filters and handlers.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

# Why not `warnings.catch_warnings(record=True)` per call: on Python 3.11 it is process-wide
# too (it swaps the module's `filters` list and `showwarning` for every thread, and restores
# the list it saved, dropping filters other threads add meanwhile), so on a decode thread it
# would swallow the torch warnings the main thread raises during the decode - the very thing
# tests/test_imageio_warnings_capture.py checks
# (test_decode_warnings_are_taken_only_from_the_decoding_thread).
# Python 3.14's `context_aware_warnings` makes it thread-local; until we require 3.14, the
# narrowest hook is this: while any decode runs (counted, under a lock), `warnings.warn` and
# `warnings.showwarning` are wrapped by functions that keep the decoding threads' warnings
# and pass every other thread's on unchanged (same filters, handler and caller frame).
_WARN_LOCK = threading.Lock()
_warn_users = 0
_capturing: dict[int, list[str]] = {}  # thread ident -> what it warned while decoding
_saved_warn: Callable[..., None] = warnings.warn
_saved_showwarning: Callable[..., None] = warnings.showwarning


def _warn_hook(
    message: Warning | str,
    category: type[Warning] | None = None,
    stacklevel: int = 1,
    source: Any = None,
    **kwargs: Any,
) -> None:
    """`warnings.warn` during decodes: a decoding thread's warning is a note whatever the filters
    (even `-W error`, and repeats are kept); other threads get the real `warn`."""
    sink = _capturing.get(threading.get_ident())
    if sink is not None:
        sink.append(str(message))
        return
    _saved_warn(message, category, stacklevel + 1, source, **kwargs)  # +1: skip this frame


def _showwarning_hook(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """`warnings.showwarning` during decodes: catches what bypasses `warnings.warn` (C code)."""
    sink = _capturing.get(threading.get_ident())
    if sink is not None:
        sink.append(str(message))
        return
    _saved_showwarning(message, category, filename, lineno, file, line)


@contextlib.contextmanager
def warnings_as_notes() -> Iterator[list[str]]:
    """Collect the warnings raised on this thread meanwhile; other threads are unaffected."""
    global _warn_users, _saved_warn, _saved_showwarning
    ident = threading.get_ident()
    sink: list[str] = []
    with _WARN_LOCK:
        if _warn_users == 0:
            # Someone may have put a different function in place since last time (or kept
            # our hook: `catch_warnings` restores what it saw); only wrap what is not ours.
            if warnings.warn is not _warn_hook:
                _saved_warn = warnings.warn
                warnings.warn = _warn_hook
            if warnings.showwarning is not _showwarning_hook:
                _saved_showwarning = warnings.showwarning
                warnings.showwarning = _showwarning_hook
        _warn_users += 1
        outer = _capturing.get(ident)
        _capturing[ident] = sink
    try:
        yield sink
    finally:
        with _WARN_LOCK:
            if outer is None:
                del _capturing[ident]
            else:
                _capturing[ident] = outer
            _warn_users -= 1
            if _warn_users == 0:
                # A hook left behind (replaced by someone since) only forwards: harmless.
                if warnings.warn is _warn_hook:
                    warnings.warn = _saved_warn
                if warnings.showwarning is _showwarning_hook:
                    warnings.showwarning = _saved_showwarning
