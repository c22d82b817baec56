"""A malformed answer is a server failure, never a parser error, an ExceptionGroup or emptiness.

Each server below sends a reply whose header and record offsets are fine
but whose RDATA is not what its type says: the kind of damage that passes
the message walk and shows up only when a record is decoded.
"""

from __future__ import annotations

import gc
import tracemalloc

import anyio
import pytest

import srvwatch
from srvwatch import wire
from tests.hostile import hostile_server, last_rdata, question, replace_last_rdata, response_to

pytestmark = pytest.mark.anyio

SRV = "_x._tcp.svc.test."
SOA = "svc.test. 30 SOA ns.svc.test. hostmaster.svc.test. 1 3600 600 86400 5"
QUICK = srvwatch.Policy(timeout=0.2, lifetime=0.5, servfail_ttl=5.0)


def srv_target_past_rdata(query: bytes) -> bytes:
    good = response_to(query, f"{SRV} 30 SRV 10 10 80 t.svc.test.")
    return replace_last_rdata(good, last_rdata(good)[:-1])  # target loses its root label


def short_soa_nxdomain(query: bytes) -> bytes:
    good = response_to(query, SOA, section="authority", rcode=3)
    return replace_last_rdata(good, last_rdata(good)[:-3])


def five_byte_a(query: bytes) -> bytes:
    name, _ = question(query)
    good = response_to(query, f"{name} 30 A 10.0.0.1")
    return replace_last_rdata(good, last_rdata(good) + b"\x00")


def short_cname(query: bytes) -> bytes:
    name, _ = question(query)
    good = response_to(query, f"{name} 30 CNAME elsewhere.other.test.")
    return replace_last_rdata(good, last_rdata(good) + b"\x00")


def bad_txt(query: bytes) -> bytes:
    name, _ = question(query)
    good = response_to(query, f'{name} 30 TXT "ab"')
    return replace_last_rdata(good, b"\x05ab")  # a 5-byte string with 2 bytes behind it


@pytest.mark.parametrize(
    ("respond", "call"),
    [
        (srv_target_past_rdata, "srv"),
        (short_soa_nxdomain, "srv"),
        (five_byte_a, "a"),
        (short_cname, "a"),
        (bad_txt, "txt"),
        (five_byte_a, "addresses"),
    ],
)
async def test_malformed_answer_is_a_remembered_server_failure(respond: object, call: str) -> None:
    async with hostile_server(respond) as server:  # type: ignore[arg-type]
        async with srvwatch.Resolver([server.address], policy=QUICK) as r:

            async def lookup() -> object:
                if call == "srv":
                    return await r.resolve_srv(SRV)
                if call == "a":
                    return await r.resolve("h.svc.test.", "A")
                if call == "txt":
                    return await r.resolve("h.svc.test.", "TXT")
                return await r.resolve_addresses("h.svc.test.")

            for _ in range(3):
                with pytest.raises(srvwatch.ServerFailure) as info:
                    await lookup()
                assert server.address in str(info.value)
                assert "malformed" in str(info.value)
            asked = server.queries
            assert asked == (2 if call == "addresses" else 1)  # remembered for servfail_ttl


async def test_a_watch_treats_a_malformed_answer_as_a_failure() -> None:
    """Good data first, then damage: the watch goes stale, it never publishes an empty set."""
    state = {"broken": False}

    def respond(query: bytes) -> bytes:
        name, qtype = question(query)
        if qtype == wire.TYPE_SRV:
            if state["broken"]:
                return srv_target_past_rdata(query)
            return response_to(query, f"{SRV} 0 SRV 10 10 80 t.svc.test.")
        if qtype == wire.TYPE_A:
            return response_to(query, f"{name} 0 A 10.0.0.1")
        return response_to(query, SOA, section="authority")

    policy = srvwatch.Policy(
        min_ttl=0.1, max_ttl=0.1, timeout=0.1, lifetime=0.2, backoff_base=0.05, backoff_max=0.1
    )
    async with hostile_server(respond) as server:
        async with srvwatch.Resolver([server.address], policy=policy) as r:
            async with r.watch(SRV) as updates:
                with anyio.fail_after(3):
                    first = await updates.__anext__()
                    assert [e.addresses for e in first.endpoints] == [("10.0.0.1",)]
                    state["broken"] = True
                    second = await updates.__anext__()
    assert second.stale
    assert [e.addresses for e in second.endpoints] == [("10.0.0.1",)]
    assert second.error is not None
    assert "malformed" in second.error


async def test_a_malformed_reply_never_replaces_a_good_answer() -> None:
    """resolve(): after expiry a damaged reply gets the last good answer back, flagged stale."""
    state = {"broken": False}

    def respond(query: bytes) -> bytes:
        name, _ = question(query)
        return bad_txt(query) if state["broken"] else response_to(query, f'{name} 0 TXT "ok"')

    policy = srvwatch.Policy(min_ttl=0.05, timeout=0.2, lifetime=0.3)
    async with hostile_server(respond) as server:
        async with srvwatch.Resolver([server.address], policy=policy) as r:
            good = await r.resolve("h.svc.test.", "TXT")
            assert not good.stale
            state["broken"] = True
            await anyio.sleep(0.1)
            again = await r.resolve("h.svc.test.", "TXT")
            also = await r.resolve("h.svc.test.", "TXT")
    assert again.stale
    assert also.stale
    assert [rd.to_text() for rd in again.records] == ['"ok"']
    assert server.queries == 2


async def test_remembered_failures_hold_no_tracebacks() -> None:
    """A failed name costs a few hundred bytes in the cache, not an exception with its frames."""
    count = 400

    def refuse(query: bytes) -> bytes:
        return response_to(query, rcode=2)  # SERVFAIL

    async with hostile_server(refuse) as server:
        async with srvwatch.Resolver([server.address], policy=QUICK) as r:
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.take_snapshot()
                for i in range(count):
                    with pytest.raises(srvwatch.ServerFailure):
                        await r.resolve(f"n{i}.svc.test.", "A")
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
            assert r.stats()["cache_entries"] >= count
    per_failure = grown / count
    assert per_failure < 2_000, f"{per_failure:.0f} bytes per remembered failure"
