"""Weights resolution and the real download code against a local Hub."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mprnet_cli.choices import ModelChoice
from mprnet_cli.errors import (
    CheckpointError,
    IntegrityError,
    OfflineError,
    UsageError,
    WeightsError,
)
from mprnet_cli.tasks import Task
from mprnet_cli.weights import (
    Source,
    bundled_notice,
    import_file,
    network_of,
    registry,
    resolve,
    verify_file,
)
from tests.conftest import tiny_model
from tests.helpers import (
    BUNDLED_NOTE,
    MODEL_SOURCE,
    REPO_ID,
    SPACE_ID,
    SPACE_PATH,
    SPACE_SOURCE,
    checkpoint_bytes,
    hub_env,
    write_registry,
)
from tests.hub_server import FakeHub


@pytest.fixture()
def hub() -> Iterator[FakeHub]:
    server = FakeHub(
        REPO_ID, {"model_deraining.pth": checkpoint_bytes(), "LICENSE.md": b"academic"}
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


def _json_rows(env: dict[str, str]) -> list[dict[str, Any]]:
    listing = run_cli(["weights", "list", "--json"], env)
    assert listing.returncode == 0, listing.stderr
    return [json.loads(line) for line in listing.stdout.splitlines()]


def test_first_source_missing_then_a_space_serves(tmp_path: Path) -> None:
    server = FakeHub(SPACE_ID, {SPACE_PATH: checkpoint_bytes()}, repo_type="space").start()
    try:
        reg = write_registry(tmp_path)
        env = hub_env(tmp_path, reg, server.url)
        quiet = run_cli(["weights", "download", "derain", "--quiet"], env)
        assert quiet.returncode == 0 and quiet.stderr == ""  # silent unless all fail
        loud = run_cli(["weights", "download", "derain"], env)
    finally:
        server.stop()
    assert loud.returncode == 0, loud.stderr
    lines = loud.stderr.strip().splitlines()
    assert lines[0] == (
        f"source 1 {REPO_ID}/model_deraining.pth: no such repository, or it is private or "
        "gated; trying the next source"
    )
    path = Path(lines[-1].split(": ", 1)[1])
    assert "spaces--akhaliq--MPRNet" in str(path) and path.name == "model_deraining.pth"
    offline = hub_env(tmp_path, reg, None)
    resolved = _resolve_in_subprocess(offline)
    assert resolved["source"] == "published" and Path(resolved["path"]) == path
    rows = [r for r in _json_rows(offline) if r["task"] == "derain"]
    assert [(r["source"], r["n"], r["local"]) for r in rows] == [
        ("published", 1, False),
        ("published", 2, True),
    ]
    assert rows[1]["name"] == f"spaces/{SPACE_ID}/{SPACE_PATH}"


def test_a_file_of_another_task_is_refused_and_the_next_source_used(tmp_path: Path) -> None:
    server = FakeHub(REPO_ID, {"model_deraining.pth": checkpoint_bytes("deblur")})
    server.serve(SPACE_ID, {SPACE_PATH: checkpoint_bytes()}, repo_type="space").start()
    try:
        reg = write_registry(tmp_path)
        proc = run_cli(["weights", "download", "derain"], hub_env(tmp_path, reg, server.url))
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert (
        "source 1 deepinv/MPRNet/model_deraining.pth: model_deraining.pth holds the published "
        "deblur network, not the published derain network (n_feat 8, scale_unetfeats 4, "
        "scale_orsnetfeats 4, 1 CABs); trying the next source"
    ) in proc.stderr
    # Offline, the wrong file still in the cache is passed over for the right one.
    resolved = _resolve_in_subprocess(hub_env(tmp_path, reg, None))
    assert "spaces--akhaliq--MPRNet" in resolved["path"]


def test_all_sources_failing_lists_them_and_the_ways_out(tmp_path: Path, hub: FakeHub) -> None:
    reg = write_registry(tmp_path, sources=[{**MODEL_SOURCE, "sha256": "f" * 64}, SPACE_SOURCE])
    proc = run_cli(["weights", "download", "derain", "--quiet"], hub_env(tmp_path, reg, hub.url))
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert line.count("\n") == 0, proc.stderr
    assert "source 1 deepinv/MPRNet/model_deraining.pth: its sha256" in line
    assert "is not the registry's ffffffffffff" in line
    assert f"source 2 spaces/{SPACE_ID}/{SPACE_PATH}: no such repository" in line
    for way_out in ("mprnet weights import derain FILE", "--weights FILE", "--model bundled"):
        assert way_out in line
    assert "Traceback" not in proc.stderr


def test_source_option_fetches_only_that_source(tmp_path: Path, hub: FakeHub) -> None:
    hub.serve(SPACE_ID, {SPACE_PATH: checkpoint_bytes()}, repo_type="space")
    reg = write_registry(tmp_path)
    env = hub_env(tmp_path, reg, hub.url)
    proc = run_cli(["weights", "download", "derain", "--source", "2"], env)
    assert proc.returncode == 0, proc.stderr
    assert hub.downloads() and all("/spaces/" in r for r in hub.downloads())
    bad = run_cli(["weights", "download", "derain", "--source", "3"], env)
    assert bad.returncode == 2 and "--source must be between 1 and 2" in bad.stderr


def test_offline_with_nothing_cached_says_what_to_do(tmp_path: Path) -> None:
    reg = write_registry(tmp_path)
    proc = run_cli(["weights", "download", "derain"], hub_env(tmp_path, reg, None))
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert line.count("\n") == 0, proc.stderr  # one line
    # not the command just run, nor options `weights download` does not take
    assert "mprnet weights import derain FILE" in line and "docs/weights.md" in line
    assert "mprnet weights download" not in line and "--weights" not in line, line
    assert "--model" not in line
    every = run_cli(["weights", "download"], hub_env(tmp_path, reg, None))
    assert every.returncode == 1
    lines = every.stderr.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines[:3]] == ["derain", "deblur", "denoise"]
    assert lines[-1] == "mprnet: error: 3 of 3 downloads failed (derain, deblur, denoise)"


@pytest.mark.parametrize(
    "variables",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "1"}],
    ids=["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"],
)
def test_offline_variables_are_honoured(
    tmp_path: Path, hub: FakeHub, variables: dict[str, str]
) -> None:
    reg = write_registry(tmp_path)
    env = {**hub_env(tmp_path, reg, hub.url), **variables}
    proc = run_cli(["weights", "download", "derain"], env)
    assert proc.returncode == 1
    assert "cannot be reached" in proc.stderr
    assert hub.downloads() == []


def test_hand_fetched_file_is_imported_and_used_offline(tmp_path: Path) -> None:
    fetched = tmp_path / "model_deraining.pth"
    fetched.write_bytes(checkpoint_bytes())
    reg = write_registry(tmp_path)
    env = hub_env(tmp_path, reg, None)
    proc = run_cli(["weights", "import", "derain", str(fetched)], env)
    assert proc.returncode == 0, proc.stderr
    stored = Path(proc.stderr.strip().split(": ", 1)[1])
    assert stored.is_file() and stored.read_bytes() == fetched.read_bytes()
    assert str(tmp_path / "mprnet-cache") in str(stored)
    fetched.unlink()  # the cache holds its own copy
    resolved = _resolve_in_subprocess(env)
    assert resolved == {"source": "imported", "path": str(stored)}
    rows = [r for r in _json_rows(env) if r["source"] == "imported"]
    assert [(r["task"], r["local"], r["path"]) for r in rows] == [("derain", True, str(stored))]


def test_import_refuses_another_task_or_a_non_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPRNET_REGISTRY", str(write_registry(tmp_path)))
    deblur = tmp_path / "model_deblurring.pth"
    deblur.write_bytes(checkpoint_bytes("deblur"))
    with pytest.raises(
        CheckpointError, match="holds the published deblur network, not the published derain"
    ):
        import_file(Task.DERAIN, deblur)
    notes = tmp_path / "notes.pth"
    notes.write_text("not weights")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        import_file(Task.DERAIN, notes)
    with pytest.raises(WeightsError, match="not found"):
        import_file(Task.DERAIN, tmp_path / "missing.pth")
    with pytest.raises(OfflineError):  # nothing refused was kept
        resolve(Task.DERAIN, model=ModelChoice.PUBLISHED, download=False)


def test_imported_file_altered_later_is_detected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPRNET_REGISTRY", str(write_registry(tmp_path)))
    fetched = tmp_path / "w.pth"
    fetched.write_bytes(checkpoint_bytes())
    stored = import_file(Task.DERAIN, fetched)
    assert resolve(Task.DERAIN, model=ModelChoice.PUBLISHED).path == stored
    with stored.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(IntegrityError, match="corrupt or altered"):
        resolve(Task.DERAIN, model=ModelChoice.PUBLISHED)


def test_auto_falls_back_to_bundled_with_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.save({"state_dict": tiny_model().state_dict()}, tmp_path / "bundled-derain.pth")
    reg = write_registry(tmp_path, bundled="bundled-derain.pth")
    monkeypatch.setenv("MPRNET_REGISTRY", str(reg))
    notes: list[str] = []
    resolved = resolve(Task.DERAIN, notify=notes.append)
    assert resolved.source is Source.BUNDLED
    assert len(notes) == 1
    assert BUNDLED_NOTE in notes[0] and "run `mprnet weights download derain`" in notes[0]
    assert "--model bundled" in notes[0]
    resolve(Task.DERAIN, notify=notes.append)  # the next time, with the same cache: short
    assert len(notes) == 2 and BUNDLED_NOTE not in notes[1]
    assert notes[1].startswith("Using the bundled compact derain weights")
    assert "--model bundled or -q hides this line" in notes[1]
    assert len(notes[1]) < min(130, len(notes[0]))
    with pytest.raises(OfflineError):
        resolve(Task.DERAIN, model=ModelChoice.PUBLISHED)
    assert resolve(Task.DERAIN, model=ModelChoice.BUNDLED).source is Source.BUNDLED


def test_shipped_fallback_notices_say_how_good_the_bundled_weights_are() -> None:
    for task, entry in registry().items():
        assert entry.bundled is not None
        notice = bundled_notice(entry.bundled)
        assert f"`mprnet weights download {task.value}`" in notice
        assert re.search(r"[+-]?\d+(\.\d+)? dB", notice), notice  # a figure from the model card
    assert "barely help" in bundled_notice(registry()[Task.DEBLUR].bundled)  # type: ignore[arg-type]


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


def test_verify_file_remembers_good_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mprnet_cli.weights.cache as weights

    hashed: list[Path] = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda p: hashed.append(p) or real(p))
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    verify_file(f, sha, 3000)
    verify_file(f, sha, 3000)
    assert hashed == [f]  # the second check of an unchanged file reads nothing
    with pytest.raises(IntegrityError, match="3000"):
        verify_file(f, sha, 3001)
    f.write_bytes(b"abd" * 1000)  # same size, new content and mtime
    with pytest.raises(IntegrityError):
        verify_file(f, sha)
    assert hashed == [f, f]


def test_shipped_registry_describes_the_bundled_files_and_tells_networks_apart() -> None:
    """Each bundled file is intact and holds the network the registry declares; the
    published networks differ, so a file of one task under another's name is caught."""
    entries = registry()
    assert set(entries) == set(Task)
    published = [entry.published.config for entry in entries.values()]
    assert len(set(published)) == len(published)
    for task, entry in entries.items():
        assert entry.published.sources
        bundled = resolve(task, model=ModelChoice.BUNDLED)
        assert network_of(bundled.path) == bundled.config


