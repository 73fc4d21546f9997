"""A minimal local stand-in for the Hugging Face Hub, for download tests.

It serves the endpoints `huggingface_hub` uses to download a file
(`/{repo}/resolve/{rev}/{path}` for models, `/spaces/...` and `/datasets/...`
for the other repo types; HEAD and GET) and to list a repo
(`/api/{models,spaces,datasets}/{repo}/...`), from in-memory dicts, and records
requests so tests can assert that a cached run made none. A repo it does not
hold answers 404 `RepoNotFound`, a missing file 404 `EntryNotFound`, as the
Hub does.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_URL_PREFIX = {"model": "", "space": "spaces/", "dataset": "datasets/"}


def _split_repo(path: str) -> tuple[str, str]:
    """("space", "owner/name") from "spaces/owner/name" (no prefix: a model)."""
    for repo_type, prefix in _URL_PREFIX.items():
        if prefix and path.startswith(prefix):
            return repo_type, path[len(prefix) :]
    return "model", path


class FakeHub:
    def __init__(
        self,
        repo: str | None = None,
        files: dict[str, bytes] | None = None,
        repo_type: str = "model",
    ) -> None:
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        if repo is not None:
            self.serve(repo, files or {}, repo_type)
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
                if "/resolve/" in path:
                    where, _, rest = path.lstrip("/").partition("/resolve/")
                    _rev, _, name = rest.partition("/")
                    files = hub.repos.get(_split_repo(where))
                    if files is None:
                        self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, include_body)
                        return
                    data = files.get(name)
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
                if path.startswith("/api/"):
                    kind, _, rest = path[len("/api/") :].partition("/")
                    repo_type = kind.removesuffix("s")
                    owner, _, tail = rest.partition("/")
                    name, _, extra = tail.partition("/")
                    repo = f"{owner}/{name}"
                    files = hub.repos.get((repo_type, repo))
                    if files is None:
                        self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, include_body)
                        return
                    if extra.startswith("tree/"):
                        listing = [
                            {"type": "file", "path": n, "size": len(d), "oid": "0" * 40}
                            for n, d in files.items()
                        ]
                        body = json.dumps(listing).encode()
                    else:
                        body = json.dumps(
                            {
                                "id": repo,
                                "sha": COMMIT,
                                "siblings": [{"rfilename": n} for n in files],
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

    def serve(self, repo: str, files: dict[str, bytes], repo_type: str = "model") -> FakeHub:
        """Hold (or replace) a repo's files; may be called while running."""
        self.repos[(repo_type, repo)] = files
        return self

    def downloads(self) -> list[str]:
        return [r for r in self.requests if "/resolve/" in r or "/api/" in r]
