"""Training MPRNet from clean photos (synthetic degradation) or from paired folders.

The recipe follows the paper: Charbonnier loss on all three stage outputs plus
0.05 x an edge (Laplacian) term, Adam with cosine decay, random crops and
flips. Everything that draws random numbers uses generators saved in the
checkpoint, so a run resumed from `last.pt` continues exactly as if it had
never stopped. Degradation runs on the training device, so a GPU is never
starved by CPU-side image synthesis.
"""

from __future__ import annotations

import io
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from mprnet_cli.degradations.synthesis import degrade
from mprnet_cli.errors import InputError, UsageError
from mprnet_cli.evaluation.evaluate import find_pairs
from mprnet_cli.imageio import list_images, read_image, to_uint8, write_bytes_atomic
from mprnet_cli.model.checkpoint import state_dict_for_saving
from mprnet_cli.model.config import MPRNetConfig
from mprnet_cli.model.network import MPRNet
from mprnet_cli.tasks import Task

EDGE_WEIGHT = 0.05
CHARBONNIER_EPS = 1e-3


@dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a run (saved in checkpoints and exported metadata)."""

    task: Task
    config: MPRNetConfig
    run_dir: Path
    clean_dir: Path | None = None
    input_dir: Path | None = None
    target_dir: Path | None = None
    steps: int = 20_000
    batch: int = 8
    crop: int = 128
    lr: float = 2e-4
    lr_min: float = 1e-6
    warmup: int = 200
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    save_every: int = 500
    max_seconds: float | None = None
    val_images: int = 4
    init: Path | None = None

    def __post_init__(self) -> None:
        if (self.clean_dir is None) == (self.input_dir is None):
            raise UsageError(
                "give either a folder of clean images, or --input and --target folders"
            )
        if (self.input_dir is None) != (self.target_dir is None):
            raise UsageError("--input and --target go together")
        if self.crop % 8 or self.crop < 16:
            raise UsageError("--crop must be a multiple of 8, at least 16")
        if self.steps < 0 or self.batch < 1:
            raise UsageError("--steps and --batch must be positive")
        if self.steps == 0 and not self.max_seconds:
            raise UsageError("--steps 0 (fit the schedule to the time budget) needs --max-minutes")

    def recipe(self) -> dict[str, Any]:
        data = asdict(self)
        data["task"] = self.task.value
        data["config"] = self.config.to_dict()
        for key in ("run_dir", "clean_dir", "input_dir", "target_dir", "init"):
            data[key] = str(data[key]) if data[key] is not None else None
        return data


@dataclass
class TrainState:
    step: int = 0
    total_steps: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


# --------------------------------------------------------------------------- losses


def charbonnier(x: Tensor, y: Tensor, eps: float = CHARBONNIER_EPS) -> Tensor:
    return torch.sqrt((x - y) ** 2 + eps * eps).mean()


def _gauss_kernel(channels: int, device: torch.device) -> Tensor:
    k1 = torch.tensor([0.05, 0.25, 0.4, 0.25, 0.05], device=device)
    return torch.outer(k1, k1).expand(channels, 1, 5, 5).contiguous()


def laplacian(x: Tensor) -> Tensor:
    """One band of a Laplacian pyramid: the detail that blur-down-up loses."""
    kernel = _gauss_kernel(x.shape[1], x.device).to(x.dtype)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.pad(t, (2, 2, 2, 2), mode="replicate"), kernel, groups=t.shape[1])

    filtered = blur(x)
    up = torch.zeros_like(filtered)
    up[:, :, ::2, ::2] = filtered[:, :, ::2, ::2] * 4
    return x - blur(up)


def mprnet_loss(outputs: list[Tensor], target: Tensor) -> Tensor:
    """Charbonnier plus 0.05 x edge loss, summed over the three stage outputs."""
    target_edges = laplacian(target)
    total = outputs[0].new_zeros(())
    for out in outputs:
        total = (
            total
            + charbonnier(out, target)
            + EDGE_WEIGHT * charbonnier(laplacian(out), target_edges)
        )
    return total


def learning_rate(step: int, s: TrainSettings, total: int) -> float:
    """Linear warm-up, then cosine decay from lr to lr_min over `total` steps."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, total - s.warmup)
    return s.lr_min + 0.5 * (s.lr - s.lr_min) * (1 + math.cos(math.pi * min(1.0, progress)))


# --------------------------------------------------------------------------- data


def training_images(folder: Path) -> list[Path]:
    """Every image below `folder` (subfolders included)."""
    files = list_images(folder, recursive=True)
    if not files:
        raise InputError(f"{folder}: no images found")
    return files


def _load_uint8(path: Path) -> Tensor:
    """Upright 8-bit RGB, decoded by the same reader as restoring and evaluation."""
    rgb = to_uint8(read_image(path, max_pixels=None).rgb)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


