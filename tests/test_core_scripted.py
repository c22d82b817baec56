"""The resolver's logic on the scripted transport and a fake clock: no socket, no sleep.

SRV assembly, search list, negative caching, SERVFAIL memory and serve-stale
are decided by the core alone; these tests drive it with replies built on
demand and move time by hand. Real-server tests cover the network.
"""

from __future__ import annotations

import math
import random

import anyio
import pytest

import srvwatch
from srvwatch.health import Health
from srvwatch.scripted import ScriptedTransport
from srvwatch.transport import parse_nameserver
from srvwatch.watch import WatchState

pytestmark = pytest.mark.anyio

SRV = "_x._tcp.svc.test."


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def upstream() -> ScriptedTransport:
    t = ScriptedTransport()
    t.soa("svc.test.", minimum=20)
    t.set(SRV, "SRV", ["10 60 80 a.svc.test.", "10 40 80 b.svc.test.", "20 0 81 c.svc.test."])
    t.set("a.svc.test.", "A", ["10.0.0.1"])
    t.set("b.svc.test.", "A", ["10.0.0.2"])
    t.set("b.svc.test.", "AAAA", ["2001:db8::2"])
    return t


def resolver(t: ScriptedTransport, clock: FakeClock, **policy: float) -> srvwatch.Resolver:
    return srvwatch.Resolver(transport=t, clock=clock, policy=srvwatch.Policy(**policy))  # type: ignore[arg-type]


async def test_srv_targets_are_expanded_and_cached() -> None:
    t, clock = upstream(), FakeClock()
    async with resolver(t, clock) as r:
        eps = await r.resolve_srv("_X._tcp.svc.test")
        assert {(e.target, e.addresses) for e in eps} == {
            ("a.svc.test.", ("10.0.0.1",)),
            ("b.svc.test.", ("10.0.0.2", "2001:db8::2")),
            ("c.svc.test.", ()),  # NXDOMAIN target: no addresses, still listed
        }
        asked = len(t.asked)
        assert asked == 7  # SRV, then A and AAAA of three targets
        await r.resolve_srv(SRV)
        assert len(t.asked) == asked
        clock.now += 19.9  # the set's TTL is its shortest part: c's NXDOMAIN, 20 s
        await r.resolve_srv(SRV)
        assert len(t.asked) == asked
        clock.now += 0.2
        await r.resolve_srv(SRV)
        assert len(t.asked) > asked
    assert t.closed is False  # a transport passed in belongs to its owner


async def test_search_list_tries_each_domain_and_negative_answers_are_cached() -> None:
    t, clock = upstream(), FakeClock()
    t.set("web.other.test.", "A", ["10.9.9.9"])
    async with srvwatch.Resolver(
        transport=t, clock=clock, search=["svc.test", "other.test"], ndots=1
    ) as r:
        assert await r.resolve_addresses("web") == ("10.9.9.9",)
        assert ("web.svc.test.", "A") in t.asked  # tried first, NXDOMAIN
        asked = len(t.asked)
        with pytest.raises(srvwatch.NXDomain) as info:
            await r.resolve("nope.svc.test.", "A")
        assert info.value.ttl == 20.0  # the SOA minimum (RFC 2308)
        with pytest.raises(srvwatch.NXDomain):
            await r.resolve("nope.svc.test.", "A")
        assert len(t.asked) == asked + 1
        with pytest.raises(srvwatch.NoData):
            await r.resolve("a.svc.test.", "TXT")


async def test_servfail_is_remembered_then_retried() -> None:
    t, clock = upstream(), FakeClock()
    t.fail("SERVFAIL", "a.svc.test.", "A")
    async with resolver(t, clock, servfail_ttl=5.0) as r:
        for _ in range(3):
            with pytest.raises(srvwatch.ServerFailure, match="SERVFAIL"):
                await r.resolve("a.svc.test.", "A")
        assert t.asked.count(("a.svc.test.", "A")) == 1
        t.heal()
        clock.now += 5.0
        assert [rd.to_text() for rd in (await r.resolve("a.svc.test.", "A")).records] == [
            "10.0.0.1"
        ]


async def test_stale_is_served_within_the_window_and_dropped_after() -> None:
    t, clock = upstream(), FakeClock()
    async with resolver(t, clock, stale_ttl=100.0) as r:
        good = await r.resolve("a.svc.test.", "A")
        assert not good.stale
        t.fail("timeout")
        clock.now += 31  # past the 30 s TTL
        stale = await r.resolve("a.svc.test.", "A")
        assert stale.stale
        assert stale.records == good.records
        assert r.stats()["stale"] == 1
        clock.now += 100  # past TTL + stale window
        with pytest.raises(srvwatch.ResolveTimeout):
            await r.resolve("a.svc.test.", "A")


