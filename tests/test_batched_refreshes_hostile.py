"""Batched refreshes against hostile and awkward upstreams, and at scale.

What a production user would hit if the batch path got it wrong: a
preferred nameserver never probed back into use, queries asked twice (a
batch that cannot use a truncated or EDNS-refusing reply), sockets carrying
more queries than ``max_socket_uses`` allows, and closing many watches
costing time quadratic in their number.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import dns.message
import dns.rcode
import dns.rrset
import pytest

import srvwatch
from srvwatch.testing import Fault, ZoneServer
from srvwatch.watch import Ticker
from tests.batching import FLOOR, JITTER, fast_policy, first, srv_name, srv_zone
from tests.hostile import hostile_server

pytestmark = pytest.mark.anyio

ORIGIN = "hostile.test."
WINDOW = 1.5
"""Seconds over which refreshes are counted: 6-9 of them, one floor x (1 +- jitter) apart."""


def zone_text(names: int) -> str:
    return srv_zone(names)


def policy() -> srvwatch.Policy:
    return fast_policy()


def name(i: int) -> str:
    return srv_name(ORIGIN, i)


async def eventually(predicate: Callable[[], bool], within: float) -> None:
    """Return once ``predicate()`` holds, polled every 50 ms; fail after ``within`` seconds."""
    for _ in range(round(within / 0.05)):
        if predicate():
            return
        await anyio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def fresh(stream: srvwatch.Updates) -> None:
    """The stream's latest state: its one endpoint, not stale."""
    latest = stream.latest()
    assert latest is not None
    assert not latest.stale, latest
    assert len(latest.endpoints) == 1, latest


def srv_reply(query: bytes, *, edns: bool = True) -> bytes:
    """An SRV answer with in-bailiwick glue for whatever SRV name was asked."""
    msg = dns.message.from_wire(query)
    response = dns.message.make_response(msg)
    if not edns:
        response.use_edns(False)
    qname = msg.question[0].name
    target = f"t.{ORIGIN}"
    response.answer.append(dns.rrset.from_text(qname, 1, "IN", "SRV", f"10 10 8000 {target}"))
    response.additional.append(dns.rrset.from_text(target, 1, "IN", "A", "127.0.1.1"))
    return response.to_wire()


def balanced(stats: dict[str, int]) -> None:
    assert stats["sockets_opened"] == stats["sockets_closed"], stats
    assert stats["loops_started"] == stats["loops_stopped"], stats
    assert stats["tasks_running"] == 0, stats


async def test_a_preferred_nameserver_that_recovers_is_probed_and_used_again() -> None:
    """The first nameserver drops queries, is marked down, then answers again. Before
    batching, the watches' own refreshes probed it back up within a backoff step; batches go
    only to a server known up, so with every watch carried it was never probed again and
    stayed down (and the secondary took every query) for as long as the watches ran."""
    text = zone_text(4)
    async with (
        ZoneServer(text, origin=ORIGIN) as primary,
        ZoneServer(text, origin=ORIGIN) as backup,
    ):
        servers = [primary.address, backup.address]
        async with srvwatch.Resolver(servers, policy=policy()) as r, AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(r.watch(name(i))) for i in range(4)]
            for stream in streams:
                await first(stream)
            primary.inject(Fault(drop=True))
            await eventually(lambda: not r.upstreams()[0]["up"], 5.0)
            carried = r.stats()["batched_refreshes"]
            # Every watch carried again, by the backup, before the primary recovers.
            await eventually(lambda: r.stats()["batched_refreshes"] >= carried + 8, 5.0)
            primary.clear_faults()
            # Probes every 0.1-0.4 s (backoff_max): up at the first one.
            await eventually(lambda: r.upstreams()[0]["up"], 4.0)
            await anyio.sleep(0.3)
            asked = primary.queries
            await anyio.sleep(0.6)
            assert primary.queries - asked >= 4  # the preferred server takes the refreshes
            for stream in streams:
                fresh(stream)
    balanced(r.stats())


async def test_a_truncated_reply_is_not_asked_for_twice_over_udp() -> None:
    """Every UDP reply truncated (a large SRV set): each refresh asks over UDP, then TCP.
    The batch's truncated reply was thrown away and the loop asked over UDP again: three
    queries a refresh instead of two, for as long as the set stays large."""
    async with ZoneServer(zone_text(2), origin=ORIGIN) as server:
        server.inject(Fault(truncate=True, name=name(0)))
        async with srvwatch.Resolver([server.address], policy=policy()) as r:
            async with r.watch(name(0)) as stream:
                update = await first(stream)
                assert update.endpoints.endpoints[0].port == 8000
                await anyio.sleep(0.3)
                asked, tcp = server.query_count(name(0), "SRV"), r.stats()["tcp_queries"]
                await anyio.sleep(WINDOW)
                tcp = r.stats()["tcp_queries"] - tcp
                udp = server.query_count(name(0), "SRV") - asked - tcp
                assert tcp >= WINDOW / (FLOOR * (1 + JITTER)) * 0.6, tcp
                assert udp <= tcp + 2, (udp, tcp)
                fresh(stream)
    balanced(r.stats())


