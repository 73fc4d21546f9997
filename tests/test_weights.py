"""Weights resolution and the real download code against a local Hub."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mprnet_cli.errors import IntegrityError, OfflineError, UsageError, WeightsError
from mprnet_cli.tasks import Task
from mprnet_cli.weights import (
    ModelChoice,
    Source,
    pick_checkpoint,
    registry,
    resolve,
    verify_file,
)
from tests.conftest import REPO, TINY_CONFIG, tiny_model
from tests.hub_server import FakeHub

REPO_ID = "deepinv/MPRNet"


def _checkpoint_bytes() -> bytes:
    buf = io.BytesIO()
    state = {f"module.{k}": v for k, v in tiny_model().state_dict().items()}
    torch.save({"epoch": 1, "state_dict": state}, buf)
    return buf.getvalue()


def write_registry(
    folder: Path,
    *,
    filename: str = "model_deraining.pth",
    sha256: str | None = None,
    bundled: str | None = None,
) -> Path:
    """A registry like the shipped one, but with the tiny network's config."""
    data = json.loads((REPO / "weights" / "registry.json").read_text())
    for task in ("derain", "deblur", "denoise"):
        data["published"][task]["config"] = TINY_CONFIG.to_dict()
    data["published"]["derain"]["filename"] = filename
    data["published"]["derain"]["sha256"] = sha256
    data["bundled"] = {}
    if bundled is not None:
        data["bundled"]["derain"] = {
            "file": bundled,
            "sha256": hashlib.sha256((folder / bundled).read_bytes()).hexdigest(),
            "config": TINY_CONFIG.to_dict(),
            "license": "mprnet-academic",
        }
    path = folder / "registry.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture()
def hub() -> Iterator[FakeHub]:
    server = FakeHub(
        REPO_ID, {"model_deraining.pth": _checkpoint_bytes(), "LICENSE.md": b"academic"}
    ).start()
    yield server
    server.stop()


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "mprnet_cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=240,
    )


def hub_env(tmp_path: Path, registry_file: Path, endpoint: str | None) -> dict[str, str]:
    env = {
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
        "MPRNET_CACHE": str(tmp_path / "mprnet-cache"),
        "MPRNET_REGISTRY": str(registry_file),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_ETAG_TIMEOUT": "2",
        "HF_HUB_DOWNLOAD_TIMEOUT": "5",
    }
    # A closed local port stands in for "no network" when the server is gone.
    env["HF_ENDPOINT"] = endpoint or "http://127.0.0.1:9"
    return env


def cached_blob(tmp_path: Path) -> Path:
    blobs = list((tmp_path / "hf" / "hub").glob("models--deepinv--MPRNet/blobs/*"))
    assert len(blobs) == 1, blobs
    return blobs[0]


def test_download_then_cache_with_server_stopped(tmp_path: Path, hub: FakeHub) -> None:
    reg = write_registry(tmp_path)
    env = hub_env(tmp_path, reg, hub.url)
    first = run_cli(["weights", "download", "derain"], env)
    assert first.returncode == 0, first.stderr
    assert "Academic Public License" in first.stderr  # licence shown on first download
    assert any("/resolve/" in r for r in hub.downloads())
    path = Path(first.stderr.strip().splitlines()[-1].split(": ", 1)[1])
    assert path.is_file()

    hub.stop()  # from now on any network call would fail
    offline_env = hub_env(tmp_path, reg, None)
    second = run_cli(["weights", "path", "derain"], offline_env)
    assert second.returncode == 0, second.stderr
    assert Path(second.stdout.strip()).resolve() == path.resolve()
    listing = run_cli(["weights", "list"], offline_env)
    assert listing.returncode == 0, listing.stderr
    assert "derain" in listing.stdout and "yes" in listing.stdout

    # The restore path resolves from the cache without any request.
    resolved = _resolve_in_subprocess(offline_env)
    assert resolved["source"] == "published"
    assert Path(resolved["path"]).resolve() == path.resolve()


