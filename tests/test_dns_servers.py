"""The DNS server fixtures serve what tests/zones.py says, through Knot and through unbound."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from tests import zones
from tests.dns_servers import (
    KnotFactory,
    KnotServer,
    UnboundFactory,
    UnboundServer,
    free_port,
)

Server = KnotServer | UnboundServer


def udp(server: Server, name: str, rdtype: str, payload: int = 1232) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=payload)
    return dns.query.udp(query, server.host, port=server.port, timeout=2, ignore_unexpected=True)


def tcp(server: Server, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    return dns.query.tcp(query, server.host, port=server.port, timeout=2)


def answer(resp: dns.message.Message, name: str, rdtype: str) -> dns.rrset.RRset:
    assert resp.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(resp.rcode())
    return resp.find_rrset(
        resp.answer, dns.name.from_text(name), dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
    )


def texts(rrset: dns.rrset.RRset) -> set[str]:
    return {rdata.to_text() for rdata in rrset}


def additional(resp: dns.message.Message) -> set[tuple[str, str, str]]:
    return {
        (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rdata.to_text())
        for rrset in resp.additional
        for rdata in rrset
    }


def check_ttl(server: Server, rrset: dns.rrset.RRset, ttl: int) -> None:
    """Knot gives the zone TTL; the cache gives at most that (counted down)."""
    if isinstance(server, KnotServer):
        assert rrset.ttl == ttl
    else:
        assert 0 <= rrset.ttl <= ttl


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(params=["knot", "unbound"])
def server(request: pytest.FixtureRequest) -> Server:
    srv: Server = request.getfixturevalue(f"{request.param}_server")
    return srv


# --------------------------------------------------------------------------- zone content


def test_http_srv_and_additional_addresses(server: Server) -> None:
    resp = udp(server, zones.HTTP_SRV, "SRV")
    srv = answer(resp, zones.HTTP_SRV, "SRV")
    expected = {f"{p} {w} {port} {t}" for t, (p, w, port) in zones.HTTP_TARGETS.items()}
    assert texts(srv) == expected
    check_ttl(server, srv, zones.HTTP_TTL)
    # Knot puts in-zone target addresses in the additional section; unbound
    # (minimal-responses: no) passes them on, as cluster DNS does.
    glue = {(n, "A", a) for n, a in zones.HTTP_A.items()}
    glue |= {(n, "AAAA", a) for n, a in zones.HTTP_AAAA.items()}
    assert additional(resp) == glue


def test_target_addresses(server: Server) -> None:
    for name, address in zones.HTTP_A.items():
        rrset = answer(udp(server, name, "A"), name, "A")
        assert texts(rrset) == {address}
        check_ttl(server, rrset, 30)
    for name, address in zones.HTTP_AAAA.items():
        assert texts(answer(udp(server, name, "AAAA"), name, "AAAA")) == {address}
    # b.api has no AAAA: NODATA.
    resp = udp(server, "b.api.svc.test.", "AAAA")
    assert resp.rcode() == dns.rcode.NOERROR
    assert resp.answer == []


def test_zero_ttl_stays_zero(server: Server) -> None:
    srv = answer(udp(server, zones.ZERO_SRV, "SRV"), zones.ZERO_SRV, "SRV")
    assert srv.ttl == 0
    assert texts(srv) == {f"10 50 {zones.ZERO_PORT} {t}" for t in zones.ZERO_A}
    for name, address in zones.ZERO_A.items():
        rrset = answer(udp(server, name, "A"), name, "A")
        assert rrset.ttl == 0
        assert texts(rrset) == {address}


def test_one_ttl(server: Server) -> None:
    srv = answer(udp(server, zones.ONE_SRV, "SRV"), zones.ONE_SRV, "SRV")
    assert srv.ttl in ((1,) if isinstance(server, KnotServer) else (0, 1))
    assert texts(srv) == {f"10 100 {zones.ONE_PORT} {zones.ONE_TARGET}"}
    assert texts(answer(udp(server, zones.ONE_TARGET, "A"), zones.ONE_TARGET, "A")) == {
        zones.ONE_ADDRESS
    }


def test_out_of_zone_target_has_no_additional_and_resolves_separately(server: Server) -> None:
    resp = udp(server, zones.EXT_SRV, "SRV")
    srv = answer(resp, zones.EXT_SRV, "SRV")
    assert texts(srv) == {f"10 100 {zones.EXT_PORT} {zones.EXT_TARGET}"}
    if isinstance(server, KnotServer):
        # Knot adds additional records only from the zone of the answer.
        assert resp.additional == []
    web = answer(udp(server, zones.EXT_TARGET, "A"), zones.EXT_TARGET, "A")
    assert texts(web) == {zones.EXT_ADDRESS}


def test_service_not_offered(server: Server) -> None:
    srv = answer(udp(server, zones.NONE_SRV, "SRV"), zones.NONE_SRV, "SRV")
    assert texts(srv) == {"0 0 0 ."}


def test_cname_chain(server: Server) -> None:
    resp = udp(server, zones.ALIAS, "A")
    assert texts(answer(resp, zones.ALIAS, "CNAME")) == {zones.ALIAS2}
    assert texts(answer(resp, zones.ALIAS2, "CNAME")) == {zones.REAL}
    assert texts(answer(resp, zones.REAL, "A")) == {zones.REAL_ADDRESS}


def _negative_soa(resp: dns.message.Message) -> dns.rrset.RRset:
    [soa] = [r for r in resp.authority if r.rdtype == dns.rdatatype.SOA]
    assert soa.name.to_text() == zones.DEFAULT_ORIGIN
    assert soa[0].minimum == zones.SOA_MINIMUM
    return soa


def test_nodata(server: Server) -> None:
    resp = udp(server, zones.NODATA, "A")
    assert resp.rcode() == dns.rcode.NOERROR
    assert resp.answer == []
    assert 0 <= _negative_soa(resp).ttl <= zones.SOA_MINIMUM
    txt = answer(udp(server, zones.NODATA, "TXT"), zones.NODATA, "TXT")
    assert texts(txt) == {f'"{zones.NODATA_TXT}"'}


def test_nxdomain(server: Server) -> None:
    resp = udp(server, zones.NXDOMAIN, "SRV")
    assert resp.rcode() == dns.rcode.NXDOMAIN
    assert resp.answer == []
    soa = _negative_soa(resp)
    if isinstance(server, KnotServer):
        assert soa.ttl == zones.SOA_MINIMUM


def test_multi_address(server: Server) -> None:
    assert texts(answer(udp(server, zones.MULTI, "A"), zones.MULTI, "A")) == set(zones.MULTI_A)
    aaaa = answer(udp(server, zones.MULTI, "AAAA"), zones.MULTI, "AAAA")
    assert texts(aaaa) == set(zones.MULTI_AAAA)


def test_big_srv_truncated_over_udp_complete_over_tcp(server: Server) -> None:
    resp = udp(server, zones.BIG_SRV, "SRV", payload=1232)
    assert resp.flags & dns.flags.TC
    full = tcp(server, zones.BIG_SRV, "SRV")
    assert not full.flags & dns.flags.TC
    srv = answer(full, zones.BIG_SRV, "SRV")
    expected = {f"10 10 {zones.BIG_PORT} {zones.big_target(i)}" for i in range(zones.BIG_COUNT)}
    assert texts(srv) == expected
    assert len(full.to_wire()) > 1232


def test_unknown_tld_stays_local(unbound_server: UnboundServer) -> None:
    # "." is forwarded to Knot, which refuses: no query leaves the machine, answer is fast.
    start = time.monotonic()
    resp = udp(unbound_server, "example.com.", "A")
    assert resp.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED)
    assert time.monotonic() - start < 1.0


# --------------------------------------------------------------------------- caching behaviour


def test_unbound_counts_ttl_down_knot_does_not(
    knot_server: KnotServer, unbound_server: UnboundServer
) -> None:
    unbound_server.flush(zones.MULTI)  # a fresh entry cannot expire during the test
    first = answer(udp(unbound_server, zones.MULTI, "A"), zones.MULTI, "A").ttl
    knot_first = answer(udp(knot_server, zones.MULTI, "A"), zones.MULTI, "A").ttl
    time.sleep(1.1)
    second = answer(udp(unbound_server, zones.MULTI, "A"), zones.MULTI, "A").ttl
    knot_second = answer(udp(knot_server, zones.MULTI, "A"), zones.MULTI, "A").ttl
    assert second < first <= 30
    assert knot_first == knot_second == 30


def test_unbound_caches_ttl30_but_forwards_ttl0_every_time(
    knot_server: KnotServer, unbound_server: UnboundServer
) -> None:
    unbound_server.flush(zones.HTTP_SRV)
    udp(unbound_server, zones.HTTP_SRV, "SRV")  # now cached for 30 s
    before = knot_server.query_count()
    for _ in range(3):
        answer(udp(unbound_server, zones.HTTP_SRV, "SRV"), zones.HTTP_SRV, "SRV")
    assert knot_server.query_count() == before
    for i in range(1, 4):
        answer(udp(unbound_server, zones.ZERO_SRV, "SRV"), zones.ZERO_SRV, "SRV")
        assert knot_server.query_count() == before + i


# --------------------------------------------------------------------------- fixture API


def test_address_and_port(knot_server: KnotServer, unbound_server: UnboundServer) -> None:
    assert knot_server.address() == f"127.0.0.1:{knot_server.port}"
    assert unbound_server.address() == f"127.0.0.1:{unbound_server.port}"
    assert unbound_server.upstream is knot_server
    assert knot_server.zone == zones.DEFAULT_ORIGIN
    assert knot_server.port != unbound_server.port


def test_free_port_is_free_for_udp_and_tcp() -> None:
    port = free_port()
    assert port != free_port()  # never handed out twice
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        t.bind(("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", port))


def test_query_count_increments_by_one_per_query(knot_server: KnotServer) -> None:
    for i in range(10):
        before = knot_server.query_count()
        if i % 2:
            tcp(knot_server, zones.MULTI, "A")
        else:
            udp(knot_server, zones.NXDOMAIN, "A")
        assert knot_server.query_count() == before + 1


def test_set_records_visible_at_once(knot_factory: KnotFactory) -> None:
    knot = knot_factory()
    name = zones.HTTP_SRV
    knot.set_records("_http._tcp.api", "SRV", 10, ["10 100 9090 d.api.svc.test."])
    srv = answer(udp(knot, name, "SRV"), name, "SRV")
    assert texts(srv) == {"10 100 9090 d.api.svc.test."}
    assert srv.ttl == 10

    # Replaces (not appends), with an absolute owner, with or without the final dot.
    rdatas = ["10 50 9090 d.api.svc.test.", "10 50 9091 e.api.svc.test."]
    knot.set_records(name, "SRV", 7, rdatas)
    assert texts(answer(udp(knot, name, "SRV"), name, "SRV")) == set(rdatas)
    knot.set_records(name.rstrip("."), "SRV", 7, rdatas[:1])
    assert texts(answer(udp(knot, name, "SRV"), name, "SRV")) == set(rdatas[:1])

    # A brand-new name, and another zone on the same server.
    knot.set_records("d.api", "A", 0, ["127.0.0.99"])
    d = answer(udp(knot, "d.api.svc.test.", "A"), "d.api.svc.test.", "A")
    assert (texts(d), d.ttl) == ({"127.0.0.99"}, 0)
    knot.set_records("web", "A", 30, ["127.0.0.77"], zone=zones.OTHER_ORIGIN)
    web = answer(udp(knot, zones.EXT_TARGET, "A"), zones.EXT_TARGET, "A")
    assert texts(web) == {"127.0.0.77"}


def test_delete_records(knot_factory: KnotFactory) -> None:
    knot = knot_factory()
    knot.delete_records(zones.MULTI, "AAAA")
    resp = udp(knot, zones.MULTI, "AAAA")
    assert (resp.rcode(), resp.answer) == (dns.rcode.NOERROR, [])  # NODATA now
    assert texts(answer(udp(knot, zones.MULTI, "A"), zones.MULTI, "A")) == set(zones.MULTI_A)

    knot.delete_records("multi")
    assert udp(knot, zones.MULTI, "A").rcode() == dns.rcode.NXDOMAIN
    knot.delete_records("multi")  # idempotent
    knot.set_records("_http._tcp.api", "SRV", 30, [])  # empty set == delete
    assert udp(knot, zones.HTTP_SRV, "SRV").rcode() == dns.rcode.NXDOMAIN


def test_set_records_bad_rdata_raises_and_leaves_zone_usable(knot_factory: KnotFactory) -> None:
    knot = knot_factory()
    with pytest.raises(RuntimeError, match="zone-set"):
        knot.set_records("multi", "A", 30, ["not-an-address"])
    # The transaction was aborted: old data still served, and the next change works.
    assert texts(answer(udp(knot, zones.MULTI, "A"), zones.MULTI, "A")) == set(zones.MULTI_A)
    knot.set_records("multi", "A", 30, ["127.0.0.50"])
    assert texts(answer(udp(knot, zones.MULTI, "A"), zones.MULTI, "A")) == {"127.0.0.50"}


def test_stop_and_start_on_the_same_port(knot_factory: KnotFactory) -> None:
    knot = knot_factory()
    port, pid = knot.port, knot.pid
    assert pid is not None
    knot.set_records("multi", "A", 30, ["127.0.0.60"])
    udp(knot, zones.MULTI, "A")
    count = knot.query_count()

    knot.stop()
    assert not knot.running
    assert knot.pid is None
    assert process_gone(pid)
    with pytest.raises((dns.exception.Timeout, ConnectionRefusedError)):
        dns.query.udp(dns.message.make_query(zones.MULTI, "A"), knot.host, port=port, timeout=0.3)
    assert knot.query_count() == count  # still readable while stopped

    knot.start()
    assert knot.port == port
    assert knot.pid not in (None, pid)
    # Dynamic changes survive the restart; the counter carries on.
    assert texts(answer(udp(knot, zones.MULTI, "A"), zones.MULTI, "A")) == {"127.0.0.60"}
    assert knot.query_count() == count + 1
    knot.start()  # already running: no-op
    knot.stop()
    knot.stop()  # idempotent


def test_unbound_flush_and_outage(
    knot_factory: KnotFactory, unbound_factory: UnboundFactory
) -> None:
    knot = knot_factory()
    resolver = unbound_factory(knot)
    assert texts(answer(udp(resolver, zones.MULTI, "A"), zones.MULTI, "A")) == set(zones.MULTI_A)
    knot.set_records("multi", "A", 30, ["127.0.0.70"])
    # Still cached at the resolver ...
    assert texts(answer(udp(resolver, zones.MULTI, "A"), zones.MULTI, "A")) == set(zones.MULTI_A)
    resolver.flush()
    # ... until flushed.
    assert texts(answer(udp(resolver, zones.MULTI, "A"), zones.MULTI, "A")) == {"127.0.0.70"}

    # Upstream outage: uncached names get no answer (unbound keeps retrying for seconds,
    # then SERVFAILs); they work again once Knot is back and the resolver is flushed.
    knot.stop()
    query = dns.message.make_query(zones.NODATA, "TXT")
    try:
        resp = dns.query.udp(
            query, resolver.host, port=resolver.port, timeout=1, ignore_unexpected=True
        )
    except dns.exception.Timeout:
        pass
    else:
        assert resp.rcode() == dns.rcode.SERVFAIL
    knot.start()
    resolver.flush()
    assert answer(udp(resolver, zones.NODATA, "TXT"), zones.NODATA, "TXT")

    pid = resolver.pid
    assert pid is not None
    resolver.stop()
    assert process_gone(pid)
    resolver.start()
    assert texts(answer(udp(resolver, zones.MULTI, "A"), zones.MULTI, "A")) == {"127.0.0.70"}


def test_no_orphans_and_no_fd_leaks(
    knot_factory: KnotFactory, unbound_factory: UnboundFactory
) -> None:
    fds = fd_count()
    started = time.monotonic()
    knot = knot_factory()
    resolver = unbound_factory(knot)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"starting knot + unbound took {elapsed:.2f} s"
    pids = [knot.pid, resolver.pid]
    answer(udp(resolver, zones.HTTP_SRV, "SRV"), zones.HTTP_SRV, "SRV")
    knot.query_count()
    resolver.flush()
    resolver.stop()
    knot.stop()
    for pid in pids:
        assert pid is not None
        assert process_gone(pid)
        assert not Path(f"/proc/{pid}").exists()
    assert fd_count() == fds


def test_start_failure_raises_with_log(
    knot_server: KnotServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Hold the port without SO_REUSEPORT: unbound cannot bind and exits at once.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        resolver = UnboundServer(
            host="127.0.0.1",
            port=port,
            upstream=knot_server,
            workdir=tmp_path_factory.mktemp("unbound-fail"),
        )
        with pytest.raises(RuntimeError, match=r"(?s)exited with status.*log"):
            resolver.start()
    assert not resolver.running
