"""Shared fixtures: every async test runs on asyncio, asyncio with uvloop, and trio."""

from __future__ import annotations

from typing import Any

import pytest

pytest_plugins = ["tests.dns_servers"]


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    backend: tuple[str, dict[str, Any]] = request.param
    return backend
