"""The Restorer API: kinds in = kinds out, pickling, device/precision policy, memory estimates."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mprnet_cli import Restorer
from mprnet_cli.api import choose_precision
from mprnet_cli.backends.torch import TorchBackend
from mprnet_cli.choices import Precision
from mprnet_cli.errors import CheckpointError, UsageError
from mprnet_cli.inference.pipeline import TileOptions, restore_array
from mprnet_cli.model.config import MPRNetConfig
from tests.conftest import tiny_model


@pytest.fixture()
def restorer(tiny_checkpoint: Path) -> Restorer:
    torch.set_num_threads(1)
    return Restorer(weights=tiny_checkpoint, device="cpu", tile=0)


def _rgb(h: int = 20, w: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def test_float_array_matches_the_pipeline(restorer: Restorer) -> None:
    rgb = _rgb()
    expected, _ = restore_array(restorer.backend, rgb, TileOptions(tile=0))
    out = restorer.restore(rgb)
    assert out.dtype == np.float32 and out.shape == rgb.shape
    assert np.array_equal(out, expected)
    assert not np.allclose(out, rgb, atol=1e-3)  # the network really ran


@pytest.mark.parametrize(("dtype", "scale"), [(np.uint8, 255), (np.uint16, 65535)])
def test_integer_arrays_keep_dtype_and_rounding(
    restorer: Restorer, dtype: type, scale: int
) -> None:
    rgb = _rgb()
    ints = np.round(rgb * scale).astype(dtype)
    out = restorer.restore(ints)
    assert out.dtype == dtype and out.shape == ints.shape
    expected, _ = restorer.restore_rgb(ints.astype(np.float32) / scale)
    assert np.array_equal(out, np.round(expected * scale).astype(dtype))


def test_gray_and_alpha_arrays(restorer: Restorer) -> None:
    gray = np.round(_rgb()[:, :, 0] * 255).astype(np.uint8)
    out = restorer.restore(gray)
    assert out.shape == gray.shape and out.dtype == np.uint8
    rgba = np.dstack(
        [
            np.round(_rgb() * 255).astype(np.uint8),
            np.arange(20 * 28, dtype=np.uint8).reshape(20, 28),
        ]
    )
    out4 = restorer.restore(rgba)
    assert out4.shape == rgba.shape
    assert np.array_equal(out4[:, :, 3], rgba[:, :, 3])  # alpha untouched


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "I;16", "I", "F"])
def test_pil_images_come_back_in_their_mode(restorer: Restorer, mode: str) -> None:
    base = Image.fromarray(np.round(_rgb() * 255).astype(np.uint8))
    if mode in ("I;16", "I"):
        image = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
        image = image.convert("I") if mode == "I" else image
    elif mode == "F":
        image = Image.fromarray(np.asarray(base.convert("L")).astype(np.float32) / 255, mode="F")
    else:
        image = base.convert(mode)
    out = restorer.restore(image)
    assert isinstance(out, Image.Image)
    assert out.mode == image.mode and out.size == image.size
    if "A" in mode:
        assert np.array_equal(np.asarray(out)[..., -1], np.asarray(image)[..., -1])


def test_pil_palette_comes_back_as_rgb(restorer: Restorer) -> None:
    image = Image.fromarray(np.round(_rgb() * 255).astype(np.uint8)).convert("P")
    out = restorer.restore(image)
    assert out.mode == "RGB" and out.size == image.size


def test_float_pil_outside_unit_range_is_refused(restorer: Restorer) -> None:
    with pytest.raises(UsageError, match="outside"):
        restorer.restore(Image.fromarray(np.full((16, 16), 2.0, np.float32), mode="F"))
    with pytest.raises(UsageError, match="outside"):  # NaN is not a pixel value either
        restorer.restore(Image.fromarray(np.full((16, 16), np.nan, np.float32), mode="F"))
    with pytest.raises(UsageError, match=r"0\.\.65535"):
        restorer.restore(Image.fromarray(np.full((16, 16), 70000, np.int32), mode="I"))


def test_bad_inputs(restorer: Restorer) -> None:
    with pytest.raises(TypeError):
        restorer.restore("photo.jpg")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="shape"):
        restorer.restore(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(TypeError, match="dtype"):
        restorer.restore(np.zeros((4, 4, 3), np.int64))


def test_pickle_reloads_the_weights(restorer: Restorer) -> None:
    clone = pickle.loads(pickle.dumps(restorer))
    assert clone is not restorer and clone.backend is not restorer.backend
    rgb = _rgb(seed=4)
    assert np.array_equal(clone.restore(rgb), restorer.restore(rgb))
    assert len(pickle.dumps(restorer)) < 2000  # settings travel, not the weights


def test_ensemble_and_strength(tiny_checkpoint: Path) -> None:
    """ensemble=2 averages the input's and its mirror's outputs; strength blends with the input."""
    torch.set_num_threads(1)
    rgb = _rgb(16, 24, seed=5)
    plain = Restorer(weights=tiny_checkpoint, device="cpu", tile=0)
    x = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])
    mirrored = np.ascontiguousarray(x[..., ::-1])
    both = (plain.backend(x) + plain.backend(mirrored)[..., ::-1]) / 2
    expected = np.clip(both[0].transpose(1, 2, 0), 0, 1)
    mirror = Restorer(weights=tiny_checkpoint, device="cpu", tile=0, ensemble=2)
    np.testing.assert_allclose(mirror.restore(rgb), expected, rtol=0, atol=1e-6)
    assert not np.allclose(mirror.restore(rgb), plain.restore(rgb), atol=1e-4)
    half = Restorer(weights=tiny_checkpoint, device="cpu", tile=0, strength=0.5)
    np.testing.assert_allclose(
        half.restore(rgb), 0.5 * plain.restore(rgb) + 0.5 * rgb, rtol=0, atol=1e-6
    )
    clone = pickle.loads(pickle.dumps(half))
    assert clone.strength == 0.5 and np.array_equal(clone.restore(rgb), half.restore(rgb))
    with pytest.raises(UsageError, match="--strength"):
        Restorer(weights=tiny_checkpoint, strength=2)
    with pytest.raises(UsageError, match="--ensemble"):
        Restorer(weights=tiny_checkpoint, ensemble=3)


@pytest.mark.parametrize(
    ("split_lines", "cut"), [(None, False), ("fix", False), ("keep", True), ("hide", True)]
)
def test_split_lines_fix_is_the_default_and_runs_the_network_uncut(
    tiny_checkpoint: Path, split_lines: str | None, cut: bool
) -> None:
    """Issue 21: the default output has no split lines: `fix` (the default) builds the
    network uncut; `keep` and `hide` run it as published."""
    r = Restorer(weights=tiny_checkpoint, device="cpu", tile=0, split_lines=split_lines)
    assert isinstance(r.backend, TorchBackend)
    assert r.backend.model.cut_input is cut


def test_bad_settings_are_usage_errors(tiny_checkpoint: Path) -> None:
    with pytest.raises(UsageError):
        Restorer(weights=tiny_checkpoint, precision="fp64")
    with pytest.raises(UsageError):
        Restorer("dewarp")
    with pytest.raises(UsageError):
        Restorer(weights=tiny_checkpoint, device="tpu")


def test_non_rgb_network_is_refused(tmp_path: Path) -> None:
    model = tiny_model(
        0,
        MPRNetConfig(in_c=1, out_c=1, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1),
    )
    path = tmp_path / "gray.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="RGB"):
        Restorer(weights=path, device="cpu")


@pytest.mark.parametrize("native_bf16", [False, True])
def test_auto_precision_on_the_cpu_runs_bf16_only_where_it_is_native(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, native_bf16: bool
) -> None:
    """`auto` gives exactly the fp32 result on a CPU that would emulate bf16 (25x slower)
    and the bf16 result where bf16 is native; an explicit choice wins either way."""
    import mprnet_cli.host.device as device

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: native_bf16)
    rgb = _rgb(16, 16)

    def run(precision: str) -> np.ndarray:
        return Restorer(weights=tiny_checkpoint, device="cpu", tile=0, precision=precision).restore(
            rgb
        )

    fp32, bf16 = run("fp32"), run("bf16")
    assert not np.array_equal(fp32, bf16)  # the two really differ, so the comparison below can fail
    assert np.array_equal(run("auto"), bf16 if native_bf16 else fp32)


@pytest.mark.parametrize("gpu_bf16", [False, True])
def test_auto_precision_on_a_gpu_follows_its_bf16_support(
    monkeypatch: pytest.MonkeyPatch, gpu_bf16: bool
) -> None:
    """No GPU here: the policy alone. bf16 where the GPU has it, else fp32 (never fp16)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_bf16)
    assert choose_precision("cuda", Precision.AUTO) is (
        Precision.BF16 if gpu_bf16 else Precision.FP32
    )
    assert choose_precision("cuda", Precision.FP16) is Precision.FP16


def test_custom_weights_get_tiles_sized_to_free_memory(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path
) -> None:
    """Weights the registry never measured are still priced (by the estimate that
    test_pipeline checks against measurements), so less free memory means smaller tiles
    that fit, not the blind 512-pixel default."""
    import mprnet_cli.backends.torch as torch_backend
    from mprnet_cli.inference.pipeline import (
        DEFAULT_TILE,
        MIN_TILE,
        auto_tile,
        estimate_bytes_per_pixel,
    )

    r = Restorer(weights=tiny_checkpoint, device="cpu", precision="fp32")
    cost = estimate_bytes_per_pixel(r.config, Precision.FP32, "cpu")
    tiles = {}
    for free in (2**26, 2**28):
        monkeypatch.setattr(torch_backend, "available_memory", lambda device, free=free: free)
        tiles[free] = auto_tile(r.backend, 3000, 4000)
        assert tiles[free] ** 2 * cost <= 0.7 * free
    assert MIN_TILE < tiles[2**26] < tiles[2**28] and DEFAULT_TILE not in tiles.values()
