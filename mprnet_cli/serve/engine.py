"""The service's work without the web stack: networks, queues, requests, metrics.

* One `Lane` per task: its network is loaded once, in the lane's own thread (so `/healthz`
  answers while OpenVINO compiles), and restores one image at a time from a queue. A lane
  admits at most `limit` requests (decoding, queued, restoring or encoding); the next gets
  `QueueFullError` (HTTP 429 with Retry-After), so memory is bounded by `limit` images per task
  whatever the load. A queued request whose client went away is cancelled before the
  network sees it (`Future.cancel`).
* Requests are decoded and encoded with the CLI's own functions (`read_image`,
  `encode_image`), so a response is the file `mprnet <task> -o` would have written.
* `Metrics` renders the Prometheus text format by hand: three metric families do not
  justify a client library.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from mprnet_cli.choices import Ensemble, OutputFormat
from mprnet_cli.errors import MprnetError, UsageError
from mprnet_cli.imageio import (
    DEFAULT_JPEG_QUALITY,
    DecodedImage,
    encode_image,
    extension_for,
    output_notes,
    read_image,
    resolve_format,
)
from mprnet_cli.imageio.formats import parse_format
from mprnet_cli.inference.pipeline import RunStats
from mprnet_cli.inference.quality import check_ensemble, check_strength
from mprnet_cli.tasks import Task

log = logging.getLogger("mprnet.serve")

LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class NetworkLike(Protocol):
    """What a lane needs of `mprnet_cli.api.Restorer` (tests pass stand-ins)."""

    def restore_rgb(
        self,
        rgb: npt.NDArray[np.float32],
        *,
        strength: float | None = ...,
        ensemble: Ensemble | None = ...,
    ) -> tuple[npt.NDArray[np.float32], RunStats]: ...


@dataclass(frozen=True)
class RequestOptions:
    """A request's query options, checked with the CLI's own rules and messages."""

    strength: float | None = None  # None: the server's --strength
    ensemble: Ensemble | None = None  # None: the server's --ensemble
    fmt: OutputFormat = OutputFormat.SAME
    jpeg_quality: int = DEFAULT_JPEG_QUALITY

    @classmethod
    def parse(
        cls,
        strength: str | None = None,
        ensemble: str | None = None,
        fmt: str | None = None,
        jpeg_quality: str | None = None,
    ) -> RequestOptions:
        """Query strings -> options; `UsageError` (HTTP 400) naming the option otherwise."""
        value = None
        if strength is not None:
            try:
                value = check_strength(float(strength))
            except ValueError:
                raise UsageError(
                    f"--strength must be a number in [0, 1], got {strength!r}"
                ) from None
        mode = check_ensemble(ensemble) if ensemble is not None else None
        out = OutputFormat.SAME
        if fmt is not None:
            try:
                out = parse_format(fmt)
            except UsageError as exc:
                raise UsageError(f"--format: {exc}") from None
        quality = DEFAULT_JPEG_QUALITY
        if jpeg_quality is not None:
            try:
                quality = int(jpeg_quality)
            except ValueError:
                quality = 0
            if not 1 <= quality <= 100:
                raise UsageError(f"--jpeg-quality must be between 1 and 100, got {jpeg_quality!r}")
        return cls(value, mode, out, quality)


@dataclass(frozen=True)
class Restored:
    """One response: the encoded file and what the headers say about it."""

    data: bytes
    media_type: str
    filename: str
    stats: RunStats
    notes: tuple[str, ...]


class QueueFullError(Exception):
    """The lane admitted its limit; `retry_after` is a guess in whole seconds."""

    def __init__(self, task: Task, retry_after: int) -> None:
        super().__init__(f"{task.value}: the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class NotReadyError(Exception):
    """The lane's network is still loading, or could not be loaded (`error`)."""

    def __init__(self, task: Task, error: str | None) -> None:
        why = error or "its network is still loading; retry shortly"
        super().__init__(f"{task.value}: {why}")


