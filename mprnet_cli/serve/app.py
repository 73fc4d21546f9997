"""The HTTP side of `mprnet serve`: the only module that imports FastAPI, Starlette and uvicorn.

Rules every route keeps:
* Errors are one line of JSON, `{"error": "..."}`, with the CLI's own message for the same
  mistake (an undecodable upload reads like `mprnet derain` on that file). Anything else is
  a bug: logged with its traceback under a short id, answered 500 with that id only.
* `--token`: `POST /v1/{task}` and `/metrics` need `Authorization: Bearer TOKEN` (401
  otherwise). The page, `/docs`, the health checks and `/v1/tasks` stay open.
* Limits, cheapest first: the lane's admission (429 + Retry-After) before the body is read,
  then the upload size (413, counted while reading, not trusting Content-Length), then the
  pixel count (413, from the image header, before decoding pixels).
* A client that goes away while its image waits for the network cancels it; SIGTERM stops
  accepting, lets in-flight requests finish for `drain_seconds` (uvicorn's graceful
  shutdown), then stops the lanes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import PurePath
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from mprnet_cli import __version__
from mprnet_cli.errors import ImageTooLargeError, MprnetError, UsageError
from mprnet_cli.imageio.formats import FORMAT_CHOICES, LOSSY_NAMES
from mprnet_cli.serve.engine import (
    Lane,
    Metrics,
    NotReadyError,
    QueueFullError,
    RequestOptions,
    Restored,
    ServeSettings,
    as_header,
    decode,
    describe,
    encode,
)
from mprnet_cli.tasks import Task, what_tasks_remove

log = logging.getLogger("mprnet.serve")
CLIENT_GONE = 499  # nginx's code for "the client closed the connection": metrics only


class _UploadTooLargeError(Exception):
    pass


def _error(code: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=code, headers=headers)


def _page(name: str) -> str:
    return files("mprnet_cli.serve").joinpath(name).read_text(encoding="utf-8")


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _UploadTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _UploadTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


async def _upload(request: Request, limit: int) -> tuple[bytes, str]:
    """The image and its name: a raw body, or the first file of a multipart form."""
    body = await _read_body(request, limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body, PurePath(request.query_params.get("name") or "upload").name or "upload"
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    try:
        for value in form.values():
            if isinstance(value, UploadFile):
                return await value.read(), PurePath(value.filename or "upload").name
    finally:
        await form.close()
    raise UsageError("the multipart form has no file; send the image as a file field")


async def _disconnected(receive: Callable[[], Awaitable[MutableMapping[str, Any]]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def create_app(lanes: dict[Task, Lane], settings: ServeSettings) -> FastAPI:
    """The ASGI app over started-or-not lanes (started by the lifespan, stopped after it)."""
    metrics = Metrics()
    # --workers: uploads decoded or encoded at once, for all tasks (the networks run on
    # their lanes' threads, one image at a time each).
    workers = anyio.CapacityLimiter(settings.workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for lane in lanes.values():
            lane.start()
        yield
        for lane in lanes.values():
            await run_in_threadpool(lane.stop, settings.drain_seconds)

    app = FastAPI(
        title="mprnet",
        version=__version__,
        summary=f"Remove {what_tasks_remove()} from photos with MPRNet.",
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: ours is self-contained
        redoc_url=None,
        lifespan=lifespan,
    )

    def authorised(request: Request) -> bool:
        if settings.token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        return _internal(exc)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page("page.html"))

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(_page("docs.html"))

    @app.get("/healthz", summary="The process answers.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="200 once every task's network is loaded, else 503.")
    async def readyz() -> JSONResponse:
        state = {
            t.value: "ready" if lane.ready else (lane.error or "loading")
            for t, lane in lanes.items()
        }
        ok = all(lane.ready for lane in lanes.values())
        return JSONResponse({"ready": ok, "tasks": state}, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics.")
    async def prometheus(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "wrong or missing token; send Authorization: Bearer TOKEN")
        return PlainTextResponse(
            metrics.render(lanes), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/v1/tasks", summary="The tasks served, and whether a token is needed.")
    async def tasks() -> dict[str, Any]:
        return {
            "tasks": [t.value for t in lanes],
            "token_required": settings.token is not None,
            "max_upload_bytes": settings.max_upload_bytes,
        }

    image_body = {
        "requestBody": {
            "required": True,
            "description": "The image file: the raw bytes, or a multipart form with one file.",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "image/*": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
            },
        },
        "responses": {
            "200": {
                "description": "The restored file (headers X-Mprnet-Seconds, -Backend, "
                "-Precision, -Tiles, -Device; X-Mprnet-Notes when the format changed "
                "something).",
                "content": {"image/*": {}},
            },
            "400": {"description": 'Not an image, or a bad option: {"error": ...}.'},
            "401": {"description": "Wrong or missing token."},
            "413": {"description": "Upload or pixel count above the server's limits."},
            "429": {"description": "The task's queue is full; see Retry-After."},
            "503": {"description": "The network is loading, or could not be loaded."},
        },
    }

    @app.post("/v1/{task}", summary="Restore one image.", openapi_extra=image_body)
    async def restore(
        task: str,
        request: Request,
        strength: str | None = Query(
            None, description="1 fully restored, 0 the input unchanged (default: the server's)."
        ),
        ensemble: str | None = Query(
            None, description="1, 2 or 8 flipped/rotated passes averaged (default: the server's)."
        ),
        format: str | None = Query(
            None, description=f"{FORMAT_CHOICES}, or same (the input's format)."
        ),
        jpeg_quality: str | None = Query(None, description=f"{LOSSY_NAMES} quality, 1-100."),
        name: str | None = Query(
            None,
            description="The file's name, for messages and the download's name (a raw body; "
            "a multipart file carries its own).",
        ),
    ) -> Response:
        start = time.perf_counter()
        response = await _restore(task, request, strength, ensemble, format, jpeg_quality)
        if task in {t.value for t in lanes}:
            metrics.observe(task, response.status_code, time.perf_counter() - start)
        return response

    async def _restore(
        name: str,
        request: Request,
        strength: str | None,
        ensemble: str | None,
        fmt: str | None,
        jpeg_quality: str | None,
    ) -> Response:
        if not authorised(request):
            return _error(401, "wrong or missing token; send Authorization: Bearer TOKEN")
        lane = next((lane for t, lane in lanes.items() if t.value == name), None)
        if lane is None:
            served = ", ".join(t.value for t in lanes)
            return _error(404, f"unknown task {name!r}: this server restores {served}")
        try:
            options = RequestOptions.parse(strength, ensemble, fmt, jpeg_quality)
            with lane.admission():
                return await _run(lane, request, options)
        except asyncio.CancelledError:
            # Only uvicorn cancels us: SIGTERM's drain deadline passed with this request
            # still running. An answer (if the socket still takes one), not a traceback.
            return _error(503, "the server is shutting down; retry elsewhere or later")
        except QueueFullError as exc:
            return _error(429, str(exc), **{"Retry-After": str(exc.retry_after)})
        except NotReadyError as exc:
            return _error(503, str(exc), **{"Retry-After": "5"})
        except _UploadTooLargeError:
            mb = settings.max_upload_bytes / 1024 / 1024
            return _error(413, f"upload: above the limit of {mb:g} MB; raise --max-upload-mb")
        except ImageTooLargeError as exc:
            return _error(413, str(exc))
        except MprnetError as exc:
            return _error(400, str(exc))
        except StarletteHTTPException as exc:  # a malformed multipart form
            return _error(exc.status_code, f"upload: {exc.detail}")
        except Exception as exc:
            return _internal(exc)

    async def _run(lane: Lane, request: Request, options: RequestOptions) -> Response:
        data, filename = await _upload(request, settings.max_upload_bytes)
        decoded = await anyio.to_thread.run_sync(
            decode, data, filename, settings.max_pixels, limiter=workers
        )
        del data
        future = lane.submit(decoded.rgb, options)
        waiting: asyncio.Future[Any] = asyncio.wrap_future(future)
        gone: asyncio.Future[Any] = asyncio.ensure_future(_disconnected(request.receive))
        try:
            await asyncio.wait([waiting, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not waiting.done():
                future.cancel()  # still queued: the network never sees it
                waiting.cancel()
        if not waiting.done() or waiting.cancelled():
            return Response(status_code=CLIENT_GONE)
        clean, stats = waiting.result()
        stem = PurePath(filename).stem

        def encoded() -> Restored:
            return encode(clean, decoded, stats, options, stem=stem, task=lane.task)

        restored = await anyio.to_thread.run_sync(encoded, limiter=workers)
        headers = describe(stats)
        headers["Content-Disposition"] = f'attachment; filename="{_ascii(restored.filename)}"'
        if restored.notes:
            headers["X-Mprnet-Notes"] = as_header(restored.notes)
        return Response(restored.data, media_type=restored.media_type, headers=headers)

    return app


def _ascii(name: str) -> str:
    text = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return text or "restored"


def _internal(exc: BaseException) -> JSONResponse:
    """A bug: the traceback goes to the log under an id; the client gets the id only."""
    ident = secrets.token_hex(4)
    log.error("mprnet: internal error %s", ident, exc_info=exc)
    return _error(500, f"internal error {ident}; the server log has the details")


def serve(settings: ServeSettings, lanes: dict[Task, Lane]) -> None:
    """Run the server until SIGINT/SIGTERM; in-flight requests get `drain_seconds` to finish."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    config = uvicorn.Config(
        create_app(lanes, settings),
        host=settings.host,
        port=settings.port,
        log_level="warning" if settings.quiet else "info",
        access_log=not settings.quiet,
        timeout_graceful_shutdown=max(1, round(settings.drain_seconds)),
    )
    server = uvicorn.Server(config)
    server.run()
