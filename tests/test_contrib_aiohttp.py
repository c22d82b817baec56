"""The aiohttp resolver with real aiohttp clients and backends, named by SRV records on Knot.

aiohttp runs on asyncio only: these tests run on asyncio and uvloop. Every
request opens a new connection (``force_close=True``), so each one is a new
pick, and the connector's own DNS cache is off (``use_dns_cache=False``), as
the adapter's documentation says it must be.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import anyio
import pytest
import trustme

import srvwatch
from srvwatch.contrib.aiohttp import Resolver
from tests.contrib_http import (
    DUAL_A,
    DUAL_AAAA,
    DUAL_NAME,
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


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """aiohttp is asyncio-only: no trio here (the httpx transport covers trio)."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


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


def session(resolver: srvwatch.Resolver, **connector_options: Any) -> aiohttp.ClientSession:
    connector_options.setdefault("force_close", True)
    connector = aiohttp.TCPConnector(
        resolver=Resolver(resolver, SERVICES), use_dns_cache=False, **connector_options
    )
    return aiohttp.ClientSession(connector=connector)


async def get_name(http: aiohttp.ClientSession, url: str = f"http://{HOST}/") -> str:
    async with http.get(url) as response:
        response.raise_for_status()
        return served_by(await response.read())


async def test_new_connections_follow_srv_weights(weighted: Service) -> None:
    async with srvwatch.Resolver([weighted.knot.address()], policy=POLICY) as r:
        async with session(r) as http:
            counts = await tally(lambda: get_name(http), 1200)
            async with http.get(f"http://{HOST}/path?q=1") as response:
                body = await response.json()
    assert counts["d"] == 0, "the priority-20 backup got requests while priority 10 was up"
    assert_weighted(counts, WEIGHTS)
    assert body["host"] == HOST  # the Host header keeps the URL's host, not an address


async def test_plain_host_spreads_over_its_addresses(weighted: Service) -> None:
    url = f"http://{PLAIN_NAME.rstrip('.')}:{weighted.port}/"
    async with srvwatch.Resolver([weighted.knot.address()], policy=POLICY) as r:
        async with session(r) as http:
            counts = await tally(lambda: get_name(http, url), 800)
    assert_weighted(counts, {"a": 1, "b": 1, "c": 1, "d": 1})


async def test_results_keep_the_name_asked_and_carry_srv_ports(weighted: Service) -> None:
    async with srvwatch.Resolver([weighted.knot.address()], policy=POLICY) as r:
        resolver = Resolver(r, {"Web.Internal.": SERVICES[HOST]})
        results = await resolver.resolve(HOST, 80, socket.AF_INET)
        assert [res["hostname"] for res in results] == [HOST] * 4
        assert {res["port"] for res in results} == {weighted.port}  # SRV's, not the URL's 80
        assert {res["host"] for res in results} == {b.address for b in weighted.backends}
        assert results[-1]["host"] == "127.0.0.54"  # the priority-20 backup comes last
        assert all(res["family"] == socket.AF_INET for res in results)


async def test_family_is_honoured(weighted: Service) -> None:
    async with srvwatch.Resolver([weighted.knot.address()], policy=POLICY) as r:
        resolver = Resolver(r)
        name = DUAL_NAME.rstrip(".")
        v4 = await resolver.resolve(name, 443, socket.AF_INET)
        assert [(res["host"], res["family"], res["port"]) for res in v4] == [
            (DUAL_A, socket.AF_INET, 443)
        ]
        v6 = await resolver.resolve(name, 443, socket.AF_INET6)
        assert [(res["host"], res["family"]) for res in v6] == [(DUAL_AAAA, socket.AF_INET6)]
        both = await resolver.resolve(name, 443, socket.AF_UNSPEC)
        assert {res["host"] for res in both} == {DUAL_A, DUAL_AAAA}
        assert {res["hostname"] for res in v4 + v6 + both} == {name}
        with pytest.raises(OSError, match="AF_INET6"):
            await Resolver(r, SERVICES).resolve(HOST, 80, socket.AF_INET6)