class CropSampler:
    """Random crops with the 8 flips/rotations, from images held in device memory as uint8."""

    def __init__(
        self, images: list[Tensor], targets: list[Tensor] | None, crop: int, device: torch.device
    ) -> None:
        usable = [i for i, im in enumerate(images) if min(im.shape[1:]) >= crop]
        if not usable:
            raise InputError(f"no training image is at least {crop}x{crop} pixels")
        self.images = [images[i].to(device) for i in usable]
        self.targets = [targets[i].to(device) for i in usable] if targets is not None else None
        self.crop = crop
        # Larger images are sampled more often: every pixel equally likely.
        areas = torch.tensor([float(im.shape[1] * im.shape[2]) for im in self.images])
        self.weights = areas / areas.sum()

    def sample(self, batch: int, gen: torch.Generator) -> tuple[Tensor, Tensor | None]:
        idx = torch.multinomial(self.weights, batch, replacement=True, generator=gen).tolist()
        ys = torch.rand(batch, generator=gen).tolist()
        xs = torch.rand(batch, generator=gen).tolist()
        ops = torch.randint(0, 8, (batch,), generator=gen).tolist()
        clean, degraded = [], []
        c = self.crop
        for i, fy, fx, op in zip(idx, ys, xs, ops, strict=True):
            im = self.images[i]
            y = int(fy * (im.shape[1] - c + 1))
            x = int(fx * (im.shape[2] - c + 1))
            clean.append(_dihedral(im[:, y : y + c, x : x + c], op))
            if self.targets is not None:
                # Paired data: `images` are the degraded inputs, `targets` the clean ones.
                degraded.append(clean[-1])
                clean[-1] = _dihedral(self.targets[i][:, y : y + c, x : x + c], op)
        return _to_float(clean), (_to_float(degraded) if degraded else None)


def _to_float(crops: list[Tensor]) -> Tensor:
    return torch.stack(crops).float().div_(255.0)


def _dihedral(t: Tensor, op: int) -> Tensor:
    if op & 4:
        t = t.transpose(1, 2)
    if op & 1:
        t = t.flip(2)
    if op & 2:
        t = t.flip(1)
    return t


# --------------------------------------------------------------------------- the loop

ProgressFn = Callable[[int, int, float, float], None]  # step, total, loss, images/second


