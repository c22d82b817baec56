"""The reload soak: config-reload leaks that DNS servers have shipped, tried on srvwatch.

Two configs alternate: each reload moves a stub listener between two ports,
swaps one watch for another and changes the policy, while a client keeps
querying the stub on a port that never moves and ``/ready`` is polled around
every reload. Descriptors, tasks, threads and RSS are sampled every
``sample_every`` reloads. Shared by ``tests/test_reload_soak.py`` (which
asserts) and ``benchmarks/bench_reload_soak.py`` (which records and plots).
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import dns.message
import dns.rcode
import httpx

from srvwatch.server.app import Sidecar
from srvwatch.server.config import parse_config
from tests import zones
from tests.dns_servers import HOST, free_port

POLICY_A = "[policy]\nmin_ttl = 1.0\ntimeout = 0.5\nlifetime = 1.5\n"
POLICY_B = "[policy]\nmin_ttl = 2.0\ntimeout = 0.5\nlifetime = 1.5\njitter = 0.3\n"


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass
class Sample:
    reloads: int
    descriptors: int
    tasks: int
    threads: int
    rss: int
    seconds: float
    resolver_sockets: int
    """Of the descriptors: the resolver's upstream UDP sockets, kept for reuse (load-dependent)."""
    resolver_tasks: int
    """Of the tasks: the resolver's lookups and timers running at that moment."""


@dataclass
class SoakResult:
    samples: list[Sample] = field(default_factory=list)
    reloads: int = 0
    rejected: int = 0
    queries: int = 0
    answered: int = 0
    not_ready: list[str] = field(default_factory=list)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    resolver_stats: dict[str, int] = field(default_factory=dict)
    sidecar_stats: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _config(upstream: str, fixed: int, moving: int, admin: int, flip: bool) -> str:
    watch = zones.ONE_SRV if flip else zones.EXT_SRV
    return "\n".join(
        [
            f'upstreams = ["{upstream}"]',
            POLICY_A if flip else POLICY_B,
            "[stub]",
            f'listen = ["{HOST}:{fixed}", "{HOST}:{moving}"]',
            "[admin]",
            f'listen = "{HOST}:{admin}"',
            "lame_duck = 0.0",
            "[[watch]]",
            f'name = "{zones.HTTP_SRV}"',
            "[[watch]]",
            f'name = "{watch}"',
            "",
        ]
    )


async def _query_load(
    sock: anyio.abc.ConnectedUDPSocket, result: SoakResult, stop: anyio.Event
) -> None:
    """A client that keeps asking the stub on the port that never moves."""
    names = ["a.api.svc.test.", "b.api.svc.test.", zones.HTTP_SRV]
    while not stop.is_set():
        query = dns.message.make_query(random.choice(names), "A")
        result.queries += 1
        await sock.send(query.to_wire())
        with anyio.move_on_after(1.0):
            while True:
                reply = dns.message.from_wire(await sock.receive())
                if reply.id == query.id:
                    if reply.rcode() == dns.rcode.NOERROR:
                        result.answered += 1
                    break
        await anyio.sleep(0.002)


def _sample(sidecar: Sidecar, reloads: int, started: float) -> Sample:
    stats = sidecar.resolver.stats()
    return Sample(
        reloads,
        open_descriptors(),
        len(anyio.get_running_tasks()),
        threading.active_count(),
        rss_bytes(),
        time.monotonic() - started,
        stats["sockets_opened"] - stats["sockets_closed"],
        stats["tasks_running"],
    )


async def _settle(sidecar: Sidecar) -> None:
    """Wait until no upstream query is in flight, so what is counted is what stays open."""
    with anyio.move_on_after(5.0):
        while sidecar.resolver.stats()["flights_in_progress"]:  # noqa: ASYNC110 - a counter
            await anyio.sleep(0.05)
    await anyio.sleep(0.2)


async def soak(
    upstream: str, workdir: Path, reloads: int = 1000, sample_every: int = 100, warmup: int = 20
) -> SoakResult:
    """Run the soak; the returned samples start after ``warmup`` reloads."""
    fixed, moving_a, moving_b, admin = free_port(), free_port(), free_port(), free_port()
    path = workdir / "srvwatch.toml"
    texts = [
        _config(upstream, fixed, moving_a, admin, flip=True),
        _config(upstream, fixed, moving_b, admin, flip=False),
    ]
    path.write_text(texts[0])
    config = parse_config(texts[0].encode(), str(path))
    result = SoakResult()
    with open(os.devnull, "w") as quiet:  # noqa: ASYNC230 - /dev/null never blocks
        async with Sidecar(config, out=quiet) as sidecar:
            async with httpx.AsyncClient(base_url=f"http://{HOST}:{admin}", timeout=5.0) as http:
                with anyio.fail_after(20):
                    while (await http.get("/ready")).status_code != 200:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                stop = anyio.Event()
                client = await anyio.create_connected_udp_socket(HOST, fixed)
                async with client, anyio.create_task_group() as tg:
                    tg.start_soon(_query_load, client, result, stop)
                    started = time.monotonic()
                    total = warmup + reloads
                    for i in range(1, total + 1):
                        if i == warmup + 1:
                            await _settle(sidecar)
                            result.before = _counts(sidecar)
                            result.samples.append(_sample(sidecar, 0, started))
                        path.write_text(texts[i % 2])
                        if await sidecar.reload():
                            result.reloads += 1
                        else:
                            result.rejected += 1
                        ready = await http.get("/ready")
                        if ready.status_code != 200:
                            result.not_ready.append(f"after reload {i}: {ready.text!r}")
                        if i > warmup and (i - warmup) % sample_every == 0:
                            result.samples.append(_sample(sidecar, i - warmup, started))
                    result.seconds = time.monotonic() - started
                    await _settle(sidecar)
                    result.after = _counts(sidecar)
                    result.sidecar_stats = sidecar.stats()
                    stop.set()
                result.resolver_stats = sidecar.resolver.stats()
    return result


