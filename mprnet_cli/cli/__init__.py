"""The `mprnet` command line, one module per command group (see `app`)."""

from mprnet_cli.cli.app import app, main
from mprnet_cli.cli.output import progress_enabled

__all__ = ["app", "main", "progress_enabled"]
