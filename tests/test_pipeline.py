"""pad → tile → infer → stitch, with a stand-in network and a tiny real MPRNet."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import mprnet_cli.backends.torch as torch_backend
from mprnet_cli.backends.torch import TorchBackend
from mprnet_cli.errors import NonFiniteOutputError, OutOfMemoryError, UsageError
from mprnet_cli.inference.pipeline import TileOptions, auto_tile, reflect_index, restore_array
from tests.conftest import tiny_model


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x.clone(), x, x]


class Recording(nn.Module):
    """Identity that records every batch shape, and fails above a pixel budget."""

    def __init__(
        self, max_pixels: int | None = None, oom: type[BaseException] = torch.OutOfMemoryError
    ) -> None:
        super().__init__()
        self.calls: list[tuple[int, ...]] = []
        self.max_pixels = max_pixels
        self.oom = oom

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.calls.append(tuple(x.shape))
        if self.max_pixels is not None and x.shape[-1] * x.shape[-2] * x.shape[0] > self.max_pixels:
            raise self.oom("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x.clone()]


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (8, 8), (37, 61), (64, 200)])
@pytest.mark.parametrize("tile", [0, 16, 32])
def test_identity_is_exact_for_any_size(shape: tuple[int, int], tile: int) -> None:
    rgb = image(*shape)
    out, stats = restore_array(
        TorchBackend(Identity(), torch.device("cpu")), rgb, TileOptions(tile=tile, overlap=8)
    )
    assert out.shape == rgb.shape and out.dtype == np.float32
    assert np.array_equal(out, rgb)
    assert stats.tiles >= 1


def testreflect_index_matches_torch_reflect_pad() -> None:
    for size in (2, 3, 7, 8, 13):
        for pad in range(1, min(8, size)):  # torch's reflect needs pad < size
            x = torch.arange(size, dtype=torch.float32)[None, None, :]
            padded = torch.nn.functional.pad(x, (0, pad), mode="reflect")[0, 0].long().numpy()
            assert np.array_equal(reflect_index(size + pad, size), padded)
    assert np.array_equal(reflect_index(8, 1), np.zeros(8))  # 1-pixel axis: replicate


def test_output_is_clipped_to_unit_range() -> None:
    class Overshoot(nn.Module):
        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [x * 3 - 1]

    out, _ = restore_array(
        TorchBackend(Overshoot(), torch.device("cpu")), image(16, 16), TileOptions(tile=0)
    )
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_progress_reports_every_tile() -> None:
    seen: list[tuple[int, int]] = []
    restore_array(
        TorchBackend(Identity(), torch.device("cpu")),
        image(64, 64),
        TileOptions(tile=32, overlap=8),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(i, 9) for i in range(1, 10)]


def test_tile_batch_groups_tiles() -> None:
    model = Recording()
    restore_array(
        TorchBackend(model, torch.device("cpu")),
        image(64, 64),
        TileOptions(tile=32, overlap=8, batch=4),
    )
    assert [c[0] for c in model.calls] == [4, 4, 1]


def test_oom_halves_the_tile_and_keeps_finished_tiles() -> None:
    model = Recording(max_pixels=40 * 40)  # 64px tiles fail, 32px tiles fit
    rgb = image(128, 128)
    warnings: list[str] = []
    out, stats = restore_array(
        TorchBackend(model, torch.device("cpu")),
        rgb,
        TileOptions(tile=64, overlap=16, min_tile=16),
        warn=warnings.append,
    )
    assert np.array_equal(out, rgb)  # still exact after recovery
    assert stats.oom_splits >= 1 and stats.tile_size == 32
    failed = [c for c in model.calls if c[-1] * c[-2] > 40 * 40]
    succeeded = [c for c in model.calls if c[-1] * c[-2] <= 32 * 32]
    assert failed and succeeded
    assert not warnings


def test_oom_continues_from_the_failed_tile_only() -> None:
    """Tiles before the failure are not redone."""

    class FailOnce(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0
            self.shapes: list[tuple[int, ...]] = []

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            self.calls += 1
            self.shapes.append(tuple(x.shape))
            if self.calls == 3:
                raise torch.OutOfMemoryError("out of memory")
            return [x.clone()]

    model = FailOnce()
    rgb = image(64, 160)  # three 64px tiles across
    out, stats = restore_array(
        TorchBackend(model, torch.device("cpu")), rgb, TileOptions(tile=64, overlap=16, min_tile=16)
    )
    assert np.array_equal(out, rgb)
    full = [s for s in model.shapes if s[-1] == 64]
    assert len(full) == 3  # two done + the failing one, none repeated
    assert stats.oom_splits == 1


def test_oom_below_minimum_on_cpu_is_a_clear_error() -> None:
    model = Recording(max_pixels=10)
    with pytest.raises(OutOfMemoryError, match="not enough memory"):
        restore_array(
            TorchBackend(model, torch.device("cpu")),
            image(64, 64),
            TileOptions(tile=32, overlap=8, min_tile=16),
        )


def test_oom_on_gpu_falls_back_to_cpu_with_one_warning() -> None:
    model = Recording(max_pixels=10)

    class FakeGpu(TorchBackend):
        """Claims to be a GPU; moving to the CPU lifts the memory limit."""

        def run(self, batch: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.model(batch)[0]
            return out

        def fall_back(self) -> None:
            self.torch_device = torch.device("cpu")
            self.capabilities = self._capabilities()
            model.max_pixels = None

    engine = FakeGpu(model, torch.device("cpu"))
    engine.torch_device = torch.device("cuda")
    engine.capabilities = engine._capabilities()
    assert engine.capabilities.can_fall_back
    warnings: list[str] = []
    rgb = image(64, 64)
    out, stats = restore_array(
        engine, rgb, TileOptions(tile=32, overlap=8, min_tile=16), warn=warnings.append
    )
    assert np.array_equal(out, rgb)
    assert stats.fell_back_to_cpu and stats.device == "cpu"
    assert len(warnings) == 1 and "continuing on the CPU" in warnings[0]


def test_runtime_oom_message_is_recognised() -> None:
    model = Recording(max_pixels=40 * 40, oom=RuntimeError)
    rgb = image(64, 64)
    out, stats = restore_array(
        TorchBackend(model, torch.device("cpu")), rgb, TileOptions(tile=64, overlap=8, min_tile=16)
    )
    assert np.array_equal(out, rgb) and stats.oom_splits == 1


def test_other_errors_propagate() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        restore_array(
            TorchBackend(Broken(), torch.device("cpu")), image(16, 16), TileOptions(tile=0)
        )


def test_tiles_blend_without_seams_for_a_local_network() -> None:
    """A conv net with a 7px receptive field: tiling may only change pixels near tile edges, and the
    blending window must hide even those."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 3, 3, padding=1),
    )

    class Local(nn.Module):
        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [torch.sigmoid(net(x))]

    engine = TorchBackend(Local(), torch.device("cpu"))
    rgb = image(96, 136, seed=3)
    whole, _ = restore_array(engine, rgb, TileOptions(tile=0))
    tiled, stats = restore_array(engine, rgb, TileOptions(tile=48, overlap=24))
    assert stats.tiles == 15
    mse = float(np.mean((whole - tiled) ** 2))
    assert 10 * np.log10(1 / mse) > 60
    no_overlap, _ = restore_array(engine, rgb, TileOptions(tile=48, overlap=0))
    assert np.mean((whole - no_overlap) ** 2) > 10 * mse  # blending is what removes the seams


