"""The Hugging Face Hub, as mprnet uses it: where a file lives, is it cached, fetch it.

The only module that imports huggingface_hub. Its failures are sorted into
two kinds by the library's own exception types: the Hub cannot be reached
(`HubUnreachableError`: every source is out of reach, stop) and this one file
cannot be had (`SourceUnavailableError`: try the next source).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit


class RepoType(str, Enum):
    """huggingface_hub's `repo_type` values that can hold a checkpoint."""

    MODEL = "model"
    SPACE = "space"
    DATASET = "dataset"


@dataclass(frozen=True)
class HubFile:
    """One place on the Hub that may hold a task's published checkpoint."""

    repo: str
    path: str
    repo_type: RepoType = RepoType.MODEL
    revision: str | None = None
    sha256: str | None = None
    size: int | None = None

    @property
    def label(self) -> str:
        """The file as the Hub's URLs name it (`spaces/` prefix for Spaces)."""
        prefix = "" if self.repo_type is RepoType.MODEL else f"{self.repo_type.value}s/"
        return f"{prefix}{self.repo}/{self.path}"


def hub_sha(path: Path) -> str | None:
    """The Hub's hash of a cached file: LFS blobs are stored under their sha256."""
    blob = Path(os.path.realpath(path)).name
    return blob if len(blob) == 64 and all(c in "0123456789abcdef" for c in blob) else None


def hub_reachable(timeout: float = 3.0) -> bool:
    """False in huggingface_hub's offline mode, else one quick TCP connect to its endpoint.

    huggingface_hub retries network errors with back-off for about half a minute;
    an offline user should hear what to do at once instead. The offline
    variables and the endpoint are read as the library reads them.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy only the real request can tell
    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def cached_file(source: HubFile) -> Path | None:
    """The source's file in the Hugging Face cache, found without any network call."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        source.repo,
        source.path,
        revision=source.revision or "main",
        repo_type=source.repo_type.value,
    )
    return Path(found) if isinstance(found, str) else None


class SourceUnavailableError(Exception):
    """This file cannot be had from here (the reason is the message); another source may."""


class HubUnreachableError(Exception):
    """The Hub cannot be reached (offline mode, no connection, Hub down)."""


class CacheWriteError(Exception):
    """The download could not be stored in the Hugging Face cache."""


def fetch(source: HubFile, force: bool = False) -> Path:
    """Download one source's file into the Hugging Face cache, naming why it failed."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import httpx as hub_http  # the HTTP library the Hub client uses

    try:
        return Path(
            hf_hub_download(
                source.repo,
                source.path,
                repo_type=source.repo_type.value,
                revision=source.revision or "main",
                force_download=force,
            )
        )
    except Exception as exc:
        # A forced download wraps whatever stopped it in a ValueError.
        cause = exc.__cause__ if isinstance(exc, ValueError) and exc.__cause__ else exc
        if isinstance(
            cause, (LocalEntryNotFoundError, OfflineModeIsEnabled, hub_http.TransportError)
        ):
            raise HubUnreachableError(_first_line(cause)) from exc
        if isinstance(cause, RemoteEntryNotFoundError):
            raise SourceUnavailableError("the repository has no such file") from exc
        if isinstance(cause, RevisionNotFoundError):
            raise SourceUnavailableError(
                f"the repository has no revision {source.revision}"
            ) from exc
        if isinstance(cause, RepositoryNotFoundError):  # GatedRepoError included
            raise SourceUnavailableError("no such repository, or it is private or gated") from exc
        if isinstance(cause, HfHubHTTPError):
            raise SourceUnavailableError(f"the Hub answered: {_first_line(cause)}") from exc
        if isinstance(cause, OSError):
            raise CacheWriteError(_first_line(cause)) from exc
        raise


@contextmanager
def hub_output(quiet: bool) -> Iterator[None]:
    """huggingface_hub's retry chatter is not for our users; its progress bars are, unless quiet."""
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if quiet:
        disable_progress_bars()
    try:
        yield
    finally:
        if quiet:
            enable_progress_bars()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
