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
from collections.abc import Iterator
from contextlib import AsyncExitStack

import anyio
import pytest

import srvwatch
from srvwatch.testing import Fault, ZoneServer
from srvwatch.watch import Ticker
from tests.dns_servers import KnotFactory, KnotServer

pytestmark = pytest.mark.anyio

ORIGIN = "batch.test."
FAR = "far.test."
NAMES = 40
FLOOR = 0.2
JITTER = 0.2


def zone(names: int = NAMES) -> str:
    lines = [
        f"$ORIGIN {ORIGIN}",
        "$TTL 1",
        "@ SOA ns hostmaster 1 3600 600 86400 1",
        "@ NS ns",
        "ns A 127.0.0.1",
        f"_far._tcp SRV 10 10 7000 t.{FAR}",
    ]
    for i in range(names):
        lines.append(f"_s{i}._tcp SRV 10 10 {8000 + i} t{i}")
        lines.append(f"t{i} A 127.0.1.{i}")
    return "\n".join(lines) + "\n"


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
    return srvwatch.Policy(
        min_ttl=FLOOR, max_ttl=FLOOR, jitter=JITTER, negative_min_ttl=FLOOR,
        timeout=0.5, lifetime=1.0, backoff_base=0.1, backoff_max=0.4,
    )  # fmt: skip


def name(i: int) -> str:
    return f"_s{i}._tcp.{ORIGIN}"


@pytest.fixture
def knot(knot_factory: KnotFactory) -> Iterator[KnotServer]:
    server = knot_factory(zone(), ORIGIN, extra_zones={FAR: FAR_ZONE})
    yield server
    server.stop()


async def first(updates: srvwatch.Updates, limit: float = 3.0) -> srvwatch.Update:
    with anyio.fail_after(limit):
        return await updates.__anext__()


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
        assert r.stats()["batched_refreshes"] > after["batched_refreshes"]  # carried again


async def test_a_reply_a_batch_cannot_settle_is_not_asked_for_twice(knot: KnotServer) -> None:
    """The far target's addresses expire on every refresh, so the batch cannot settle the
    (unchanged) SRV reply: the loop refreshes the usual way with that reply, and asks Knot
    for the SRV records once per refresh, not twice (it did before the reply was kept)."""
    far = f"_far._tcp.{ORIGIN}"
    async with srvwatch.Resolver([knot.address()], policy=policy()) as r:
        async with r.watch(far) as stream:
            update = await first(stream)
            assert update.endpoints.endpoints[0].addresses == ("127.0.2.1", "::2")
            await anyio.sleep(0.5)
            before, window = r.queries_by_name().get(far, 0), 4.0
            unchanged = r.stats()["unchanged_replies"]
            await anyio.sleep(window)
            asked = r.queries_by_name()[far] - before
            assert asked <= most_refreshes_per_name(window), asked
            assert asked >= window / FLOOR * 0.7, asked
            assert r.stats()["unchanged_replies"] - unchanged >= asked - 2


async def test_replies_a_batch_cannot_use_go_the_usual_way() -> None:
    """Spoofed, truncated, failing and dropped replies to batched refreshes: the spoofed one
    is ignored, the others hand the refresh back to the loop, which retries over TCP, fails
    over, or marks the server down and goes stale once; endpoints are never lost."""
    zone_text = zone(4).replace(f"$ORIGIN {ORIGIN}\n", "")
    async with ZoneServer(zone_text, origin=ORIGIN) as server:
        async with srvwatch.Resolver([server.address], policy=policy()) as r:
            async with AsyncExitStack() as stack:
                streams = [await stack.enter_async_context(r.watch(name(i))) for i in range(4)]
                for stream in streams:
                    await first(stream)
                await anyio.sleep(0.5)
                carried = r.stats()["batched_refreshes"]
                assert carried > 0

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
        for _ in far:  # one stop per loop that ended
            ticker.sleeper_stopped()
        assert sum(map(len, ticker._due.values())) == 1
        tg.cancel_scope.cancel()
    assert [(items, closing) for items, closing, _ in calls] == [([keep], True)]
