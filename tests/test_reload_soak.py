"""1,000 reloads under query load: nothing the reloads open outlives them (the seeds' leaks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dns_servers import KnotFactory, KnotServer
from tests.reload_soak import leaks, soak

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def knot(knot_factory: KnotFactory) -> Iterator[KnotServer]:
    server = knot_factory()
    yield server
    server.stop()


@pytest.mark.timeout(300)
async def test_a_thousand_reloads_leak_nothing(knot: KnotServer, tmp_path: Path) -> None:
    result = await soak(knot.address(), tmp_path, reloads=1000)
    assert leaks(result, 1000) == []
    # The soak did what it says: a listener moved on every reload, watches came and went.
    assert result.sidecar_stats["listeners_closed"] >= 1000
    assert result.sidecar_stats["watches_stopped"] >= 1000
    assert result.sidecar_stats["retired_sockets_opened"] >= 2 * 1000
