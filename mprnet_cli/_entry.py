"""Console-script entry: answers `mprnet --version` before importing the CLI framework."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] in (["--version"], ["-V"]):
        from mprnet_cli import __version__

        print(f"mprnet {__version__}")
        return
    from mprnet_cli.cli import main as cli_main

    cli_main()
