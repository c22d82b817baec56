"""Continuous watching: one shared, jittered refresh loop per name, latest-value subscriber streams.

However many subscribers watch a name, one loop refreshes it: the query rate
depends on the TTL and the policy, never on the number of watchers. The loop
refreshes at ``ttl * U(1 - jitter, 1)`` after each answer and backs off with
jitter after failures, so it never spins whatever the server returns.
Subscribers only ever see the newest state: a slow one is never queued
behind, and never slows the loop or the others.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from .endpoints import EndpointSet, Update, changed, diff
from .errors import NoData, NXDomain, ResolveError
from .metrics import Counters
from .policy import Policy

if TYPE_CHECKING:
    from .cache import Clock

__all__ = ["Updates", "WatchLoop"]

log = logging.getLogger(__name__)

Refresh = Callable[[], Awaitable[EndpointSet]]


class WatchLoop:
    """The one refresh loop of a watched (name, type), shared by its subscribers.

    Started by the first subscriber and cancelled when the last one leaves;
    every state change it publishes gets a new ``version``.
    """

    def __init__(
        self,
        name: str,
        refresh: Refresh,
        policy: Policy,
        counters: Counters,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self._refresh = refresh
        self._policy = policy
        self._counters = counters
        self._clock = clock
        self._rng = rng
        self.subscribers: set[Updates] = set()
        self.scope = anyio.CancelScope()
        self.version = 0
        self.current: EndpointSet | None = None
        self.stale = False
        self.error: str | None = None
        self.answered = False
        """Has had an answer from upstream (positive or negative), so it has endpoints to
        serve, fresh or, after later failures, stale: what readiness waits for. A name
        whose lookups have failed from the start is not ready."""
        self.finished = False
        self.failures = 0

    def stop(self) -> None:
        self.scope.cancel()

    async def run(self) -> None:
        self._counters.loops_started += 1
        try:
            with self.scope:
                await self._loop()
        finally:
            self.finished = True
            self._counters.loops_stopped += 1
            for subscriber in list(self.subscribers):
                subscriber.wake()

    async def _loop(self) -> None:
        policy = self._policy
        good_until = -math.inf
        while True:
            try:
                endpoints = await self._refresh()
            except (NXDomain, NoData) as exc:
                # Authoritative emptiness: the only thing that empties a set.
                self.failures = 0
                ttl = exc.ttl if exc.ttl is not None else policy.negative_min_ttl
                self._publish(EndpointSet.build(self.name, (), ttl=ttl), stale=False, error=None)
                good_until = self._clock() + ttl
                delay = policy.refresh_delay(ttl, self._rng)
                self.answered = True
            except Exception as exc:
                # A failed refresh, or a bug: either way the loop backs off and keeps
                # the last endpoints rather than dying (and taking the others with it).
                self.failures += 1
                now = self._clock()
                error = str(exc) or type(exc).__name__
                if isinstance(exc, ResolveError):
                    log.info("watch %s: refresh failed (%d): %s", self.name, self.failures, error)
                else:
                    log.exception("watch %s: unexpected error in refresh", self.name)
                delay = policy.backoff_delay(self.failures)
                current = self.current
                if current is None:
                    self._publish(EndpointSet.build(self.name, (), stale=True), True, error)
                elif now >= good_until + policy.stale_ttl:
                    # Past the stale window (RFC 8767): the old endpoints are dropped.
                    self._publish(EndpointSet.build(self.name, (), stale=True), True, error)
                elif now >= good_until:
                    self._publish(current, stale=True, error=error)
                else:
                    # Still within the TTL: nothing to tell, but look again at expiry.
                    delay = max(min(delay, good_until - now), policy.backoff_base / 2)
            else:
                self.failures = 0
                self._publish(endpoints, stale=False, error=None)
                good_until = self._clock() + endpoints.ttl
                delay = policy.refresh_delay(endpoints.ttl, self._rng, first=not self.answered)
                self.answered = True
            await anyio.sleep(delay)

    def _publish(self, endpoints: EndpointSet, stale: bool, error: str | None) -> None:
        endpoints = endpoints.with_stale(stale)
        if self.current is not None and not changed(self.current, endpoints):
            self.current = endpoints  # keep the newest TTL without telling anyone
            return
        self.version += 1
        self.current = endpoints
        self.stale = stale
        self.error = error
        self._counters.updates_emitted += 1
        for subscriber in self.subscribers:
            subscriber.wake()


class Updates:
    """An async iterator of :class:`Update` for one subscriber.

    Latest-value semantics: if the subscriber reads slowly it skips straight
    to the newest state, with ``added``/``removed`` computed against what it
    saw last, so nothing queues up and nothing is missed that matters.
    """

    def __init__(self, loop: WatchLoop) -> None:
        self._loop = loop
        self._event = anyio.Event()
        self._seen: EndpointSet | None = None
        self._seen_version = 0
        self.closed = False

    @property
    def name(self) -> str:
        return self._loop.name

    def wake(self) -> None:
        self._event.set()

    def latest(self) -> Update | None:
        """The newest state without waiting (None before the first answer)."""
        loop = self._loop
        if loop.current is None:
            return None
        added, removed = diff(self._seen, loop.current)
        return Update(
            name=loop.name,
            endpoints=loop.current,
            added=added,
            removed=removed,
            stale=loop.stale,
            error=loop.error,
            version=loop.version,
        )

    def __aiter__(self) -> Updates:
        return self

    async def __anext__(self) -> Update:
        while True:
            if self.closed:
                raise StopAsyncIteration
            loop = self._loop
            if loop.version > self._seen_version and loop.current is not None:
                update = self.latest()
                assert update is not None
                self._seen = loop.current
                self._seen_version = loop.version
                return update
            if loop.finished:
                raise StopAsyncIteration
            await self._event.wait()
            self._event = anyio.Event()
