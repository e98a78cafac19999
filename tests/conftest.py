"""Shared pytest fixtures: real Redis / Valkey servers (see tests/servers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from openbao import RunningBao, start_bao
from servers import MATRIX, TLS_MATRIX, RunningServer, start_server


def _params(ids: tuple[str, ...]) -> list[Any]:
    return [pytest.param(i, id=i, marks=pytest.mark.server) for i in ids]


@pytest.fixture(params=_params(MATRIX))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh server per test, for every server in MATRIX."""
    srv = start_server(request.param, tmp_path / request.param)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(params=_params(TLS_MATRIX))
def tls_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh TLS-only server (port 0, tls-port) per test, over TLS_MATRIX."""
    srv = start_server(request.param, tmp_path / request.param, tls=True)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Call with (server_id, **start_server options); each gets its own workdir
    (unless `workdir=` is given). Everything started is stopped at teardown."""
    started: list[RunningServer] = []

    def factory(server_id: str, **opts: Any) -> RunningServer:
        workdir = opts.pop("workdir", None) or tmp_path / f"{len(started)}-{server_id}"
        srv = start_server(server_id, workdir, **opts)
        started.append(srv)
        return srv

    try:
        yield factory
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture
def bao(tmp_path: Path) -> Iterator[RunningBao]:
    """A fresh OpenBao dev server (Vault API, KV v2 at secret/, root token) per test."""
    srv = start_bao(tmp_path / "openbao")
    try:
        yield srv
    finally:
        srv.stop()
