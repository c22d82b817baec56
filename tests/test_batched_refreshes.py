"""Batched refreshes: watch refreshes due together go out together, and unchanged replies are
settled without waking their loops (issue 9's steady-state CPU).

A carried loop's task waits while its refreshes come back unchanged; anything
else (a change, a failure, a target to ask, a truncated or failing reply)
hands the refresh back to it, which must then behave exactly as before:
changes arrive in time, nothing is asked twice, outages go stale once, and
every socket and task opened for a batch is closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack

import anyio
import pytest

import srvwatch
from srvwatch.testing import Fault, ZoneServer
from srvwatch.watch import Ticker
from tests.batching import FLOOR, JITTER, carried_watches, fast_policy, first, srv_name, srv_zone
from tests.dns_servers import KnotFactory, KnotServer

pytestmark = pytest.mark.anyio

ORIGIN = "batch.test."
FAR = "far.test."
NAMES = 40


def zone(names: int = NAMES) -> str:
    return f"$ORIGIN {ORIGIN}\n" + srv_zone(names, f"_far._tcp SRV 10 10 7000 t.{FAR}")


FAR_ZONE = f"""\
$ORIGIN {FAR}
$TTL 0
@ SOA ns hostmaster 1 3600 600 86400 0
@ NS ns
ns A 127.0.0.1
t A 127.0.2.1
t AAAA ::2
"""


def policy() -> srvwatch.Policy:
    return fast_policy()


def name(i: int) -> str:
    return srv_name(ORIGIN, i)


@pytest.fixture(scope="module")
def knot(knot_factory: KnotFactory) -> Iterator[KnotServer]:
    """One Knot for the module: a test that changes a record puts it back."""
    server = knot_factory(zone(), ORIGIN, extra_zones={FAR: FAR_ZONE})
    yield server
    server.stop()


def most_refreshes_per_name(window: float) -> float:
    """Refreshes one name may make in ``window``: one per floor x (1 - jitter), and one more."""
    return window / (FLOOR * (1 - JITTER)) + 2


async def test_unchanged_refreshes_go_in_batches_and_changes_still_arrive(
    knot: KnotServer,
) -> None:
    async with srvwatch.Resolver([knot.address()], policy=policy()) as r, AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(r.watch(name(i))) for i in range(NAMES)]
        for stream in streams:
            await first(stream)
        await anyio.sleep(0.5)  # past every first (spread) refresh
        before, window = r.stats(), 1.5
        by_name = r.queries_by_name()
        await anyio.sleep(window)
        after = r.stats()
        queries = after["queries"] - before["queries"]
        batched = after["batched_refreshes"] - before["batched_refreshes"]
        batches = after["batches"] - before["batches"]
        assert queries >= NAMES * window / FLOOR * 0.8, after
        assert batched >= 0.9 * queries, (batched, queries)  # nothing changed: all settled so
        assert batches * 4 <= batched, (batches, batched)  # several refreshes per socket
        asked = {
            n: count - by_name.get(n, 0)
            for n, count in r.queries_by_name().items()
            if n.startswith("_s")
        }
        assert max(asked.values()) <= most_refreshes_per_name(window), asked

        # A target's address, then an SRV record, changed on Knot: both reach the watcher
        # within one floor x (1 + jitter) and a round trip, as before batching.
        limit = FLOOR * (1 + JITTER) + 0.5
        try:
            await anyio.to_thread.run_sync(knot.set_records, "t3", "A", 1, ["127.0.9.9"])
            with anyio.fail_after(limit):
                async for update in streams[3]:
                    if update.endpoints.endpoints[0].addresses == ("127.0.9.9",):
                        break
            await anyio.to_thread.run_sync(
                knot.set_records, "_s5._tcp", "SRV", 1, [f"10 10 9999 t5.{ORIGIN}"]
            )
            with anyio.fail_after(limit):
                async for update in streams[5]:
                    if update.endpoints.endpoints[0].port == 9999:
                        break
        finally:
            await anyio.to_thread.run_sync(knot.set_records, "t3", "A", 1, ["127.0.1.3"])
            await anyio.to_thread.run_sync(
                knot.set_records, "_s5._tcp", "SRV", 1, [f"10 10 8005 t5.{ORIGIN}"]
            )
        assert r.stats()["batched_refreshes"] > after["batched_refreshes"]  # carried again


async def test_targets_without_glue_are_refreshed_in_the_batch_and_never_asked_twice(
    knot: KnotServer,
) -> None:
    """The far target's addresses expire on every refresh (TTL 0, the floor): the batch asks
    them along with the SRV records and settles all three replies. Each question is asked
    once per refresh, and a change of the target's address still reaches the watcher. (The
    reply a batch cannot settle, kept for the loop's own query, is guarded in
    test_batched_refreshes_hostile.py, where Quiet.settle raises.)"""
    far, target = f"_far._tcp.{ORIGIN}", f"t.{FAR}"
    async with srvwatch.Resolver([knot.address()], policy=policy()) as r:
        async with r.watch(far) as stream:
            update = await first(stream)
            assert update.endpoints.endpoints[0].addresses == ("127.0.2.1", "::2")
            await anyio.sleep(0.5)
            before, window = r.queries_by_name(), 3.0
            stats = r.stats()
            await anyio.sleep(window)
            after = r.queries_by_name()
            asked = after[far] - before.get(far, 0)
            assert window / FLOOR * 0.7 <= asked <= most_refreshes_per_name(window), asked
            # A and AAAA of the target: at most once each per refresh.
            assert after[target] - before.get(target, 0) <= 2 * asked, (after, before)
            batched = r.stats()["batched_refreshes"] - stats["batched_refreshes"]
            assert batched >= asked * 0.8, (batched, asked)

            await anyio.to_thread.run_sync(knot.set_records, target, "A", 0, ["127.0.2.9"], FAR)
            try:
                with anyio.fail_after(FLOOR * (1 + JITTER) + 0.5):
                    async for update in stream:
                        if update.endpoints.endpoints[0].addresses == ("127.0.2.9", "::2"):
                            break
            finally:
                await anyio.to_thread.run_sync(knot.set_records, target, "A", 0, ["127.0.2.1"], FAR)


async def test_replies_queued_while_the_process_was_busy_are_no_timeout(
    knot: KnotServer,
) -> None:
    """The event loop blocked past a batch's deadline (a long GC pause, a blocking call)
    while the replies sat in the socket: they are read, not counted as a timeout that marks
    the server down."""
    async with srvwatch.Resolver([knot.address()], policy=policy()) as r, AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(r.watch(name(i))) for i in range(NAMES)]
        for stream in streams:
            await first(stream)
        for _ in range(3):
            await anyio.sleep(FLOOR / 2)
            batches = r.stats()["batches"]
            while r.stats()["batches"] == batches:  # noqa: ASYNC110 (a batch has just gone out)
                await anyio.sleep(0.001)
            time.sleep(policy().timeout * 1.5)  # noqa: ASYNC251 (block the loop past the deadline)
        await anyio.sleep(0.2)
        stats = r.stats()
        assert stats["timeouts"] == 0, stats
        assert r.upstreams()[0]["up"], r.upstreams()


async def test_replies_a_batch_cannot_use_go_the_usual_way() -> None:
    """Spoofed, truncated, failing and dropped replies to batched refreshes: the spoofed one
    is ignored, the others hand the refresh back to the loop, which retries over TCP, fails
    over, or marks the server down and goes stale once; endpoints are never lost."""
    async with ZoneServer(srv_zone(4), origin=ORIGIN) as server:
        async with srvwatch.Resolver([server.address], policy=policy()) as r:
            async with carried_watches(r, ORIGIN, 4) as streams:
                carried = r.stats()["batched_refreshes"]

                server.inject(Fault(wrong_id=True, name=name(0), count=3))
                server.inject(Fault(truncate=True, name=name(1), count=3))
                server.inject(Fault(rcode="SERVFAIL", name=name(2), count=1))
                await anyio.sleep(1.0)
                stats = r.stats()
                assert stats["ignored_responses"] >= 3  # the spoofed replies
                assert stats["tcp_queries"] >= 1  # the truncated ones, asked over TCP
                assert stats["batched_refreshes"] > carried
                for stream in streams:
                    latest = stream.latest()
                    assert latest is not None
                    assert not latest.stale, latest
                    assert len(latest.endpoints) == 1

                # Every query dropped: the batch times out, the server is marked down, each
                # watch says stale once and keeps its endpoints, then recovers.
                server.inject(Fault(drop=True))
                await anyio.sleep(FLOOR + 1.8 + 1.0)
                assert r.upstreams()[0]["up"] is False
                for stream in streams:
                    latest = stream.latest()
                    assert latest is not None
                    assert latest.stale
                    assert len(latest.endpoints) == 1
                server.clear_faults()
                with anyio.fail_after(3.0):
                    for stream in streams:
                        async for update in stream:
                            if not update.stale:
                                break
                recovered = r.stats()["batched_refreshes"]
                await anyio.sleep(0.5)
                assert r.stats()["batched_refreshes"] > recovered  # carried again
    stats = r.stats()
    assert stats["sockets_opened"] == stats["sockets_closed"]
    assert stats["tasks_running"] == 0


async def test_closing_mid_batch_balances_and_logs_nothing(
    knot: KnotServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Closed at moments spread over a floor, with batches on the wire: every socket and
    task opened for them is closed, and the close is no error."""
    caplog.set_level(logging.WARNING, logger="srvwatch")
    for attempt in range(6):
        async with srvwatch.Resolver([knot.address()], policy=policy()) as r:
            async with AsyncExitStack() as stack:
                streams = [await stack.enter_async_context(r.watch(name(i))) for i in range(NAMES)]
                for stream in streams:
                    await first(stream)
                await anyio.sleep(0.3 + attempt * FLOOR / 6)
                assert r.stats()["batches"] > 0
                await r.aclose()
        stats = r.stats()
        assert stats["sockets_opened"] == stats["sockets_closed"], stats
        assert stats["loops_started"] == stats["loops_stopped"], stats
        assert stats["tasks_running"] == 0, stats
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]


