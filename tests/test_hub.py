"""How huggingface_hub's failures are sorted: stop (Hub unreachable) or try the next source."""

from __future__ import annotations

from typing import Any

import pytest

from mprnet_cli.weights.hub import (
    HubFile,
    HubUnreachableError,
    RepoType,
    SourceUnavailableError,
    fetch,
)


def test_connection_failures_are_told_apart_from_missing_sources(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """huggingface_hub's own exception types decide offline (stop) versus next source."""
    import huggingface_hub
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError
    from huggingface_hub.utils import httpx as hub_http

    def raising(exc: BaseException) -> Any:
        def fake(*args: object, **kwargs: object) -> str:
            raise exc

        return fake

    def forced(cause: BaseException) -> ValueError:
        wrapped = ValueError("Force download failed due to the above error.")
        wrapped.__cause__ = cause
        return wrapped

    response = hub_http.Response(404, request=hub_http.Request("GET", "http://hub.test/x"))
    source = HubFile("deepinv/MPRNet", "model_deraining.pth", RepoType.MODEL)
    for exc in (
        hub_http.ConnectError("refused"),
        hub_http.ReadTimeout("slow"),
        forced(hub_http.ConnectError("refused")),
    ):
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(exc))
        with pytest.raises(HubUnreachableError):
            fetch(source)
    for exc, reason in (
        (RemoteEntryNotFoundError("404", response=response), "no such file"),
        (forced(RepositoryNotFoundError("404", response=response)), "no such repository"),
    ):
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(exc))
        with pytest.raises(SourceUnavailableError, match=reason):
            fetch(source)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", raising(RuntimeError("bug")))
    with pytest.raises(RuntimeError):  # anything else is a bug, not a source to skip
        fetch(source)


def test_labels_name_files_as_hub_urls_do() -> None:
    assert HubFile("o/r", "a/b.pth").label == "o/r/a/b.pth"
    assert HubFile("o/r", "a/b.pth", RepoType.SPACE).label == "spaces/o/r/a/b.pth"
