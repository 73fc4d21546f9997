"""The hostile-input audit (issue 14), end to end: what a user sees and what is written.

Each case failed before the fix. Subprocess runs use the tiny network of conftest, so each
costs about a second; the SIGTERM run synchronises on a marker file, never on timing.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import FAST, env, invoke, mprnet, temps


def save_png(path: Path, size: int = 16) -> None:
    """Its own generator: drawing from test_cli's would change that module's fixtures."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(os.fsencode(path.name)))
    Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(path, "PNG")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def half_rows_png(width: int = 16, height: int = 16) -> bytes:
    """A PNG whose complete zlib stream holds only the first half of its rows."""
    raw = b"".join(b"\x00" + bytes(range(width * 3)) for _ in range(height // 2))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- the folder


EVIL = "evil\nmprnet: error: forged.png"
LATIN1 = b"caf\xe9.png"  # not UTF-8


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> tuple[Path, Any]:
    """One run over a folder of good and bad files, names included."""
    work = tmp_path_factory.mktemp("hostile")
    root = work / "in"
    save_png(root / "good.png")
    save_png(root / "sub" / "deeper.png")
    save_png(root / EVIL)
    save_png(Path(os.fsdecode(bytes(root) + b"/" + LATIN1)))
    (root / "halfrows.png").write_bytes(half_rows_png())
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    (root / "gone.png").symlink_to(work / "nowhere.png")
    proc = mprnet("denoise", "in", "-r", "-o", "out", "--json", "-w", checkpoint, *FAST, cwd=work)
    return work, proc


def test_hostile_folder_fails_each_bad_file_alone(hostile: tuple[Path, Any]) -> None:
    work, proc = hostile
    assert proc.returncode == 1
    records = {r["input"]: r for r in map(json.loads, proc.stdout.decode("utf-8").splitlines())}
    status = {name.removeprefix("in/"): r["status"] for name, r in records.items()}
    assert status == {
        "good.png": "ok",
        "sub/deeper.png": "ok",
        EVIL: "ok",
        "caf\\xe9.png": "ok",
        "halfrows.png": "failed",
        "empty.png": "failed",
        "text.png": "failed",
    }
    assert "truncated PNG" in records["in/halfrows.png"]["error"]
    assert not (work / "out" / "halfrows_denoised.png").exists()
    assert temps(work) == []


def test_names_cannot_forge_lines_and_json_is_lossless(hostile: tuple[Path, Any]) -> None:
    work, proc = hostile
    err = proc.stderr.decode("utf-8")  # escaped: valid UTF-8 whatever the names
    assert "Traceback" not in err and "This is a bug" not in err
    assert not any(line.startswith("mprnet: error: forged") for line in err.splitlines())
    assert "in/evil\\nmprnet: error: forged.png -> out/evil\\nmprnet: error: forged_denoised" in err
    assert "mprnet: warning: in/gone.png: skipped: a broken symbolic link" in err.splitlines()
    (latin1,) = (
        r for r in map(json.loads, proc.stdout.decode().splitlines()) if "caf" in r["input"]
    )
    assert base64.b64decode(latin1["input_bytes_b64"]) == b"in/" + LATIN1
    written = base64.b64decode(latin1["output_bytes_b64"])
    assert written == b"out/caf\xe9_denoised.png" and (work / os.fsdecode(written)).is_file()


# --------------------------------------------------------------------------- stdout


def test_image_to_a_nonblocking_stdout_pipe_arrives_whole(tmp_path: Path, checkpoint: Path) -> None:
    """65,536 of 465,346 bytes arrived and the run said "1 restored": never again."""
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (256, 256, 3), np.uint8)).save(
        tmp_path / "a.png"
    )  # ~200 kB of noise: three times a pipe's buffer
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    with os.fdopen(read_end, "rb") as reader:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mprnet_cli", "denoise", "a.png", "-o", "-", "--format", "png",
             "-w", str(checkpoint), *FAST],
            cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, env=env(),
        )  # fmt: skip
        os.close(write_end)
        data = reader.read()
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.size == (256, 256)


# --------------------------------------------------------------------------- signals


