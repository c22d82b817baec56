"""The resolver under faults injected by ZoneServer: timeouts, SERVFAIL, TC, spoofing, failover."""

from __future__ import annotations

import socket
import time

import anyio
import pytest

import srvwatch
from srvwatch.testing import Fault, ZoneServer

pytestmark = pytest.mark.anyio

ZONE = """\
$TTL 30
@               SOA  ns hostmaster 1 3600 600 86400 5
@               NS   ns
ns              A    127.0.0.1
_http._tcp.api  SRV  10 60 8080 a.api
_http._tcp.api  SRV  10 40 8080 b.api
a.api           A    10.0.0.1
b.api           A    10.0.0.2
host            A    10.0.0.9
"""
SRV = "_http._tcp.api.svc.test."
FAST = srvwatch.Policy(timeout=0.1, lifetime=0.4, min_ttl=5.0)


def targets(eps: srvwatch.EndpointSet) -> set[str]:
    return {e.target for e in eps}


async def test_a_timeout_marks_the_server_down_and_lookups_fail_fast() -> None:
    """One timeout marks the only nameserver down: no retries into it, no doomed waits."""
    policy = srvwatch.Policy(timeout=0.1, lifetime=0.4, backoff_base=0.3, backoff_max=0.3)
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address], policy=policy) as r:
        server.inject(Fault(drop=True))
        started = time.monotonic()
        with pytest.raises(srvwatch.ResolveTimeout, match="timed out"):
            await r.resolve_srv(SRV)
        assert time.monotonic() - started < 0.3  # one attempt, not the whole lifetime
        assert server.query_count() == 1
        started = time.monotonic()
        with pytest.raises(srvwatch.ResolveTimeout, match="upstream down"):
            await r.resolve("host.svc.test.", "A")
        assert time.monotonic() - started < 0.05  # failed fast: nothing sent
        assert server.query_count() == 1
        assert r.upstreams()[0]["up"] is False
        assert r.stats()["fast_failures"] == 1
        server.clear_faults()
        await anyio.sleep(0.31)  # the probe is due (backoff 0.15-0.3 s)
        answer = await r.resolve("host.svc.test.", "A")  # the probe answers: up again
        assert [rd.to_text() for rd in answer.records] == ["10.0.0.9"]
        assert r.upstreams()[0]["up"] is True
        assert r.stats()["upstream_recoveries"] == 1


async def test_servfail_raises_and_is_remembered() -> None:
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address], policy=FAST) as r:
        server.inject(Fault(rcode="SERVFAIL"))
        with pytest.raises(srvwatch.ServerFailure, match="SERVFAIL"):
            await r.resolve_srv(SRV)
        assert server.query_count() == 1  # one server, asked once: no hammering
        with pytest.raises(srvwatch.ServerFailure):
            await r.resolve_srv(SRV)
        assert server.query_count() == 1  # remembered for servfail_ttl


async def test_truncated_udp_answer_is_retried_over_tcp() -> None:
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address]) as r:
        server.inject(Fault(truncate=True))
        eps = await r.resolve_srv(SRV)
        assert targets(eps) == {"a.api.svc.test.", "b.api.svc.test."}
        stats = r.stats()
        assert stats["truncated"] == 1
        assert stats["tcp_queries"] == 1
    assert r.stats()["sockets_opened"] == r.stats()["sockets_closed"]


@pytest.mark.parametrize("spoof", ["wrong_id", "wrong_question"])
async def test_mismatched_response_is_ignored(spoof: str) -> None:
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address]) as r:
        server.inject(Fault(**{spoof: True}))  # type: ignore[arg-type]
        answer = await r.resolve("host.svc.test", "A")
        assert [rd.to_text() for rd in answer.records] == ["10.0.0.9"]
        assert r.stats()["ignored_responses"] == 1
        assert r.stats()["queries"] == 1


