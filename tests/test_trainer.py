"""The trainer reads its photos as restoring and evaluation do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mprnet_cli.errors import InputError
from mprnet_cli.train.trainer import _load_uint8, training_images


def _photo(path: Path, width: int, height: int, orientation: int | None = None) -> None:
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    im.save(path, exif=exif.tobytes())


def test_training_photos_are_upright(tmp_path: Path) -> None:
    """A camera JPEG stored sideways (EXIF orientation 6) trains as the photographer saw it."""
    path = tmp_path / "sideways.jpg"
    _photo(path, width=40, height=24, orientation=6)
    assert tuple(_load_uint8(path).shape) == (3, 40, 24)


def test_training_images_walk_subfolders_and_skip_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".cache").mkdir()
    for name in ("a.png", "sub/b.JPG", ".hidden.png", ".cache/c.png"):
        _photo(tmp_path / name, 16, 16)
    (tmp_path / "notes.txt").write_text("not an image")
    found = [p.relative_to(tmp_path).as_posix() for p in training_images(tmp_path)]
    assert found == ["a.png", "sub/b.JPG"]


def test_a_folder_without_photos_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no images found"):
        training_images(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        training_images(tmp_path / "missing")