def test_matches_reference_demo_processing() -> None:
    """Pad (reflect), run, clamp, crop — as the reference demo does, on an odd-sized image."""
    model = tiny_model()
    rgb = image(21, 30, seed=5)
    out, _ = restore_array(
        TorchBackend(model, torch.device("cpu"), channels_last=False), rgb, TileOptions(tile=0)
    )
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    padded = torch.nn.functional.pad(x, (0, 2, 0, 3), mode="reflect")
    with torch.no_grad():
        ref = model(padded)[0].clamp(0, 1)[0, :, :21, :30].permute(1, 2, 0).numpy()
    assert np.abs(out - ref).max() <= 1e-5


def test_tile_options_validation() -> None:
    with pytest.raises(UsageError):
        TileOptions(tile=12)
    with pytest.raises(UsageError):
        TileOptions(overlap=-1)
    with pytest.raises(UsageError):
        TileOptions(batch=0)


def test_auto_tile_is_one_pass_when_the_image_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    import mprnet_cli.inference.pipeline as pipeline

    engine = TorchBackend(Identity(), torch.device("cpu"), memory=lambda device, precision: 1000.0)
    engine.ignore_speed_limits()  # as on a GPU: the memory rule alone
    monkeypatch.setattr(torch_backend, "available_memory", lambda device: 10 * 2**30)
    assert auto_tile(engine, 2000, 3000) == 0  # 6 GB needed < 7 GB budget
    assert auto_tile(engine, 3000, 4000) == pipeline.MAX_AUTO_TILE  # 12 GB: tiles, capped
    # With 4 GiB free: the largest aligned square within 70% of it.
    monkeypatch.setattr(torch_backend, "available_memory", lambda device: 4 * 2**30)
    side = auto_tile(engine, 3000, 4000)
    assert side % 8 == 0 and side * side * 1000 <= 0.7 * 4 * 2**30 < (side + 8) ** 2 * 1000
    monkeypatch.setattr(torch_backend, "available_memory", lambda device: 2**20)
    assert auto_tile(engine, 3000, 4000) == pipeline.MIN_TILE  # never below the minimum


