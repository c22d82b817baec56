"""What the quiet-outage benchmarks of issue 9 (``bench_outage.py``, ``bench_steady_cpu.py``) share.

A pytest plugin (registered in ``benchmarks/conftest.py``): one :class:`Issue9Results`
per session, written to ``benchmarks/results/outage.json`` and, rendered by
:mod:`benchmarks._outage_report`, to ``outage.md``.

Queries are counted at Knot by type (mod-stats ``query-type``), read with ``knotc``.
The fixture's ``query_count()`` re-bases after a restart, so the queries that
land while a restarted Knot is still getting ready (the head of a recovery
burst) would be missed, and its readiness probes would be counted. A new Knot
process counts from zero, so here a restart is stitched on at the moment of
the spawn, and counting only SRV, A and AAAA leaves the fixture's SOA probes out.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.dns_servers import KnotServer, free_port

from benchmarks._harness import percentile
from benchmarks._outage_report import render_markdown
from benchmarks._watch import ENFORCE_TARGETS, RESULTS_DIR, _machine
from benchmarks.baseline import base_revision

COUNTED_TYPES = ("SRV", "A", "AAAA")
"""What the benchmarks' clients ask; SOA is the fixture's readiness probe."""

_TYPE_RE = re.compile(r"^mod-stats\.query-type\[(\w+)\]\s*=\s*(\d+)\s*$", re.MULTILINE)


class TypeCountingKnot(KnotServer):
    """A fixture Knot with mod-stats' per-type query counters switched on."""

    def _config(self) -> str:
        config = super()._config()
        anchor = "    server-operation: on\n"
        if anchor not in config:
            raise RuntimeError("tests/dns_servers.py's Knot config changed: no mod-stats anchor")
        return config.replace(anchor, anchor + "    query-type: on\n")


def start_knot(tmp: pytest.TempPathFactory, zones: dict[str, str]) -> TypeCountingKnot:
    """A running :class:`TypeCountingKnot` serving ``zones`` (origin -> zone text)."""
    origin = next(iter(zones))
    server = TypeCountingKnot(
        host="127.0.0.1",
        port=free_port(),
        zone=origin,
        workdir=tmp.mktemp("knot"),
        zones=zones,
    )
    server.start()
    return server


def type_counts(knot: KnotServer) -> dict[str, int] | None:
    """Knot's queries by type since its process started; None while it cannot tell."""
    if not knot.running:
        return None
    argv = ["knotc", "-c", str(knot.conf_path), "-s", str(knot.socket_path), "-t", "2"]
    try:
        res = subprocess.run(
            [*argv, "stats", "mod-stats.query-type"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    if res.returncode != 0:
        return None
    return {kind: int(count) for kind, count in _TYPE_RE.findall(res.stdout)}


def counted(counts: dict[str, int], types: Sequence[str] = COUNTED_TYPES) -> int:
    return sum(counts.get(t, 0) for t in types)


class KnotCounter:
    """Knot's client queries (SRV + A + AAAA) every ``period`` s from a thread, across restarts.

    A sample is stamped with the midpoint of its ``knotc`` call, on
    ``time.monotonic()``. While Knot is down or starting, ``knotc`` fails and no
    sample is taken. :meth:`restarted` marks a spawn: the new process counts from
    zero there. Queries between the last sample before a stop and the stop itself
    (one ``knotc`` call, ~10 ms) are not seen: take a sample just before stopping.
    """

    def __init__(self, knot: KnotServer, period: float) -> None:
        self.knot = knot
        self.period = period
        self.samples: list[tuple[float, int, int]] = []
        """(time, pid, count); pid 0 marks a restart: a new process counting from zero."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="knot-counter", daemon=True)

    def __enter__(self) -> KnotCounter:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.sample()

    def sample(self) -> None:
        pid = self.knot.pid
        before = time.monotonic()
        counts = type_counts(self.knot)
        after = time.monotonic()
        if counts is None or pid is None or self.knot.pid != pid:
            return
        with self._lock:
            self.samples.append(((before + after) / 2, pid, counted(counts)))

    def restarted(self, when: float) -> None:
        with self._lock:
            self.samples.append((when, 0, 0))

    def _run(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            deadline += self.period
            if self._stop.wait(max(deadline - time.monotonic(), 0.0)):
                break
            self.sample()

    def cumulative(self) -> list[tuple[float, int]]:
        """[(time, queries since the first sample)], stitched across restarts."""
        with self._lock:
            samples = sorted(self.samples)
        points: list[tuple[float, int]] = []
        earlier = last = 0  # queries of the processes before this one; this one's latest count
        base: int | None = None
        pid = None
        for when, sample_pid, count in samples:
            if sample_pid == 0:  # a spawn: the process before it is done, the next counts from 0
                earlier += last - (base or 0)
                base, last, pid = 0, 0, None
                points.append((when, earlier))
                continue
            if pid is not None and sample_pid != pid:  # a new process seen without its spawn
                earlier += last - (base or 0)
                base, last = 0, 0
            if base is None:  # the first process: count from its first sample
                base = count
            pid, last = sample_pid, count
            points.append((when, earlier + count - base))
        return points


# --------------------------------------------------------------------------- series


def spread(values: Sequence[float]) -> dict[str, float | int]:
    """Median, p99 and max of ``values`` (seconds), and how many there were."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
    }


# --------------------------------------------------------------------------- results

RESULTS_JSON = RESULTS_DIR / "outage.json"


@dataclass
class Issue9Results:
    """Everything the issue-9 benchmarks measured in this session; rewritten after each result."""

    path: Path = RESULTS_JSON
    data: dict[str, Any] = field(default_factory=dict)

    def record(self, section: str, value: dict[str, Any]) -> None:
        self.data[section] = value
        self._write()

    def target(self, name: str, met: bool, detail: str) -> None:
        """An issue-9 goal: recorded met or not; ``SRVWATCH_BENCH_ENFORCE_TARGETS=1`` asserts it."""
        self.data.setdefault("targets", {})[name] = {"met": met, "detail": detail}
        self._write()
        print(f"target {name}: {'met' if met else 'NOT MET'} ({detail})")
        if ENFORCE_TARGETS:
            assert met, f"target {name} not met: {detail}"

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1) + "\n")
        self.path.with_suffix(".md").write_text(render_markdown(self.data))


def machine() -> dict[str, Any]:
    """The machine and the code under test, as the watch benchmarks record it, plus git state."""
    info = _machine()
    info.pop("event_loop", None)
    root = Path(__file__).resolve().parent.parent
    # The code under test is src/: the last commit that touched it names it.
    head = subprocess.run(
        ["git", "log", "-1", "--format=%h %s", "--", "src"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    info["commit"] = head[:100]
    info["base"] = base_revision()
    info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


@pytest.fixture(scope="session")
def issue9_results() -> Iterator[Issue9Results]:
    results = Issue9Results(data={"machine": machine()})
    yield results
    if len(results.data) > 1:
        print("\n" + render_markdown(results.data))