async def test_killed_endpoints_are_failed_over_by_priority(pair: Service) -> None:
    a, b, c = pair.backends
    async with srvwatch.Resolver([pair.knot.address()], policy=POLICY) as r:
        async with session(r) as http:
            assert set(await tally(lambda: get_name(http), 100)) == {"a", "b"}
            a.kill()
            # a was the first choice for about half of these: each one failed over to b.
            assert await tally(lambda: get_name(http), 200) == {"b": 200}
            b.kill()
            assert await tally(lambda: get_name(http), 50) == {"c": 50}
            c.kill()
            with pytest.raises(aiohttp.ClientConnectorError):
                await get_name(http)


async def test_a_change_on_knot_moves_new_connections(pair: Service) -> None:
    async with srvwatch.Resolver([pair.knot.address()], policy=POLICY) as r:
        async with session(r) as http:
            assert set(await tally(lambda: get_name(http), 50)) == {"a", "b"}
            new = pair.add_backend("e", "127.0.0.61")
            await anyio.to_thread.run_sync(pair.publish, [Slot(new, 10, 100)])
            changed_at = time.monotonic()
            with anyio.fail_after(5):
                name = await get_name(http)
                while name != "e":
                    await anyio.sleep(0.02)
                    name = await get_name(http)
            # TTL 1 s: the resolver asks again within about a second (aiohttp's cache: 10 s).
            assert time.monotonic() - changed_at < 2.5
            assert await tally(lambda: get_name(http), 100) == {"e": 100}


async def test_a_dns_outage_keeps_requests_flowing(pair: Service) -> None:
    async with srvwatch.Resolver([pair.knot.address()], policy=POLICY) as r:
        async with session(r) as http:
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
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with srvwatch.Resolver([service.knot.address()], policy=POLICY) as r:
        async with session(r) as http:
            for _ in range(3):
                async with http.get(f"https://{HOST}/", ssl=context) as response:
                    body = await response.json()
                assert body == {"name": "a", "host": HOST, "sni": HOST}


async def test_resolution_failure_is_a_dns_connector_error(weighted: Service) -> None:
    async with srvwatch.Resolver([weighted.knot.address()], policy=POLICY) as r:
        async with session(r) as http:
            with pytest.raises(aiohttp.ClientConnectorDNSError) as info:
                await get_name(http, "http://nope.contrib.test/")
    causes = []
    error: BaseException | None = info.value
    while error is not None:
        causes.append(type(error))
        error = error.__cause__
    assert causes == [aiohttp.ClientConnectorDNSError, OSError, srvwatch.NXDomain]
    assert "nope.contrib.test" in str(info.value)


async def test_no_descriptor_or_socket_leaks(pair: Service) -> None:
    async def run(requests: int) -> dict[str, int]:
        async with srvwatch.Resolver([pair.knot.address()], policy=POLICY) as r:
            async with session(r, force_close=False) as http:  # keep-alive: a pool to close
                await tally(lambda: get_name(http), requests)
                with pytest.raises(aiohttp.ClientConnectorDNSError):
                    await get_name(http, "http://nope.contrib.test/")
        return r.stats()

    await run(10)  # the event loop's own lazily made descriptors (uvloop has some)
    before = open_descriptors()
    stats = await run(100)
    pair.backends[0].kill()
    stats_after_kill = await run(100)  # with refused connects to a
    assert open_descriptors() == before
    for s in (stats, stats_after_kill):
        assert s["sockets_opened"] == s["sockets_closed"] > 0


async def test_close_leaves_the_resolver_to_its_owner(weighted: Service) -> None:
    async with srvwatch.Resolver([weighted.knot.address()], policy=POLICY) as r:
        resolver = Resolver(r, SERVICES)
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
        async with aiohttp.ClientSession(connector=connector) as http:
            await get_name(http)
        await resolver.close()
        assert len(await resolver.resolve(HOST, 80)) == 4  # still resolving through r
        assert len(await r.resolve_srv(SERVICES[HOST])) == 4
    with pytest.raises(TypeError, match=r"srvwatch\.Resolver"):
        Resolver(object())  # type: ignore[arg-type]