async def test_an_nxdomain_empties_where_a_failure_does_not() -> None:
    t, clock = upstream(), FakeClock()
    async with resolver(t, clock) as r:
        await r.resolve_srv(SRV)
        clock.now += 31
        t.fail("SERVFAIL", SRV, "SRV")
        assert (await r.resolve_srv(SRV)).stale
        t.heal()
        t.set(SRV, "SRV", [])
        for name in ("a.svc.test.", "b.svc.test."):
            t.set(name, "A", [])
            t.set(name, "AAAA", [])
        clock.now += 31
        with pytest.raises(srvwatch.NXDomain):
            await r.resolve_srv(SRV)


async def test_concurrent_spellings_share_one_flight() -> None:
    t, clock = upstream(), FakeClock()
    async with resolver(t, clock) as r:
        t.hold()
        results: list[srvwatch.EndpointSet] = []

        async def ask(name: str) -> None:
            results.append(await r.resolve_srv(name))

        async with anyio.create_task_group() as tg:
            for name in (SRV, SRV.upper(), SRV.rstrip(".")):
                tg.start_soon(ask, name)
            await anyio.wait_all_tasks_blocked()
            t.release()
        assert t.asked.count((SRV, "SRV")) == 1
        assert r.stats()["coalesced"] == 2
        assert len({eps.endpoints for eps in results}) == 1


async def test_cname_chain_across_replies_and_loops() -> None:
    t, clock = upstream(), FakeClock()
    t.set("alias.svc.test.", "CNAME", ["a.svc.test."])
    t.set("loop1.svc.test.", "CNAME", ["loop2.svc.test."])
    t.set("loop2.svc.test.", "CNAME", ["loop1.svc.test."])
    async with resolver(t, clock) as r:
        answer = await r.resolve("alias.svc.test.", "A")
        assert answer.canonical_name == "a.svc.test."
        with pytest.raises(srvwatch.ServerFailure, match="CNAME loop"):
            await r.resolve("loop1.svc.test.", "A")


async def test_seeded_policy_gives_reproducible_jitter() -> None:
    def delays(seed: int) -> list[float]:
        policy = srvwatch.Policy(rng=random.Random(seed))
        return [policy.refresh_delay(30.0) for _ in range(5)] + [
            policy.backoff_delay(n) for n in range(1, 6)
        ]

    assert delays(7) == delays(7)
    assert delays(7) != delays(8)


# -- the watch state on a fake clock -------------------------------------------------------


def endpoints(ttl: float = 10.0, port: int = 80) -> srvwatch.EndpointSet:
    return srvwatch.EndpointSet.build(SRV, [srvwatch.Endpoint("a.svc.test.", port)], ttl=ttl)


def test_watch_state_keeps_endpoints_through_a_failure_then_flags_stale_once() -> None:
    state = WatchState(SRV, srvwatch.Policy(jitter=0.2, stale_ttl=100.0, rng=random.Random(1)))
    first = state.on_answer(endpoints(), now=0.0)
    assert first.changed
    assert 0 < first.delay <= 10.0  # the first refresh is spread over the whole TTL
    within_ttl = state.on_failure("timeout", now=5.0)
    assert not within_ttl.changed  # still fresh: nothing to tell
    assert within_ttl.delay <= 5.0  # but look again by expiry
    expired = state.on_failure("timeout", now=10.5)
    assert expired.changed
    assert state.stale
    assert state.current is not None
    assert len(state.current) == 1
    again = state.on_failure("timeout", now=12.0)
    assert not again.changed  # exactly one stale update per outage
    dropped = state.on_failure("timeout", now=111.0)
    assert dropped.changed  # past the stale window: the endpoints go
    assert state.current is not None
    assert len(state.current) == 0
    recovered = state.on_answer(endpoints(), now=120.0)
    assert recovered.changed
    assert not state.stale
    assert 8.0 <= recovered.delay <= 10.0  # later refreshes: ttl * U(0.8, 1)


def test_watch_state_backoff_grows_and_a_negative_answer_empties() -> None:
    policy = srvwatch.Policy(backoff_base=1.0, backoff_max=30.0, rng=random.Random(2))
    state = WatchState(SRV, policy)
    delays = [state.on_failure("SERVFAIL", now=float(i)).delay for i in range(8)]
    assert state.version == 1  # one update: nothing known yet, flagged stale
    assert delays[0] < delays[3] < delays[7] <= 30.0
    negative = state.on_negative(20.0, now=100.0)
    assert negative.changed
    assert not state.stale
    assert state.current is not None
    assert len(state.current) == 0
    assert state.failures == 0


