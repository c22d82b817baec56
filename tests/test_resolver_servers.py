"""The resolver against real DNS servers: Knot (authoritative) and unbound in front of it."""

from __future__ import annotations

import ipaddress

import anyio
import anyio.lowlevel
import pytest

import srvwatch
from tests import zones
from tests.dns_servers import KnotServer, UnboundFactory, UnboundServer

pytestmark = pytest.mark.anyio

SERVERS = ["knot", "unbound"]


@pytest.fixture(params=SERVERS)
def upstream(
    request: pytest.FixtureRequest, knot_server: KnotServer, unbound_server: UnboundServer
) -> str:
    """The address of each real server in turn: Knot directly, then unbound in front of it."""
    return knot_server.address() if request.param == "knot" else unbound_server.address()


def expected_http() -> set[tuple[str, int, int, int, tuple[str, ...]]]:
    result = set()
    for target, (priority, weight, port) in zones.HTTP_TARGETS.items():
        addresses = [zones.HTTP_A[target]]
        if target in zones.HTTP_AAAA:
            addresses.append(zones.HTTP_AAAA[target])
        result.add((target, port, priority, weight, tuple(sorted(addresses))))
    return result


async def test_srv_with_glue(upstream: str) -> None:
    async with srvwatch.Resolver([upstream]) as r:
        eps = await r.resolve_srv(zones.HTTP_SRV)
        got = {(e.target, e.port, e.priority, e.weight, tuple(sorted(e.addresses))) for e in eps}
        assert got == expected_http()
        assert not eps.stale
        assert 5.0 <= eps.ttl <= zones.HTTP_TTL
        # In-bailiwick additional records carried the addresses: one upstream query in all.
        assert r.stats()["queries"] == 1
        ordered = eps.ordered()
        assert [e.priority for e in ordered] == sorted(e.priority for e in ordered)
        again = await r.resolve_srv("_http._tcp.api.svc.test")  # relative form, same name
        assert again == eps
        assert r.stats()["queries"] == 1


async def test_ttl_zero_is_clamped_to_the_floor(
    knot_server: KnotServer, unbound_server: UnboundServer
) -> None:
    for address in (knot_server.address(), unbound_server.address()):
        policy = srvwatch.Policy(min_ttl=5.0)
        async with srvwatch.Resolver([address], policy=policy) as r:
            eps = await r.resolve_srv(zones.ZERO_SRV)
            assert {e.target for e in eps} == set(zones.ZERO_A)
            assert eps.ttl == 5.0
            before = knot_server.query_count()
            for _ in range(100):
                assert await r.resolve_srv(zones.ZERO_SRV) is eps
            assert knot_server.query_count() == before
            assert r.stats()["queries"] == 1


async def test_ttl_zero_requeries_after_the_floor(knot_server: KnotServer) -> None:
    async with srvwatch.Resolver(
        [knot_server.address()], policy=srvwatch.Policy(min_ttl=0.05)
    ) as r:
        first = await r.resolve_srv(zones.ZERO_SRV)
        await r.resolve_srv(zones.ZERO_SRV)
        assert r.stats()["queries"] == 1
        await anyio.sleep(0.08)
        second = await r.resolve_srv(zones.ZERO_SRV)
        assert second == first
        assert r.stats()["queries"] == 2


async def test_target_outside_the_zone_is_resolved_separately(upstream: str) -> None:
    async with srvwatch.Resolver([upstream]) as r:
        eps = await r.resolve_srv(zones.EXT_SRV)
        (ep,) = eps
        assert ep.target == zones.EXT_TARGET
        assert ep.port == zones.EXT_PORT
        assert ep.addresses == (zones.EXT_ADDRESS,)
        assert r.stats()["queries"] >= 2  # the SRV, then A (and AAAA) of the target


async def test_srv_target_dot_means_no_service(upstream: str) -> None:
    async with srvwatch.Resolver([upstream]) as r:
        eps = await r.resolve_srv(zones.NONE_SRV)
        assert eps.no_service
        assert len(eps) == 0
        assert eps.pick() is None


async def test_cname_chain(upstream: str) -> None:
    async with srvwatch.Resolver([upstream]) as r:
        answer = await r.resolve(zones.ALIAS, "A")
        assert [rd.to_text() for rd in answer.records] == [zones.REAL_ADDRESS]
        assert answer.canonical_name == zones.REAL
        assert answer.name == zones.ALIAS
        assert await r.resolve_addresses(zones.ALIAS) == (zones.REAL_ADDRESS,)


