"""The tool commands: train, eval, bench and weights (in-process, tiny settings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mprnet_cli.cli import app
from mprnet_cli.model.checkpoint import read_checkpoint
from mprnet_cli.model.config import MPRNetConfig

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64] / 16.0
    for i in range(3):
        base = (
            np.stack([np.sin(xx + i + c) * np.cos(yy - c) for c in range(3)], axis=-1) * 0.3 + 0.5
        )
        noise = rng.normal(0, 0.02, base.shape)
        Image.fromarray(np.uint8(np.clip(base + noise, 0, 1) * 255)).save(folder / f"{i}.png")
    return folder


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


TRAIN = (
    "--width",
    "8,4,4",
    "--num-cab",
    "1",
    "--batch",
    "1",
    "--crop",
    "32",
    "--device",
    "cpu",
    "--save-every",
    "1",
    "--threads",
    "1",
    "--quiet",
)


def test_train_writes_safetensors_with_its_recipe_and_resumes(tmp_path: Path, photos: Path) -> None:
    run = tmp_path / "run"
    code, _, err = invoke(
        "train", "denoise", str(photos), "--out", str(run), "--steps", "2", *TRAIN
    )
    assert code == 0, err
    ckpt = read_checkpoint(run / "denoise.safetensors")
    assert ckpt.config == MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
    assert ckpt.metadata["task"] == "denoise" and ckpt.metadata["steps"] == "2"
    recipe = json.loads(ckpt.metadata["recipe"])
    assert recipe["crop"] == 32 and recipe["seed"] == 0
    assert len(json.loads(ckpt.metadata["history"])) == 2  # validated at every save
    # Same command with more steps continues from last.pt.
    code, _, err = invoke(
        "train", "denoise", str(photos), "--out", str(run), "--steps", "3", *TRAIN
    )
    assert code == 0, err
    assert read_checkpoint(run / "denoise.safetensors").metadata["steps"] == "3"


def test_train_refuses_to_replace_an_export_and_bad_data(tmp_path: Path, photos: Path) -> None:
    existing = tmp_path / "w.safetensors"
    existing.write_bytes(b"keep me")
    code, _, err = invoke(
        "train",
        "denoise",
        str(photos),
        "--out",
        str(tmp_path / "r"),
        "--steps",
        "1",
        "--export",
        str(existing),
        *TRAIN,
    )
    assert code == 1 and "--overwrite" in err and existing.read_bytes() == b"keep me"
    code, _, err = invoke(
        "train", "denoise", str(tmp_path / "missing"), "--out", str(tmp_path / "r"), *TRAIN
    )
    assert code == 1 and "not a folder" in err
    code, _, err = invoke(
        "train", "denoise", str(photos), "--crop", "12", "--out", str(tmp_path / "r")
    )
    assert code == 2
    code, _, err = invoke("train", "dewarp", str(photos))
    assert code == 2


def test_train_init_must_match_the_network(
    tmp_path: Path, photos: Path, tiny_checkpoint: Path
) -> None:
    code, _, err = invoke(
        "train",
        "denoise",
        str(photos),
        "--out",
        str(tmp_path / "r"),
        "--steps",
        "1",
        "--init",
        str(tiny_checkpoint),
        *TRAIN,
        "--num-cab",
        "2",  # the tiny checkpoint has one CAB per block: a different network
    )
    assert code == 2 and "--width" in err


def evaluate(task: str, photos: Path, weights: Path, *args: str) -> tuple[int, str, str]:
    """`mprnet eval TASK --input PHOTOS --weights W ... --device cpu`."""
    return invoke(
        "eval", task, "--input", str(photos), "--weights", str(weights), *args, "--device", "cpu"
    )


FAST_JSON = ("--tile", "0", "--json", "--quiet")


def test_eval_reports_restored_and_input_scores(photos: Path, tiny_checkpoint: Path) -> None:
    code, out, err = evaluate(
        "denoise", photos, tiny_checkpoint, "--degrade", "noise:25", *FAST_JSON
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["name"] for line in lines[:-1]] == ["0.png", "1.png", "2.png"]
    summary = lines[-1]
    assert summary["images"] == 3 and summary["protocol"] == "RGB"
    assert 18 < summary["input_psnr"] < 23  # sigma 25 on 8-bit images
    assert summary["psnr"] == pytest.approx(np.mean([line["psnr"] for line in lines[:-1]]))


def test_eval_tiles_only_for_memory(
    photos: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paper's protocol restores whole images: no speed-minded CPU tiles in eval."""
    import mprnet_cli.inference.pipeline as pipeline
    from mprnet_cli.backends import Backend

    seen: list[tuple[int | None, int | None]] = []
    auto_tile = pipeline.auto_tile

    def spy(backend: Backend, height: int, width: int) -> int:
        seen.append((backend.capabilities.max_tile, backend.capabilities.one_pass_side))
        return auto_tile(backend, height, width)

    monkeypatch.setattr(pipeline, "auto_tile", spy)
    code, _, err = evaluate(
        "denoise", photos, tiny_checkpoint, "--target", str(photos), "--quiet", "--limit", "1"
    )
    assert code == 0, err
    assert seen == [(None, None)]


