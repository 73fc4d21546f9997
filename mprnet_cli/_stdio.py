"""Writing results to stdout when the reader may go away (`mprnet ... | head`).

No third-party imports: `_entry` uses it before anything heavy is loaded.
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO


def write_stdout(data: str | bytes, stream: BinaryIO | None = None) -> None:
    """Write text, or bytes (to `stream` if given), and flush.

    If the reader has gone, stdout is pointed at /dev/null (so the interpreter's final
    flush stays quiet) and BrokenPipeError is raised: the caller decides whether that
    stops a run or simply ends it."""
    try:
        if isinstance(data, str):
            sys.stdout.write(data)
            sys.stdout.flush()
        else:
            out = stream if stream is not None else sys.stdout.buffer
            out.write(data)
            out.flush()
    except BrokenPipeError:
        if stream is None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise
