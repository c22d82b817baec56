"""The httpx transport with real httpx clients, real HTTP backends and SRV records on a live Knot.

Runs on asyncio, uvloop and trio. Every request that must pick an endpoint
opens a new connection (``max_keepalive_connections=0``): the transport
balances connections, not requests on one connection.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpcore
import httpx
import pytest
import trustme

import srvwatch
from srvwatch.contrib.httpx import AsyncTransport
from tests.contrib_http import (
    DUAL_A,
    HOST,
    PLAIN_NAME,
    SERVICES,
    Service,
    Slot,
    assert_weighted,
    open_descriptors,
    served_by,
    tally,
)
from tests.dns_servers import KnotFactory

pytestmark = pytest.mark.anyio

POLICY = srvwatch.Policy(min_ttl=0.5, timeout=0.3, lifetime=1.0)
WEIGHTS = {"a": 60, "b": 30, "c": 10}


@pytest.fixture(scope="module")
def weighted(knot_factory: KnotFactory) -> Iterator[Service]:
    """a, b, c in priority 10 with weights 60/30/10; d a priority-20 backup. Never changed."""
    service = Service(knot_factory, [(10, 60), (10, 30), (10, 10), (20, 0)])
    yield service
    service.close()


@pytest.fixture(scope="module")
def tls_service(knot_factory: KnotFactory) -> Iterator[tuple[Service, trustme.CA]]:
    """One HTTPS backend whose certificate names only the URL host, ``web.internal``."""
    ca = trustme.CA()
    with ca.issue_cert(HOST).private_key_and_cert_chain_pem.tempfile() as pem:
        service = Service(knot_factory, [(10, 1)], tls=(pem, pem))  # read at start-up
    yield service, ca
    service.close()


@pytest.fixture
def pair(knot_factory: KnotFactory) -> Iterator[Service]:
    """a and b in priority 10 (weights 50/50), c a priority-20 backup; a test may change it."""
    service = Service(knot_factory, [(10, 50), (10, 50), (20, 10)])
    yield service
    service.close()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def client(resolver: srvwatch.Resolver, **pool_options: Any) -> httpx.AsyncClient:
    pool_options.setdefault("max_keepalive_connections", 0)
    return httpx.AsyncClient(transport=AsyncTransport(resolver, SERVICES, **pool_options))


async def get_name(http: httpx.AsyncClient, url: str = f"http://{HOST}/") -> str:
    response = await http.get(url)
    response.raise_for_status()
    return served_by(response.content)


async def test_new_connections_follow_srv_weights(weighted: Service) -> None:
    async with srvwatch.Resolver([weighted.knot.address()], policy=POLICY) as r:
        async with client(r) as http:
            counts = await tally(lambda: get_name(http), 1200)
            response = await http.get(f"http://{HOST}/path?q=1")
    assert counts["d"] == 0, "the priority-20 backup got requests while priority 10 was up"
    assert_weighted(counts, WEIGHTS)
    body = json.loads(response.content)
    assert body["host"] == HOST  # the Host header keeps the URL's host, not an address
    assert response.url == httpx.URL(f"http://{HOST}/path?q=1")


async def test_plain_host_spreads_over_its_addresses(weighted: Service) -> None:
    url = f"http://{PLAIN_NAME.rstrip('.')}:{weighted.port}/"
    async with srvwatch.Resolver([weighted.knot.address()], policy=POLICY) as r:
        async with client(r) as http:
            counts = await tally(lambda: get_name(http, url), 800)
    assert_weighted(counts, {"a": 1, "b": 1, "c": 1, "d": 1})


async def test_killed_endpoints_are_failed_over_by_priority(pair: Service) -> None:
    a, b, _ = pair.backends
    async with srvwatch.Resolver([pair.knot.address()], policy=POLICY) as r:
        async with client(r) as http:
            assert set(await tally(lambda: get_name(http), 100)) == {"a", "b"}
            a.kill()
            # a was the first choice for about half of these: each one failed over to b.
            assert await tally(lambda: get_name(http), 200) == {"b": 200}
            b.kill()
            assert await tally(lambda: get_name(http), 50) == {"c": 50}
            pair.backends[2].kill()
            with pytest.raises(httpx.ConnectError, match=r"web\.internal: tried") as info:
                await http.get(f"http://{HOST}/")
            for backend in pair.backends:  # every endpoint was tried, each named in the error
                assert f"{backend.address}:{backend.port}" in str(info.value)


async def test_a_change_on_knot_moves_new_connections(pair: Service) -> None:
    async with srvwatch.Resolver([pair.knot.address()], policy=POLICY) as r:
        async with client(r) as http:
            assert set(await tally(lambda: get_name(http), 50)) == {"a", "b"}
            new = pair.add_backend("e", "127.0.0.61")
            await anyio.to_thread.run_sync(pair.publish, [Slot(new, 10, 100)])
            changed_at = time.monotonic()
            with anyio.fail_after(5):
                name = await get_name(http)
                while name != "e":
                    await anyio.sleep(0.02)
                    name = await get_name(http)
            # TTL 1 s: the resolver asks again within about a second.
            assert time.monotonic() - changed_at < 2.5
            assert await tally(lambda: get_name(http), 100) == {"e": 100}


async def test_a_dns_outage_keeps_requests_flowing(pair: Service) -> None:
    async with srvwatch.Resolver([pair.knot.address()], policy=POLICY) as r:
        async with client(r) as http:
            assert set(await tally(lambda: get_name(http), 50)) == {"a", "b"}
            await anyio.to_thread.run_sync(pair.knot.stop)
            served: set[str] = set()
            deadline = time.monotonic() + 3.0  # three TTLs: every cached answer has expired
            while time.monotonic() < deadline:
                served |= set(await tally(lambda: get_name(http), 20))
            assert served == {"a", "b"}
            assert r.stats()["stale"] > 0  # the requests were served from the stale answer


async def test_tls_keeps_the_original_host(tls_service: tuple[Service, trustme.CA]) -> None:
    service, ca = tls_service
    async with srvwatch.Resolver([service.knot.address()], policy=POLICY) as r:
        transport = AsyncTransport(r, SERVICES, ssl_context=client_context(ca))
        async with httpx.AsyncClient(transport=transport) as http:
            for _ in range(3):
                response = await http.get(f"https://{HOST}/")
                body = json.loads(response.content)
                assert body == {"name": "a", "host": HOST, "sni": HOST}
            # One pooled connection, keyed by the URL's origin, reused for all three.
            (connection,) = transport.pool.connections
            assert connection.can_handle_request(httpcore.Origin(b"https", HOST.encode(), 443))


async def test_resolution_failure_is_an_httpx_connect_error(weighted: Service) -> None:
    async with srvwatch.Resolver([weighted.knot.address()], policy=POLICY) as r:
        async with client(r) as http:
            with pytest.raises(httpx.ConnectError, match=r"nope\.contrib\.test") as info:
                await http.get("http://nope.contrib.test/")
    causes = []
    error: BaseException | None = info.value
    while error is not None:
        causes.append(type(error))
        error = error.__cause__
    assert len(causes) == 3, causes
    assert issubclass(causes[1], httpcore.ConnectError)
    assert causes[2] is srvwatch.NXDomain


async def test_address_family_and_literals(weighted: Service) -> None:
    async with srvwatch.Resolver([weighted.knot.address()], policy=POLICY) as r:
        transport = AsyncTransport(r, SERVICES)
        targets = transport.targets
        assert await targets.resolve("dual.contrib.test", 80) in (
            [(DUAL_A, 80), ("2001:db8::60", 80)],
            [("2001:db8::60", 80), (DUAL_A, 80)],
        )
        assert await targets.resolve("127.0.0.9", 81) == [("127.0.0.9", 81)]
        assert sorted(await targets.resolve("localhost", 82)) == [("127.0.0.1", 82), ("::1", 82)]
        assert r.stats()["queries"] == 2  # A and AAAA of dual only
        async with httpx.AsyncClient(transport=transport) as http:
            url = f"http://127.0.0.51:{weighted.port}/"
            assert served_by((await http.get(url)).content) == "a"


async def test_no_descriptor_or_socket_leaks(pair: Service) -> None:
    async def session(requests: int) -> dict[str, int]:
        async with srvwatch.Resolver([pair.knot.address()], policy=POLICY) as r:
            async with client(r, max_keepalive_connections=4) as http:
                await tally(lambda: get_name(http), requests)
                with pytest.raises(httpx.ConnectError):
                    await http.get("http://nope.contrib.test/")
        return r.stats()

    await session(10)  # the event loop's own lazily made descriptors (uvloop has some)
    before = open_descriptors()
    stats = await session(100)
    pair.backends[0].kill()
    stats_after_kill = await session(100)  # with failed connects to a
    assert open_descriptors() == before
    for s in (stats, stats_after_kill):
        assert s["sockets_opened"] == s["sockets_closed"] > 0


async def test_closing_the_transport_leaves_the_resolver_to_its_owner(weighted: Service) -> None:
    async with srvwatch.Resolver([weighted.knot.address()], policy=POLICY) as r:
        async with client(r) as http:
            await get_name(http)
        assert len(await r.resolve_srv(SERVICES[HOST])) == 4
    with pytest.raises(ValueError, match="network_backend"):
        AsyncTransport(r, network_backend=httpcore.AnyIOBackend())
    with pytest.raises(ValueError, match="services"):
        AsyncTransport(r, {"": "_http._tcp.x.test"})
