"""mprnet_cli.host.stdio: complete writes to slow or non-blocking readers, and safe text."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import threading

from mprnet_cli.host.stdio import name_bytes, printable, valid_text, write_stdout
from mprnet_cli.jobs import Result, Status


def _nonblocking_pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe()
    flags = fcntl.fcntl(write_end, fcntl.F_GETFL)
    fcntl.fcntl(write_end, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    return read_end, write_end


def test_every_byte_reaches_a_nonblocking_pipe() -> None:
    """The audit's `-o -` case: a full non-blocking pipe (EAGAIN) must be waited on, not
    dropped. 1 MiB is 16 times a Linux pipe's buffer, so the first write is always short."""
    data = os.urandom(1 << 20)
    read_end, write_end = _nonblocking_pipe()
    received: list[bytes] = []

    def drain() -> None:
        with os.fdopen(read_end, "rb") as fh:
            received.append(fh.read())

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(write_end, "wb") as stream:
        write_stdout(data, stream)
    reader.join(timeout=60)
    assert b"".join(received) == data


class _Trickle(io.RawIOBase):
    """A stream without a descriptor that takes at most 1000 bytes per call."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        chunk = bytes(memoryview(b))[:1000]  # type: ignore[arg-type]
        self.data += chunk
        return len(chunk)


def test_short_writes_are_continued_on_streams_without_a_descriptor() -> None:
    stream = _Trickle()
    data = os.urandom(12_345)
    write_stdout(data, stream)  # type: ignore[arg-type]
    assert bytes(stream.data) == data


def test_printable_escapes_what_could_forge_or_hide_a_line() -> None:
    assert printable("a\nmprnet: error: forged.png") == "a\\nmprnet: error: forged.png"
    assert printable("x\r\t\x1b[31my\x7f") == "x\\r\\t\\x1b[31my\\x7f"
    assert printable("abc\u202edef") == "abc\\u202edef"  # right-to-left override
    assert printable("café ☕.png") == "café ☕.png"  # printable Unicode stays as it is
    assert printable(os.fsdecode(b"bad\xff.png")) == "bad\\xff.png"


def test_names_that_are_not_utf8_keep_their_bytes() -> None:
    raw = b"caf\xe9\n.png"  # Latin-1 é and a newline
    name = os.fsdecode(raw)
    assert name_bytes(name) == raw
    assert name_bytes("café.png") is None
    assert valid_text(name) == "caf\\xe9\n.png"


def test_json_records_are_valid_utf8_and_lossless() -> None:
    raw_in, raw_out = b"in/\xff\xfe.png", b"out/\xff\xfe_derained.png"
    result = Result(
        os.fsdecode(raw_in),
        os.fsdecode(raw_out),
        Status.FAILED,
        error=f"{os.fsdecode(raw_in)}: not an image",
        warnings=(os.fsdecode(b"\xff warning"),),
    )
    text = json.dumps(result.to_json())
    text.encode("utf-8")  # no lone surrogates: any JSON reader (jq) gets the same text
    record = json.loads(text)
    assert record["input"] == "in/\\xff\\xfe.png"
    assert base64.b64decode(record["input_bytes_b64"]) == raw_in
    assert base64.b64decode(record["output_bytes_b64"]) == raw_out
    assert record["error"] == "in/\\xff\\xfe.png: not an image"
    assert record["warnings"] == ["\\xff warning"]
    plain = Result("in/ok.png", None, Status.FAILED, error="x").to_json()
    assert "input_bytes_b64" not in plain and "output_bytes_b64" not in plain
