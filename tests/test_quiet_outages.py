"""Quiet outages: upstream health, prompt stale, spread recovery, and the transport's bounds.

An upstream outage must not turn srvwatch into a storm: a nameserver that
times out or refuses is marked down and only probed, lookups fail fast and
serve stale, watches say stale within ``stale_after`` of expiry, and the
recovery is spread over one floor. The transport keeps its lifetime, its
descriptor bound and the event loop responsive whatever a server sends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import anyio
import anyio.lowlevel
import dns.flags
import dns.message
import pytest

import srvwatch
from srvwatch import wire
from srvwatch.testing import Fault, ZoneServer
from tests.hostile import hostile_server, question, response_to

pytestmark = pytest.mark.anyio

ZONE = """\
$TTL 30
@               SOA  ns hostmaster 1 3600 600 86400 5
@               NS   ns
ns              A    127.0.0.1
_http._tcp.api  SRV  10 60 8080 a.api
a.api           A    10.0.0.1
host            A    10.0.0.9
"""


def silent(query: bytes) -> None:
    return None


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_duplicate_nameservers_do_not_break_failover() -> None:
    policy = srvwatch.Policy(timeout=0.3, lifetime=2.0)
    async with hostile_server(silent) as dead, ZoneServer(ZONE) as good:
        servers = [dead.address, dead.address, good.address]
        async with srvwatch.Resolver(servers, policy=policy) as r:
            started = time.monotonic()
            answer = await r.resolve("host.svc.test.", "A")
            elapsed = time.monotonic() - started
            assert len(r.nameservers) == 2  # duplicates removed, order kept
    assert [rd.to_text() for rd in answer.records] == ["10.0.0.9"]
    assert elapsed < 0.6  # one timeout at the dead one, then the good one at once
    assert dead.queries == 1


def closed_port() -> str:
    """An address where nothing listens: every query is refused at once (ICMP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    ("timeout", "lifetime", "servers", "kind"),
    [
        (0.3, 0.35, 1, "silent"),
        (0.2, 0.5, 2, "silent"),
        (0.4, 0.3, 3, "silent"),
        (5.0, 5.5, 1, "refused"),  # backoff sleeps between refusals once ran past it
    ],
)
async def test_the_lifetime_is_never_overrun(
    timeout: float,  # noqa: ASYNC109 - the Policy's, not this function's
    lifetime: float,
    servers: int,
    kind: str,
) -> None:
    policy = srvwatch.Policy(timeout=timeout, lifetime=lifetime)
    async with (
        hostile_server(silent) as a,
        hostile_server(silent) as b,
        hostile_server(silent) as c,
    ):
        addresses = [a.address, b.address, c.address][:servers]
        if kind == "refused":
            addresses = [closed_port() for _ in range(servers)]
        async with srvwatch.Resolver(addresses, policy=policy) as r:
            started = time.monotonic()
            with pytest.raises(srvwatch.ResolveTimeout, match=f"within {lifetime:g}s"):
                await r.resolve("host.svc.test.", "A")
            elapsed = time.monotonic() - started
    assert elapsed <= lifetime + 0.08, elapsed


FLOODER = """
import socket, sys, time
import dns.message
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
data, peer = sock.recvfrom(512)
query = dns.message.from_wire(data)
wrong = dns.message.make_response(dns.message.make_query("other.svc.test.", "A", id=query.id))
junk = wrong.to_wire()
until = time.monotonic() + float(sys.argv[1])
while time.monotonic() < until:
    for _ in range(256):
        try:
            sock.sendto(junk, peer)
        except OSError:
            pass
answer = dns.message.make_response(query)
answer.answer.append(dns.rrset.from_text(query.question[0].name, 30, "IN", "A", "10.0.0.9"))
for _ in range(5):  # the flood may fill the client's buffer: say it until it is heard
    time.sleep(0.1)
    sock.sendto(answer.to_wire(), peer)
"""


