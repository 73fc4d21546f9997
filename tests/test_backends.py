"""The backend seam: registry and auto rules, native-bf16 detection, the OpenVINO backend."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import mprnet_cli.backends as backends
import mprnet_cli.backends.base as backends_base
import mprnet_cli.host.device as device
from mprnet_cli.backends import BACKENDS, BackendSpec, Capabilities, choose, create, descriptor
from mprnet_cli.backends.base import Batch, load
from mprnet_cli.backends.torch import TorchBackend
from mprnet_cli.choices import BackendChoice, Precision
from mprnet_cli.errors import BackendError, OutOfMemoryError, UsageError
from mprnet_cli.evaluation.metrics import psnr
from mprnet_cli.inference.pipeline import TileOptions, restore_array
from tests.conftest import REPO, tiny_model


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


# --------------------------------------------------------------------------- the seam


class NumpyBackend:
    """A backend with no torch at all: halves the image, and fails above a pixel budget."""

    name = "numpy"
    device = "cpu"
    precision = Precision.FP32

    class FullError(Exception):
        pass

    def __init__(self, max_pixels: int | None = None) -> None:
        self.capabilities = Capabilities(align=16, max_tile=None, can_fall_back=False)
        self.max_pixels = max_pixels
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: Batch) -> Batch:
        assert isinstance(batch, np.ndarray) and batch.dtype == np.float32
        self.shapes.append(batch.shape)
        if self.max_pixels is not None and batch.shape[2] * batch.shape[3] > self.max_pixels:
            raise self.FullError()
        return batch * 0.5

    def free_memory(self) -> int:
        return 1 << 30

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, self.FullError)

    def release_memory(self) -> None:
        pass

    def fall_back(self) -> None:
        raise AssertionError("never called: can_fall_back is False")

    def ignore_speed_limits(self) -> None:
        pass


def test_the_pipeline_runs_any_backend_on_its_alignment_and_recovery() -> None:
    rgb = image(37, 50)
    backend = NumpyBackend()
    out, stats = restore_array(backend, rgb, TileOptions(tile=0))
    assert np.array_equal(out, rgb * 0.5)
    assert backend.shapes == [(1, 3, 48, 64)]  # padded to the backend's alignment (16)
    assert (stats.backend, stats.precision, stats.device) == ("numpy", "fp32", "cpu")
    # Its own out-of-memory signal drives the tile recovery.
    backend = NumpyBackend(max_pixels=40 * 40)
    out, stats = restore_array(backend, image(64, 64), TileOptions(tile=64, overlap=8, min_tile=16))
    assert np.allclose(out, image(64, 64) * 0.5) and stats.oom_splits == 1
    backend = NumpyBackend(max_pixels=8)
    with pytest.raises(OutOfMemoryError, match="on the CPU"):
        restore_array(backend, image(64, 64), TileOptions(tile=32, overlap=8, min_tile=16))


def test_torch_backend_takes_numpy_or_tensors() -> None:
    backend = TorchBackend(tiny_model(), torch.device("cpu"))
    x = np.random.default_rng(0).random((2, 3, 16, 24), dtype=np.float32)
    out = backend(x)
    assert isinstance(out, np.ndarray) and out.shape == x.shape and out.dtype == np.float32
    assert np.array_equal(backend(torch.from_numpy(x)).numpy(), out)


# --------------------------------------------------------------------------- native bf16


@pytest.mark.parametrize("fast", [False, True])
def test_auto_precision_follows_native_bf16(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, fast: bool
) -> None:
    from mprnet_cli.api import Restorer

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: fast)
    r = Restorer(weights=tiny_checkpoint, device="cpu", backend="torch")
    expected = Precision.BF16 if fast else Precision.FP32
    assert r.precision is expected and r.backend.precision is expected
    _, stats = r.restore_rgb(image(24, 32))
    assert stats.precision == expected.value
    # An explicit precision wins either way.
    assert Restorer(weights=tiny_checkpoint, device="cpu", precision="fp32").precision is (
        Precision.FP32
    )


def _psnr_vs_fp32(model: torch.nn.Module, rgb: np.ndarray) -> float:
    outs = {}
    for precision in (Precision.FP32, Precision.BF16):
        backend = TorchBackend(model, torch.device("cpu"), precision)
        outs[precision], _ = restore_array(backend, rgb, TileOptions(tile=0))
    return psnr(outs[Precision.BF16], outs[Precision.FP32], 1.0)


def _photo_crop(side: int) -> np.ndarray:
    from mprnet_cli.imageio import read_image

    rgb = read_image(Path(__file__).resolve().parent.parent / "samples" / "bythewater-rain.png").rgb
    h, w = rgb.shape[:2]
    return np.ascontiguousarray(rgb[(h - side) // 2 :][:side, (w - side) // 2 :][:, :side])


@pytest.mark.parametrize("task", ["derain", "deblur", "denoise"])
def test_bf16_stays_within_45_db_of_fp32_with_the_bundled_weights(task: str) -> None:
    """The bar `--precision auto` must clear before it may pick bf16 (issue 11)."""
    from mprnet_cli.model.checkpoint import build_model, read_checkpoint
    from mprnet_cli.weights import bundled_path, registry

    bundled = registry()[task].bundled  # type: ignore[index]
    assert bundled is not None
    torch.set_num_threads(1)
    model = build_model(read_checkpoint(bundled_path(bundled)))
    assert _psnr_vs_fp32(model, _photo_crop(48)) >= 45


def test_bf16_stays_within_45_db_of_fp32_at_a_published_width() -> None:
    from mprnet_cli.model.network import MPRNet
    from mprnet_cli.weights import published_configs

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = MPRNet(published_configs()["derain"]).eval()
    assert _psnr_vs_fp32(model, _photo_crop(32)) >= 45


# --------------------------------------------------------------------------- registry rules


def test_auto_backend_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends_base, "package_installed", lambda name: name == "openvino")
    assert choose(BackendChoice.AUTO, "cpu") is BackendChoice.OPENVINO
    assert choose(BackendChoice.AUTO, "cpu", compile=True) is BackendChoice.TORCH
    assert choose(BackendChoice.AUTO, "cuda") is BackendChoice.TORCH
    assert choose(BackendChoice.TORCH, "cpu") is BackendChoice.TORCH
    monkeypatch.setattr(backends_base, "package_installed", lambda name: False)
    assert choose(BackendChoice.AUTO, "cpu") is BackendChoice.TORCH
    assert choose(BackendChoice.OPENVINO, "cpu") is BackendChoice.OPENVINO


def test_openvino_on_a_gpu_or_with_compile_is_a_usage_error() -> None:
    spec = BackendSpec(tiny_model(), torch.device("cuda"))
    with pytest.raises(UsageError, match="--device cpu"):
        create(BackendChoice.OPENVINO, spec)
    spec = BackendSpec(tiny_model(), torch.device("cpu"), compile=True)
    with pytest.raises(UsageError, match="--backend torch"):
        create(BackendChoice.OPENVINO, spec)


def test_unusable_openvino_falls_back_to_torch_with_one_notice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(spec: BackendSpec, notify: object) -> object:
        raise BackendError("OpenVINO is not usable (ImportError: no module); install it")

    monkeypatch.setattr(backends, "load", lambda ref: missing if "openvino" in ref else load(ref))
    notes: list[str] = []
    backend = create(
        BackendChoice.OPENVINO, BackendSpec(tiny_model(), torch.device("cpu")), notes.append
    )
    assert isinstance(backend, TorchBackend)
    assert len(notes) == 1 and "using PyTorch instead" in notes[0] and "\n" not in notes[0]


# --------------------------------------------------------------------------- descriptors


def numpy_factory(spec: BackendSpec, notify: object) -> NumpyBackend:
    """A factory a patched descriptor names (`tests.test_backends:numpy_factory`)."""
    return NumpyBackend()


def fixed_memory(config: object, precision: Precision, device_type: str) -> float:
    return 1234.0


def _patch(monkeypatch: pytest.MonkeyPatch, choice: BackendChoice, **fields: object) -> None:
    replaced = dataclasses.replace(backends_base.BACKENDS[choice], **fields)  # type: ignore[arg-type]
    monkeypatch.setitem(backends_base.BACKENDS, choice, replaced)


def test_each_backend_is_declared_once() -> None:
    assert set(BACKENDS) == set(BackendChoice) - {BackendChoice.AUTO}
    ov, pt = BACKENDS[BackendChoice.OPENVINO], BACKENDS[BackendChoice.TORCH]
    assert ov.devices == ("cpu",) and not ov.compile and ov.package == "openvino"
    assert set(pt.devices) == {"cpu", "cuda", "mps"} and pt.compile and pt.installed()
    assert backends_base.auto_help() == "OpenVINO on the CPU when installed, else PyTorch"
    assert list(backends_base.engine_modes()) == ["openvino-fp32", "openvino-bf16"]
    with pytest.raises(ValueError, match="choose"):
        descriptor(BackendChoice.AUTO)


def test_usage_errors_are_worded_from_the_descriptors() -> None:
    cases = [
        (
            BackendSpec(tiny_model(), torch.device("cuda")),
            "--backend openvino runs on the CPU, not cuda; use --device cpu or --backend torch",
        ),
        (
            BackendSpec(tiny_model(), torch.device("cpu"), compile=True),
            "--compile is a PyTorch option; use --backend torch with it",
        ),
        (
            BackendSpec(tiny_model(), torch.device("cpu"), Precision.FP16),
            "--precision fp16 is not supported by --backend openvino on the CPU; use fp32 or bf16",
        ),
    ]
    for spec, message in cases:
        with pytest.raises(UsageError) as err:
            create(BackendChoice.OPENVINO, spec)
        assert str(err.value) == message


def test_create_choose_and_help_follow_the_descriptors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends_base, "package_installed", lambda name: True)
    _patch(monkeypatch, BackendChoice.OPENVINO, auto_rank=None)  # auto never picks it
    assert choose(BackendChoice.AUTO, "cpu") is BackendChoice.TORCH
    assert backends_base.auto_help() == "PyTorch"
    # An engine that runs on CUDA GPUs too, built by the factory its descriptor names.
    _patch(
        monkeypatch,
        BackendChoice.OPENVINO,
        auto_rank=0,
        precisions={"cpu": frozenset({Precision.FP32}), "cuda": frozenset({Precision.FP32})},
        factory="tests.test_backends:numpy_factory",
        auto_factory=None,
    )
    assert choose(BackendChoice.AUTO, "cuda") is BackendChoice.OPENVINO
    spec = BackendSpec(tiny_model(), torch.device("cuda"), Precision.FP32)
    assert isinstance(create(BackendChoice.AUTO, spec), NumpyBackend)
    assert backends_base.auto_help() == (
        "OpenVINO on the CPU or CUDA GPUs when installed, else PyTorch"
    )


def test_the_cli_refuses_openvino_on_a_gpu_before_reading_weights(tmp_path: Path) -> None:
    from tests.helpers import invoke, save_png

    save_png(tmp_path / "a.png")
    missing = tmp_path / "no-such.pth"
    args = ["derain", str(tmp_path / "a.png"), "--weights", str(missing), "--backend", "openvino"]
    result = invoke(*args, "--device", "cuda")
    assert result.exit_code == 2
    assert "--backend openvino runs on the CPU, not cuda; use --device cpu" in result.output
    result = invoke(*args, "--compile")  # --device auto means the CPU for OpenVINO
    assert result.exit_code == 2 and "--compile is a PyTorch option" in result.output


def test_bench_modes_run_where_their_descriptor_says(monkeypatch: pytest.MonkeyPatch) -> None:
    from mprnet_cli.backends import bench

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    ov_fp16 = bench.Mode("x", True, True, Precision.FP16, backend=BackendChoice.OPENVINO)
    assert bench.available(bench.MODES["openvino-bf16"], cpu)
    assert not bench.available(bench.MODES["openvino-bf16"], gpu)
    assert not bench.available(ov_fp16, cpu)
    assert bench.available(bench.MODES["bf16+compile"], cpu)
    _patch(
        monkeypatch,
        BackendChoice.OPENVINO,
        precisions={"cpu": frozenset({Precision.FP32, Precision.FP16})},
    )
    assert bench.available(ov_fp16, cpu)
    _patch(monkeypatch, BackendChoice.TORCH, compile=False)
    assert not bench.available(bench.MODES["bf16+compile"], cpu)


def test_memory_per_pixel_is_the_descriptors(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path
) -> None:
    from mprnet_cli.api import Restorer
    from mprnet_cli.inference.pipeline import estimate_bytes_per_pixel
    from mprnet_cli.model.config import MPRNetConfig

    config = MPRNetConfig()
    pt = BACKENDS[BackendChoice.TORCH]
    assert pt.bytes_per_pixel(config, "cuda", Precision.BF16) == estimate_bytes_per_pixel(
        config, Precision.BF16, "cuda"
    )
    restorer = Restorer(weights=tiny_checkpoint, device="cpu", backend="torch", quiet=True)
    _patch(monkeypatch, BackendChoice.TORCH, memory="tests.test_backends:fixed_memory")
    assert restorer._bytes_per_pixel("cpu", Precision.FP32) == 1234.0  # not a registry network


def test_probing_openvino_does_not_import_it() -> None:
    code = (
        "import sys\n"
        "from mprnet_cli.backends import BACKENDS, choose\n"
        "from mprnet_cli.choices import BackendChoice\n"
        "choose(BackendChoice.AUTO, 'cpu')\n"
        "BACKENDS[BackendChoice.OPENVINO].installed()\n"
        "print(sorted({'openvino', 'torch', 'numpy'} & set(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- OpenVINO

ov_module = pytest.importorskip("openvino", reason="OpenVINO is a test dependency (.ci/run)")


@pytest.fixture(scope="module")
def converted_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny network converted once (the slow part) into a cache folder tests copy."""
    from mprnet_cli.backends import openvino as ovb

    root = tmp_path_factory.mktemp("ov-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MPRNET_CACHE", str(root))
    torch.set_num_threads(1)
    try:
        ovb.load_or_export(tiny_model())
        yield root
    finally:
        mp.undo()


