"""Tests for `--engine ray` (mprnet_cli.runners.ray) on one local Ray instance (2 CPUs).

Ray is started once per test session (a few seconds); every test shares it. The network
is the tiny MPRNet of the other end-to-end tests with `--tile 0 --threads 1`, so outputs
are deterministic and the local engine's files are the reference, byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'mprnet-cli[ray]'")

from mprnet_cli.api import Restorer  # noqa: E402
from mprnet_cli.errors import MprnetError, UsageError  # noqa: E402
from mprnet_cli.imageio import OutputFormat, encode_image, read_image, resolve_format  # noqa: E402
from mprnet_cli.jobs import (  # noqa: E402
    Callbacks,
    Job,
    Screened,
    Status,
    expand_inputs,
    plan_outputs,
)
from mprnet_cli.runners import RaySettings  # noqa: E402
from mprnet_cli.runners import ray as ray_runner  # noqa: E402
from mprnet_cli.runners.ray import files  # noqa: E402
from mprnet_cli.settings import RestoreSettings  # noqa: E402
from mprnet_cli.tasks import Task  # noqa: E402
from mprnet_cli.weights import resolve  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.helpers import (  # noqa: E402  # noqa: E402
    AS_FROM_A_TERMINAL,
    FAST,
    REPO_ID,
    Exploit,
    camera_exif,
    checkpoint_bytes,
    env,
    hub_env,
    invoke,
    make_tree,
    rand,
    save_png,
    srgb_icc,
    temps,
    write_registry,
)
from tests.hub_server import FakeHub  # noqa: E402

RAY = ["--engine", "ray"]


@pytest.fixture(scope="session")
def s3_env() -> Iterator[dict[str, str]]:
    """A local S3 stand-in (moto) on 127.0.0.1, and the environment that points pyarrow
    and boto3 at it (AWS_ENDPOINT_URL, dummy credentials): what a user's shell would hold."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        }
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ray_cluster(s3_env: dict[str, str]) -> Iterator[str]:
    """One local Ray for the session; its workers import this checkout (not an installed copy)
    and hold the S3 stand-in's environment, as a cluster's nodes hold their credentials."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO), **s3_env}},
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def make_mixed_tree(root: Path) -> None:
    """The end-to-end tree (13 kinds, a corrupt file, a bomb) plus more: 22 images in all."""
    make_tree(root)
    icc = srgb_icc()
    for orientation in (3, 8):
        Image.fromarray(rand(16, 24, 3)).save(
            root / f"turned{orientation}.jpg",
            quality=90,
            icc_profile=icc,
            exif=camera_exif(orientation),
        )
    Image.fromarray(rand(20, 20, 2)[..., 0]).convert("LA").save(root / "gray_alpha.png")
    cv2.imwrite(str(root / "gray16.tif"), rand(20, 20, 1, np.uint16))
    for i in range(3):
        save_png(root / "more" / f"{i}.png", size=20)


def tree_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def records(stdout: str) -> list[dict[str, Any]]:
    out = [json.loads(line) for line in stdout.splitlines()]
    for r in out:
        r.pop("seconds")
    return sorted(out, key=lambda r: r["input"])


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def mixed_runs(
    tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, ray_cluster: str
) -> tuple[Path, Any, Any]:
    """The same command with each engine, on the same 22-image tree."""
    work = tmp_path_factory.mktemp("mixed")
    make_mixed_tree(work / "tree")
    args = ["derain", "tree", "-r", "--json", "-w", checkpoint, *FAST]
    local = invoke(*args, "-o", "local", cwd=work)
    distributed = invoke(*args, "-o", "ray", *RAY, cwd=work)
    return work, local, distributed


def test_ray_outputs_are_byte_identical_to_local_ones(mixed_runs: tuple[Path, Any, Any]) -> None:
    work, local, distributed = mixed_runs
    assert local.exit_code == 1, local.stderr
    assert distributed.exit_code == 1, distributed.stderr
    expected = tree_files(work / "local")
    assert len(expected) == 20  # 22 images, the corrupt one and the bomb fail
    assert tree_files(work / "ray") == expected
    assert temps(work) == []


def test_ray_records_match_local_ones_and_the_corrupt_file_fails_with_its_reason(
    mixed_runs: tuple[Path, Any, Any],
) -> None:
    _, local, distributed = mixed_runs
    want = records(local.stdout)
    got = records(distributed.stdout)
    for r in want:
        if r["output"]:
            r["output"] = "ray" + r["output"].removeprefix("local")
    assert got == want
    failed = {r["input"]: r["error"] for r in got if r["status"] == "failed"}
    assert set(failed) == {"tree/sub dir/broken.jpg", "tree/sub dir/bomb.png"}
    assert "truncated" in failed["tree/sub dir/broken.jpg"].lower()
    assert "pixels" in failed["tree/sub dir/bomb.png"]
    assert distributed.stderr.strip().splitlines()[-1] == "20 restored, 0 skipped, 2 failed"


def test_rerun_skips_all_without_weights_and_overwrite_rewrites(
    mixed_runs: tuple[Path, Any, Any], checkpoint: Path
) -> None:
    work, _, _ = mixed_runs
    expected = tree_files(work / "ray")
    # Every output of the top folder exists: no weights are needed (this file does not
    # exist) and Ray is not asked for anything.
    again = invoke("derain", "tree", "-o", "ray", "--json", "-w", work / "none.pth", *RAY, cwd=work)
    assert again.exit_code == 0, again.stderr
    assert [r["status"] for r in records(again.stdout)] == ["skipped"] * 16
    # With the broken files (whose outputs do not exist) the weights are resolved on the
    # driver, as the actors need them; every existing output is skipped.
    deep = invoke(
        "derain", "tree", "-r", "-o", "ray", "--json", "-w", checkpoint, *FAST, *RAY, cwd=work
    )
    assert deep.exit_code == 1, deep.stderr
    statuses = [r["status"] for r in records(deep.stdout)]
    assert statuses.count("skipped") == 20 and statuses.count("failed") == 2

    victim = work / "ray" / "gray16_derained.png"
    victim.write_bytes(b"stale")
    redo = invoke(
        "derain", "tree", "-r", "-o", "ray", "--overwrite", "-w", checkpoint, *FAST, *RAY, cwd=work
    )
    assert redo.exit_code == 1, redo.stderr
    assert redo.stderr.strip().splitlines()[-1] == "20 restored, 0 skipped, 2 failed"
    assert tree_files(work / "ray") == expected
    assert temps(work) == []


def test_file_uris_work_like_paths(tmp_path: Path, checkpoint: Path, ray_cluster: str) -> None:
    for i in range(3):
        save_png(tmp_path / "in dir" / f"{i}.png", size=20)
    args = ["denoise", "--json", "-w", checkpoint, *FAST]
    local = invoke(*args, "in dir", "-o", "plain", cwd=tmp_path)
    source = (tmp_path / "in dir").as_uri()
    uri = invoke(*args, source, "-o", (tmp_path / "uri").as_uri(), *RAY, cwd=tmp_path)
    assert local.exit_code == 0 and uri.exit_code == 0, uri.stderr
    assert tree_files(tmp_path / "uri") == tree_files(tmp_path / "plain")
    assert len(tree_files(tmp_path / "uri")) == 3


def test_format_same_is_settled_by_decoding_never_by_reading_on_the_driver(
    tmp_path: Path, checkpoint: Path, ray_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names plan the outputs; a file whose content is not what its extension says (a PNG
    called .jpg, a JPEG called .png) is decoded, screened again under its real output
    name and restored like locally. The driver reads no input's bytes to plan."""
    save_png(tmp_path / "in" / "plain.png", size=20)
    Image.fromarray(rand(20, 20, 3)).save(tmp_path / "in" / "png_inside.jpg", "PNG")
    Image.fromarray(rand(16, 24, 3)).save(tmp_path / "in" / "jpeg_inside.png", "JPEG", quality=90)
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "jpeg_inside_x.jpg").write_bytes(b"exists: skipped, not rewritten")
    args = ["denoise", "in", "--json", "--suffix", "_x", "-w", checkpoint, *FAST]
    local = invoke(*args, "-o", "local", cwd=tmp_path)
    assert local.exit_code == 0, local.stderr
    (tmp_path / "local" / "jpeg_inside_x.jpg").write_bytes(b"exists: skipped, not rewritten")

    def no_reading(*a: Any, **k: Any) -> Any:
        raise AssertionError("the driver read an input to plan its output")

    monkeypatch.setattr("mprnet_cli.jobs.outputs.predict_format", no_reading)
    distributed = invoke(*args, "-o", "ray", *RAY, cwd=tmp_path)
    assert distributed.exit_code == 0, distributed.stderr
    assert tree_files(tmp_path / "ray") == tree_files(tmp_path / "local")
    assert sorted(tree_files(tmp_path / "ray")) == [
        "jpeg_inside_x.jpg",
        "plain_x.png",
        "png_inside_x.png",
    ]
    statuses = {Path(r["input"]).name: r["status"] for r in records(distributed.stdout)}
    assert statuses == {"plain.png": "ok", "png_inside.jpg": "ok", "jpeg_inside.png": "skipped"}