async def test_a_flood_of_bad_replies_never_stalls_the_event_loop() -> None:
    """Another process floods replies with the right ID and another question: tasks still run."""
    flood_seconds = 0.8
    command = [sys.executable, "-c", "import dns.rrset\n" + FLOODER, str(flood_seconds)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as flooder:  # noqa: ASYNC220
        try:
            assert flooder.stdout is not None
            address = f"127.0.0.1:{flooder.stdout.readline().strip()}"
            gaps: list[float] = []
            policy = srvwatch.Policy(timeout=3, lifetime=3)
            async with srvwatch.Resolver([address], policy=policy) as r:
                done = False

                async def ticker() -> None:
                    last = time.monotonic()
                    while not done:
                        await anyio.lowlevel.checkpoint()
                        now = time.monotonic()
                        gaps.append(now - last)
                        last = now

                async with anyio.create_task_group() as tg:
                    tg.start_soon(ticker)
                    answer = await r.resolve("host.svc.test.", "A")
                    done = True
                ignored = r.stats()["ignored_responses"]
        finally:
            flooder.kill()
    assert [rd.to_text() for rd in answer.records] == ["10.0.0.9"]
    assert ignored > 1000  # the flood did arrive
    assert max(gaps) < 0.1, f"the event loop stalled for {max(gaps):.3f}s"


async def test_cancelled_lookups_keep_descriptors_bounded_and_close_on_time() -> None:
    policy = srvwatch.Policy(timeout=0.3, lifetime=0.5)
    async with hostile_server(silent) as dead:
        before = open_descriptors()
        peak = before
        async with srvwatch.Resolver([dead.address], policy=policy, max_in_flight=32) as r:
            for batch in range(4):
                async with anyio.create_task_group() as tg:
                    for i in range(250):
                        tg.start_soon(r.resolve, f"n{batch}-{i}.svc.test.", "A")
                    await anyio.sleep(0.05)
                    peak = max(peak, open_descriptors())
                    tg.cancel_scope.cancel()
                peak = max(peak, open_descriptors())
            await anyio.sleep(policy.timeout + 0.1)  # past every orphan's deadline, no new query
            stats = r.stats()
            assert stats["sockets_opened"] == stats["sockets_closed"]
            assert open_descriptors() <= before + 1
    assert peak <= before + 32 + 4, (before, peak)


async def test_srv_target_expansion_is_capped() -> None:
    targets = 1000

    def full(query: bytes) -> bytes:
        name, qtype = question(query)
        if qtype != wire.TYPE_SRV:
            return response_to(query)  # NODATA for every target
        records = [f"{name} 30 SRV 0 1 80 t{i}.elsewhere.test." for i in range(targets)]
        return response_to(query, *records)

    def udp(query: bytes) -> bytes:
        if question(query)[1] != wire.TYPE_SRV:
            return full(query)
        truncated = dns.message.make_response(dns.message.from_wire(query))
        truncated.flags |= dns.flags.TC
        return truncated.to_wire()  # too big for UDP: the client comes back over TCP

    async with hostile_server(udp, tcp=full) as server:
        async with srvwatch.Resolver([server.address]) as r:
            eps = await r.resolve_srv("_big._tcp.svc.test.")
    assert len(eps) == targets  # every record is listed
    assert sum(1 for ep in eps if ep.addresses) == 0
    srv_queries = 2  # UDP, then TCP
    assert server.queries <= srv_queries + 2 * srvwatch.Policy().max_srv_targets


async def test_a_watch_says_stale_within_stale_after_of_expiry() -> None:
    policy = srvwatch.Policy(
        min_ttl=0.3, max_ttl=0.3, timeout=1.0, lifetime=5.0, stale_after=0.3, jitter=0.2
    )
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address], policy=policy) as r:
        async with r.watch("_http._tcp.api.svc.test.") as updates:
            with anyio.fail_after(3):
                first = await updates.__anext__()
                server.inject(Fault(drop=True))
                outage = time.monotonic()
                second = await updates.__anext__()
            latency = time.monotonic() - outage
    assert not first.stale
    assert second.stale
    assert second.endpoints.endpoints == first.endpoints.endpoints
    assert latency <= 0.3 + 0.3 + 0.25, latency  # the TTL, stale_after, a margin


async def test_a_down_first_nameserver_is_skipped_then_probed_then_used_again() -> None:
    policy = srvwatch.Policy(timeout=0.2, lifetime=1.0, backoff_base=0.4, backoff_max=0.4)
    async with ZoneServer(ZONE) as first, ZoneServer(ZONE) as second:
        async with srvwatch.Resolver([first.address, second.address], policy=policy) as r:
            first.inject(Fault(drop=True))
            await r.resolve("host.svc.test.", "A")  # waits one timeout on the first
            assert r.upstreams()[0]["up"] is False
            for rdtype in ("AAAA", "TXT", "MX"):
                started = time.monotonic()
                with pytest.raises(srvwatch.NoData):
                    await r.resolve("host.svc.test.", rdtype)
                assert time.monotonic() - started < 0.1  # no waiting on the down one
            assert first.query_count() == 1
            first.clear_faults()
            await anyio.sleep(0.45)  # the probe is due
            await r.resolve("a.api.svc.test.", "A")
            assert first.query_count() == 2  # the probe, answered
            assert r.upstreams()[0]["up"] is True
            with pytest.raises(srvwatch.NXDomain):
                await r.resolve("nope.svc.test.", "A")
            assert first.query_count() == 3  # first in order again


async def test_closing_with_lookups_in_flight_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Lookups cancelled by the close park orphans; the closed owner starts no sweeper."""
    policy = srvwatch.Policy(timeout=1.0, lifetime=2.0)
    async with hostile_server(silent) as dead:
        async with srvwatch.Resolver([dead.address], policy=policy) as r:
            async with r.watch("_a._tcp.svc.test."), r.watch("_b._tcp.svc.test."):
                await anyio.sleep(0.1)  # both refreshes are waiting on the silent server
        stats = r.stats()
    assert stats["sockets_opened"] == stats["sockets_closed"]
    errors = [rec for rec in caplog.records if rec.levelname == "ERROR"]
    assert not errors, [rec.getMessage() for rec in errors]
