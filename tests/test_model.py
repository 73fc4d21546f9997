"""The network against the published layout and the reference test vectors."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mprnet_cli.errors import CheckpointError, UnsafeCheckpointError
from mprnet_cli.model import (
    MPRNet,
    MPRNetConfig,
    build_model,
    detect_config,
    read_checkpoint,
)
from mprnet_cli.model.checkpoint import state_dict_for_saving
from tests.conftest import TINY_CONFIG, tiny_model
from tests.helpers import Exploit

# ----------------------------------------------------------------- published layout


@pytest.fixture(scope="module")
def layout(reference_dir: Path) -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads(
        (reference_dir / "official_state_dict_layout.json").read_text()
    )
    return data


@pytest.mark.parametrize("task", ["deblur", "denoise", "derain"])
def test_state_dict_matches_published_layout(
    layout: dict[str, dict[str, object]], task: str
) -> None:
    entry = layout[task]
    model = MPRNet(MPRNetConfig.from_dict(entry["config"]))  # type: ignore[arg-type]
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = entry["state_dict"]
    assert list(ours) == list(theirs)  # names *and* order
    assert ours == theirs
    distinct = sum(p.numel() for p in model.parameters())
    assert distinct == entry["params"]


@pytest.mark.parametrize("task", ["deblur", "denoise", "derain"])
def test_config_detected_from_published_shapes(
    layout: dict[str, dict[str, object]], task: str
) -> None:
    entry = layout[task]
    shapes = {k: torch.empty(0).new_empty(s) for k, s in entry["state_dict"].items()}  # type: ignore[union-attr]
    assert detect_config(shapes) == MPRNetConfig.from_dict(entry["config"])  # type: ignore[arg-type]


# ----------------------------------------------------------------- reference vectors


@pytest.fixture(scope="module")
def vectors(reference_dir: Path) -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads((reference_dir / "vectors.json").read_text())
    return data


CASES = ["tiny", "tiny_bias_k5"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("batched", [False, True], ids=["reference-mode", "batched"])
def test_reproduces_reference_outputs(
    reference_dir: Path, vectors: dict[str, dict[str, object]], case: str, batched: bool
) -> None:
    spec = vectors[case]
    ckpt = read_checkpoint(reference_dir / str(spec["checkpoint"]))
    expected_cfg = MPRNetConfig.from_dict(spec["config"])  # type: ignore[arg-type]
    for name in (
        "n_feat",
        "scale_unetfeats",
        "scale_orsnetfeats",
        "num_cab",
        "kernel_size",
        "bias",
    ):
        assert getattr(ckpt.config, name) == getattr(expected_cfg, name)
    model = build_model(ckpt)
    model.batched = batched
    io = torch.load(reference_dir / str(spec["io"]), weights_only=True)
    with torch.no_grad():
        outputs = model(io["input"])
    for out, key in zip(outputs, ("stage3", "stage2", "stage1"), strict=True):
        diff = (out - io[key]).abs().max().item()
        assert diff <= 1e-5, f"{case} {key}: max abs diff {diff}"
    assert outputs[0].abs().mean().item() == pytest.approx(spec["output_mean_abs"], rel=1e-5)


def test_batched_mode_equals_reference_mode() -> None:
    model = tiny_model(
        3, MPRNetConfig(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=2)
    )
    x = torch.rand(2, 3, 40, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.batched = False
        ref = model(x)
        model.batched = True
        fast = model(x)
    # Batching changes only the order in which oneDNN/Accelerate/... accumulate each
    # convolution's dot products (blocking and kernels are chosen per batch size), so the
    # two modes differ by fp32 rounding alone. A sum of K products reassociated differently
    # moves by about sqrt(K) * u * |y| (u = 2**-24, rounding errors as a random walk); those
    # errors pass through up to D layers (gain ~1) and add up as a random walk again. With
    # K = the largest fan-in (in_channels * kernel area) and D = the number of conv layers
    # (an upper bound on the longest path), the bound is sqrt(D * K) * u * max|y|: 5.6e-5
    # for this network, whatever the CPU's vector width. A real batching bug (a quarter
    # out of place, pooling across samples) moves outputs by 1e-2 or more.
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    depth = len(convs)
    fan_in = max(m.in_channels * m.kernel_size[0] * m.kernel_size[1] for m in convs)
    unit_roundoff = 2.0**-24
    for a, b in zip(ref, fast, strict=True):
        scale = max(a.abs().max().item(), 1.0)
        atol = (depth * fan_in) ** 0.5 * unit_roundoff * scale
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


def test_uncut_input_is_one_whole_pass_on_both_paths() -> None:
    """`cut_input=False` (`--split-lines fix`): the fast path's in-place updates touch
    only fresh tensors, so it equals the reference arithmetic bit for bit (the same
    convolutions on the same shapes); and it is another computation than the cut one."""
    model = tiny_model(
        3, MPRNetConfig(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=2)
    )
    x = torch.rand(1, 3, 40, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cut = model(x)
        model.cut_input = False
        model.batched = False
        ref = model(x)
        model.batched = True
        fast = model(x)
    for a, b in zip(ref, fast, strict=True):
        assert torch.equal(a, b)
    assert (cut[0] - fast[0]).abs().max().item() > 1e-3


def test_rejects_sizes_not_multiple_of_8() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        tiny_model()(torch.zeros(1, 3, 20, 16))


# ----------------------------------------------------------------- checkpoint formats


def _outputs(model: MPRNet) -> torch.Tensor:
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(x)[0]


def test_published_format_loads(tiny_checkpoint: Path) -> None:
    model = build_model(read_checkpoint(tiny_checkpoint))
    assert model.config == TINY_CONFIG
    torch.testing.assert_close(_outputs(model), _outputs(tiny_model()), rtol=0, atol=0)


def test_bare_state_dict_loads(tmp_path: Path) -> None:
    path = tmp_path / "bare.pt"
    torch.save(tiny_model().state_dict(), path)
    torch.testing.assert_close(
        _outputs(build_model(read_checkpoint(path))), _outputs(tiny_model()), rtol=0, atol=0
    )


def test_legacy_non_zip_format_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save(
        {"state_dict": tiny_model().state_dict()}, path, _use_new_zipfile_serialization=False
    )
    assert build_model(read_checkpoint(path)).config == TINY_CONFIG


def test_safetensors_loads_with_metadata(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file(
        state_dict_for_saving(tiny_model()),
        str(path),
        metadata={"config": json.dumps(TINY_CONFIG.to_dict())},
    )
    ckpt = read_checkpoint(path)
    assert ckpt.config == TINY_CONFIG
    assert "config" in ckpt.metadata
    torch.testing.assert_close(_outputs(build_model(ckpt)), _outputs(tiny_model()), rtol=0, atol=0)


def test_safetensors_metadata_contradicting_shapes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    wrong = MPRNetConfig(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=2)
    save_file(
        state_dict_for_saving(tiny_model()),
        str(path),
        metadata={"config": json.dumps(wrong.to_dict())},
    )
    with pytest.raises(CheckpointError, match="disagrees"):
        read_checkpoint(path)


def test_checkpoint_that_runs_code_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": tiny_model().state_dict(), "payload": Exploit()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"refused.*code") as info:
        read_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
    assert "system" in str(info.value)  # names what it would have called
    assert "weights_only" not in str(info.value)  # not torch's advice to turn safety off


def test_plain_pickle_that_runs_code_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Exploit()))
    with warnings.catch_warnings():
        # no torch warning on top of the one-line error
        warnings.filterwarnings("error", message="Detected pickle protocol")
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)
    # Protocol 2 reaches the callable itself: refused as unsafe, by name.
    path.write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_non_mprnet_state_dict_is_refused_with_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 64)}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "not an MPRNet checkpoint" in message
    assert "conv1.weight" in message  # what it is
    assert "shallow_feat1.0.weight" in message  # what is missing


def test_non_dict_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not an MPRNet checkpoint"):
        read_checkpoint(path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_checkpoint_is_refused(tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": tiny_model().state_dict()}, full)
    else:
        save_file(state_dict_for_saving(tiny_model()), str(full))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(cut)


def test_missing_and_extra_tensors_are_named(tmp_path: Path) -> None:
    state = tiny_model().state_dict()
    del state["tail.weight"]
    state["tail.weight"] = torch.zeros(3, 12, 3, 3)  # keep detection happy
    del state["sam23.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing 1 tensors"):
        build_model(read_checkpoint(path))


def test_reduction_detection_picks_the_named_ratio() -> None:
    cfg = MPRNetConfig(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=1, reduction=8)
    assert detect_config(MPRNet(cfg).state_dict()) == cfg


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        MPRNetConfig(kernel_size=4)
    with pytest.raises(ValueError, match="unknown"):
        MPRNetConfig.from_dict({"n_feat": 8, "colour": 1})


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_holding_non_finite_values_are_refused(tmp_path: Path, value: float) -> None:
    """Every output of such a network is NaN: the run fails once, at loading."""
    state = tiny_model().state_dict()
    state["tail.weight"][0, 0, 0, 0] = value
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"NaN or infinite values \(e\.g\. tail\.weight\)"):
        build_model(read_checkpoint(path))


def test_a_folder_is_not_a_weights_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a folder; give the weights file in it"):
        read_checkpoint(tmp_path)


def _hostile_state(n_feat: int, scale: int = 4, num_cab: int = 1) -> dict[str, torch.Tensor]:
    """Only the few tensors whose shapes declare the network (a small file, a big network)."""
    squeeze = max(1, n_feat // 4)
    z = torch.zeros
    return {
        "shallow_feat1.0.weight": z(n_feat, 3, 3, 3),
        "shallow_feat1.1.CA.conv_du.0.weight": z(squeeze, n_feat, 1, 1),
        "stage1_encoder.down12.down.1.weight": z(n_feat + scale, n_feat, 1, 1),
        f"stage3_orsnet.orb1.body.{num_cab}.weight": z(1),
        "stage3_orsnet.orb1.body.0.CA.conv_du.0.weight": z(squeeze, n_feat, 1, 1),
        "tail.weight": z(3, n_feat + scale, 3, 3),
    }


@pytest.mark.parametrize(
    ("n_feat", "num_cab", "what"), [(2048, 1, "n_feat 2048 > 192"), (8, 10**9, "num_cab")]
)
def test_a_small_file_declaring_a_huge_network_is_refused_on_reading(
    tmp_path: Path, n_feat: int, num_cab: int, what: str
) -> None:
    """Audit 4.10: an 8 MB file declaring n_feat 2048 reached 2.6 GB before any check."""
    path = tmp_path / "hostile.safetensors"
    save_file(_hostile_state(n_feat, num_cab=num_cab), str(path))
    assert path.stat().st_size < 40 << 20
    with pytest.raises(CheckpointError, match=f"larger than mprnet accepts.*{what}"):
        read_checkpoint(path)


def test_missing_tensors_are_found_before_the_network_is_allocated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shapes are checked on PyTorch's meta device: no real network is built for a file
    that cannot fill it (here: the widest accepted network, from 6 tensors)."""
    import mprnet_cli.model.checkpoint as checkpoint

    built: list[str] = []
    real = checkpoint.MPRNet

    def spy(config: MPRNetConfig) -> MPRNet:
        model = real(config)
        built.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(checkpoint, "MPRNet", spy)
    path = tmp_path / "partial.safetensors"
    save_file(_hostile_state(192, scale=128, num_cab=16), str(path))
    ckpt = read_checkpoint(path)
    assert ckpt.config.n_feat == 192
    with pytest.raises(CheckpointError, match=r"missing .* tensors"):
        build_model(ckpt)
    assert built == ["meta"]
