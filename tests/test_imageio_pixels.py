"""Tests for mprnet_cli.imageio.pixels: the float <-> integer formula."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mprnet_cli import imageio as mio
from tests.helpers import cv2_bytes, pil_bytes, rand8, rand16


def test_to_uint8_rounds_clips_and_zeroes_nan() -> None:
    x = np.array([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.0, 2.0, np.nan, np.inf], np.float32)
    assert mio.to_uint8(x).tolist() == [0, 0, 0, 2, 128, 255, 255, 0, 255]  # half to even
    assert mio.to_uint16(np.array([0.5, 1.0], np.float32)).tolist() == [32768, 65535]


def test_unit_rgb_rebuilds_decoded_floats_bit_for_bit_from_their_integers() -> None:
    """What a runner that ships compact pixels relies on (exhaustive over every value)."""
    for depth, dtype in ((8, np.uint8), (16, np.uint16)):
        values = np.arange(np.iinfo(dtype).max + 1, dtype=dtype)
        color = np.stack([values, values[::-1], values], axis=1)[:, None, :]  # (N, 1, 3)
        rgb = mio.unit_rgb(color, depth)
        assert rgb.dtype == np.float32 and rgb.shape == (values.size, 1, 3)
        quantize = mio.to_uint16 if depth == 16 else mio.to_uint8
        assert np.array_equal(quantize(rgb), color)  # the integers come back exactly
        gray = mio.unit_rgb(values[:, None], depth)
        assert np.array_equal(gray, rgb[..., :1].repeat(3, axis=2))
    for data in (
        cv2_bytes(rand16(9, 7, 3), ".png"),
        pil_bytes(Image.fromarray(rand8(9, 7)), "PNG"),
        pil_bytes(Image.fromarray(rand8(9, 7, 1)), "PNG"),
        pil_bytes(Image.fromarray(rand16(9, 7, 1)), "PNG"),
    ):
        decoded = mio.read_image(data)
        quantize = mio.to_uint16 if decoded.info.bit_depth == 16 else mio.to_uint8
        ints = quantize(decoded.rgb)
        ints = ints[..., 0] if decoded.info.grayscale else ints
        rebuilt = mio.unit_rgb(ints, decoded.info.bit_depth)
        assert rebuilt.tobytes() == decoded.rgb.tobytes()
