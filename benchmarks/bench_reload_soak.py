"""The reload soak: descriptors, tasks, threads and RSS per 100 config reloads, under query load.

A DNS server's plugin once opened a new upstream connection on every config
reload and never closed the old one; another left its zones' refresh timers
running. This runs ``srvwatch serve``'s reload 1,000 times (each moves a stub
listener, swaps a watch and changes the policy) on each event loop, against
a real Knot, while a client queries the stub and ``/ready`` is polled.

Run::

    python -m pytest benchmarks/bench_reload_soak.py --benchmark-only -p no:randomly -s
    SRVWATCH_BENCH_QUICK=1 python -m pytest benchmarks/bench_reload_soak.py --benchmark-only \
        -p no:randomly -s                      # CI: 200 reloads on asyncio only
    python benchmarks/reload_plot.py           # docs/reload.png (needs matplotlib)

The samples go to ``benchmarks/results/reload.json``; the table is printed.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
import pytest
from tests.dns_servers import KnotServer
from tests.reload_soak import SoakResult, leaks, soak

from benchmarks._harness import QUICK

RESULTS = Path(__file__).resolve().parent / "results" / "reload.json"
RELOADS = 200 if QUICK else 1000
LOOPS = ("asyncio",) if QUICK else ("asyncio", "uvloop", "trio")
MIB = 1024 * 1024


def _run(flavour: str, upstream: str, workdir: Path) -> SoakResult:
    backend = "trio" if flavour == "trio" else "asyncio"
    options: dict[str, Any] = {"use_uvloop": True} if flavour == "uvloop" else {}
    result: SoakResult = anyio.run(
        soak, upstream, workdir, RELOADS, 100, backend=backend, backend_options=options
    )
    return result


def _table(results: dict[str, SoakResult]) -> str:
    lines = [
        "| loop | reloads | time per reload | descriptors, start → end (upstream sockets) "
        "| tasks, start → end (resolver's) | threads | RSS MiB, start → end "
        "| queries answered | /ready not 200 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for flavour, r in results.items():
        first, last = r.before, r.after  # settled: no upstream query in flight
        lines.append(
            f"| {flavour} | {r.reloads:,} | {r.seconds / max(r.reloads, 1) * 1000:.1f} ms "
            f"| {first['descriptors']} ({first['resolver_sockets_open']}) → "
            f"{last['descriptors']} ({last['resolver_sockets_open']}) "
            f"| {first['tasks']} ({first['resolver_tasks']}) → "
            f"{last['tasks']} ({last['resolver_tasks']}) "
            f"| {first['threads']} → {last['threads']} "
            f"| {first['rss'] / MIB:.1f} → {last['rss'] / MIB:.1f} "
            f"| {r.answered:,} / {r.queries:,} | {len(r.not_ready)} |"
        )
    return "\n".join(lines)


@pytest.mark.timeout(1200)
def test_reload_soak(benchmark: Any, knot_factory: Any, tmp_path: Path) -> None:
    knot: KnotServer = knot_factory()
    results: dict[str, SoakResult] = {}

    def run() -> None:
        for flavour in LOOPS:
            workdir = tmp_path / flavour
            workdir.mkdir()
            results[flavour] = _run(flavour, knot.address(), workdir)

    benchmark.pedantic(run, rounds=1, iterations=1)
    knot.stop()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps({flavour: asdict(r) for flavour, r in results.items()}, indent=1) + "\n"
    )
    print("\n" + _table(results))
    problems = {flavour: leaks(r, RELOADS) for flavour, r in results.items()}
    assert problems == {flavour: [] for flavour in results}
