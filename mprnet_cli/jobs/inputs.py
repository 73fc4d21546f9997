"""INPUT arguments -> jobs: files, folders, globs, stdin and object-store prefixes.

The rules are in the `mprnet_cli.jobs` docstring (Inputs).
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Final

from mprnet_cli.errors import UsageError
from mprnet_cli.imageio import IMAGE_EXTENSIONS
from mprnet_cli.locations import StorePath, Where, glob_store, is_uri, location, walk_order
from mprnet_cli.video import VIDEO_EXTENSIONS

STDIN_ARG: Final = "-"
#: What folders and globs pick up: images and video clips.
INPUT_EXTENSIONS: Final = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
_GLOB_CHARS: Final = frozenset("*?[")


@dataclass(frozen=True)
class Job:
    """One input. `source` None is stdin; `error` set means it failed before it started."""

    source: Where | None
    root: Where | None = None  # the folder it was found under: mirrored below -o DIR
    error: str | None = None
    label_override: str | None = None  # what to call it when there is no source

    @property
    def label(self) -> str:
        """How the input is named to the user (the argument, or the path as found)."""
        if self.label_override is not None:
            return self.label_override
        return STDIN_ARG if self.source is None else str(self.source)

    @property
    def display(self) -> str:
        """The name in messages: the label, or "<stdin>"."""
        return "<stdin>" if self.source is None and self.label_override is None else self.label

    @property
    def stem(self) -> str:
        return "stdin" if self.source is None else self.source.stem

    @property
    def relative(self) -> PurePath:
        """The source below its root: the sub-path that `-o DIR` reproduces."""
        if self.source is None:
            return Path(self.stem)
        if self.root is not None:
            try:
                return self.source.relative_to(self.root)  # type: ignore[arg-type]
            except ValueError:
                pass
        return Path(self.source.name)


@dataclass(frozen=True)
class Expansion:
    """The jobs for a command line; `single_file` when it named exactly one file (or stdin)."""

    jobs: list[Job]
    single_file: bool
    warnings: tuple[str, ...] = ()  # entries skipped because they could not be looked at


def _is_pattern(arg: str) -> bool:
    return any(c in _GLOB_CHARS for c in arg) and (is_uri(arg) or not os.path.lexists(arg))


def _pattern_root(pattern: str) -> Path:
    """The fixed leading folders of a glob: what `-o DIR` mirrors below."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if any(c in _GLOB_CHARS for c in part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


def _key(path: Where) -> str:
    if isinstance(path, StorePath):
        return str(path)
    return os.path.normcase(os.path.realpath(path))


def _why_not(exc: OSError) -> str:
    """An OSError met while looking at an input, as a reason a user can act on."""
    if isinstance(exc, PermissionError):
        return "permission denied; check the permissions of it and of the folders above it"
    return f"cannot read ({exc.strerror or exc})"


def _kind(path: Where) -> str | OSError:
    """ "dir", "file" or "other" (missing included), or the error that prevented looking."""
    if isinstance(path, StorePath):
        return path.kind()
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "other"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "other"
        return exc
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


class _Scanner:
    """Finds images in folders and glob matches, with the filters from the module docstring.

    Entries it cannot look at (an unreadable subfolder, a broken link named like an image)
    are skipped with a line in `warnings`, never silently."""

    def __init__(self, recursive: bool, suffix: str, exclude: Where | None) -> None:
        self.recursive = recursive
        self.suffix = suffix
        self.exclude = _key(exclude) if exclude is not None else None
        self.warnings: list[str] = []

    def named(self, path: Where) -> bool:
        """The name rules alone: an image's or video's extension, not hidden, not one of our outputs."""
        name = path.name
        if name.startswith(".") or path.suffix.lower() not in INPUT_EXTENSIONS:
            return False
        # one of our outputs: a rerun resumes instead of restoring it
        return not (self.suffix and path.stem.endswith(self.suffix))

    def wanted(self, path: Path) -> bool:
        if not self.named(path):
            return False
        kind = _kind(path)
        if isinstance(kind, OSError):
            self.warnings.append(f"{path}: skipped: {_why_not(kind)}")
            return False
        if kind == "other" and path.is_symlink():
            self.warnings.append(f"{path}: skipped: a broken symbolic link")
        return kind == "file"

    def folder(self, folder: Where, root: Where) -> list[Job]:
        """The folder's images; a folder that cannot be listed at all is one failed job."""
        if isinstance(folder, StorePath):
            return self.prefix(folder, root)
        jobs: list[Job] = []
        unreadable: list[OSError] = []

        def skipped(exc: OSError) -> None:
            where = Path(exc.filename) if exc.filename else folder
            if _key(where) == _key(folder):
                unreadable.append(exc)
            else:
                self.warnings.append(f"{where}: folder skipped: {_why_not(exc)}")

        for top, dirs, files in os.walk(folder, onerror=skipped):
            here = Path(top)
            dirs[:] = sorted(
                d
                for d in dirs
                if self.recursive
                and not d.startswith(".")
                and (self.exclude is None or _key(here / d) != self.exclude)
            )
            jobs.extend(Job(here / f, root=root) for f in sorted(files) if self.wanted(here / f))
        if unreadable and not jobs:
            return [Job(folder, error=f"cannot list this folder: {_why_not(unreadable[0])}")]
        return jobs

    def prefix(self, folder: StorePath, root: Where) -> list[Job]:
        """`folder` for an object store: one listing; hidden and excluded prefixes left out."""
        try:
            found = folder.listing(self.recursive)
        except OSError as exc:
            return [Job(folder, error=f"cannot list this folder: {_why_not(exc)}")]
        excluded = str(self.exclude) + "/" if self.exclude is not None else None
        files = [
            p
            for p, kind in found
            if kind == "file"
            and self.named(p)
            and not any(d.startswith(".") for d in p.relative_to(folder).parts[:-1])
            and (excluded is None or not str(p).startswith(excluded))
        ]
        return [Job(p, root=root) for p in walk_order(files, folder)]