async def test_refused_first_nameserver_fails_over() -> None:
    async with (
        ZoneServer(ZONE) as bad,
        ZoneServer(ZONE) as good,
        srvwatch.Resolver([bad.address, good.address], policy=FAST) as r,
    ):
        bad.inject(Fault(rcode="REFUSED"))
        eps = await r.resolve_srv(SRV)
        assert len(eps) == 2
        assert bad.query_count() == 1
        assert good.query_count() == 1


async def test_silent_first_nameserver_fails_over_after_one_timeout() -> None:
    async with (
        ZoneServer(ZONE) as dead,
        ZoneServer(ZONE) as good,
        srvwatch.Resolver([dead.address, good.address], policy=FAST) as r,
    ):
        dead.inject(Fault(drop=True))
        started = time.monotonic()
        eps = await r.resolve_srv(SRV)
        assert len(eps) == 2
        assert time.monotonic() - started < 0.35
        assert r.stats()["timeouts"] == 1


async def test_closed_port_fails_over_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with (
        ZoneServer(ZONE) as good,
        srvwatch.Resolver(
            [f"127.0.0.1:{closed_port}", good.address],
            policy=srvwatch.Policy(timeout=1.0, lifetime=2.0),
        ) as r,
    ):
        started = time.monotonic()
        eps = await r.resolve_srv(SRV)
        assert len(eps) == 2
        assert time.monotonic() - started < 0.5  # ICMP port unreachable: no 1 s timeout wait
        assert r.stats()["network_errors"] == 1
        assert r.stats()["timeouts"] == 0


async def test_stale_answer_served_when_upstream_fails() -> None:
    policy = srvwatch.Policy(
        timeout=0.05,
        lifetime=0.15,
        min_ttl=0.05,
        max_ttl=0.05,
        servfail_ttl=0.05,
        backoff_base=0.05,
        backoff_max=0.05,
    )
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address], policy=policy) as r:
        fresh = await r.resolve_srv(SRV)
        assert not fresh.stale
        await anyio.sleep(0.06)
        server.inject(Fault(drop=True))
        stale = await r.resolve_srv(SRV)
        assert stale.stale
        assert targets(stale) == targets(fresh)
        assert r.stats()["stale"] >= 1
        server.clear_faults()
        await anyio.sleep(0.06)  # past the probe backoff (at most 0.05 s)
        recovered = await r.resolve_srv(SRV)
        assert not recovered.stale
        assert targets(recovered) == targets(fresh)


async def test_nxdomain_empties_where_failure_does_not() -> None:
    policy = srvwatch.Policy(
        timeout=0.05, lifetime=0.15, min_ttl=0.05, max_ttl=0.05, negative_min_ttl=0.05
    )
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address], policy=policy) as r:
        await r.resolve_srv(SRV)
        await anyio.sleep(0.06)
        server.delete("_http._tcp.api")
        server.delete("a.api")
        server.delete("b.api")
        with pytest.raises(srvwatch.NXDomain):
            await r.resolve_srv(SRV)


async def test_cancelled_caller_does_not_cancel_the_shared_query() -> None:
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address]) as r:
        server.inject(Fault(latency=0.2))
        results: list[srvwatch.EndpointSet] = []

        async def patient() -> None:
            results.append(await r.resolve_srv(SRV))

        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as impatient:
                tg.start_soon(patient)
                tg.start_soon(patient)
                with anyio.move_on_after(0.05) as scope:
                    await r.resolve_srv(SRV)
                assert scope.cancelled_caught
            assert not impatient.cancel_called
        assert len(results) == 2
        assert server.query_count() == 1
        stats = r.stats()
        assert stats["coalesced"] == 2
        # The impatient caller led the lookup; the resolver finished it for the others
        # and took over the query already on the wire instead of sending another.
        assert stats["handoffs"] == 1
        assert stats["adopted_queries"] == 1


