"""Shared fixtures: the reference vectors (tests/data/reference) and tiny checkpoints."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mprnet_cli.model.config import MPRNetConfig
from mprnet_cli.model.network import MPRNet

#: Reference vectors and tiny checkpoints made with the reference implementation (6.5 MB),
#: kept in the repository so that every clone runs every test.
REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "tests" / "data" / "reference"

# Before anything imports huggingface_hub (which reads these once): never the user's cache.
_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="mprnet-tests-"))
os.environ["HF_HOME"] = str(_SESSION_CACHE / "hf")
os.environ["HF_HUB_CACHE"] = str(_SESSION_CACHE / "hf" / "hub")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MPRNET_CACHE"] = str(_SESSION_CACHE / "mprnet")
# Commands run in subprocesses get what `_plain_cpu` gives in-process tests: fp32 PyTorch,
# whatever this CPU has (native bf16) and whether OpenVINO is installed.
os.environ["MPRNET_BACKEND"] = "torch"
os.environ["MPRNET_PRECISION"] = "fp32"

TINY_CONFIG = MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1, reduction=4)


@pytest.fixture(autouse=True)
def _isolated_caches(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads or writes the user's real caches or reaches the real Hub."""
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("MPRNET_CACHE", str(root / "mprnet"))
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("MPRNET_REGISTRY", raising=False)
    monkeypatch.delenv("MPRNET_DEBUG", raising=False)


@pytest.fixture(autouse=True)
def _plain_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same defaults on every CPU: no native bf16 and no OpenVINO unless a test says so.

    `--precision auto` and `--backend auto` follow the machine (bf16 on CPUs with native
    bf16; OpenVINO where installed); tests of those rules mock the detection both ways,
    and every other test gets fp32 PyTorch, as on an AVX2-only CPU without OpenVINO.
    """
    import mprnet_cli.backends.base as backends_base
    import mprnet_cli.host.device as device

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    monkeypatch.setattr(backends_base, "package_installed", lambda name: False)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference data; missing files are a broken checkout, so they fail (never skip)."""
    if not (REFERENCE / "vectors.json").is_file():
        pytest.fail(f"reference vectors missing from {REFERENCE}: restore tests/data/ from git")
    return REFERENCE


def tiny_model(seed: int = 0, config: MPRNetConfig = TINY_CONFIG) -> MPRNet:
    torch.manual_seed(seed)
    model = MPRNet(config).eval()
    # Random but non-trivial weights so that outputs differ from inputs.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def write_checkpoint(path: Path) -> Path:
    """The tiny MPRNet saved in the published format ({'state_dict'}, 'module.' prefix)."""
    state = {f"module.{k}": v for k, v in tiny_model().state_dict().items()}
    torch.save({"epoch": 1, "state_dict": state, "optimizer": {}}, path)
    return path


@pytest.fixture()
def tiny_checkpoint(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "tiny.pth")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny_checkpoint` written once per module (end-to-end modules share it)."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """In-process runs pass --threads 1, which is process-wide: put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
