"""Writing results to stdout when the reader may go away (`mprnet ... | head`) or be slow.

No third-party imports: `_entry` uses it before anything heavy is loaded.
"""

from __future__ import annotations

import errno
import io
import os
import re
import select
import sys
from typing import BinaryIO, TextIO


def write_stdout(data: str | bytes, stream: BinaryIO | None = None) -> None:
    """Write text, or bytes (to `stream` if given), all of it, and flush.

    Bytes go to the file descriptor until every byte is written: a non-blocking pipe
    (EAGAIN) is waited on and short writes are continued, so an image is never cut
    short silently. If the reader has gone, stdout is pointed at /dev/null (so the
    interpreter's final flush stays quiet) and BrokenPipeError is raised: the caller
    decides whether that stops a run or simply ends it. Other write errors (a full
    disk behind `> file`) raise OSError."""
    try:
        if sys.stdout is None and stream is None:  # closed before we started (`>&-`)
            raise BrokenPipeError(errno.EPIPE, "stdout is closed")
        if isinstance(data, str):
            sys.stdout.write(data)
            sys.stdout.flush()
        else:
            out = stream if stream is not None else sys.stdout.buffer
            out.flush()  # anything buffered goes first, in order
            fd = _fileno(out)
            if fd is None:
                _write_all_stream(out, data)
            else:
                write_all(fd, data)
    except BrokenPipeError:
        if sys.stdout is None:
            raise
        if stream is None or _fileno(stream) == _fileno(sys.stdout):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise


def hold_closed_std_fds() -> None:
    """Point closed descriptors 0-2 (`>&-`, `<&-`: cron, daemons) at /dev/null.

    Python then leaves `sys.stdin`/`sys.stdout` None (so a run that needs them can say they
    are closed), but no file the run opens (an input, a temp output) can land on fd 0-2,
    where a library printing to "stdout" would write into it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:  # a lower one was free too: it gets its own turn in this loop
                os.dup2(opened, fd)
                os.close(opened)


def binary(stream: TextIO | None) -> BinaryIO | None:
    """A text stream's bytes (`sys.stdin.buffer`), or None when the stream is closed."""
    buffer: BinaryIO | None = getattr(stream, "buffer", None)
    return buffer


def write_all(fd: int, data: bytes) -> None:
    """`os.write` until done: continue short writes, wait while a non-blocking fd is full."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])  # the reader is slow, not gone: wait for room
            continue
        if written <= 0:
            raise OSError(f"write to file descriptor {fd} made no progress")
        view = view[written:]


def _write_all_stream(out: BinaryIO, data: bytes) -> None:
    """For file-like objects without a descriptor (tests, wrappers)."""
    view = memoryview(data)
    while view:
        written = out.write(view)
        if written is None or written <= 0:
            raise OSError("stdout accepted no data")
        view = view[written:]
    out.flush()


def _fileno(stream: object) -> int | None:
    try:
        return int(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


# Control characters (C0, DEL, C1) and the bidirectional overrides/isolates that can reorder
# what a terminal shows: a file name holding one could forge or hide a line of output.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def valid_text(text: str) -> str:
    """`text` as valid Unicode: bytes that were not UTF-8 (kept by Python as lone surrogates,
    `surrogateescape`) become the visible escape `\\xNN`."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that did not come from bytes
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def printable(text: str) -> str:
    """One safe line for a terminal or log: control characters and undecodable bytes escaped."""

    def escape(match: re.Match[str]) -> str:
        ch = match.group()
        if ch in _NAMED:
            return _NAMED[ch]
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNSAFE.sub(escape, valid_text(text))


def name_bytes(name: str) -> bytes | None:
    """The file name's original bytes when it is not valid UTF-8 (else None): what a
    machine reader needs to find the file again."""
    try:
        name.encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:  # surrogates that did not come from bytes
        return name.encode("utf-8", "surrogatepass")
