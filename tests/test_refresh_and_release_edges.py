"""Edges of unchanged refreshes, the spread release after a recovery and the probe hand-off.

Real servers (ZoneServer) and real clients (dnspython) against the stub; each
test checks one thing a hostile user could break.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

import anyio
import anyio.to_thread
import dns.message
import dns.query
import pytest

import srvwatch
from srvwatch.listen import DnsListener
from srvwatch.server.stub import Stub
from srvwatch.testing import Fault, ZoneServer
from srvwatch.watch import Updates

pytestmark = pytest.mark.anyio

ZONE = """\
$TTL 3
@               SOA  ns hostmaster 1 3600 600 86400 5
@               NS   ns
ns              A    127.0.0.1
host            A    10.0.0.9
w1              A    10.0.1.1
w2              A    10.0.1.2
w3              A    10.0.1.3
"""
HOST = "host.svc.test."


async def ask(port: int, name: str) -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    reply: dns.message.Message = await anyio.to_thread.run_sync(
        lambda: dns.query.udp(query, "127.0.0.1", timeout=3.0, port=port)
    )
    return reply


def answer_ttl(message: dns.message.Message) -> int:
    return message.answer[0].ttl


async def test_stub_ttl_restarts_after_an_unchanged_refresh() -> None:
    """Counted down in the stub, then an unchanged refresh: the full TTL again, same entry."""
    policy = srvwatch.Policy(min_ttl=1, max_ttl=3)
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address], policy=policy) as r:
        stub = Stub(r)
        async with DnsListener(stub.answer, "127.0.0.1", 0, name="stub") as listener:
            assert answer_ttl(await ask(listener.port, HOST)) == 3
            entry = r.records.store.peek((HOST, 1))
            await anyio.sleep(1.1)
            assert answer_ttl(await ask(listener.port, HOST)) == 2  # counted down (hot path)
            await r.records.lookup(HOST, 1, refresh=True)
            assert r.records.store.peek((HOST, 1)) is entry  # unchanged: the same entry
            assert answer_ttl(await ask(listener.port, HOST)) == 3  # restarted, not 2
            await anyio.sleep(1.1)
            assert answer_ttl(await ask(listener.port, HOST)) == 2
            await anyio.sleep(1.0)
            assert answer_ttl(await ask(listener.port, HOST)) == 1
            assert server.query_count(HOST) == 2


async def test_a_stale_entry_refreshed_unchanged_is_fresh_again() -> None:
    """Stale (failure remembered) then the same bytes again: no failure, fresh TTLs."""
    policy = srvwatch.Policy(
        min_ttl=1, max_ttl=1, timeout=0.2, lifetime=0.5, servfail_ttl=0.3, stale_after=0.2
    )
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address], policy=policy) as r:
        stub = Stub(r)
        async with DnsListener(stub.answer, "127.0.0.1", 0, name="stub") as listener:
            assert answer_ttl(await ask(listener.port, HOST)) == 1
            entry = r.records.store.peek((HOST, 1))
            assert entry is not None
            server.inject(Fault(rcode="SERVFAIL"))
            await anyio.sleep(1.1)
            stale = await ask(listener.port, HOST)
            assert answer_ttl(stale) == int(policy.stale_answer_ttl)
            assert entry.failure is not None
            answer = await r.resolve(HOST, "A")
            assert answer.stale
            assert answer.ttl == 0
            server.clear_faults()
            await anyio.sleep(0.35)  # the remembered failure is over
            await r.records.lookup(HOST, 1, refresh=True)
            assert r.records.store.peek((HOST, 1)) is entry
            assert entry.failure is None
            assert entry.fresh(r.records.store.clock())
            assert answer_ttl(await ask(listener.port, HOST)) == 1  # not the stale 30
            answer = await r.resolve(HOST, "A")
            assert not answer.stale
            assert 0.5 < answer.ttl <= 1.0


async def test_a_changed_answer_after_unchanged_refreshes_is_noticed() -> None:
    policy = srvwatch.Policy(min_ttl=0.3, max_ttl=0.3, jitter=0.2)
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address], policy=policy) as r:
        stub = Stub(r)
        async with DnsListener(stub.answer, "127.0.0.1", 0, name="stub") as listener:
            async with r.watch(HOST, "A") as updates:
                with anyio.fail_after(5):
                    first = await updates.__anext__()
                    assert [e.addresses for e in first.endpoints.endpoints] == [("10.0.0.9",)]
                    await anyio.sleep(1.0)  # several unchanged refreshes
                    assert [rr.to_text() for rr in (await ask(listener.port, HOST)).answer[0]] == [
                        "10.0.0.9"
                    ]
                    server.set_records(HOST, "A", ["10.0.0.10"], ttl=3)
                    second = await updates.__anext__()
            assert [e.addresses for e in second.endpoints.endpoints] == [("10.0.0.10",)]
            await anyio.sleep(0.35)
            assert [rr.to_text() for rr in (await ask(listener.port, HOST)).answer[0]] == [
                "10.0.0.10"
            ]


OUTAGE = srvwatch.Policy(
    min_ttl=0.3,
    max_ttl=0.3,
    timeout=0.1,
    lifetime=0.3,
    backoff_base=0.2,
    backoff_max=0.2,
    stale_after=0.2,
)


RELEASE = srvwatch.Policy(
    min_ttl=1.0,
    max_ttl=1.0,
    jitter=0.0,
    timeout=0.1,
    lifetime=0.3,
    backoff_base=0.2,
    backoff_max=0.2,
    stale_after=0.2,
)
"""A 1 s floor without jitter, so a recovery's release takes a whole second to watch."""


