"""Helpers several test modules share: generated images, CLI runs, a fake Hub's registry.

Here, not in one test module that others import: importing a test module runs its
module-level set-up and makes pytest's collection order matter.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageCms
from typer.testing import CliRunner

from mprnet_cli import imageio as mio
from mprnet_cli.cli import app
from mprnet_cli.imageio import DecodedImage, ImageInfo, OutputFormat
from mprnet_cli.inference.pipeline import RunStats
from mprnet_cli.model.config import MPRNetConfig
from mprnet_cli.serve.engine import Lane, ServeSettings
from mprnet_cli.tasks import Task
from tests.conftest import REPO, TINY_CONFIG, tiny_model

# --------------------------------------------------------------------------- images and runs

RNG = np.random.default_rng(7)
FAST = ["--tile", "0", "--threads", "1"]


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def camera_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0110] = "EOS R5"  # Model
    exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"  # DateTimeOriginal
    return exif.tobytes()


def rand(h: int, w: int, c: int, dtype: Any = np.uint8) -> np.ndarray[Any, Any]:
    top = 256 if dtype == np.uint8 else 65536
    shape = (h, w) if c == 1 else (h, w, c)
    return RNG.integers(0, top, shape, dtype=dtype)


def save_png(path: Path, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rand(size, size, 3)).save(path)


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.pop("MPRNET_DEBUG", None)
    out["HF_HUB_OFFLINE"] = "1"
    out["NO_COLOR"] = "1"
    return out


def mprnet(*args: str | Path, cwd: Path, stdin: bytes | None = None, **kw: Any) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "mprnet_cli", *map(str, args)],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        env=kw.pop("env", env()),
        timeout=120,
        check=False,
        **kw,
    )


def temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def make_tree(root: Path) -> None:
    """One file per kind the issue lists, plus a corrupt file, a bomb and odd names."""
    root.mkdir()
    icc, s = srgb_icc(), 24
    photo = Image.fromarray(rand(24, 32, 3))  # 32 wide, 24 high, stored rotated (6)
    photo.save(root / "photo.jpg", quality=95, icc_profile=icc, exif=camera_exif(6))
    cv2.imwrite(str(root / "rgb16.png"), rand(s, s, 3, np.uint16))
    cv2.imwrite(str(root / "rgba16.png"), rand(s, s, 4, np.uint16))
    Image.fromarray(rand(s, s, 4)).save(root / "rgba.png")
    Image.fromarray(rand(s, s, 1)).save(root / "gray.png")
    Image.fromarray(rand(s, s, 1, np.uint16)).save(root / "gray16.png")
    Image.fromarray(rand(s, s, 3)).quantize(16).save(root / "palette.png")
    Image.fromarray(rand(s, s, 3)).save(root / "scan.tif", icc_profile=icc)
    cv2.imwrite(str(root / "deep.tif"), rand(s, s, 3, np.uint16))
    Image.frombytes("CMYK", (s, s), rand(s, s, 4).tobytes()).save(root / "print.jpg", quality=95)
    Image.fromarray(rand(s, s, 3)).save(root / "old.bmp")
    Image.fromarray(rand(s, s, 3)).save(root / "web.webp", quality=90)
    (root / "notes.txt").write_text("not an image: left alone")
    sub = root / "sub dir"
    sub.mkdir()
    Image.fromarray(rand(s, s, 3)).save(sub / "café ☕.png")
    data = (root / "photo.jpg").read_bytes()
    # Cut halfway through the compressed pixels, never inside the headers: the file must
    # read as a truncated JPEG whatever size the shared random generator's pixels compress to.
    pixels = data.index(b"\xff\xda")
    (sub / "broken.jpg").write_bytes(data[: pixels + (len(data) - pixels) // 2])
    (sub / "bomb.png").write_bytes(png_claiming(40000, 40000))  # 1600 MP in 100 bytes


def png_claiming(width: int, height: int) -> bytes:
    """A decompression bomb's header: a PNG that says it is huge (the pixels never come)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# A shell's background job inherits SIGINT ignored, and Python then keeps ignoring it:
