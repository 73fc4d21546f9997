"""Console-script entry (and `python -m mprnet_cli`): answers `mprnet --version` and `mprnet --help` before importing Typer.

Importing Typer and building the command tree costs more than Python's own
start-up, so the top-level help is served from `_help.txt`, a copy of what
Typer prints at the standard 80-column width. `scripts/update_help.py`
rewrites it and a test fails whenever it differs from Typer's output.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

HELP_FILE = Path(__file__).with_name("_help.txt")
HELP_WIDTH = 80  # Typer wraps help at min(terminal width, 80) columns


def _stored_help() -> str | None:
    """The stored help when it is exactly what Typer would print here, else None."""
    if Path(sys.argv[0]).name != "mprnet":  # Typer names the program after argv[0]
        return None
    import shutil

    if shutil.get_terminal_size().columns < HELP_WIDTH:
        return None
    try:
        return HELP_FILE.read_text(encoding="utf-8")
    except OSError:
        return None


def _write(text: str) -> None:
    """A reader that went away (`mprnet --help | head -1`) is not an error here."""
    from mprnet_cli.host.stdio import write_stdout

    with contextlib.suppress(BrokenPipeError):
        write_stdout(text)


def main() -> None:
    from mprnet_cli.host.stdio import hold_closed_std_fds

    hold_closed_std_fds()
    args = sys.argv[1:]
    if args in (["--version"], ["-V"]):
        from mprnet_cli import __version__

        _write(f"mprnet {__version__}\n")
        return
    if args in (["--help"], ["-h"]):
        text = _stored_help()
        if text is not None:
            _write(text)
            return
    from mprnet_cli.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