def a_names(count: int) -> tuple[list[str], str]:
    """``count`` names with one A record each, and ZONE with them."""
    names = [f"n{i}.svc.test." for i in range(count)]
    return names, ZONE + "".join(f"n{i} A 10.1.0.{i}\n" for i in range(count))


async def _answered_watches(
    stack: AsyncExitStack, r: srvwatch.Resolver, names: list[str]
) -> list[Updates]:
    """An A watch per name, each past its first update, closed with ``stack``."""
    watches = [await stack.enter_async_context(r.watch(n, "A")) for n in names]
    with anyio.fail_after(3):
        for each in watches:
            await each.__anext__()
    return watches


async def _wait_until(predicate: Callable[[], bool], seconds: float) -> None:
    with anyio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 - polls state
            await anyio.sleep(0.02)


@pytest.mark.parametrize("heirs_too", [False, True], ids=["prober", "prober+heirs"])
async def test_closing_the_prober_and_its_heirs_together_leaves_a_prober(heirs_too: bool) -> None:
    """Eight A watches on a dead upstream: one carries the probes, seven are parked. Closing
    the carrier hands the turn to one parked loop (the last parked still there when the
    carrier's task ends); closed in the same instant too, that loop never takes it, and the
    first parked loop, left open, must still find the recovery. (Trio runs the cancelled
    tasks in random order: with six parked loops closed, the turn is lost in most runs.)"""
    names, zone = a_names(8)
    async with ZoneServer(zone) as server, srvwatch.Resolver([server.address], policy=OUTAGE) as r:
        health = r.transport.health
        stacks: dict[str, AsyncExitStack] = {}
        updates: dict[str, Updates] = {}
        for fqdn in names:
            stack = AsyncExitStack()
            updates[fqdn] = await stack.enter_async_context(r.watch(fqdn, "A"))
            stacks[fqdn] = stack
        with anyio.fail_after(3):
            for each in updates.values():
                assert not (await each.__anext__()).stale
        server.inject(Fault(drop=True))
        with anyio.fail_after(3):  # all expired and failed: stale, one prober, seven parked
            for each in updates.values():
                async for update in each:
                    if update.stale:
                        break
        await _wait_until(lambda: health.parked == 7 and health._prober is not None, 3)
        prober = health._prober
        parked = [loop.name for loop in health._parked]  # type: ignore[attr-defined]
        survivor = parked[0]
        closing = [prober.name] + (parked[1:] if heirs_too else [])  # type: ignore[attr-defined]
        for fqdn in closing:  # no checkpoint in between: closed in the same instant
            await stacks.pop(fqdn).aclose()
        server.clear_faults()
        try:
            with anyio.fail_after(3):  # probes every 0.2 s: the recovery is found at once
                async for update in updates[survivor]:
                    if not update.stale:
                        break
        finally:
            for stack in stacks.values():
                await stack.aclose()