def expand_inputs(
    args: Sequence[str],
    *,
    recursive: bool = False,
    suffix: str = "",
    exclude: Where | None = None,
) -> Expansion:
    """Files, folders, globs and `-` -> deduplicated jobs (see the module docstring).

    `exclude` is the output folder, never scanned for inputs. Arguments that yield nothing
    (an empty folder, a glob without matches) become failed jobs so they are reported.
    """
    if not args:
        raise UsageError("give at least one INPUT (a file, folder, glob or - for stdin)")
    if STDIN_ARG in args and len(args) > 1:
        raise UsageError("- (stdin) must be the only INPUT")
    scanner = _Scanner(recursive, suffix, exclude)
    jobs: list[Job] = []
    seen: set[str] = set()

    def add(found: Iterable[Job]) -> None:
        for job in found:
            if job.error is not None:
                jobs.append(job)
                continue
            key = STDIN_ARG if job.source is None else _key(job.source)
            if key not in seen:
                seen.add(key)
                jobs.append(job)

    single_file = False
    for arg in args:
        if arg == STDIN_ARG:
            add([Job(None)])
            single_file = True
            continue
        path = location(arg)
        kind = _kind(path)
        if isinstance(kind, OSError):  # e.g. inside a folder we may not enter
            add([Job(path, root=path.parent, error=_why_not(kind))])
            single_file = len(args) == 1
        elif kind == "dir":
            found = scanner.folder(path, root=path)
            if not found:
                hint = "" if recursive else " (subfolders are searched only with -r/--recursive)"
                found = [Job(path, error=f"no images in this folder{hint}")]
            add(found)
        elif not _is_pattern(arg):
            add([Job(path, root=path.parent)])
            single_file = len(args) == 1
        elif isinstance(path, StorePath):
            add(_store_matches(arg, scanner))
        else:
            root = _pattern_root(arg)
            matched: list[Job] = []
            # Path.glob cannot take absolute patterns; the shell's semantics are glob.glob's.
            for match in sorted(glob.glob(arg, recursive=True)):  # noqa: PTH207
                mpath = Path(match)
                if _kind(mpath) == "dir":
                    matched.extend(scanner.folder(mpath, root=root))
                elif scanner.wanted(mpath):
                    matched.append(Job(mpath, root=root))
            if not matched:
                matched = [Job(None, error="no image files match this pattern", label_override=arg)]
            add(matched)
    return Expansion(jobs, single_file, tuple(dict.fromkeys(scanner.warnings)))


def _store_matches(pattern: str, scanner: _Scanner) -> list[Job]:
    """A glob over an object store: matching objects, and matching prefixes as folders."""
    try:
        root, found = glob_store(pattern)
    except OSError as exc:
        return [Job(None, error=f"cannot list: {_why_not(exc)}", label_override=pattern)]
    matched: list[Job] = []
    for path, kind in found:
        if kind == "dir":
            matched.extend(scanner.prefix(path, root))
        elif scanner.named(path):
            matched.append(Job(path, root=root))
    return matched or [Job(None, error="no image files match this pattern", label_override=pattern)]
