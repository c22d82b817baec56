"""wire.parse against dnspython on real responses from Knot and unbound (differential test)."""

from __future__ import annotations

import socket
import struct

import dns.message
import dns.rdatatype
import pytest

from srvwatch import wire
from tests import zones
from tests.dns_servers import KnotServer, UnboundServer

QUESTIONS = [
    (zones.HTTP_SRV, "SRV"),
    (zones.ZERO_SRV, "SRV"),
    (zones.EXT_SRV, "SRV"),
    (zones.NONE_SRV, "SRV"),
    (zones.BIG_SRV, "SRV"),
    (zones.ONE_SRV, "SRV"),
    (zones.ALIAS, "A"),
    (zones.ALIAS, "AAAA"),
    (zones.NODATA, "A"),
    (zones.NODATA, "TXT"),
    (zones.MULTI, "A"),
    (zones.MULTI, "AAAA"),
    (zones.NXDOMAIN, "SRV"),
    ("svc.test.", "SOA"),
    ("svc.test.", "NS"),
    ("svc.test.", "ANY"),
]


def exchange(address: str, query: bytes, tcp: bool) -> bytes:
    host, port = address.rsplit(":", 1)
    if tcp:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(struct.pack("!H", len(query)) + query)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                chunk = sock.recv(65535)
                assert chunk, "server closed the connection"
                buf += chunk
            return buf[2:]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query, (host, int(port)))
        return sock.recv(65535)


def assert_same_as_dnspython(data: bytes) -> None:
    msg = wire.parse(data)
    ref = dns.message.from_wire(data)
    assert msg.id == ref.id
    assert msg.rcode == ref.rcode()
    assert msg.flags & 0x87F0 == ref.flags & 0x87F0
    assert (msg.qname, msg.qtype) == (
        ref.question[0].name.to_text().lower(),
        ref.question[0].rdtype,
    )
    assert msg.edns_payload == (ref.payload if ref.edns >= 0 else None)
    for mine, theirs in (
        (msg.answers, ref.answer),
        (msg.authority, ref.authority),
        (msg.additional, ref.additional),
    ):
        expected = sorted(
            (rrset.name.to_text().lower(), rrset.rdtype, rrset.ttl, rd.to_text().lower())
            for rrset in theirs
            for rd in rrset
        )
        got = sorted(
            (rr.name, rr.rdtype, rr.ttl, wire.decode_rdata(data, rr).to_text().lower())
            for rr in mine
        )
        assert got == expected
        for rr in mine:
            rd = wire.decode_rdata(data, rr)
            if rr.rdtype == wire.TYPE_SRV:
                assert wire.decode_srv(data, rr) == (
                    rd.priority,
                    rd.weight,
                    rd.port,
                    rd.target.to_text().lower(),  # type: ignore[attr-defined]
                )
                assert wire.decode_srv(data, rr, msg.names) == wire.decode_srv(data, rr)
            elif rr.rdtype == wire.TYPE_A:
                assert wire.decode_a(data, rr) == rd.to_text()
            elif rr.rdtype == wire.TYPE_AAAA:
                assert wire.decode_aaaa(data, rr) == rd.to_text()
            elif rr.rdtype == wire.TYPE_CNAME:
                assert wire.decode_cname(data, rr) == rd.to_text().lower()
            elif rr.rdtype == wire.TYPE_SOA:
                soa = wire.decode_soa(data, rr)
                assert soa.minimum == rd.minimum  # type: ignore[attr-defined]
                assert soa.serial == rd.serial  # type: ignore[attr-defined]


@pytest.mark.parametrize("server", ["knot", "unbound"])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_parse_agrees_with_dnspython_on_real_responses(
    server: str, tcp: bool, knot_server: KnotServer, unbound_server: UnboundServer
) -> None:
    address = knot_server.address() if server == "knot" else unbound_server.address()
    truncated = 0
    for qid, (name, rdtype) in enumerate(QUESTIONS):
        query = wire.build_query(name, dns.rdatatype.from_text(rdtype), qid)
        data = exchange(address, query, tcp)
        assert_same_as_dnspython(data)
        truncated += wire.parse(data).tc
    # The _big answer does not fit 1232 bytes: truncated over UDP, whole over TCP.
    assert truncated == (0 if tcp else 1)
