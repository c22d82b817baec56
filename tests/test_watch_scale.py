"""Many watches at once: more watched questions than the cache, a queue for query slots, a
process that falls behind, and a dead upstream under every loop (issue 9's benchmarks).

Each test is a defect the 10,000-name benchmarks found, scaled down: watched
answers evicted by the LRU before their refresh, lookups failing while
queued for a slot, stale flags flapping while the upstream answers, and
thousands of loops polling a dead upstream.
"""

from __future__ import annotations

import contextlib
import gc
import time
import types
from collections.abc import Callable

import anyio
import pytest

import srvwatch
from srvwatch.testing import Fault, ZoneServer
from srvwatch.watch import Ticker
from tests.dns_servers import KnotFactory

pytestmark = pytest.mark.anyio

NAMES = 30

SOA = "@ 5 IN SOA ns hostmaster 1 3600 600 86400 5\n@ 30 IN NS ns\nns 30 IN A 127.0.0.1\n"


def glue_zone(names: int = NAMES) -> str:
    """``_sI._tcp`` SRV names whose one target is in the zone: one query per refresh."""
    lines = ["$TTL 30", SOA]
    lines += [f"_s{i}._tcp SRV 0 0 80 t{i}" for i in range(names)]
    lines += [f"t{i} A 10.0.0.{i}" for i in range(names)]
    return "\n".join(lines) + "\n"


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Return once ``predicate()`` holds, polled every 20 ms; fail after ``within`` seconds."""
    for _ in range(round(within / 0.02)):
        if predicate():
            return
        await anyio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def watch_all(
    r: srvwatch.Resolver, names: int, seen: dict[int, list[srvwatch.Update]]
) -> None:
    async def one(i: int) -> None:
        async with r.watch(f"_s{i}._tcp.svc.test.") as updates:
            async for update in updates:
                seen.setdefault(i, []).append(update)

    async with anyio.create_task_group() as tg:
        for i in range(names):
            tg.start_soon(one, i)


@pytest.mark.knot
async def test_watched_answers_are_never_evicted_by_more_watches_than_the_cache(
    knot_factory: KnotFactory,
) -> None:
    """30 names without glue need 90 entries (SRV, A, AAAA); the cache holds 10 unwatched."""
    near = "$ORIGIN svc.test.\n" + SOA
    near += "".join(f"_s{i}._tcp 0 IN SRV 0 0 80 w{i}.other.test.\n" for i in range(NAMES))
    far = "$ORIGIN other.test.\n" + SOA.replace("ns hostmaster", "ns.other.test. hm.other.test.")
    far = far.replace("@ 5 IN SOA", "@ 30 IN SOA").replace("86400 5", "86400 30")  # NODATA: 30 s
    far += "".join(f"w{i} 30 IN A 10.1.0.{i}\n" for i in range(NAMES))
    knot = knot_factory(near, extra_zones={"other.test.": far})
    policy = srvwatch.Policy(min_ttl=0.3, max_ttl=300, cache_size=10)
    seen: dict[int, list[srvwatch.Update]] = {}
    try:
        async with srvwatch.Resolver([knot.address()], policy=policy) as r:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_all, r, NAMES, seen)
                await eventually(lambda: len(seen) == NAMES and r.ready)
                await anyio.sleep(2.0)  # several SRV refreshes each, within the targets' 30 s
                asked = r.queries_by_name()
                stats = r.stats()
                tg.cancel_scope.cancel()
            # The LRU bound holds again once no watch needs the entries.
            assert r.stats()["cache_entries"] <= policy.cache_size
    finally:
        knot.stop()
    assert all(asked[f"_s{i}._tcp.svc.test."] >= 3 for i in range(NAMES))
    # Each target's A and AAAA were asked once: never evicted before their own TTL.
    assert {asked[f"w{i}.other.test."] for i in range(NAMES)} == {2}
    assert stats["cache_evictions"] == 0
    assert stats["cache_entries"] == 3 * NAMES
    assert all(u.endpoints.endpoints[0].addresses for ups in seen.values() for u in ups)


async def test_a_watch_queued_for_a_query_slot_does_not_fail() -> None:
    """One query slot, 30 refreshes of 20 ms each at start-up: the last waits 0.6 s, past the
    0.3 s lifetime. A queued lookup has not started: every first update is the answer."""
    policy = srvwatch.Policy(timeout=0.2, lifetime=0.3, min_ttl=30, max_ttl=30)
    seen: dict[int, list[srvwatch.Update]] = {}
    async with ZoneServer(glue_zone()) as server:
        server.inject(Fault(latency=0.02))
        async with srvwatch.Resolver([server.address], policy=policy, max_in_flight=1) as r:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_all, r, NAMES, seen)
                await eventually(lambda: len(seen) == NAMES and r.ready)
                tg.cancel_scope.cancel()
    firsts = [seen[i][0] for i in range(NAMES)]
    errors = [u.error for u in firsts if u.error]
    assert not errors, errors[:3]
    assert all(u.endpoints.endpoints[0].addresses == (f"10.0.0.{i}",) for i, u in enumerate(firsts))


async def test_one_shot_lookups_still_end_within_the_lifetime_when_queued() -> None:
    """A caller waiting on resolve() is told within the lifetime, queue included."""
    policy = srvwatch.Policy(timeout=0.5, lifetime=0.3)
    async with ZoneServer(glue_zone()) as server:
        server.inject(Fault(latency=0.2))
        async with srvwatch.Resolver([server.address], policy=policy, max_in_flight=1) as r:
            started = time.monotonic()
            results = []

            async def one(i: int) -> None:
                try:
                    results.append(await r.resolve(f"t{i}.svc.test.", "A"))
                except srvwatch.ResolveTimeout as exc:
                    results.append(exc)

            async with anyio.create_task_group() as tg:
                for i in range(5):
                    tg.start_soon(one, i)
            elapsed = time.monotonic() - started
    assert elapsed < 0.3 + 0.25, elapsed
    assert any(isinstance(x, srvwatch.ResolveTimeout) for x in results)
    assert any(not isinstance(x, Exception) for x in results)


async def test_a_process_that_falls_behind_does_not_flap_stale_while_upstream_answers() -> None:
    """30 names at a 0.3 s floor through one query slot of 20 ms: a round takes 0.6 s, so
    every name's data expires before its refresh comes up. The upstream answers every query:
    the names are late, not failing, and are never flagged stale."""
    policy = srvwatch.Policy(min_ttl=0.3, max_ttl=0.3, stale_after=0.1, timeout=1.0, lifetime=2)
    seen: dict[int, list[srvwatch.Update]] = {}
    async with ZoneServer(glue_zone()) as server:
        server.inject(Fault(latency=0.02))
        async with srvwatch.Resolver([server.address], policy=policy, max_in_flight=1) as r:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_all, r, NAMES, seen)
                await eventually(lambda: len(seen) == NAMES and r.ready)
                before = r.stats()["queries"]
                await anyio.sleep(2.0)
                refreshed = r.stats()["queries"] - before
                tg.cancel_scope.cancel()
    assert refreshed >= NAMES  # about a round every 0.6 s: they did fall behind
    stale = [u for ups in seen.values() for u in ups if u.stale]
    assert not stale, (len(stale), stale[0].error)


async def test_watch_loops_wait_for_a_dead_upstream_to_recover_instead_of_polling() -> None:
    """50 names, the upstream silent: one loop carries the probes, the others wait. Each name
    still says stale once; every name is fresh again soon after the upstream answers."""
    names = 50
    policy = srvwatch.Policy(
        min_ttl=0.3, max_ttl=0.3, timeout=0.1, lifetime=0.3, backoff_base=0.2, backoff_max=0.4
    )
    seen: dict[int, list[srvwatch.Update]] = {}
    async with ZoneServer(glue_zone(names)) as server:
        async with srvwatch.Resolver([server.address], policy=policy) as r:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_all, r, names, seen)
                await eventually(lambda: len(seen) == names and r.ready)
                server.inject(Fault(drop=True))
                await eventually(lambda: all(seen[i][-1].stale for i in range(names)))
                s0 = r.stats()
                await anyio.sleep(2.0)  # every loop has failed at least once: all wait now
                s1 = r.stats()
                server.clear_faults()
                recovered = time.monotonic()
                await eventually(lambda: not any(seen[i][-1].stale for i in range(names)))
                fresh_after = time.monotonic() - recovered
                tg.cancel_scope.cancel()
    fast_failures = s1["fast_failures"] - s0["fast_failures"]
    sent = s1["queries"] - s0["queries"]
    # Probes step 0.2-0.4 s: about 6 in 2 s, one query each. Polling loops failed ~300 times.
    assert fast_failures <= 10, fast_failures
    assert sent <= 12, sent
    for i in range(names):
        flags = [u.stale for u in seen[i]]
        assert flags.count(True) == 1, (i, flags)
    # The next probe (<= 0.4 s), then each loop within one floor (0.3 s), plus a margin.
    assert fresh_after <= 0.4 + 0.3 + 0.5, fresh_after


async def test_refreshes_leave_no_reference_cycles() -> None:
    """A failed lookup kept with its traceback (an AAAA NODATA on every refresh of a target
    without glue, a fast failure per refresh in an outage) is a reference cycle: its frame
    holds the error. Left to the cyclic GC, thousands a second made it run full collections
    every few seconds at 10,000 watches."""
    zone = glue_zone(5) + "".join(f"_n{i}._tcp SRV 0 0 80 w{i}.far.test.\n" for i in range(5))
    policy = srvwatch.Policy(min_ttl=0.05, max_ttl=0.05, negative_min_ttl=0.05)
    async with ZoneServer(zone) as server:
        async with srvwatch.Resolver([server.address], policy=policy) as r:

            async def one(name: str) -> None:
                async with r.watch(name) as updates:
                    async for _ in updates:
                        pass

            async with anyio.create_task_group() as tg:
                for i in range(5):
                    tg.start_soon(one, f"_s{i}._tcp.svc.test.")
                    tg.start_soon(one, f"_n{i}._tcp.svc.test.")  # its target: NXDOMAIN here
                await anyio.sleep(0.3)
                gc.collect()
                gc.set_debug(gc.DEBUG_SAVEALL)
                try:
                    await anyio.sleep(0.5)  # ~10 refreshes of each name
                    gc.collect()
                finally:
                    gc.set_debug(0)
                garbage = list(gc.garbage)
                gc.garbage.clear()
                tg.cancel_scope.cancel()
    errors = [o for o in garbage if isinstance(o, srvwatch.ResolveError)]
    ours = [
        o
        for o in garbage
        if isinstance(o, types.FrameType) and "/srvwatch/" in o.f_code.co_filename
    ]
    assert not errors, (len(errors), errors[:3])
    assert not ours, (len(ours), [f.f_code.co_name for f in ours[:10]])


@pytest.mark.knot
async def test_a_stalled_process_does_not_flap_stale_while_upstream_answers(
    knot_factory: KnotFactory,
) -> None:
    """The event loop blocked for 1.5 s (a full GC pass of a large heap takes ~1 s at 10,000
    watches): every name's data expires meanwhile, yet Knot answers as soon as the refreshes
    go out. The stale timer, late too, must not flag them first (582 flaps on trio)."""
    names = 10
    knot = knot_factory(glue_zone(names))
    policy = srvwatch.Policy(min_ttl=0.5, max_ttl=0.5, stale_after=0.3, jitter=0.2)
    seen: dict[int, list[srvwatch.Update]] = {}
    try:
        async with srvwatch.Resolver([knot.address()], policy=policy) as r:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_all, r, names, seen)
                await eventually(lambda: len(seen) == names and r.ready)
                for _ in range(3):
                    await anyio.sleep(0.7)
                    time.sleep(1.5)  # noqa: ASYNC251 - the stall under test
                await anyio.sleep(1.0)
                tg.cancel_scope.cancel()
    finally:
        knot.stop()
    stale = [u for ups in seen.values() for u in ups if u.stale]
    assert not stale, (len(stale), stale[0].error)
    assert all(len(seen[i]) == 1 for i in range(names))


async def test_closing_the_last_watch_unpins_its_answers_at_once() -> None:
    """The pins are released when the last watcher leaves, not when the loop's task next runs:
    right after the watches close, the LRU bound holds (it failed on trio in CI, the
    loops' tasks not yet resumed)."""
    policy = srvwatch.Policy(cache_size=1)
    async with ZoneServer(glue_zone()) as server:
        async with srvwatch.Resolver([server.address], policy=policy) as r:
            async with contextlib.AsyncExitStack() as stack:
                for i in range(5):
                    updates = await stack.enter_async_context(r.watch(f"_s{i}._tcp.svc.test."))
                    await updates.__anext__()
                assert r.stats()["cache_entries"] == 5  # pinned, beyond the bound of 1
            assert r.stats()["cache_entries"] <= policy.cache_size


async def test_after_a_stall_the_shared_wake_ups_catch_up_gradually() -> None:
    """200 loops due every 5 ms, then the process stalls for 0.5 s (a gen-2 GC pause took
    0.8 s at 10,000 watches). The 100 loops due meanwhile were released together, a burst
    of twice the steady rate at the server; now they catch up at 1.5x the real rate."""
    woke: list[float] = []

    async def sleeper(delay: float) -> None:
        await ticker.sleep(delay)
        woke.append(time.monotonic())

    async with anyio.create_task_group() as tg:
        ticker = Ticker(tg.start_soon)
        for i in range(200):
            tg.start_soon(sleeper, 0.1 + i * 0.005)
        await anyio.wait_all_tasks_blocked()
        start = time.monotonic()
        await anyio.sleep(0.1)
        time.sleep(0.5)  # noqa: ASYNC251  (the stall: nothing runs)
        resumed = time.monotonic()
    burst = sum(1 for t in woke if 0 <= t - resumed <= 0.05)
    assert len(woke) == 200
    assert burst <= 30, burst  # 110 when released at once; 1.5x catch-up: ~17
    assert max(woke) - start <= 0.1 + 1.0 + 2 * 0.5 + 0.3  # late by at most ~2x the stall


async def test_closing_while_loops_wake_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """A loop woken just before the close runs its refresh after it: the lookup found the
    resolver closed and logged "unexpected error in refresh" with a traceback (thousands at
    the end of a 10,000-name run on trio). The close's cancellation ends it quietly."""
    policy = srvwatch.Policy(min_ttl=0.05, max_ttl=0.05)
    async with ZoneServer(glue_zone(NAMES)) as server:
        for attempt in range(20):
            seen: dict[int, list[srvwatch.Update]] = {}
            async with anyio.create_task_group() as tg:
                async with srvwatch.Resolver([server.address], policy=policy) as r:
                    tg.start_soon(watch_all, r, NAMES, seen)
                    await eventually(lambda: len(seen) == NAMES)  # noqa: B023
                    await anyio.sleep(0.1 + attempt * 0.007)
                # Closed under its watchers, as when the resolver's block ends first.
                tg.cancel_scope.cancel()
    errors = [rec.getMessage() for rec in caplog.records if rec.levelname == "ERROR"]
    assert not errors, errors[:3]