class Item:
    def __init__(self) -> None:
        self.finished = False


class CountingItem:
    """An item that counts how often the ticker asks whether it has finished."""

    reads = 0

    def __init__(self) -> None:
        self.done = False

    @property
    def finished(self) -> bool:
        CountingItem.reads += 1
        return self.done


async def test_the_ticker_hands_over_later_items_in_groups() -> None:
    """Items filed with ``later`` come due together every fifth tick, in one call; finished
    ones stay filed only until the next clean-up, and a closing ticker hands back the rest."""
    calls: list[tuple[list[object], bool, float]] = []

    def on_due(items: list[object], closing: bool) -> None:
        calls.append((items, closing, anyio.current_time()))

    async with anyio.create_task_group() as tg:
        ticker = Ticker(tg.start_soon, tick=0.01, on_due=on_due)
        start = anyio.current_time()
        items = [Item() for _ in range(10)]
        for i, item in enumerate(items):
            ticker.later(0.003 * i, item)  # spread over 27 ms: at most two groups of 50 ms
        await anyio.sleep(0.15)
        assert 1 <= len(calls) <= 2, calls
        assert sum(len(c[0]) for c in calls) == 10
        for _, closing, when in calls:
            assert not closing
            assert when - start <= 0.05 * 2 + 0.03

        # Finished items are dropped by the clean-up, not kept until their time comes.
        calls.clear()
        far = [Item() for _ in range(200)]
        for item in far:
            ticker.later(60.0, item)
            item.finished = True
        ticker.later(60.0, keep := Item())
        for _ in far:  # each finished item's loop ended
            ticker.sleeper_stopped()
        assert sum(map(len, ticker._due.values())) == 1
        tg.cancel_scope.cancel()
    assert [(items, closing) for items, closing, _ in calls] == [([keep], True)]


