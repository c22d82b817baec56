"""A scripted UDP/TCP DNS server that answers with whatever bytes a test builds.

ZoneServer only sends well-formed messages; the resolver must also survive
servers that do not. ``respond(query_bytes) -> bytes | list[bytes] | None`` builds each
reply (None: stay silent), usually from a dnspython response that
:func:`replace_last_rdata` or :func:`patch_header` then damages.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
import dns.message
import dns.rrset

from srvwatch import wire

Respond = Callable[[bytes], "bytes | list[bytes] | None"]
"""The reply to a query: its bytes, several datagrams (or messages) to send in turn, or None."""


@dataclass
class Hostile:
    """The running server: its address and what it received."""

    address: str
    received: list[bytes] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    """The source port of each UDP query received (RFC 5452: they must keep changing)."""

    @property
    def queries(self) -> int:
        return len(self.received)


@asynccontextmanager
async def hostile_server(respond: Respond, *, tcp: Respond | None = None) -> AsyncIterator[Hostile]:
    """Serve ``respond`` over UDP, and ``tcp`` (default: the same) over TCP on the same port."""
    tcp_respond = respond if tcp is None else tcp
    udp, listener = await _bind()
    async with udp:
        port = udp.extra(anyio.abc.SocketAttribute.local_port)
        server = Hostile(f"127.0.0.1:{port}")

        async def serve_udp() -> None:
            async for data, (host, peer_port) in udp:
                server.received.append(data)
                server.ports.append(peer_port)
                for reply in _each(respond(data)):
                    await udp.sendto(reply, host, peer_port)

        async def serve_tcp(stream: anyio.abc.SocketStream) -> None:
            async with stream:
                try:
                    length = struct.unpack("!H", await _receive_exactly(stream, 2))[0]
                    data = await _receive_exactly(stream, length)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                server.received.append(data)
                for reply in _each(tcp_respond(data)):
                    await stream.send(struct.pack("!H", len(reply)) + reply)

        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(serve_udp)
            tg.start_soon(listener.serve, serve_tcp)
            yield server
            tg.cancel_scope.cancel()


def _each(replies: bytes | list[bytes] | None) -> list[bytes]:
    if replies is None:
        return []
    return [replies] if isinstance(replies, bytes) else replies


async def _bind() -> tuple[anyio.abc.UDPSocket, anyio.abc.SocketListener]:
    """A UDP socket and a TCP listener on the same free port (retried: TCP may be taken)."""
    for _ in range(20):
        udp = await anyio.create_udp_socket(local_host="127.0.0.1")
        port = udp.extra(anyio.abc.SocketAttribute.local_port)
        try:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
        except OSError:
            await udp.aclose()
            continue
        return udp, listener.listeners[0]  # type: ignore[return-value]
    raise OSError("no free port for both UDP and TCP")


async def _receive_exactly(stream: anyio.abc.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += await stream.receive(size - len(data))
    return data


def response_to(query: bytes, *rrsets: str, section: str = "answer", rcode: int = 0) -> bytes:
    """A response (no EDNS, so the last record is the last rrset given) with these records.

    Each rrset is ``"owner ttl TYPE rdata"`` text, as in a zone file.
    """
    msg = dns.message.from_wire(query)
    response = dns.message.make_response(msg)
    response.use_edns(False)
    response.set_rcode(rcode)
    for text in rrsets:
        owner, ttl, rdtype, rdata = text.split(None, 3)
        rrset = dns.rrset.from_text(owner, int(ttl), "IN", rdtype, rdata)
        getattr(response, section).append(rrset)
    return response.to_wire()


def replace_last_rdata(data: bytes, rdata: bytes) -> bytes:
    """The message with its last record's RDATA replaced by ``rdata`` (RDLENGTH fixed)."""
    msg = wire.parse(data)
    last = (msg.answers + msg.authority + msg.additional)[-1]
    start = last.rdata_offset
    assert start + last.rdata_length == len(data), "the last record must end the message"
    return data[: start - 2] + struct.pack("!H", len(rdata)) + rdata


def last_rdata(data: bytes) -> bytes:
    msg = wire.parse(data)
    last = (msg.answers + msg.authority + msg.additional)[-1]
    return data[last.rdata_offset : last.rdata_offset + last.rdata_length]


def patch_header(data: bytes, *, flags_or: int = 0, rcode: int | None = None) -> bytes:
    """Set header flags and/or the rcode of a message."""
    flags = struct.unpack_from("!H", data, 2)[0] | flags_or
    if rcode is not None:
        flags = (flags & ~0xF) | rcode
    return data[:2] + struct.pack("!H", flags) + data[4:]


def question(query: bytes) -> tuple[str, int]:
    """(lowercase absolute name, type) of a query."""
    msg = wire.parse(query)
    return msg.qname, msg.qtype
