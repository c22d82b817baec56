"""The markdown tables of the DNS stub benchmark (``bench_stub.py``), from its JSON results.

The test prints them as it finishes and writes ``benchmarks/results/stub.md``;
an earlier run can be rendered again without running it::

    python -m benchmarks._stub_report [RESULTS_JSON]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "stub.json"
DNSMASQ = "dnsmasq"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _machine(m: dict[str, Any]) -> str:
    v = m.get("versions", {})
    load = ", ".join(f"{x:.2f}" for x in m.get("loadavg_at_start", []))
    return (
        f"Measured {m.get('date', '?')}: {m.get('nproc', '?')} CPUs ({m.get('cpu', '?')}), "
        f"{m.get('platform', '?')}, load average at start {load}; Python {m.get('python', '?')}, "
        f"srvwatch {v.get('srvwatch', '?')}, uvloop {v.get('uvloop', '?')}, "
        f"trio {v.get('trio', '?')}, dnspython {v.get('dnspython', '?')}; "
        f"dnsperf {v.get('dnsperf', '?')}, dnsmasq {v.get('dnsmasq', '?')}, "
        f"unbound {v.get('unbound', '?')}, Knot DNS {v.get('knotd', '?')}"
        f"{' (quick form)' if m.get('quick') else ''}.\n"
    )


def _skipped(section: dict[str, Any]) -> list[str]:
    """One line per reason: the peers it kept from being measured."""
    by_reason: dict[str, list[str]] = {}
    for name, why in section.get("skipped", {}).items():
        by_reason.setdefault(why, []).append(name)
    return [f"- Not measured: {', '.join(names)}. {why}" for why, names in by_reason.items()]


def _hits(hits: dict[str, Any]) -> str:
    out = [
        f"#### Cache hits: {hits['queries']} warm queries, `dnsperf -c {hits['clients']} "
        f"-q {hits['outstanding']}`, {hits['seconds']:g} s per peer per round, "
        f"{hits['rounds']} round(s), peers interleaved\n\n"
    ]
    rows = []
    summary = hits["summary"]
    for name, row in sorted(summary.items(), key=lambda kv: -kv[1]["qps_median"]):
        rows.append(
            [
                name,
                num(row["qps_median"]),
                f"{num(row['qps_min'])} - {num(row['qps_max'])}",
                ratio(row["vs_dnsmasq"]),
                num(row["p50_ms_median"]),
                num(row["p99_ms_median"]),
                num(row["cpu_us_per_query_median"]),
                ratio(row.get("cpu_efficiency_vs_dnsmasq")),
                num(row["server_cpu_per_wall_median"], 2),
                num(row.get("client_cpu_per_wall_median"), 2),
                f"{row['lost']:,}",
                f"{row['knot_queries']:,}",
            ]
        )
    out.append(
        table(
            [
                "peer",
                "queries/s (median)",
                "range",
                "vs dnsmasq",
                "p50 ms",
                "p99 ms",
                "server CPU µs/query",
                "CPU/query: dnsmasq's / peer's",
                "server CPU s/s",
                "dnsperf CPU s/s",
                "lost",
                "queries at Knot",
            ],
            rows,
        )
    )
    runs = hits.get("runs", {})
    if hits["rounds"] > 1 and runs:
        out.append("\nQueries per second in each round (load average before the run):\n\n")
        order = sorted(summary, key=lambda name: -summary[name]["qps_median"])
        out.append(
            table(
                ["peer"] + [f"round {i + 1}" for i in range(hits["rounds"])],
                [
                    [name]
                    + [
                        f"{num(r['qps'])} ({r.get('loadavg_1min_before', float('nan')):.1f})"
                        for r in sorted(runs[name], key=lambda r: r["round"])
                    ]
                    for name in order
                ],
            )
        )
    notes = []
    for ours in ("uvloop", "asyncio", "trio"):
        mine = summary.get(f"srvwatch ({ours})")
        if mine is None:
            continue
        for name, row in summary.items():
            if name.startswith(f"minimal Python stub ({ours},"):
                q = mine["qps_median"] / row["qps_median"]
                cpu_mine, cpu_floor = (
                    mine["cpu_us_per_query_median"],
                    row["cpu_us_per_query_median"],
                )
                cpu = (
                    f", {cpu_mine / cpu_floor:.2f}x its CPU per query"
                    if cpu_mine and cpu_floor
                    else ""
                )
                notes.append(f"- srvwatch ({ours}) / {name}: {q:.2f}x the queries per second{cpu}")
    notes += _skipped(hits)
    if notes:
        out.append("\n" + "\n".join(notes) + "\n")
    return "".join(out)


def _storm(storm: dict[str, Any]) -> str:
    out = [
        f"#### Storm shield: dnsperf asks `{storm['name']}` (TTL 0) nonstop for "
        f"{storm['seconds']:g} s, upstream queries counted at Knot\n\n"
    ]
    rows = []
    for name, run in storm["runs"].items():
        per_floor = run["upstream_qps"] * storm["floor_s"]
        rows.append(
            [
                name,
                num(run["qps"]),
                "-" if run["client_ttl"] is None else str(run["client_ttl"]),
                f"{run['knot_queries']:,}",
                num(run["upstream_qps"]),
                num(per_floor),
                num(run["completed"] / run["knot_queries"]) if run["knot_queries"] else "-",
                ", ".join(f"{code} {n:,}" for code, n in run["rcodes"].items()),
                f"{run['lost']:,}",
            ]
        )
    out.append(
        table(
            [
                "peer",
                "client queries/s",
                "TTL clients see",
                "queries at Knot",
                "upstream queries/s",
                f"per {storm['floor_s']:g} s floor",
                "client answers per upstream query",
                "answers to clients",
                "lost",
            ],
            rows,
        )
    )
    out.append(
        f"\nsrvwatch's bound in this run: at most {storm['srvwatch_bound']} upstream queries.\n"
    )
    skipped = _skipped(storm)
    if skipped:
        out.append("\n" + "\n".join(skipped) + "\n")
    return "".join(out)


def render_markdown(data: dict[str, Any]) -> str:
    out = []
    if "machine" in data:
        out.append(_machine(data["machine"]))
    if "hits" in data:
        out.append(_hits(data["hits"]))
    if "storm" in data:
        out.append(_storm(data["storm"]))
    targets = data.get("targets", {})
    if targets:
        out.append(
            "#### Targets\n\n"
            + table(
                ["target", "met", "measured"],
                [[k, "yes" if v["met"] else "**no**", v["detail"]] for k, v in targets.items()],
            )
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_RESULTS
    print(render_markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