async def test_closing_many_carried_watches_costs_linear_work() -> None:
    """Each stopped loop tells the ticker; the clean-up of finished items is amortized.
    Before, with carried loops (no sleepers) every stop swept every filed item: closing
    2,000 watches read ``finished`` about two million times."""
    async with anyio.create_task_group() as tg:
        ticker = Ticker(tg.start_soon, tick=0.01, on_due=lambda items, closing: None)
        items = [CountingItem() for _ in range(2000)]
        for item in items:
            ticker.later(60.0, item)
        CountingItem.reads = 0
        for item in items:
            item.done = True
            ticker.sleeper_stopped()
        assert CountingItem.reads <= 8 * len(items), CountingItem.reads
        assert sum(map(len, ticker._due.values())) <= len(items) // 2
        tg.cancel_scope.cancel()


async def test_a_batch_that_cannot_be_sent_for_a_bug_hands_its_loops_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Sending a batch raised (a bug): the loops it had taken refresh themselves, logged,
    instead of waiting for a batch that never comes (they waited forever before)."""
    async with ZoneServer(srv_zone(3), origin=ORIGIN) as server:
        async with srvwatch.Resolver([server.address], policy=policy()) as r:
            async with carried_watches(r, ORIGIN, 3) as streams:

                def broken(asks: object) -> list[object]:
                    raise RuntimeError("a bug in sending")

                r._watches._send_batch = broken  # type: ignore[assignment]
                await anyio.sleep(0.3)
                before = server.query_count()
                await anyio.sleep(1.0)
                assert server.query_count() - before >= 3 * 1.0 / FLOOR * 0.6
                server.set_records(f"t1.{ORIGIN}", "A", ["127.0.9.1"], ttl=1)
                with anyio.fail_after(FLOOR * (1 + JITTER) + 1.0):
                    async for update in streams[1]:
                        if update.endpoints.endpoints[0].addresses == ("127.0.9.1",):
                            break
    assert any("cannot send a batch" in rec.getMessage() for rec in caplog.records)
