"""Run the benchmarks in one pytest session and print markdown tables with ratios and targets.

Usage (from the repository root)::

    python benchmarks/report.py                # full run, about 2-3 minutes
    SRVWATCH_BENCH_QUICK=1 python benchmarks/report.py   # ~10x fewer operations (CI)
    python benchmarks/report.py --json results.json      # format an earlier run only

Every ratio is computed from numbers measured in the same run, with the peers
interleaved round by round. srvwatch on asyncio is the reference row.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = "srvwatch (asyncio)"
COLD_REFERENCE = "srvwatch (min_ttl=1e-9, asyncio)"
DNSPYTHON_HIT = "dnspython async, LRUCache (asyncio)"
AIODNS_HIT = "aiodns query_dns, c-ares cache (asyncio)"
AIODNS_COLD = "aiodns query_dns (asyncio)"
DNSPYTHON_SYNC = "dnspython sync Resolver.resolve"

COMMAND = [
    sys.executable,
    "-m",
    "pytest",
    "benchmarks/test_resolver.py",
    "--benchmark-only",
    "-p",
    "no:randomly",
    "-q",
]


def run_benchmarks(json_path: Path, extra: list[str]) -> int:
    cmd = [*COMMAND, f"--benchmark-json={json_path}", *extra]
    print("$ " + " ".join(cmd[1:] if cmd[0] == sys.executable else cmd), file=sys.stderr)
    return subprocess.run(cmd, cwd=ROOT, check=False, stdout=sys.stderr).returncode


# -- machine ----------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _knotd_version() -> str:
    try:
        out = subprocess.run(["knotd", "-V"], capture_output=True, text=True, check=False)
    except OSError:
        return "not installed"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine(run_at: str | None) -> list[str]:
    try:
        import pycares

        cares = getattr(pycares, "ARES_VERSION", "?")
    except ImportError:
        cares = "?"
    libs = ", ".join(
        f"{name} {_version(name)}"
        for name in (
            "srvwatch",
            "dnspython",
            "aiodns",
            "pycares",
            "anyio",
            "trio",
            "uvloop",
            "tenacity",
            "pytest-benchmark",
        )
    )
    return [
        f"- date: {run_at or dt.datetime.now(dt.timezone.utc).isoformat(timespec='minutes')}",
        f"- machine: {os.cpu_count()} CPUs (nproc), {_cpu_model()}, Linux {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- libraries: {libs}, c-ares {cares}",
        f"- DNS server: {_knotd_version()} on 127.0.0.1 (tests/dns_servers.py)",
    ]


# -- tables -----------------------------------------------------------------------


def _us(ns: float) -> str:
    return f"{ns / 1e3:,.2f}"


def _ratio(x: float) -> str:
    return f"{x:,.1f}x" if x >= 10 else f"{x:,.2f}x"


def cache_hit_table(info: dict[str, Any]) -> list[str]:
    peers = info["peers"]
    ref = peers[REFERENCE]["median_ns"]
    lines = [
        f"Name `{info['name']}` (TTL 30), answered once, then asked again; "
        f"median of {peers[REFERENCE]['batches']} interleaved batches; "
        f"queries reaching the server while timing: {info['upstream_queries_while_timing']}.",
        "",
        "| peer | ops per batch | per op, median (µs) | per op, best (µs) | ops/s "
        "| time vs srvwatch (asyncio) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in peers.items():
        lines.append(
            f"| {name} | {r['ops_per_batch']:,} | {_us(r['median_ns'])} | {_us(r['min_ns'])} "
            f"| {r['ops_per_s']:,.0f} | {_ratio(r['median_ns'] / ref)} |"
        )
    return lines


def cold_table(info: dict[str, Any]) -> list[str]:
    peers = info["peers"]
    ref = peers[COLD_REFERENCE]["p50_us"]
    lines = [
        f"Name `{info['name']}` (TTL 0 on the SRV records and on the target A records sent as "
        "glue), one call at a time, each call timed on its own; "
        "queries counted by Knot (and by srvwatch's `stats()`).",
        "",
        "| peer | calls | p50 (µs) | p90 (µs) | p99 (µs) | mean (µs) "
        "| queries at server | p50 vs srvwatch (asyncio) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in peers.items():
        queries = f"{r['server_queries']:,}"
        if "client_queries" in r:
            queries += f" (stats: {r['client_queries']:,})"
        lines.append(
            f"| {name} | {r['calls']:,} | {r['p50_us']:,.1f} | {r['p90_us']:,.1f} "
            f"| {r['p99_us']:,.1f} | {r['mean_us']:,.1f} | {queries} "
            f"| {_ratio(r['p50_us'] / ref)} |"
        )
    return lines


def coalescing_table(info: dict[str, Any]) -> list[str]:
    peers = info["peers"]
    ref = peers[REFERENCE]["wall_ms_median"]
    first = next(iter(peers.values()))
    lines = [
        f"{first['callers']:,} concurrent lookups of `{info['name']}` from a fresh resolver "
        f"(cold cache), {first['rounds']} round(s) per peer on a fresh Knot; "
        "queries counted by Knot per round.",
        "",
        "| peer | callers | answered (worst round) | errors (worst round) "
        "| queries at server (per round) "
        "| wall, median (ms) | wall vs srvwatch (asyncio) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in peers.items():
        rounds = r["per_round"]
        answered = min(x["answered"] for x in rounds)
        errors = max(x["errors"] for x in rounds)
        kinds = sorted({kind for x in rounds for kind in x.get("error_types", {})})
        error_text = f"{errors:,}" + (f" ({', '.join(kinds)})" if kinds else "")
        queries = ", ".join(
            f"{x['server_queries']:,}" if "server_queries" in x else "n/a" for x in rounds
        )
        lines.append(
            f"| {name} | {r['callers']:,} | {answered:,} | {error_text} | {queries} "
            f"| {r['wall_ms_median']:,.1f} | {_ratio(r['wall_ms_median'] / ref)} |"
        )
    return lines


def targets_table(by_scenario: dict[str, dict[str, Any]]) -> list[str]:
    rows: list[tuple[str, str, bool]] = []
    hit = by_scenario.get("cache_hit")
    if hit:
        p = hit["peers"]
        ref = p[REFERENCE]["median_ns"]
        x = p[DNSPYTHON_HIT]["median_ns"] / ref
        rows.append(
            (
                "cache hit: srvwatch >= 25x dnspython's ops/s",
                f"{_ratio(x)} ({p[REFERENCE]['ops_per_s']:,.0f} vs "
                f"{p[DNSPYTHON_HIT]['ops_per_s']:,.0f} ops/s)",
                x >= 25,
            )
        )
        x = p[AIODNS_HIT]["median_ns"] / ref
        rows.append(
            (
                "cache hit: srvwatch >= 50x aiodns's ops/s",
                f"{_ratio(x)} ({p[REFERENCE]['ops_per_s']:,.0f} vs "
                f"{p[AIODNS_HIT]['ops_per_s']:,.0f} ops/s)",
                x >= 50,
            )
        )
    cold = by_scenario.get("cold")
    if cold:
        p = cold["peers"]
        ref = p[COLD_REFERENCE]["p50_us"]
        aio = p[AIODNS_COLD]["p50_us"]
        rows.append(
            (
                "cold: srvwatch p50 no worse than aiodns",
                f"srvwatch {ref:,.1f} µs vs aiodns {aio:,.1f} µs ({_ratio(ref / aio)} of aiodns)",
                ref <= aio,
            )
        )
        sync = p[DNSPYTHON_SYNC]["p50_us"]
        rows.append(
            (
                "cold: srvwatch p50 >= 5x faster than dnspython sync",
                f"{_ratio(sync / ref)} faster (srvwatch {ref:,.1f} µs vs {sync:,.1f} µs)",
                sync / ref >= 5,
            )
        )
    storm = by_scenario.get("coalescing")
    if storm:
        r = storm["peers"][REFERENCE]
        queries = [x["server_queries"] for x in r["per_round"]]
        answered = [x["answered"] for x in r["per_round"]]
        ok = all(q == 1 for q in queries) and all(a == r["callers"] for a in answered)
        rows.append(
            (
                f"coalescing: {r['callers']:,} callers -> exactly 1 upstream query, all answered",
                f"queries per round {queries}, answered {answered}, "
                f"wall {r['wall_ms_median']:,.1f} ms",
                ok,
            )
        )
    lines = ["| target | measured (this run) | met? |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**NO**'} |" for t, m, ok in rows]
    return lines


def render(data: dict[str, Any]) -> str:
    by_scenario = {b["extra_info"].get("scenario"): b["extra_info"] for b in data["benchmarks"]}
    quick = any(info.get("quick") for info in by_scenario.values())
    out = ["### Run", "", *machine(data.get("datetime"))]
    if quick:
        out.append("- **quick mode** (SRVWATCH_BENCH_QUICK=1): about 10x fewer operations")
    out.append("")
    sections = (
        ("cache_hit", "1. Cache hit: `resolve_srv` of a cached name", cache_hit_table),
        ("cold", "2. Cold lookup: every call queries Knot on loopback", cold_table),
        ("coalescing", "3. Coalescing: concurrent lookups of one cold name", coalescing_table),
    )
    for key, title, table in sections:
        if key in by_scenario:
            out += [f"### {title}", "", *table(by_scenario[key]), ""]
    out += ["### Targets", "", *targets_table(by_scenario), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="format this pytest-benchmark JSON, don't run")
    parser.add_argument("--save-json", type=Path, help="keep the run's JSON here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    rc = 0
    if args.json is not None:
        path = args.json
    else:
        path = args.save_json or Path(tempfile.mkdtemp(prefix="srvwatch-bench-")) / "bench.json"
        rc = run_benchmarks(path, args.pytest_args)
        if not path.exists():
            print(f"pytest exited with {rc} and wrote no results", file=sys.stderr)
            return rc or 1
    data = json.loads(path.read_text())
    print(render(data))
    if rc:
        print(f"\npytest exited with status {rc}: see its output above", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
