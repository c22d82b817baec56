"""Singleflight: concurrent callers of one key share one lookup in flight.

The first caller runs the lookup in its own task, so a cold lookup costs no
task switch. A caller that is cancelled stops waiting but never cancels the
lookup for the others: if the first caller is cancelled while others wait,
the lookup is handed to a task of the owner (and the transport hands over
the query already on the wire, so it is not sent twice).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from .errors import ResolveError
from .metrics import Counters

__all__ = ["Singleflight", "clone_error"]

T = TypeVar("T")
Spawn = Callable[..., None]
"""``spawn(func, *args)``: start ``func(*args)`` in a task its owner cancels on close."""
CheckOpen = Callable[[], None]
"""Raises ``RuntimeError`` when the owner cannot run lookups (closed, or never entered)."""


class _Flight:
    """One lookup in progress, shared by every caller that wants it."""

    __slots__ = ("done", "error", "result", "waiters")

    def __init__(self) -> None:
        self.done: anyio.Event | None = None  # made when a second caller waits
        self.result: Any = None
        self.error: BaseException | None = None
        self.waiters = 0


class Singleflight:
    """At most one ``work()`` in flight per key; the callers of a key share its outcome."""

    def __init__(self, counters: Counters, spawn: Spawn, check_open: CheckOpen) -> None:
        self._counters = counters
        self._spawn = spawn
        self._check_open = check_open
        self._flights: dict[object, _Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: object, work: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await work(*args)``, or the outcome of the one already in flight for ``key``."""
        self._check_open()
        flight = self._flights.get(key)
        if flight is not None:
            self._counters.coalesced += 1
            flight.waiters += 1
            if flight.done is None:
                flight.done = anyio.Event()
            try:
                await flight.done.wait()
            finally:
                flight.waiters -= 1
            if flight.error is not None:
                raise clone_error(flight.error)
            result: T = flight.result
            return result
        flight = _Flight()
        self._flights[key] = flight
        self._counters.flights_started += 1
        try:
            result = await work(*args)
        except anyio.get_cancelled_exc_class():
            if flight.waiters and self._is_open():
                self._counters.handoffs += 1
                self._spawn(self._finish_for_others, key, flight, work, args)
            else:
                self._finish(key, flight, None, ResolveError("the lookup was cancelled"))
            raise
        except BaseException as exc:
            self._finish(key, flight, None, exc)
            raise
        self._finish(key, flight, result, None)
        return result

    def _is_open(self) -> bool:
        try:
            self._check_open()
        except RuntimeError:
            return False
        return True

    async def _finish_for_others(
        self,
        key: object,
        flight: _Flight,
        work: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
    ) -> None:
        """Run a flight whose first caller was cancelled, for the callers still waiting."""
        try:
            result = await work(*args)
        except Exception as exc:
            self._finish(key, flight, None, exc)
        except BaseException:
            closed = ResolveError("the Resolver was closed during the lookup")
            self._finish(key, flight, None, closed)
            raise
        else:
            self._finish(key, flight, result, None)

    def _finish(
        self, key: object, flight: _Flight, result: Any, error: BaseException | None
    ) -> None:
        flight.result = result
        # A DNS error is kept as a copy without traceback: the raised one's traceback holds
        # the frame that holds this flight, a reference cycle per failed lookup.
        flight.error = clone_error(error) if isinstance(error, ResolveError) else error
        if self._flights.get(key) is flight:
            del self._flights[key]
        self._counters.flights_finished += 1
        if flight.done is not None:
            flight.done.set()


def clone_error(error: BaseException) -> BaseException:
    """A fresh copy of a shared error, so tracebacks never pile up on one instance."""
    if isinstance(error, ResolveError):
        return type(error)(str(error), name=error.name, rdtype=error.rdtype, ttl=error.ttl)
    return error
