"""Rewrite mprnet_cli/_help.txt from what Typer prints for `mprnet --help` at 80 columns.

Run after changing the top-level commands or their help: `python3 scripts/update_help.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mprnet_cli.__main__ import HELP_FILE, HELP_WIDTH  # noqa: E402

RENDER = "import sys; sys.argv[0] = 'mprnet'; from mprnet_cli.cli import main; main()"


def typer_help() -> str:
    """Typer's own rendering of the top-level help (the stored copy bypassed)."""
    env = {**os.environ, "COLUMNS": str(HELP_WIDTH), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", RENDER, "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return done.stdout


if __name__ == "__main__":
    HELP_FILE.write_text(typer_help(), encoding="utf-8")
    print(f"wrote {HELP_FILE}")