def test_quality_options_reach_the_actors(
    tmp_path: Path, checkpoint: Path, ray_cluster: str
) -> None:
    """--strength and --ensemble change the output, and the Ray engine applies them too."""
    for i in range(2):
        save_png(tmp_path / "in" / f"{i}.png", size=24)
    args = ["denoise", "in", "-w", checkpoint, *FAST, "--strength", "0.5", "--ensemble", "2"]
    plain = invoke("denoise", "in", "-w", checkpoint, *FAST, "-o", "plain", cwd=tmp_path)
    local = invoke(*args, "-o", "local", cwd=tmp_path)
    distributed = invoke(*args, "-o", "ray", *RAY, cwd=tmp_path)
    assert plain.exit_code == local.exit_code == distributed.exit_code == 0, distributed.stderr
    assert tree_files(tmp_path / "ray") == tree_files(tmp_path / "local")
    assert tree_files(tmp_path / "local") != tree_files(tmp_path / "plain")


def test_object_store_uris_with_the_local_engine_are_a_clear_usage_error(tmp_path: Path) -> None:
    for args in (["s3://bucket/photos"], ["in.png", "-o", "gs://bucket/out/"]):
        result = invoke("derain", *args, cwd=tmp_path)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "--engine ray" in result.stderr


# --------------------------------------------------------------------------- object stores


