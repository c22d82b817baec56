"""Names are canonical at the API edge: every spelling shares one loop, one entry, one flight."""

from __future__ import annotations

import anyio
import pytest

import srvwatch
from srvwatch.testing import Fault, ZoneServer

pytestmark = pytest.mark.anyio

ZONE = """\
$TTL 30
@          SOA  ns hostmaster 1 3600 600 86400 5
@          NS   ns
ns         A    127.0.0.1
_x._tcp    SRV  10 10 80 t
t          A    10.0.0.1
"""
SPELLINGS = ["_x._tcp.svc.test", "_x._tcp.svc.test.", "_X._TCP.svc.test", "_x._tcp.SVC.TEST."]


async def test_spellings_of_one_name_share_one_watch_loop() -> None:
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address]) as r:
        async with (
            r.watch(SPELLINGS[0]) as a,
            r.watch(SPELLINGS[1]) as b,
            r.watch(SPELLINGS[2]) as c,
            r.watch(SPELLINGS[3]) as d,
        ):
            with anyio.fail_after(2):
                updates = [await u.__anext__() for u in (a, b, c, d)]
            assert r.stats()["loops_running"] == 1
            assert {u.name for u in updates} == {"_x._tcp.svc.test."}
            assert r.pending() == []
        assert server.query_count("_x._tcp.svc.test.", "SRV") == 1


async def test_spellings_of_one_name_share_one_flight_and_one_cache_entry() -> None:
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address]) as r:
        server.inject(Fault(latency=0.1))
        results: list[srvwatch.EndpointSet] = []

        async def ask(name: str) -> None:
            results.append(await r.resolve_srv(name))

        async with anyio.create_task_group() as tg:
            for name in SPELLINGS:
                tg.start_soon(ask, name)
        assert server.query_count("_x._tcp.svc.test.", "SRV") == 1
        assert len({eps.endpoints for eps in results}) == 1
        for name in SPELLINGS:  # and every later spelling is a hit
            await r.resolve_srv(name)
            await r.resolve(name, "SRV")
        assert server.query_count("_x._tcp.svc.test.", "SRV") == 1
        entries = r.stats()["cache_entries"]
        await r.resolve_addresses("T.svc.test.")
        await r.resolve_addresses("t.SVC.test")
        assert r.stats()["cache_entries"] == entries + 2  # t's A and AAAA, once each


async def test_escaped_letters_are_the_same_name() -> None:
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address]) as r:
        first = await r.resolve("t.svc.test.", "A")
        second = await r.resolve("\\116.svc.test.", "A")  # \116 is "t"
        assert first.records == second.records
        assert server.query_count() == 1