# --------------------------------------------------------------------------- unusable caches


def test_a_cache_that_is_a_file_still_resolves_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit 4.1: MPRNET_CACHE naming a file made every run "unexpected OSError ... bug"
    (removing the note's temp file failed inside the handler of the failed write)."""
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("x")
    monkeypatch.setenv("MPRNET_CACHE", str(blocker))
    torch.save({"state_dict": tiny_model().state_dict()}, tmp_path / "b.pth")
    monkeypatch.setenv("MPRNET_REGISTRY", str(write_registry(tmp_path, bundled="b.pth")))
    for _ in range(2):  # nothing remembered: verified again, still fine
        assert resolve(Task.DERAIN, model=ModelChoice.BUNDLED).source is Source.BUNDLED
    assert blocker.read_text() == "x"


def test_a_read_only_cache_still_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read-only homes and containers (simulated: the tests run as root): every write and
    unlink under the cache is refused with EACCES, as without write or search permission."""
    import mprnet_cli.weights as weights

    cache = tmp_path / "ro-cache"
    monkeypatch.setenv("MPRNET_CACHE", str(cache))
    torch.save({"state_dict": tiny_model().state_dict()}, tmp_path / "b.pth")
    monkeypatch.setenv("MPRNET_REGISTRY", str(write_registry(tmp_path, bundled="b.pth")))

    def refused(self: Path, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(self))

    for name in ("write_text", "unlink", "mkdir", "replace"):
        monkeypatch.setattr(Path, name, refused)
    assert weights.resolve(Task.DERAIN, model=ModelChoice.BUNDLED).source is Source.BUNDLED
    with pytest.raises(WeightsError, match="writable"):
        import_file(Task.DERAIN, tmp_path / "b.pth")


def test_import_into_a_cache_that_is_a_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPRNET_REGISTRY", str(write_registry(tmp_path)))
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("x")
    monkeypatch.setenv("MPRNET_CACHE", str(blocker))
    fetched = tmp_path / "w.pth"
    fetched.write_bytes(checkpoint_bytes())
    with pytest.raises(WeightsError, match=r"cannot copy .* set MPRNET_CACHE to one"):
        import_file(Task.DERAIN, fetched)


def test_import_refuses_nan_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPRNET_REGISTRY", str(write_registry(tmp_path)))
    state = tiny_model().state_dict()
    state["tail.weight"][0, 0, 0, 0] = float("nan")
    bad = tmp_path / "nan.pth"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        import_file(Task.DERAIN, bad)
    with pytest.raises(OfflineError):  # nothing was kept
        resolve(Task.DERAIN, model=ModelChoice.PUBLISHED, download=False)


def test_a_device_as_weights_says_what_it_is(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="/dev/zero is a character device, not a weights file"):
        resolve(None, weights="/dev/zero")
    fifo = tmp_path / "w.fifo"
    os.mkfifo(fifo)
    with pytest.raises(WeightsError, match="is a pipe"):
        resolve(None, weights=fifo)
    with pytest.raises(WeightsError, match="not found"):
        resolve(None, weights=tmp_path / "missing.pth")


@pytest.mark.parametrize("swap", ["in place (cp -p)", "renamed over (rsync -t)"])
def test_a_same_size_swap_with_mtime_restored_is_hashed_again(tmp_path: Path, swap: str) -> None:
    """Audit 4.13: size and mtime alone let `cp -p` / `rsync -t` swap in another network."""
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    verify_file(f, sha, 3000)
    before = f.stat()
    time.sleep(0.05)  # past the kernel's timestamp granularity
    if swap.startswith("in place"):
        f.write_bytes(b"abd" * 1000)
    else:
        other = tmp_path / "other.bin"
        other.write_bytes(b"abd" * 1000)
        other.replace(f)
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(IntegrityError, match="corrupt or altered"):
        verify_file(f, sha, 3000)


def test_a_run_with_the_cache_a_file_restores(tmp_path: Path) -> None:
    """End to end, as the audit ran it: the bundled weights, nothing cached, nothing writable."""
    import numpy as np
    from PIL import Image

    blocker = tmp_path / "cache"
    blocker.write_text("x")
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(tmp_path / "a.png")
    env = {"MPRNET_CACHE": str(blocker), "HF_HUB_OFFLINE": "1"}
    args = ["derain", str(tmp_path / "a.png"), "-o", str(tmp_path / "out.png"), "--threads", "1"]
    proc = run_cli(args, env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.png").is_file() and "bug" not in proc.stderr