def bucket_files(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {
        o["Key"].removeprefix(prefix): s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in listed
    }


@pytest.fixture
def s3(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client of the stand-in; the test's own environment (the driver's) points at it."""
    import boto3

    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    return boto3.client("s3")


def test_object_store_uris_restore_like_local_files_skip_and_overwrite(
    mixed_runs: tuple[Path, Any, Any], checkpoint: Path, s3: Any
) -> None:
    """A bucket holding the 22-image tree: `s3://` in and out gives the local engine's files
    byte for byte, the corrupt objects fail alone (exit 1), a rerun skips everything
    without weights, and --overwrite rewrites; no temporary object is ever left."""
    work, _, distributed = mixed_runs
    s3.create_bucket(Bucket="photos")
    tree = work / "tree"
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        s3.put_object(
            Bucket="photos", Key=f"tree/{path.relative_to(tree).as_posix()}", Body=path.read_bytes()
        )
    args = ["derain", "--json", "-w", checkpoint, *FAST, *RAY]
    run = invoke(*args, "s3://photos/tree", "-r", "-o", "s3://photos/out", cwd=work)
    assert run.exit_code == 1, run.stderr
    expected = tree_files(work / "local")
    assert bucket_files(s3, "photos", "out/") == expected
    want = records(distributed.stdout)  # the same run on local files
    for r in want:
        r["input"] = "s3://photos/" + r["input"]
        r["warnings"] = ["s3://photos/" + w for w in r["warnings"]]  # each names its input
        if r["output"]:
            r["output"] = "s3://photos/out" + r["output"].removeprefix("ray")
    assert records(run.stdout) == want
    assert run.stderr.strip().splitlines()[-1] == "20 restored, 0 skipped, 2 failed"
    inputs = {f"tree/{k}" for k in tree_files(tree)}
    assert set(bucket_files(s3, "photos", "")) == inputs | {f"out/{k}" for k in expected}

    # Every output of the top folder exists: skipped without weights (none.pth is absent).
    again = invoke(
        "derain",
        "s3://photos/tree",
        "-o",
        "s3://photos/out",
        "--json",
        "-w",
        work / "none.pth",
        *RAY,
        cwd=work,
    )
    assert again.exit_code == 0, again.stderr
    assert [r["status"] for r in records(again.stdout)] == ["skipped"] * 16

    # A glob; one output spoiled: skipped without --overwrite, rewritten with it.
    s3.put_object(Bucket="photos", Key="out/gray16_derained.png", Body=b"stale")
    glob = ["s3://photos/tree/gray*", "-o", "s3://photos/out"]
    kept = invoke(*args, *glob, cwd=work)
    assert kept.exit_code == 0, kept.stderr
    assert [r["status"] for r in records(kept.stdout)] == ["skipped"] * 4
    redo = invoke(*args, *glob, "--overwrite", cwd=work)
    assert redo.exit_code == 0, redo.stderr
    assert [r["status"] for r in records(redo.stdout)] == ["ok"] * 4
    assert bucket_files(s3, "photos", "out/") == expected


def test_stdin_and_stdout_need_the_local_engine(tmp_path: Path, ray_cluster: str) -> None:
    save_png(tmp_path / "a.png")
    result = invoke("derain", "a.png", "-o", "-", *RAY, cwd=tmp_path)
    assert result.exit_code == 2 and "--engine local" in result.stderr


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_stops_the_job_reports_every_output_and_leaves_no_temp_files(
    tmp_path: Path, checkpoint: Path, ray_cluster: str, sig: int, code: int
) -> None:
    # ~0.1 s per image in the actor: the job runs for seconds after its first output, so
    # the signal always lands mid-job, even on a faster machine.
    for i in range(40):
        save_png(tmp_path / "in" / f"{i:02}.png", size=160)
    args = [
        "derain",
        "in",
        "-o",
        "out",
        "--json",
        "-w",
        str(checkpoint),
        *FAST,
        *RAY,
        "--ray-address",
        ray_cluster,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", AS_FROM_A_TERMINAL, *args],
        cwd=tmp_path,
        env={**env(), "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out = tmp_path / "out"
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.glob("*_derained.png"))):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=90)
    done = sorted(out.glob("*_derained.png"))
    assert proc.returncode == code, stderr.decode()
    assert "interrupted" in stderr.decode() and "Traceback" not in stderr.decode()
    assert "SIGTERM received" not in stderr.decode()  # Ray's own handler stayed out of it
    assert "logging.cc" not in stderr.decode()  # no note from Ray's core (issue 23, 3.4)
    assert " on None" not in stderr.decode()  # outputs found at the stop: no made-up timings
    assert 1 <= len(done) < 40, "the job finished before the signal; make it longer"
    for path in done:
        with Image.open(path) as im:
            im.load()
    assert temps(tmp_path) == []
    # Every output on disk was reported, once.
    reported = [json.loads(line) for line in stdout.decode().splitlines()]
    assert sorted(r["output"] for r in reported if r["status"] == "ok") == [
        f"out/{p.name}" for p in done
    ]


def test_the_driver_downloads_the_weights_once_and_workers_never_do(
    tmp_path: Path, ray_cluster: str
) -> None:
    """Published weights from a stand-in Hub: the driver fetches them; the actors (whose
    environment is offline and knows no such registry) restore with what it shipped."""
    hub = FakeHub(REPO_ID, {"model_deraining.pth": checkpoint_bytes(), "LICENSE.md": b"x"})
    hub.start()
    try:
        for i in range(3):
            save_png(tmp_path / "in" / f"{i}.png", size=20)
        registry = write_registry(tmp_path)
        cmd = [sys.executable, "-m", "mprnet_cli", "derain", "in", "--json"]
        cmd += ["--model", "published", *FAST]
        run_env = {**env(), **hub_env(tmp_path, registry, hub.url), "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [*cmd, "-o", "out", *RAY, "--ray-address", ray_cluster],
            cwd=tmp_path,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert [json.loads(x)["status"] for x in proc.stdout.splitlines()] == ["ok"] * 3
        assert hub.requests == [  # the driver's one download, nothing from the workers
            "HEAD /deepinv/MPRNet/resolve/main/model_deraining.pth",
            "GET /deepinv/MPRNet/resolve/main/model_deraining.pth",
        ]
        # The network the actors ran is the downloaded one (the local engine, from cache).
        local = subprocess.run(
            [*cmd, "-o", "local"], cwd=tmp_path, env=run_env, capture_output=True, check=False
        )
        assert local.returncode == 0, local.stderr
        assert tree_files(tmp_path / "out") == tree_files(tmp_path / "local")
    finally:
        hub.stop()


# --------------------------------------------------------------------------- faults


class AtCall:
    """A restorer factory whose network runs `hook` before its `at`-th image (a fault or a
    wait injected inside an actor; the factory travels to the actors, so it pickles)."""

    at = 0

    def hook(self) -> None:
        raise NotImplementedError

    def __call__(self, task: Task | None, settings: RestoreSettings, weights: Path) -> Any:
        real = ray_runner.default_restorer(task, settings, weights)
        hook, at = self.hook, self.at

        class Hooked:
            calls = 0

            def restore_rgb(self, rgb: Any, **kw: Any) -> Any:
                Hooked.calls += 1
                if Hooked.calls == at:
                    hook()
                return real.restore_rgb(rgb, **kw)

        return Hooked()


class CrashOnce(AtCall):
    """Kills its actor's process at the 3rd image, once."""

    at = 3

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def hook(self) -> None:
        if not self.marker.exists():
            self.marker.write_text("crashed")
            os._exit(1)  # the actor's process dies mid-job


def restore_in_to_out(
    tmp_path: Path,
    checkpoint: Path,
    factory: AtCall | None = None,
    inputs: list[str] | None = None,
    **kw: Any,
) -> tuple[Any, list[Any]]:
    """`restore_files` of tmp_path/in (or `inputs`) to tmp_path/out (suffix _x) with one
    actor."""
    exp = expand_inputs(inputs or [str(tmp_path / "in")], suffix="_x", exclude=tmp_path / "out")
    plan = plan_outputs(exp, str(tmp_path / "out"), suffix="_x")
    results = ray_runner.restore_files(
        exp.jobs,
        plan,
        weights=lambda: resolve(Task.DERAIN, weights=checkpoint),
        task=Task.DERAIN,
        settings=RestoreSettings(device="cpu", tile=0, threads=1),
        cluster=RaySettings(workers=1),
        factory=factory or ray_runner.default_restorer,
        **kw,
    )
    return exp, list(results)


def test_a_killed_actor_is_replaced_and_no_output_is_lost_or_duplicated(
    tmp_path: Path, checkpoint: Path, ray_cluster: str
) -> None:
    for i in range(8):
        save_png(tmp_path / "in" / f"{i}.png", size=24)
    marker = tmp_path / "crashed"
    exp, results = restore_in_to_out(tmp_path, checkpoint, CrashOnce(marker))
    assert marker.exists(), "the fault was not injected"
    assert sorted(r.input for r in results) == sorted(j.label for j in exp.jobs)
    assert {r.status for r in results} == {Status.OK}
    outputs = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in outputs] == [f"{i}_x.png" for i in range(8)]
    for path in outputs:
        with Image.open(path) as im:
            im.load()
    assert temps(tmp_path) == []


