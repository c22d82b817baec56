"""Failure is never emptiness: odd and hostile answers are server failures, never NODATA.

Each case here came back as an empty answer (and so an empty endpoint set
with ``stale=False``) before: CNAME loops and chains past the hop limit,
servers that truncate even over TCP, and rcodes that are neither NOERROR
nor NXDOMAIN. The servers are scripted (tests/hostile.py), and Knot and
unbound where they show the same behaviour for real.
"""

from __future__ import annotations

import itertools

import anyio
import dns.message
import dns.rcode
import dns.rrset
import pytest

import srvwatch
from srvwatch import wire
from srvwatch.testing import ZoneServer
from tests.dns_servers import KnotFactory, UnboundFactory
from tests.hostile import hostile_server, patch_header, question, response_to

pytestmark = pytest.mark.anyio

QUICK = srvwatch.Policy(timeout=0.2, lifetime=0.6)
SOA = "svc.test. 30 SOA ns.svc.test. hostmaster.svc.test. 1 3600 600 86400 5"

LOOP_ZONE = """\
$TTL 30
@          SOA   ns hostmaster 1 3600 600 86400 5
@          NS    ns
ns         A     127.0.0.1
loop1      CNAME loop2
loop2      CNAME loop1
self       CNAME self
_l._tcp    CNAME loop1
"""


def cname_chain(length: int, *, back_to_start: bool = False):  # type: ignore[no-untyped-def]
    """A reply holding a whole chain: q -> c1 -> c2 ... (-> q when looping), then an A record."""

    def respond(query: bytes) -> bytes:
        name, _ = question(query)
        links = [name] + [f"c{i}.svc.test." for i in range(1, length + 1)]
        records = [f"{a} 30 CNAME {b}" for a, b in itertools.pairwise(links)]
        if back_to_start:
            records.append(f"{links[-1]} 30 CNAME {name}")
        else:
            records.append(f"{links[-1]} 30 A 10.0.0.1")
        return response_to(query, *records)

    return respond


@pytest.mark.parametrize(
    ("respond", "match"),
    [
        (cname_chain(1, back_to_start=True), "CNAME loop"),
        (cname_chain(0, back_to_start=True), "CNAME loop"),  # a name that is a CNAME to itself
        (cname_chain(20), "CNAME chain longer than 8"),
    ],
    ids=["a-b-a", "self", "twenty-in-one-reply"],
)
async def test_cname_loops_and_long_chains_are_server_failures(respond: object, match: str) -> None:
    async with hostile_server(respond) as server:  # type: ignore[arg-type]
        async with srvwatch.Resolver([server.address], policy=QUICK) as r:
            with pytest.raises(srvwatch.ServerFailure, match=match):
                await r.resolve("a.svc.test.", "A")
            with pytest.raises(srvwatch.ServerFailure, match=match):
                await r.resolve_addresses("a.svc.test.")
            assert r.stats()["negative_hits"] == 0


async def test_a_chain_of_eight_still_resolves() -> None:
    async with hostile_server(cname_chain(8)) as server:
        async with srvwatch.Resolver([server.address], policy=QUICK) as r:
            answer = await r.resolve("a.svc.test.", "A")
    assert answer.canonical_name == "c8.svc.test."


@pytest.mark.knot
@pytest.mark.unbound
async def test_cname_loops_on_knot_and_unbound(
    knot_factory: KnotFactory, unbound_factory: UnboundFactory
) -> None:
    knot = knot_factory(LOOP_ZONE)
    unbound = unbound_factory(knot)
    try:
        for server in (knot, unbound):
            async with srvwatch.Resolver([server.address()], policy=QUICK) as r:
                for name in ("loop1.svc.test.", "self.svc.test."):
                    with pytest.raises(srvwatch.ServerFailure):
                        await r.resolve(name, "A")
                with pytest.raises(srvwatch.ServerFailure):
                    await r.resolve_srv("_l._tcp.svc.test.")
    finally:
        unbound.stop()
        knot.stop()


async def test_a_watch_of_a_cname_loop_goes_stale_not_empty() -> None:
    state = {"loop": False}
    good = cname_chain(1)

    def respond(query: bytes) -> bytes:
        name, qtype = question(query)
        if qtype == wire.TYPE_SRV:
            if state["loop"]:
                return cname_chain(1, back_to_start=True)(query)
            return response_to(query, f"{name} 0 SRV 0 0 80 t.svc.test.")
        if qtype == wire.TYPE_A:
            return good(query)
        return response_to(query, SOA, section="authority")

    policy = srvwatch.Policy(
        min_ttl=0.1, max_ttl=0.1, timeout=0.1, lifetime=0.2, backoff_base=0.05, backoff_max=0.1
    )
    async with hostile_server(respond) as server:
        async with srvwatch.Resolver([server.address], policy=policy) as r:
            async with r.watch("_x._tcp.svc.test.") as updates:
                with anyio.fail_after(3):
                    first = await updates.__anext__()
                    state["loop"] = True
                    second = await updates.__anext__()
    assert len(first.endpoints) == 1
    assert second.stale
    assert second.endpoints.endpoints == first.endpoints.endpoints
    assert second.error is not None
    assert "CNAME loop" in second.error