def test_auto_tile_on_the_cpu_stays_at_cache_friendly_sizes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    engine = TorchBackend(Identity(), torch.device("cpu"), memory=lambda device, precision: 1000.0)
    cap, one_pass = torch_backend.CPU_AUTO_TILE, torch_backend.CPU_ONE_PASS_SIDE
    assert (engine.capabilities.max_tile, engine.capabilities.one_pass_side) == (cap, one_pass)
    monkeypatch.setattr(torch_backend, "available_memory", lambda device: 100 * 2**30)
    assert auto_tile(engine, one_pass, one_pass) == 0  # small images: one pass
    assert auto_tile(engine, one_pass + 8, 64) == cap  # plenty of memory, yet tiles
    assert auto_tile(engine, 3000, 4000) == cap
    monkeypatch.setattr(torch_backend, "available_memory", lambda device: 2**28)
    assert auto_tile(engine, 3000, 4000) < cap  # memory still rules below the cap
    # The whole pipeline follows it: a wide image on the CPU is cut into tiles.
    monkeypatch.setattr(torch_backend, "available_memory", lambda device: 100 * 2**30)
    rgb = np.random.default_rng(0).random((64, one_pass + 64, 3), dtype=np.float32)
    out, stats = restore_array(engine, rgb)
    assert stats.tiles == 2 and np.array_equal(out, rgb)
    engine.ignore_speed_limits()  # e.g. `mprnet eval`: whole images when they fit
    assert auto_tile(engine, 3000, 4000) == 0
    out, stats = restore_array(engine, rgb)
    assert stats.tiles == 1


def test_memory_estimate_covers_the_measured_networks() -> None:
    """The formula must not under-estimate what benchmarks/measure_memory.py measured."""
    from mprnet_cli.choices import Precision
    from mprnet_cli.inference.pipeline import estimate_bytes_per_pixel
    from mprnet_cli.tasks import Task
    from mprnet_cli.weights import registry

    for entry in registry().values():
        measured = entry.published.memory_bytes_per_pixel["cpu_fp32"]
        estimate = estimate_bytes_per_pixel(entry.published.config, Precision.FP32, "cpu")
        assert measured <= estimate <= 1.3 * measured
    derain = registry()[Task.DERAIN].published.config
    bf16 = estimate_bytes_per_pixel(derain, Precision.BF16, "cuda")
    assert bf16 < estimate_bytes_per_pixel(derain, Precision.FP32, "cuda")


def test_cpu_fallback_drops_emulated_precisions(monkeypatch: pytest.MonkeyPatch) -> None:
    import mprnet_cli.host.device as device
    from mprnet_cli.choices import Precision

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    for precision in (Precision.BF16, Precision.FP16):
        engine = TorchBackend(Identity(), torch.device("cpu"), precision)
        engine.fall_back()
        assert engine.precision is Precision.FP32
    # `auto` means on the CPU after a fallback what it means there from the start.
    engine = TorchBackend(Identity(), torch.device("cpu"), Precision.AUTO)
    assert engine.precision is Precision.FP32
    engine.precision = Precision.BF16  # as `auto` chose on a CUDA GPU
    engine.fall_back()
    assert engine.precision is Precision.FP32
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    engine = TorchBackend(Identity(), torch.device("cpu"), Precision.BF16)
    engine.fall_back()
    assert engine.precision is Precision.BF16
    engine = TorchBackend(Identity(), torch.device("cpu"), Precision.AUTO)
    assert engine.precision is Precision.BF16
    engine.precision = Precision.FP32
    engine.fall_back()
    assert engine.precision is Precision.BF16


def test_cpu_fallback_sizes_tiles_for_the_cpu() -> None:
    import mprnet_cli.inference.pipeline as pipeline
    from mprnet_cli.choices import Precision

    model = tiny_model()
    gpu_figure = pipeline.estimate_bytes_per_pixel(model.config, Precision.BF16, "cuda")
    engine = TorchBackend(
        model,
        torch.device("cpu"),
        Precision.BF16,
        memory=lambda device, precision: pipeline.estimate_bytes_per_pixel(
            model.config, precision, device
        ),
    )
    # as it was on the GPU
    engine.capabilities = dataclasses.replace(
        engine.capabilities, bytes_per_pixel=gpu_figure, max_tile=None, one_pass_side=None
    )
    engine.fall_back()
    cpu_figure = pipeline.estimate_bytes_per_pixel(model.config, engine.precision, "cpu")
    assert engine.capabilities.bytes_per_pixel == cpu_figure > gpu_figure
    assert engine.capabilities.max_tile == torch_backend.CPU_AUTO_TILE
    assert not engine.capabilities.can_fall_back


class _Poison(nn.Module):
    """Identity except for one pixel of the last tile, which is NaN or +inf."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = x.clone()
        out[-1, 0, -1, -1] = self.value
        return [out]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_network_output_fails_the_image(value: float) -> None:
    """NaN would quantise to black and look like success (the audit's NaN checkpoint)."""
    engine = TorchBackend(_Poison(value), torch.device("cpu"))
    with pytest.raises(NonFiniteOutputError, match="NaN or infinite"):
        restore_array(engine, image(40, 40), TileOptions(tile=16, overlap=8))
    finite = TorchBackend(_Poison(0.5), torch.device("cpu"))
    restore_array(finite, image(40, 40), TileOptions(tile=16, overlap=8))
