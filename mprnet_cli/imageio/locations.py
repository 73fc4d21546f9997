"""Where inputs and outputs live: local paths, or objects named by URI in an object store.

The one seam between the job planner and object stores. `location(arg)` turns an INPUT or
-o into a `Path` or a `StorePath` (`s3://`, `gs://`, `abfs://`, ... : whatever
`pyarrow.fs.FileSystem.from_uri` understands). A `StorePath` offers the part of `Path`'s
API that `mprnet_cli.jobs` uses (name, stem, suffix, parent, `/`, `relative_to`,
`exists`, `is_dir`, `is_file`), so the planner's naming, mirroring and skip rules apply to
both unchanged, plus the few store calls it and the Ray runner need: list a prefix, read
an object, and write one in a single request (object stores have no rename, so no
temporary objects: an object appears whole or not at all).

Credentials, regions and endpoints come from the store's usual environment (for S3:
`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, ...), never from flags. pyarrow is
imported only when a URI is used, so the local engine never loads it.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING, Final, Literal

from mprnet_cli.errors import InputError, OutputError, UsageError

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = ["StorePath", "Where", "engine_paths", "is_uri", "location"]

_URI: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB_CHARS: Final = frozenset("*?[")

Kind = Literal["dir", "file", "other"]


def is_uri(arg: str) -> bool:
    """`scheme://...` (a Windows path like C:\\x or a plain name is not)."""
    return _URI.match(arg) is not None


def _scheme(arg: str) -> str:
    return arg.split(":", 1)[0].lower()


def _file_path(arg: str) -> str:
    """A `file://` URI as a local path (percent-decoded; a trailing slash kept)."""
    parsed = urllib.parse.urlsplit(arg)
    if parsed.netloc not in ("", "localhost"):
        raise UsageError(f"{arg}: file:// URIs must name this machine (file:///path)")
    path = urllib.request.url2pathname(parsed.path)
    return path + ("/" if arg.endswith("/") and not path.endswith("/") else "")


def engine_paths(
    inputs: Sequence[str], output: str | None, *, ray: bool
) -> tuple[list[str], str | None]:
    """INPUT and -o as the planner takes them: `file://` URIs become paths; object-store
    URIs stay URIs for `--engine ray` and are a usage error for the local engine."""

    def one(arg: str) -> str:
        if not is_uri(arg):
            return arg
        if _scheme(arg) == "file":
            return _file_path(arg)
        if not ray:
            raise UsageError(
                f"{arg}: {_scheme(arg)}:// URIs are read and written by --engine ray; "
                "add --engine ray (or copy the objects to a local folder)"
            )
        return arg

    return [one(a) for a in inputs], None if output is None else one(output)


def location(arg: str) -> Where:
    """An INPUT, -o or stored name as a `Path`, or a `StorePath` for a URI."""
    return StorePath.parse(arg) if is_uri(arg) and _scheme(arg) != "file" else Path(arg)


@functools.lru_cache(maxsize=64)
def _filesystem(scheme: str, netloc: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The pyarrow file system for one bucket (or container) and the path of its root.

    S3 objects smaller than a part (10 MB) are written with one PutObject
    (`allow_delayed_open`); larger ones with a multipart upload, which S3 also makes
    visible only when complete."""
    try:
        import pyarrow.fs
    except ImportError:
        from mprnet_cli.runners import RAY_EXTRA

        raise UsageError(
            f"{scheme}:// URIs need pyarrow (with Ray Data), which is not installed; run: "
            f"{RAY_EXTRA}"
        ) from None

    uri = f"{scheme}://{netloc}/"
    if scheme == "s3":
        uri += "?allow_delayed_open=true"
    try:
        filesystem, base = pyarrow.fs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise UsageError(
            f"{scheme}://{netloc}: pyarrow cannot open this store ({_brief(exc)}); check the "
            "URI and the store's environment (credentials, region, endpoint)"
        ) from None
    return filesystem, str(base).rstrip("/")


