"""Continuous watching against a live Knot server and under faults: changes, outages, no storms."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator

import anyio
import pytest

import srvwatch
from srvwatch.testing import Fault, ZoneServer
from tests import zones
from tests.dns_servers import KnotFactory, KnotServer

pytestmark = pytest.mark.anyio

MIN_TTL = 0.1
JITTER = 0.2


def fast_policy(**overrides: float) -> srvwatch.Policy:
    settings: dict[str, float] = dict(
        min_ttl=MIN_TTL,
        max_ttl=MIN_TTL,
        jitter=JITTER,
        negative_min_ttl=MIN_TTL,
        timeout=0.05,
        lifetime=0.1,
        backoff_base=0.05,
        backoff_max=0.2,
    )
    settings.update(overrides)
    return srvwatch.Policy(**settings)  # type: ignore[arg-type]


@pytest.fixture
def knot(knot_factory: KnotFactory) -> Iterator[KnotServer]:
    server = knot_factory()
    yield server
    server.stop()


def targets(update: srvwatch.Update) -> set[str]:
    return {e.target for e in update.endpoints}


async def next_update(updates: srvwatch.Updates, limit: float = 2.0) -> srvwatch.Update:
    with anyio.fail_after(limit):
        return await updates.__anext__()


async def test_record_changes_reach_every_subscriber_in_time(knot: KnotServer) -> None:
    async with srvwatch.Resolver([knot.address()], policy=fast_policy()) as r:
        async with r.watch(zones.HTTP_SRV) as a, r.watch(zones.HTTP_SRV) as b:
            first = [await next_update(a), await next_update(b)]
            assert all(u.version == 1 and targets(u) == set(zones.HTTP_TARGETS) for u in first)
            assert first[0].added == first[0].endpoints.endpoints
            assert r.stats()["loops_started"] == 1  # two subscribers, one loop

            # A backend is added (its address first, so no refresh sees it half-made):
            # both subscribers see it within min_ttl * (1 + jitter) + RTT.
            await anyio.to_thread.run_sync(knot.set_records, "d.api", "A", 30, ["127.0.0.14"])
            await anyio.to_thread.run_sync(
                knot.set_records,
                "_http._tcp.api",
                "SRV",
                30,
                [
                    "10 60 8080 a.api.svc.test.",
                    "10 40 8080 b.api.svc.test.",
                    "20 0 8080 c.api.svc.test.",
                    "10 10 8080 d.api.svc.test.",
                ],
            )
            changed_at = time.monotonic()
            budget = MIN_TTL * (1 + JITTER) + 0.15  # one refresh period, plus RTT and noise
            for updates in (a, b):
                update = await next_update(updates)
                assert [e.target for e in update.added] == ["d.api.svc.test."]
                assert update.removed == ()
                assert update.version == 2
                assert not update.stale
            assert time.monotonic() - changed_at < budget

            # A target's address changes: removed + added for that endpoint only.
            await anyio.to_thread.run_sync(knot.set_records, "b.api", "A", 30, ["127.0.0.99"])
            update = await next_update(a)
            assert [e.addresses for e in update.added] == [("127.0.0.99",)]
            assert [e.addresses for e in update.removed] == [("127.0.0.12",)]


async def test_watch_addresses_of_a_name(knot: KnotServer) -> None:
    async with srvwatch.Resolver([knot.address()], policy=fast_policy()) as r:
        async with r.watch(zones.MULTI, "A") as updates:
            first = await next_update(updates)
            assert {e.addresses[0] for e in first.endpoints} == set(zones.MULTI_A)
            await anyio.to_thread.run_sync(knot.set_records, "multi", "A", 30, ["127.0.0.41"])
            update = await next_update(updates)
            assert [e.addresses for e in update.removed] == [("127.0.0.42",)]


async def test_outage_keeps_endpoints_flags_stale_once_and_recovers(knot: KnotServer) -> None:
    policy = fast_policy()
    async with srvwatch.Resolver([knot.address()], policy=policy) as r:
        async with r.watch(zones.HTTP_SRV) as updates:
            first = await next_update(updates)
            await anyio.to_thread.run_sync(knot.stop)
            queries_before = r.stats()["queries"]
            outage_started = time.monotonic()
            stale = await next_update(updates)
            assert stale.stale
            assert stale.endpoints.stale
            assert stale.error
            assert "127.0.0.1" in stale.error
            assert (
                stale.endpoints.endpoints == first.endpoints.endpoints
            )  # failure is not emptiness
            assert stale.added == stale.removed == ()
            # No second stale update while the outage lasts.
            with anyio.move_on_after(1.0):
                extra = await updates.__anext__()
                pytest.fail(f"unexpected update during the outage: {extra}")
            outage = time.monotonic() - outage_started
            sent = r.stats()["queries"] - queries_before
            assert sent <= outage_query_bound(policy, outage), sent
            await anyio.to_thread.run_sync(knot.start)
            recovered = await next_update(updates, limit=policy.backoff_max * 2 + 1.0)
            assert not recovered.stale
            assert recovered.error is None
            assert recovered.endpoints.endpoints == first.endpoints.endpoints


def outage_query_bound(policy: srvwatch.Policy, duration: float) -> int:
    """Most queries a watch can send in ``duration`` of outage, from the policy's minimum waits.

    Loop refreshes are at least ``backoff/2`` apart (equal jitter, capped), and
    each lookup makes at most one attempt per ``timeout * 0.1 * 2**k / 2``
    retry wait within its lifetime.
    """
    per_lookup, waited, step = 1, 0.0, policy.timeout * 0.1
    while waited < policy.lifetime:
        waited += min(step, policy.timeout) / 2
        per_lookup += 1
        step *= 2
    refreshes, elapsed, failures = 1, 0.0, 1
    while elapsed < duration:
        elapsed += min(policy.backoff_base * 2 ** (failures - 1), policy.backoff_max) / 2
        refreshes += 1
        failures += 1
    return refreshes * per_lookup


async def test_thousand_subscribers_one_loop_bounded_queries(knot: KnotServer) -> None:
    min_ttl, duration = 0.5, 2.0
    policy = srvwatch.Policy(min_ttl=min_ttl, max_ttl=min_ttl)
    before = knot.query_count()
    seen: list[int] = []

    async def subscriber(r: srvwatch.Resolver, done: anyio.Event) -> None:
        async with r.watch(zones.ZERO_SRV) as updates:
            update = await next_update(updates)
            seen.append(update.version)
            await done.wait()

    async with srvwatch.Resolver([knot.address()], policy=policy) as r:
        done = anyio.Event()
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(1000):
                tg.start_soon(subscriber, r, done)
            await anyio.sleep(duration)
            assert r.stats()["loops_running"] == 1
            done.set()
        elapsed = time.monotonic() - started
    queries = knot.query_count() - before
    assert len(seen) == 1000
    assert 1 <= queries <= elapsed / min_ttl + 2, (queries, elapsed)
    stats = r.stats()
    assert stats["watches_started"] == stats["watches_stopped"] == 1000
    assert stats["loops_started"] == stats["loops_stopped"] == 1


ZERO_ZONE = """\
$TTL 0
@          SOA  ns hostmaster 1 3600 600 86400 0
@          NS   ns
_x._tcp    SRV  10 10 80 t
t          A    10.0.0.1
"""


@pytest.mark.parametrize(
    "case", ["ttl0", "nxdomain_soa_min_0", "nodata_soa_min_0", "servfail", "timeout"]
)
async def test_loop_never_spins(case: str) -> None:
    """Whatever the server returns, a watch asks at most about once per floor or backoff."""
    policy = fast_policy()
    name = {"nxdomain_soa_min_0": "_nope._tcp.svc.test.", "nodata_soa_min_0": "t.svc.test."}.get(
        case, "_x._tcp.svc.test."
    )
    async with (
        ZoneServer(ZERO_ZONE) as server,
        srvwatch.Resolver([server.address], policy=policy) as r,
    ):
        if case == "servfail":
            server.inject(Fault(rcode="SERVFAIL"))
        if case == "timeout":
            server.inject(Fault(drop=True))
        duration = 1.0
        async with r.watch(name) as updates:
            first = await next_update(updates)
            await anyio.sleep(duration)
        queries = server.query_count()
    if case in ("servfail", "timeout"):
        assert first.stale
        assert first.error
        assert queries <= outage_query_bound(policy, duration + 0.2)
    else:
        assert not first.stale
        assert queries <= (duration + 0.2) / (MIN_TTL * (1 - JITTER)) + 2, queries
    assert queries >= 2  # it did keep refreshing


async def test_slow_subscriber_gets_the_latest_state_only() -> None:
    async with (
        ZoneServer(ZERO_ZONE) as server,
        srvwatch.Resolver([server.address], policy=fast_policy()) as r,
    ):
        async with r.watch("_x._tcp.svc.test") as slow, r.watch("_x._tcp.svc.test") as fast:
            assert (await next_update(slow)).version == 1
            assert (await next_update(fast)).version == 1
            for i in range(2, 5):
                server.set_records("t", "A", [f"10.0.0.{i}"], ttl=0)
                update = await next_update(fast)
                assert update.endpoints.endpoints[0].addresses == (f"10.0.0.{i}",)
            # The slow one skips straight to the newest state, diffed against what it saw.
            update = await next_update(slow)
            assert update.version == 4
            assert [e.addresses for e in update.removed] == [("10.0.0.1",)]
            assert [e.addresses for e in update.added] == [("10.0.0.4",)]
            assert slow.latest() is not None


async def test_readiness_reports_pending_names() -> None:
    async with (
        ZoneServer(ZERO_ZONE) as server,
        srvwatch.Resolver([server.address], policy=fast_policy(timeout=1.0, lifetime=2.0)) as r,
    ):
        server.inject(Fault(latency=0.3))  # a slow answer, well within the timeout
        assert r.ready  # nothing watched yet
        async with r.watch("_x._tcp.svc.test") as updates:
            await anyio.sleep(0.05)
            assert not r.ready
            assert r.pending() == ["_x._tcp.svc.test."]  # canonical: every spelling is one name
            update = await next_update(updates)
            assert not update.stale
            assert r.ready
            assert r.pending() == []


async def test_bad_watch_arguments() -> None:
    async with srvwatch.Resolver(["127.0.0.1:1"]) as r:
        with pytest.raises(ValueError, match="not a valid DNS name"):
            async with r.watch("a..b"):
                pass
        with pytest.raises(ValueError, match="TXT"):
            async with r.watch("a.test", "TXT"):
                pass
        assert r.stats()["loops_started"] == 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_abandoned_cancelled_and_closed_watches_leave_nothing(
    anyio_backend: tuple[str, object],
) -> None:
    from tests.test_resolver_lifecycle import running_tasks

    backend = anyio_backend[0]
    async with ZoneServer(ZERO_ZONE) as server:
        gc.collect()
        fds, tasks = open_fds(), running_tasks(backend)
        for _ in range(3):
            async with srvwatch.Resolver([server.address], policy=fast_policy()) as r:
                # Subscribers that never read.
                async with r.watch("_x._tcp.svc.test"), r.watch("t.svc.test", "A"):
                    await anyio.sleep(0.25)
                # A subscriber cancelled mid-stream.
                with anyio.move_on_after(0.25):
                    async with r.watch("_x._tcp.svc.test") as updates:
                        async for _update in updates:
                            server.set_records("t", "A", [f"10.1.0.{_update.version}"], ttl=0)
                # Breaking out of the loop.
                async with r.watch("_x._tcp.svc.test") as updates:
                    async for _update in updates:
                        break
                assert r.stats()["loops_running"] == 0
                # Closed with watches still active and a reader waiting.
                async with anyio.create_task_group() as tg:

                    async def reader(r: srvwatch.Resolver = r) -> None:
                        async with r.watch("_x._tcp.svc.test") as updates:
                            async for _update in updates:
                                pass  # ends when the resolver closes

                    tg.start_soon(reader)
                    await anyio.sleep(0.15)
                    await r.aclose()
            stats = r.stats()
            assert stats["sockets_opened"] == stats["sockets_closed"]
            assert stats["loops_started"] == stats["loops_stopped"]
            assert stats["watches_started"] == stats["watches_stopped"]
            assert stats["flights_started"] == stats["flights_finished"]
        gc.collect()
        assert open_fds() == fds
        assert running_tasks(backend) == tasks


async def test_module_level_watch_owns_its_resolver(knot_server: KnotServer) -> None:
    async with srvwatch.watch(
        zones.HTTP_SRV, nameservers=[knot_server.address()], policy=fast_policy()
    ) as updates:
        update = await next_update(updates)
        assert targets(update) == set(zones.HTTP_TARGETS)


async def test_stale_endpoints_are_dropped_after_the_stale_window() -> None:
    async with (
        ZoneServer(ZERO_ZONE) as server,
        srvwatch.Resolver([server.address], policy=fast_policy(stale_ttl=0.4)) as r,
    ):
        async with r.watch("_x._tcp.svc.test") as updates:
            first = await next_update(updates)
            assert len(first.endpoints) == 1
            server.inject(Fault(drop=True))
            stale = await next_update(updates)
            assert stale.stale
            assert stale.endpoints.endpoints == first.endpoints.endpoints
            dropped = await next_update(updates)
            assert dropped.stale
            assert dropped.error
            assert len(dropped.endpoints) == 0
            assert [e.target for e in dropped.removed] == ["t.svc.test."]
            server.clear_faults()
            recovered = await next_update(updates)
            assert not recovered.stale
            assert len(recovered.endpoints) == 1


async def test_a_name_failing_from_the_start_is_not_ready() -> None:
    async with (
        ZoneServer(ZERO_ZONE) as server,
        srvwatch.Resolver([server.address], policy=fast_policy()) as r,
    ):
        server.inject(Fault(rcode="SERVFAIL"))
        async with r.watch("_x._tcp.svc.test") as updates:
            first = await next_update(updates)
            assert first.stale
            assert first.error
            assert "SERVFAIL" in first.error
            assert len(first.endpoints) == 0
            assert not r.ready
            assert r.pending() == ["_x._tcp.svc.test."]  # canonical: every spelling is one name
            server.clear_faults()
            recovered = await next_update(updates)
            assert not recovered.stale
            assert len(recovered.endpoints) == 1
            assert r.ready


async def test_a_loop_survives_an_unexpected_error_in_refresh() -> None:
    from srvwatch.endpoints import Endpoint, EndpointSet
    from srvwatch.metrics import Counters
    from srvwatch.watch import Updates, WatchLoop

    calls = 0
    good = EndpointSet.build("_x._tcp.svc.test.", [Endpoint("t.svc.test.", 80)], ttl=0.05)

    async def flaky_refresh() -> EndpointSet:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("a bug, not a DNS failure")
        return good

    policy = fast_policy(backoff_base=0.01, backoff_max=0.02)
    loop = WatchLoop("_x._tcp.svc.test.", flaky_refresh, policy, Counters(), time.monotonic)
    updates = Updates(loop)
    loop.subscribers.add(updates)
    async with anyio.create_task_group() as tg:
        tg.start_soon(loop.run)
        first = await next_update(updates)
        assert first.stale
        assert first.error == "a bug, not a DNS failure"
        recovered = await next_update(updates)
        assert recovered.endpoints.endpoints == good.endpoints
        assert not recovered.stale
        loop.stop()
    assert calls >= 3
    assert loop.finished
