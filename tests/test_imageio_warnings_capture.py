"""Tests for mprnet_cli.imageio.warnings_capture: Pillow's decode warnings as per-image notes."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import pytest
from PIL import Image

from mprnet_cli import imageio as mio
from mprnet_cli.imageio import DecodedImage
from mprnet_cli.imageio import decode as mio_decode
from tests.helpers import pil_bytes, rand8


def test_decode_warnings_are_taken_only_from_the_decoding_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A warning another thread raises mid-decode reaches its handler, not the image's notes."""
    jpeg = pil_bytes(
        Image.fromarray(rand8(8, 8)), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f"
    )
    real_decode = mio_decode.open_and_decode
    decoding, go_on = threading.Event(), threading.Event()

    def paused_decode(*args: Any) -> DecodedImage:
        decoded = real_decode(*args)  # Pillow warns "Corrupt EXIF data" here
        warnings.warn("decoder says hi", UserWarning, stacklevel=1)
        decoding.set()
        assert go_on.wait(10)
        return decoded

    monkeypatch.setattr(mio_decode, "open_and_decode", paused_decode)
    before = (warnings.warn, warnings.showwarning)
    box: list[DecodedImage] = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        worker = threading.Thread(target=lambda: box.append(mio.read_image(jpeg)))
        worker.start()
        try:
            assert decoding.wait(10)
            warnings.warn("main thread says hi", UserWarning, stacklevel=1)
        finally:
            go_on.set()
            worker.join(10)
    (decoded,) = box
    notes = decoded.info.notes
    # Pillow's "Corrupt EXIF data" is folded into our own note (one warning per problem)
    assert any("EXIF data is malformed" in n for n in notes)
    assert any("decoder says hi" in n for n in notes)
    assert not any("main thread" in n for n in notes)
    assert [str(w.message) for w in seen] == ["main thread says hi"]
    assert seen[0].filename == __file__  # attributed to its caller, not to the hook
    assert (warnings.warn, warnings.showwarning) == before  # the hooks are gone again
