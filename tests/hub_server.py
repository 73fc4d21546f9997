"""A minimal local stand-in for the Hugging Face Hub, for download tests.

It serves the endpoints `huggingface_hub` uses to download a file
(`/{repo}/resolve/{rev}/{name}`, HEAD and GET) and to list a repo
(`/api/models/{repo}/...`), from an in-memory dict, and records requests so
tests can assert that a cached run made none.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repo: str, files: dict[str, bytes]) -> None:
        self.repo = repo
        self.files = files
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(
                self, status: int, body: bytes, headers: dict[str, str], include_body: bool
            ) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if include_body:
                    self.wfile.write(body)

            def _handle(self, include_body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                prefix = f"/{hub.repo}/resolve/"
                if path.startswith(prefix):
                    _rev, _, name = path[len(prefix) :].partition("/")
                    data = hub.files.get(name)
                    if data is None:
                        self._send(
                            404,
                            b"",
                            {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT},
                            include_body,
                        )
                        return
                    sha = hashlib.sha256(data).hexdigest()
                    headers = {
                        "ETag": f'"{sha}"',
                        "X-Repo-Commit": COMMIT,
                        "Content-Type": "application/octet-stream",
                    }
                    self._send(200, data, headers, include_body)
                    return
                api = f"/api/models/{hub.repo}"
                if path.startswith(api):
                    if "/tree/" in path:
                        listing = [
                            {"type": "file", "path": n, "size": len(d), "oid": "0" * 40}
                            for n, d in hub.files.items()
                        ]
                        body = json.dumps(listing).encode()
                    else:
                        body = json.dumps(
                            {
                                "id": hub.repo,
                                "sha": COMMIT,
                                "siblings": [{"rfilename": n} for n in hub.files],
                            }
                        ).encode()
                    self._send(200, body, {"Content-Type": "application/json"}, include_body)
                    return
                self._send(404, b"", {}, include_body)

            def do_HEAD(self) -> None:
                self._handle(False)

            def do_GET(self) -> None:
                self._handle(True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def downloads(self) -> list[str]:
        return [r for r in self.requests if "/resolve/" in r or "/api/models/" in r]
