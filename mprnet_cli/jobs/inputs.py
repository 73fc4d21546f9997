"""INPUT arguments -> jobs: files, folders, globs, stdin and object-store prefixes.

The rules are in the `mprnet_cli.jobs` docstring (Inputs).
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
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

    @property
    def has_stdin(self) -> bool:
        return any(j.source is None and j.error is None for j in self.jobs)


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


#: A place in a folder's walk (`os.walk` order: a folder's files by name, then its
#: subfolders by name): (1, folder) for each folder below the argument, then (0, file name).
_Place = tuple[tuple[int, str], ...]


@dataclass
class _Scope:
    """What one folder argument's walk lists, and how far it has got.

    This is what lets the listing stream with no record of the files it listed: a file
    belongs to the walk when its key is below `real` through folders the walk searches
    (not hidden, not the output folder, only direct children without -r)."""

    real: str  # the folder's key (`_key`): its real path, or the prefix's URI
    recursive: bool
    exclude: str | None  # the output folder's key
    sep: str = os.sep
    at: _Place | None = None  # the folder being listed now; None: the walk has not started
    done: bool = False

    def place(self, key: str) -> _Place | None:
        """`key`'s place in the walk, or None when the walk never lists it."""
        prefix = self.real if self.real.endswith(self.sep) else self.real + self.sep
        if not key.startswith(prefix):
            return None
        parts = key[len(prefix) :].split(self.sep)
        if not self.recursive and len(parts) > 1:
            return None
        folder = prefix.rstrip(self.sep)
        for part in parts[:-1]:
            folder += self.sep + part
            if not part or part.startswith(".") or folder == self.exclude:
                return None
        return (*((1, d) for d in parts[:-1]), (0, parts[-1]))

    def passed(self, place: _Place) -> bool:
        """The walk has listed the folder of `place` already (a file made there now is not
        one of its inputs); False while it is still to come."""
        return self.done or (self.at is not None and place[:-1] <= self.at)


class _Scanner:
    """The name and kind filters of the module docstring (extension, hidden, our outputs).

    Entries it cannot look at (an unreadable subfolder, a broken link named like an image)
    are skipped with a warning, never silently."""

    def __init__(
        self, recursive: bool, suffix: str, exclude: Where | None, warn: Callable[[str], None]
    ) -> None:
        self.recursive = recursive
        self.suffix = suffix
        self.exclude = _key(exclude) if exclude is not None else None
        self.warn = warn

    def named_as_input(self, name: str) -> bool:
        """The name rules alone: an image's or video's extension, not hidden, not one of our outputs."""
        stem, ext = os.path.splitext(name)  # noqa: PTH122 - per file of a walk: no Path
        if name.startswith(".") or ext.lower() not in INPUT_EXTENSIONS:
            return False
        # one of our outputs: a rerun resumes instead of restoring it
        return not (self.suffix and stem.endswith(self.suffix))

    def named(self, path: Where) -> bool:
        return self.named_as_input(path.name)

    def wanted(self, path: Path) -> bool:
        """Named as an input and a regular file (symbolic links followed)."""
        if not self.named(path):
            return False
        kind = _kind(path)
        if isinstance(kind, OSError):
            self.warn(f"{path}: skipped: {_why_not(kind)}")
            return False
        if kind == "other" and path.is_symlink():
            self.warn(f"{path}: skipped: a broken symbolic link")
        return kind == "file"

    def searchable(self, path: Path) -> bool:
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
                self.warn(f"{name.rstrip(os.sep) or name}: folder skipped: {_why_not(exc)}")

    def prefix(self, folder: StorePath, root: Where) -> list[Job]:
        """A prefix of an object store: one listing; hidden and excluded prefixes left out."""
        try:
            found = folder.listing(self.recursive)
        except OSError as exc:
            return [Job(folder, error=f"cannot list this folder: {_why_not(exc)}")]
        excluded = self.exclude + "/" if self.exclude is not None else None
        files = [
            p
            for p, kind in found
            if kind == "file"
            and self.named(p)
            and not any(d.startswith(".") for d in p.relative_to(folder).parts[:-1])
            and (excluded is None or not str(p).startswith(excluded))
        ]
        return [Job(p, root=root) for p in walk_order(files, folder)]


