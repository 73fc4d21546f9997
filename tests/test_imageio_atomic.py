"""Tests for mprnet_cli.imageio.atomic: the final name holds the complete file or nothing new."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mprnet_cli import imageio as mio
from mprnet_cli.errors import OutputError, OutputExistsError
from mprnet_cli.imageio import OutputFormat
from mprnet_cli.imageio import encode as mio_encode
from tests.helpers import info_for


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    out.chmod(0o640)
    rgb = np.zeros((2, 2, 3), np.float32)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        mio.write_image(out, rgb, info_for(), OutputFormat.PNG)
    assert out.read_bytes() == b"precious" and _listing(tmp_path) == ["out.png"]
    mio.write_image(out, rgb, info_for(), OutputFormat.PNG, overwrite=True)
    assert out.read_bytes()[:4] == b"\x89PNG" and _listing(tmp_path) == ["out.png"]
    assert out.stat().st_mode & 0o777 == 0o640  # the replaced file's permissions are kept
    with pytest.raises(OutputError, match="folder"):
        mio.write_image(tmp_path, rgb, info_for(), OutputFormat.PNG, overwrite=True)


def test_new_file_honours_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        mio.write_image(
            tmp_path / "o.png", np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG
        )
    finally:
        os.umask(old)
    assert (tmp_path / "o.png").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600


def test_temp_file_is_hidden_in_target_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        seen.append(_listing(tmp_path))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    mio.write_image(
        tmp_path / "out.jpg", np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.JPEG
    )
    tmp_names = [n for n in seen[0] if n != "out.jpg"]
    assert (
        len(tmp_names) == 1
        and tmp_names[0].startswith(".out.jpg.")
        and tmp_names[0].endswith(".tmp")
    )
    assert _listing(tmp_path) == ["out.jpg"]


def test_failure_while_encoding_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(mio_encode, "encode_pixels", boom)
    with pytest.raises(RuntimeError, match="exploded"):
        mio.write_image(
            tmp_path / "out.png", np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG
        )
    assert _listing(tmp_path) == []


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (KeyboardInterrupt(), KeyboardInterrupt),
        (OSError(errno.ENOSPC, "No space left on device"), OutputError),
        (OSError(errno.EIO, "I/O error"), OutputError),
    ],
)
def test_failure_while_writing_removes_temp_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    exc: BaseException,
    expected: type[BaseException],
) -> None:
    def fail(fd: int) -> None:
        raise exc

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(expected) as caught:
        mio.write_image(
            tmp_path / "out.png", np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG
        )
    assert _listing(tmp_path) == []
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        assert "disk space" in str(caught.value)


def test_unwritable_folder_is_an_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        mio.write_image(
            tmp_path / "missing" / "o.png",
            np.zeros((2, 2, 3), np.float32),
            info_for(),
            OutputFormat.PNG,
        )

    real_open = os.open

    def deny(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(OutputError, match="permission denied"):
        mio.write_image(
            tmp_path / "o.png", np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG
        )
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("how", ["link", "no-hard-links", "overwrite"])
def test_temp_file_deleted_by_someone_else_is_reported_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Not "the folder does not exist": the folder is there, the temp file is not."""
    real_fsync = os.fsync

    def sweep_then_fsync(fd: int) -> None:  # the first fsync is the temp file's, before linking
        for tmp in tmp_path.glob(".o.png.*.tmp"):
            tmp.unlink()
        real_fsync(fd)

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "fsync", sweep_then_fsync)
    if how == "no-hard-links":
        monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(OutputError, match=r"temporary file .* was deleted") as caught:
        mio.write_image(
            tmp_path / "o.png",
            np.zeros((2, 2, 3), np.float32),
            info_for(),
            OutputFormat.PNG,
            overwrite=how == "overwrite",
        )
    assert "does not exist" not in str(caught.value)
    assert _listing(tmp_path) == []


def test_temp_file_deleted_after_linking_is_still_a_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_link = os.link

    def link_then_sweep(src: Any, dst: Any) -> None:
        real_link(src, dst)
        Path(src).unlink()

    monkeypatch.setattr(os, "link", link_then_sweep)
    mio.write_image(
        tmp_path / "o.png", np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG
    )
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG" and _listing(tmp_path) == ["o.png"]


def test_write_without_hard_links_falls_back_to_replace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "o.png"
    mio.write_image(out, np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG)
    assert out.read_bytes()[:4] == b"\x89PNG" and _listing(tmp_path) == ["o.png"]
    with pytest.raises(OutputExistsError):
        mio.write_image(out, np.zeros((2, 2, 3), np.float32), info_for(), OutputFormat.PNG)
    assert _listing(tmp_path) == ["o.png"]
