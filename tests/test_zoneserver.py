"""ZoneServer: answers, run-time changes, every fault kind, hostile input and leaks."""

from __future__ import annotations

import os
import random
import struct
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from srvwatch.testing import Fault, ZoneServer
from tests.zones import BIG_COUNT, BIG_SRV, DEFAULT_ZONE, HTTP_A, HTTP_AAAA, HTTP_SRV

pytestmark = pytest.mark.anyio

Backend = tuple[str, dict[str, Any]]
TIMEOUT = 1.0


def _dns_backend(anyio_backend: Backend) -> dns.asyncbackend.Backend:
    """dnspython picks its async backend per call here, matching the running event loop."""
    return dns.asyncbackend.get_backend("trio" if anyio_backend[0] == "trio" else "asyncio")


async def udp(
    zs: ZoneServer,
    anyio_backend: Backend,
    name: str,
    rdtype: str = "A",
    *,
    wait: float = TIMEOUT,
    **query: Any,
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **query)
    # ignore_unexpected: a late answer from another test's server (unbound retries for
    # seconds) can reach a recycled ephemeral port; it is not this server's reply.
    return await dns.asyncquery.udp(
        q,
        zs.host,
        port=zs.port,
        timeout=wait,
        backend=_dns_backend(anyio_backend),
        ignore_unexpected=True,
    )


async def tcp(
    zs: ZoneServer, anyio_backend: Backend, name: str, rdtype: str = "A", **query: Any
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **query)
    return await dns.asyncquery.tcp(
        q, zs.host, port=zs.port, timeout=TIMEOUT, backend=_dns_backend(anyio_backend)
    )


async def raw_udp(zs: ZoneServer, wire: bytes, replies: int) -> list[bytes]:
    """Send one datagram and collect exactly ``replies`` datagrams back."""
    async with await anyio.create_connected_udp_socket(
        remote_host=zs.host, remote_port=zs.port
    ) as sock:
        await sock.send(wire)
        with anyio.fail_after(TIMEOUT):
            return [await sock.receive() for _ in range(replies)]


def frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


async def read_frame(stream: anyio.abc.ByteReceiveStream, buf: bytearray) -> bytes:
    while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
        buf += await stream.receive()
    size = int.from_bytes(buf[:2], "big")
    out = bytes(buf[2 : 2 + size])
    del buf[: 2 + size]
    return out


def rdatas(rrset: dns.rrset.RRset) -> set[str]:
    return {rd.to_text() for rd in rrset}


def section_names(section: list[dns.rrset.RRset]) -> set[tuple[str, str]]:
    return {(rr.name.to_text(), dns.rdatatype.to_text(rr.rdtype)) for rr in section}


# -- answers ---------------------------------------------------------------------------------


async def test_srv_answer_is_authoritative_with_in_zone_additional_addresses(
    anyio_backend: Backend,
) -> None:
    async with ZoneServer(DEFAULT_ZONE) as zs:
        r = await udp(zs, anyio_backend, HTTP_SRV, "SRV")
        assert r.rcode() == dns.rcode.NOERROR
        assert r.flags & dns.flags.AA
        assert len(r.answer) == 1
        assert len(r.answer[0]) == 3
        assert r.answer[0].ttl == 30
        expected = {(n, "A") for n in HTTP_A} | {(n, "AAAA") for n in HTTP_AAAA}
        assert section_names(r.additional) == expected

        # The _ext target lives in another zone: no additional records for it.
        r = await udp(zs, anyio_backend, "_ext._tcp.api.svc.test.", "SRV")
        assert len(r.answer) == 1
        assert r.additional == []


async def test_default_zone_has_soa_with_minimum_5_and_ns(anyio_backend: Backend) -> None:
    async with ZoneServer() as zs:
        r = await udp(zs, anyio_backend, "svc.test.", "SOA")
        assert r.answer[0][0].minimum == 5
        r = await udp(zs, anyio_backend, "svc.test.", "NS")
        assert rdatas(r.answer[0]) == {"ns.svc.test."}


