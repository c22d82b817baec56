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
    for key in ("threads", "listeners", "watches", "admin"):
        assert after[key] == before[key], (key, before, after)
    # Tasks too, but for the resolver's lookups in flight at that moment (counted apart).
    assert after["tasks"] - after["resolver_tasks"] == before["tasks"] - before["resolver_tasks"]
    # The resolver keeps a few upstream UDP sockets for reuse (how many depends on the
    # load at that moment; its own opened/closed pair accounts for them): the rest of
    # the descriptors, listeners' and admin's included, end exactly where they started.
    assert (
        after["descriptors"] - after["resolver_sockets_open"]
        == before["descriptors"] - before["resolver_sockets_open"]
    ), (before, after)
    assert after["resolver_sockets_open"] <= 8
    assert after["rss"] - before["rss"] < RSS_GROWTH_LIMIT, (before["rss"], after["rss"])
    pairs = result.sidecar_stats
    assert pairs["listeners_opened"] - pairs["listeners_closed"] == after["listeners"] == 2
    assert pairs["listeners_closed"] >= 1000
    assert pairs["watches_started"] - pairs["watches_stopped"] == after["watches"] == 2
    assert pairs["admin_servers_opened"] - pairs["admin_servers_closed"] == 1
    # Every closed listener's own pairs balance: UDP and TCP sockets, connections, tasks.
    assert pairs["retired_sockets_opened"] == pairs["retired_sockets_closed"] >= 2 * 1000
    assert pairs["retired_connections_opened"] == pairs["retired_connections_closed"]
    assert pairs["retired_tasks_started"] == pairs["retired_tasks_finished"]
    stats = result.resolver_stats
    assert stats["loops_started"] - stats["loops_stopped"] == stats["loops_running"] == 2
    assert stats["flights_started"] == stats["flights_finished"]
