"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from perfgate.serve import server


@pytest.fixture
def server_starts(monkeypatch: pytest.MonkeyPatch) -> list[server.ServerSpec]:
    """Every vLLM server start attempted while the test runs, observed instead of timed:
    the start is recorded and refused, so a test that expects none can say so exactly."""
    started: list[server.ServerSpec] = []

    def refuse(self: server.VllmServer) -> None:
        started.append(self.spec)
        raise server.ServerError(f"test: server {self.spec.name!r} must not start here")

    monkeypatch.setattr(server.VllmServer, "start", refuse)
    return started