# the child restores the handler a terminal's Ctrl-C would find, then runs mprnet.
AS_FROM_A_TERMINAL = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('mprnet_cli', run_name='__main__')"
)


runner = CliRunner()


def invoke(*args: str | Path, cwd: Path | None = None, **kw: Any) -> Any:
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return runner.invoke(app, [str(a) for a in args], **kw)
    finally:
        os.chdir(old)


# --------------------------------------------------------------------------- imageio
# Pixels, files and metadata the tests/test_imageio_*.py modules build independently of
# the code under test.

#: The generator of the imageio tests' pixels (seeded: a failure reproduces).
IMAGE_RNG = np.random.default_rng(1234)


MAKE, MODEL, TAKEN = "Canon", "EOS R5", "2024:05:06 07:08:09"


ALL_FORMATS = [OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.WEBP, OutputFormat.TIFF]


def make_exif(orientation: int | None = None, **extra: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = MAKE
    exif[0x0110] = MODEL
    if orientation is not None:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = TAKEN
    for key, value in extra.items():
        sub[int(key.removeprefix("tag_"), 16)] = value
    return exif.tobytes()


def rand8(h: int, w: int, c: int = 3) -> npt.NDArray[np.uint8]:
    shape = (h, w) if c == 1 else (h, w, c)
    return IMAGE_RNG.integers(0, 256, shape, dtype=np.uint8)


def rand16(h: int, w: int, c: int = 3) -> npt.NDArray[np.uint16]:
    shape = (h, w) if c == 1 else (h, w, c)
    return IMAGE_RNG.integers(0, 65536, shape, dtype=np.uint16)


def pil_bytes(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def cv2_bytes(rgb: npt.NDArray[Any], ext: str) -> bytes:
    """16-bit RGB(A) file via OpenCV (RGB order in, BGR on disk as OpenCV expects)."""
    order = [2, 1, 0, 3][: rgb.shape[2]]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., order]))
    assert ok
    return bytes(buf.tobytes())


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png16(arr: npt.NDArray[np.uint16], *, exif: bytes | None = None) -> bytes:
    """Minimal 16-bit PNG (filter 0), independent of the code under test."""
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    rows = np.ascontiguousarray(arr, dtype=">u2").view(np.uint8).reshape(h, -1)
    data = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    extra = chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")) if exif else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + extra
        + chunk(b"IDAT", zlib.compress(data))
        + chunk(b"IEND", b"")
    )


def as_u8(d: DecodedImage) -> npt.NDArray[np.uint8]:
    return mio.to_uint8(d.rgb)


def as_u16(d: DecodedImage) -> npt.NDArray[np.uint16]:
    return mio.to_uint16(d.rgb)


def info_for(**kw: Any) -> ImageInfo:
    base: dict[str, Any] = dict(
        format="PNG",
        mode="RGB",
        bit_depth=8,
        grayscale=False,
        has_alpha=False,
        icc_profile=None,
        exif=None,
        dpi=None,
    )
    base.update(kw)
    return ImageInfo(**base)


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------- weights

REPO_ID = "deepinv/MPRNet"
SPACE_ID = "akhaliq/MPRNet"
SPACE_PATH = "Deraining/pretrained_models/model_deraining.pth"
MODEL_SOURCE = {"repo": REPO_ID, "repo_type": "model", "path": "model_deraining.pth"}
SPACE_SOURCE = {"repo": SPACE_ID, "repo_type": "space", "path": SPACE_PATH}
# Three distinct tiny networks stand in for the three published ones.
TEST_CONFIGS = {
    "derain": TINY_CONFIG,
    "deblur": MPRNetConfig(n_feat=12, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1),
    "denoise": MPRNetConfig(n_feat=8, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=1),
}
BUNDLED_NOTE = "they remove some rain (test figure)"


