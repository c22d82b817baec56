"""Draw docs/outage.png from benchmarks/results/outage.json (written by bench_outage.py).

Usage (from the repository root)::

    python benchmarks/outage_plot.py [RESULTS_JSON] [OUT_PNG]

Queries per second over time for each peer, one panel per number of names:
solid, counted at Knot; dashed, during the outage, sent by the client (a
stopped Knot counts nothing). Symmetric-log y-axis, so that zero shows.
Needs matplotlib (the ``bench`` extra); the benchmarks themselves do not.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._series import count_at  # noqa: E402  (run as a script from anywhere)

DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "outage.json"
DEFAULT_OUT = ROOT / "docs" / "outage.png"

PEERS = {
    "naive": ("naive dnspython loop (TTL floored at 5 s, retry after 1 s)", "#d62728"),
    "srvwatch@base": ("srvwatch@base ({base})", "#ff7f0e"),
    "srvwatch": ("srvwatch ({commit})", "#2ca02c"),
}


def per_second(
    series: list[list[float]], start: float, end: float
) -> tuple[list[float], list[float]]:
    """(bin edges, queries in each second from ``start``) from a cumulative series."""
    points = [(t, c) for t, c in series]
    edges = [start]
    while edges[-1] + 1 <= end + 1e-6:
        edges.append(edges[-1] + 1)
    counts = [count_at(points, b) - count_at(points, a) for a, b in itertools.pairwise(edges)]
    return edges, counts


def _draw(ax: Any, run: dict[str, Any], label: str | None, colour: str, **style: Any) -> None:
    """Knot's count before the stop and after the restart; the client's during the outage."""
    phases = run["phases_s"]
    spans = (("steady", "out", "-", "knot_series"), ("back", "end", "-", "knot_series"))
    for start, end, ls, key in (*spans, ("out", "back", "--", "client_series")):
        edges, counts = per_second(run[key], phases[start], phases[end])
        if counts:
            ax.stairs(counts, edges, baseline=None, color=colour, ls=ls, label=label, **style)
            label = None


def plot(results: dict[str, Any], out: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        sys.exit("outage_plot.py needs matplotlib, which is not installed: pip install matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outage = results.get("outage")
    if not outage:
        sys.exit("no outage results in the JSON file: run benchmarks/bench_outage.py first")
    machine = results.get("machine", {})
    commit = machine.get("commit", "").split(" ")[0]
    names = outage["names"]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 4.2 * len(names)), squeeze=False)
    for ax, n in zip(axes[:, 0], names, strict=True):
        for peer, (label, colour) in PEERS.items():
            run = outage["runs"].get(f"{peer}/{n}")
            if run is None:
                continue
            label = label.format(commit=commit, base=machine.get("base", "an earlier commit"))
            # The naive loop's lock-step swings would hide the others: drawn lighter, first.
            style = {"lw": 1.2, "alpha": 0.6} if peer == "naive" else {"lw": 1.6}
            _draw(ax, run, label, colour, **style)
        phases = outage["runs"][f"srvwatch/{n}"]["phases_s"]
        ax.axvspan(0, phases["back"], color="#bbbbbb", alpha=0.3, lw=0)
        ax.text(
            phases["back"] / 2,
            0.97,
            "Knot stopped: dashed = sent by the client",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="top",
            fontsize=9,
        )
        ax.set_yscale("symlog", linthresh=10)
        ax.set_ylim(0, None)
        ends = [
            run["phases_s"]["end"] for key, run in outage["runs"].items() if key.endswith(f"/{n}")
        ]
        ax.set_xlim(phases["steady"], max(ends))
        ax.set_ylabel("queries per second")
        ax.set_title(f"{n:,} watched SRV names (TTL at the 5 s floor), one process", fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left", framealpha=0.95)
    axes[-1, 0].set_xlabel("seconds since Knot was stopped")
    fig.suptitle(
        f"Outage herd against Knot DNS: steady, {outage['timeline_s']['outage']:g} s outage, "
        f"recovery ({machine.get('nproc', '?')} CPUs, {machine.get('date', '')})",
        fontsize=12,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not args.results.exists():
        sys.exit(f"{args.results} not found: run benchmarks/bench_outage.py first")
    plot(json.loads(args.results.read_text()), args.out)


if __name__ == "__main__":
    main()