class Listing:
    """The jobs of a command line, listed lazily: iterate it once, and the first job comes
    while the folders are still being walked (`os.scandir`, one folder at a time, sorted).

    It holds no record per listed input: duplicates (the same real path reached twice) are
    told from the folder arguments' reach (`_Scope`) and from the keys of the few inputs
    that are not in a walked folder (files named one by one, glob matches, symbolic links,
    objects of a store, whose listing comes whole anyway). What it keeps while walking is
    the sorted names of the folder being listed. `warnings` and `notes` grow as it goes
    (`on_message` hears each as it comes); `count` is the jobs listed so far and `done`
    says the listing has ended (`on_done` hears the total)."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        recursive: bool = False,
        suffix: str = "",
        exclude: Where | None = None,
        overwrite: bool = False,
    ) -> None:
        if not args:
            raise UsageError("give at least one INPUT (a file, folder, glob or - for stdin)")
        if STDIN_ARG in args and len(args) > 1:
            raise UsageError("- (stdin) must be the only INPUT")
        self.args = tuple(args)
        self.recursive = recursive
        self.suffix = suffix
        self.overwrite = overwrite
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.on_message: Callable[[str, str], None] | None = None  # ("warning" | "note", text)
        self.on_done: Callable[[int], None] | None = None
        self.count = 0
        self.done = False
        self._said: set[str] = set()
        self._real: dict[str, str] = {}  # `_key`'s cache of folders' real paths
        self._scanner = _Scanner(recursive, suffix, exclude, self._warn)
        self._kinds: list[str | OSError | None] = [
            None if a == STDIN_ARG else _kind(location(a)) for a in self.args
        ]
        self._scopes: list[_Scope | None] = [
            self._scope_of(a, k) for a, k in zip(self.args, self._kinds, strict=True)
        ]
        self._explicit = {
            _key(location(a))
            for a, k in zip(self.args, self._kinds, strict=True)
            if a != STDIN_ARG and k != "dir" and (isinstance(k, OSError) or not _is_pattern(a))
        }
        self._keys: set[str] = set()  # inputs met so far that no walked folder accounts for
        self._walked: list[_Scope] = []  # the walks finished (arguments, folders globs matched)
        self._glob_scopes: list[_Scope] = []  # folders globs matched (their walks as they come)
        self._glob_inputs: tuple[set[str], list[_Scope]] | None = None
        self._buffer: deque[Job] = deque()
        self._found = 0  # images the current folder argument's walk found (duplicates too)
        self._jobs = self._generate()

    # -- what a command line is, before anything is listed
    @property
    def single_file(self) -> bool:
        """Exactly one file (or stdin) was named: `-o FILE` and `-o -` are possible."""
        if len(self.args) != 1:
            return False
        arg, kind = self.args[0], self._kinds[0]
        return (
            arg == STDIN_ARG
            or isinstance(kind, OSError)
            or (kind != "dir" and not _is_pattern(arg))
        )

    @property
    def has_stdin(self) -> bool:
        return STDIN_ARG in self.args

    @property
    def uses_store(self) -> bool:
        """An INPUT is an object-store URI (only the Ray engine reads those)."""
        return any(is_uri(a) for a in self.args)

    @property
    def one_tree(self) -> bool:
        """One folder argument: two inputs in different folders never share an output, so
        the planner's claims need only last for one folder (`Planner`)."""
        return len(self.args) == 1 and self._kinds[0] == "dir"

    def _scope_of(self, arg: str, kind: str | OSError | None) -> _Scope | None:
        if kind != "dir":
            return None
        path = location(arg)
        exclude = self._scanner.exclude
        if isinstance(path, StorePath):
            return _Scope(str(path), self.recursive, exclude, sep="/")
        return _Scope(_key(path), self.recursive, exclude)

    # -- iteration
    def __iter__(self) -> Iterator[Job]:
        return self

    def __next__(self) -> Job:
        if self._buffer:
            return self._buffer.popleft()
        return next(self._jobs)

    def first_input(self) -> Job | None:
        """The first job that did not fail while listing (None: there is none), listed
        ahead; iterating still starts from the first job."""
        for job in self._buffer:
            if job.error is None:
                return job
        for job in self._jobs:
            self._buffer.append(job)
            if job.error is None:
                return job
        return None

    # -- messages
    def _say(self, kind: str, text: str, into: list[str]) -> None:
        if text in self._said:
            return
        self._said.add(text)
        into.append(text)
        if self.on_message is not None:
            self.on_message(kind, text)

    def _warn(self, text: str) -> None:
        self._say("warning", text, self.warnings)

    def _note(self, text: str) -> None:
        self._say("note", text, self.notes)

    def folder_jobs(self, folder: Where, root: Where | None) -> Iterator[Job]:
        """The jobs a walk lists in `folder` alone, again (no duplicates check): what the
        planner claimed there, for a job that comes back to a folder (`Planner`)."""
        if isinstance(folder, StorePath):
            try:
                found = folder.listing(recursive=False)
            except OSError:
                return
            for found_path, kind in found:
                if kind == "file" and self._scanner.named(found_path):
                    yield Job(found_path, root=root)
            return
        try:
            names, odd, _ = self._list(folder)
        except OSError:
            return
        for name in names:
            path = folder / name
            if self._scanner.wanted(path) if name in odd else self._scanner.named_as_input(name):
                yield Job(path, root=root)

    # -- the rule "its output is another input of this run"
    def is_input(self, target: Where, *, exists: bool | None = None) -> bool:
        """`target` is (or, written now, would become) an input of this run.

        An existing file is one when a folder argument's walk lists it, a glob matches it,
        or it was named; a missing one when a walk still to come would list it once this
        run wrote it there. `exists` None: looked up (a local file only)."""
        key = _key(target, self._real)
        if key in self._explicit or key in self._keys:
            return True
        if not self._scanner.named_as_input(target.name):
            return False
        if exists is None:
            exists = not isinstance(target, StorePath) and target.is_file()
        for scope in (*(s for s in self._scopes if s is not None), *self._glob_scopes):
            place = scope.place(key)
            if place is not None and (exists or not scope.passed(place)):
                return True
        if exists and any(_is_pattern(a) for a in self.args):
            keys, folders = self._globbed()
            return key in keys or any(s.place(key) is not None for s in folders)
        return False

    def _globbed(self) -> tuple[set[str], list[_Scope]]:
        """What the glob arguments match (listed once, when first needed: an existing output
        under --overwrite), for `is_input`."""
        if self._glob_inputs is None:
            keys: set[str] = set()
            folders: list[_Scope] = []
            for arg in self.args:
                if not _is_pattern(arg) or is_uri(arg):
                    continue
                for match in glob.glob(arg, recursive=True):  # noqa: PTH207
                    if os.path.isdir(match):  # noqa: PTH112
                        folders.append(
                            _Scope(_key(Path(match)), self.recursive, self._scanner.exclude)
                        )
                    else:
                        keys.add(_key(Path(match)))
            self._glob_inputs = keys, folders
        return self._glob_inputs

    # -- duplicates
    def _seen(self, key: str, *, known_file: bool, path: Where | None = None) -> bool:
        """An input with this key was listed before (by an earlier argument's walk, or as
        a file met one by one)."""
        if key in self._keys:
            return True
        if not self._walked:
            return False
        listed = [s for s in self._walked if s.place(key) is not None]
        if not listed or not self._scanner.named_as_input(key.rsplit(listed[0].sep, 1)[-1]):
            return False
        return known_file or (path is not None and _kind(path) == "file")

    def _link_seen(self, key: str, scope: _Scope, here: _Place) -> bool:
        """A symbolic link's target was listed before by the walk now going on."""
        place = scope.place(key)
        return (
            place is not None
            and place < here
            and self._scanner.named_as_input(key.rsplit(scope.sep, 1)[-1])
        )

    # -- the listing
    def _generate(self) -> Iterator[Job]:
        ours: list[str] = []
        for index, arg in enumerate(self.args):
            for job in self._argument(index, arg, ours):
                self.count += 1
                yield job
        if ours:
            named = ", ".join(ours[:3]) + (", ..." if len(ours) > 3 else "")
            self._note(
                f"{len(ours)} input{'s' if len(ours) > 1 else ''} left out, named like this "
                f"command's outputs (*{self.suffix}): {named}; --overwrite restores "
                f"{'them' if len(ours) > 1 else 'it'} too"
            )
        self.done = True
        if self.on_done is not None:
            self.on_done(self.count)

    def _argument(self, index: int, arg: str, ours: list[str]) -> Iterator[Job]:
        if arg == STDIN_ARG:
            yield Job(None)
            return
        path = location(arg)
        kind = self._kinds[index]
        scope = self._scopes[index]
        if isinstance(kind, OSError):  # e.g. inside a folder we may not enter
            yield Job(path, root=path.parent, error=_why_not(kind))
        elif scope is not None:
            self._found = 0
            yield from self._folder(path, path, scope)
            scope.done = True
            self._walked.append(scope)
            if not self._found:
                hint = (
                    "" if self.recursive else " (subfolders are searched only with -r/--recursive)"
                )
                yield Job(path, error=f"no images in this folder{hint}")
        elif not _is_pattern(arg):
            if (
                len(self.args) > 1
                and not self.overwrite
                and self.suffix
                and path.stem.endswith(self.suffix)
            ):
                ours.append(arg)
                return
            key = _key(path)
            if not self._seen(key, known_file=False, path=path):
                self._keys.add(key)
                yield Job(path, root=path.parent)
        elif isinstance(path, StorePath):
            yield from self._unique_objects(_store_matches(arg, self._scanner))
        else:
            yield from self._glob(arg)

    def _folder(self, folder: Where, root: Where, scope: _Scope) -> Iterator[Job]:
        """A folder argument's (or a glob-matched folder's) images, as the walk finds them."""
        if isinstance(folder, StorePath):
            objects = self._scanner.prefix(folder, root)
            scope.done = True  # a prefix's listing comes whole: nothing written now joins it
            self._found += len(objects)
            yield from self._unique_objects(objects)
            return
        not_searched = 0
        wanted = 0
        # os.walk's order (top-down, sorted) with a stack instead of recursion: a tree
        # deeper than Python's recursion limit (1,000 levels) is no error.
        stack: list[tuple[Path, _Place]] = [(folder, ())]
        while stack:
            here, at = stack.pop()
            try:
                names, odd, dirs = self._list(here)
            except OSError as exc:
                if here is folder:
                    self._found += 1
                    yield Job(folder, error=f"cannot list this folder: {_why_not(exc)}")
                    return
                self._warn(f"{here}: folder skipped: {_why_not(exc)}")
                continue
            scope.at = at
            real = os.path.normcase(os.path.realpath(here))
            base = real if real.endswith(os.sep) else real + os.sep
            for name in names:
                path = here / name
                link = name in odd
                if not (self._scanner.wanted(path) if link else self._scanner.named_as_input(name)):
                    continue
                wanted += 1
                self._found += 1
                if link:
                    key = _key(path)
                    if self._seen(key, known_file=True) or self._link_seen(
                        key, scope, (*at, (0, name))
                    ):
                        continue
                    self._keys.add(key)  # the file it points to, met later, is this one
                elif self._seen(base + name, known_file=True):
                    continue
                yield Job(path, root=root)
            if self.recursive:  # symbolic links to folders are not followed, as os.walk
                stack.extend(
                    (here / d, (*at, (1, d))) for d in reversed(dirs) if not (here / d).is_symlink()
                )
            else:
                not_searched += len(dirs)
        if not_searched and wanted:
            self._note(
                f"{folder}: {not_searched} subfolder{'s' if not_searched > 1 else ''} not "
                f"searched; -r/--recursive includes {'them' if not_searched > 1 else 'it'}"
            )

    def _list(self, here: Path) -> tuple[list[str], set[str], list[str]]:
        """A folder's file names (sorted), those that are not plain files (symbolic links,
        or a type the listing did not say), and its searchable subfolders (sorted)."""
        names: list[str] = []
        odd: set[str] = set()
        dirs: list[str] = []
        with os.scandir(here) as listing:
            for entry in listing:
                if _is_dir(entry):
                    if self._scanner.searchable(here / entry.name):
                        dirs.append(entry.name)
                    continue
                names.append(entry.name)
                try:
                    plain = entry.is_file(follow_symlinks=False)
                except OSError:
                    plain = False
                if not plain:
                    odd.add(entry.name)
        names.sort()
        dirs.sort()
        return names, odd, dirs

    def _glob(self, pattern: str) -> Iterator[Job]:
        root = _pattern_root(pattern)
        found = 0
        # Path.glob cannot take absolute patterns; the shell's semantics are glob.glob's.
        for match in sorted(glob.glob(pattern, recursive=True)):  # noqa: PTH207
            mpath = Path(match)
            if _kind(mpath) == "dir":
                scope = _Scope(_key(mpath), self.recursive, self._scanner.exclude)
                self._glob_scopes.append(scope)
                for job in self._folder(mpath, root, scope):
                    found += 1
                    yield job
                scope.done = True
                self._walked.append(scope)
            elif self._scanner.wanted(mpath):
                found += 1
                key = _key(mpath)
                if not self._seen(key, known_file=True):
                    self._keys.add(key)
                    yield Job(mpath, root=root)
        self._scanner.unlistable_folders(pattern)
        if not found:
            yield Job(None, error="no image files match this pattern", label_override=pattern)

    def _unique_objects(self, jobs: Iterable[Job]) -> Iterator[Job]:
        for job in jobs:
            if job.error is None and job.source is not None:
                key = _key(job.source)
                if key in self._keys:
                    continue
                self._keys.add(key)
            yield job


def expand_inputs(
    args: Sequence[str],
    *,
    recursive: bool = False,
    suffix: str = "",
    exclude: Where | None = None,
    overwrite: bool = False,
) -> Expansion:
    """Files, folders, globs and `-` -> deduplicated jobs (see the module docstring), as a
    list: `Listing` (the same rules, lazily) is what a run iterates.

    `exclude` is the output folder, never scanned for inputs. Arguments that yield nothing
    (an empty folder, a glob without matches) become failed jobs so they are reported.
    Among several files named one by one (a shell's glob), those named like our outputs
    (`suffix`) are left out with one note, so that a rerun resumes instead of restoring
    them again; unless `overwrite`.
    """
    listing = Listing(
        args, recursive=recursive, suffix=suffix, exclude=exclude, overwrite=overwrite
    )
    jobs = list(listing)
    return Expansion(jobs, listing.single_file, tuple(listing.warnings), tuple(listing.notes))


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
