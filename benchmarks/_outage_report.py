"""The markdown tables of the issue-9 benchmarks (outage herd, steady-state CPU).

Rendered from the JSON results alone (``benchmarks/results/outage.json``), so a
benchmark prints its own table as it finishes and an earlier run renders again
without running it. With ``--before``, the srvwatch figures of two runs (before
and after a change) side by side, with ratios::

    python -m benchmarks._outage_report [RESULTS_JSON] [--before BEFORE_JSON]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._series import count_at
from benchmarks._watch_report import num, table

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "outage.json"

PEER_TITLES = {
    "srvwatch": "srvwatch",
    "srvwatch@base": "srvwatch@base",
    "naive": "naive dnspython",
}

Run = dict[str, Any]


def _s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as "12x"; "-" when either is missing, "inf" when only ``b`` is 0."""
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return "-"
    if b == 0:
        return "1x" if a == 0 else "inf"
    ratio = a / b
    if ratio >= 10:
        return f"{ratio:,.0f}x"
    return f"{ratio:.2f}x"


def first_query_after_restart(run: Run) -> float:
    """Seconds from the restart to the first sample in which Knot had counted a query."""
    back = run["phases_s"]["back"]
    knot = [(t, c) for t, c in run["knot_series"]]
    at_back = next((c for t, c in knot if t >= back - 1e-3), math.nan)
    return next((t - back for t, c in knot if t > back + 1e-3 and c > at_back), math.nan)


def stopping_and_down(run: Run) -> tuple[float, float, float]:
    """(queries sent while Knot was exiting, how long that took, queries sent once it was down).

    From the client's series, which carries its exact counts at the phase boundaries
    (runs made before it did are interpolated between 0.5 s samples: marked "~").
    """
    phases = run["phases_s"]
    series = [(t, c) for t, c in run["client_series"]]
    out, stopped, back = (count_at(series, phases[k]) for k in ("out", "stopped", "back"))
    return stopped - out, phases["stopped"] - phases["out"], back - stopped


def _exact(run: Run) -> str:
    """ "~" when the client's series has no exact count at Knot's exit (older runs)."""
    stopped = run["phases_s"]["stopped"]
    return "" if any(abs(t - stopped) < 2e-3 for t, _ in run["client_series"]) else "~"


# One row of the outage table: label, the cell of a run, the number ratios are taken of
# (None: no ratio for that row).
Row = tuple[str, Callable[[Run], str], Callable[[Run], float] | None]


def _outage_rows(timeline: dict[str, float]) -> list[Row]:
    def stale(run: Run) -> str:
        s = run["stale_latency_s"]
        return f"{_s(s['p50'])} / {_s(s['p99'])} / {_s(s['max'])}"

    def fresh(run: Run) -> str:
        f = run["fresh_after_restart_s"]
        never = f", {run['never_fresh']:,} never" if run["never_fresh"] else ""
        return f"{_s(f['p50'])} / {_s(f['max'])}{never}"

    outage = f"{timeline['outage']:g} s"
    return [
        (
            "steady: queries/s at Knot (highest 1 s)",
            lambda r: f"{num(r['steady_qps_knot'])} ({num(r['steady_peak_knot'])})",
            lambda r: r["steady_qps_knot"],
        ),
        (
            f"outage ({outage}): queries sent, counted by the client",
            lambda r: f"**{r['outage_queries']:,}**",
            lambda r: r["outage_queries"],
        ),
        (
            "of which while Knot was exiting (SIGTERM to exit)",
            lambda r: (
                f"{_exact(r)}{stopping_and_down(r)[0]:,.0f} in {stopping_and_down(r)[1]:.2f} s"
            ),
            None,
        ),
        (
            "of which once Knot was down",
            lambda r: f"{_exact(r)}{stopping_and_down(r)[2]:,.0f}",
            lambda r: stopping_and_down(r)[2],
        ),
        (
            "outage: queries/s sent (highest 1 s)",
            lambda r: f"{num(r['outage_qps'])} ({num(r['outage_peak_client'])})",
            lambda r: r["outage_qps"],
        ),
        (
            "outage: client CPU, % of one core",
            lambda r: f"{r['outage_cpu_pct']:.1f}",
            lambda r: r["outage_cpu_pct"],
        ),
        (
            "stale latency from the outage's start, p50 / p99 / max (s)",
            stale,
            lambda r: r["stale_latency_s"]["max"],
        ),
        (
            "names never flagged stale / flagged more than once",
            lambda r: f"{r['never_stale']:,} / {r['stale_more_than_once']:,}",
            None,
        ),
        (
            "recovery: highest 1 s at Knot, queries/s",
            lambda r: f"**{num(r['recovery_peak_knot'])}**",
            lambda r: r["recovery_peak_knot"],
        ),
        (
            "recovery: that peak / the steady rate",
            lambda r: f"**{r['recovery_peak_ratio']:.2f}x**",
            lambda r: r["recovery_peak_ratio"],
        ),
        (
            "recovery: first query at the restarted Knot after (s, per 0.5 s sample)",
            lambda r: _s(first_query_after_restart(r)),
            None,
        ),
        (
            "fresh again after the restart, p50 / all (s)",
            fresh,
            lambda r: r["fresh_after_restart_s"]["max"],
        ),
        (
            f"recovery: queries at Knot in the first {timeline['recovery']:g} s",
            lambda r: f"{r['recovery_queries_knot']:,.0f}",
            lambda r: r["recovery_queries_knot"],
        ),
    ]