# --------------------------------------------------------------------------- datasets


def test_dataset_entry_point_restores_bytes_and_fails_rows_alone(
    tmp_path: Path, checkpoint: Path, ray_cluster: str
) -> None:
    save_png(tmp_path / "a.png", size=20)
    Image.fromarray(rand(12, 16, 4)).save(tmp_path / "b.png")
    good = [(tmp_path / n).read_bytes() for n in ("a.png", "b.png")]
    ds = ray.data.from_items(
        [
            {"name": "a", "bytes": good[0]},
            {"name": "junk", "bytes": b"not an image"},
            {"name": "b", "bytes": good[1]},
        ]
    )
    # Explicit engine and precision: `auto` is resolved by each actor on its own CPU (the
    # test process's feature mocks do not reach Ray workers).
    out = ray_runner.restore_dataset(
        ds,
        "derain",
        weights=checkpoint,
        device="cpu",
        backend="torch",
        precision="fp32",
        tile=0,
        threads=1,
        label_column="name",
    )
    rows = {r["name"]: r for r in out.take_all()}
    assert set(rows) == {"a", "junk", "b"}
    assert rows["junk"]["status"] == "failed" and rows["junk"]["restored"] is None
    assert "not an image" in rows["junk"]["error"]

    torch.set_num_threads(1)
    restorer = Restorer("derain", weights=checkpoint, device="cpu", tile=0)
    for name, data in zip(("a", "b"), good, strict=True):
        decoded = read_image(data)
        rgb, _ = restorer.restore_rgb(decoded.rgb)
        want = encode_image(
            rgb, decoded.info, resolve_format(OutputFormat.SAME, decoded.info), alpha=decoded.alpha
        )
        assert rows[name]["status"] == "ok" and rows[name]["error"] is None
        assert rows[name]["format"] == "png"
        assert rows[name]["restored"] == want
        assert rows[name]["bytes"] == data  # the input column passes through


