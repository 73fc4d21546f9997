"""Device policy: native-bf16 detection and the load-aware default thread count."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch

import mprnet_cli.host.device as device
from mprnet_cli.host.device import cpu_has_fast_bf16 as real_cpu_has_fast_bf16


def _fake_proc(monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]) -> None:
    real_open = builtins.open

    def fake_open(path: object, *args: object, **kwargs: object) -> object:
        return real_open(files.get(str(path), path), *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", fake_open)


def test_fast_bf16_is_detected_from_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for flags, fast in [
        ({"avx2", "fma", "avx512f"}, False),  # AVX-512 without BF16: emulated
        ({"avx2", "avx512f", "avx512_bf16"}, True),  # Zen 4, Cooper Lake
        ({"avx2", "amx_tile", "amx_bf16"}, True),  # Sapphire Rapids and later
        (set(), False),  # not Linux, or /proc unreadable
    ]:
        monkeypatch.setattr(device, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert real_cpu_has_fast_bf16() is fast


def test_cpu_flags_parse_proc_cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\nbugs\t\t: spectre\n")
    _fake_proc(monkeypatch, {"/proc/cpuinfo": info})
    assert device.cpu_flags() == frozenset({"fpu", "avx2", "avx512_bf16"})
    _fake_proc(monkeypatch, {"/proc/cpuinfo": tmp_path / "missing"})
    assert device.cpu_flags() == frozenset()


def test_default_threads_leave_busy_cores_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "_usable_cpus", lambda: 8)
    assert device.default_threads(cores=8, busy=0) == 8  # idle: one per core, as torch does
    assert device.default_threads(cores=8, busy=3) == 5
    assert device.default_threads(cores=8, busy=20) == 1  # never zero
    assert device.default_threads(cores=4, busy=2) == 4  # SMT siblings: physical cores cap it
    monkeypatch.setattr(device, "_other_runnable", lambda: None)  # no /proc/loadavg
    assert device.default_threads(cores=8) == 8


def test_other_runnable_reads_proc_loadavg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("7.93 3.51 1.42 4/280 17680\n")
    _fake_proc(monkeypatch, {"/proc/loadavg": loadavg})
    assert device._other_runnable(samples=2, pause=0) == 3  # less this process
    loadavg.write_text("garbage\n")
    assert device._other_runnable(samples=1) is None


def test_set_threads_applies_the_default_unless_omp_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(device, "default_threads", lambda: 1)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        device.set_threads(None)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        device.set_threads(None)
        assert torch.get_num_threads() == 2  # the user's OMP_NUM_THREADS stands
        device.set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_pytorch_precisions_per_device_are_its_descriptors(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from mprnet_cli.backends.base import BACKENDS
    from mprnet_cli.choices import BackendChoice, Precision
    from mprnet_cli.errors import UsageError

    cpu, mps = torch.device("cpu"), torch.device("mps")
    assert device.supports_precision(cpu, Precision.BF16)
    assert not device.supports_precision(cpu, Precision.FP16)
    assert device.supports_precision(mps, Precision.FP16)
    assert not device.supports_precision(mps, Precision.BF16)
    assert device.supports_precision(mps, Precision.FP32)  # every device computes in fp32
    torch_only_fp32 = dataclasses.replace(
        BACKENDS[BackendChoice.TORCH], precisions={"cpu": frozenset({Precision.FP32})}
    )
    monkeypatch.setitem(BACKENDS, BackendChoice.TORCH, torch_only_fp32)
    assert not device.supports_precision(cpu, Precision.BF16)
    with pytest.raises(UsageError, match="--precision bf16 is not supported on cpu"):
        device.check_precision(cpu, Precision.BF16)
