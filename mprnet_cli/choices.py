"""String enums for user choices, free of heavy imports so the CLI can type its options with them."""

from __future__ import annotations

from enum import Enum


class Precision(str, Enum):
    """Arithmetic precision of the network's forward pass."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class ModelChoice(str, Enum):
    """Which weights to use when no file is given."""

    AUTO = "auto"
    PUBLISHED = "published"
    BUNDLED = "bundled"