def test_eval_pairs_use_the_y_channel_for_derain(photos: Path, tiny_checkpoint: Path) -> None:
    code, out, err = evaluate(
        "derain", photos, tiny_checkpoint, "--target", str(photos), *FAST_JSON, "--limit", "2"
    )
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["images"] == 2 and summary["protocol"].startswith("Y")
    assert summary["input_psnr"] == float("inf")  # input == target


def test_eval_checks_its_arguments_before_loading_weights(photos: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-weights.pth")
    code, _, err = invoke(
        "eval",
        "denoise",
        "--input",
        str(photos),
        "--target",
        str(photos),
        "--degrade",
        "noise:25",
        "--weights",
        missing,
    )
    assert code == 2 and "drop --target" in err
    code, _, err = invoke("eval", "denoise", "--input", str(photos), "--weights", missing)
    assert code == 2 and "--degrade" in err
    code, _, err = invoke(
        "eval", "denoise", "--input", str(photos), "--degrade", "snow:3", "--weights", missing
    )
    assert code == 2


def test_bench_compares_with_the_reference_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripted timings (reference 2 s with an outlier, fp32 0.5 s per call): the report
    takes medians and gives each mode's speed against the reference row's."""
    import itertools

    import mprnet_cli.backends.bench as bench

    script = {"reference": itertools.cycle([2.0, 2.0, 30.0]), "fp32": itertools.cycle([0.5])}
    monkeypatch.setattr(
        bench,
        "_time_once",
        lambda runner, device: runner.times.append(next(script[runner.mode.name])),
    )
    code, out, err = invoke(
        "bench",
        "derain",
        "--size",
        "16x16",
        "--modes",
        "reference,fp32",
        "--repeat",
        "3",
        "--device",
        "cpu",
        "--json",
    )
    assert code == 0, err
    rows = {r["mode"]: r for r in map(json.loads, out.splitlines())}
    assert list(rows) == ["reference", "fp32"]
    ref, fp32 = rows["reference"], rows["fp32"]
    assert ref["seconds_per_image"] == 2.0 and fp32["seconds_per_image"] == 0.5
    assert fp32["speedup_vs_reference"] == pytest.approx(4.0)
    # 256 pixels in 0.5 s: 12 megapixels take 12e6 / 256 * 0.5 s.
    assert fp32["seconds_per_12mp"] == pytest.approx(23437.5)
    assert ref["megapixels_per_second"] == pytest.approx(256 / 2.0 / 1e6)
    assert fp32["gmac_per_image"] == ref["gmac_per_image"]
    assert fp32["gflops"] == pytest.approx(4 * ref["gflops"])


def test_bench_usage_errors() -> None:
    assert invoke("bench", "--size", "20x20")[0] == 2
    assert invoke("bench", "--modes", "turbo", "--size", "16x16", "--device", "cpu")[0] == 2
    assert invoke("bench", "--precision", "fp64")[0] == 2
    assert invoke("bench", "--batch", "0")[0] == 2


def test_weights_path_and_list_without_network() -> None:
    code, out, err = invoke("weights", "path", "derain", "--model", "bundled")
    assert code == 0, err
    assert (
        Path(out.strip()).name == "mprnet-derain-compact.safetensors"
        and Path(out.strip()).is_file()
    )
    code, out, err = invoke("weights", "path", "derain", "--model", "published")
    assert code == 1 and "mprnet weights download derain" in err
    code, out, _ = invoke("weights", "list")
    assert code == 0 and "bundled" in out and "published" in out
    code, out, _ = invoke("weights", "list", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    derain = [r for r in rows if r["task"] == "derain"]
    # The published sources in the order they are tried, then the bundled file.
    assert code == 0 and [(r["source"], r["n"]) for r in derain] == [
        *(("published", n) for n in range(1, len(derain))),
        ("bundled", None),
    ]
    bundled = derain[-1]
    assert bundled["local"] is True and Path(bundled["path"]).is_file()
    assert bundled["size"] == Path(bundled["path"]).stat().st_size and bundled["licence"] == "MIT"
    assert derain[0]["local"] is False and derain[0]["name"].endswith(".pth")
    assert invoke("weights", "path", "derain", "--model", "foo")[0] == 2


def test_a_text_file_as_weights_is_one_clear_line(tmp_path: Path, photos: Path) -> None:
    notes = tmp_path / "README.md"
    notes.write_text("# not weights\n")
    code, _, err = evaluate("denoise", photos, notes, "--degrade", "noise:25")
    assert code == 1
    assert "not a PyTorch checkpoint or .safetensors file" in err and "Traceback" not in err


def test_bench_counts_every_convolution_of_the_published_networks() -> None:
    """The issue's figures: derain ~141 GMAC, deblur ~760 GMAC per 256x256 image."""
    from mprnet_cli.backends.bench import count_macs
    from mprnet_cli.weights import published_configs

    configs = published_configs()

    assert count_macs(configs["derain"], 256, 256) == pytest.approx(141e9, rel=0.005)
    assert count_macs(configs["deblur"], 256, 256) == pytest.approx(760e9, rel=0.005)
    # Linear in the pixels for sides that are multiples of 8 (no padding inside).
    assert count_macs(configs["derain"], 512, 512) == pytest.approx(
        4 * count_macs(configs["derain"], 256, 256), rel=0.001
    )


def test_json_into_a_closed_pipe_is_one_line_not_a_bug(tmp_path: Path) -> None:
    """`mprnet bench --json | head -0`: the run stops with one clear line."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    args = ["bench", "derain", "--size", "16x16", "--modes", "fp32", "--repeat", "1"]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mprnet_cli", *args, "--device", "cpu", "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "mprnet: error: stdout was closed before all JSON lines were written"
    )
    assert "bug" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("fast_bf16", [False, True])
def test_bench_default_mode_is_what_a_restore_runs(
    monkeypatch: pytest.MonkeyPatch, fast_bf16: bool
) -> None:
    """`default` resolves backend and precision exactly as `mprnet derain` does here."""
    import mprnet_cli.host.device as device

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: fast_bf16)
    monkeypatch.delenv("MPRNET_BACKEND")  # set for subprocesses by conftest
    monkeypatch.delenv("MPRNET_PRECISION")
    args = ["bench", "derain", "--size", "16x16", "--repeat", "1", "--device", "cpu", "--json"]
    code, out, err = invoke(*args, "--modes", "reference,default")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["mode"], r["backend"], r["precision"]) for r in rows] == [
        ("reference", "torch", "fp32"),
        ("default", "torch", "bf16" if fast_bf16 else "fp32"),
    ]
    code, out, err = invoke(*args)  # no --modes: default alone, as docs/speed-and-memory.md says
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["mode"], r["speedup_vs_reference"]) for r in rows] == [("default", None)]
    plain = invoke(*args[:-1], "deblur")  # a line as each task starts, then its row
    assert plain[0] == 0, plain[2]
    assert "derain: timing default" in plain[2] and "deblur: timing default" in plain[2]
    assert [line.split()[:2] for line in plain[1].splitlines()] == [
        ["derain", "default"],
        ["deblur", "default"],
    ]
