"""mprnet_cli.cli.values: option values refused in our words; help without type names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mprnet_cli.cli import app
from mprnet_cli.cli.values import plural

runner = CliRunner()
#: What a validation library or Typer's defaults would show instead of our words.
LIBRARY_WORDS = ("Input should", "Value error", "<list[", "range>", "x>=", "<=x")


@pytest.mark.parametrize(
    "command",
    [["derain"], ["bench"], ["train"], ["eval"], ["weights", "download"], ["weights", "import"]],
)
def test_help_shows_no_type_names(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert not [w for w in LIBRARY_WORDS if w in result.stdout], result.stdout
    assert "268435456" not in result.stdout


def test_tasks_and_inputs_are_described_in_the_help_text() -> None:
    derain = runner.invoke(app, ["derain", "--help"], env={"COLUMNS": "200"}).stdout
    assert "INPUT: image or video files, folders" in derain and "268 MP" in derain
    bench = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "200"}).stdout
    assert "TASK: derain, deblur or denoise; several, or none for all of them." in bench


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strength", "nan"], "'--strength': must be a number from 0 to 1, got 'nan'"),
        (["--strength", "1.5"], "'--strength': must be a number from 0 to 1, got '1.5'"),
        (["--strength", "x"], "'--strength': expected a number, got 'x'"),
        (["--ensemble", "4"], "'--ensemble': expected 1, 2 or 8, got '4'"),
        (["--jpeg-quality", "0"], "must be a whole number from 1 to 100, got '0'"),
        (["--tile-batch", "0"], "'--tile-batch': must be a whole number of at least 1, got '0'"),
        (["--threads", "two"], "'--threads': expected a whole number, got 'two'"),
        (["--gpus-per-worker", "inf", "--engine", "ray"], "must be a number of at least 0"),
        (["--precision", "fp64"], "expected auto, fp32, bf16 or fp16, got 'fp64'"),
    ],
)
def test_bad_values_are_refused_in_our_words(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["derain", str(tmp_path / "a.png"), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split()), result.stderr
    assert not [w for w in LIBRARY_WORDS if w in result.stderr]


def test_choices_take_any_letter_case(tmp_path: Path) -> None:
    """Accepted values are parsed, not only refused: BF16 is bf16 (no network is loaded:
    the input is missing, which is reported per file)."""
    result = runner.invoke(app, ["derain", str(tmp_path / "a.png"), "--precision", "BF16"])
    assert result.exit_code == 1 and "no such file" in result.stderr


def test_did_you_mean_ends_its_sentence(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mprnet_cli", "derai"],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    (line,) = proc.stderr.decode().splitlines()
    assert proc.returncode == 2
    assert "Did you mean 'derain', 'train'? See `" in line and "?;" not in line, line


def test_plural() -> None:
    assert [plural(n, "thread") for n in (0, 1, 2)] == ["0 threads", "1 thread", "2 threads"]