SIGTERM_SCRIPT = """
import sys, threading
from pathlib import Path
import mprnet_cli.api as api

real, calls = api.Restorer.restore_rgb, []

def restore_rgb(self, rgb, **kw):
    calls.append(1)
    if len(calls) == 2:  # image 2: tell the test, then wait for its SIGTERM
        Path("restoring-2").write_text("")
        threading.Event().wait()
    return real(self, rgb, **kw)

api.Restorer.restore_rgb = restore_rgb
sys.argv = ["mprnet", *sys.argv[1:]]
from mprnet_cli.__main__ import main
main()
"""


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"]
)
def test_sigterm_mid_batch_is_handled_like_ctrl_c(
    tmp_path: Path, checkpoint: Path, sig: int, code: int
) -> None:
    """SIGHUP (a closed terminal or ssh session) too: summary, records, 128 + N."""
    for name in ("a", "b", "c"):
        save_png(tmp_path / "in" / f"{name}.png")
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT, "denoise", "in", "-o", "out", "--json",
         "-w", str(checkpoint), *FAST],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
    )  # fmt: skip
    marker, deadline = tmp_path / "restoring-2", time.monotonic() + 120
    while not marker.exists():  # a file, not a guessed delay, says image 2 is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()  # type: ignore[union-attr]
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    text = err.decode()
    assert proc.returncode == code, text
    records = [json.loads(line) for line in out.decode().splitlines()]
    assert [(r["input"], r["status"]) for r in records] == [("in/a.png", "ok")]
    # the summary is the last line: no "mprnet: error: ..." repeating it
    assert text.splitlines()[-1] == (
        f"1 restored, 0 skipped, 0 failed; interrupted by {signal.Signals(sig).name}: "
        "run the same command again to resume"
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_denoised.png"]
    assert temps(tmp_path) == []


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["derain", "a.png", "--tile-overlap", "-1"], "'--tile-overlap'"),
        (["derain", "a.png", "--bogus"], "no such option: --bogus"),
        (["derain"], "missing argument 'INPUT'"),
        (["derain", "a.png", "--tile", "64", "--tile-overlap", "64"], "smaller than --tile 64"),
        (["weights", "path", "nothing"], "expected derain, deblur or denoise, got 'nothing'"),
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    proc = mprnet(*args, cwd=tmp_path)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("mprnet: error: ") and fragment in lines[0]
    if "smaller" not in fragment:  # Typer's own errors point at the help
        assert lines[0].endswith("--help`")


def test_group_without_a_command_still_shows_its_help(tmp_path: Path) -> None:
    proc = mprnet("weights", cwd=tmp_path)
    assert proc.returncode == 2 and "Commands:" in proc.stderr.decode()


def test_default_overlap_fits_small_tiles(tmp_path: Path, tiny_checkpoint: Path) -> None:
    save_png(tmp_path / "a.png", size=24)
    result = invoke("derain", "a.png", "--tile", "16", "-w", tiny_checkpoint, "--threads", "1",
                    cwd=tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output


def test_terminal_runs_say_where_each_output_went(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setattr("mprnet_cli.cli.restore.progress_enabled", lambda quiet: True)
    save_png(tmp_path / "a.png", size=16)
    result = invoke("derain", "a.png", "-w", tiny_checkpoint, *FAST, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "a.png -> a_derained.png" in result.stderr


def test_nan_weights_fail_the_run_with_one_line(tmp_path: Path) -> None:
    from tests.conftest import tiny_model

    state = tiny_model().state_dict()
    state["tail.weight"].fill_(float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    save_png(tmp_path / "a.png")
    result = invoke("derain", "a.png", "-w", tmp_path / "nan.pth", *FAST, cwd=tmp_path)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("mprnet: error: ") and "NaN or infinite values" in line
    assert not (tmp_path / "a_derained.png").exists()


def test_weights_folder_is_named_as_a_folder(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png")
    result = invoke("derain", "a.png", "-w", tmp_path, cwd=tmp_path)
    assert result.exit_code == 1 and "is a folder; give the weights file in it" in result.stderr


def test_help_names_what_each_option_expects() -> None:
    for command in (["derain"], ["bench"], ["train"], ["eval"]):
        result = invoke(*command, "--help", env={"COLUMNS": "200"})
        options = [line for line in result.stdout.splitlines() if line.lstrip().startswith("-")]
        assert options and not any(
            t in line for line in options for t in ("<str>", "<int>", "<int range>", "<float>")
        ), command
    assert "--size WxH" in invoke("bench", "--help", env={"COLUMNS": "200"}).stdout
    assert (
        "TASK <derain|deblur|denoise>" in invoke("train", "--help", env={"COLUMNS": "200"}).stdout
    )


def test_weights_list_does_not_wrap_when_piped() -> None:
    from mprnet_cli.weights import status

    paths = [str(row.path) for row in status() if row.path]
    result = invoke("weights", "list")  # stdout is not a terminal here
    assert paths and all(path in result.stdout for path in paths)


def test_sigterm_outside_a_restore_keeps_its_exit_code(tmp_path: Path) -> None:
    """Typer turns a KeyboardInterrupt outside `errors_to_exit` into a silent 130."""
    script = (
        "import os, signal, sys\n"
        "import mprnet_cli.cli as cli, mprnet_cli.cli.weights as weights_cli\n"
        "def tasks(*args):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)  # delivered to this thread at once\n"
        "    raise AssertionError('SIGTERM did not stop the command')\n"
        "weights_cli.parse_tasks = tasks\n"
        "sys.argv = ['mprnet', 'weights', 'download', 'derain']\n"
        "cli.main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, env=env(), timeout=60
    )
    assert proc.returncode == 143, proc.stderr.decode()
