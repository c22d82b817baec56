"""Quiet outages against a real Knot: 1,000 watched names through a stop and a restart.

Knot is stopped under load and started again on the same port. While it is
down nothing can count at the server, so srvwatch's own query counter is
read; after the restart Knot counts. Also: SRV targets refreshed on their
own TTL, and unchanged refreshes that parse nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import anyio
import pytest

import srvwatch
from tests.dns_servers import KnotFactory, KnotServer

pytestmark = [pytest.mark.anyio, pytest.mark.knot]

NAMES = 1000
FLOOR = 1.0
OUTAGE = 4.0

SOA = (
    "@ 5 IN SOA ns.svc.test. hostmaster.svc.test. 1 3600 600 86400 5\n"
    "@ 30 IN NS ns\n"
    "ns 30 IN A 127.0.0.1\n"
)


def many_names_zone() -> str:
    lines = ["$ORIGIN svc.test.", SOA]
    for i in range(NAMES):
        lines.append(f"_s{i}._tcp 0 IN SRV 0 0 80 t{i % 50}")
    for t in range(50):
        lines.append(f"t{t} 0 IN A 10.0.{t}.1")
    return "\n".join(lines) + "\n"


@pytest.fixture
def knot(knot_factory: KnotFactory) -> Iterator[KnotServer]:
    server = knot_factory(many_names_zone())
    yield server
    server.stop()


async def test_thousand_names_through_an_outage(knot: KnotServer) -> None:
    # Probes back off from 0.5 s to at most 2 s here, so the restart is found quickly.
    policy = srvwatch.Policy(
        min_ttl=FLOOR,
        max_ttl=FLOOR,
        stale_after=0.5,
        timeout=0.5,
        backoff_base=0.5,
        backoff_max=2.0,
    )
    names = [f"_s{i}._tcp.svc.test." for i in range(NAMES)]
    stale_at: dict[str, list[float]] = {name: [] for name in names}
    fresh_at: dict[str, float] = {}
    phase = {"outage": 0.0, "restart": 0.0}
    async with srvwatch.Resolver([knot.address()], policy=policy) as r:

        async def watch(name: str) -> None:
            async with r.watch(name) as updates:
                async for update in updates:
                    assert len(update.endpoints) == 1  # failure is never emptiness
                    if update.stale:
                        stale_at[name].append(time.monotonic())
                    elif phase["restart"] and name not in fresh_at:
                        fresh_at[name] = time.monotonic()

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(watch, name)
            await anyio.sleep(3 * FLOOR)  # steady state
            assert r.ready
            steady_before = knot.query_count()
            await anyio.sleep(2 * FLOOR)
            steady_rate = (knot.query_count() - steady_before) / (2 * FLOOR)

            await anyio.to_thread.run_sync(knot.stop)
            phase["outage"] = time.monotonic()
            sent_before = r.stats()["queries"]
            await anyio.sleep(OUTAGE)
            sent_during = r.stats()["queries"] - sent_before
            probes = r.stats()["upstream_probes"]

            await anyio.to_thread.run_sync(knot.start)
            phase["restart"] = time.monotonic()
            recovered_at = 0.0
            per_second: list[int] = []
            last, second_started = knot.query_count(), time.monotonic()
            with anyio.fail_after(policy.backoff_max + 3 * FLOOR + 5):
                while len(fresh_at) < NAMES or time.monotonic() - phase["restart"] < 4:
                    await anyio.sleep(0.05)
                    if not recovered_at and r.stats()["upstream_recoveries"]:
                        recovered_at = time.monotonic()
                    if time.monotonic() - second_started >= 1.0:
                        now = knot.query_count()
                        per_second.append(now - last)
                        last, second_started = now, time.monotonic()
            tg.cancel_scope.cancel()

    # During the outage: the queries already on their way, then one probe per backoff step.
    assert probes <= OUTAGE / (policy.backoff_base / 2) + 1  # a handful, not one per name
    assert sent_during <= 60 + probes, (sent_during, probes)
    # Exactly one stale update per name, within expiry + stale_after + a margin.
    assert all(len(times) == 1 for times in stale_at.values()), Counter(map(len, stale_at.values()))
    latest_stale = max(times[0] for times in stale_at.values()) - phase["outage"]
    assert latest_stale <= FLOOR + policy.stale_after + 0.5, latest_stale
    # The restart is found by the next probe; from then every name is fresh within one
    # floor + 2 s, and the server never sees more than twice the steady rate in a second.
    assert 0 < recovered_at - phase["restart"] <= policy.backoff_max + 0.5
    assert max(fresh_at.values()) - recovered_at <= FLOOR + 2.0
    assert max(per_second) <= 2 * steady_rate, (per_second, steady_rate)


TARGETS_ZONE = f"""$ORIGIN svc.test.
{SOA}
_t._tcp 1 IN SRV 0 0 80 web.other.test.
"""
OTHER = """$ORIGIN other.test.
@ 5 IN SOA ns.other.test. hostmaster.other.test. 1 3600 600 86400 5
@ 30 IN NS ns.other.test.
ns 30 IN A 127.0.0.1
web 3 IN A 10.0.0.1
"""


async def test_srv_targets_are_refreshed_on_their_own_ttl(knot_factory: KnotFactory) -> None:
    knot = knot_factory(TARGETS_ZONE, extra_zones={"other.test.": OTHER})
    try:
        policy = srvwatch.Policy(min_ttl=0.3, max_ttl=300, jitter=0.2)
        async with srvwatch.Resolver([knot.address()], policy=policy) as r:
            async with r.watch("_t._tcp.svc.test.") as updates:
                with anyio.fail_after(5):
                    first = await updates.__anext__()
                assert [e.addresses for e in first.endpoints] == [("10.0.0.1",)]
                await anyio.sleep(2.0)  # two SRV refreshes or so, within the target's 3 s
                asked = r.queries_by_name()
                assert asked["_t._tcp.svc.test."] >= 3
                assert asked["web.other.test."] == 2  # its A and AAAA, once each
                changed = time.monotonic()
                await anyio.to_thread.run_sync(
                    knot.set_records, "web", "A", 3, ["10.0.0.2"], "other.test."
                )
                with anyio.fail_after(5):
                    second = await updates.__anext__()
                latency = time.monotonic() - changed
        assert [e.addresses for e in second.endpoints] == [("10.0.0.2",)]
        assert latency <= 3 * 1.2 + 0.5  # the target's TTL x (1 + jitter) + a round trip
    finally:
        knot.stop()


async def test_unchanged_refreshes_parse_nothing(knot_factory: KnotFactory) -> None:
    knot = knot_factory(many_names_zone())
    try:
        policy = srvwatch.Policy(min_ttl=0.2, max_ttl=0.2)
        async with srvwatch.Resolver([knot.address()], policy=policy) as r:
            async with r.watch("_s1._tcp.svc.test.") as updates:
                with anyio.fail_after(5):
                    first = await updates.__anext__()
                await anyio.sleep(1.5)
                stats = r.stats()
                assert stats["unchanged_replies"] >= 0.8 * (stats["queries"] - 3)
                await anyio.to_thread.run_sync(knot.set_records, "t1", "A", 0, ["10.0.1.9"])
                with anyio.fail_after(5):
                    second = await updates.__anext__()
        assert [e.addresses for e in first.endpoints] == [("10.0.1.1",)]
        assert [e.addresses for e in second.endpoints] == [("10.0.1.9",)]
        assert second.version == 2  # refreshes in between published nothing
    finally:
        knot.stop()