class Trainer:
    def __init__(self, settings: TrainSettings, device: torch.device) -> None:
        self.s = settings
        self.device = device
        torch.manual_seed(settings.seed)
        self.model = MPRNet(settings.config)
        if settings.init is not None:
            self._load_init(settings.init)
        self.model.to(device)
        self.channels_last = device.type == "cuda"  # tensor cores want NHWC
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=settings.lr, betas=(0.9, 0.999), eps=1e-8
        )
        self.state = TrainState()
        self.data_gen = torch.Generator().manual_seed(settings.seed)
        self.noise_gen = torch.Generator(device=device).manual_seed(settings.seed + 1)
        self.use_bf16 = settings.bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.sampler, self.val = self._load_data()

    def _load_data(self) -> tuple[CropSampler, list[tuple[Tensor, Tensor]]]:
        s = self.s
        if s.clean_dir is not None:
            images = [_load_uint8(p) for p in training_images(s.clean_dir)]
            targets = None
        else:
            assert s.input_dir is not None and s.target_dir is not None
            pairs = find_pairs(s.input_dir, s.target_dir)
            images = [_load_uint8(degraded) for _, degraded, _ in pairs]
            targets = [_load_uint8(clean) for _, _, clean in pairs]
        sampler = CropSampler(images, targets, s.crop, self.device)
        # Fixed validation crops, drawn once with their own seed (same every run).
        gen = torch.Generator().manual_seed(10_000 + s.seed)
        dgen = torch.Generator(device=self.device).manual_seed(20_000 + s.seed)
        val: list[tuple[Tensor, Tensor]] = []
        for _ in range(s.val_images):
            clean, deg = sampler.sample(1, gen)
            if deg is None:
                deg = degrade(s.task, clean, dgen)
            val.append((deg, clean))
        return sampler, val

    def _load_init(self, path: Path) -> None:
        """Fine-tuning: start from existing weights of the same network (fresh optimiser)."""
        from mprnet_cli.model.checkpoint import read_checkpoint

        ckpt = read_checkpoint(path)
        if ckpt.config != self.s.config:
            raise UsageError(
                f"--init {path} is a {ckpt.config} network, not {self.s.config}; "
                "pass the matching --width/--num-cab"
            )
        self.model.load_state_dict({k: v.float() for k, v in ckpt.state_dict.items()})

    # -- checkpoints
    def checkpoint_path(self) -> Path:
        return self.s.run_dir / "last.pt"

    def save(self) -> None:
        self.s.run_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.state.step,
            "total_steps": self.state.total_steps,
            "seconds": self.state.seconds,
            "history": json.dumps(self.state.history),
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "recipe": json.dumps(self.s.recipe()),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_bytes_atomic(self.checkpoint_path(), buffer.getvalue())

    def resume(self) -> bool:
        path = self.checkpoint_path()
        if not path.is_file():
            return False
        payload = torch.load(path, map_location="cpu", weights_only=True)
        saved = json.loads(payload["recipe"])
        if saved["config"] != self.s.config.to_dict() or saved["task"] != self.s.task.value:
            raise UsageError(
                f"{path} belongs to a different network or task; use another --out folder"
            )
        self.model.load_state_dict(payload["model"])
        self.opt.load_state_dict(payload["optimizer"])
        self.state = TrainState(
            step=int(payload["step"]),
            total_steps=int(payload["total_steps"]),
            seconds=float(payload["seconds"]),
            history=json.loads(payload["history"]),
        )
        self.data_gen.set_state(payload["data_gen"])
        self.noise_gen.set_state(payload["noise_gen"])
        return True

    # -- evaluation on the fixed validation crops
    @torch.no_grad()
    def validate(self) -> float:
        self.model.eval()
        psnrs = []
        for deg, clean in self.val:
            out = self.model(deg)[0].clamp(0, 1)
            out = torch.round(out * 255) / 255
            mse = torch.mean((out - clean) ** 2).item()
            psnrs.append(10 * math.log10(1.0 / max(mse, 1e-12)))
        self.model.train()
        return float(np.mean(psnrs))

    def step(self) -> float:
        s = self.s
        clean, deg = self.sampler.sample(s.batch, self.data_gen)
        if deg is None:
            with torch.no_grad():
                deg = degrade(s.task, clean, self.noise_gen)
        for group in self.opt.param_groups:
            group["lr"] = learning_rate(self.state.step, s, self.total_steps)
        if self.channels_last:
            deg = deg.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            outputs = self.model(deg)
        loss = mprnet_loss([o.float() for o in outputs], clean)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return float(loss.detach())

    @property
    def total_steps(self) -> int:
        """The schedule's length: --steps, or (with --steps 0) what fits the time budget."""
        if self.state.total_steps:
            return self.state.total_steps
        return self.s.steps or 1_000_000  # auto: provisional until calibrated

    def _calibrate(self, elapsed: float, steps_done: int) -> None:
        """Fit the cosine schedule to --max-minutes once the step time is known."""
        assert self.s.max_seconds is not None
        remaining = self.s.max_seconds - elapsed
        per_step = elapsed / steps_done
        # Validation and checkpoints cost a little: keep 3% in reserve.
        self.state.total_steps = self.state.step + max(1, int(0.97 * remaining / per_step))

    def run(self, progress: ProgressFn | None = None) -> TrainState:
        s = self.s
        self.model.train()
        started = time.perf_counter()
        base_seconds = self.state.seconds
        first_step = self.state.step
        window_start, window_steps = time.perf_counter(), 0
        loss_avg = float("nan")
        if s.steps:
            self.state.total_steps = s.steps
        while self.state.step < self.total_steps:
            loss = self.step()
            loss_avg = loss if math.isnan(loss_avg) else 0.98 * loss_avg + 0.02 * loss
            self.state.step += 1
            window_steps += 1
            now = time.perf_counter()
            self.state.seconds = base_seconds + now - started
            if not self.state.total_steps and self.state.step - first_step == 30:
                self._calibrate(now - started, 30)
            rate = window_steps * s.batch / max(now - window_start, 1e-9)
            if progress is not None:
                progress(self.state.step, self.state.total_steps, loss_avg, rate)
            if now - window_start > 30:
                window_start, window_steps = now, 0
            out_of_time = s.max_seconds is not None and now - started >= s.max_seconds
            last = self.state.step >= self.total_steps
            if self.state.step % s.save_every == 0 or last or out_of_time:
                self.state.history.append(
                    {
                        "step": self.state.step,
                        "loss": loss_avg,
                        "val_psnr": self.validate(),
                        "seconds": round(self.state.seconds, 1),
                    }
                )
                self.save()
            if out_of_time:
                break
        return self.state

    def export(self, path: Path, extra: dict[str, str] | None = None) -> Path:
        """Write `.safetensors` (fp16 storage: half the size, outputs within 1e-3) with metadata."""
        from safetensors.torch import save

        tensors = {k: v.half() for k, v in state_dict_for_saving(self.model.cpu()).items()}
        self.model.to(self.device)
        meta = {
            "format": "mprnet",
            "task": self.s.task.value,
            "config": json.dumps(self.s.config.to_dict()),
            "recipe": json.dumps(self.s.recipe()),
            "steps": str(self.state.step),
            "total_steps": str(self.state.total_steps),
            "train_seconds": f"{self.state.seconds:.0f}",
            "history": json.dumps(self.state.history[-20:]),
            "hardware": _hardware(self.device),
            "torch": torch.__version__,
            **(extra or {}),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, save(tensors, metadata=meta))
        return path


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU x{torch.get_num_threads()} threads"