async def test_a_server_refusing_edns_is_not_asked_with_edns_twice() -> None:
    """An old server answers FORMERR to EDNS: each refresh asks with EDNS, then without.
    The batch's FORMERR was thrown away and the loop asked with EDNS again."""

    def respond(query: bytes) -> bytes | None:
        msg = dns.message.from_wire(query)
        if msg.edns >= 0:
            response = dns.message.make_response(msg)
            response.use_edns(False)
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        return srv_reply(query, edns=False)

    async with hostile_server(respond) as server:
        async with srvwatch.Resolver([server.address], policy=policy()) as r:
            async with r.watch(name(0)) as stream:
                await first(stream)
                await anyio.sleep(0.3)
                seen = len(server.received)
                await anyio.sleep(WINDOW)
                edns = plain = 0
                for query in server.received[seen:]:
                    if dns.message.from_wire(query).edns >= 0:
                        edns += 1
                    else:
                        plain += 1
                assert plain >= WINDOW / (FLOOR * (1 + JITTER)) * 0.6, plain
                assert edns <= plain + 2, (edns, plain)
    balanced(r.stats())


async def test_no_socket_carries_more_queries_than_max_socket_uses() -> None:
    """RFC 5452: a UDP socket is retired after ``max_socket_uses`` queries. A batch took a
    pooled socket that had already carried queries and sent a whole chunk on top."""
    uses = 5

    async with hostile_server(srv_reply) as server:
        r = srvwatch.Resolver([server.address], policy=policy(), max_socket_uses=uses)
        # Each UDP socket's count of queries as it closes. (Counting source ports at the
        # server is not enough: the kernel may hand a closed socket's port to a new one.)
        carried: list[int] = []
        transport = r._socket_transport
        assert transport is not None
        close = transport._close_udp

        def closing(entry: Any) -> None:
            carried.append(entry.uses)
            close(entry)

        transport._close_udp = closing  # type: ignore[method-assign]
        async with r, AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(r.watch(name(i))) for i in range(12)]
            for stream in streams:
                await first(stream)
            await anyio.sleep(1.5)
            assert r.stats()["batched_refreshes"] >= 12
    balanced(r.stats())
    assert len(carried) == r.stats()["sockets_closed"] - r.stats()["tcp_queries"]
    assert max(carried) <= uses, sorted(carried)[-3:]
    assert len(set(server.ports)) >= len(server.ports) / uses  # ports rotate


class Item:
    def __init__(self) -> None:
        self.finished = False


async def test_closing_many_carried_watches_costs_time_linear_in_their_number() -> None:
    """Carried loops wait in the ticker's filed items, not on its events. The clean-up run
    when a loop stops was amortized against the events only: with thousands of carried
    watches and few sleepers it walked every filed item on every stop, so closing 20,000
    watches (a sidecar reload, a shutdown) took seconds of blocked event loop."""
    count = 20_000
    async with anyio.create_task_group() as tg:
        ticker = Ticker(tg.start_soon, tick=0.01, on_due=lambda items, closing: None)
        items = [Item() for _ in range(count)]
        for i, item in enumerate(items):
            ticker.later(60.0 + i * 0.001, item)  # spread over 20 s of groups, as refreshes are
        started = time.process_time()
        for item in items:
            item.finished = True
            ticker.sleeper_stopped()
        elapsed = time.process_time() - started
        assert sum(map(len, ticker._due.values())) <= count // 2  # still cleaned up
        tg.cancel_scope.cancel()
    assert elapsed < 1.0, elapsed  # quadratic: 5-8 s here; linear: under 0.1 s


async def test_a_name_the_primary_fails_is_not_asked_of_it_twice_per_refresh() -> None:
    """The first nameserver answers SERVFAIL for one name, the second answers it: each
    refresh asks the first, then the second, as before batching. The batch's SERVFAIL was
    thrown away and the loop asked the first nameserver again: two SERVFAILs a refresh."""
    text = zone_text(2)
    async with (
        ZoneServer(text, origin=ORIGIN) as primary,
        ZoneServer(text, origin=ORIGIN) as backup,
    ):
        primary.inject(Fault(rcode="SERVFAIL", name=name(0)))
        servers = [primary.address, backup.address]
        async with srvwatch.Resolver(servers, policy=policy()) as r:
            async with r.watch(name(0)) as stream, r.watch(name(1)) as other:
                await first(stream)
                await first(other)
                await anyio.sleep(0.3)
                failed = primary.query_count(name(0), "SRV")
                answered = backup.query_count(name(0), "SRV")
                await anyio.sleep(WINDOW)
                failed = primary.query_count(name(0), "SRV") - failed
                answered = backup.query_count(name(0), "SRV") - answered
                assert answered >= WINDOW / (FLOOR * (1 + JITTER)) * 0.6, answered
                assert failed <= answered + 2, (failed, answered)
                fresh(stream)
                fresh(other)
                assert r.upstreams()[0]["up"]
                assert backup.query_count(name(1), "SRV") == 0  # the other name stays on the first
    balanced(r.stats())


