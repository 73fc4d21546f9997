"""Tests for the restore commands: parsing and exit codes in-process, files end to end.

End-to-end tests run `python -m mprnet_cli` in real subprocesses on generated images with a
tiny checkpoint, one thread (fast and steady on busy machines) and `--tile 0`.
"""

from __future__ import annotations

import io
import json
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from mprnet_cli import __version__
from mprnet_cli.__main__ import HELP_FILE
from mprnet_cli.cli import progress_enabled
from mprnet_cli.errors import OutputError, UsageError
from mprnet_cli.jobs import JSON_FIELDS
from tests.helpers import (
    AS_FROM_A_TERMINAL,
    FAST,
    camera_exif,
    env,
    invoke,
    make_tree,
    mprnet,
    rand,
    save_png,
    temps,
)

EXPECTED_OK = {
    "tree/photo.jpg": "out/photo_derained.jpg",
    "tree/rgb16.png": "out/rgb16_derained.png",
    "tree/rgba16.png": "out/rgba16_derained.png",
    "tree/rgba.png": "out/rgba_derained.png",
    "tree/gray.png": "out/gray_derained.png",
    "tree/gray16.png": "out/gray16_derained.png",
    "tree/palette.png": "out/palette_derained.png",
    "tree/scan.tif": "out/scan_derained.tif",
    "tree/deep.tif": "out/deep_derained.tif",
    "tree/print.jpg": "out/print_derained.jpg",
    "tree/old.bmp": "out/old_derained.png",
    "tree/web.webp": "out/web_derained.webp",
    "tree/sub dir/café ☕.png": "out/sub dir/café ☕_derained.png",
}


