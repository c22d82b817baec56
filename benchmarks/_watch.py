"""What the continuous-watching benchmarks (``bench_watch_*.py``) share.

A pytest plugin (registered in ``benchmarks/conftest.py``) so that one session
collects every scenario's results in one :class:`Results`, whichever of the
scenario files run: they go to ``benchmarks/results/watch.json`` and, rendered
by :mod:`benchmarks._watch_report`, to ``watch.md``. Also the Knot server the
storm, fleet and soak scenarios count queries at, and the checks two scenarios
share.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.dns_servers import KnotFactory, KnotServer
from tests.zones import ZERO_A, ZERO_PORT, ZERO_SRV

import srvwatch
from benchmarks._harness import QUICK
from benchmarks._watch_report import render_markdown

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
ENFORCE_TARGETS = os.environ.get("SRVWATCH_BENCH_ENFORCE_TARGETS", "") not in ("", "0")


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    knot = subprocess.run(["knotd", "--version"], capture_output=True, text=True, check=False)
    versions = {}
    for dist in ("srvwatch", "dnspython", "anyio"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "knotd": (knot.stdout or knot.stderr).strip().splitlines()[0] if knot.stdout else "?",
        "versions": versions,
        "quick": QUICK,
        "event_loop": "asyncio",
        "command": " ".join(["python -m pytest", *sys.argv[1:]]),
    }


@dataclass
class Results:
    """Everything measured in this session; rewritten to disk after every result and target.

    Targets are written too: the scenario that runs last may record one after its results
    (once the scenarios were split, the storm's targets came last and never reached disk).
    """

    data: dict[str, Any] = field(default_factory=dict)

    def record(self, section: str, value: dict[str, Any]) -> None:
        self.data[section] = value
        self._write()

    def target(self, name: str, met: bool, detail: str) -> None:
        self.data.setdefault("targets", {})[name] = {"met": met, "detail": detail}
        self._write()
        flag = "met" if met else "NOT MET"
        print(f"target {name}: {flag} ({detail})")

    def _write(self) -> None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / "watch.json").write_text(json.dumps(self.data, indent=1) + "\n")
        (RESULTS_DIR / "watch.md").write_text(render_markdown(self.data))


@pytest.fixture(scope="session")
def watch_results() -> Iterator[Results]:
    results = Results({"machine": _machine()})
    yield results
    if len(results.data) > 1:
        print("\n" + render_markdown(results.data))


@pytest.fixture(scope="module")
def watch_knot(knot_factory: KnotFactory) -> Iterator[KnotServer]:
    """A Knot of our own (svc.test. zone, with the TTL-0 ``_zero`` SRV name): the storms
    must not land on the shared server, and nobody else's queries may land in our counts."""
    server = knot_factory()
    yield server
    server.stop()


def check_target(results: Results, name: str, met: bool, detail: str) -> None:
    results.target(name, met, detail)
    if ENFORCE_TARGETS:
        assert met, f"target {name} not met: {detail}"


def check_zero_endpoints(update: srvwatch.Update) -> None:
    """The ``_zero`` SRV name's update carries exactly its endpoints, fresh and error-free."""
    got = sorted((ep.target, ep.port, ep.addresses) for ep in update.endpoints)
    want = sorted((t, ZERO_PORT, (a,)) for t, a in ZERO_A.items())
    assert got == want, f"unexpected endpoints for {ZERO_SRV}: {got}"
    assert not update.stale, update
    assert update.error is None, update


def srvwatch_bounds(policy: srvwatch.Policy, seconds: float) -> tuple[int, int]:
    """(min, max) refreshes of one loop in ``seconds`` against a TTL-0 name.

    One query at once, the first refresh at ``min_ttl * U(0, 1]`` (it spreads
    clients started together), then one every ``min_ttl * U(1 - jitter, 1)``;
    the lower bound allows for the last refresh landing just after the deadline.
    """
    first_refresh = 1 if policy.jitter else 0
    most = 1 + first_refresh + math.floor(seconds / (policy.min_ttl * (1 - policy.jitter)))
    least = max(1, math.floor(seconds / policy.min_ttl))
    return least, most


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