@pytest.fixture()
def ov_cache(converted_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "mprnet-cache"
    shutil.copytree(converted_cache, root)
    monkeypatch.setenv("MPRNET_CACHE", str(root))
    return root


def test_openvino_matches_torch_at_odd_non_square_sizes(ov_cache: Path) -> None:
    """fp32: equal to PyTorch within float32 rounding (1e-4 on [0, 1] outputs) at sizes
    other than the export example, so the split points follow the input."""
    from mprnet_cli.backends.openvino import OpenVinoBackend

    model = tiny_model()
    ov = OpenVinoBackend.create(BackendSpec(model, torch.device("cpu"), Precision.FP32))
    ref = TorchBackend(model, torch.device("cpu"), Precision.FP32)
    for h, w in [(37, 61), (100, 44), (130, 75), (17, 200), (9, 40), (5, 30)]:
        rgb = image(h, w, seed=h)
        a, stats = restore_array(ov, rgb, TileOptions(tile=0))
        b, _ = restore_array(ref, rgb, TileOptions(tile=0))
        assert stats.backend == "openvino"
        assert np.abs(a - b).max() <= 1e-4, (h, w)
    assert not ov._compiled  # each shape once: the dynamic model ran them all
    # Tiles in batches run too (one image at a time inside the backend); their shape
    # comes back, so a static model is compiled for it and gives the same values.
    rgb = image(80, 96)
    a, _ = restore_array(ov, rgb, TileOptions(tile=48, overlap=16, batch=3))
    b, _ = restore_array(ref, rgb, TileOptions(tile=48, overlap=16, batch=3))
    assert np.abs(a - b).max() <= 1e-4
    assert list(ov._compiled) == [(1, 3, 48, 48)]


def test_openvino_bf16_hint(ov_cache: Path) -> None:
    from mprnet_cli.backends.openvino import OpenVinoBackend

    model = tiny_model()
    ov = OpenVinoBackend.create(BackendSpec(model, torch.device("cpu"), Precision.BF16))
    assert ov.precision is Precision.BF16
    rgb = image(40, 56)
    a, _ = restore_array(ov, rgb, TileOptions(tile=0))
    b, _ = restore_array(TorchBackend(model, torch.device("cpu")), rgb, TileOptions(tile=0))
    assert psnr(a, b, 1.0) >= 40  # bf16 rounding on a random network, on any CPU
    with pytest.raises(UsageError, match="fp32 or bf16"):
        OpenVinoBackend.create(BackendSpec(model, torch.device("cpu"), Precision.FP16))


def test_openvino_cache_is_keyed_by_weights_and_reused(
    ov_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mprnet_cli.backends import openvino as ovb

    folders = list((ov_cache / "openvino").iterdir())
    assert len(folders) == 1 and (folders[0] / "model.xml").is_file()
    assert ov_module.get_version().split("-")[0] in folders[0].name
    assert ovb.weights_key(tiny_model(seed=0)) != ovb.weights_key(tiny_model(seed=1))

    def no_export(model: object) -> object:
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(ovb, "export", no_export)
    notes: list[str] = []
    ovb.load_or_export(tiny_model(), notes.append)
    assert notes == []  # read back, nothing announced


def test_failed_conversion_falls_back_to_torch_with_one_notice(
    ov_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mprnet_cli.backends import openvino as ovb

    def broken(model: object) -> object:
        raise RuntimeError("Graphs differed across invocations\nmore detail")

    monkeypatch.setattr(ovb, "export", broken)
    notes: list[str] = []
    spec = BackendSpec(tiny_model(seed=3), torch.device("cpu"))  # not in the cache
    backend = create(BackendChoice.OPENVINO, spec, notes.append)
    assert isinstance(backend, TorchBackend)
    assert notes[0].startswith("converting")
    assert len(notes) == 2 and "could not convert" in notes[1] and "\n" not in notes[1]


def test_cli_backend_openvino(
    ov_cache: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from mprnet_cli.cli import app

    src = tmp_path / "in.png"
    Image.fromarray((image(30, 44) * 255).astype(np.uint8)).save(src)
    args = ["denoise", str(src), "-w", str(tiny_checkpoint), "--json", "--precision", "fp32"]
    result = CliRunner().invoke(
        app, [*args, "--backend", "openvino", "-o", str(tmp_path / "a.png")]
    )
    assert result.exit_code == 0, result.output
    assert '"backend": "openvino", "precision": "fp32"' in result.stdout
    result = CliRunner().invoke(app, [*args, "--backend", "torch", "-o", str(tmp_path / "b.png")])
    assert result.exit_code == 0, result.output
    a = np.asarray(Image.open(tmp_path / "a.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp_path / "b.png"), dtype=np.int16)
    assert np.abs(a - b).max() <= 1  # 8-bit rounding of values equal within 1e-4


# --------------------------------------------------------------------------- the OpenVINO cache


def _entry(cache: Path) -> Path:
    (folder,) = (p for p in (cache / "openvino").iterdir() if not p.name.startswith("."))
    return folder


def _converts_from(
    pristine: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[object], Callable[[], None]]:
    """`export` stands in with a read of the module's pristine conversion (the slow part)."""
    from mprnet_cli.backends import openvino as ovb

    calls: list[object] = []

    def fake_export(model: object) -> object:
        calls.append(model)
        return ov_module.Core().read_model(_entry(pristine) / "model.xml")

    monkeypatch.setattr(ovb, "export", fake_export)
    return calls, lambda: None


def _shuffle_largest_block(path: Path) -> None:
    """Swap the two halves of model.bin: same size, finite values, the wrong network."""
    data = path.read_bytes()
    half = len(data) // 2 // 4 * 4
    path.write_bytes(data[half : 2 * half] + data[:half] + data[2 * half :])


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("shuffled bin", "model.bin that does not match its digest"),
        ("truncated xml", "model.xml that does not match its digest"),
        ("missing bin", "lacks model.bin"),
        ("no record", "incomplete"),
        ("a file instead", "is not a folder"),
    ],
)
def test_a_damaged_cache_entry_is_converted_again_saying_why_and_repaired(
    ov_cache: Path, converted_cache: Path, monkeypatch: pytest.MonkeyPatch, damage: str, why: str
) -> None:
    """Audit 4.3/4.4: a shuffled model.bin restored at 23.6 dB with no word; a damaged entry
    was converted again on every run, because the repaired one could not replace it."""
    from mprnet_cli.backends import openvino as ovb

    folder = _entry(ov_cache)
    if damage == "shuffled bin":
        _shuffle_largest_block(folder / "model.bin")
    elif damage == "truncated xml":
        xml = folder / "model.xml"
        xml.write_bytes(xml.read_bytes()[:-100])
    elif damage == "missing bin":
        (folder / "model.bin").unlink()
    elif damage == "no record":
        (folder / "export.json").unlink()
    else:
        shutil.rmtree(folder)
        folder.write_text("not a folder")
    calls, _ = _converts_from(converted_cache, monkeypatch)
    notes: list[str] = []
    ovb.load_or_export(tiny_model(), notes.append)
    assert len(calls) == 1
    assert notes[0].startswith(f"the cached OpenVINO model {folder} ") and why in notes[0]
    assert notes[0].endswith("; converting it again")
    assert ovb.entry_problem(folder) is None  # repaired in place
    assert [p.name for p in (ov_cache / "openvino").iterdir()] == [folder.name]
    notes.clear()
    ovb.load_or_export(tiny_model(), notes.append)  # the next run reads it back
    assert len(calls) == 1 and notes == []


def test_a_cache_entry_is_hashed_once_per_version(
    ov_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mprnet_cli.weights.cache as weights
    from mprnet_cli.backends import openvino as ovb

    hashed: list[str] = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    folder = _entry(ov_cache)
    for _ in range(3):
        assert ovb.entry_problem(folder) is None
    assert sorted(hashed) == ["model.bin", "model.xml"]


def test_a_full_disk_under_the_cache_uses_the_model_in_memory(
    ov_cache: Path, converted_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit 4.2: `save_model` raises RuntimeError on a full disk, which killed the run."""
    from mprnet_cli.backends import openvino as ovb

    shutil.rmtree(_entry(ov_cache))
    _converts_from(converted_cache, monkeypatch)
    real_ov = ovb._openvino()

    class FullDisk:
        def __getattr__(self, name: str) -> object:
            return getattr(real_ov, name)

        @staticmethod
        def save_model(*args: object, **kwargs: object) -> None:
            raise RuntimeError("Exception from src/core/src/pass/serialize.cpp:1234:\nwrite failed")

    monkeypatch.setattr(ovb, "_openvino", FullDisk)
    notes: list[str] = []
    converted = ovb.load_or_export(tiny_model(), notes.append)
    assert converted is not None
    assert any(
        n.startswith(f"could not write the OpenVINO cache in {ov_cache / 'openvino'}")
        and "from memory" in n
        for n in notes
    ), notes
    assert list((ov_cache / "openvino").iterdir()) == []  # no half-written entry


def test_stale_temp_folders_of_killed_saves_are_removed(ov_cache: Path) -> None:
    import os
    import time

    from mprnet_cli.backends import openvino as ovb

    parent = ov_cache / "openvino"
    old, young = parent / ".tmp-killed", parent / ".tmp-live"
    for d in (old, young):
        d.mkdir()
        (d / "model.bin").write_bytes(b"x")
    past = time.time() - ovb.STALE_SECONDS - 5
    os.utime(old, (past, past))
    ovb.clean_stale(parent)
    assert not old.exists() and young.is_dir() and _entry(ov_cache).is_dir()


def test_openvino_writes_nothing_outside_the_mprnet_cache(tmp_path: Path) -> None:
    """Issue 23, 3.7: OpenVINO's telemetry client wrote ~/intel/openvino_ga_cid and
    ~/intel/stats on the first conversion. A small network stands in for MPRNet here
    (the converter and its telemetry are the same)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    code = (
        "import torch\n"
        "from mprnet_cli.backends import openvino as ovb\n"
        "ov = ovb._openvino()\n"
        "m = ov.convert_model(torch.nn.Conv2d(3, 3, 1), example_input=torch.rand(1, 3, 8, 8))\n"
        "ov.Core().compile_model(m, 'CPU')\n"
        "assert ovb.save(m, ovb.model_dir('0' * 64, ov.get_version()), 1.0)\n"
    )
    env = {
        **os.environ,
        "HOME": str(home),
        "MPRNET_CACHE": str(cache),
        "PYTHONPATH": str(REPO),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    env.pop("CI", None)  # the telemetry client stays quiet in CI on its own
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert list(home.rglob("*")) == []
    assert {p.name for p in cache.rglob("*") if p.is_file()} == {
        "model.xml",
        "model.bin",
        "export.json",
        "verified.json",
    } or {p.name for p in cache.rglob("*") if p.is_file()} == {
        "model.xml",
        "model.bin",
        "export.json",
    }


# --------------------------------------------------------------------------- auto on the CPU


@pytest.fixture()
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Background converters started (recorded, not run: the tests run the job in-process)."""
    from mprnet_cli.backends import openvino as ovb

    calls: list[list[str]] = []
    monkeypatch.setattr(ovb.subprocess, "Popen", lambda args, **kw: calls.append(args))
    monkeypatch.setattr(backends_base, "package_installed", lambda name: name == "openvino")
    return calls


def test_auto_runs_pytorch_on_a_first_run_and_converts_in_the_background(
    ov_cache: Path, converted_cache: Path, spawned: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23, part 1: the first run with new weights waited 20-25 s for the conversion
    (0.57x the reference's speed); now it restores with PyTorch from the first pixel."""
    from mprnet_cli.backends import openvino as ovb

    monkeypatch.setattr(ovb, "AUTO_MIN_WIDTH", 1)  # the tiny network counts as wide here
    shutil.rmtree(_entry(ov_cache))
    calls, _ = _converts_from(converted_cache, monkeypatch)
    notes: list[str] = []
    spec = BackendSpec(tiny_model(), torch.device("cpu"), Precision.FP32)
    first = create(BackendChoice.AUTO, spec, notes.append)
    assert isinstance(first, TorchBackend) and calls == []  # nothing converted in the run
    assert len(spawned) == 1 and len(notes) == 1 and "in the background" in notes[0]
    job, folder = Path(spawned[0][-2]), Path(spawned[0][-1])
    assert folder.parent == job.parent == ov_cache / "openvino"
    # A second run while the converter works starts no other one.
    assert isinstance(create(BackendChoice.AUTO, spec, notes.append), TorchBackend)
    assert len(spawned) == 1
    # The background job (run here) leaves a verified entry and no job folder ...
    assert ovb.convert_job(job, folder) and ovb.entry_problem(folder) is None
    assert not job.exists() and len(calls) == 1
    # ... which the next run uses.
    later = create(BackendChoice.AUTO, spec, notes.append)
    assert later.name == "openvino" and len(calls) == 1


def test_openvino_runs_the_uncut_network_under_its_own_key(
    ov_cache: Path, converted_cache: Path, spawned: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: `--split-lines fix` runs the same weights uncut, another graph: converted
    and cached apart from the cut one (also by the background converter), and equal to
    PyTorch's uncut run within float32 rounding (1e-4, as for the cut network)."""
    from mprnet_cli.backends import openvino as ovb
    from mprnet_cli.backends.openvino import OpenVinoBackend

    uncut = tiny_model()
    uncut.cut_input = False
    assert ovb.weights_key(uncut) != ovb.weights_key(tiny_model())
    ov = OpenVinoBackend.create(BackendSpec(uncut, torch.device("cpu"), Precision.FP32))
    rgb = image(40, 64)
    a, _ = restore_array(ov, rgb, TileOptions(tile=0))
    b, _ = restore_array(TorchBackend(uncut, torch.device("cpu")), rgb, TileOptions(tile=0))
    c, _ = restore_array(TorchBackend(tiny_model(), torch.device("cpu")), rgb, TileOptions(tile=0))
    assert np.abs(a - b).max() <= 1e-4 and np.abs(a - c).max() > 1e-3
    assert len(list((ov_cache / "openvino").iterdir())) == 2
    # The background converter is told too (it rebuilds the network from saved weights).
    calls, _ = _converts_from(converted_cache, monkeypatch)
    folder = ov_cache / "openvino" / "uncut-job-test"
    assert ovb.convert_in_background(uncut, folder) and len(spawned) == 1
    assert ovb.convert_job(Path(spawned[0][-2]), folder)
    assert [getattr(m, "cut_input", None) for m in calls] == [False]


def test_auto_runs_compact_networks_on_pytorch(ov_cache: Path, spawned: list[list[str]]) -> None:
    """Part 2: as fast end to end with PyTorch (OpenVINO's compile ate its advantage)."""
    spec = BackendSpec(tiny_model(), torch.device("cpu"), Precision.FP32)  # n_feat 8
    assert isinstance(create(BackendChoice.AUTO, spec), TorchBackend)
    assert spawned == []
    assert create(BackendChoice.OPENVINO, spec).name == "openvino"  # asked for: it runs


def test_openvino_tiles_with_its_own_memory_figures(
    ov_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Part 2: the backend priced its tiles with PyTorch's figures, never measured for it;
    and every compiled static shape keeps its own buffers, so they may not pile up."""
    from mprnet_cli.backends import openvino as ovb

    spec = BackendSpec(tiny_model(), torch.device("cpu"), Precision.FP32, memory=lambda d, p: 1.0)
    ov = ovb.OpenVinoBackend.create(spec)
    per_pixel = ov.capabilities.bytes_per_pixel
    assert per_pixel == pytest.approx(1.1 * 60.5 * (8 + 4))
    monkeypatch.setattr(ov, "free_memory", lambda: int(3 * per_pixel * 48 * 48 * 1.5))
    for side in (48, 56, 48, 56):  # each shape twice: static models for both
        ov(image(side, side).transpose(2, 0, 1)[None].copy())
    assert list(ov._compiled) == [(1, 3, 56, 56)]  # two did not fit in a third of it


def test_a_long_conversion_is_a_labelled_step_with_its_elapsed_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The terminal sat at `images 0/2 ... eta -:--:--` for 17 s with one line."""
    import threading

    from mprnet_cli.backends import openvino as ovb

    ticked = threading.Event()
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if "so far" in text:
            ticked.set()

    monkeypatch.setattr(ovb, "_TICK_SECONDS", 0.01)
    monkeypatch.setattr(ovb, "export", lambda model: ticked.wait(30) and "converted")
    converted, seconds = ovb.convert_timed(tiny_model(), note)
    assert converted == "converted" and seconds >= 0
    assert notes[0].startswith("converting the network for OpenVINO")
    assert any(n.startswith("converting for OpenVINO: ") and n.endswith(" s so far") for n in notes)
    assert notes[-1] == f"converted for OpenVINO in {seconds:.1f} s"
