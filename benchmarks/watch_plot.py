"""Draw docs/storm.png from benchmarks/results/watch.json (written by bench_watch_*.py).

Usage (from the repository root)::

    python benchmarks/watch_plot.py [RESULTS_JSON] [OUT_PNG]

Upstream queries over time, counted at the Knot server, for N = 1000 watchers
of one TTL-0 SRV name: the naive dnspython loop against srvwatch (default
policy, and min_ttl 1 s). Log y-axis. Needs matplotlib (``pip install
matplotlib``); the benchmarks themselves do not.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "watch.json"
DEFAULT_OUT = ROOT / "docs" / "storm.png"
N = 1000

PEERS = (
    ("naive", "naive dnspython loop (re-query when the TTL runs out)", "#d62728"),
    ("srvwatch-1s", "srvwatch, min_ttl 1 s", "#1f77b4"),
    ("srvwatch-5s", "srvwatch, default policy (min_ttl 5 s)", "#2ca02c"),
)


def _intervals(series: list[list[float]]) -> tuple[list[float], list[float]]:
    """(interval end times, queries per second over each sampling interval)."""
    times, rates = [], []
    for (t0, c0), (t1, c1) in itertools.pairwise(series):
        if t1 - t0 > 0.05:
            times.append(t1)
            rates.append((c1 - c0) / (t1 - t0))
    return times, rates


def _rate(qps: float) -> str:
    return f"{qps:,.0f}" if qps >= 100 else f"{qps:.2g}"


def plot(results: dict[str, Any], out: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        sys.exit("watch_plot.py needs matplotlib, which is not installed: pip install matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    storm = results.get("storm")
    if not storm:
        sys.exit("no storm results in the JSON file: run benchmarks/bench_watch_storm.py first")
    runs = storm["runs"]
    machine = results.get("machine", {})

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    for key, label, colour in PEERS:
        run = runs.get(f"{key}/{N}")
        if run is None:
            continue
        series = run["series"]
        times, rates = _intervals(series)
        if key == "naive":
            top.step(times, rates, where="pre", color=colour, lw=2, label=label)
        else:
            # Mostly zero: mark only the intervals in which a query went out.
            shown = [(t, r) for t, r in zip(times, rates, strict=True) if r > 0]
            top.plot(
                [t for t, _ in shown],
                [r for _, r in shown],
                "o",
                color=colour,
                ms=7,
                label=f"{label} (intervals with a query)",
            )
        ts = [t for t, c in series if t >= 0 and c > 0]
        cs = [c for t, c in series if t >= 0 and c > 0]
        bottom.step(ts, cs, where="post", color=colour, lw=2, label=label)
        bottom.annotate(
            f"{run['queries']:,} queries, {_rate(run['qps'])} q/s",
            xy=(ts[-1], cs[-1]),
            xytext=(-5, 6),
            textcoords="offset points",
            ha="right",
            color=colour,
            fontsize=9,
        )

    top.set_yscale("log")
    top.set_ylim(1, 1e6)
    top.set_ylabel("upstream queries per second\n(per 250 ms sample, at the server)")
    top.set_title(
        f"{N:,} watchers of one TTL-0 SRV name in one process, against Knot DNS\n"
        f"{storm['seconds']:g} s per run; {machine.get('nproc', '?')} CPUs, "
        f"{machine.get('date', '')}",
        fontsize=11,
    )
    top.grid(True, which="both", alpha=0.3)
    top.legend(fontsize=9, loc="upper center", ncol=1, framealpha=0.95)
    bottom.set_yscale("log")
    bottom.set_ylabel("cumulative upstream queries")
    bottom.set_xlabel("seconds since the watchers started")
    bottom.grid(True, which="both", alpha=0.3)
    bottom.set_ylim(0.5, 3e5)
    bottom.legend(fontsize=9, loc="center right", framealpha=0.95)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


def main(argv: list[str]) -> None:
    results_path = Path(argv[1]) if len(argv) > 1 else DEFAULT_RESULTS
    out = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUT
    if not results_path.exists():
        sys.exit(f"{results_path} not found: run benchmarks/bench_watch_storm.py first")
    plot(json.loads(results_path.read_text()), out)


if __name__ == "__main__":
    main(sys.argv)