def _counts(sidecar: Sidecar) -> dict[str, Any]:
    stats = sidecar.resolver.stats()
    return {
        "descriptors": open_descriptors(),
        "tasks": len(anyio.get_running_tasks()),
        "threads": threading.active_count(),
        "thread_ids": sorted(t.ident or 0 for t in threading.enumerate()),
        "rss": rss_bytes(),
        "resolver_sockets_open": stats["sockets_opened"] - stats["sockets_closed"],
        "loops_running": stats["loops_running"],
        "resolver_tasks": stats["tasks_running"],
        **sidecar.counts(),
    }


RSS_GROWTH_LIMIT = 2 * 1024 * 1024


def leaks(result: SoakResult, reloads: int) -> list[str]:
    """What the soak shows left behind or broken; empty when nothing leaked."""
    problems: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    before, after, pairs = result.before, result.after, result.sidecar_stats
    expect(result.rejected == 0, f"{result.rejected} reloads rejected")
    expect(result.reloads >= reloads, f"{result.reloads} reloads applied, not {reloads}")
    expect(not result.not_ready, f"/ready not 200: {result.not_ready[:3]}")
    expect(result.queries > 100, f"only {result.queries} queries sent")
    # The stub never stopped answering (the last query may be cut by the stop).
    expect(result.answered >= result.queries - 1, f"{result.answered}/{result.queries} answered")
    # Threads started during the soak and still alive: none (a worker another test left
    # behind may end meanwhile, which is no leak of ours).
    new_threads = set(after["thread_ids"]) - set(before["thread_ids"])
    expect(not new_threads, f"threads started and still running: {len(new_threads)}")
    for key in ("listeners", "watches", "admin"):
        expect(after[key] == before[key], f"{key}: {before[key]} -> {after[key]}")
    # The resolver keeps a few upstream sockets for reuse and runs lookups, as many as
    # the load needs at that moment (its own counter pairs account for them); the rest
    # of the descriptors and tasks end exactly where they started.
    for key, resolvers in (("descriptors", "resolver_sockets_open"), ("tasks", "resolver_tasks")):
        was, now = before[key] - before[resolvers], after[key] - after[resolvers]
        expect(was == now, f"{key} besides the resolver's: {was} -> {now}")
    expect(
        after["resolver_sockets_open"] <= 8, f"{after['resolver_sockets_open']} upstream sockets"
    )
    growth = after["rss"] - before["rss"]
    expect(growth < RSS_GROWTH_LIMIT, f"RSS grew {growth} bytes")
    expect(
        pairs["listeners_opened"] - pairs["listeners_closed"] == after["listeners"],
        f"listeners opened/closed {pairs['listeners_opened']}/{pairs['listeners_closed']}",
    )
    expect(pairs["listeners_closed"] >= reloads, f"only {pairs['listeners_closed']} closed")
    expect(
        pairs["watches_started"] - pairs["watches_stopped"] == after["watches"],
        f"watches started/stopped {pairs['watches_started']}/{pairs['watches_stopped']}",
    )
    expect(pairs["admin_servers_opened"] - pairs["admin_servers_closed"] == 1, "admin servers")
    # Every closed listener's own pairs balance: UDP and TCP sockets, connections, tasks.
    for opened, closed in (
        ("sockets_opened", "sockets_closed"),
        ("connections_opened", "connections_closed"),
        ("tasks_started", "tasks_finished"),
    ):
        a, b = pairs.get(f"retired_{opened}", 0), pairs.get(f"retired_{closed}", 0)
        expect(a == b, f"closed listeners' {opened}/{closed}: {a}/{b}")
    stats = result.resolver_stats
    expect(
        stats["loops_started"] - stats["loops_stopped"] == stats["loops_running"] == 2,
        f"loops started/stopped/running {stats['loops_started']}/{stats['loops_stopped']}/"
        f"{stats['loops_running']}",
    )
    return problems