async def test_cname_chain_is_followed_inside_the_zone(anyio_backend: Backend) -> None:
    async with ZoneServer(DEFAULT_ZONE) as zs:
        r = await udp(zs, anyio_backend, "alias.svc.test.", "A")
        assert r.rcode() == dns.rcode.NOERROR
        assert [(rr.name.to_text(), rr.rdtype) for rr in r.answer] == [
            ("alias.svc.test.", dns.rdatatype.CNAME),
            ("alias2.svc.test.", dns.rdatatype.CNAME),
            ("real.svc.test.", dns.rdatatype.A),
        ]
        # Asking for the CNAME itself does not follow it.
        r = await udp(zs, anyio_backend, "alias.svc.test.", "CNAME")
        assert section_names(r.answer) == {("alias.svc.test.", "CNAME")}

        # A chain ending at a missing name: NXDOMAIN (RFC 6604) with the CNAME and the SOA.
        zs.set_records("dangling", "CNAME", ["gone"])
        r = await udp(zs, anyio_backend, "dangling.svc.test.", "A")
        assert r.rcode() == dns.rcode.NXDOMAIN
        assert section_names(r.answer) == {("dangling.svc.test.", "CNAME")}
        assert section_names(r.authority) == {("svc.test.", "SOA")}

        # A loop terminates.
        zs.set_records("loop1", "CNAME", ["loop2"])
        zs.set_records("loop2", "CNAME", ["loop1"])
        r = await udp(zs, anyio_backend, "loop1.svc.test.", "A")
        assert section_names(r.answer) == {
            ("loop1.svc.test.", "CNAME"),
            ("loop2.svc.test.", "CNAME"),
        }


async def test_nodata_and_nxdomain_carry_soa_with_negative_ttl(anyio_backend: Backend) -> None:
    zone = """
    @ 60 IN SOA ns hostmaster 1 3600 600 86400 7
    @ 60 IN NS ns
    txt 30 IN TXT "hello"
    a.deep 30 IN A 127.0.0.1
    """
    async with ZoneServer(zone) as zs:
        r = await udp(zs, anyio_backend, "txt.svc.test.", "A")
        assert r.rcode() == dns.rcode.NOERROR
        assert r.answer == []
        assert section_names(r.authority) == {("svc.test.", "SOA")}
        assert r.authority[0].ttl == 7  # min(SOA TTL 60, minimum 7)

        # An empty non-terminal exists: NODATA, not NXDOMAIN.
        r = await udp(zs, anyio_backend, "deep.svc.test.", "A")
        assert r.rcode() == dns.rcode.NOERROR
        assert r.answer == []

        r = await udp(zs, anyio_backend, "nope.svc.test.", "A")
        assert r.rcode() == dns.rcode.NXDOMAIN
        assert r.flags & dns.flags.AA
        assert r.authority[0].ttl == 7

        zs.set_records("@", "SOA", ["ns hostmaster 2 3600 600 86400 300"], ttl=4)
        r = await udp(zs, anyio_backend, "nope.svc.test.", "A")
        assert r.authority[0].ttl == 4  # min(SOA TTL 4, minimum 300)


async def test_out_of_zone_and_other_class_are_refused(anyio_backend: Backend) -> None:
    async with ZoneServer() as zs:
        r = await udp(zs, anyio_backend, "example.org.", "A")
        assert r.rcode() == dns.rcode.REFUSED
        assert not r.flags & dns.flags.AA
        r = await udp(zs, anyio_backend, "svc.test.", "TXT", rdclass="CH")
        assert r.rcode() == dns.rcode.REFUSED


async def test_query_case_is_echoed(anyio_backend: Backend) -> None:
    async with ZoneServer() as zs:
        zs.set_records("a", "A", ["127.0.0.1"])
        for name in ("a.svc.test.", "A.SvC.tEsT."):
            q = dns.message.make_query(name, "A")
            (wire,) = await raw_udp(zs, q.to_wire(), 1)
            r = dns.message.from_wire(wire)
            assert r.id == q.id
            assert r.question[0].name.to_text() == name  # 0x20 case preserved
            assert r.answer[0][0].to_text() == "127.0.0.1"


