"""Benchmark fixtures: the real DNS servers of the test suite and the event-loop runners.

Run with ``python -m pytest benchmarks/ --benchmark-only -p no:randomly``
(``benchmarks/report.py`` does that and prints the tables).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from benchmarks._harness import Runner, make_runner

# benchmarks._watch: one results collector for every bench_watch_*.py scenario in a session;
# benchmarks._outage: the same for the issue-9 benchmarks (bench_outage, bench_steady_cpu).
pytest_plugins = ["tests.dns_servers", "benchmarks._watch", "benchmarks._outage"]


@pytest.fixture
def runners() -> Iterator[Callable[[str], Runner]]:
    """``runners("asyncio" | "uvloop" | "trio")``: a fresh loop, closed after the test."""
    made: list[Runner] = []

    def make(flavour: str) -> Runner:
        runner = make_runner(flavour)
        made.append(runner)
        return runner

    yield make
    errors = []
    for runner in reversed(made):
        try:
            runner.close()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