def test_watch_state_ignores_ttl_only_changes() -> None:
    state = WatchState(SRV, srvwatch.Policy())
    assert state.on_answer(endpoints(ttl=10.0), now=0.0).changed
    assert not state.on_answer(endpoints(ttl=7.0), now=8.0).changed
    assert state.on_answer(endpoints(ttl=7.0, port=81), now=16.0).changed
    assert state.version == 2


async def test_answer_ttl_is_the_time_remaining() -> None:
    t, clock = upstream(), FakeClock()
    async with resolver(t, clock) as r:
        first = await r.resolve("a.svc.test.", "A")
        assert first.ttl == 30.0
        clock.now += 12
        again = await r.resolve("a.svc.test.", "A")  # a hit
        assert again.ttl == 18.0
        assert first.ttl == 18.0
        clock.now += 20
        t.fail("timeout")
        stale = await r.resolve("a.svc.test.", "A")
        assert stale.stale
        assert stale.ttl == 0.0  # expired: served only because the upstream fails


def test_attempts_in_flight_when_an_upstream_goes_down_do_not_push_its_probes_back() -> None:
    """168 queries were on the wire when Knot stopped under 10,000 watches; each failure
    stepped the probe backoff, so the first probe was drawn from the 30 s cap and a 60 s
    outage's end was found 23 s late. One step for going down, one per failed probe."""
    clock = FakeClock()
    policy = srvwatch.Policy(backoff_base=1.0, backoff_max=30.0, rng=random.Random(7))
    health = Health((parse_nameserver("192.0.2.1"),), policy, clock)
    for _ in range(168):
        health.failed(0, "connection refused")
    upstream = health.upstreams[0]
    assert not upstream.up
    assert upstream.failures == 1
    assert upstream.next_probe - clock.now <= 1.0  # the first step: U(0.5, 1)
    clock.now = upstream.next_probe
    assert health.pick(0, set()) == 0  # the probe
    health.failed(0, "connection refused")
    assert upstream.failures == 2
    assert upstream.next_probe - clock.now <= 2.0
    health.failed(0, "connection refused")  # not a probe: the schedule stands
    assert upstream.failures == 2


async def _park_on(health: Health, count: int, returned: list[int]) -> None:
    """``count`` waiters on ``health``'s dead upstream, each noting when wait_turn returns."""

    async def wait(i: int) -> None:
        assert await health.wait_turn(i, math.inf)  # each returns for the recovery
        returned.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(count):
            tg.start_soon(wait, i)


async def test_a_recovery_releases_parked_waiters_a_slice_at_a_time() -> None:
    """201 loops on a dead upstream, one carrying the probes, 200 parked; a 0.5 s floor and
    jitter 0.2, so the shortest refresh interval is 0.4 s. Woken together, 10,000 loops
    stalled the process for a second and reached the recovering server at 2.7x their steady
    rate. Released at an even rate over 0.4 s, in random order: a quarter per 0.1 s."""
    policy = srvwatch.Policy(min_ttl=0.5, max_ttl=0.5, rng=random.Random(3))
    health = Health((parse_nameserver("192.0.2.1"),), policy, FakeClock())
    health.failed(0, "connection refused")  # down; its probe is never due on the fake clock
    returned: list[int] = []
    async with anyio.create_task_group() as tg:
        health.attach(tg.start_soon)
        tg.start_soon(_park_on, health, 201, returned)
        await anyio.wait_all_tasks_blocked()
        assert health.parked == 200
        health.succeeded(0)
        await anyio.sleep(0.1)
        early = len(returned)
        await anyio.sleep(0.55)
        assert len(returned) == 201
    assert 1 + 200 * 0.1 / 0.4 * 0.6 <= early <= 1 + 200 * 0.1 / 0.4 * 1.4, early
    assert health.parked == 0
    assert returned[1:] != sorted(returned[1:])  # not in the order they parked


async def test_parked_waiters_stay_parked_when_the_upstream_fails_again_mid_release() -> None:
    policy = srvwatch.Policy(min_ttl=0.5, max_ttl=0.5, rng=random.Random(4))
    health = Health((parse_nameserver("192.0.2.1"),), policy, FakeClock())
    health.failed(0, "connection refused")
    returned: list[int] = []
    async with anyio.create_task_group() as tg:
        health.attach(tg.start_soon)
        tg.start_soon(_park_on, health, 101, returned)
        await anyio.wait_all_tasks_blocked()
        health.succeeded(0)
        await anyio.sleep(0.1)
        health.failed(0, "connection refused")  # down again: the release stops
        await anyio.sleep(0.05)
        halted = len(returned)
        await anyio.sleep(0.5)
        assert len(returned) == halted < 101
        assert health.parked == 101 - halted
        health.succeeded(0)  # the next recovery releases the rest
        await anyio.sleep(0.65)
        assert len(returned) == 101
    assert health.parked == 0