def _resolve_in_subprocess(env: dict[str, str]) -> dict[str, str]:
    code = (
        "import json; from mprnet_cli.weights import resolve; from mprnet_cli.tasks import Task;"
        "r = resolve(Task.DERAIN); print(json.dumps({'source': r.source.value, 'path': str(r.path)}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, str] = json.loads(proc.stdout)
    return result


def _resolve_error(env: dict[str, str]) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mprnet_cli.weights import resolve; from mprnet_cli.tasks import Task;"
            "resolve(Task.DERAIN)",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert proc.returncode != 0
    return proc.stderr


def test_truncated_cached_file_is_detected(tmp_path: Path, hub: FakeHub) -> None:
    reg = write_registry(tmp_path)
    assert (
        run_cli(["weights", "download", "derain"], hub_env(tmp_path, reg, hub.url)).returncode == 0
    )
    blob = cached_blob(tmp_path)
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])
    err = _resolve_error(hub_env(tmp_path, reg, None))
    assert "IntegrityError" in err and "corrupt or altered" in err


def test_altered_file_same_size_is_detected(tmp_path: Path, hub: FakeHub) -> None:
    reg = write_registry(tmp_path)
    assert (
        run_cli(["weights", "download", "derain"], hub_env(tmp_path, reg, hub.url)).returncode == 0
    )
    blob = cached_blob(tmp_path)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    err = _resolve_error(hub_env(tmp_path, reg, None))
    assert "IntegrityError" in err and "mprnet weights download --force" in err


def test_download_force_repairs_a_corrupt_cache(tmp_path: Path, hub: FakeHub) -> None:
    reg = write_registry(tmp_path)
    env = hub_env(tmp_path, reg, hub.url)
    assert run_cli(["weights", "download", "derain"], env).returncode == 0
    blob = cached_blob(tmp_path)
    blob.write_bytes(b"garbage")
    fixed = run_cli(["weights", "download", "derain", "--force"], env)
    assert fixed.returncode == 0, fixed.stderr
    assert hashlib.sha256(cached_blob(tmp_path).read_bytes()).hexdigest() == blob.name


def test_registry_sha256_mismatch_is_detected(tmp_path: Path, hub: FakeHub) -> None:
    reg = write_registry(tmp_path, sha256="f" * 64)
    proc = run_cli(["weights", "download", "derain"], hub_env(tmp_path, reg, hub.url))
    assert proc.returncode == 1
    assert "corrupt or altered" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_registry_name_falls_back_to_listing(tmp_path: Path, hub: FakeHub) -> None:
    # The registry's sha256 belongs to its own (vanished) file: the replacement is
    # checked against the Hub's hash instead, and found again offline.
    reg = write_registry(tmp_path, filename="renamed_deraining_v2.pth", sha256="e" * 64)
    proc = run_cli(["weights", "download", "derain"], hub_env(tmp_path, reg, hub.url))
    assert proc.returncode == 0, proc.stderr
    assert "using model_deraining.pth instead" in proc.stderr
    hub.stop()
    offline = hub_env(tmp_path, reg, None)
    where = run_cli(["weights", "path", "derain"], offline)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).name == "model_deraining.pth"
    assert _resolve_in_subprocess(offline)["source"] == "published"


def test_no_checkpoint_for_task_lists_repo_files(tmp_path: Path) -> None:
    server = FakeHub(REPO_ID, {"README.md": b"hi", "LICENSE.md": b"x"}).start()
    try:
        reg = write_registry(tmp_path)
        proc = run_cli(["weights", "download", "derain"], hub_env(tmp_path, reg, server.url))
    finally:
        server.stop()
    assert proc.returncode == 1
    assert "README.md" in proc.stderr and "LICENSE.md" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_offline_with_nothing_cached_says_what_to_do(tmp_path: Path) -> None:
    reg = write_registry(tmp_path)
    proc = run_cli(["weights", "download", "derain"], hub_env(tmp_path, reg, None))
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert line.count("\n") == 0, proc.stderr  # one line
    assert "--weights FILE" in line and "mprnet weights download derain" in line


