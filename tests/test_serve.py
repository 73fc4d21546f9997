"""`mprnet serve` (mprnet_cli.serve): real HTTP on 127.0.0.1 against uvicorn on a free port.

Most tests run the server in a thread of this process with stand-in networks that wait on
an event, so "queued", "in the network" and "disconnected" are states the test reaches
exactly, never by sleeping. The round trip uses the tiny checkpoint and compares with the
CLI's output byte for byte; SIGTERM is sent to a real `mprnet serve` subprocess.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms
from typer.testing import CliRunner

pytest.importorskip("fastapi", reason="the serve extra: pip install 'mprnet-cli[serve]'")

from mprnet_cli.api import Restorer
from mprnet_cli.cli import app as cli_app
from mprnet_cli.serve.engine import Lane, ServeSettings
from mprnet_cli.settings import RestoreSettings
from mprnet_cli.tasks import Task
from tests.helpers import (
    WAIT,
    Gated,
    eventually,
    free_port,
    gated_lane,
    in_background,
    metric,
    png_bytes,
    request,
    server,
)

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the round trip


def _photo(path: Path) -> None:
    """An RGB PNG with an ICC profile and EXIF: what the faithful-file rules carry over."""
    rng = np.random.default_rng(3)
    arr = (rng.random((48, 56, 3)) * 255).astype(np.uint8)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "mprnet-test-camera"  # Make
    Image.fromarray(arr).save(path, icc_profile=icc, exif=exif.tobytes())


def test_round_trip_equals_the_cli(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "photo.png"
    _photo(src)
    cli_out = tmp_path / "cli.png"
    options = ["--device", "cpu", "--backend", "torch", "--precision", "fp32", "--threads", "1"]
    result = CliRunner().invoke(
        cli_app,
        [
            "derain",
            str(src),
            "-o",
            str(cli_out),
            "-w",
            str(checkpoint),
            "--strength",
            "0.6",
            *options,
        ],
    )
    assert result.exit_code == 0, result.output
    network = RestoreSettings(weights=checkpoint, device="cpu", threads=1)
    lane = Lane(Task.DERAIN, lambda: Restorer(Task.DERAIN, settings=network, quiet=True), 2)
    with server({Task.DERAIN: lane}) as (port, _):
        eventually(lambda: request(port, "GET", "/readyz")[0] == 200, "readiness")
        status, headers, body = request(
            port, "POST", "/v1/derain?strength=0.6", src.read_bytes(), {"Content-Type": "image/png"}
        )
    assert status == 200, body
    # The same decode, network, strength and encoder as the CLI: the very same file.
    assert body == cli_out.read_bytes()
    served = Image.open(io.BytesIO(body))
    assert served.info["icc_profile"] == Image.open(src).info["icc_profile"]
    assert served.getexif()[0x010F] == "mprnet-test-camera"
    assert headers["content-type"] == "image/png"
    assert headers["x-mprnet-backend"] == "torch"
    assert headers["x-mprnet-precision"] == "fp32"
    assert int(headers["x-mprnet-tiles"]) >= 1
    assert float(headers["x-mprnet-seconds"]) > 0
    assert 'filename="upload_derained.png"' in headers["content-disposition"]


def test_multipart_format_and_quality() -> None:
    lane, network = gated_lane()
    network.gate.set()
    with server({Task.DERAIN: lane}) as (port, _):
        eventually(lambda: lane.ready, "the lane")
        boundary = "mprnetboundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + png_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        status, headers, data = request(
            port,
            "POST",
            "/v1/derain?format=jpeg&jpeg_quality=80",
            body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    assert status == 200, data
    assert headers["content-type"] == "image/jpeg"
    assert 'filename="x_derained.jpg"' in headers["content-disposition"]
    assert Image.open(io.BytesIO(data)).format == "JPEG"


# --------------------------------------------------------------------------- limits


def test_full_queue_gets_429_with_retry_after() -> None:
    lane, network = gated_lane(limit=2)
    with server({Task.DERAIN: lane}) as (port, _):
        eventually(lambda: lane.ready, "the lane")
        post = lambda: request(port, "POST", "/v1/derain", png_bytes())  # noqa: E731
        first, out1 = in_background(post)
        second, out2 = in_background(post)
        eventually(lambda: lane.admitted == 2, "two admitted requests")
        status, headers, body = post()
        assert status == 429
        assert int(headers["retry-after"]) >= 1
        assert "queue is full" in json.loads(body)["error"]
        assert body.count(b"\n") == 0
        network.gate.set()
        first.join(WAIT)
        second.join(WAIT)
        assert [out1[0][0], out2[0][0]] == [200, 200]
        assert post()[0] == 200  # room again once they were answered
        assert metric(port, 'mprnet_requests_total{task="derain",code="429"}') == 1


def test_upload_above_the_limit_gets_413() -> None:
    lane, network = gated_lane()
    network.gate.set()
    settings = ServeSettings(port=free_port(), max_upload_bytes=2000)
    with server({Task.DERAIN: lane}, settings) as (port, _):
        eventually(lambda: lane.ready, "the lane")
        data = png_bytes((64, 64))
        assert len(data) > 2000
        status, _, body = request(port, "POST", "/v1/derain", data)
        assert status == 413
        assert "--max-upload-mb" in json.loads(body)["error"]
        assert network.calls == 0


def test_image_above_max_pixels_gets_413_with_the_cli_message(tmp_path: Path) -> None:
    lane, network = gated_lane()
    settings = ServeSettings(port=free_port(), max_pixels=100)
    with server({Task.DERAIN: lane}, settings) as (port, _):
        eventually(lambda: lane.ready, "the lane")
        status, _, body = request(port, "POST", "/v1/derain?name=big.png", png_bytes((20, 20)))
    assert status == 413
    error = json.loads(body)["error"]
    assert error.startswith("big.png: 20x20 is") and "raise --max-pixels" in error
    assert network.calls == 0


def test_undecodable_gets_400_with_the_cli_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoint: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("bad.png").write_bytes(b"this is not a PNG at all")
    result = CliRunner().invoke(cli_app, ["derain", "bad.png", "-w", str(checkpoint)])
    cli_line = next(line for line in result.output.splitlines() if "bad.png:" in line)
    lane, network = gated_lane()
    with server({Task.DERAIN: lane}) as (port, _):
        eventually(lambda: lane.ready, "the lane")
        status, _, body = request(
            port, "POST", "/v1/derain?name=bad.png", b"this is not a PNG at all"
        )
        bad_option = request(port, "POST", "/v1/derain?ensemble=3", png_bytes())
    assert status == 400
    assert cli_line == "mprnet: " + json.loads(body)["error"]
    assert bad_option[0] == 400
    assert json.loads(bad_option[2])["error"] == "--ensemble must be 1, 2 or 8, got '3'"
    assert network.calls == 0


def test_token() -> None:
    lane, network = gated_lane()
    network.gate.set()
    settings = ServeSettings(port=free_port(), token="s3cret")
    with server({Task.DERAIN: lane}, settings) as (port, _):
        eventually(lambda: lane.ready, "the lane")
        assert request(port, "POST", "/v1/derain", png_bytes())[0] == 401
        wrong = request(port, "POST", "/v1/derain", png_bytes(), {"Authorization": "Bearer nope"})
        assert wrong[0] == 401 and "token" in json.loads(wrong[2])["error"]
        assert request(port, "GET", "/metrics")[0] == 401
        good = {"Authorization": "Bearer s3cret"}
        assert request(port, "POST", "/v1/derain", png_bytes(), good)[0] == 200
        assert request(port, "GET", "/healthz")[0] == 200  # health checks stay open
        assert json.loads(request(port, "GET", "/v1/tasks")[2])["token_required"] is True
    assert network.calls == 1


def test_off_loopback_without_token_warns() -> None:
    assert ServeSettings(host="0.0.0.0").warnings()
    assert ServeSettings(host="::").warnings()
    assert not ServeSettings(host="0.0.0.0", token="t").warnings()
    assert not ServeSettings(host="127.0.0.1").warnings()
    assert not ServeSettings(host="::1").warnings()
    assert not ServeSettings(host="localhost").warnings()


def test_internal_error_is_a_500_with_an_id_and_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lane, network = gated_lane(fail=True)
    network.gate.set()
    with server({Task.DERAIN: lane}) as (port, _):
        eventually(lambda: lane.ready, "the lane")
        with caplog.at_level("ERROR", logger="mprnet.serve"):
            status, _, body = request(port, "POST", "/v1/derain", png_bytes())
    assert status == 500
    error = json.loads(body)["error"]
    assert "Traceback" not in error and "boom" not in error
    ident = error.split()[2].rstrip(";")
    logged = [r for r in caplog.records if ident in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is in the log


def test_health_readiness_docs_and_metrics() -> None:
    lane, network = gated_lane()
    release = threading.Event()

    def slow_load() -> Gated:
        assert release.wait(WAIT)
        return network

    lane = Lane(Task.DERAIN, slow_load, 2)
    with server({Task.DERAIN: lane}) as (port, _):
        assert request(port, "GET", "/healthz")[0] == 200
        status, _, body = request(port, "GET", "/readyz")
        assert status == 503 and json.loads(body)["tasks"]["derain"] == "loading"
        assert request(port, "POST", "/v1/derain", png_bytes())[0] == 503
        release.set()
        eventually(lambda: request(port, "GET", "/readyz")[0] == 200, "readiness")
        page = request(port, "GET", "/")
        docs = request(port, "GET", "/docs")
        spec = json.loads(request(port, "GET", "/openapi.json")[2])
        text = request(port, "GET", "/metrics")[2].decode()
    assert page[0] == 200 and b"<script" in page[2]
    for html in (page[2], docs[2]):  # self-contained: nothing fetched from elsewhere
        assert b"http://" not in html.replace(b"http://127.0.0.1", b"") and b"https://" not in html
    assert "/v1/{task}" in spec["paths"]
    params = {p["name"] for p in spec["paths"]["/v1/{task}"]["post"]["parameters"]}
    assert {"strength", "ensemble", "format", "jpeg_quality"} <= params
    assert 'mprnet_queue_depth{task="derain"} 0' in text
    assert 'mprnet_ready{task="derain"} 1' in text
    assert "# TYPE mprnet_request_seconds histogram" in text


# --------------------------------------------------------------------------- disconnects


def test_a_client_that_disconnects_cancels_its_queued_work() -> None:
    lane, network = gated_lane(limit=4)
    with server({Task.DERAIN: lane}) as (port, _):
        eventually(lambda: lane.ready, "the lane")
        first, out = in_background(lambda: request(port, "POST", "/v1/derain", png_bytes()))
        assert network.entered.wait(WAIT)  # the first request holds the network
        # The second one queues behind it, then its client goes away.
        data = png_bytes(seed=1)
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        sock.sendall(
            b"POST /v1/derain HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(len(data)).encode()
            + b"\r\n\r\n"
            + data
        )
        eventually(lambda: lane.waiting == 1, "the second request to queue")
        sock.close()
        eventually(
            lambda: metric(port, 'mprnet_requests_total{task="derain",code="499"}') == 1,
            "the server to notice the disconnect",
        )
        network.gate.set()
        first.join(WAIT)
        assert out[0][0] == 200
        assert request(port, "POST", "/v1/derain", png_bytes())[0] == 200
    # First, then the third: the cancelled one never reached the network.
    assert network.calls == 2


# --------------------------------------------------------------------------- SIGTERM

_GATED_SERVE = """
import sys, time
from pathlib import Path
from mprnet_cli.api import Restorer