async def test_closing_the_resolver_mid_lookup_closes_its_sockets() -> None:
    async with ZoneServer(ZONE) as server:
        server.inject(Fault(latency=5.0))
        async with srvwatch.Resolver([server.address]) as r:
            with anyio.move_on_after(0.1):
                await r.resolve_srv(SRV)
            # The cancelled query's socket is kept for a successor until its timeout.
            stats = r.stats()
            assert stats["sockets_opened"] - stats["sockets_closed"] == 1
        stats = r.stats()
        assert stats["sockets_opened"] == stats["sockets_closed"] >= 1
        assert stats["flights_started"] == stats["flights_finished"]
        with pytest.raises(RuntimeError, match="closed"):
            await r.resolve_srv("other.svc.test")


async def test_queries_in_flight_are_bounded() -> None:
    zone = ZONE + "".join(f"n{i} A 10.1.0.{i}\n" for i in range(40))
    async with (
        ZoneServer(zone) as server,
        srvwatch.Resolver([server.address], max_in_flight=4) as r,
    ):
        server.inject(Fault(latency=0.05))
        peak = 0
        answers: list[tuple[str, ...]] = []

        async def lookup(i: int) -> None:
            answers.append(await r.resolve_addresses(f"n{i}.svc.test"))

        async def monitor() -> None:
            nonlocal peak
            while True:
                stats = r.stats()
                peak = max(peak, stats["sockets_opened"] - stats["sockets_closed"])
                await anyio.sleep(0.005)

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(monitor)
            async with anyio.create_task_group() as lookups:
                for i in range(40):
                    lookups.start_soon(lookup, i)
            tg.cancel_scope.cancel()
        elapsed = time.monotonic() - started
    assert sorted(answers) == sorted((f"10.1.0.{i}",) for i in range(40))
    assert 1 <= peak <= 4
    # 80 queries (A and AAAA), four at a time, 50 ms each: they really waited their turn.
    assert elapsed >= 80 / 4 * 0.05 * 0.9


async def test_ipv6_nameserver() -> None:
    async with ZoneServer(ZONE, host="::1") as server:
        assert server.address.startswith("[::1]:")
        async with srvwatch.Resolver([server.address]) as r:
            assert await r.resolve_addresses("host.svc.test") == ("10.0.0.9",)
            eps = await r.resolve_srv(SRV)
            assert len(eps) == 2
        stats = r.stats()
    assert stats["sockets_opened"] == stats["sockets_closed"] >= 1


async def test_cancelled_during_tcp_fallback_closes_the_connection() -> None:
    async with ZoneServer(ZONE) as server:
        server.inject(Fault(truncate=True))
        server.inject(Fault(latency=0.3))
        policy = srvwatch.Policy(timeout=3.0, lifetime=5.0)
        async with srvwatch.Resolver([server.address], policy=policy) as r:
            with anyio.move_on_after(0.45):  # after the truncated UDP answer, during TCP
                await r.resolve_srv(SRV)
            assert r.stats()["truncated"] == 1
        stats = r.stats()
    assert stats["tcp_queries"] == 1
    assert stats["sockets_opened"] == stats["sockets_closed"] == 2


async def test_failover_walks_the_nameservers_in_order() -> None:
    async with (
        ZoneServer(ZONE) as first,
        ZoneServer(ZONE) as second,
        ZoneServer(ZONE) as third,
        srvwatch.Resolver([first.address, second.address, third.address], policy=FAST) as r,
    ):
        first.inject(Fault(rcode="REFUSED"))
        second.inject(Fault(drop=True))
        eps = await r.resolve_srv(SRV)
        assert len(eps) == 2
        assert (first.query_count(), second.query_count(), third.query_count()) == (1, 1, 1)
        # Every server refusing: one round, then ServerFailure, no hammering.
        for server in (second, third):
            server.clear_faults()
            server.inject(Fault(rcode="SERVFAIL"))
        with pytest.raises(srvwatch.ServerFailure):
            await r.resolve("host.svc.test", "A")
        # The second timed out above, so it is down: no lookup sends to it until its probe.
        assert (first.query_count(), second.query_count(), third.query_count()) == (2, 1, 2)
