"""srvwatch's resolver against dnspython and aiodns, side by side in one run.

Three scenarios, all against a real Knot DNS server on loopback
(``tests/dns_servers.py``):

1. cache hit: the same SRV name asked again and again after one answer;
2. cold lookup: a TTL-0 name, so every call goes upstream, one call at a time;
3. coalescing: 10,000 concurrent lookups of one cold name.

Every benchmark interleaves its peers round by round (A, B, C, then B, C, A,
...) so the machine's noise falls on all of them alike, and keeps the
per-peer numbers in ``benchmark.extra_info``: ``benchmarks/report.py`` turns
them into the tables of docs/benchmarks.md. The time pytest-benchmark itself
reports is that of a whole interleaved round (all peers), not of one peer.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiodns
import anyio
import anyio.lowlevel
import dns.asyncbackend
import dns.asyncresolver
import dns.resolver
import pytest
from tests.dns_servers import KnotServer
from tests.zones import HTTP_SRV, HTTP_TARGETS, ZERO_A, ZERO_SRV

import srvwatch
from benchmarks._harness import (
    QUICK,
    Runner,
    latency_summary,
    median,
    rotated,
    scaled,
)
from benchmarks.baseline import BASE_LABEL, load_base

pytestmark = pytest.mark.timeout(900)

perf_ns = time.perf_counter_ns
RunnerFactory = Callable[[str], Runner]
SRVWATCH_FLAVOURS = ("asyncio", "uvloop", "trio")


def _dnspython_async(knot: KnotServer, *, cache: bool) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [knot.host]
    resolver.port = knot.port
    if cache:
        resolver.cache = dns.resolver.LRUCache()
    return resolver


def _dnspython_sync(knot: KnotServer) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [knot.host]
    resolver.port = knot.port
    return resolver


def _queries_sent(resolver: srvwatch.Resolver) -> int:
    return resolver.stats()["queries"]


def _aiodns(knot: KnotServer) -> aiodns.DNSResolver:
    # pycares takes the port as udp_port/tcp_port (c-ares ARES_OPT_UDP_PORT/TCP_PORT).
    return aiodns.DNSResolver(
        nameservers=[knot.host], udp_port=knot.port, tcp_port=knot.port, timeout=2.0
    )


# dnspython chooses its async backend once per process: always pass it.
ASYNCIO_BACKEND = dns.asyncbackend.get_backend("asyncio")


# --------------------------------------------------------------------------- 1. cache hit


@dataclass
class BatchPeer:
    """Times a batch of ``n`` awaits inside its own event loop."""

    name: str
    runner: Runner
    n: int
    batch: Callable[[int], Awaitable[int]]
    warm: Callable[[], Awaitable[Any]]
    batches_ns: list[int] = field(default_factory=list)

    def round(self) -> None:
        self.runner.run(self.warm)  # outside the timing: a hit is what is measured
        self.batches_ns.append(self.runner.run(self.batch, self.n))

    def summary(self) -> dict[str, float]:
        per_op = [b / self.n for b in self.batches_ns]
        return {
            "ops_per_batch": self.n,
            "batches": len(per_op),
            "median_ns": median(per_op),
            "min_ns": min(per_op),
            "max_ns": max(per_op),
            "ops_per_s": 1e9 / median(per_op),
        }


def test_cache_hit(benchmark: Any, knot_server: KnotServer, runners: RunnerFactory) -> None:
    """A name answered once, then asked again: the cost of a cache hit per call."""
    name = HTTP_SRV
    peers: list[BatchPeer] = []

    for flavour in SRVWATCH_FLAVOURS:
        runner = runners(flavour)
        resolver = runner.enter(lambda: srvwatch.Resolver([knot_server.address()]))

        async def srv_batch(n: int, resolver: srvwatch.Resolver = resolver) -> int:
            resolve = resolver.resolve_srv
            start = perf_ns()
            for _ in range(n):
                await resolve(name)
            return perf_ns() - start

        peers.append(
            BatchPeer(
                f"srvwatch ({flavour})",
                runner,
                scaled(20_000),
                srv_batch,
                functools.partial(resolver.resolve_srv, name),
            )
        )

    base = load_base()
    if base is not None:  # A/B: the same scenario on an earlier commit's srvwatch
        runner = runners("asyncio")
        base_resolver = runner.enter(lambda: base.Resolver([knot_server.address()]))

        async def base_batch(n: int, resolver: Any = base_resolver) -> int:
            resolve = resolver.resolve_srv
            start = perf_ns()
            for _ in range(n):
                await resolve(name)
            return perf_ns() - start

        peers.append(
            BatchPeer(
                f"{BASE_LABEL} (asyncio)",
                runner,
                scaled(20_000),
                base_batch,
                functools.partial(base_resolver.resolve_srv, name),
            )
        )

    asyncio_runner = runners("asyncio")
    dnspython = _dnspython_async(knot_server, cache=True)

    async def dnspython_batch(n: int) -> int:
        resolve = dnspython.resolve
        start = perf_ns()
        for _ in range(n):
            await resolve(name, "SRV", backend=ASYNCIO_BACKEND)
        return perf_ns() - start

    peers.append(
        BatchPeer(
            "dnspython async, LRUCache (asyncio)",
            asyncio_runner,
            scaled(2_000),
            dnspython_batch,
            lambda: dnspython.resolve(name, "SRV", backend=ASYNCIO_BACKEND),
        )
    )

    resolver_aiodns = asyncio_runner.enter(lambda: _aiodns(knot_server))

    async def aiodns_batch(n: int) -> int:
        query = resolver_aiodns.query_dns
        start = perf_ns()
        for _ in range(n):
            await query(name, "SRV")
        return perf_ns() - start

    peers.append(
        BatchPeer(
            "aiodns query_dns, c-ares cache (asyncio)",
            asyncio_runner,
            scaled(500, 100),
            aiodns_batch,
            lambda: resolver_aiodns.query_dns(name, "SRV"),
        )
    )

    # Fill every cache first, then count what reaches the server while timing.
    for peer in peers:
        peer.round()
        peer.batches_ns.clear()
    before = knot_server.query_count()
    rounds = scaled(15, 4)
    counter = iter(range(rounds))

    def one_round() -> None:
        for peer in rotated(peers, next(counter)):
            peer.round()

    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)
    upstream = knot_server.query_count() - before

    results = {peer.name: peer.summary() for peer in peers}
    benchmark.extra_info["scenario"] = "cache_hit"
    benchmark.extra_info["name"] = name
    benchmark.extra_info["peers"] = results
    benchmark.extra_info["upstream_queries_while_timing"] = upstream
    benchmark.extra_info["quick"] = QUICK
    # The TTL is 30 s and the whole benchmark takes a few seconds: all hits.
    assert upstream == 0, f"{upstream} queries reached the server during a cache-hit benchmark"
    assert all(r["batches"] == rounds for r in results.values())


# --------------------------------------------------------------------------- 2. cold lookup


@dataclass
class LatencyPeer:
    """Times each call of a sequence of one-at-a-time lookups."""

    name: str
    run_calls: Callable[[int], list[int]]
    client_queries: Callable[[], int] | None = None
    samples_ns: list[int] = field(default_factory=list)
    server_queries: int = 0
    client_query_delta: int = 0


def _async_calls(
    runner: Runner, call: Callable[[], Awaitable[Any]], check: Callable[[Any], None]
) -> Callable[[int], list[int]]:
    def run_calls(k: int) -> list[int]:
        async def calls() -> tuple[list[int], Any]:
            samples = []
            result = None
            for _ in range(k):
                start = perf_ns()
                result = await call()
                samples.append(perf_ns() - start)
            return samples, result

        samples, last = runner.run(calls)
        check(last)
        return samples

    return run_calls


def test_cold_lookup(
    benchmark: Any, knot_factory: Callable[..., KnotServer], runners: RunnerFactory
) -> None:
    """TTL 0 everywhere: every call is an upstream round trip to Knot on loopback."""
    knot = knot_factory()
    name = ZERO_SRV
    zero_targets = set(ZERO_A)
    peers: list[LatencyPeer] = []

    def check_srvwatch(eps: srvwatch.EndpointSet) -> None:
        assert {ep.target for ep in eps} == zero_targets
        assert all(ep.addresses for ep in eps), eps

    for flavour in SRVWATCH_FLAVOURS:
        runner = runners(flavour)
        # min_ttl=1e-9: the floor (normally 5 s) would otherwise cache the TTL-0 answer
        # (a microsecond floor is not enough: the next call can start within it).
        resolver = runner.enter(
            lambda: srvwatch.Resolver([knot.address()], policy=srvwatch.Policy(min_ttl=1e-9))
        )
        peers.append(
            LatencyPeer(
                f"srvwatch (min_ttl=1e-9, {flavour})",
                _async_calls(runner, functools.partial(resolver.resolve_srv, name), check_srvwatch),
                functools.partial(_queries_sent, resolver),
            )
        )
    base = load_base()
    if base is not None:
        runner = runners("asyncio")
        base_resolver = runner.enter(
            lambda: base.Resolver([knot.address()], policy=base.Policy(min_ttl=1e-9))
        )
        peers.append(
            LatencyPeer(
                f"{BASE_LABEL} (min_ttl=1e-9, asyncio)",
                _async_calls(
                    runner, functools.partial(base_resolver.resolve_srv, name), check_srvwatch
                ),
                functools.partial(_queries_sent, base_resolver),
            )
        )

    asyncio_runner = runners("asyncio")
    resolver_aiodns = asyncio_runner.enter(lambda: _aiodns(knot))

    def check_aiodns(result: Any) -> None:
        assert len(result.answer) == len(zero_targets)

    peers.append(
        LatencyPeer(
            "aiodns query_dns (asyncio)",
            _async_calls(
                asyncio_runner, lambda: resolver_aiodns.query_dns(name, "SRV"), check_aiodns
            ),
        )
    )

    def check_dnspython(answer: dns.resolver.Answer) -> None:
        assert len(answer) == len(zero_targets)

    sync_resolver = _dnspython_sync(knot)

    def sync_calls(k: int) -> list[int]:
        samples = []
        answer = None
        for _ in range(k):
            start = perf_ns()
            answer = sync_resolver.resolve(name, "SRV")
            samples.append(perf_ns() - start)
        assert answer is not None
        check_dnspython(answer)
        return samples

    peers.append(LatencyPeer("dnspython sync Resolver.resolve", sync_calls))

    async_resolver = _dnspython_async(knot, cache=False)
    peers.append(
        LatencyPeer(
            "dnspython async, no cache (asyncio)",
            _async_calls(
                asyncio_runner,
                lambda: async_resolver.resolve(name, "SRV", backend=ASYNCIO_BACKEND),
                check_dnspython,
            ),
        )
    )

    per_round = scaled(200, 50)
    rounds = scaled(10, 4)
    warmup = scaled(100, 20)
    for peer in peers:
        peer.run_calls(warmup)
    counter = iter(range(rounds))

    def one_round() -> None:
        for peer in rotated(peers, next(counter)):
            server_before = knot.query_count()
            client_before = peer.client_queries() if peer.client_queries else 0
            peer.samples_ns.extend(peer.run_calls(per_round))
            peer.server_queries += knot.query_count() - server_before
            if peer.client_queries:
                peer.client_query_delta += peer.client_queries() - client_before

    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)

    results: dict[str, dict[str, float]] = {}
    for peer in peers:
        summary = latency_summary(peer.samples_ns)
        summary["server_queries"] = peer.server_queries
        if peer.client_queries:
            summary["client_queries"] = peer.client_query_delta
        results[peer.name] = summary
    benchmark.extra_info["scenario"] = "cold"
    benchmark.extra_info["name"] = name
    benchmark.extra_info["peers"] = results
    benchmark.extra_info["quick"] = QUICK
    calls = per_round * rounds
    for peer_name, summary in results.items():
        # Every call must really have gone upstream: one query at the server per call.
        assert summary["calls"] == calls, (peer_name, summary)
        assert summary["server_queries"] == calls, (peer_name, summary)
        if "client_queries" in summary:
            assert summary["client_queries"] == calls, (peer_name, summary)


# --------------------------------------------------------------------------- 3. coalescing


@dataclass
class StormPeer:
    """``n`` concurrent lookups of one cold name, from a fresh resolver each round."""

    name: str
    runner: Runner
    storm: Callable[[int], Awaitable[dict[str, Any]]]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    dns: bool = True


async def _srvwatch_storm(address: str, n: int) -> dict[str, Any]:
    answered = 0
    errors = 0
    expected = set(HTTP_TARGETS)
    async with srvwatch.Resolver([address]) as resolver:

        async def one() -> None:
            nonlocal answered, errors
            try:
                eps = await resolver.resolve_srv(HTTP_SRV)
            except srvwatch.ResolveError:
                errors += 1
                return
            if {ep.target for ep in eps} == expected and all(ep.addresses for ep in eps):
                answered += 1

        start = perf_ns()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
        wall = perf_ns() - start
    stats = resolver.stats()  # after close: every socket must be closed
    return {
        "wall_ns": wall,
        "answered": answered,
        "errors": errors,
        "client_queries": stats["queries"],
        "coalesced": stats["coalesced"],
        "sockets_open_after_close": stats["sockets_opened"] - stats["sockets_closed"],
    }


async def _gather_storm(
    n: int, call: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool]
) -> dict[str, Any]:
    start = perf_ns()
    results = await asyncio.gather(*(call() for _ in range(n)), return_exceptions=True)
    wall = perf_ns() - start
    answered = sum(1 for r in results if not isinstance(r, BaseException) and ok(r))
    errors = Counter(type(r).__name__ for r in results if isinstance(r, BaseException))
    return {
        "wall_ns": wall,
        "answered": answered,
        "errors": sum(errors.values()),
        "error_types": dict(errors),
    }


async def _baseline_storm(n: int) -> dict[str, Any]:
    """No DNS at all: ``n`` anyio tasks parked on one Event, then woken.

    The floor under srvwatch's wall time: what the event loop needs to start,
    park and finish that many tasks.
    """
    event = anyio.Event()
    woken = 0

    async def one() -> None:
        nonlocal woken
        await event.wait()
        woken += 1

    start = perf_ns()
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
        await anyio.lowlevel.checkpoint()  # let every task park first
        event.set()
    wall = perf_ns() - start
    return {"wall_ns": wall, "answered": woken, "errors": 0}


def test_coalescing(
    benchmark: Any, knot_factory: Callable[..., KnotServer], runners: RunnerFactory
) -> None:
    """10,000 callers want one cold name at once: how many queries reach the server?"""
    knot = knot_factory()
    n = scaled(10_000)
    n_targets = len(HTTP_TARGETS)
    peers: list[StormPeer] = []
    for flavour in SRVWATCH_FLAVOURS:
        peers.append(
            StormPeer(
                f"srvwatch ({flavour})",
                runners(flavour),
                lambda k: _srvwatch_storm(knot.address(), k),
            )
        )
    asyncio_runner = runners("asyncio")

    async def dnspython_storm(k: int) -> dict[str, Any]:
        resolver = _dnspython_async(knot, cache=True)  # fresh, so the name is cold
        return await _gather_storm(
            k,
            lambda: resolver.resolve(HTTP_SRV, "SRV", backend=ASYNCIO_BACKEND),
            lambda answer: len(answer) == n_targets,
        )

    async def aiodns_storm(k: int) -> dict[str, Any]:
        async with _aiodns(knot) as resolver:  # fresh, so c-ares' cache is cold
            return await _gather_storm(
                k,
                lambda: resolver.query_dns(HTTP_SRV, "SRV"),
                lambda result: len(result.answer) == n_targets,
            )

    peers.append(StormPeer("dnspython async, LRUCache (asyncio)", asyncio_runner, dnspython_storm))
    peers.append(StormPeer("aiodns query_dns (asyncio)", asyncio_runner, aiodns_storm))
    peers.append(
        StormPeer(
            "baseline: anyio tasks parked on one Event, no DNS (asyncio)",
            asyncio_runner,
            _baseline_storm,
            dns=False,
        )
    )

    for peer in peers:  # warm-up: imports, first sockets, code paths
        peer.runner.run(peer.storm, 10)
    rounds = scaled(3, 1)
    counter = iter(range(rounds))

    def one_round() -> None:
        for peer in rotated(peers, next(counter)):
            before = knot.query_count()
            result = peer.runner.run(peer.storm, n)
            if peer.dns:
                result["server_queries"] = knot.query_count() - before
            peer.rounds.append(result)

    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)

    results: dict[str, dict[str, Any]] = {}
    for peer in peers:
        walls = [r["wall_ns"] for r in peer.rounds]
        results[peer.name] = {
            "callers": n,
            "rounds": len(peer.rounds),
            "wall_ms_median": median(walls) / 1e6,
            "wall_ms_min": min(walls) / 1e6,
            "per_round": peer.rounds,
        }
    benchmark.extra_info["scenario"] = "coalescing"
    benchmark.extra_info["name"] = HTTP_SRV
    benchmark.extra_info["peers"] = results
    benchmark.extra_info["quick"] = QUICK
    for peer in peers:
        if not peer.name.startswith("srvwatch"):
            continue
        for r in peer.rounds:
            # One SRV query for everyone (the target addresses come as glue), all answered.
            assert r["server_queries"] == 1, (peer.name, r)
            assert r["client_queries"] == 1, (peer.name, r)
            assert r["answered"] == n, (peer.name, r)
            assert r["coalesced"] == n - 1, (peer.name, r)
            assert r["sockets_open_after_close"] == 0, (peer.name, r)