started, gate = Path(sys.argv[1]), Path(sys.argv[2])
original = Restorer.restore_rgb

def gated(self, rgb, **kw):
    started.touch()
    deadline = time.monotonic() + 120
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return original(self, rgb, **kw)

Restorer.restore_rgb = gated
sys.argv = ["mprnet", "serve", *sys.argv[3:]]
from mprnet_cli.__main__ import main
main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("drain", [30, 1])
def test_sigterm_drains_in_flight_requests(checkpoint: Path, tmp_path: Path, drain: int) -> None:
    """SIGTERM: no new connections, the request in the network is answered (30 s deadline),
    or answered 503 once the deadline passes (1 s); the process exits 0 either way."""
    port = free_port()
    started, gate = tmp_path / "started", tmp_path / "gate"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _GATED_SERVE,
            str(started),
            str(gate),
            "--port",
            str(port),
            "--task",
            "derain",
            "-w",
            f"derain={checkpoint}",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--drain-seconds",
            str(drain),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def ready() -> bool:
            try:
                return request(port, "GET", "/readyz")[0] == 200
            except OSError:
                assert proc.poll() is None, proc.communicate()
                return False

        eventually(ready, "the server to load its network")
        thread, out = in_background(lambda: _post_or_error(port))
        eventually(started.exists, "the request to reach the network")
        proc.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                request(port, "GET", "/healthz")
            except OSError:
                return True
            return False

        eventually(refused, "the server to stop accepting")
        if drain > 1:
            gate.touch()
        thread.join(WAIT)
        code = proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 0, stderr
    assert "mprnet: stopped" in stderr
    assert "Traceback" not in stderr, stderr
    if drain > 1:
        status, _headers, body = out[0]
        assert status == 200 and Image.open(io.BytesIO(body)).size == (40, 32)
    else:
        # Cut off at the deadline, not waited for: answered 503 rather than dropped.
        status, _headers, body = out[0]
        assert status == 503 and "shutting down" in json.loads(body)["error"]


