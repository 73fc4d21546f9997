"""mprnet: remove rain, motion blur and noise from photos with MPRNet.

The public API is small and importable without loading torch up front::

    from mprnet_cli import Restorer
    restorer = Restorer("derain")            # published weights (or bundled)
    clean = restorer.restore(pil_or_numpy)   # same type back
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["MprnetError", "RestoreSettings", "Restorer", "Task", "__version__"]

if TYPE_CHECKING:
    from mprnet_cli.api import Restorer
    from mprnet_cli.errors import MprnetError
    from mprnet_cli.settings import RestoreSettings
    from mprnet_cli.tasks import Task


def __getattr__(name: str) -> Any:
    # Lazy so that `import mprnet_cli` (and `mprnet --help`) never pays for torch.
    if name == "Restorer":
        from mprnet_cli.api import Restorer

        return Restorer
    if name == "RestoreSettings":
        from mprnet_cli.settings import RestoreSettings

        return RestoreSettings
    if name == "Task":
        from mprnet_cli.tasks import Task

        return Task
    if name == "MprnetError":
        from mprnet_cli.errors import MprnetError

        return MprnetError
    raise AttributeError(f"module 'mprnet_cli' has no attribute {name!r}")
