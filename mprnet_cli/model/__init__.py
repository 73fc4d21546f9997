"""The network, its configuration and checkpoint reading."""

from mprnet_cli.model.checkpoint import Checkpoint, build_model, read_checkpoint
from mprnet_cli.model.config import MPRNetConfig, detect_config
from mprnet_cli.model.network import MPRNet

__all__ = [
    "Checkpoint",
    "MPRNet",
    "MPRNetConfig",
    "build_model",
    "detect_config",
    "read_checkpoint",
]
