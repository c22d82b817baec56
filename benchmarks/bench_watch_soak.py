"""Continuous watching, scenario 4: a leak soak.

10,000 watch open/close cycles on one ``Resolver``, against a real Knot on
loopback: descriptors, tasks, traced memory and ``stats()`` counters must not
pile up, and every cycle costs exactly one upstream query.

Run::

    python -m pytest benchmarks/bench_watch_soak.py --benchmark-only -p no:randomly -s
    SRVWATCH_BENCH_QUICK=1 python -m pytest benchmarks/bench_watch_soak.py --benchmark-only \
        -p no:randomly -s                      # CI: a shorter run

Results are merged into ``benchmarks/results/watch.json`` (see ``_watch.py``).
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from tests.dns_servers import KnotServer
from tests.zones import ZERO_A, ZERO_SRV

import srvwatch
from benchmarks._harness import QUICK
from benchmarks._watch import (
    Results,
    open_fds,
)
from benchmarks._watch_report import render_markdown

pytestmark = pytest.mark.timeout(900)

SOAK_CYCLES = 2_000 if QUICK else 10_000
SOAK_WARMUP = 200


async def _soak(knot: KnotServer, cycles: int, warmup: int) -> dict[str, Any]:
    def tasks() -> int:
        return len(asyncio.all_tasks())

    async def settle() -> None:
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        await anyio.sleep(0.01)
        gc.collect()

    async def cycle(resolver: srvwatch.Resolver) -> None:
        async with resolver.watch(ZERO_SRV) as updates:
            update = await updates.__anext__()
        assert len(update.endpoints) == len(ZERO_A), update

    gc.collect()
    fds_before, tasks_before = open_fds(), tasks()
    knot0 = await anyio.to_thread.run_sync(knot.query_count)
    tracemalloc.start()
    try:
        async with srvwatch.Resolver([knot.address()], policy=srvwatch.Policy()) as resolver:
            for _ in range(warmup):
                await cycle(resolver)
            await settle()
            fds_in0, tasks_in0 = open_fds(), tasks()
            traced0 = tracemalloc.get_traced_memory()[0]
            start = time.perf_counter()
            for _ in range(cycles):
                await cycle(resolver)
            elapsed = time.perf_counter() - start
            await settle()
            fds_in1, tasks_in1 = open_fds(), tasks()
            traced1 = tracemalloc.get_traced_memory()[0]
            stats_inside = resolver.stats()
        stats = resolver.stats()
    finally:
        tracemalloc.stop()
    await settle()
    knot1 = await anyio.to_thread.run_sync(knot.query_count)
    return {
        "cycles": cycles,
        "warmup": warmup,
        "cycles_per_s": cycles / elapsed,
        "fds_before": fds_before,
        "fds_after": open_fds(),
        "fds_inside_before": fds_in0,
        "fds_inside_after": fds_in1,
        "tasks_before": tasks_before,
        "tasks_after": tasks(),
        "tasks_inside_before": tasks_in0,
        "tasks_inside_after": tasks_in1,
        "traced_before": traced0,
        "traced_after": traced1,
        "traced_growth": traced1 - traced0,
        "traced_growth_per_cycle": (traced1 - traced0) / cycles,
        "queries_knot": knot1 - knot0,
        "stats_inside": stats_inside,
        "stats": stats,
    }


def test_soak(benchmark: Any, watch_knot: KnotServer, watch_results: Results) -> None:
    """Open a watch, read its first update, close it; 10,000 times. Nothing may pile up."""
    result: dict[str, Any] = {}

    def run() -> None:
        result.update(anyio.run(_soak, watch_knot, SOAK_CYCLES, SOAK_WARMUP, backend="asyncio"))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["soak"] = {k: v for k, v in result.items() if not k.startswith("stats")}
    watch_results.record("soak", result)
    print("\n" + render_markdown({"soak": result}))

    stats = result["stats"]
    total = SOAK_CYCLES + SOAK_WARMUP
    assert result["fds_after"] == result["fds_before"], result
    assert result["tasks_after"] == result["tasks_before"], result
    assert result["fds_inside_after"] == result["fds_inside_before"], result
    assert result["tasks_inside_after"] == result["tasks_inside_before"], result
    assert stats["sockets_opened"] == stats["sockets_closed"], stats
    assert stats["loops_started"] == stats["loops_stopped"] == total, stats
    assert stats["watches_started"] == stats["watches_stopped"] == total, stats
    assert stats["flights_started"] == stats["flights_finished"], stats
    inside = result["stats_inside"]
    assert inside["loops_started"] == inside["loops_stopped"] == total, inside
    assert inside["loops_running"] == 0, inside
    assert inside["flights_in_progress"] == 0, inside
    # One refresh per cycle: one query each (the _zero name's glue comes in the answer).
    assert result["queries_knot"] == stats["queries"] == total, result
    # A leak of even one small object per cycle would be > 50 B per cycle.
    assert result["traced_growth_per_cycle"] < 16, result