async def test_ipv6_loopback(anyio_backend: Backend) -> None:
    async with ZoneServer(host="::1") as zs:
        assert zs.address == f"[::1]:{zs.port}"
        zs.set_records("v6", "AAAA", ["2001:db8::1"])
        r = await udp(zs, anyio_backend, "v6.svc.test.", "AAAA")
        assert rdatas(r.answer[0]) == {"2001:db8::1"}
        r = await tcp(zs, anyio_backend, "v6.svc.test.", "AAAA")
        assert rdatas(r.answer[0]) == {"2001:db8::1"}


# -- records at run time ---------------------------------------------------------------------


async def test_records_change_at_run_time(anyio_backend: Backend) -> None:
    async with ZoneServer() as zs:
        assert zs.address == f"127.0.0.1:{zs.port}"
        zs.set_records("web", "A", ["127.0.0.1"], ttl=0)
        r = await udp(zs, anyio_backend, "web.svc.test.", "A")
        assert rdatas(r.answer[0]) == {"127.0.0.1"}
        assert r.answer[0].ttl == 0

        zs.set_records("web.svc.test.", "A", ["127.0.0.2"])  # absolute name, same RRset
        r = await udp(zs, anyio_backend, "web.svc.test.", "A")
        assert rdatas(r.answer[0]) == {"127.0.0.2"}

        zs.add_records("web.svc.test", "A", ["127.0.0.3"], ttl=9)  # absolute without the dot
        r = await udp(zs, anyio_backend, "web.svc.test.", "A")
        assert rdatas(r.answer[0]) == {"127.0.0.2", "127.0.0.3"}
        assert r.answer[0].ttl == 9

        # Names inside rdata follow the same rule as owner names.
        zs.set_records("_s._tcp", "SRV", ["0 0 80 web.svc.test", "0 0 81 other"])
        r = await udp(zs, anyio_backend, "_s._tcp.svc.test.", "SRV")
        assert rdatas(r.answer[0]) == {"0 0 80 web.svc.test.", "0 0 81 other.svc.test."}

        zs.add_records("web", "TXT", ["x"])
        zs.delete("web", "A")
        r = await udp(zs, anyio_backend, "web.svc.test.", "A")
        assert (r.rcode(), r.answer) == (dns.rcode.NOERROR, [])
        zs.delete("web")
        r = await udp(zs, anyio_backend, "web.svc.test.", "TXT")
        assert r.rcode() == dns.rcode.NXDOMAIN
        zs.delete("never-existed")  # not an error

        # The SOA serial moves with every change, as on a real primary.
        r = await udp(zs, anyio_backend, "svc.test.", "SOA")
        assert r.answer[0][0].serial > 1


def test_bad_input_is_rejected_with_the_input_named() -> None:
    zs = ZoneServer()
    with pytest.raises(ValueError, match="outside"):
        zs.set_records("example.org.", "A", ["127.0.0.1"])
    with pytest.raises(ValueError, match="not-an-ip"):
        zs.set_records("a", "A", ["not-an-ip"])
    with pytest.raises(ValueError, match="BOGUS"):
        zs.set_records("a", "BOGUS", ["x"])
    with pytest.raises(ValueError, match="TTL"):
        zs.set_records("a", "A", ["127.0.0.1"], ttl=-1)
    zs.set_records("a", "A", ["127.0.0.1"])
    with pytest.raises(ValueError, match="CNAME"):
        zs.set_records("a", "CNAME", ["b"])
    with pytest.raises(ValueError, match="localhost"):
        ZoneServer(host="localhost")
    with pytest.raises(ValueError, match="count"):
        Fault(count=0)
    with pytest.raises(ValueError, match="NOPE"):
        Fault(rcode="NOPE")
    with pytest.raises(ValueError, match="latency"):
        Fault(latency=-1)
    with pytest.raises(ValueError, match="zone"):
        ZoneServer("this is not a zone file")
    assert ZoneServer(host="::1").address == "[::1]:0"