@dataclass
class _Work:
    rgb: npt.NDArray[np.float32]
    options: RequestOptions
    future: Future[tuple[npt.NDArray[np.float32], RunStats]] = field(default_factory=Future)


class Lane:
    """One task's network, its thread and its bounded queue (see the module docstring)."""

    def __init__(self, task: Task, load: Callable[[], NetworkLike], limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.task = task
        self.limit = limit
        self._load = load
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._admitted = 0
        self.waiting = 0  # submitted, not yet taken by the network
        self.error: str | None = None
        self.loaded = threading.Event()  # set when loading ended, well or not
        self.network: NetworkLike | None = None
        self._seconds = 1.0  # recent seconds per image, for Retry-After
        self._thread = threading.Thread(
            target=self._serve, name=f"mprnet-{task.value}", daemon=True
        )

    @property
    def ready(self) -> bool:
        return self.network is not None

    @property
    def admitted(self) -> int:
        return self._admitted

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Cancel what is queued, let the image in progress finish, end the thread."""
        while True:
            try:
                work = self._queue.get_nowait()
            except queue.Empty:
                break
            if work is not None:
                work.future.cancel()
                with self._lock:
                    self.waiting -= 1
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one of the lane's `limit` places for a request's whole life, or `QueueFullError`."""
        if not self.ready:
            raise NotReadyError(self.task, self.error)
        with self._lock:
            if self._admitted >= self.limit:
                retry = max(1, math.ceil(self._admitted * self._seconds))
                raise QueueFullError(self.task, retry)
            self._admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= 1

    def submit(
        self, rgb: npt.NDArray[np.float32], options: RequestOptions
    ) -> Future[tuple[npt.NDArray[np.float32], RunStats]]:
        """Queue an image for the network; cancel the future to withdraw it while queued."""
        work = _Work(rgb, options)
        with self._lock:
            self.waiting += 1
        self._queue.put(work)
        return work.future

    def _serve(self) -> None:
        try:
            self.network = self._load()
        except MprnetError as exc:
            self.error = str(exc)
            log.error("mprnet: error: %s: %s", self.task.value, exc)
        except Exception as exc:  # a bug: logged in full, the lane stays not ready
            self.error = f"could not load the network ({type(exc).__name__})"
            log.exception("mprnet: %s: loading the network failed", self.task.value)
        finally:
            self.loaded.set()
        while True:
            work = self._queue.get()
            if work is None:
                return
            with self._lock:
                self.waiting -= 1
            if not work.future.set_running_or_notify_cancel():
                continue  # its client went away while it waited
            if self.network is None:
                work.future.set_exception(NotReadyError(self.task, self.error))
                continue
            start = time.perf_counter()
            try:
                result = self.network.restore_rgb(
                    work.rgb, strength=work.options.strength, ensemble=work.options.ensemble
                )
            except BaseException as exc:
                work.future.set_exception(exc)
                continue
            finally:
                del work.rgb
            self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - start)
            work.future.set_result(result)


def decode(data: bytes, name: str, max_pixels: int | None) -> DecodedImage:
    """The upload as the CLI reads a file (`InputError`, `ImageTooLargeError` for bombs)."""
    return read_image(data, name=name, max_pixels=max_pixels)


def encode(
    clean: npt.NDArray[np.float32],
    decoded: DecodedImage,
    stats: RunStats,
    options: RequestOptions,
    *,
    stem: str,
    task: Task,
) -> Restored:
    """The restored image as the file `mprnet <task> --format ... -o` writes."""
    fmt = resolve_format(options.fmt, decoded.info)
    data = encode_image(
        clean, decoded.info, fmt, alpha=decoded.alpha, jpeg_quality=options.jpeg_quality
    )
    notes = (
        *decoded.info.notes,
        *output_notes(decoded.info, fmt, has_alpha=decoded.alpha is not None),
        *stats.notes,
    )
    name = f"{stem}_{task.past_tense}{extension_for(fmt)}"
    return Restored(data, fmt.spec.media_type, name, stats, tuple(dict.fromkeys(notes)))