# --------------------------------------------------------------------------- planning


@pytest.mark.parametrize(
    ("resources", "settings", "device", "want"),
    [
        ({"CPU": 2}, RaySettings(), "auto", (1, 1.0, 0.0)),
        ({"CPU": 16}, RaySettings(), "auto", (4, 3.0, 0.0)),
        ({"CPU": 16}, RaySettings(workers=2), "auto", (2, 7.0, 0.0)),
        ({"CPU": 64, "GPU": 8}, RaySettings(), "auto", (8, 1.0, 1.0)),
        ({"CPU": 64, "GPU": 8}, RaySettings(gpus_per_worker=0.5), "auto", (16, 1.0, 0.5)),
        ({"CPU": 64, "GPU": 8}, RaySettings(), "cpu", (16, 3.0, 0.0)),
    ],
)
def test_cluster_plan_sizes_the_actor_pool(
    resources: dict[str, float], settings: RaySettings, device: str, want: tuple[Any, ...]
) -> None:
    plan = ray_runner.cluster_plan(resources, settings, device)
    assert (plan.workers, plan.cpus_per_worker, plan.gpus_per_worker) == want
    # the pool grows from one actor to `workers`; --workers fixes its size
    assert plan.min_workers == (want[0] if settings.workers else 1)


@pytest.mark.parametrize(
    ("resources", "settings", "device", "message"),
    [
        ({"CPU": 8}, RaySettings(), "cuda", "--gpus-per-worker"),
        ({"CPU": 8, "GPU": 1}, RaySettings(gpus_per_worker=1), "cpu", "contradict"),
        ({"CPU": 8, "GPU": 1}, RaySettings(workers=2), "auto", "need 2 GPUs; .* has 1"),
        ({"CPU": 2}, RaySettings(workers=2), "auto", "need 3 CPUs .* has 2"),
        ({"CPU": 4, "GPU": 4}, RaySettings(), "auto", "need 5 CPUs"),
    ],
)
def test_cluster_plan_refuses_contradictions_and_pools_that_cannot_start(
    resources: dict[str, float], settings: RaySettings, device: str, message: str
) -> None:
    with pytest.raises(MprnetError, match=message):
        ray_runner.cluster_plan(resources, settings, device)