# -- faults ----------------------------------------------------------------------------------


async def test_latency_delays_only_matching_queries(anyio_backend: Backend) -> None:
    async with ZoneServer() as zs:
        zs.set_records("slow", "A", ["127.0.0.1"])
        zs.set_records("fast", "A", ["127.0.0.2"])
        zs.inject(Fault(latency=0.3, name="slow"))
        fast_elapsed: list[float] = []

        async def fast() -> None:
            await anyio.sleep(0.05)
            start = anyio.current_time()
            await udp(zs, anyio_backend, "fast.svc.test.")
            fast_elapsed.append(anyio.current_time() - start)

        async with anyio.create_task_group() as tg:
            tg.start_soon(fast)
            start = anyio.current_time()
            r = await udp(zs, anyio_backend, "slow.svc.test.")
            slow_elapsed = anyio.current_time() - start
        assert rdatas(r.answer[0]) == {"127.0.0.1"}
        assert slow_elapsed >= 0.29
        assert fast_elapsed[0] < 0.2  # the slow answer does not block the server

        start = anyio.current_time()
        await tcp(zs, anyio_backend, "slow.svc.test.")
        assert anyio.current_time() - start >= 0.29


async def test_drop_times_out_on_udp_and_closes_tcp(anyio_backend: Backend) -> None:
    async with ZoneServer() as zs:
        zs.set_records("a", "A", ["127.0.0.1"])
        zs.inject(Fault(drop=True, name="a", rdtype="A"))
        with pytest.raises(dns.exception.Timeout):
            await udp(zs, anyio_backend, "a.svc.test.", wait=0.2)

        async with await anyio.connect_tcp(zs.host, zs.port) as stream:
            await stream.send(frame(dns.message.make_query("a.svc.test.", "A").to_wire()))
            with anyio.fail_after(TIMEOUT), pytest.raises(anyio.EndOfStream):
                await stream.receive()

        # Other types are not affected, and clearing the faults restores answers.
        r = await udp(zs, anyio_backend, "a.svc.test.", "TXT")
        assert r.rcode() == dns.rcode.NOERROR
        zs.clear_faults()
        r = await udp(zs, anyio_backend, "a.svc.test.")
        assert rdatas(r.answer[0]) == {"127.0.0.1"}


async def test_slow_drop_closes_tcp_after_the_latency_answering_others_meanwhile(
    anyio_backend: Backend,
) -> None:
    async with ZoneServer() as zs:
        zs.set_records("a", "A", ["127.0.0.1"])
        zs.set_records("b", "A", ["127.0.0.2"])
        zs.inject(Fault(drop=True, latency=0.3, name="a"))
        queries = [dns.message.make_query(f"{n}.svc.test.", "A") for n in ("a", "b")]
        buf = bytearray()
        async with await anyio.connect_tcp(zs.host, zs.port) as stream:
            start = anyio.current_time()
            await stream.send(b"".join(frame(q.to_wire()) for q in queries))
            with anyio.fail_after(TIMEOUT):
                reply = dns.message.from_wire(await read_frame(stream, buf))
                assert reply.id == queries[1].id
                assert anyio.current_time() - start < 0.2
                with pytest.raises(anyio.EndOfStream):
                    await stream.receive()
            assert anyio.current_time() - start >= 0.29


async def test_rcode_fault_expires_after_count(anyio_backend: Backend) -> None:
    async with ZoneServer() as zs:
        zs.set_records("a", "A", ["127.0.0.1"])
        zs.set_records("b", "A", ["127.0.0.2"])
        zs.inject(Fault(rcode="SERVFAIL", name="a.svc.test.", count=2))
        r = await udp(zs, anyio_backend, "b.svc.test.")
        assert r.rcode() == dns.rcode.NOERROR  # other names are not affected
        for _ in range(2):
            r = await udp(zs, anyio_backend, "a.svc.test.")
            assert r.rcode() == dns.rcode.SERVFAIL
            assert r.answer == []
        r = await udp(zs, anyio_backend, "a.svc.test.")
        assert r.rcode() == dns.rcode.NOERROR
        assert rdatas(r.answer[0]) == {"127.0.0.1"}

        zs.inject(Fault(rcode="NXDOMAIN", count=1))
        r = await tcp(zs, anyio_backend, "b.svc.test.")
        assert (r.rcode(), r.answer) == (dns.rcode.NXDOMAIN, [])
        r = await tcp(zs, anyio_backend, "b.svc.test.")
        assert r.rcode() == dns.rcode.NOERROR


