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
from mprnet_cli.imageio.formats import VIDEO_EXTENSIONS
from mprnet_cli.imageio.locations import StorePath, Where, glob_store, is_uri, location, walk_order

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
    notes: tuple[str, ...] = ()  # what was left out on purpose (subfolders without -r)


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


def _key(path: Where, folders: dict[str, str] | None = None) -> str:
    """What identifies a file: its real path (symbolic links resolved), or an object's URI.

    `folders` caches the real path of each folder for one run: a path whose last part is
    not a symbolic link is then its folder's real path plus its name (one `lstat`, not one
    per path component; planning thousands of files in one folder is dominated by this).
    """
    if isinstance(path, StorePath):
        return str(path)
    text = os.fspath(path)
    folder, name = os.path.split(text)
    if folders is None or name in ("", ".", "..") or os.path.islink(text):  # noqa: PTH114
        return os.path.normcase(os.path.realpath(text))
    real = folders.get(folder)
    if real is None:
        real = folders[folder] = os.path.realpath(folder or os.curdir)
    return os.path.normcase(real + os.sep + name if real != os.sep else os.sep + name)


def _why_not(exc: OSError) -> str:
    """An OSError met while looking at an input, as a reason a user can act on."""
    if isinstance(exc, PermissionError):
        return "permission denied; check the permissions of it and of the folders above it"
    return f"cannot read ({exc.strerror or exc})"


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # as os.walk: what cannot be looked at is not searched as a folder
        return False


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
        self.notes: list[str] = []

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
        not_searched = 0
        # os.walk's order (top-down, sorted) with a stack instead of recursion: a tree
        # deeper than Python's recursion limit (1,000 levels) is no error.
        stack = [folder]
        while stack:
            here = stack.pop()
            try:
                with os.scandir(here) as listing:
                    entries = list(listing)
            except OSError as exc:
                if here is folder:
                    unreadable.append(exc)
                else:
                    self.warnings.append(f"{here}: folder skipped: {_why_not(exc)}")
                continue
            dirs = sorted(e.name for e in entries if _is_dir(e) and self._searchable(here / e.name))
            files = sorted(e.name for e in entries if not _is_dir(e))
            jobs.extend(Job(here / f, root=root) for f in files if self.wanted(here / f))
            if self.recursive:  # symbolic links to folders are not followed, as os.walk
                stack.extend(here / d for d in reversed(dirs) if not (here / d).is_symlink())
            else:
                not_searched += len(dirs)
        if unreadable and not jobs:
            return [Job(folder, error=f"cannot list this folder: {_why_not(unreadable[0])}")]
        if jobs and not_searched:
            self.notes.append(
                f"{folder}: {not_searched} subfolder{'s' if not_searched > 1 else ''} not "
                f"searched; -r/--recursive includes {'them' if not_searched > 1 else 'it'}"
            )
        return jobs

    def _searchable(self, path: Path) -> bool:
        """Not hidden and not the output folder: a folder -r would search."""
        return not path.name.startswith(".") and (
            self.exclude is None or _key(path) != self.exclude
        )

    def unlistable_folders(self, pattern: str) -> None:
        """Warn about the folders a glob could not look into (glob itself skips them
        silently), as -r does for subfolders."""
        head = str(Path(pattern).parent)
        folders = (
            glob.glob(head, recursive=True)  # noqa: PTH207 - the shell's semantics
            if any(c in _GLOB_CHARS for c in head)
            else [head]
        )
        for name in folders:
            try:
                with os.scandir(name):
                    pass
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                self.warnings.append(
                    f"{name.rstrip(os.sep) or name}: folder skipped: {_why_not(exc)}"
                )

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
    overwrite: bool = False,
) -> Expansion:
    """Files, folders, globs and `-` -> deduplicated jobs (see the module docstring).

    `exclude` is the output folder, never scanned for inputs. Arguments that yield nothing
    (an empty folder, a glob without matches) become failed jobs so they are reported.
    Among several files named one by one (a shell's glob), those named like our outputs
    (`suffix`) are left out with one note, so that a rerun resumes instead of restoring
    them again; unless `overwrite`.
    """
    if not args:
        raise UsageError("give at least one INPUT (a file, folder, glob or - for stdin)")
    if STDIN_ARG in args and len(args) > 1:
        raise UsageError("- (stdin) must be the only INPUT")
    scanner = _Scanner(recursive, suffix, exclude)
    jobs: list[Job] = []
    seen: set[str] = set()
    folders: dict[str, str] = {}

    def add(found: Iterable[Job]) -> None:
        for job in found:
            if job.error is not None:
                jobs.append(job)
                continue
            key = STDIN_ARG if job.source is None else _key(job.source, folders)
            if key not in seen:
                seen.add(key)
                jobs.append(job)

    single_file = False
    ours: list[str] = []
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
            if len(args) > 1 and not overwrite and suffix and path.stem.endswith(suffix):
                ours.append(arg)
                continue
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
            scanner.unlistable_folders(arg)
            if not matched:
                matched = [Job(None, error="no image files match this pattern", label_override=arg)]
            add(matched)
    if ours:
        named = ", ".join(ours[:3]) + (", ..." if len(ours) > 3 else "")
        scanner.notes.append(
            f"{len(ours)} input{'s' if len(ours) > 1 else ''} left out, named like this "
            f"command's outputs (*{suffix}): {named}; --overwrite restores "
            f"{'them' if len(ours) > 1 else 'it'} too"
        )
    return Expansion(
        jobs,
        single_file,
        tuple(dict.fromkeys(scanner.warnings)),
        tuple(dict.fromkeys(scanner.notes)),
    )


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