def test_jobs_are_files_only() -> None:
    plan = plan_outputs(expand_inputs(["-"]), "out.png", suffix="_x")
    with pytest.raises(UsageError, match="stdin"):
        ray_runner.restore_files(
            [Job(None)],
            plan,
            weights=lambda: None,  # type: ignore[arg-type, return-value]
        )


def unfinished_run(tmp_path: Path, out: Path, **kw: Any) -> Any:
    """A file run as it is when stopped: a, b, c planned (a and b never reported back)."""
    jobs = [Job(tmp_path / f"{n}.png") for n in "abc"]
    run = files._FileRun(
        jobs,
        plan_outputs(expand_inputs(["x.png"]), str(out), suffix="_x"),
        weights=lambda: None,  # type: ignore[arg-type, return-value]
        task=None,
        settings=RestoreSettings(),
        cluster=RaySettings(),
        overwrite=False,
        callbacks=Callbacks(**kw),
        factory=ray_runner.default_restorer,
    )
    run._pending = {0: Screened(jobs[0], out / "a_x.png"), 1: Screened(jobs[1], out / "b_x.png")}
    return run


def test_an_interrupted_run_reports_the_outputs_its_workers_finished(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_x.png").write_bytes(b"written by a worker before the stop")
    seen: list[Any] = []
    run = unfinished_run(tmp_path, out, finished=seen.append)
    run._report_settled(since=time.time())
    assert [(r.input, r.output, r.status) for r in seen] == [
        (str(tmp_path / "a.png"), str(out / "a_x.png"), Status.OK)
    ]
    assert list(run._pending) == [1]  # b is still unaccounted for: its temp files will go


def test_an_interrupted_run_removes_only_the_temp_files_of_its_unfinished_writes(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    names = [".a_x.png.0123abcd.tmp", ".b_x.png.89abcdef.tmp", ".c_x.png.00000000.tmp", "a_x.png"]
    for name in names:
        (out / name).write_bytes(b"partial")
    # a and b were sent out and never reported; c finished (its temp file is not ours).
    run = unfinished_run(tmp_path, out)
    run._sweep_unfinished()
    assert sorted(p.name for p in out.iterdir()) == [".c_x.png.00000000.tmp", "a_x.png"]


def test_jobs_travel_in_chunks_that_grow_to_the_byte_and_count_limits() -> None:
    """Many small images share a task (after a first chunk of one, for an early first
    record); a large one travels alone; each chunk is packed with its verdicts."""
    from mprnet_cli.runners.ray import files, plan, stages

    def screened(name: str, target: str = "") -> Screened:
        return Screened(Job(Path(name)), Path(target) if target else None)

    chunker = files._Chunker()
    packed = [chunker.add(i, screened(f"{i}.png", f"{i}_x.png"), 800) for i in range(600)]
    packed.append(chunker.take())
    chunks = [c for c in packed if c is not None]
    sizes = [len(stages._unpack(c[0])) for c in chunks]
    assert sizes == [1, 2, 4, 8, 16, 32, 64, 128, 256, 89]
    assert [p.index for c in chunks for p in stages._unpack(c[0])] == list(range(600))
    assert [i for c in chunks for i, _ in c[1]] == list(range(600))
    big = plan._CHUNK_BYTES
    alone = [chunker.add(i, screened(f"{i}.tif"), big) for i in range(3)]
    assert all(c is not None and len(stages._unpack(c[0])) == 1 for c in alone)


def test_the_driver_plans_on_a_thread_and_sends_what_is_planned_in_windows() -> None:
    """Verdicts pass at once; chunks gather into a window until the listing pauses
    (`_GATHER_S`) or ends; an error of the planning thread is raised on the driver."""
    import threading

    from mprnet_cli.jobs import Result
    from mprnet_cli.runners.ray import files

    resume = threading.Event()

    def planned() -> Iterator[Any]:
        yield Result("a.png", "a_x.png", Status.SKIPPED)
        yield b"1", []
        yield b"2", []
        assert resume.wait(30)  # the listing pauses (a slow folder)
        yield b"3", []
        yield b"4", []

    feed = files._Feed(planned())
    windows = feed.windows()
    assert isinstance(next(windows), Result)
    assert [c[0] for c in next(windows)] == [b"1", b"2"]  # sent while the listing waits
    resume.set()
    assert [c[0] for c in next(windows)] == [b"3", b"4"]
    assert next(windows, None) is None
    feed.close()

    def failing() -> Iterator[Any]:
        yield b"1", []
        raise UsageError("an input folder cannot be read")

    feed = files._Feed(failing())
    with pytest.raises(UsageError, match="cannot be read"):
        list(feed.windows())
    feed.close()


def test_a_stopped_run_stops_its_planning_thread() -> None:
    """The queue is bounded (`_QUEUED` items): a planner ahead of the cluster waits, and
    closing the feed (Ctrl-C, an error) ends it."""
    import itertools

    from mprnet_cli.runners.ray import files

    made = itertools.count()
    feed = files._Feed((b"%d" % next(made), []) for _ in itertools.count())
    deadline = time.monotonic() + 30
    while feed._queue.qsize() < files._QUEUED and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert feed._queue.qsize() == files._QUEUED and next(made) <= files._QUEUED + 2
    feed.close()
    assert not feed._thread.is_alive()


class WaitForFirstRecord(AtCall):
    """At its 2nd image, waits (up to 60 s) until the driver has received the 1st image's
    record: the driver writes to a FIFO then."""

    at = 2

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo

    def hook(self) -> None:
        import select

        fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            ready, _, _ = select.select([fd], [], [], 60)
        finally:
            os.close(fd)
        if not ready:
            raise RuntimeError("the first record never reached the driver")


def test_each_record_reaches_the_driver_when_its_chunk_is_written(
    tmp_path: Path, checkpoint: Path, ray_cluster: str
) -> None:
    """Two images, two chunks of one (the first chunk holds one image, the second what is
    left). The actor's 2nd image waits for the 1st image's record on the driver, which came
    only after the next block was ready before (iter_rows). Either chunk may reach the actor
    first: with three images the 2-image chunk could come first and wait on itself."""
    for i in range(2):
        save_png(tmp_path / "in" / f"{i}.png", size=16)
    fifo = tmp_path / "first-record"
    os.mkfifo(fifo)
    # Held open for the whole run, so the actor's reader waits for data, never for a writer.
    signal_fd = os.open(fifo, os.O_RDWR)
    seen: list[Any] = []

    def finished(result: Any) -> None:
        seen.append(result)
        if len(seen) == 1:
            os.write(signal_fd, b"1")

    try:
        callbacks = Callbacks(finished=finished)
        _, results = restore_in_to_out(
            tmp_path, checkpoint, WaitForFirstRecord(fifo), callbacks=callbacks
        )
    finally:
        os.close(signal_fd)
    assert [r.status for r in results] == [Status.OK] * 2, [r.error for r in results]
    assert seen == results


def test_outputs_are_written_and_reported_while_later_chunks_still_decode(
    tmp_path: Path, checkpoint: Path, ray_cluster: str
) -> None:
    """On 2 CPUs (one actor, one CPU for I/O) the write stage must run beside decoding: at a
    whole CPU per decode task, Ray Data gave decoding every free CPU until the last chunk
    was decoded, and 20,000 small files reported nothing for 30 s. Here the last input is a
    FIFO whose decoding blocks until the driver has the first record; a timer feeds it
    after 60 s so that a regression fails instead of hanging."""
    import threading

    pngs = [tmp_path / "in" / f"{i:02}.png" for i in range(12)]
    for png in pngs:
        save_png(png)
    fifo = tmp_path / "in" / "zz.png"
    os.mkfifo(fifo)
    first_record = threading.Event()
    fed_after_record: list[bool] = []

    def feed() -> None:  # the FIFO's bytes: a PNG, once its reader (the decode task) opens
        fed_after_record.append(first_record.wait(60))
        deadline = time.monotonic() + 60
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:  # ENXIO: no reader yet
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
        os.set_blocking(fd, True)
        os.write(fd, pngs[0].read_bytes())
        os.close(fd)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    exp, results = restore_in_to_out(
        tmp_path,
        checkpoint,
        inputs=[*(str(p) for p in pngs), str(fifo)],
        callbacks=Callbacks(finished=lambda _: first_record.set()),
    )
    feeder.join(70)
    assert len(exp.jobs) == 13 and exp.jobs[-1].source == fifo
    assert fed_after_record == [True], "no output was reported before the last chunk decoded"
    assert [r.status for r in results] == [Status.OK] * 13, [r.error for r in results]
    assert (tmp_path / "out" / "zz_x.png").is_file()


# --------------------------------------------------------------------------- joining, weights


@pytest.mark.parametrize(
    ("address", "env_address", "expected"),
    [
        (None, None, "local"),  # private: never a Ray found on the machine (audit 4.5)
        ("10.0.0.1:6379", None, "10.0.0.1:6379"),
        (None, "10.0.0.2:6379", None),  # ray.init reads RAY_ADDRESS itself
    ],
)
def test_a_cluster_is_joined_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, address: str | None, env_address: str | None, expected: Any
) -> None:
    from mprnet_cli.runners.ray import cluster

    if env_address is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env_address)
    monkeypatch.delenv("RAY_BACKEND_LOG_LEVEL", raising=False)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster.ray, "init", lambda **kw: calls.append(kw))
    assert cluster._connect(address) is True
    assert len(calls) == 1 and calls[0].get("address") == expected
    # Setting it made Ray's core print "logging.cc: Set ray log level ..." on every run.
    assert "RAY_BACKEND_LOG_LEVEL" not in os.environ


