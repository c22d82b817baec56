"""The markdown tables of the continuous-watching benchmarks, in one place.

Rendered from the JSON results alone (``benchmarks/results/watch.json``), so a
scenario prints its own table as it finishes, the session rewrites ``watch.md``
after each one, and an earlier run can be rendered again without running it::

    python -m benchmarks._watch_report [RESULTS_JSON]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "watch.json"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def num(value: float, digits: int = 3) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def render_markdown(data: dict[str, Any]) -> str:
    """The result tables (the same ones the tests print), from the JSON results."""
    out: list[str] = []
    storm = data.get("storm")
    if storm:
        out.append(
            f"### Storm: N watchers of one TTL-0 SRV name, {storm['seconds']:g} s each, "
            "queries counted at Knot\n\n"
        )
        rows = []
        for n in storm["ns"]:
            naive = storm["runs"][f"naive/{n}"]
            row = [f"{n:,}", num(naive["qps"])]
            for peer in ("srvwatch-5s", "srvwatch-1s"):
                run = storm["runs"][f"{peer}/{n}"]
                row += [
                    f"{num(run['qps'])} ({run['queries']})",
                    f"{naive['qps'] / run['qps']:,.0f}x" if run["qps"] else "inf",
                ]
            rows.append(row)
        out.append(
            table(
                [
                    "N",
                    "naive dnspython q/s",
                    "srvwatch default (min_ttl 5 s) q/s (queries)",
                    "naive / srvwatch",
                    "srvwatch min_ttl 1 s q/s (queries)",
                    "naive / srvwatch 1 s",
                ],
                rows,
            )
        )
        cpu_rows = []
        for n in storm["ns"]:
            cpu_rows.append(
                [f"{n:,}"]
                + [
                    f"{storm['runs'][f'{p}/{n}']['cpu_per_wall_s']:.3f}"
                    for p in ("naive", "srvwatch-5s", "srvwatch-1s")
                ]
            )
        out.append("\nClient CPU seconds per wall second during the storm:\n\n")
        out.append(table(["N", "naive", "srvwatch 5 s", "srvwatch 1 s"], cpu_rows))
    fleet = data.get("fleet")
    if fleet:
        out.append(
            f"\n### Fleet jitter: {fleet['resolvers']} independent Resolvers, min_ttl 1 s, "
            f"started together, {fleet['seconds']:g} s, queries per "
            f"{fleet['bucket_s'] * 1000:.0f} ms bucket\n\n"
        )
        rows = []
        for key, run in fleet["runs"].items():
            windows = ", ".join(f"{k}: {v:.2f}" for k, v in run["peak_to_mean_from"].items())
            rows.append(
                [
                    key,
                    str(run["queries_proxy"]),
                    str(run["queries_knot"]),
                    f"{run['mean_per_bucket']:.1f}",
                    str(run["max_bucket"]),
                    f"**{run['peak_to_mean']:.2f}**",
                    windows,
                    str(run["first_bucket"]),
                ]
            )
        out.append(
            table(
                [
                    "jitter",
                    "queries (proxy)",
                    "queries (Knot)",
                    "mean / bucket",
                    "max bucket",
                    f"peak / mean after {fleet['settle_s']:g} s",
                    "peak / mean after t",
                    "first bucket",
                ],
                rows,
            )
        )
    scale = data.get("scale")
    if scale:
        traced = scale.get("traced", {})
        out.append(f"\n### Scale: {scale['names']:,} watched SRV names in one Resolver\n\n")
        rows = [
            ["time until every name had its first answer", f"{scale['first_all_s']:.2f} s"],
            [
                "time to first answer, p50 / p99",
                f"{scale['first_p50_s']:.2f} s / {scale['first_p99_s']:.2f} s",
            ],
            ["client CPU during that start-up", f"{scale['startup_cpu_s']:.2f} s"],
            [
                "queries / timeouts / network errors until all answered",
                f"{scale['queries_first']:,} / {scale['timeouts_first']} / "
                f"{scale['network_errors_first']}",
            ],
            [
                "open file descriptors: before / peak during start-up / after",
                f"{scale['fds_before']} / {scale['fds_peak']:,} / {scale['fds_after_start']}",
            ],
            ["RSS per watch, after first answers", f"{scale['rss_per_watch_b']:,.0f} B"],
            [
                f"RSS per watch, after {scale['steady_s']:.0f} s of steady state",
                f"{scale['rss_per_watch_steady_b']:,.0f} B",
            ],
        ]
        if traced:
            rows.append(
                [
                    f"traced Python memory per watch (tracemalloc, {traced['names']:,} names, "
                    "watcher task included)",
                    f"{traced['traced_per_watch_b']:,.0f} B",
                ]
            )
        rows += [
            [
                f"steady state ({scale['steady_s']:.0f} s, min_ttl 5 s): upstream queries/s (Knot)",
                f"{scale['steady_qps']:,.0f}",
            ],
            ["steady state: client CPU s per wall s", f"{scale['cpu_per_wall_s']:.3f}"],
            ["steady state: client CPU per refresh", f"{scale['cpu_per_query_us']:.0f} us"],
            [
                "CPU s per wall s once refreshes are spread evenly (projected: "
                "CPU per refresh x names / 4.5 s)",
                f"{scale['cpu_per_wall_s_projected']:.2f}",
            ],
        ]
        out.append(table(["metric", "value"], rows))
    limited = data.get("scale_fd_limit")
    if limited:
        out.append(
            f"\n### Scale start-up with the open-file limit at {limited['fd_limit']}: "
            f"{limited['names']:,} names\n\n"
        )
        out.append(
            table(
                ["metric", "value"],
                [
                    [
                        "names with their right answer / all",
                        f"{limited['answered']:,} / {limited['names']:,}",
                    ],
                    [
                        "first updates that were errors (no endpoints)",
                        f"{limited['error_first_updates']:,}",
                    ],
                    [
                        "time until every name had some first update",
                        f"{limited['first_any_all_s']:.2f} s",
                    ],
                    [
                        "time until every name had its right answer",
                        f"{limited['first_all_s']:.2f} s"
                        if limited["answered"] == limited["names"]
                        else f"not reached: stopped after {limited['first_all_s']:.1f} s",
                    ],
                    [
                        "queries / network errors (EMFILE) until then",
                        f"{limited['queries_first']:,} / {limited['network_errors_first']:,}",
                    ],
                    ["client CPU until then", f"{limited['startup_cpu_s']:.2f} s"],
                ],
            )
        )
    soak = data.get("soak")
    if soak:
        out.append(f"\n### Soak: {soak['cycles']:,} watch open/close cycles on one Resolver\n\n")
        rows = [
            ["open fds (outside the Resolver)", str(soak["fds_before"]), str(soak["fds_after"])],
            [
                "open fds (inside, after warm-up / at the end)",
                str(soak["fds_inside_before"]),
                str(soak["fds_inside_after"]),
            ],
            ["asyncio tasks (outside)", str(soak["tasks_before"]), str(soak["tasks_after"])],
            [
                "asyncio tasks (inside)",
                str(soak["tasks_inside_before"]),
                str(soak["tasks_inside_after"]),
            ],
            [
                "traced Python memory (inside)",
                f"{soak['traced_before']:,} B",
                f"{soak['traced_after']:,} B",
            ],
        ]
        out.append(table(["", "before", "after"], rows))
        s = soak["stats"]
        out.append(
            f"\nGrowth: {soak['traced_growth']:+,} B ({soak['traced_growth_per_cycle']:+.2f} B "
            f"per cycle); {soak['cycles_per_s']:,.0f} cycles/s (tracemalloc on); queries at Knot "
            f"{soak['queries_knot']:,} for {soak['cycles'] + soak['warmup']:,} cycles. stats(): "
            f"sockets {s['sockets_opened']}/{s['sockets_closed']}, loops "
            f"{s['loops_started']}/{s['loops_stopped']}, watches "
            f"{s['watches_started']}/{s['watches_stopped']}, flights "
            f"{s['flights_started']}/{s['flights_finished']} (opened/closed).\n"
        )
    targets = data.get("targets")
    if targets:
        out.append("\n### Targets\n\n")
        out.append(
            table(
                ["target", "met", "measured"],
                [[k, "yes" if v["met"] else "**NO**", v["detail"]] for k, v in targets.items()],
            )
        )
    return "".join(out)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT_RESULTS
    if not path.exists():
        print(f"{path} not found: run benchmarks/bench_watch_*.py first", file=sys.stderr)
        return 1
    print(render_markdown(json.loads(path.read_text())), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
