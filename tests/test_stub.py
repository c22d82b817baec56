"""The DNS stub with real clients (kdig, dnspython, unbound) in front and a real Knot behind."""

from __future__ import annotations

import os
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import anyio.to_thread
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

import srvwatch
from srvwatch.listen import DnsListener
from srvwatch.server.stub import DEFAULT_ALLOW, Stub
from tests import zones
from tests.dns_servers import KnotFactory, KnotServer, UnboundServer

pytestmark = pytest.mark.anyio

DAY_ZONE = zones.DEFAULT_ZONE + "day 86400 IN A 10.9.9.9\n"


@dataclass
class Running:
    listener: DnsListener
    resolver: srvwatch.Resolver
    stub: Stub

    @property
    def port(self) -> int:
        return self.listener.port


@asynccontextmanager
async def running_stub(
    upstream: str,
    policy: srvwatch.Policy | None = None,
    allow: tuple[str, ...] = DEFAULT_ALLOW,
) -> AsyncIterator[Running]:
    async with srvwatch.Resolver([upstream], policy=policy) as resolver:
        stub = Stub(resolver, allow=allow)
        async with DnsListener(stub.answer, "127.0.0.1", 0, name="stub") as listener:
            yield Running(listener, resolver, stub)


async def ask(
    port: int, name: str, rdtype: str = "A", *, tcp: bool = False, edns: bool = True
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    send = dns.query.tcp if tcp else dns.query.udp
    reply: dns.message.Message = await anyio.to_thread.run_sync(
        lambda: send(query, "127.0.0.1", timeout=3.0, port=port)
    )
    return reply


def ttls(message: dns.message.Message) -> list[int]:
    return [rrset.ttl for rrset in message.answer + message.authority + message.additional]


@pytest.fixture
def knot(knot_factory: KnotFactory) -> Iterator[KnotServer]:
    server = knot_factory(DAY_ZONE)
    yield server
    server.stop()


async def test_answers_match_knot_with_ttls_clamped(knot: KnotServer) -> None:
    async with running_stub(knot.address()) as s:
        for name, rdtype in [
            (zones.HTTP_SRV, "SRV"),
            (zones.MULTI, "A"),
            (zones.MULTI, "AAAA"),
            ("alias.svc.test.", "A"),
            ("nodata.svc.test.", "TXT"),
        ]:
            direct = await ask(knot.port, name, rdtype)
            for tcp in (False, True):
                for edns in (False, True):
                    via = await ask(s.port, name, rdtype, tcp=tcp, edns=edns)
                    assert via.rcode() == direct.rcode()
                    assert sorted(map(str, via.answer)) == sorted(map(str, direct.answer))
                    assert (via.edns >= 0) == edns
        zero = await ask(s.port, zones.ZERO_SRV, "SRV")
        assert set(ttls(zero)) == {5}  # TTL 0 comes out as the 5 s floor
        day = await ask(s.port, "day.svc.test.", "A")
        assert ttls(day) == [300]  # a day comes out as the 300 s cap
        missing = await ask(s.port, zones.NXDOMAIN, "A")
        assert missing.rcode() == dns.rcode.NXDOMAIN
        assert [rrset.rdtype for rrset in missing.authority] == [dns.rdatatype.SOA]
        assert 5 <= missing.authority[0].ttl <= 60  # the negative bounds
        assert s.resolver.stats()["stub_hits"] > 0


async def test_a_large_answer_is_truncated_over_udp_and_whole_over_tcp(knot: KnotServer) -> None:
    async with running_stub(knot.address()) as s:
        udp = await ask(s.port, zones.BIG_SRV, "SRV")
        assert udp.flags & dns.flags.TC
        assert not udp.answer
        tcp = await ask(s.port, zones.BIG_SRV, "SRV", tcp=True)
        assert not tcp.flags & dns.flags.TC
        assert len(tcp.answer[0]) == zones.BIG_COUNT


async def test_kdig_gets_the_clamped_answer(knot: KnotServer) -> None:
    async with running_stub(knot.address()) as s:
        for extra in ([], ["+tcp"], ["+noedns"]):
            result = await anyio.run_process(
                [
                    "kdig",
                    "@127.0.0.1",
                    "-p",
                    str(s.port),
                    zones.ZERO_SRV,
                    "SRV",
                    "+noall",
                    "+answer",
                    *extra,
                ]
            )
            lines = result.stdout.decode().split("\n")
            records = [line.split() for line in lines if "SRV" in line]
            assert len(records) == 2
            assert {fields[1] for fields in records} == {"5"}


async def test_identical_concurrent_queries_make_one_upstream_query(knot: KnotServer) -> None:
    async with running_stub(knot.address()) as s:
        before = knot.query_count()
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(ask, s.port, "real.svc.test.", "A")
        assert knot.query_count() - before == 1


async def test_an_outage_gets_stale_answers_with_ttl_30_and_servfail_without(
    knot: KnotServer,
) -> None:
    policy = srvwatch.Policy(
        min_ttl=1.0, max_ttl=1.0, timeout=0.5, stale_after=1.8, stale_refresh_interval=1.5
    )
    async with running_stub(knot.address(), policy) as s:
        fresh = await ask(s.port, "real.svc.test.", "A")
        assert fresh.answer
        await anyio.to_thread.run_sync(knot.stop)
        await anyio.sleep(1.1)  # expired
        started = time.monotonic()
        stale = await ask(s.port, "real.svc.test.", "A")
        assert time.monotonic() - started < 2.0
        assert [list(r) for r in stale.answer] == [list(r) for r in fresh.answer]
        assert ttls(stale) == [30] * len(ttls(stale))
        never = await ask(s.port, "never-asked.svc.test.", "A")
        assert never.rcode() == dns.rcode.SERVFAIL
        assert s.resolver.stats()["stub_stale_answers"] >= 1
        await anyio.to_thread.run_sync(knot.start)
        with anyio.fail_after(10):
            while True:  # fresh again once a probe finds Knot back (backoff under 2 s)
                again = await ask(s.port, "real.svc.test.", "A")
                if ttls(again)[0] <= 1:
                    break
                await anyio.sleep(0.3)


async def test_unbound_forwarding_to_the_stub_works_end_to_end(
    knot: KnotServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    async with running_stub(knot.address()) as s:

        @dataclass
        class Upstream:
            host: str
            port: int
            zones: tuple[str, ...] = ("svc.test.",)

        unbound = UnboundServer(
            host="127.0.0.1",
            port=_free_port(),
            upstream=Upstream("127.0.0.1", s.port),  # type: ignore[arg-type]
            workdir=tmp_path_factory.mktemp("unbound-stub"),
        )
        await anyio.to_thread.run_sync(unbound.start)
        try:
            reply = await ask(unbound.port, zones.ZERO_SRV, "SRV")
            assert len(reply.answer[0]) == 2
            assert reply.answer[0].ttl <= 5
            assert reply.answer[0].ttl > 0  # the floor reached unbound, not Knot's 0
        finally:
            await anyio.to_thread.run_sync(unbound.stop)
        assert s.resolver.stats()["stub_requests_udp"] >= 1


def _free_port() -> int:
    from tests.dns_servers import free_port

    return free_port()


async def test_clients_outside_allow_are_refused(knot: KnotServer) -> None:
    async with running_stub(knot.address(), allow=("10.0.0.0/8",)) as s:
        reply = await ask(s.port, "real.svc.test.", "A")
        assert reply.rcode() == dns.rcode.REFUSED
        assert s.resolver.stats()["stub_refused"] == 1
        assert knot.query_count() == 0 or s.resolver.stats()["queries"] == 0


async def test_hostile_datagrams_never_stop_it(knot: KnotServer) -> None:
    rng = random.Random(7)
    good = dns.message.make_query("real.svc.test.", "A").to_wire()
    junk: list[bytes] = [
        b"",
        b"\x00",
        bytes(11),
        bytes(12),
        good[:2] + b"\x81\x80" + good[4:],  # QR set: a response
        good[:2] + b"\x28\x00" + good[4:],  # opcode 5 (UPDATE)
        good[:12] + b"\xc0\x0c\x00\x01\x00\x01",  # a question that points at itself
        good[:4] + b"\xff\xff\xff\xff\xff\xff\xff\xff" + good[12:],  # huge counts
        good[:-4],  # truncated question
    ]
    junk += [os.urandom(rng.randrange(1, 600)) for _ in range(2500)]
    async with running_stub(knot.address()) as s:
        await ask(s.port, "real.svc.test.", "A")
        rss_before = _rss()
        with anyio.fail_after(60):
            sock = await anyio.create_connected_udp_socket("127.0.0.1", s.port)
            async with sock:
                for round_ in range(40):  # 100,000 datagrams in all
                    for data in junk:
                        await sock.send(data)
                    reply = await ask(s.port, "real.svc.test.", "A")
                    assert reply.answer, round_
        grown = _rss() - rss_before
        stats = s.listener.stats()
        assert stats["handler_errors"] == 0
        assert s.resolver.stats()["queries"] == 1  # nothing hostile reached upstream
    assert grown < 20 << 20, f"RSS grew by {grown >> 20} MiB"


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_bad_queries_get_the_right_rcode_or_nothing(knot: KnotServer) -> None:
    good = dns.message.make_query("real.svc.test.", "A").to_wire()
    cases = {
        "update opcode": (good[:2] + b"\x28\x00" + good[4:], dns.rcode.NOTIMP),
        "question cut short": (good[:-6], dns.rcode.FORMERR),
        "two questions": (good[:4] + b"\x00\x02" + good[6:], dns.rcode.FORMERR),
        "trailing bytes": (good + b"\x00\x00", dns.rcode.FORMERR),
        "AXFR over the stub": (
            dns.message.make_query("svc.test.", "AXFR").to_wire(),
            dns.rcode.NOTIMP,
        ),
    }
    async with running_stub(knot.address()) as s:
        sock = await anyio.create_connected_udp_socket("127.0.0.1", s.port)
        async with sock:
            for what, (data, rcode) in cases.items():
                await sock.send(data)
                with anyio.fail_after(2):
                    reply = await sock.receive()
                assert reply[3] & 0xF == rcode, what  # read raw: an UPDATE reply is no query
                assert reply[:2] == data[:2], what
                assert reply[2] & 0x80, what
            await sock.send(good[:2] + b"\x81\x80" + good[4:])  # a response: never answered
            with anyio.move_on_after(0.3) as silence:
                await sock.receive()
            assert silence.cancelled_caught
        assert knot.query_count() == 0


async def test_do_and_cd_queries_are_cached_apart(knot: KnotServer) -> None:
    async with running_stub(knot.address()) as s:
        plain = dns.message.make_query("real.svc.test.", "A")
        with_do = dns.message.make_query("real.svc.test.", "A", want_dnssec=True)
        with_cd = dns.message.make_query("real.svc.test.", "A")
        with_cd.flags |= dns.flags.CD
        before = knot.query_count()
        for query in (plain, with_do, with_cd, plain, with_do, with_cd):
            reply = await anyio.to_thread.run_sync(
                lambda q=query: dns.query.udp(q, "127.0.0.1", timeout=3.0, port=s.port)
            )
            assert reply.answer
            assert bool(reply.flags & dns.flags.CD) == bool(query.flags & dns.flags.CD)
        assert knot.query_count() - before == 3  # one per key, then hits


async def test_a_name_asked_near_expiry_is_prefetched(knot: KnotServer) -> None:
    policy = srvwatch.Policy(min_ttl=2.0, max_ttl=2.0, jitter=0.2)
    async with running_stub(knot.address(), policy) as s:
        await ask(s.port, "real.svc.test.", "A")
        await anyio.sleep(1.85)  # in the last 10% of its 2 s
        before = knot.query_count()
        await ask(s.port, "real.svc.test.", "A")  # a hit, and a refresh in the background
        await anyio.sleep(0.3)
        assert knot.query_count() - before == 1
        assert s.resolver.stats()["stub_prefetches"] == 1
        misses = s.resolver.stats()["stub_misses"]
        await ask(s.port, "real.svc.test.", "A")  # past the old expiry: still a hit
        assert s.resolver.stats()["stub_misses"] == misses
        assert s.resolver.stats()["ttl_clamped_cap"] >= 1  # Knot's 30 s came out as 2 s


async def test_hostile_tcp_streams_never_stop_it(knot: KnotServer) -> None:
    """1,000 clients: garbage, half a length prefix, 65535 bytes promised and never sent."""
    good = dns.message.make_query("real.svc.test.", "A")
    async with running_stub(knot.address()) as s:
        s.listener.idle_timeout = 0.5

        async def hostile(kind: int) -> None:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", s.port)
                async with stream:
                    with anyio.move_on_after(1.0):
                        if kind == 0:
                            await stream.send(os.urandom(300))
                        elif kind == 1:
                            await stream.send(b"\x00")  # half a length prefix, then nothing
                        else:
                            await stream.send(b"\xff\xff" + os.urandom(1000))  # 65535 promised
                        await stream.receive()
            except (OSError, anyio.BrokenResourceError, anyio.EndOfStream):
                pass  # the stub closed it: what it should do to such a client

        async with anyio.create_task_group() as tg:
            for i in range(1000):
                tg.start_soon(hostile, i % 3)
            await anyio.sleep(0.2)
            udp = await ask(s.port, "real.svc.test.", "A")  # UDP is never blocked by TCP
            assert udp.answer
            # TCP: the connection bound may be full of hostile clients for one idle timeout;
            # a client that tries again, as resolvers do, is served.
            with anyio.fail_after(5):
                while True:
                    try:
                        reply = await anyio.to_thread.run_sync(
                            lambda: dns.query.tcp(good, "127.0.0.1", timeout=2.0, port=s.port)
                        )
                        break
                    except (OSError, EOFError):
                        await anyio.sleep(0.1)
            assert reply.answer
        stats = s.listener.stats()
        assert stats["handler_errors"] == 0


def test_srvwatch_serve_end_to_end(knot_server: KnotServer) -> None:
    """The command as a user runs it: answers kdig, stops on SIGTERM with exit 0."""
    import signal
    import subprocess
    import sys

    from tests.dns_servers import free_port

    port = free_port()
    command = [
        sys.executable, "-m", "srvwatch.cli", "serve",
        "--listen", f"127.0.0.1:{port}", "--upstream", knot_server.address(),
        "--watch", zones.HTTP_SRV, "--loop", "asyncio",
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as server:
        assert server.stdout is not None
        try:
            assert "DNS stub on 127.0.0.1" in server.stdout.readline()
            result = subprocess.run(
                ["kdig", "@127.0.0.1", "-p", str(port), zones.HTTP_SRV, "SRV", "+short"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            assert len(result.stdout.split("\n")) >= 3
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=10) == 0
            assert "stopped" in server.stdout.read()
        finally:
            server.kill()


def test_serve_rejects_bad_listen_addresses() -> None:
    import subprocess
    import sys

    for bad in ("127.0.0.1", "127.0.0.1:99999", "[::1]8181", "nowhere:53"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "srvwatch.cli",
                "serve",
                "--listen",
                bad,
                "--upstream",
                "127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert result.returncode != 0, bad
        assert bad in result.stderr, (bad, result.stderr)
