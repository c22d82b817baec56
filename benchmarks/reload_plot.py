"""Draw docs/reload.png from benchmarks/results/reload.json (written by bench_reload_soak.py).

Usage (from the repository root)::

    python benchmarks/reload_plot.py [RESULTS_JSON] [OUT_PNG]

Open descriptors, tasks and RSS against the number of reloads, one line per
event loop: flat lines are the point. Needs matplotlib.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "reload.json"
DEFAULT_OUT = ROOT / "docs" / "reload.png"
PANELS = (
    ("descriptors", "resolver_sockets", "open descriptors (besides upstream sockets)", 1),
    ("tasks", "resolver_tasks", "tasks (besides the resolver's lookups)", 1),
    ("rss", None, "RSS (MiB)", 1024 * 1024),
)


def main(results_path: Path = DEFAULT_RESULTS, out: Path = DEFAULT_OUT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(results_path.read_text())
    fig, axes = plt.subplots(1, len(PANELS), figsize=(12, 3.6))
    for ax, (key, minus, label, scale) in zip(axes, PANELS, strict=True):
        for flavour, result in results.items():
            samples = result["samples"]
            ax.plot(
                [s["reloads"] for s in samples],
                [(s[key] - (s[minus] if minus else 0)) / scale for s in samples],
                marker="o",
                markersize=3,
                label=flavour,
            )
        ax.set_xlabel("config reloads")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        low, high = ax.get_ylim()
        if high - low < 4:  # flat: show it as flat, not as noise magnified
            middle = (high + low) / 2
            ax.set_ylim(middle - 2, middle + 2)
    axes[0].legend()
    fig.suptitle(
        "srvwatch serve: reloads under query load "
        "(each moves a listener, swaps a watch and changes the policy)"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:3]]
    main(*args)