@pytest.mark.parametrize("damage", ["nan", "missing"])
def test_bad_weights_fail_on_the_driver_before_any_job_starts(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """Audit 4.6: the actors failed instead, with ~200 lines of traceback (half on stdout,
    breaking --json) naming their temporary copy of the file. (The check runs in a child
    process while Ray starts: `_connect` is called, no job is.)"""
    from mprnet_cli.runners.ray import files

    connected: list[str | None] = []

    def no_job(chunks: Any) -> Any:
        raise AssertionError("a Ray job was started for weights that cannot work")

    monkeypatch.setattr(files, "_connect", lambda address: connected.append(address) or False)
    monkeypatch.setattr(files, "_dataset_of", no_job)
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    if damage == "nan":
        state["module.tail.weight"][0, 0, 0, 0] = float("nan")
    else:
        del state["module.sam12.conv1.weight"]
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, bad)
    save_png(tmp_path / "a.png")
    result = invoke("derain", "a.png", "--json", "-w", bad, *FAST, *RAY, cwd=tmp_path)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0], result.stderr
    assert ("NaN" if damage == "nan" else "missing 1 tensors") in lines[0]
    assert connected == [None]


def test_the_driver_never_loads_torch(tmp_path: Path, checkpoint: Path, ray_cluster: str) -> None:
    """The driver plans, ships and reports; torch (about 150 MB) is the actors' alone."""
    for i in range(3):
        save_png(tmp_path / "in" / f"{i}.png")
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write(f'TORCH {\"torch\" in sys.modules}\\n'))\n"
        "sys.argv[0] = 'mprnet'\n"
        "from mprnet_cli.cli import main\n"
        "main()\n"
    )
    args = ["derain", "in", "-o", "out", "-w", str(checkpoint), *FAST, *RAY]
    run = subprocess.run(
        [sys.executable, "-c", code, *args, "--ray-address", ray_cluster],
        cwd=tmp_path,
        env={**env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert len(list((tmp_path / "out").glob("*_derained.png"))) == 3
    assert "TORCH False" in run.stderr, run.stderr


def test_the_weights_check_runs_in_a_child_so_the_driver_never_holds_torch(
    tmp_path: Path, checkpoint: Path
) -> None:
    """torch held about 150 MB of the Ray driver's memory for a whole run, only to check
    the weights file once. The verdicts stay the same: the error's kind and its line."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from mprnet_cli.runners.ray.plan import _WeightsCheck\n"
        "with _WeightsCheck(Path(sys.argv[1])) as check:\n"
        "    check.wait()\n"
        "print('torch' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(checkpoint)],
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"

    from mprnet_cli.errors import CheckpointError, UnsafeCheckpointError
    from mprnet_cli.runners.ray.plan import _WeightsCheck

    resnet = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, resnet)
    with (
        pytest.raises(CheckpointError, match="not an MPRNet checkpoint") as info,
        _WeightsCheck(resnet) as check,
    ):
        check.wait()
    assert type(info.value) is CheckpointError and str(resnet) in str(info.value)
    evil = tmp_path / "evil.pth"
    torch.save(
        {
            "state_dict": torch.load(checkpoint, weights_only=True)["state_dict"],
            "payload": Exploit(),
        },
        evil,
    )
    with pytest.raises(UnsafeCheckpointError, match="system"), _WeightsCheck(evil) as check:
        check.wait()
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


def test_the_driver_checks_the_weights_itself_when_the_child_cannot_run(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mprnet_cli.errors import CheckpointError
    from mprnet_cli.runners.ray import plan

    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(plan.sys, "executable", str(broken))
    with plan._WeightsCheck(checkpoint) as check:
        check.wait()  # the file is good: the in-process check passes
    missing = tmp_path / "missing.pth"
    with pytest.raises(CheckpointError, match="not found"), plan._WeightsCheck(missing) as check:
        check.wait()


def test_a_stopped_run_stops_its_weights_check(checkpoint: Path) -> None:
    from mprnet_cli.runners.ray.plan import _WeightsCheck

    with _WeightsCheck(checkpoint) as check:
        child = check._child
    assert child.returncode is not None  # killed (or done), and reaped: no zombie
