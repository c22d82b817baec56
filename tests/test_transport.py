"""The Transport interface: a client's query forwarded as it came, and the objects' reprs."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import pytest

import srvwatch
from srvwatch import wire
from srvwatch.address import parse_nameserver
from srvwatch.scripted import ScriptedTransport
from srvwatch.transport import SocketTransport
from tests.hostile import hostile_server, response_to

pytestmark = pytest.mark.anyio


async def test_forward_keeps_the_clients_query_and_replaces_its_id() -> None:
    """Name case, type, flags and EDNS options go upstream byte for byte; only the ID changes."""
    query = dns.message.make_query("HoSt.Svc.Test.", "TXT", want_dnssec=True, id=0x1234)
    query.flags |= dns.flags.CD
    query.use_edns(0, dns.flags.DO, 1232, options=[dns.edns.GenericOption(65001, b"tag")])
    raw = query.to_wire()

    def respond(data: bytes) -> bytes:
        return response_to(data, 'host.svc.test. 30 TXT "hi"')

    async with hostile_server(respond) as server:
        transport = SocketTransport([parse_nameserver(server.address)], srvwatch.Policy())
        try:
            replies = [await transport.forward(raw) for _ in range(4)]
        finally:
            await transport.aclose()
    assert [sent[2:] for sent in server.received] == [raw[2:]] * 4
    ids = {int.from_bytes(sent[:2], "big") for sent in server.received}
    assert len(ids) >= 3  # random per query (RFC 5452), whatever the client sent
    for reply, sent in zip(replies, server.received, strict=True):
        assert reply.data[:2] == sent[:2]  # our ID: the caller puts the client's back
        assert reply.msg.qtype == wire.TYPE_TXT
        assert reply.server == server.address
    stats = transport.counters
    assert stats.sockets_opened == stats.sockets_closed


async def test_forward_rejects_what_is_not_a_query() -> None:
    transport = SocketTransport([parse_nameserver("127.0.0.1:1")], srvwatch.Policy())
    response = wire.build_query("a.svc.test.", wire.TYPE_A, 1)
    response = response[:2] + bytes([response[2] | 0x80]) + response[3:]
    for bad in (b"\x00" * 5, response, wire.build_query("a.", 1, 1)[:12]):
        with pytest.raises(ValueError, match="query"):
            await transport.forward(bad)
    await transport.aclose()


async def test_reprs_say_what_an_operator_needs() -> None:
    transport = ScriptedTransport()
    transport.set("_x._tcp.svc.test.", "SRV", ["0 0 80 t.svc.test."])
    transport.set("t.svc.test.", "A", ["10.0.0.1"])
    resolver = srvwatch.Resolver(transport=transport)
    assert "not entered" in repr(resolver)
    async with resolver as r:
        async with r.watch("_x._tcp.svc.test") as updates:
            await updates.__anext__()
            assert "watches=1" in repr(r)
            assert "open" in repr(r)
            loops = list(r._watches._loops.values())
            assert "_x._tcp.svc.test. v1 subscribers=1" in repr(loops[0])
    assert "closed" in repr(r)
    socket_transport = SocketTransport([parse_nameserver("[::1]:53")], srvwatch.Policy())
    assert repr(socket_transport) == "<SocketTransport [[::1]:53] 0 in flight, 0 idle sockets>"
    await socket_transport.aclose()
    assert "closed" in repr(socket_transport)