async def test_truncate_forces_tcp_and_counts_only_udp_queries(anyio_backend: Backend) -> None:
    async with ZoneServer() as zs:
        zs.set_records("a", "A", ["127.0.0.1"])
        zs.inject(Fault(truncate=True, count=2))
        r = await udp(zs, anyio_backend, "a.svc.test.", use_edns=0)
        assert r.flags & dns.flags.TC
        assert r.answer == []
        assert r.edns == 0  # truncated replies still carry OPT
        r = await tcp(zs, anyio_backend, "a.svc.test.")
        assert not r.flags & dns.flags.TC
        assert rdatas(r.answer[0]) == {"127.0.0.1"}
        r = await udp(zs, anyio_backend, "a.svc.test.")
        assert r.flags & dns.flags.TC  # the TCP query did not use up the count
        r = await udp(zs, anyio_backend, "a.svc.test.")
        assert not r.flags & dns.flags.TC
        assert rdatas(r.answer[0]) == {"127.0.0.1"}


async def test_wrong_id_reply_arrives_before_the_real_one(anyio_backend: Backend) -> None:
    async with ZoneServer() as zs:
        zs.set_records("a", "A", ["127.0.0.1"])
        zs.inject(Fault(wrong_id=True, count=1))
        q = dns.message.make_query("a.svc.test.", "A")
        spoof_wire, real_wire = await raw_udp(zs, q.to_wire(), 2)
        spoof, real = dns.message.from_wire(spoof_wire), dns.message.from_wire(real_wire)
        assert spoof.id != q.id
        assert spoof.question == q.question
        assert not q.is_response(spoof)
        assert q.is_response(real)
        assert rdatas(real.answer[0]) == {"127.0.0.1"}

        # A client that checks IDs and keeps listening gets the real answer.
        zs.inject(Fault(wrong_id=True, count=1))
        q = dns.message.make_query("a.svc.test.", "A")
        r = await dns.asyncquery.udp(
            q,
            zs.host,
            port=zs.port,
            timeout=TIMEOUT,
            ignore_errors=True,
            backend=_dns_backend(anyio_backend),
        )
        assert rdatas(r.answer[0]) == {"127.0.0.1"}


async def test_wrong_question_reply_arrives_before_the_real_one(anyio_backend: Backend) -> None:
    async with ZoneServer() as zs:
        zs.set_records("a", "A", ["127.0.0.1"])
        zs.inject(Fault(wrong_question=True, name="a"))
        q = dns.message.make_query("a.svc.test.", "A", use_edns=0)
        spoof_wire, real_wire = await raw_udp(zs, q.to_wire(), 2)
        spoof, real = dns.message.from_wire(spoof_wire), dns.message.from_wire(real_wire)
        assert spoof.id == q.id
        assert spoof.question[0].name != q.question[0].name
        assert not q.is_response(spoof)
        assert q.is_response(real)
        assert rdatas(real.answer[0]) == {"127.0.0.1"}
        # TCP has no off-path spoofing: it answers normally.
        r = await tcp(zs, anyio_backend, "a.svc.test.")
        assert rdatas(r.answer[0]) == {"127.0.0.1"}


async def test_query_counting(anyio_backend: Backend) -> None:
    async with ZoneServer() as zs:
        zs.set_records("a", "A", ["127.0.0.1"])
        await udp(zs, anyio_backend, "a.svc.test.")
        await udp(zs, anyio_backend, "A.SVC.TEST.")
        await tcp(zs, anyio_backend, "a.svc.test.", "AAAA")
        await udp(zs, anyio_backend, "b.svc.test.")
        assert zs.queries == 4
        assert zs.query_count() == 4
        assert zs.query_count("a") == 3
        assert zs.query_count("a.svc.test.", "A") == 2
        assert zs.query_count(rdtype="AAAA") == 1
        assert zs.query_count("b.svc.test") == 1
        assert zs.query_count("c") == 0