def render_outage(outage: dict[str, Any]) -> str:
    timeline = outage["timeline_s"]
    peers = outage["peers"]
    others = [p for p in peers if p != "srvwatch"]
    out = [
        f"### Outage herd: watched SRV names at the 5 s floor, Knot stopped for "
        f"{timeline['outage']:g} s\n\n"
        f"Steady {timeline['steady']:g} s (after {timeline['warmup']:g} s of warm-up), outage "
        f"{timeline['outage']:g} s, recovery {timeline['recovery']:g} s; Knot counted every "
        f'{outage["sample_s"]:g} s. For the naive loop, which has no stale flag, "stale" is its '
        'first failed query and "fresh" its first answer after the restart.\n'
    ]
    rows = _outage_rows(timeline)
    for n in outage["names"]:
        runs = {p: outage["runs"].get(f"{p}/{n}") for p in peers}
        if runs.get("srvwatch") is None:
            continue
        main = runs["srvwatch"]
        headers = [f"N = {n:,}"] + [PEER_TITLES.get(p, p) for p in peers]
        headers += [f"{PEER_TITLES.get(p, p)} / srvwatch" for p in others]
        body = []
        for label, cell, value in rows:
            line = [label] + [cell(runs[p]) if runs[p] else "-" for p in peers]
            for p in others:
                other = runs[p]
                line.append(_ratio(value(other), value(main)) if value and other else "")
            body.append(line)
        out.append("\n" + table(headers, body))
    return "".join(out)


# --------------------------------------------------------------------------- CPU