class Metrics:
    """Requests, latencies and queue depth per task, in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = {}
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, task: str, code: int, seconds: float) -> None:
        with self._lock:
            self._requests[task, code] = self._requests.get((task, code), 0) + 1
            counts = self._buckets.setdefault(task, [0] * (len(LATENCY_BUCKETS) + 1))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self._sums[task] = self._sums.get(task, 0.0) + seconds

    def render(self, lanes: dict[Task, Lane]) -> str:
        lines = [
            "# HELP mprnet_requests_total Restore requests answered, by task and HTTP status.",
            "# TYPE mprnet_requests_total counter",
        ]
        with self._lock:
            for (task, code), n in sorted(self._requests.items()):
                lines.append(f'mprnet_requests_total{{task="{task}",code="{code}"}} {n}')
            lines += [
                "# HELP mprnet_request_seconds Time from request to response, by task.",
                "# TYPE mprnet_request_seconds histogram",
            ]
            for task, counts in sorted(self._buckets.items()):
                for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), counts, strict=True):
                    lines.append(f'mprnet_request_seconds_bucket{{task="{task}",le="{bound}"}} {n}')
                lines.append(f'mprnet_request_seconds_sum{{task="{task}"}} {self._sums[task]:.6f}')
                lines.append(f'mprnet_request_seconds_count{{task="{task}"}} {counts[-1]}')
        lines += [
            "# HELP mprnet_queue_depth Requests admitted and not yet answered, by task.",
            "# TYPE mprnet_queue_depth gauge",
            *(
                f'mprnet_queue_depth{{task="{t.value}"}} {lane.admitted}'
                for t, lane in lanes.items()
            ),
            "# HELP mprnet_queue_waiting Images waiting for the network, by task.",
            "# TYPE mprnet_queue_waiting gauge",
            *(
                f'mprnet_queue_waiting{{task="{t.value}"}} {lane.waiting}'
                for t, lane in lanes.items()
            ),
            "# HELP mprnet_ready 1 once the task's network is loaded.",
            "# TYPE mprnet_ready gauge",
            *(f'mprnet_ready{{task="{t.value}"}} {int(lane.ready)}' for t, lane in lanes.items()),
        ]
        return "\n".join(lines) + "\n"


def describe(stats: RunStats) -> dict[str, str]:
    """The response headers that say how the image was restored."""
    return {
        "X-Mprnet-Seconds": f"{stats.seconds:.4f}",
        "X-Mprnet-Device": stats.device,
        "X-Mprnet-Backend": stats.backend,
        "X-Mprnet-Precision": stats.precision,
        "X-Mprnet-Tiles": str(stats.tiles),
    }


def as_header(notes: tuple[str, ...]) -> str:
    """Notes (lossy format changes, decode warnings) as one ASCII header value."""
    text = "; ".join(" ".join(n.split()) for n in notes)
    return text.encode("ascii", "backslashreplace").decode("ascii")


@dataclass(frozen=True)
class ServeSettings:
    """Everything `mprnet serve` takes besides the network settings (`RestoreSettings`)."""

    host: str = "127.0.0.1"
    port: int = 8000
    tasks: tuple[Task, ...] = tuple(Task)
    weights: tuple[tuple[Task, str], ...] = ()  # --weights TASK=FILE
    max_queue: int = 8  # per task: requests admitted at once; the next gets 429
    workers: int = 2  # uploads decoded or encoded at once
    max_pixels: int | None = 16384 * 16384
    max_upload_bytes: int = 100 * 1024 * 1024
    token: str | None = None
    drain_seconds: float = 30.0  # SIGTERM: how long in-flight requests may still take
    quiet: bool = False

    def weights_for(self, task: Task) -> str | None:
        return next((path for t, path in self.weights if t is task), None)

    def warnings(self) -> list[str]:
        """What to say before serving: an open port without a token."""
        import ipaddress

        host = self.host.strip("[]")
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback or self.token:
            return []
        return [
            f"listening on {self.host} without --token: anyone who can reach port "
            f"{self.port} can use this machine; add --token or bind 127.0.0.1"
        ]