async def test_truncated_even_over_tcp_is_a_failure() -> None:
    def always_truncated(query: bytes) -> bytes:
        return patch_header(response_to(query), flags_or=wire.FLAG_TC)

    async with hostile_server(always_truncated) as server:
        async with srvwatch.Resolver([server.address], policy=QUICK) as r:
            with pytest.raises(srvwatch.ServerFailure, match="truncated reply over TCP"):
                await r.resolve_srv("_x._tcp.svc.test.")
        stats = r.stats()
    assert stats["tcp_queries"] == 1
    assert stats["negative_hits"] == 0


def rcode_reply(rcode: int):  # type: ignore[no-untyped-def]
    """Every query answered with ``rcode`` (extended rcodes above 15 through the OPT record)."""

    def respond(query: bytes) -> bytes:
        message = dns.message.make_response(dns.message.from_wire(query))
        message.set_rcode(dns.rcode.Rcode(rcode))
        return message.to_wire()

    return respond


@pytest.mark.parametrize("rcode", [4, 6, 7, 8, 9, 10, 11, 15, 16, 23])
async def test_unexpected_rcodes_are_failures_that_move_on(rcode: int) -> None:
    async with (
        hostile_server(rcode_reply(rcode)) as odd,
        ZoneServer("$TTL 30\n@ SOA ns hm 1 1 1 1 5\nhost A 10.0.0.9\n") as good,
    ):
        async with srvwatch.Resolver([odd.address], policy=QUICK) as r:
            with pytest.raises(srvwatch.ServerFailure, match="answered"):
                await r.resolve("host.svc.test.", "A")
            assert r.stats()["negative_hits"] == 0
        async with srvwatch.Resolver([odd.address, good.address], policy=QUICK) as r:
            answer = await r.resolve("host.svc.test.", "A")
    assert [rd.to_text() for rd in answer.records] == ["10.0.0.9"]


async def test_formerr_to_edns_is_asked_again_without_it() -> None:
    def old_server(query: bytes) -> bytes:
        message = dns.message.from_wire(query)
        if message.edns >= 0:
            return rcode_reply(1)(query)  # FORMERR: this server predates EDNS
        name, _ = question(query)
        return response_to(query, f"{name} 30 A 10.0.0.7")

    async with hostile_server(old_server) as server:
        async with srvwatch.Resolver([server.address], policy=QUICK) as r:
            answer = await r.resolve("old.svc.test.", "A")
            assert r.stats()["edns_fallbacks"] == 1
    assert [rd.to_text() for rd in answer.records] == ["10.0.0.7"]
    assert server.queries == 2


DNSSD_ZONE = """\
$TTL 30
@                                SOA  ns hostmaster 1 3600 600 86400 5
@                                NS   ns
ns                               A    127.0.0.1
printer\\032v2\\.._ipp._tcp      SRV  0 0 631 p
p                                A    10.0.0.5
_x._tcp                          SRV  0 0 80 p
"""


async def test_dns_sd_instance_names_are_watchable_and_never_end_other_watches() -> None:
    async with ZoneServer(DNSSD_ZONE) as server, srvwatch.Resolver([server.address]) as r:
        async with (
            r.watch("printer v2\\.._ipp._tcp.svc.test.") as printer,
            r.watch("missing v2\\.._ipp._tcp.svc.test.") as missing,
            r.watch("_x._tcp.svc.test.") as other,
        ):
            with anyio.fail_after(3):
                found = await printer.__anext__()
                empty = await missing.__anext__()
                fine = await other.__anext__()
        assert [e.port for e in found.endpoints] == [631]
        assert found.name == "printer\\032v2\\.._ipp._tcp.svc.test."
        assert len(empty.endpoints) == 0
        assert not empty.stale
        assert [e.port for e in fine.endpoints] == [80]
        assert await r.resolve_addresses("p.svc.test.") == ("10.0.0.5",)  # resolver still up


async def test_an_nxdomain_update_names_the_full_name() -> None:
    async with ZoneServer(DNSSD_ZONE) as server, srvwatch.Resolver([server.address]) as r:
        async with r.watch("_nope._tcp.svc.test") as updates:
            with anyio.fail_after(3):
                update = await updates.__anext__()
    assert len(update.endpoints) == 0
    assert not update.stale
    assert update.name == "_nope._tcp.svc.test."
    assert update.endpoints.name == "_nope._tcp.svc.test."
