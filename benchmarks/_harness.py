"""Event-loop runners and statistics shared by the benchmarks.

Every peer keeps one long-lived event loop and one long-lived resolver for the
whole benchmark, and each measurement runs a batch of awaits *inside* that
loop, timed with ``perf_counter_ns`` around the batch (or around each call).
Loop start-up, resolver set-up and cross-thread hand-offs are never timed.

asyncio and uvloop loops run in the main thread (``run_until_complete``); trio
cannot be re-entered that way, so its loop runs in a helper thread that the
main thread hands coroutines to (``trio.from_thread.run``) and waits for. Only
one loop is ever busy at a time.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, TypeVar

import trio
import uvloop

T = TypeVar("T")

QUICK = os.environ.get("SRVWATCH_BENCH_QUICK", "") not in ("", "0")
"""``SRVWATCH_BENCH_QUICK=1``: about 10x fewer operations, for CI."""


def scaled(full: int, quick: int | None = None) -> int:
    """``full`` normally; ``quick`` (default: a tenth) under SRVWATCH_BENCH_QUICK=1."""
    if not QUICK:
        return full
    return quick if quick is not None else max(full // 10, 1)


class Runner(Protocol):
    name: str

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T: ...

    def enter(self, factory: Callable[[], AbstractAsyncContextManager[T]]) -> T: ...

    def close(self) -> None: ...


class AsyncioRunner:
    """One asyncio (or uvloop) event loop driven from the main thread."""

    def __init__(self, flavour: str = "asyncio") -> None:
        if flavour not in ("asyncio", "uvloop"):
            raise ValueError(f"unknown asyncio flavour {flavour!r}")
        self.name = flavour
        self.loop: asyncio.AbstractEventLoop = (
            uvloop.new_event_loop() if flavour == "uvloop" else asyncio.new_event_loop()
        )
        self._holders: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        async def call() -> T:
            return await fn(*args)

        return self.loop.run_until_complete(call())

    def enter(self, factory: Callable[[], AbstractAsyncContextManager[T]]) -> T:
        """Enter ``factory()`` in a task that stays parked until close(): task groups
        must be exited by the task that entered them."""

        async def setup() -> T:
            stop = asyncio.Event()
            ready: asyncio.Future[T] = self.loop.create_future()

            async def hold() -> None:
                async with factory() as value:
                    ready.set_result(value)
                    await stop.wait()

            task = self.loop.create_task(hold())
            self._holders.append((stop, task))
            return await ready

        return self.loop.run_until_complete(setup())

    def close(self) -> None:
        async def teardown() -> None:
            for stop, task in reversed(self._holders):
                stop.set()
                await task

        try:
            self.loop.run_until_complete(teardown())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()


class TrioRunner:
    """One trio event loop in a helper thread; the main thread waits while it works."""

    name = "trio"

    def __init__(self) -> None:
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._holders: list[trio.Event] = []
        self._thread = threading.Thread(target=self._main, name="bench-trio", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._started.set()
                await self._stop.wait()
                for stop in reversed(self._holders):
                    stop.set()

        try:
            trio.run(main)
        except BaseException as exc:
            self._error = exc
            self._started.set()

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        async def call() -> T:
            return await fn(*args)

        return trio.from_thread.run(call, trio_token=self._token)

    def enter(self, factory: Callable[[], AbstractAsyncContextManager[T]]) -> T:
        async def hold(stop: trio.Event, *, task_status: Any) -> None:
            async with factory() as value:
                task_status.started(value)
                await stop.wait()

        async def setup() -> T:
            assert self._nursery is not None
            stop = trio.Event()
            self._holders.append(stop)
            value: T = await self._nursery.start(hold, stop)
            return value

        return trio.from_thread.run(setup, trio_token=self._token)

    def close(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            raise RuntimeError("the trio benchmark loop did not stop")
        if self._error is not None:
            raise self._error


def make_runner(flavour: str) -> Runner:
    if flavour == "trio":
        return TrioRunner()
    return AsyncioRunner(flavour)


@asynccontextmanager
async def nothing() -> AsyncIterator[None]:
    yield None


# -- statistics -------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(math.ceil(pct / 100.0 * len(sorted_values)), 1)
    return float(sorted_values[rank - 1])


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2.0


def latency_summary(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50/p90/p99/min/max/mean of per-call latencies, in microseconds."""
    ordered = sorted(samples_ns)
    return {
        "calls": len(ordered),
        "min_us": ordered[0] / 1e3,
        "p50_us": percentile(ordered, 50) / 1e3,
        "p90_us": percentile(ordered, 90) / 1e3,
        "p99_us": percentile(ordered, 99) / 1e3,
        "max_us": ordered[-1] / 1e3,
        "mean_us": sum(ordered) / len(ordered) / 1e3,
    }


def rotated(items: Sequence[T], shift: int) -> list[T]:
    """``items`` starting at ``shift``: each round runs the peers in a different order."""
    if not items:
        return []
    shift %= len(items)
    return [*items[shift:], *items[:shift]]