# -- transport and hostile input -------------------------------------------------------------


async def test_large_answer_truncated_over_udp_and_full_over_tcp(anyio_backend: Backend) -> None:
    async with ZoneServer(DEFAULT_ZONE) as zs:
        r = await udp(zs, anyio_backend, BIG_SRV, "SRV", use_edns=0, payload=1232)
        assert r.flags & dns.flags.TC
        assert r.answer == []
        assert r.question[0].name == dns.name.from_text(BIG_SRV)

        r = await tcp(zs, anyio_backend, BIG_SRV, "SRV", use_edns=0, payload=1232)
        assert not r.flags & dns.flags.TC
        assert len(r.answer[0]) == BIG_COUNT
        assert len(r.additional) == BIG_COUNT

        # A large enough EDNS payload gets the whole answer over UDP.
        r = await udp(zs, anyio_backend, BIG_SRV, "SRV", use_edns=0, payload=65000)
        assert len(r.answer[0]) == BIG_COUNT

        # Without EDNS the limit is 512 bytes: a small answer fits, a large one does not.
        r = await udp(zs, anyio_backend, HTTP_SRV, "SRV")
        assert not r.flags & dns.flags.TC
        assert r.edns == -1
        zs.set_records("txt", "TXT", [f'"{c * 250}"' for c in "xyz"])
        r = await udp(zs, anyio_backend, "txt.svc.test.", "TXT")
        assert r.flags & dns.flags.TC


async def test_burst_of_concurrent_udp_queries_is_fully_answered(anyio_backend: Backend) -> None:
    """Hundreds of watchers refreshing at once must not lose datagrams in the server."""
    async with ZoneServer() as zs:
        zs.set_records("a", "A", ["127.0.0.1"])
        answered: list[bool] = []

        async def one() -> None:
            r = await udp(zs, anyio_backend, "a.svc.test.", wait=2.0)
            answered.append(rdatas(r.answer[0]) == {"127.0.0.1"})

        async with anyio.create_task_group() as tg:
            for _ in range(500):
                tg.start_soon(one)
        assert answered == [True] * 500
        assert zs.queries == 500


async def test_unsupported_edns_version_gets_badvers(anyio_backend: Backend) -> None:
    async with ZoneServer() as zs:
        r = await udp(zs, anyio_backend, "svc.test.", "SOA", use_edns=1)
        assert r.rcode() == dns.rcode.BADVERS


async def test_tcp_several_queries_per_connection_slow_ones_out_of_order(
    anyio_backend: Backend,
) -> None:
    async with ZoneServer() as zs:
        zs.set_records("slow", "A", ["127.0.0.1"])
        zs.set_records("fast", "A", ["127.0.0.2"])
        zs.inject(Fault(latency=0.2, name="slow"))
        queries = [dns.message.make_query(f"{n}.svc.test.", "A") for n in ("slow", "fast", "fast")]
        buf = bytearray()
        async with await anyio.connect_tcp(zs.host, zs.port) as stream:
            await stream.send(b"".join(frame(q.to_wire()) for q in queries))
            with anyio.fail_after(TIMEOUT):
                replies = [dns.message.from_wire(await read_frame(stream, buf)) for _ in queries]
        assert [r.id for r in replies] == [queries[1].id, queries[2].id, queries[0].id]
        assert rdatas(replies[2].answer[0]) == {"127.0.0.1"}