def cpu_summary(cpu: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per "variant/loop": medians and ranges over the rounds."""
    grouped: dict[str, list[Run]] = {}
    for run in cpu["runs"]:
        grouped.setdefault(f"{run['variant']}/{run['loop']}", []).append(run)
    summary = {}
    for key, runs in grouped.items():
        pct = [r["cpu_pct"] for r in runs]
        us = [r["us_per_refresh"] for r in runs]
        summary[key] = {
            "rounds": len(runs),
            "cpu_pct": statistics.median(pct),
            "cpu_pct_min": min(pct),
            "cpu_pct_max": max(pct),
            "us_per_refresh": statistics.median(us),
            "us_min": min(us),
            "us_max": max(us),
            "refreshes_per_s": statistics.median(r["refreshes_per_s"] for r in runs),
            "queries_per_refresh": statistics.median(r["queries_per_refresh"] for r in runs),
            "sys_share": statistics.median(r["sys_s"] / r["cpu_s"] for r in runs if r["cpu_s"]),
            "stale_updates": sum(r.get("stale_updates_in_window", 0) for r in runs),
            "gc_share": statistics.median(sum(r["gc_s"]) / r["cpu_s"] for r in runs)
            if all("gc_s" in r for r in runs)
            else math.nan,
            "startup_s": max(r["startup_s"] for r in runs),
            "unanswered": max(
                r["names"] - r.get("answered_by_deadline", r["answered"]) for r in runs
            ),
            "timeouts": sum(r["timeouts"] for r in runs),
            "evictions": max(r["stats_window_end"]["cache_evictions"] for r in runs),
            "load": max(max(r["loadavg"]) for r in runs),
        }
    return summary


def _range(mid: float, low: float, high: float, digits: int = 1) -> str:
    if math.isclose(low, high):
        return f"{mid:.{digits}f}"
    return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def render_cpu(cpu: dict[str, Any]) -> str:
    summary = cpu_summary(cpu)
    rounds = max((s["rounds"] for s in summary.values()), default=0)
    out = [
        f"\n### Steady-state CPU: {cpu['names']:,} watched SRV names at the 5 s floor\n\n"
        f"Process CPU time over a {cpu['window_s']:g} s window after {cpu['warmup_s']:g} s of "
        f"warm-up; median of {rounds} round(s), range in brackets. A refresh is one SRV "
        "query at Knot; queries per refresh add the targets' A/AAAA queries. GC is the time in "
        "Python's cyclic garbage collector (gc.callbacks). Start-up: from the first watch to "
        'every name\'s first right answer ("not": names still without one at the deadline). '
        "Timeouts and stale updates are summed over the rounds' windows: refreshes that fell "
        "behind. Cache evictions: the LRU's count by the window's end (most of a round).\n\n"
    ]
    rows = []
    for key, s in summary.items():
        variant, loop = key.split("/")
        rows.append(
            [
                variant,
                loop,
                f"**{_range(s['cpu_pct'], s['cpu_pct_min'], s['cpu_pct_max'])}**",
                _range(s["us_per_refresh"], s["us_min"], s["us_max"], 0),
                f"{s['refreshes_per_s']:,.0f}",
                f"{s['queries_per_refresh']:.2f}",
                "-" if math.isnan(s["gc_share"]) else f"{s['gc_share'] * 100:.0f}%",
                f"{s['sys_share'] * 100:.0f}%",
                f"{s['startup_s']:.0f} s"
                + (f" ({s['unanswered']:,} not)" if s["unanswered"] else ""),
                f"{s['timeouts']:,} / {s['stale_updates']:,}",
                f"{s['evictions']:,}",
                f"{s['load']:.1f}",
            ]
        )
    out.append(
        table(
            [
                "targets' addresses",
                "event loop",
                "% of one core",
                "CPU us per refresh",
                "refreshes/s",
                "queries per refresh",
                "of which GC",
                "of which kernel (sys)",
                "start-up: every name answered after (slowest round)",
                "timeouts / stale updates",
                "cache evictions",
                "load average (max)",
            ],
            rows,
        )
    )
    return "".join(out)


# --------------------------------------------------------------------------- before / after


def render_comparison(before: dict[str, Any], after: dict[str, Any]) -> str:
    """srvwatch in two runs, side by side: ``before / after`` for each figure."""
    out = []
    title_b = before.get("machine", {}).get("commit", "before").split(" ")[0]
    title_a = after.get("machine", {}).get("commit", "after").split(" ")[0]
    ob, oa = before.get("outage"), after.get("outage")
    if ob and oa:
        rows = _outage_rows(oa["timeline_s"])
        for n in oa["names"]:
            rb, ra = ob["runs"].get(f"srvwatch/{n}"), oa["runs"].get(f"srvwatch/{n}")
            if rb is None or ra is None:
                continue
            body = []
            for label, cell, value in rows:
                ratio = _ratio(value(rb), value(ra)) if value else ""
                body.append([label, cell(rb), cell(ra), ratio])
            out.append(
                f"\n#### Outage herd, N = {n:,}: srvwatch before and after\n\n"
                + table(["", f"before ({title_b})", f"after ({title_a})", "before / after"], body)
            )
    cb, ca = before.get("steady_cpu"), after.get("steady_cpu")
    if cb and ca:
        sb, sa = cpu_summary(cb), cpu_summary(ca)
        body = []
        for key, a in sa.items():
            b = sb.get(key)
            if b is None:
                continue
            variant, loop = key.split("/")
            body.append(
                [
                    variant,
                    loop,
                    f"{b['cpu_pct']:.1f} / {a['cpu_pct']:.1f}",
                    _ratio(b["cpu_pct"], a["cpu_pct"]),
                    f"{b['us_per_refresh']:.0f} / {a['us_per_refresh']:.0f}",
                    _ratio(b["us_per_refresh"], a["us_per_refresh"]),
                    f"{b['queries_per_refresh']:.2f} / {a['queries_per_refresh']:.2f}",
                    f"{_pct(b['gc_share'])} / {_pct(a['gc_share'])}",
                    f"{_startup(b)} / {_startup(a)}",
                    f"{b['stale_updates']:,} / {a['stale_updates']:,}",
                ]
            )
        out.append(
            f"\n#### Steady-state CPU, {ca['names']:,} names: before / after\n\n"
            + table(
                [
                    "targets' addresses",
                    "event loop",
                    "% of one core",
                    "before / after",
                    "CPU us per refresh",
                    "before / after",
                    "queries per refresh",
                    "of which GC",
                    "start-up (slowest round)",
                    "stale updates",
                ],
                body,
            )
        )
    return "".join(out)


def _pct(share: float) -> str:
    return "-" if math.isnan(share) else f"{share * 100:.0f}%"


def _startup(summary: dict[str, float]) -> str:
    """Seconds to every name's first answer; "(N not)" when names had none by the deadline."""
    text = f"{summary['startup_s']:.0f} s"
    if summary["unanswered"]:
        text += f" ({summary['unanswered']:,.0f} not)"
    return text


def render_markdown(data: dict[str, Any]) -> str:
    out = []
    if data.get("outage"):
        out.append(render_outage(data["outage"]))
    if data.get("steady_cpu"):
        out.append(render_cpu(data["steady_cpu"]))
    targets = data.get("targets")
    if targets:
        out.append("\n### Targets (issue 9)\n\n")
        out.append(
            table(
                ["target", "met", "measured"],
                [[k, "yes" if v["met"] else "**NO**", v["detail"]] for k, v in targets.items()],
            )
        )
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--before", type=Path, help="an earlier run: print before / after")
    args = parser.parse_args(argv)
    after = json.loads(args.results.read_text())
    if args.before:
        print(render_comparison(json.loads(args.before.read_text()), after), end="")
    else:
        print(render_markdown(after), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