async def test_floods_duplicates_and_other_questions_do_not_confuse_a_batch() -> None:
    """Each query answered by garbage, a reply with its ID to another question, the reply,
    and the reply again: the batch settles each refresh from its own reply, once, and
    nothing is asked twice (guards the matching by ID and question)."""
    rng = random.Random(7)

    def respond(query: bytes) -> list[bytes]:
        good = srv_reply(query)
        other = dns.message.from_wire(srv_reply(query.replace(b"_s", b"_x", 1)))
        other.id = dns.message.from_wire(query).id
        garbage = [rng.randbytes(rng.choice((1, 11, 12, 40))) for _ in range(10)]
        return [*garbage, other.to_wire(), good, good]

    async with hostile_server(respond) as server:
        async with srvwatch.Resolver([server.address], policy=policy()) as r:
            async with AsyncExitStack() as stack:
                streams = [await stack.enter_async_context(r.watch(name(i))) for i in range(6)]
                for stream in streams:
                    await first(stream)
                await anyio.sleep(0.3)
                before, asked = r.stats(), r.queries_by_name()
                await anyio.sleep(WINDOW)
                stats = r.stats()
                assert stats["batched_refreshes"] - before["batched_refreshes"] >= 6
                assert stats["ignored_responses"] - before["ignored_responses"] >= 6 * 11
                for i, stream in enumerate(streams):
                    fresh(stream)
                    count = r.queries_by_name()[name(i)] - asked.get(name(i), 0)
                    assert count <= WINDOW / (FLOOR * (1 - JITTER)) + 2, (i, count)
    balanced(r.stats())


async def test_tight_limits_and_search_list_names_still_refresh() -> None:
    """max_in_flight=1 and max_socket_uses=1: batches of one, the rest handed back and
    queued for the one slot; a name that walks a search list is never carried. Changes
    arrive in time either way, and every socket and task is closed."""
    async with ZoneServer(zone_text(6), origin=ORIGIN) as server:
        r = srvwatch.Resolver(
            [server.address],
            policy=policy(),
            max_in_flight=1,
            max_socket_uses=1,
            search=[ORIGIN],
            ndots=5,
        )
        async with r, AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(r.watch(name(i))) for i in range(5)]
            searched = await stack.enter_async_context(r.watch("_s5._tcp"))
            for stream in [*streams, searched]:
                await first(stream)
            await anyio.sleep(0.6)
            assert r.stats()["batched_refreshes"] > 0
            server.set_records("_s2._tcp", "SRV", [f"10 10 9999 t2.{ORIGIN}"], ttl=1)
            server.set_records("_s5._tcp", "SRV", [f"10 10 9995 t5.{ORIGIN}"], ttl=1)
            for stream, port in ((streams[2], 9999), (searched, 9995)):
                with anyio.fail_after(FLOOR * (1 + JITTER) + 1.5):
                    async for update in stream:
                        if update.endpoints.endpoints[0].port == port:
                            break
            for stream in streams:
                fresh(stream)
    balanced(r.stats())


async def test_a_settle_that_raises_hands_the_refresh_back_without_asking_twice(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in settling a batch's reply is logged and the loop refreshes the usual way,
    with the batch's reply: the watch keeps refreshing, and nothing is asked twice."""

    def broken(self: object, fqdn: str, reply: object) -> None:
        raise RuntimeError("settle bug")

    monkeypatch.setattr("srvwatch.srv.Assembler.repeated_set", broken)
    async with ZoneServer(zone_text(2), origin=ORIGIN) as server:
        async with srvwatch.Resolver([server.address], policy=policy()) as r:
            async with r.watch(name(0)) as stream:
                await first(stream)
                await anyio.sleep(0.3)
                asked = server.query_count(name(0), "SRV")
                await anyio.sleep(WINDOW)
                asked = server.query_count(name(0), "SRV") - asked
                assert asked >= WINDOW / (FLOOR * (1 + JITTER)) * 0.6, asked
                assert asked <= WINDOW / (FLOOR * (1 - JITTER)) + 2, asked
                fresh(stream)
                server.set_records("_s0._tcp", "SRV", [f"10 10 9990 t0.{ORIGIN}"], ttl=1)
                with anyio.fail_after(FLOOR * (1 + JITTER) + 1.5):
                    async for update in stream:
                        if update.endpoints.endpoints[0].port == 9990:
                            break
    assert r.stats()["batched_refreshes"] == 0
    assert any("cannot settle a batched refresh" in rec.getMessage() for rec in caplog.records)
    balanced(r.stats())