@pytest.fixture(scope="module")
def tree_run(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> tuple[Path, Any]:
    """One real run over the whole tree; the tests below each check one aspect of it."""
    work = tmp_path_factory.mktemp("e2e")
    make_tree(work / "tree")
    proc = mprnet("derain", "tree", "-r", "-o", "out", "--json", "-w", checkpoint, *FAST, cwd=work)
    return work, proc


def lines(proc: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def test_e2e_json_lines_exit_code_and_messages(tree_run: tuple[Path, Any]) -> None:
    work, proc = tree_run
    stderr = proc.stderr.decode()
    assert proc.returncode == 1, stderr
    records = lines(proc)  # every stdout line is JSON, nothing else is there
    assert all(tuple(r) == JSON_FIELDS for r in records)
    by_input = {r["input"]: r for r in records}
    assert len(records) == len(by_input) == len(EXPECTED_OK) + 2
    for source, output in EXPECTED_OK.items():
        r = by_input[source]
        assert (r["status"], r["output"], r["error"]) == ("ok", output, None), r
        assert r["device"] == "cpu" and r["tiles"] == 1 and r["seconds"] > 0
        assert (r["backend"], r["precision"]) == ("torch", "fp32")  # pinned by conftest
    assert (by_input["tree/photo.jpg"]["width"], by_input["tree/photo.jpg"]["height"]) == (24, 32)
    for bad, words in [("tree/sub dir/broken.jpg", "truncated"), ("tree/sub dir/bomb.png", "MP")]:
        assert by_input[bad]["status"] == "failed"
        assert words.lower() in by_input[bad]["error"].lower()
        assert by_input[bad]["output"] is None
        assert stderr.count(f"mprnet: {bad}: ") == 1
    assert "notes.txt" not in proc.stdout.decode()
    assert "Traceback" not in stderr
    assert any("CMYK" in w for w in by_input["tree/print.jpg"]["warnings"])
    assert "mprnet: warning: tree/print.jpg: CMYK" in stderr
    assert "13 restored, 0 skipped, 2 failed" in stderr
    assert temps(work) == []


def test_e2e_formats_depths_alpha_and_gray_are_kept(tree_run: tuple[Path, Any]) -> None:
    work, _ = tree_run
    out, tree = work / "out", work / "tree"

    def cv(name: Path) -> np.ndarray[Any, Any]:
        return np.asarray(cv2.imread(str(name), cv2.IMREAD_UNCHANGED))

    for name in ["rgb16_derained.png", "deep_derained.tif"]:
        a = cv(out / name)
        assert (a.dtype, a.shape) == (np.uint16, (24, 24, 3)), name
    rgba16 = cv(out / "rgba16_derained.png")
    assert (rgba16.dtype, rgba16.shape) == (np.uint16, (24, 24, 4))
    assert np.array_equal(rgba16[..., 3], cv(tree / "rgba16.png")[..., 3])  # alpha untouched
    rgba = Image.open(out / "rgba_derained.png")
    assert rgba.mode == "RGBA"
    assert np.array_equal(
        np.asarray(rgba)[..., 3], np.asarray(Image.open(tree / "rgba.png"))[..., 3]
    )
    assert not np.array_equal(
        np.asarray(rgba)[..., :3], np.asarray(Image.open(tree / "rgba.png"))[..., :3]
    )
    assert Image.open(out / "gray_derained.png").mode == "L"
    assert Image.open(out / "gray16_derained.png").mode.startswith("I")
    assert cv(out / "gray16_derained.png").dtype == np.uint16
    kinds = {
        "palette_derained.png": ("PNG", "RGB"),
        "scan_derained.tif": ("TIFF", "RGB"),
        "print_derained.jpg": ("JPEG", "RGB"),
        "old_derained.png": ("PNG", "RGB"),
        "web_derained.webp": ("WEBP", "RGB"),
        "photo_derained.jpg": ("JPEG", "RGB"),
        "sub dir/café ☕_derained.png": ("PNG", "RGB"),
    }
    for name, (fmt, mode) in kinds.items():
        with Image.open(out / name) as im:
            assert (im.format, im.mode) == (fmt, mode), name
            im.load()


def test_e2e_metadata_round_trips_and_orientation_is_applied(tree_run: tuple[Path, Any]) -> None:
    work, _ = tree_run
    out, tree = work / "out", work / "tree"
    icc = Image.open(tree / "photo.jpg").info["icc_profile"]
    assert icc == Image.open(tree / "scan.tif").info["icc_profile"]
    with Image.open(out / "photo_derained.jpg") as im:
        assert im.size == (24, 32)  # stored 32x24 with orientation 6: written upright
        assert im.info["icc_profile"] == icc
        exif = im.getexif()
        assert (exif[0x010F], exif[0x0110]) == ("Canon", "EOS R5")
        assert exif.get(0x0112, 1) == 1
        assert exif.get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09"
    with Image.open(out / "scan_derained.tif") as im:
        assert im.info["icc_profile"] == icc


def test_e2e_stdin_to_stdout(tmp_path: Path, checkpoint: Path) -> None:
    photo = Image.fromarray(rand(24, 32, 3))
    buf = io.BytesIO()
    photo.save(buf, "JPEG", exif=camera_exif(6))
    proc = mprnet(
        "denoise", "-", "-o", "-", "--format", "png", "-w", checkpoint, *FAST,
        cwd=tmp_path, stdin=buf.getvalue(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    with Image.open(io.BytesIO(proc.stdout)) as im:  # stdout holds the image and nothing else
        assert (im.format, im.size) == ("PNG", (24, 32))
        im.load()
    assert list(tmp_path.iterdir()) == []
    assert "1 restored" in proc.stderr.decode()


# --------------------------------------------------------------------------- interruption


def start_batch(work: Path, checkpoint: Path, count: int = 16) -> tuple[list[str], Path]:
    # ~0.16 s per 160-px image: the whole batch takes seconds, so a busy machine delaying
    # the test's signal by a fraction of a second cannot let it finish first.
    for i in range(count):
        save_png(work / "in" / f"{i:02} ü.png", size=160)
    args = ["derain", "in", "-o", "out", "-w", str(checkpoint), *FAST]
    return args, work / "out"


def kill_after_first_output(args: list[str], work: Path, out: Path, sig: int) -> Any:
    proc = subprocess.Popen(
        [sys.executable, "-c", AS_FROM_A_TERMINAL, *args],
        cwd=work,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    while not (out.is_dir() and any(out.glob("*_derained.png"))):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr.decode()


def check_outputs_whole(out: Path) -> list[str]:
    done = sorted(p.name for p in out.glob("*_derained.png"))
    for name in done:
        with Image.open(out / name) as im:
            im.load()  # a partial file would fail here
    return done


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_batch_leaves_whole_files_and_rerun_completes(
    tmp_path: Path, checkpoint: Path, sig: int
) -> None:
    args, out = start_batch(tmp_path, checkpoint)
    code, stderr = kill_after_first_output(args, tmp_path, out, sig)
    done = check_outputs_whole(out)
    assert 1 <= len(done) < 16, "the batch finished before the signal; make it longer"
    if sig == signal.SIGINT:
        assert code == 130, stderr
        assert "interrupted" in stderr and "Traceback" not in stderr
        assert "error" not in stderr.splitlines()[-1]  # the summary, no line repeating it
        assert temps(tmp_path) == []
    else:
        assert code == -signal.SIGKILL
        # A temp file SIGKILL left is only removed once it is old enough not to be another
        # live run's write in progress (batch.STALE_TEMP_SECONDS): as if rerun an hour later.
        for tmp in temps(tmp_path):
            an_hour_ago = time.time() - 3600
            os.utime(tmp, (an_hour_ago, an_hour_ago))

    again = mprnet(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr.decode()
    summary = again.stderr.decode().strip().splitlines()[-1]
    assert (
        summary
        == f"{16 - len(done)} restored, {len(done)} skipped (exist; --overwrite to replace), 0 failed"
    )
    assert len(check_outputs_whole(out)) == 16
    assert temps(tmp_path) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{i:02} ü_derained.png" for i in range(16)
    )

    if sig == signal.SIGINT:  # all done: no weights are loaded (these do not even exist)
        idle = mprnet(
            "derain", "in", "-o", "out", "-w", tmp_path / "none.pth", "--json", cwd=tmp_path
        )
        assert idle.returncode == 0, idle.stderr.decode()
        assert {r["status"] for r in lines(idle)} == {"skipped"}


# --------------------------------------------------------------------------- core CLI checks


def test_help_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mprnet_cli.cli import app\n"
        "r = [CliRunner().invoke(app, a) for a in (['--help'], ['derain', '--help'])]\n"
        "print([x.exit_code for x in r], 'torch' in sys.modules, 'INPUT' in r[1].output)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env(), check=True
    )
    assert proc.stdout.split() == ["[0,", "0]", "False", "True"], proc.stderr


def test_stored_top_level_help_is_typers_own_and_is_served_without_typer() -> None:
    root = Path(__file__).resolve().parent.parent
    typer_help = runpy.run_path(str(root / "scripts" / "update_help.py"))["typer_help"]
    stored = HELP_FILE.read_text(encoding="utf-8")
    assert typer_help() == stored, "top-level help changed: run python3 scripts/update_help.py"

    code = (
        "import sys\n"
        "sys.argv = ['mprnet', '--help']\n"
        "from mprnet_cli.__main__ import main\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    print('typer' in sys.modules, file=sys.stderr)\n"
    )
    for columns, served in (("80", True), ("200", True), ("60", False)):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**env(), "COLUMNS": columns},
            check=True,
        )
        # Narrow terminals get Typer's own wrapping instead of the stored copy.
        assert proc.stderr.strip() == str(not served), columns
        assert (proc.stdout == stored) is served, columns
        assert proc.stdout.startswith("Usage: mprnet [OPTIONS] COMMAND")


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_fast_answers_to_a_closed_pipe_are_quiet(flag: str) -> None:
    """`mprnet --help | head -1`: a reader that went away is not an error."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the child writes: its write must fail with EPIPE
    code = (
        f"import sys; sys.argv = ['mprnet', '{flag}']; from mprnet_cli.__main__ import main; main()"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env={**env(), "COLUMNS": "80"},
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    args = ["derain", "a.png", "b.png", "-o", "-"]
    plain = mprnet(*args, cwd=tmp_path)
    assert plain.returncode == 2
    assert plain.stderr.decode().splitlines() == [
        "mprnet: error: -o - (stdout) takes exactly one input file or - (stdin)"
    ]
    debug = mprnet(*args, cwd=tmp_path, env={**env(), "MPRNET_DEBUG": "1"})
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr.decode() and "UsageError" in debug.stderr.decode()


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"mprnet {__version__}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "bmp"], "--format"),
        (["--tile", "12"], "--tile"),
        (["--jpeg-quality", "0"], "--jpeg-quality"),
        (["--tile-batch", "0"], "--tile-batch"),
        (["--json", "-o", "-"], "stdout"),
        (["--suffix", "a/b"], "separator"),
        (["--strength", "1.5"], "--strength"),
        (["--strength", "-0.1"], "--strength"),
        (["--ensemble", "4"], "--ensemble"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    save_png(tmp_path / "a.png")
    result = invoke("derain", "a.png", *args, cwd=tmp_path)
    assert result.exit_code == 2
    assert message in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("option", "valid"),
    [
        ("--model", ["auto", "published", "bundled"]),
        ("--precision", ["auto", "fp32", "bf16", "fp16"]),
        ("--backend", ["auto", "torch", "openvino"]),
        ("--device", ["auto", "cpu", "cuda", "mps"]),
    ],
)
@pytest.mark.parametrize("output_exists", [False, True], ids=["new", "all-outputs-exist"])
def test_invalid_choice_is_a_one_line_usage_error(
    tmp_path: Path, option: str, valid: list[str], output_exists: bool
) -> None:
    """Even when every output exists (nothing to restore), a bad value is exit 2, not a skip."""
    save_png(tmp_path / "a.png")
    if output_exists:
        save_png(tmp_path / "a_derained.png")
    result = invoke("derain", "a.png", option, "foo", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    named = [line for line in result.stderr.splitlines() if "'foo'" in line]
    assert len(named) == 1, result.stderr
    assert all(value in named[0] for value in valid), named[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a.png", *(["a_derained.png"] if output_exists else [])]
    )


def test_device_check_agrees_with_the_device_module(tmp_path: Path) -> None:
    """The CLI checks --device without torch; it must accept exactly what resolve_device does."""
    from mprnet_cli.host.device import resolve_device

    save_png(tmp_path / "a.png")
    save_png(tmp_path / "a_derained.png")  # all outputs exist: only the check itself runs
    for spec in ["auto", " CPU ", "cuda", "cuda:0", "cuda:12", "mps", "", "gpu", "cuda:", "cpu:0"]:
        try:
            resolve_device(spec)
            usage_error = False
        except UsageError:
            usage_error = True
        except Exception:  # DeviceError: well-formed but not usable here
            usage_error = False
        result = invoke("derain", "a.png", "--device", spec, "-q", cwd=tmp_path)
        assert result.exit_code == (2 if usage_error else 0), (spec, result.stderr)


@pytest.mark.parametrize("stop", ["closed-stdout", "ctrl-c"])
def test_a_loop_stopped_early_shuts_the_runner_down_before_reporting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    """An error after the first result: no worker threads, no writes, no temp files after it."""
    for i in range(6):
        save_png(tmp_path / "in" / f"{i}.png", size=8)

    class Instant:  # the network is not what this test is about
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def restore_rgb(self, rgb: Any, **kwargs: Any) -> Any:
            from mprnet_cli.inference.pipeline import RunStats

            return 1.0 - rgb, RunStats(tiles=1, device="cpu", seconds=0.0)

    import mprnet_cli.cli.output
    import mprnet_cli.cli.restore
    from mprnet_cli import imageio

    real_write, real_fail = imageio.write_file, mprnet_cli.cli.output.fail
    stopped = threading.Event()
    writes: list[str] = []

    def held_write(path: Path, *args: Any, **kwargs: Any) -> None:
        """The first write goes through; the next waits until the consumer has stopped,
        so that a write is certainly in progress when it does."""
        writes.append(Path(path).name)
        if len(writes) > 1:
            assert stopped.wait(timeout=60)
        real_write(path, *args, **kwargs)

    def consumer_stops(line: str) -> None:
        stopped.set()
        if stop == "ctrl-c":
            raise KeyboardInterrupt
        raise OutputError("stdout was closed before all JSON lines were written")

    at_report: dict[str, Any] = {}
    before = set(threading.enumerate())

    def record() -> None:
        at_report["threads"] = [t.name for t in set(threading.enumerate()) - before]
        at_report["outputs"] = sorted(p.name for p in (tmp_path / "out").iterdir())
        at_report["writes"] = len(writes)

    def fail(message: str, code: int = 1) -> Any:
        record()
        return real_fail(message, code)

    real_summary = mprnet_cli.cli.output.Reporter.summary

    def summary(self: Any, **kwargs: Any) -> None:  # Ctrl-C's report: the summary alone
        record()
        real_summary(self, **kwargs)

    monkeypatch.setattr("mprnet_cli.api.Restorer", Instant)
    monkeypatch.setattr("mprnet_cli.runners.stages.write_file", held_write)
    monkeypatch.setattr(mprnet_cli.cli.restore, "print_json", consumer_stops)
    monkeypatch.setattr(mprnet_cli.cli.output, "fail", fail)
    monkeypatch.setattr(mprnet_cli.cli.output.Reporter, "summary", summary)
    result = invoke("derain", "in", "-o", "out", "--json", "--threads", "1", cwd=tmp_path)
    assert result.exit_code == (130 if stop == "ctrl-c" else 1), result.output
    # No thread the run started is alive when the error is reported, so nothing can be
    # written behind its back: the first output and the write in progress, no more.
    assert at_report["threads"] == []
    assert len(writes) == at_report["writes"] == len(at_report["outputs"]) in (1, 2)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == at_report["outputs"]
    for name in written:
        Image.open(tmp_path / "out" / name).load()
    assert temps(tmp_path) == []


def test_stdin_needs_an_output_and_stdout_takes_one_input(tmp_path: Path) -> None:
    assert invoke("derain", "-", cwd=tmp_path).exit_code == 2
    assert invoke("derain", "-", "x.png", "-o", "out", cwd=tmp_path).exit_code == 2
    assert invoke("derain", cwd=tmp_path).exit_code == 2


def test_quality_options_reach_the_restorer(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """--strength 0 gives the input back; --ensemble and --split-lines change the result."""
    save_png(tmp_path / "a.png", size=96)
    base: list[str | Path] = ["derain", "a.png", "-w", tiny_checkpoint, *FAST, "-q", "-o"]
    outputs = {}
    for name, extra in [
        ("plain", []),
        ("zero", ["--strength", "0"]),
        ("mirror", ["--ensemble", "2"]),
        ("hidden", ["--hide-split-lines"]),
        ("hide", ["--split-lines", "hide"]),
        ("keep", ["--split-lines", "keep"]),
        ("fix", ["--split-lines", "fix"]),
    ]:
        result = invoke(*base, f"{name}.png", *extra, cwd=tmp_path)
        assert result.exit_code == 0, result.output
        outputs[name] = np.asarray(Image.open(tmp_path / f"{name}.png"))
    assert np.array_equal(outputs["zero"], np.asarray(Image.open(tmp_path / "a.png")))
    assert not np.array_equal(outputs["plain"], outputs["zero"])
    assert not np.array_equal(outputs["mirror"], outputs["plain"])
    assert not np.array_equal(outputs["hidden"], outputs["plain"])
    assert np.array_equal(outputs["hide"], outputs["hidden"])  # the alias
    assert np.array_equal(outputs["fix"], outputs["plain"])  # the default
    assert not np.array_equal(outputs["keep"], outputs["plain"])
    clash = invoke(*base, "x.png", "--split-lines", "keep", "--hide-split-lines", cwd=tmp_path)
    assert clash.exit_code == 2 and "contradicts --split-lines keep" in clash.stderr


def test_single_file_output_skip_and_overwrite(tmp_path: Path, tiny_checkpoint: Path) -> None:
    save_png(tmp_path / "a b.png")
    base: list[str | Path] = ["derain", "a b.png", "-w", tiny_checkpoint, *FAST]
    first = invoke(*base, "-o", "clean.tif", cwd=tmp_path)
    assert first.exit_code == 0, first.output
    assert first.stdout == ""
    assert Image.open(tmp_path / "clean.tif").format == "TIFF"
    assert "a b.png -> clean.tif" in first.stderr
    assert first.stderr.splitlines()[-1] == "1 restored, 0 skipped, 0 failed"

    before = (tmp_path / "clean.tif").stat().st_mtime_ns
    again = invoke(*base, "-o", "clean.tif", cwd=tmp_path)
    assert again.exit_code == 0
    assert "1 skipped (exist; --overwrite to replace)" in again.stderr
    assert (tmp_path / "clean.tif").stat().st_mtime_ns == before
    forced = invoke(*base, "-o", "clean.tif", "--overwrite", "-q", cwd=tmp_path)
    assert forced.exit_code == 0 and forced.stderr == ""

    default = invoke(*base, "--suffix", ".x", "--format", "jpg", cwd=tmp_path)
    assert default.exit_code == 0
    assert Image.open(tmp_path / "a b.x.jpg").format == "JPEG"


def test_missing_input_and_missing_weights_are_one_line_errors(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    missing = invoke("derain", "nope.png", "-w", tiny_checkpoint, cwd=tmp_path)
    assert missing.exit_code == 1
    assert missing.stderr.splitlines()[0] == "mprnet: nope.png: no such file; check the path"
    save_png(tmp_path / "a.png")
    weights = invoke("derain", "a.png", "-w", tmp_path / "none.pth", cwd=tmp_path)
    assert weights.exit_code == 1
    assert len(weights.stderr.strip().splitlines()) == 1
    assert weights.stderr.startswith("mprnet: error:")
    assert not list(tmp_path.glob("a_*"))


def test_json_in_process_and_glob_expansion(tmp_path: Path, tiny_checkpoint: Path) -> None:
    for name in ["x/a.png", "x/y/b.png"]:
        save_png(tmp_path / name)
    (tmp_path / "x" / "c.txt").write_text("not an image")
    result = invoke("deblur", "x/**/*.png", "--json", "-w", tiny_checkpoint, *FAST, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["input"], r["output"], r["status"]) for r in records] == [
        ("x/a.png", "x/a_deblurred.png", "ok"),
        ("x/y/b.png", "x/y/b_deblurred.png", "ok"),
    ]


def test_progress_is_only_for_terminals() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, term = Tty(), {"TERM": "xterm-256color"}
    assert progress_enabled(False, tty, term)
    assert not progress_enabled(True, tty, term)
    assert not progress_enabled(False, io.StringIO(), term)
    assert not progress_enabled(False, tty, {**term, "NO_COLOR": "1"})
    assert not progress_enabled(False, tty, {"TERM": "dumb"})
    assert progress_enabled(False, tty, {**term, "NO_COLOR": ""})


def test_progress_bars_never_touch_stdout(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With bars on (a terminal on stderr), --json lines still go to stdout, and only there."""
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats its stderr console as a terminal
    monkeypatch.setattr("mprnet_cli.cli.restore.progress_enabled", lambda quiet: True)
    save_png(tmp_path / "a.png", size=24)
    save_png(tmp_path / "b.png", size=24)
    result = invoke(
        "derain", "a.png", "b.png", "--json", "--tile", "16", "-w", tiny_checkpoint,
        "--threads", "1", cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2 and all(r["tiles"] > 1 for r in records)  # tile bars shown
    assert "images" in result.stderr and "tiles" in result.stderr
    assert "{" not in result.stderr


# --------------------------------------------------------------------------- issue 23: first minute


class Instant:
    """A stand-in network (1 - x, one tile): for tests about the CLI, not the network."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def restore_rgb(self, rgb: Any, **kwargs: Any) -> Any:
        from mprnet_cli.inference.pipeline import RunStats

        return 1.0 - rgb, RunStats(tiles=1, device="cpu", seconds=0.0)


@pytest.fixture()
def instant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mprnet_cli.api.Restorer", Instant)


def test_output_file_in_new_folders_creates_them(tmp_path: Path, instant: None) -> None:
    """-o new/sub/out.png makes its folders, as -o DIR does."""
    save_png(tmp_path / "a.png")
    result = invoke("derain", "a.png", "-o", "new/sub/out.png", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "new" / "sub" / "out.png") as im:
        assert im.size == (16, 16)


@pytest.mark.parametrize("closed", [0, 1], ids=["stdin", "stdout"])
def test_a_closed_stdin_or_stdout_matters_only_when_used(
    tmp_path: Path, checkpoint: Path, closed: int
) -> None:
    """`mprnet denoise x.png >&-` (cron, daemons): restores; `-` or `-o -` say it is closed."""
    save_png(tmp_path / "x.png")

    def run(*args: str | Path) -> Any:
        return mprnet(
            *args, "-w", checkpoint, *FAST, cwd=tmp_path, preexec_fn=lambda: os.close(closed)
        )

    plain = run("denoise", "x.png")
    assert plain.returncode == 0, plain.stderr.decode()
    with Image.open(tmp_path / "x_denoised.png") as im:
        im.load()
    use = ["denoise", "-", "-o", "y.png"] if closed == 0 else ["denoise", "x.png", "-o", "-"]
    used = run(*use)
    assert used.returncode == 2
    (line,) = used.stderr.decode().splitlines()
    assert f"{'stdin' if closed == 0 else 'stdout'} is closed" in line


def test_hide_split_lines_is_no_warning_and_passes_are_no_tiles(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    save_png(tmp_path / "a.png")
    result = invoke(
        "derain", "a.png", "--hide-split-lines", "--json", "-w", tiny_checkpoint, *FAST,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["warnings"] == [] and record["tiles"] == 1
    assert "warning" not in result.stderr and "1 tile)" in result.stderr


def test_subfolders_left_out_without_r_are_mentioned(tmp_path: Path, instant: None) -> None:
    save_png(tmp_path / "trip" / "a.png")
    save_png(tmp_path / "trip" / "day2" / "b.png")
    result = invoke("derain", "trip", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "mprnet: trip: 1 subfolder not searched; -r/--recursive includes it" in result.stderr


def test_rerun_with_a_shell_glob_resumes(tmp_path: Path, instant: None) -> None:
    for name in ("p1.png", "p2.png"):
        save_png(tmp_path / name)
    assert invoke("denoise", "p1.png", cwd=tmp_path).exit_code == 0  # then stopped
    again = invoke("denoise", "p1.png", "p1_denoised.png", "p2.png", cwd=tmp_path)
    assert again.exit_code == 0, again.output
    assert "1 input left out, named like this command's outputs" in again.stderr
    assert again.stderr.splitlines()[-1].startswith("1 restored, 1 skipped")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "p1.png", "p1_denoised.png", "p2.png", "p2_denoised.png"
    ]  # fmt: skip


def test_an_unwritable_output_folder_is_one_line_for_the_run(
    tmp_path: Path, instant: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only file system (mocked: root writes anywhere): one error, its advice once."""
    import errno

    from mprnet_cli.imageio import atomic

    def read_only(folder: Path, name: str) -> Any:
        raise OSError(errno.EROFS, "Read-only file system", str(folder))

    monkeypatch.setattr(atomic, "create_temp", read_only)
    for name in ("a.png", "b.png", "c.png"):
        save_png(tmp_path / name)
    result = invoke("derain", "a.png", "b.png", "c.png", "-o", "out", cwd=tmp_path)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "mprnet: error: out: the file system is read-only; write elsewhere"
    ]