def test_hf_hub_offline_is_honoured(tmp_path: Path, hub: FakeHub) -> None:
    reg = write_registry(tmp_path)
    env = {**hub_env(tmp_path, reg, hub.url), "HF_HUB_OFFLINE": "1"}
    proc = run_cli(["weights", "download", "derain"], env)
    assert proc.returncode == 1
    assert "cannot be reached" in proc.stderr
    assert hub.downloads() == []


def test_auto_falls_back_to_bundled_with_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.save({"state_dict": tiny_model().state_dict()}, tmp_path / "bundled-derain.pth")
    reg = write_registry(tmp_path, bundled="bundled-derain.pth")
    monkeypatch.setenv("MPRNET_REGISTRY", str(reg))
    notes: list[str] = []
    resolved = resolve(Task.DERAIN, notify=notes.append)
    assert resolved.source is Source.BUNDLED
    assert (
        len(notes) == 1 and "bundled" in notes[0] and "mprnet weights download derain" in notes[0]
    )
    with pytest.raises(OfflineError):
        resolve(Task.DERAIN, model=ModelChoice.PUBLISHED)
    assert resolve(Task.DERAIN, model=ModelChoice.BUNDLED).source is Source.BUNDLED


def test_bundled_file_altered_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.save({"state_dict": tiny_model().state_dict()}, tmp_path / "b.pth")
    reg = write_registry(tmp_path, bundled="b.pth")
    monkeypatch.setenv("MPRNET_REGISTRY", str(reg))
    with (tmp_path / "b.pth").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(IntegrityError):
        resolve(Task.DERAIN, model=ModelChoice.BUNDLED)


def test_explicit_file_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert resolve(None, weights=f).source is Source.FILE
    with pytest.raises(WeightsError, match="not found"):
        resolve(None, weights=tmp_path / "nope.pth")
    with pytest.raises(UsageError):
        resolve(Task.DERAIN, weights=f, model=ModelChoice.BUNDLED)
    with pytest.raises(UsageError):
        resolve(None)


def test_verify_file_remembers_good_hashes(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    verify_file(f, sha, 3000)
    with pytest.raises(IntegrityError, match="3000"):
        verify_file(f, sha, 3001)
    f.write_bytes(b"abd" * 1000)
    with pytest.raises(IntegrityError):
        verify_file(f, sha)


def test_pick_checkpoint() -> None:
    files = [
        "README.md",
        "model_deblurring.pth",
        "model_denoising.pth",
        "model_deraining.pth",
        "LICENSE.md",
    ]
    assert pick_checkpoint(Task.DERAIN, files) == "model_deraining.pth"
    assert pick_checkpoint(Task.DEBLUR, files) == "model_deblurring.pth"
    assert pick_checkpoint(Task.DENOISE, files) == "model_denoising.pth"
    assert pick_checkpoint(Task.DERAIN, ["README.md"]) is None
    assert pick_checkpoint(Task.DENOISE, ["sidd.pth", "sidd.safetensors"]) == "sidd.safetensors"


def test_shipped_registry_is_complete() -> None:
    entries = registry()
    assert set(entries) == set(Task)
    for entry in entries.values():
        assert entry.published.repo == REPO_ID
        assert "Academic" in entry.published.license.name
        assert entry.published.benchmarks
        # Our own measured figures travel with the bundled weights (see weights/README.md).
        assert entry.bundled is not None and entry.bundled.benchmarks
    assert entries[Task.DEBLUR].published.benchmarks["GoPro"].psnr == 32.66
    assert entries[Task.DERAIN].published.benchmarks["Rain100L"].ssim == 0.965
    assert entries[Task.DENOISE].published.benchmarks["SIDD"].psnr == 39.71
    assert entries[Task.DERAIN].published.config.n_feat == 40