async def test_malformed_input_never_stops_the_server(anyio_backend: Backend) -> None:
    rng = random.Random(1035)
    async with ZoneServer() as zs:
        zs.set_records("a", "A", ["127.0.0.1"])
        async with await anyio.create_connected_udp_socket(
            remote_host=zs.host, remote_port=zs.port
        ) as sock:
            for size in (0, 1, 5, 11, 12, 13, 40, 300, 1500):
                # Random garbage, with QR clear so the server has to look at it.
                junk = bytearray(rng.randbytes(size))
                if size > 2:
                    junk[2] &= 0x7F
                await sock.send(bytes(junk))
            # Header claiming one question that is not there: FORMERR with the same ID.
            await sock.send(struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0))
            # A compression pointer loop in the question: FORMERR.
            await sock.send(
                struct.pack("!HHHHHH", 0xCAFE, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
            )
            # Responses are never answered; other opcodes get NOTIMP.
            await sock.send(struct.pack("!HHHHHH", 0x1111, 0x8000, 0, 0, 0, 0))
            await sock.send(struct.pack("!HHHHHH", 0x2222, 0x2000, 0, 0, 0, 0))
            replies: dict[int, dns.message.Message] = {}
            with anyio.move_on_after(0.3):
                while True:
                    wire = await sock.receive()
                    replies[int.from_bytes(wire[:2], "big")] = dns.message.from_wire(wire)
        assert replies[0xBEEF].rcode() == dns.rcode.FORMERR
        assert replies[0xBEEF].flags & dns.flags.RD
        assert replies[0xCAFE].rcode() == dns.rcode.FORMERR
        assert replies[0x2222].rcode() == dns.rcode.NOTIMP
        assert 0x1111 not in replies

        # TCP: garbage frames, a zero-length frame, half a length prefix, early closes.
        for payload in (frame(b"\x00" * 7), frame(b""), b"\x00", frame(rng.randbytes(200))[:50]):
            async with await anyio.connect_tcp(zs.host, zs.port) as stream:
                await stream.send(payload)
        async with await anyio.connect_tcp(zs.host, zs.port) as stream:  # close before the answer
            await stream.send(frame(dns.message.make_query("a.svc.test.", "A").to_wire()))

        r = await udp(zs, anyio_backend, "a.svc.test.")
        assert rdatas(r.answer[0]) == {"127.0.0.1"}
        r = await tcp(zs, anyio_backend, "a.svc.test.")
        assert rdatas(r.answer[0]) == {"127.0.0.1"}


async def test_lifecycle_without_context_manager(anyio_backend: Backend) -> None:
    zs = ZoneServer()
    await zs.aclose()  # closing a server that never started is harmless
    await zs.start()
    try:
        with pytest.raises(RuntimeError):
            await zs.start()
        r = await udp(zs, anyio_backend, "svc.test.", "SOA")
        assert r.rcode() == dns.rcode.NOERROR
    finally:
        await zs.aclose()
    await zs.aclose()
    with pytest.raises(dns.exception.Timeout):
        await udp(zs, anyio_backend, "svc.test.", "SOA", wait=0.1)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_no_descriptor_or_task_leaks(anyio_backend: Backend) -> None:
    async with ZoneServer() as zs:  # warm up anything created once per event loop
        await udp(zs, anyio_backend, "svc.test.", "SOA")
        await tcp(zs, anyio_backend, "svc.test.", "SOA")
    fds, tasks = _open_fds(), len(anyio.get_running_tasks())
    for i in range(50):
        async with ZoneServer() as zs:
            if i % 10 == 0:
                # Leave work in flight: an open TCP connection and a delayed UDP answer.
                zs.inject(Fault(latency=5.0))
                stream = await anyio.connect_tcp(zs.host, zs.port)
                async with await anyio.create_connected_udp_socket(
                    remote_host=zs.host, remote_port=zs.port
                ) as sock:
                    await sock.send(dns.message.make_query("svc.test.", "SOA").to_wire())
                    await stream.send(frame(dns.message.make_query("svc.test.", "A").to_wire()))
                    await anyio.sleep(0.02)
        if i % 10 == 0:
            with anyio.fail_after(TIMEOUT), pytest.raises(anyio.EndOfStream):
                await stream.receive()  # the server closed its end
            await stream.aclose()
    await anyio.lowlevel.checkpoint()
    assert _open_fds() == fds
    assert len(anyio.get_running_tasks()) == tasks