def _post_or_error(port: int) -> tuple[int, dict[str, str], bytes] | OSError:
    try:
        return request(port, "POST", "/v1/derain", png_bytes())
    except OSError as exc:
        return exc


def test_web_stack_only_imported_by_serve() -> None:
    code = (
        "import sys, mprnet_cli.cli.app, mprnet_cli.serve.engine; "
        "bad = [m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )


def test_a_malformed_multipart_form_is_a_400() -> None:
    lane, network = gated_lane()
    with server({Task.DERAIN: lane}) as (port, _):
        eventually(lambda: lane.ready, "the lane")
        boundary = "b"
        part = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="f{{}}"; filename="x.png"\r\n\r\n'
            "data\r\n"
        )
        body = (part.format(1) + part.format(2) + f"--{boundary}--\r\n").encode()  # two files
        status, _, data = request(
            port,
            "POST",
            "/v1/derain",
            body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        no_file = request(
            port,
            "POST",
            "/v1/derain",
            f'--{boundary}\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--{boundary}--\r\n'.encode(),
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    assert status == 400 and json.loads(data)["error"].startswith("upload: ")
    assert no_file[0] == 400 and "no file" in json.loads(no_file[2])["error"]
    assert network.calls == 0


def test_cli_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    bad = runner.invoke(cli_app, ["serve", "--weights", "derain"])
    assert bad.exit_code == 2 and "TASK=FILE" in bad.output
    unserved = runner.invoke(cli_app, ["serve", "--task", "derain", "-w", "denoise=x.pth"])
    assert unserved.exit_code == 2 and "denoise is not served" in unserved.output
    unknown = runner.invoke(cli_app, ["serve", "--task", "derain,unblur"])
    assert unknown.exit_code == 2 and "unknown task 'unblur'" in unknown.output
    # Without the serve extra: one line saying what to install.
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.delitem(sys.modules, "mprnet_cli.serve.app")
    missing = runner.invoke(cli_app, ["serve"])
    assert missing.exit_code == 1
    assert "pip install 'mprnet-cli[serve]'" in missing.output
