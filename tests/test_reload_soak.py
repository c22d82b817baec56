"""1,000 reloads under query load: nothing the reloads open outlives them (the seeds' leaks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dns_servers import KnotFactory, KnotServer
from tests.reload_soak import soak

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RSS_GROWTH_LIMIT = 2 * 1024 * 1024


@pytest.fixture
def knot(knot_factory: KnotFactory) -> Iterator[KnotServer]:
    server = knot_factory()
    yield server
    server.stop()


@pytest.mark.timeout(300)
async def test_a_thousand_reloads_leak_nothing(knot: KnotServer, tmp_path: Path) -> None:
    result = await soak(knot.address(), tmp_path, reloads=1000)
    assert result.rejected == 0
    assert result.reloads == 1020
    assert result.not_ready == [], result.not_ready[:5]
    # The stub never stopped answering: every query on the fixed port got NOERROR.
    assert result.queries > 1000
    assert result.answered >= result.queries - 1  # the last one may be cut by the stop
    before, after = result.before, result.after
    for key in ("descriptors", "tasks", "threads", "listeners", "watches", "admin"):
        assert after[key] == before[key], (key, before, after)
    assert after["rss"] - before["rss"] < RSS_GROWTH_LIMIT, (before["rss"], after["rss"])
    stats = result.resolver_stats
    assert stats["loops_started"] - stats["loops_stopped"] == stats["loops_running"] == 2
    assert stats["flights_started"] == stats["flights_finished"]
