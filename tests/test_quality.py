"""Self-ensemble and strength: transforms undone exactly, averaging, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mprnet_cli.choices import Ensemble
from mprnet_cli.errors import UsageError
from mprnet_cli.inference.quality import (
    apply_strength,
    check_ensemble,
    check_strength,
    ensemble_transforms,
    self_ensemble,
)


def _ramp_network(a: float, b: float, seen: list[tuple[int, int]]):  # type: ignore[no-untyped-def]
    """A 'network' that is not flip/rotation-equivariant: adds a*row + b*column."""

    def forward(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[-2:]
        seen.append((h, w))
        rows = np.arange(h, dtype=np.float32)[:, None]
        cols = np.arange(w, dtype=np.float32)[None, :]
        return (x + np.float32(a) * rows + np.float32(b) * cols).astype(np.float32)

    return forward


def test_transforms_invert_exactly() -> None:
    x = np.random.default_rng(0).random((2, 3, 8, 16), dtype=np.float32)
    pairs = ensemble_transforms(Ensemble.DIHEDRAL)
    assert len(pairs) == 8
    images = set()
    for transform, inverse in pairs:
        y = transform(x)
        assert y.flags.c_contiguous  # backends take contiguous batches
        images.add(y.tobytes())
        np.testing.assert_array_equal(inverse(y), x)
    assert len(images) == 8  # eight different views, not the same one eight times


def test_mirror_ensemble_averages_the_input_and_its_mirror() -> None:
    # x + c and mirror(mirror(x) + c) = x + mirror(c): their mean is x + (w - 1) / 2 everywhere.
    seen: list[tuple[int, int]] = []
    x = np.random.default_rng(1).random((1, 3, 8, 16), dtype=np.float32)
    out = self_ensemble(_ramp_network(0.0, 1.0, seen), Ensemble.MIRROR)(x)
    assert seen == [(8, 16), (8, 16)]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x + 7.5, rtol=0, atol=1e-5)  # values < 24: ulp 2e-6


def test_dihedral_ensemble_undoes_rotations_of_non_square_inputs() -> None:
    # Averaged over the 8 views, the linear ramps cancel about the centre; what is left is
    # their mean: (a + b) * (h + w - 2) / 4. A wrong inverse leaves a ramp (or fails on shape).
    seen: list[tuple[int, int]] = []
    x = np.random.default_rng(2).random((2, 3, 8, 24), dtype=np.float32)
    out = self_ensemble(_ramp_network(1.0, 2.0, seen), Ensemble.DIHEDRAL)(x)
    assert sorted(seen) == [(8, 24)] * 4 + [(24, 8)] * 4
    # fp32: terms below 64, partial sums below 512 (half an ulp there: 1.5e-5), seven
    # additions then / 8: at most ~2e-5 off; 1e-4 leaves a margin, a wrong inverse is off by >1.
    np.testing.assert_allclose(out, x + 3.0 * 30 / 4, rtol=0, atol=1e-4)


def test_ensemble_off_is_the_network_itself() -> None:
    def forward(x: np.ndarray) -> np.ndarray:
        return x

    assert self_ensemble(forward, Ensemble.OFF) is forward


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, Ensemble.OFF),
        ("2", Ensemble.MIRROR),
        (8, Ensemble.DIHEDRAL),
        (Ensemble.MIRROR, Ensemble.MIRROR),
    ],
)
def test_check_ensemble_accepts(value: object, expected: Ensemble) -> None:
    assert check_ensemble(value) is expected  # type: ignore[arg-type]
    assert expected.passes == int(expected.value)


@pytest.mark.parametrize("value", [0, 3, 4, "two", ""])
def test_check_ensemble_refuses(value: object) -> None:
    with pytest.raises(UsageError, match="--ensemble must be 1, 2 or 8"):
        check_ensemble(value)  # type: ignore[arg-type]


def test_strength_blends_with_the_input() -> None:
    rng = np.random.default_rng(0)
    restored = rng.random((4, 5, 3), dtype=np.float32)
    original = rng.random((4, 5, 3), dtype=np.float32)
    assert apply_strength(restored, original, 1.0) is restored
    np.testing.assert_array_equal(apply_strength(restored, original, 0.0), original)
    half = apply_strength(restored, original, 0.25)
    assert half.dtype == np.float32
    # Three fp32 roundings of values below 1 (half an ulp: 3e-8 each) against float64.
    np.testing.assert_allclose(half, 0.25 * restored + 0.75 * original, rtol=0, atol=2e-7)


@pytest.mark.parametrize("value", [-0.1, 1.01, math.nan, math.inf])
def test_strength_out_of_range_is_a_usage_error(value: float) -> None:
    with pytest.raises(UsageError, match="--strength must be between 0"):
        check_strength(value)


def test_strength_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        apply_strength(np.zeros((2, 2, 3), np.float32), np.zeros((2, 3, 3), np.float32), 0.5)
