"""RFC 5452 defences, seen from a scripted server: random IDs, rotating ports, bailiwick."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import dns.message
import dns.rrset
import pytest

import srvwatch

pytestmark = pytest.mark.anyio

Responder = Callable[[dns.message.Message], dns.message.Message]


@asynccontextmanager
async def scripted_server(respond: Responder) -> AsyncIterator[tuple[str, list[tuple[int, int]]]]:
    """A UDP server answering with ``respond(query)``; yields its address and (port, id) seen."""
    seen: list[tuple[int, int]] = []
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as sock:

        async def serve() -> None:
            async for data, (host, port) in sock:
                query = dns.message.from_wire(data)
                seen.append((port, query.id))
                await sock.sendto(respond(query).to_wire(), host, port)

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            yield f"127.0.0.1:{sock.extra(anyio.abc.SocketAttribute.local_port)}", seen
            tg.cancel_scope.cancel()


def nodata(query: dns.message.Message) -> dns.message.Message:
    return dns.message.make_response(query)


async def test_every_query_gets_a_random_id_and_ports_rotate() -> None:
    never_cache = srvwatch.Policy(min_ttl=1e-6, negative_min_ttl=1e-6)
    async with scripted_server(nodata) as (address, seen):
        async with srvwatch.Resolver([address], policy=never_cache, max_socket_uses=4) as r:
            for _ in range(40):
                with pytest.raises(srvwatch.NoData):
                    await r.resolve("a.svc.test", "A")
                await anyio.sleep(2e-6)
        stats = r.stats()
    assert len(seen) == 40
    ids = [query_id for _, query_id in seen]
    assert len(set(ids)) >= 37  # 16 random bits each: a few collisions at most
    ports = [port for port, _ in seen]
    assert len(set(ports)) >= 10  # a socket (and its port) is retired after 4 queries
    assert stats["sockets_opened"] == stats["sockets_closed"] >= 10


def srv_with_additional(query: dns.message.Message) -> dns.message.Message:
    """An SRV answer whose additional section vouches for a name outside the zone."""
    response = dns.message.make_response(query)
    qname = query.question[0].name
    if query.question[0].rdtype == dns.rdatatype.SRV:
        response.answer.append(
            dns.rrset.from_text(
                qname, 30, "IN", "SRV", "10 10 80 a.svc.test.", "10 10 80 evil.other.test."
            )
        )
        response.authority.append(dns.rrset.from_text("svc.test.", 30, "IN", "NS", "ns.svc.test."))
        response.additional.append(dns.rrset.from_text("a.svc.test.", 30, "IN", "A", "10.0.0.1"))
        response.additional.append(
            dns.rrset.from_text("evil.other.test.", 30, "IN", "A", "6.6.6.6")
        )
    elif qname.to_text() == "evil.other.test." and query.question[0].rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(qname, 30, "IN", "A", "192.0.2.7"))
    return response


async def test_out_of_bailiwick_additional_records_are_ignored() -> None:
    async with scripted_server(srv_with_additional) as (address, seen):
        async with srvwatch.Resolver([address]) as r:
            eps = await r.resolve_srv("_http._tcp.svc.test")
    addresses = {ep.target: ep.addresses for ep in eps}
    assert addresses["a.svc.test."] == ("10.0.0.1",)  # in the zone: taken from additional
    assert addresses["evil.other.test."] == ("192.0.2.7",)  # asked for, not taken on trust
    assert len(seen) == 3  # SRV, then A and AAAA of the out-of-zone target only


async def test_hostile_bytes_before_the_answer_are_ignored() -> None:
    """Garbage, a bare header and a compression loop arrive first; the real answer still counts."""
    good = dns.message.make_query("host.svc.test.", "A")
    junk = [
        b"\xff" * 3,
        bytes(12),
        # A response with the right shape whose question name is a pointer to itself.
        b"\x00\x00\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
    ]

    async with await anyio.create_udp_socket(local_host="127.0.0.1") as sock:

        async def serve() -> None:
            async for data, (host, port) in sock:
                query = dns.message.from_wire(data)
                for payload in junk:
                    await sock.sendto(payload, host, port)
                response = dns.message.make_response(query)
                response.answer.append(
                    dns.rrset.from_text(query.question[0].name, 30, "IN", "A", "10.0.0.5")
                )
                await sock.sendto(response.to_wire(), host, port)

        port = sock.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            async with srvwatch.Resolver([f"127.0.0.1:{port}"]) as r:
                answer = await r.resolve(good.question[0].name.to_text(), "A")
                stats = r.stats()
            tg.cancel_scope.cancel()
    assert [rd.to_text() for rd in answer.records] == ["10.0.0.5"]
    assert stats["ignored_responses"] == len(junk)
    assert stats["queries"] == 1