def _brief(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class StorePath:
    """One object (or prefix) in an object store: `scheme://netloc/key`."""

    scheme: str
    netloc: str  # the bucket (s3, gs) or container@account (abfs)
    key: str = ""  # "/"-separated, no leading or trailing slash; "" is the bucket itself

    @classmethod
    def parse(cls, uri: str) -> StorePath:
        scheme, rest = uri.split("://", 1)
        netloc, _, key = rest.partition("/")
        if not netloc:
            raise UsageError(f"{uri}: the URI names no bucket ({scheme}://BUCKET/PATH)")
        return cls(scheme.lower(), netloc, str(PurePosixPath("/", key))[1:])

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}" + (f"/{self.key}" if self.key else "")

    # -- the part of Path's API the planner uses
    @property
    def _pure(self) -> PurePosixPath:
        return PurePosixPath(self.key)

    @property
    def name(self) -> str:
        return self._pure.name

    @property
    def stem(self) -> str:
        return self._pure.stem

    @property
    def suffix(self) -> str:
        return self._pure.suffix

    @property
    def parent(self) -> StorePath:
        parent = str(self._pure.parent)
        return StorePath(self.scheme, self.netloc, "" if parent == "." else parent)

    def __truediv__(self, other: str | PurePath) -> StorePath:
        joined = str(PurePosixPath("/", self.key, PurePath(other).as_posix()))[1:]
        return StorePath(self.scheme, self.netloc, joined.removesuffix("/."))

    def relative_to(self, other: StorePath | PurePath) -> PurePosixPath:
        if not isinstance(other, StorePath) or other.bucket != self.bucket:
            raise ValueError(f"{self} is not below {other}")
        return self._pure.relative_to(other._pure) if other.key else self._pure

    @property
    def bucket(self) -> StorePath:
        return StorePath(self.scheme, self.netloc)

    def exists(self) -> bool:
        return self.kind() in ("file", "dir")

    def is_dir(self) -> bool:
        return self.kind() == "dir"

    def is_file(self) -> bool:
        return self.kind() == "file"

    # -- the store
    def _where(self) -> tuple[pyarrow.fs.FileSystem, str]:
        filesystem, base = _filesystem(self.scheme, self.netloc)
        return filesystem, f"{base}/{self.key}" if self.key else base

    def kind(self) -> Kind:
        """ "file", "dir" (an object prefix or the bucket), or "other" (none there).

        Raises `InputError` when the store cannot be asked (credentials, network)."""
        filesystem, path = self._where()  # first: says what to install if pyarrow is missing
        import pyarrow.fs

        try:
            info = filesystem.get_file_info(path)
        except OSError as exc:
            raise InputError(f"{self}: cannot look at it ({_brief(exc)})") from None
        if info.type == pyarrow.fs.FileType.File:
            return "file"
        return "dir" if info.type == pyarrow.fs.FileType.Directory else "other"

    def listing(self, recursive: bool) -> list[tuple[StorePath, Kind]]:
        """The objects (and, for folder semantics, the prefixes) below this one."""
        filesystem, path = self._where()  # first: says what to install if pyarrow is missing
        import pyarrow.fs

        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(path, recursive=recursive))
        base = PurePosixPath(path)
        found: list[tuple[StorePath, Kind]] = []
        for info in infos:
            if info.type not in (pyarrow.fs.FileType.File, pyarrow.fs.FileType.Directory):
                continue
            rel = PurePosixPath(info.path).relative_to(base)
            found.append((self / rel, "file" if info.type == pyarrow.fs.FileType.File else "dir"))
        return found

    def read_bytes(self) -> bytes:
        """The whole object, in one GET; `InputError` saying why not."""
        filesystem, path = self._where()
        try:
            with filesystem.open_input_stream(path) as stream:
                return bytes(stream.read())
        except FileNotFoundError:
            raise InputError(f"{self}: no such object") from None
        except OSError as exc:
            raise InputError(f"{self}: cannot read it ({_brief(exc)})") from None

    def head(self, size: int) -> bytes:
        """The object's first `size` bytes (a ranged read: the magic bytes only)."""
        filesystem, path = self._where()
        with filesystem.open_input_file(path) as handle:
            return bytes(handle.read_at(size, 0))

    def write_bytes(self, data: bytes) -> None:
        """Store `data` as this object in one request: it appears whole or not at all."""
        filesystem, path = self._where()
        try:
            with filesystem.open_output_stream(path) as stream:
                stream.write(data)
        except OSError as exc:
            raise OutputError(f"{self}: cannot write it ({_brief(exc)})") from None

    def mtime(self) -> float | None:
        """Last-modified time in seconds since the epoch, if the store reports one."""
        filesystem, path = self._where()
        try:
            when = filesystem.get_file_info(path).mtime
        except OSError:
            return None
        return None if when is None else when.timestamp()

    def problem(self) -> str | None:
        """Why nothing can be written below this prefix (its bucket missing or unreachable)."""
        try:
            kind = self.bucket.kind()
        except InputError as exc:
            return str(exc)
        if kind != "dir":
            return f"the bucket {self.bucket} does not exist or is not visible; create it first"
        return None


Where = Path | StorePath


def pattern_root(pattern: str) -> str:
    """The fixed leading segments of a glob (up to the first segment with * ? or [)."""
    head = ""
    if is_uri(pattern):
        scheme, rest = pattern.split("://", 1)
        netloc, _, pattern = rest.partition("/")
        head = f"{scheme}://{netloc}/"
    fixed: list[str] = []
    for part in pattern.split("/")[:-1]:
        if any(c in _GLOB_CHARS for c in part):
            break
        fixed.append(part)
    return head + "/".join(fixed)


def glob_store(pattern: str) -> tuple[StorePath, list[tuple[StorePath, Kind]]]:
    """`glob.glob(pattern, recursive=True)` for a URI: its fixed root, and the objects and
    prefixes below it that match (`*` stays within a segment, `**` spans any number)."""
    root = StorePath.parse(pattern_root(pattern))
    wanted = StorePath.parse(pattern).relative_to(root).parts
    found = root.listing(recursive=True)
    return root, [(p, kind) for p, kind in found if _matches(p.relative_to(root).parts, wanted)]


def _matches(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":  # any number of segments, none hidden (glob's rule too)
        spans = range(len(parts) + 1)
        return any(
            _matches(parts[i:], pattern[1:])
            for i in spans
            if not any(p.startswith(".") for p in parts[:i])
        )
    if not parts or not fnmatch.fnmatchcase(parts[0], pattern[0]):
        return False
    if parts[0].startswith(".") and not pattern[0].startswith("."):
        return False  # glob's rule: * does not match a leading dot
    return _matches(parts[1:], pattern[1:])


def walk_order(paths: Iterable[StorePath], root: StorePath) -> list[StorePath]:
    """Sorted as `os.walk` visits a tree: a folder's files (by name), then its subfolders."""

    def key(p: StorePath) -> tuple[tuple[int, str], ...]:
        parts = p.relative_to(root).parts
        return (*((1, d) for d in parts[:-1]), (0, parts[-1]))

    return sorted(paths, key=key)