async def test_closing_the_resolver_mid_release_balances_and_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    names, zone = a_names(60)
    policy = RELEASE
    caplog.set_level(logging.DEBUG, logger="srvwatch")
    async with ZoneServer(zone) as server:
        r = srvwatch.Resolver([server.address], policy=policy)
        async with r:
            health = r.transport.health
            async with AsyncExitStack() as stack:
                await _answered_watches(stack, r, names)
                server.inject(Fault(drop=True))
                await _wait_until(lambda: health.parked >= 50, 5)
                server.clear_faults()
                await _wait_until(lambda: 0 < health.parked < 40, 5)  # mid-release
                # Flap: down and up again while the release runs.
                server.inject(Fault(drop=True))
                await anyio.sleep(0.15)
                server.clear_faults()
                await anyio.sleep(0.2)
        stats = r.stats()
    errors = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert not errors, [rec.getMessage() for rec in errors]
    assert stats["loops_started"] == stats["loops_stopped"], stats
    assert stats["sockets_opened"] == stats["sockets_closed"], stats
    assert stats["tasks_running"] == 0, stats


async def test_a_flap_during_the_release_still_releases_every_loop() -> None:
    """Up, down within the release, up again: every parked loop refreshes in the end."""
    names, zone = a_names(40)
    policy = RELEASE
    async with ZoneServer(zone) as server, srvwatch.Resolver([server.address], policy=policy) as r:
        health = r.transport.health
        async with AsyncExitStack() as stack:
            watches = await _answered_watches(stack, r, names)
            server.inject(Fault(drop=True))
            await _wait_until(lambda: health.parked >= 35, 5)
            server.clear_faults()
            await _wait_until(lambda: 0 < health.parked < 30, 5)
            server.inject(Fault(drop=True))
            await _wait_until(lambda: not health.any_up, 3)
            left = health.parked
            assert left > 0
            server.clear_faults()
            started = time.monotonic()
            await _wait_until(lambda: health.parked == 0, 4)
            # Every loop comes back fresh within a probe step and one release window.
            with anyio.fail_after(4):
                for each in watches:
                    async for update in each:
                        if not update.stale:
                            break
            assert time.monotonic() - started < 3.5


async def test_a_watch_closed_and_reopened_at_once_keeps_its_answer_pinned() -> None:
    """WatchLoop.stop unpins eagerly; the old loop's end must not unpin the new loop's."""
    zone = ZONE + "".join(f"x{i} A 10.2.0.{i}\n" for i in range(8))
    policy = srvwatch.Policy(min_ttl=0.3, max_ttl=0.3, cache_size=1)
    async with ZoneServer(zone) as server, srvwatch.Resolver([server.address], policy=policy) as r:
        store = r.records.store
        with anyio.fail_after(3):
            async with r.watch(HOST, "A") as updates:
                await updates.__anext__()
                assert store.pinned((HOST, 1))
            assert not store.pinned((HOST, 1))  # at once, not when the loop's task runs
            async with r.watch(HOST, "A") as updates:
                await updates.__anext__()
                await anyio.sleep(0.5)  # the old loop has ended; a refresh or two
                assert store.pinned((HOST, 1))
                for i in range(8):  # LRU churn well past cache_size
                    await r.resolve(f"x{i}.svc.test.", "A")
                assert (HOST, 1) in store
        await anyio.sleep(0.05)  # the second loop's task ends
        stats = r.stats()
    assert stats["loops_started"] == stats["loops_stopped"] == 2, stats


async def test_closing_watches_and_the_resolver_during_a_catch_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A blocking stall, then half the watches closed and the resolver closed while the
    Ticker is catching up: no error logs, loops and sockets balance, no task left."""
    names, zone = a_names(80)
    policy = srvwatch.Policy(min_ttl=0.3, max_ttl=0.3, jitter=0.2)
    caplog.set_level(logging.DEBUG, logger="srvwatch")
    async with ZoneServer(zone) as server:
        r = srvwatch.Resolver([server.address], policy=policy)
        async with r:
            stacks = [AsyncExitStack() for _ in names]
            watches = [
                await stack.enter_async_context(r.watch(n, "A"))
                for stack, n in zip(stacks, names, strict=True)
            ]
            with anyio.fail_after(3):
                for each in watches:
                    await each.__anext__()
            await anyio.sleep(0.35)
            time.sleep(0.6)  # noqa: ASYNC251 - a stall: every refresh comes due in it
            await anyio.sleep(0.05)  # the catch-up has begun
            for stack in stacks[::2]:
                await stack.aclose()
            await anyio.sleep(0.1)
            queries = server.queries
            await anyio.sleep(0.6)
            assert server.queries > queries  # the other half still refresh
        stats = r.stats()
        for stack in stacks[1::2]:
            await stack.aclose()
    errors = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert not errors, [rec.getMessage() for rec in errors]
    assert stats["loops_started"] == stats["loops_stopped"], stats
    assert stats["sockets_opened"] == stats["sockets_closed"], stats
    assert stats["tasks_running"] == 0, stats