async def test_nxdomain_and_nodata_are_cached(upstream: str) -> None:
    async with srvwatch.Resolver([upstream]) as r:
        with pytest.raises(srvwatch.NXDomain, match="does-not-exist"):
            await r.resolve_srv(zones.NXDOMAIN)
        with pytest.raises(srvwatch.NoData, match="nodata"):
            await r.resolve(zones.NODATA, "A")
        queries = r.stats()["queries"]
        with pytest.raises(srvwatch.NXDomain):
            await r.resolve_srv(zones.NXDOMAIN)
        with pytest.raises(srvwatch.NoData):
            await r.resolve(zones.NODATA, "A")
        assert r.stats()["queries"] == queries
        txt = await r.resolve(zones.NODATA, "TXT")
        assert txt.records[0].to_text() == f'"{zones.NODATA_TXT}"'


async def test_large_answer_falls_back_to_tcp(upstream: str) -> None:
    async with srvwatch.Resolver([upstream]) as r:
        eps = await r.resolve_srv(zones.BIG_SRV)
        assert len(eps) == zones.BIG_COUNT
        assert {e.target for e in eps} == {zones.big_target(i) for i in range(zones.BIG_COUNT)}
        stats = r.stats()
        assert stats["truncated"] >= 1
        assert stats["tcp_queries"] >= 1
    assert r.stats()["sockets_opened"] == r.stats()["sockets_closed"]


async def test_addresses_a_and_aaaa(upstream: str) -> None:
    async with srvwatch.Resolver([upstream]) as r:
        addresses = await r.resolve_addresses(zones.MULTI)
        assert set(addresses) == {*zones.MULTI_A, *zones.MULTI_AAAA}
        assert all(ipaddress.ip_address(a) for a in addresses)


async def test_unbound_counts_ttls_down_and_the_answer_ttl_follows(
    knot_server: KnotServer, unbound_factory: UnboundFactory
) -> None:
    # An unbound of its own: the shared one may hold the name from an earlier test, stored
    # almost 30 s ago, and then the second ask below would get a fresh 30 s answer.
    unbound = unbound_factory(knot_server)
    try:
        policy = srvwatch.Policy(min_ttl=1.0)
        async with srvwatch.Resolver([unbound.address()], policy=policy) as warm:
            await warm.resolve(zones.MULTI, "A")  # unbound now caches it
        await anyio.sleep(1.1)
        async with srvwatch.Resolver([unbound.address()], policy=policy) as r:
            answer = await r.resolve(zones.MULTI, "A")
            assert answer.ttl < 30
    finally:
        unbound.stop()


async def test_ten_thousand_concurrent_callers_share_one_query(
    knot_factory: object,
) -> None:
    assert callable(knot_factory)
    server: KnotServer = knot_factory()
    before = server.query_count()
    results: list[srvwatch.EndpointSet] = []

    async def call(r: srvwatch.Resolver) -> None:
        results.append(await r.resolve_srv(zones.HTTP_SRV))

    async with srvwatch.Resolver([server.address()]) as r:
        async with anyio.create_task_group() as tg:
            for _ in range(10_000):
                tg.start_soon(call, r)
        stats = r.stats()
    assert len(results) == 10_000
    assert all(eps == results[0] for eps in results)
    assert len(results[0]) == 3
    assert server.query_count() - before == 1
    assert stats["queries"] == 1
    assert stats["coalesced"] == 9_999
    server.stop()


async def test_resolv_conf_defaults() -> None:
    import dns.resolver

    system = dns.resolver.Resolver(configure=True)
    r = srvwatch.Resolver()
    assert [ns.host for ns in r.nameservers] == [str(n) for n in system.nameservers]
    assert r.search == tuple(s.to_text().lower() for s in system.search)
    assert r.ndots == (system.ndots if system.ndots is not None else 1)
    await r.aclose()


async def test_search_list_is_applied(knot_server: KnotServer) -> None:
    async with srvwatch.Resolver(
        [knot_server.address()], search=["other.test", "svc.test"], ndots=2
    ) as r:
        # "multi" has fewer than 2 dots: search domains first; other.test has no such name.
        assert set(await r.resolve_addresses("multi")) == {*zones.MULTI_A, *zones.MULTI_AAAA}
        assert await r.resolve_addresses("web") == (zones.EXT_ADDRESS,)


async def test_cold_lookups_yield_to_other_tasks(knot_server: KnotServer) -> None:
    """A nearby server answers before the lookup waits, yet every lookup still yields.

    The transport reads the answer after one checkpoint instead of waiting
    for readiness; that checkpoint is what keeps a loop of cold lookups from
    starving the other tasks of the event loop.
    """
    lookups = 200
    ticks = 0
    done = anyio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await anyio.lowlevel.checkpoint()

    policy = srvwatch.Policy(min_ttl=1e-9)  # TTL 0 answers: every lookup goes upstream
    async with srvwatch.Resolver([knot_server.address()], policy=policy) as r:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            await anyio.lowlevel.checkpoint()
            start = ticks
            for _ in range(lookups):
                await r.resolve_srv(zones.ZERO_SRV)
            done.set()
        assert r.stats()["queries"] == lookups
        assert ticks - start >= lookups  # the other task ran at least once per lookup