def checkpoint_bytes(task: str = "derain") -> bytes:
    buf = io.BytesIO()
    model = tiny_model(config=TEST_CONFIGS[task])
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 1, "state_dict": state}, buf)
    return buf.getvalue()


def write_registry(
    folder: Path,
    *,
    sources: list[dict[str, Any]] | None = None,
    bundled: str | None = None,
) -> Path:
    """A registry like the shipped one, with tiny networks and the derain sources given."""
    data = json.loads((REPO / "weights" / "registry.json").read_text())
    for task, config in TEST_CONFIGS.items():
        data["published"][task]["config"] = config.to_dict()
    data["published"]["derain"]["sources"] = sources or [MODEL_SOURCE, SPACE_SOURCE]
    data["bundled"] = {}
    if bundled is not None:
        data["bundled"]["derain"] = {
            "file": bundled,
            "sha256": hashlib.sha256((folder / bundled).read_bytes()).hexdigest(),
            "config": TINY_CONFIG.to_dict(),
            "license": "mprnet-academic",
            "note": BUNDLED_NOTE,
        }
    path = folder / "registry.json"
    path.write_text(json.dumps(data))
    return path


def hub_env(tmp_path: Path, registry_file: Path, endpoint: str | None) -> dict[str, str]:
    env = {
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
        "MPRNET_CACHE": str(tmp_path / "mprnet-cache"),
        "MPRNET_REGISTRY": str(registry_file),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_ETAG_TIMEOUT": "2",
        "HF_HUB_DOWNLOAD_TIMEOUT": "5",
    }
    # A closed local port stands in for "no network" when the server is gone.
    env["HF_ENDPOINT"] = endpoint or "http://127.0.0.1:9"
    return env


# --------------------------------------------------------------------------- mprnet serve
# (test_serve and test_serve_page; the web stack is imported only when a server starts)

WAIT = 60.0  # seconds: the bound of every wait (a loaded 2-core machine), never a sleep


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll `check` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Gated:
    """A stand-in network: each call blocks until `gate` is set, and is counted."""

    def __init__(self, fail: bool = False) -> None:
        self.gate = threading.Event()
        self.calls = 0
        self.entered = threading.Event()
        self.fail = fail

    def restore_rgb(self, rgb: np.ndarray, **kw: Any) -> tuple[np.ndarray, RunStats]:
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(WAIT)
        if self.fail:
            raise RuntimeError("boom in the network")
        return 1.0 - rgb, RunStats(tiles=1, seconds=0.001)


@contextmanager
def server(
    lanes: dict[Task, Lane], settings: ServeSettings | None = None
) -> Iterator[tuple[int, ServeSettings]]:
    import uvicorn  # the serve extra: only the serve tests call this

    from mprnet_cli.serve.app import create_app

    settings = settings or ServeSettings(port=free_port())
    config = uvicorn.Config(
        create_app(lanes, settings), host="127.0.0.1", port=settings.port, log_level="warning"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        eventually(lambda: srv.started, "the server to start")
        yield settings.port, settings
    finally:
        for lane in lanes.values():
            gate = getattr(lane.network, "gate", None)
            if gate is not None:
                gate.set()
        srv.should_exit = True
        thread.join(WAIT)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def png_bytes(size: tuple[int, int] = (40, 32), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def gated_lane(limit: int = 4, fail: bool = False) -> tuple[Lane, Gated]:
    network = Gated(fail=fail)
    return Lane(Task.DERAIN, lambda: network, limit), network


def metric(port: int, series: str) -> float | None:
    """The value of one series (`name{labels}`) on /metrics, None when absent."""
    status, _, body = request(port, "GET", "/metrics")
    assert status == 200
    values = dict(line.rsplit(" ", 1) for line in body.decode().splitlines() if line[:1] != "#")
    return float(values[series]) if series in values else None


def in_background(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


class Exploit:
    """Pickles as a call to `os.system("touch PWNED")`: what a hostile checkpoint holds."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))
