"""Continuous watching: one shared, jittered refresh loop per name, latest-value subscriber streams.

However many subscribers watch a name, one loop refreshes it: the query rate
depends on the TTL and the policy, never on the number of watchers. What to
publish and when to look again is decided by :class:`WatchState`, pure and
clock-injected, so stale windows and backoff are tested on a fake clock; the
loop only runs refreshes, feeds their outcome to the state and sleeps.
Subscribers only ever see the newest state: a slow one is never queued
behind, and never slows the loop or the others.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, Protocol

import anyio
import anyio.lowlevel

from .cache import Clock
from .endpoints import EndpointSet, Update, changed, diff
from .errors import NoData, NXDomain, ResolveError
from .health import Health
from .metrics import Counters
from .policy import Policy
from .reply import Reply

__all__ = ["Quiet", "Step", "Ticker", "Updates", "WatchLoop", "WatchState", "Watches"]

log = logging.getLogger(__name__)

Refresh = Callable[[], Awaitable[EndpointSet]]
_STALE_TICK = 0.05
"""The stale timer wakes at most this often: a flag comes up to this late, and thousands of
refreshes a second re-arm deadlines without one wake-up each."""
_LATER_TICKS = 5
"""What is filed with ``Ticker.later`` comes due every this many ticks (50 ms): in batches."""
_BURST = 64
"""Questions sent at once by one tick's batch; the rest go a tick (10 ms) later. A server's
socket buffer then meets at most this many datagrams at once, however many watches are due
together: with targets to refresh, 10,000 watches sent about 185 every 50 ms, and a datagram
a full buffer drops is a timeout that marks the server down."""
_STALL_TICKS = 3
"""A wake-up this many ticks late means the process stalled: the ticker catches up gradually."""
_CATCH_UP = 1.5
"""After a stall, the ticker releases the ticks it missed at this many times the real rate."""
Spawn = Callable[..., None]
Settle = Callable[[Reply | None], bool]
SendBatch = Callable[[list[tuple[str, int, Settle]]], list[Settle]]
"""Sends asks together; returns those it could not send (see ``SocketTransport.send_batch``)."""


class Due(Protocol):
    """Something filed with :meth:`Ticker.later`: skipped if it has finished by its time."""

    @property
    def finished(self) -> bool: ...


OnDue = Callable[[list[Any], bool], None]
"""Takes what came due in a tick; the flag: the ticker ends, hand it all back."""


class Step(NamedTuple):
    """What one refresh outcome means: do subscribers hear of it, and when to ask again."""

    changed: bool
    delay: float


def _empty(name: str, ttl: float = 0.0) -> EndpointSet:
    """An empty set for a canonical name, without re-validating it (any name the wire gives)."""
    return EndpointSet.from_wire(name, (), ttl=ttl)


class WatchState:
    """The published state of one watched name, and the rules that move it. No I/O, no clock.

    Only an authoritative negative answer empties the set. A failure keeps
    the last endpoints: silently while their TTL lasts, then flagged stale,
    and past the stale window (RFC 8767) they are dropped. Every change a
    subscriber would care about gets a new ``version``.
    """

    def __init__(self, name: str, policy: Policy) -> None:
        self.name = name
        self.policy = policy
        self.version = 0
        self.current: EndpointSet | None = None
        self.stale = False
        self.error: str | None = None
        self.answered = False
        """Has had an answer from upstream (positive or negative), so it has endpoints to
        serve, fresh or, after later failures, stale: what readiness waits for."""
        self.failures = 0
        self.good_until = -math.inf

    def on_answer(self, endpoints: EndpointSet, now: float) -> Step:
        first = not self.answered
        self.failures = 0
        self.answered = True
        self.good_until = now + endpoints.ttl
        changed = self._publish(endpoints, stale=False, error=None)
        return Step(changed, self.policy.refresh_delay(endpoints.ttl, first=first))

    def on_negative(self, ttl: float | None, now: float, name: str = "") -> Step:
        """NXDOMAIN or NODATA: authoritative emptiness, the only thing that empties a set.

        ``name`` is the absolute name that answered (after the search list).
        """
        ttl = ttl if ttl is not None else self.policy.negative_min_ttl
        self.failures = 0
        self.answered = True
        self.good_until = now + ttl
        changed = self._publish(_empty(name or self.name, ttl), stale=False, error=None)
        return Step(changed, self.policy.refresh_delay(ttl))

    def on_failure(self, error: str, now: float) -> Step:
        """A failed refresh: back off, keep the endpoints, say stale once they have expired."""
        policy = self.policy
        self.failures += 1
        delay = policy.backoff_delay(self.failures)
        current = self.current
        if current is None or now >= self.good_until + policy.stale_ttl:
            # Nothing yet, or past the stale window: the old endpoints are dropped.
            return Step(self._publish(_empty(self.name), stale=True, error=error), delay)
        if now >= self.good_until:
            return Step(self._publish(current, stale=True, error=error), delay)
        # Still within the TTL: nothing to tell, but look again at expiry.
        return Step(False, max(min(delay, self.good_until - now), policy.backoff_base / 2))

    def overdue(self, now: float) -> bool:
        """Data expired ``stale_after`` ago with no answer since: time to say stale (RFC 8767)."""
        return (
            self.current is not None
            and not self.stale
            and now >= self.good_until + self.policy.stale_after
        )

    def on_overdue(self, now: float) -> bool:
        """Flag the endpoints stale while a refresh is still out: once per outage."""
        if not self.overdue(now):
            return False
        assert self.current is not None
        error = f"no answer within {self.policy.stale_after:g}s after the data expired"
        if now >= self.good_until + self.policy.stale_ttl:
            return self._publish(_empty(self.name), stale=True, error=error)
        return self._publish(self.current, stale=True, error=error)

    def _publish(self, endpoints: EndpointSet, stale: bool, error: str | None) -> bool:
        endpoints = endpoints.with_stale(stale)
        current = self.current
        if current is not None and not changed(current, endpoints):
            # Keep the newest TTL without telling anyone, on the endpoints already held:
            # nothing new is kept for the garbage collector until the next refresh.
            self.current = current.with_ttl(endpoints.ttl, stale)
            return False
        self.version += 1
        self.current = endpoints
        self.stale = stale
        self.error = error
        return True


class Quiet(Protocol):
    """A watch's refresh that can be settled from an unchanged reply, without its loop's task.

    Given by the resolver for the watches it can refresh so (an SRV name
    with nothing to walk in a search list); see :meth:`Watches.send_due`.
    """

    def questions(self) -> list[tuple[str, int]] | None:
        """The (name, type) questions a refresh asks now, or None for the usual path."""
        ...

    def settle(self, replies: list[Reply]) -> EndpointSet | None:
        """The refreshed set from the replies to :meth:`questions`, each unchanged but for
        its ID and TTLs; None: they cannot be settled so, and the loop takes over."""
        ...


class WatchLoop:
    """The one refresh loop of a watched (name, type), shared by its subscribers.

    Started by the first subscriber and cancelled when the last one leaves.
    An unexpected error (a bug, not a DNS failure) backs off like a failure:
    it never ends the loop, another watch or the resolver.
    """

    def __init__(
        self,
        name: str,
        refresh: Refresh,
        policy: Policy,
        counters: Counters,
        clock: Clock,
        watches: Watches | None = None,
        on_stop: Callable[[], None] | None = None,
        quiet: Quiet | None = None,
    ) -> None:
        self.state = WatchState(name, policy)
        self._refresh = refresh
        self.quiet = quiet
        self._handback: anyio.Event | None = None
        """Set while the registry carries this loop's refreshes; set to take them back."""
        self._gathering: _Gathering | None = None
        """The batched refresh of several questions whose replies are coming in."""
        self._on_stop = on_stop
        self._counters = counters
        self._clock = clock
        self._watches = watches
        self.subscribers: set[Updates] = set()
        self.scope = anyio.CancelScope()
        self.finished = False
        self.stale_due = math.inf
        """When the stale timer looks at this loop next (see :meth:`Watches.expect_answer_by`)."""
        self.stale_tick: int | None = None
        """The stale timer's bucket this loop is filed in, if any."""

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def answered(self) -> bool:
        return self.state.answered

    def __repr__(self) -> str:
        state = self.state
        return (
            f"<WatchLoop {state.name} v{state.version} subscribers={len(self.subscribers)}"
            f"{' stale' if state.stale else ''}{' finished' if self.finished else ''}>"
        )

    def stop(self) -> None:
        """Cancel the loop, and run ``on_stop`` now: what it releases (the store's pins)
        is released when the last watcher leaves, not when the loop's task next runs.
        ``run`` runs it again as it ends, for anything a refresh took meanwhile."""
        self.scope.cancel()
        if self._on_stop is not None:
            self._on_stop()

    async def run(self) -> None:
        self._counters.loops_started += 1
        try:
            with self.scope:
                watches = self._watches
                state, health = self.state, watches.health if watches is not None else None
                sleep = watches.ticker.sleep if watches is not None else anyio.sleep
                carry = watches is not None and watches.carries and self.quiet is not None
                while True:
                    delay = await self._next()
                    if carry and not state.failures:
                        await self._carried(delay)
                    elif health is None or not state.failures or health.any_up:
                        await sleep(delay)
                    else:
                        await self._wait_for_upstream(health, delay)
        finally:
            self.finished = True
            self._counters.loops_stopped += 1
            if self._watches is not None and self._watches.health is not None:
                self._watches.health.resign(self)
            if self._on_stop is not None:
                self._on_stop()
            for subscriber in list(self.subscribers):
                subscriber.wake()

    def _carried(self, delay: float) -> Awaitable[None]:
        """Let the registry run this loop's refreshes from ``delay`` on, while nothing changes.

        The task waits, for as long as refreshes come back unchanged, on one
        event set when a refresh needs it: a changed reply, a failure, or
        targets to ask. It then refreshes at once, the usual way.
        """
        assert self._watches is not None
        event = self._handback = anyio.Event()
        self._watches.ticker.later(delay, self)
        return event.wait()

    @property
    def carried(self) -> bool:
        """The registry runs this loop's refreshes (its task is waiting for them back)."""
        return self._handback is not None and not self.finished and not self.scope.cancel_called

    def hand_back(self) -> None:
        """Wake the task to refresh the usual way now."""
        self._gathering = None
        event, self._handback = self._handback, None
        if event is not None:
            event.set()

    def settle(self, reply: Reply | None) -> bool:
        """A batched refresh's outcome: published like the task's own, or handed back to it.

        Whether the reply was used: one that was not answers the task's own refresh.
        """
        if not self.carried:
            return False
        if reply is None:
            self.hand_back()
            return False
        return self.settle_all([reply])

    def settle_all(self, replies: list[Reply]) -> bool:
        """Settle a batched refresh from the replies to all its questions; whether it could."""
        assert self.quiet is not None
        assert self._watches is not None
        try:
            result = self.quiet.settle(replies)
        except Exception:
            log.exception("watch %s: cannot settle a batched refresh", self.state.name)
            result = None
        if result is None:
            self.hand_back()
            return False
        self._counters.batched_refreshes += 1
        self._watches.ticker.later(self._after(result), self)
        return True

    def _step_outcome(self, outcome: EndpointSet | BaseException) -> Step:
        state, now = self.state, self._clock()
        if isinstance(outcome, EndpointSet):
            return state.on_answer(outcome, now)
        if isinstance(outcome, (NXDomain, NoData)):
            return state.on_negative(outcome.ttl, now, outcome.name)
        error = str(outcome) or type(outcome).__name__
        if isinstance(outcome, ResolveError):
            log.info("watch %s: refresh failed (%d): %s", state.name, state.failures + 1, error)
        else:
            log.error("watch %s: unexpected error in refresh", state.name, exc_info=outcome)
        return state.on_failure(error, now)

    async def _wait_for_upstream(self, health: Health, delay: float) -> None:
        """Every upstream is down: wait for the recovery instead of the next refresh.

        A loop does not poll a dead upstream: one waiting loop carries the
        probes, the others wait (see :meth:`Health.wait_turn`) until an
        upstream answers, until their data expires (the refresh then fails
        at once and flags it stale, as before), or until their endpoints
        leave the stale window and must be dropped. A recovery
        releases the waiting loops a slice at a time over one floor, each
        refreshing when released: spread out, instead of all at once.
        """
        state = self.state
        limit = math.inf
        if state.current is not None and state.current.endpoints:
            now = self._clock()
            if not state.stale and now < state.good_until:
                # Still fresh: look again at expiry, as a failing loop did, so the stale
                # flag comes then (one fast failure per name per outage), not later.
                limit = state.good_until - now
            else:
                limit = max(state.good_until + state.policy.stale_ttl - now, delay)
        await health.wait_turn(self, limit)

    def publish_overdue(self, now: float) -> float | None:
        """Called by the registry's stale timer: say stale now if the answer is overdue.

        Not while the upstream is answering others since this name's data
        expired: then the refresh is only late (queued behind others, or the
        process busy), and a stale flag would flap off with its answer. The
        returned time is when to look again; the refresh's own failure says
        stale at once if it fails.
        """
        state = self.state
        if not state.overdue(now):
            return None
        health = self._watches.health if self._watches is not None else None
        if health is not None and health.answered_since(state.good_until):
            return now + state.policy.stale_after
        if state.on_overdue(now):
            self._notify()
        return None

    def _notify(self) -> None:
        self._counters.updates_emitted += 1
        for subscriber in self.subscribers:
            subscriber.wake()

    async def _next(self) -> float:
        """One refresh, its outcome published; returns how long to sleep before the next."""
        try:
            outcome: EndpointSet | BaseException = await self._refresh()
        except ResolveError as exc:
            # Without its traceback, whose frames include this one: no reference cycle
            # (and no work for the cyclic GC) per failed refresh.
            outcome = exc.with_traceback(None)
        except Exception as exc:
            # A loop woken just before its resolver closed runs until its next checkpoint and
            # finds the resolver closed: that is the close, not a bug; let it end the loop.
            await anyio.lowlevel.checkpoint_if_cancelled()
            outcome = exc
        return self._after(outcome)

    def _after(self, outcome: EndpointSet | BaseException) -> float:
        """Publish a refresh's outcome and arm the stale timer; the delay to the next refresh."""
        try:
            step = self._step_outcome(outcome)
        except Exception:
            log.exception("watch %s: cannot publish an update", self.state.name)
            self.state.failures += 1
            return self.state.policy.backoff_delay(self.state.failures)
        if step.changed:
            self._notify()
        if self._watches is not None and not self.state.failures:
            self._watches.expect_answer_by(self, self.state.good_until)
        return step.delay


class _Gathering:
    """The replies to one batched refresh of several questions (an SRV set and targets to
    refresh), settled together once the last one is in."""

    __slots__ = ("left", "loop", "replies")

    def __init__(self, loop: WatchLoop, questions: int) -> None:
        self.loop = loop
        self.replies: list[Any] = [None] * questions
        self.left = questions

    def settler(self, i: int) -> Settle:
        return lambda reply: self.settle(i, reply)

    def settle(self, i: int, reply: Reply | None) -> bool:
        """Keep reply ``i``; settle the refresh when it is the last. A reply that comes in
        before the last is not used yet, so it is kept for the question's next query too:
        if the refresh is handed back, the loop's own lookups take it, and nothing is asked
        twice."""
        loop = self.loop
        if loop._gathering is not self or not loop.carried:
            return False
        if reply is None:
            loop.hand_back()
            return False
        self.replies[i] = reply
        self.left -= 1
        if self.left:
            return False
        loop._gathering = None
        return loop.settle_all(self.replies)


class Ticker:
    """Shared wake-ups for sleeping watch loops: loops due in the same tick wait on one event.

    Each of 10,000 loops sleeping on a timer of its own costs the event loop a
    timer, a future and a timer-heap entry per refresh (asyncio compares its
    timers in Python), and leaves them to the garbage collector for the whole
    sleep. Grouped by tick, loops wait on one event per tick, and one task
    sleeps until the next tick that has waiters. Times are the event loop's
    (``anyio.current_time``), like ``anyio.sleep``: a loop wakes at most one
    tick late, which no refresh schedule (jittered by seconds) notices.
    """

    def __init__(self, spawn: Spawn, tick: float = 0.01, on_due: OnDue | None = None) -> None:
        self._spawn = spawn
        self._tick = tick
        self._on_due = on_due
        self._events: dict[int, anyio.Event] = {}
        """Tick -> the event its sleepers wait on."""
        self._due: dict[int, list[Due]] = {}
        """Tick -> what was filed with :meth:`later` for it."""
        self._filed = 0
        """Items in ``_due``."""
        self._ticks: list[int] = []
        self._running = False
        self._wake: anyio.CancelScope | None = None
        """Cancelled to wake the sleeping runner early (a tick sooner than it sleeps to)."""
        self._sleeping_until = math.inf
        self._stopped = 0

    def sleep(self, delay: float) -> Awaitable[None]:
        """Sleep ``delay`` seconds (up to one tick more); a checkpoint, cancellable as any.

        Not a coroutine of its own: it returns the tick's ``Event.wait()``, so a
        sleeping loop holds no frame of ours for its whole sleep (at 10,000
        watches, one more object per refresh promoted to the GC's oldest
        generation). A sleeper that is cancelled leaves the event's waiters;
        ticks left with none are dropped by :meth:`sleeper_stopped`.
        """
        tick = math.ceil((anyio.current_time() + max(delay, 0.0)) / self._tick)
        event = self._events.get(tick)
        if event is None:
            event = self._events[tick] = anyio.Event()
            if tick not in self._due:
                self._new_tick(tick)
        return event.wait()

    def later(self, delay: float, item: Due, *, grouped: bool = True) -> None:
        """Hand ``item`` to ``on_due`` in ``delay`` seconds, with everything else due then.

        No task waits: what comes due together is handled in one call (a
        batch of refreshes sent together), on the same schedule as sleepers,
        catch-up after a stall included. Items are grouped every
        ``_LATER_TICKS`` ticks, so batches are larger and fewer: each costs a
        socket, a task and a wait for its replies (10,000 watches: 7.6-8.9% of
        a core on uvloop at 50 ms, 9.9-13.8% at 10 ms). An item that has
        finished by then is skipped.
        """
        when = anyio.current_time() + max(delay, 0.0)
        if grouped:
            tick = math.ceil(when / (self._tick * _LATER_TICKS)) * _LATER_TICKS
        else:  # the first tick after ``when``: a batch's overflow
            tick = math.floor(when / self._tick) + 1
        due = self._due.get(tick)
        if due is None:
            due = self._due[tick] = []
            if tick not in self._events:
                self._new_tick(tick)
        due.append(item)
        self._filed += 1

    def _new_tick(self, tick: int) -> None:
        heapq.heappush(self._ticks, tick)
        if not self._running:
            self._running = True
            self._spawn(self._run)
        elif self._wake is not None and tick * self._tick < self._sleeping_until:
            self._wake.cancel()

    def sleeper_stopped(self) -> None:
        """A task that may have been sleeping here ended (a watch closed mid-sleep).

        Ticks nobody waits for any more, and items that have finished, are
        dropped once such ends could be half of what is held: amortized O(1) per
        stop, and with long TTLs and watches opened and closed at a high rate,
        nothing is held for minutes until its tick comes.
        """
        self._stopped += 1
        events = self._events
        if self._stopped * 2 < len(events) + self._filed:
            return
        self._stopped = 0
        for tick in [t for t, event in events.items() if not event.statistics().tasks_waiting]:
            del events[tick]
        due = self._due
        for tick, items in list(due.items()):
            kept = [item for item in items if not item.finished]
            self._filed -= len(items) - len(kept)
            if kept:
                due[tick] = kept
            else:
                del due[tick]
        if len(self._ticks) > 2 * (len(events) + len(due)) + 64:  # mostly dropped ticks
            self._ticks[:] = list(events.keys() | due.keys())
            heapq.heapify(self._ticks)

    def _release_until(self, limit: float) -> bool:
        """Set the events of the ticks due by ``limit``; whether any had a sleeper."""
        ticks, events, due, size = self._ticks, self._events, self._due, self._tick
        released = False
        items: list[Due] = []
        while ticks and ticks[0] * size <= limit:
            tick = heapq.heappop(ticks)
            event = events.pop(tick, None)
            if event is not None:  # None: dropped, its sleepers all gone
                event.set()
                released = True
            filed = due.pop(tick, None)
            if filed:
                self._filed -= len(filed)
                items += filed
                released = True
        if items and self._on_due is not None:
            self._on_due(items, False)
        return released

    async def _run(self) -> None:
        """Set each tick's event when its time comes; after a stall, catch up gradually.

        Woken late (a long GC pause, a blocking call, a CPU quota throttling
        the container), the ticks due during the stall are released at
        ``_CATCH_UP`` times the real rate, not at once: a 0.8 s pause at
        10,000 watches released 1,700 refreshes together, twice the steady
        rate at the server for a second. They go out late by at most about
        twice the stall, well within the refresh jitter. Empty time is
        skipped: each wake-up releases at least the next tick that has
        sleepers, so a few loops catch up at once and the upstream is heard
        from at once (the stale timer, late too, waits for that).
        """
        ticks, size = self._ticks, self._tick
        now = anyio.current_time()
        last = intended = now
        cursor: float | None = None
        """While catching up: ticks up to here are released; None when not behind."""
        try:
            while ticks:
                now = anyio.current_time()
                if cursor is not None:
                    # Real time since the last wake, any new stall left out.
                    cursor += min(now - last, intended - last + size) * _CATCH_UP
                elif now - intended > _STALL_TICKS * size:
                    cursor = intended + size  # the stall: from what was due when it began
                if cursor is not None and cursor >= now:
                    cursor = None
                if cursor is None:
                    self._release_until(now)
                elif not self._release_until(cursor) and ticks and ticks[0] * size <= now:
                    cursor = ticks[0] * size  # nothing up to the cursor: skip ahead
                    self._release_until(cursor)
                last = now
                if not ticks:
                    break
                intended = ticks[0] * size if cursor is None else now + size
                if intended - now <= size:
                    # The next tick (a busy schedule): nothing can come due sooner, so a
                    # plain sleep, without even a cancel scope to enter and leave.
                    await anyio.sleep(intended - now)
                    continue
                self._sleeping_until = intended
                # A timer, woken early by cancelling the scope: not an event waited on under
                # a deadline. A deadline that passes is a cancellation, an exception raised
                # and caught on every wake-up, and on uvloop, whose timers fire up to a
                # millisecond early, its timer re-arms itself about a hundred times first
                # (measured: 112,000 early firings for 1,050 deadlines).
                with anyio.CancelScope() as self._wake:
                    await anyio.sleep(intended - now)
                self._wake = None
                self._sleeping_until = math.inf
        finally:
            self._running = False
            self._wake = None
            self._sleeping_until = math.inf
            events = self._events
            for event in events.values():  # the owner is closing: let no sleeper hang
                event.set()
            events.clear()
            due = [item for items in self._due.values() for item in items]
            self._due.clear()
            self._filed = 0
            ticks.clear()
            if due and self._on_due is not None:
                self._on_due(due, True)


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
        state = self._loop.state
        if state.current is None:
            return None
        added, removed = diff(self._seen, state.current)
        return Update(
            name=state.name,
            endpoints=state.current,
            added=added,
            removed=removed,
            stale=state.stale,
            error=state.error,
            version=state.version,
        )

    def __aiter__(self) -> Updates:
        return self

    async def __anext__(self) -> Update:
        while True:
            if self.closed:
                raise StopAsyncIteration
            state = self._loop.state
            if state.version > self._seen_version and state.current is not None:
                update = self.latest()
                assert update is not None
                self._seen = state.current
                self._seen_version = state.version
                return update
            if self._loop.finished:
                raise StopAsyncIteration
            await self._event.wait()
            self._event = anyio.Event()


class Watches:
    """The watch loops: one per key, started by the first subscriber, stopped by the last."""

    def __init__(
        self,
        policy: Policy,
        counters: Counters,
        clock: Clock,
        spawn: Spawn,
        health: Health | None = None,
        send_batch: SendBatch | None = None,
    ) -> None:
        self._policy = policy
        self._send_batch = send_batch
        self._counters = counters
        self._clock = clock
        self._spawn = spawn
        self.health = health
        self._loops: dict[Hashable, WatchLoop] = {}
        self._buckets: dict[int, list[WatchLoop]] = {}
        """The stale timer's buckets: tick -> loops filed to be looked at then."""
        self._bucket_ticks: list[int] = []
        """The buckets' ticks, a heap."""
        self._filed = 0
        self._void = 0
        """Slots in the buckets, and those of them void (the loop stopped or was filed earlier)."""
        self._timer_running = False
        self.ticker = Ticker(spawn, on_due=self.send_due)
        self._timer_wake: anyio.CancelScope | None = None
        self._timer_until = math.inf

    @property
    def carries(self) -> bool:
        """Refreshes of loops with a :class:`Quiet` side are sent in batches (see send_due)."""
        return self._send_batch is not None

    def send_due(self, loops: list[Any], closing: bool = False) -> None:
        """:meth:`_send_due`; a bug in it hands every loop back, or they would wait forever."""
        try:
            self._send_due(loops, closing)
        except Exception:
            log.exception("cannot send a batch of refreshes; their loops refresh themselves")
            for loop in loops:
                loop.hand_back()

    def _send_due(self, loops: list[Any], closing: bool) -> None:
        """Send the refreshes of the carried loops due in one tick together.

        A loop whose refresh cannot go so (nothing to reuse yet, or the batch
        cannot be sent) is handed back to its task. At most ``_BURST``
        questions go out at once; the loops past them go at the next tick, so
        a server's socket buffer never meets more than a burst of datagrams.
        """
        asks: list[tuple[str, int, Settle]] = []
        ticker = self.ticker
        for loop in loops:
            assert isinstance(loop, WatchLoop)
            if not loop.carried:
                continue
            if len(asks) >= _BURST and not closing:
                ticker.later(0.0, loop, grouped=False)  # the next tick
                continue
            questions = None
            if not closing:
                assert loop.quiet is not None
                try:
                    questions = loop.quiet.questions()
                except Exception:
                    log.exception("watch %s: cannot batch a refresh", loop.name)
            if not questions:
                loop.hand_back()
            elif len(questions) == 1:
                asks.append((questions[0][0], questions[0][1], loop.settle))
            else:
                gathering = loop._gathering = _Gathering(loop, len(questions))
                for i, (qname, qtype) in enumerate(questions):
                    asks.append((qname, qtype, gathering.settler(i)))
        if asks:
            assert self._send_batch is not None
            for settle in self._send_batch(asks):
                settle(None)

    def use_policy(self, policy: Policy) -> None:
        """Follow a new policy from each loop's next decision on (a sidecar reload)."""
        self._policy = policy
        for loop in self._loops.values():
            loop.state.policy = policy

    def expect_answer_by(self, loop: WatchLoop, good_until: float) -> None:
        """Arm the stale timer: ``loop`` says stale if nothing answers by expiry + stale_after.

        One timer task for every loop, on a heap: the stale flag comes after
        ``stale_after`` whatever the refresh is waiting on (a slow upstream,
        a queue of lookups), never only after the whole lookup lifetime.
        Loops are filed in buckets of ``_STALE_TICK``, one slot per loop: a
        refresh that moves the deadline later only writes ``stale_due``, and
        the timer re-files the loop when its bucket comes up. A refresh costs
        no heap operation and allocates nothing, where a heap entry per refresh
        lived (for the cyclic GC) until its deadline.
        """
        self._arm(good_until + self._policy.stale_after, loop)

    def _arm(self, due: float, loop: WatchLoop) -> None:
        loop.stale_due = due
        tick = math.ceil(due / _STALE_TICK)
        filed = loop.stale_tick
        if filed is not None:
            if filed <= tick:
                return  # moved later: re-filed when its bucket comes up
            self._void += 1  # an earlier deadline (a shorter TTL): the old slot is void
        self._file(tick, loop)
        if not self._timer_running:
            self._timer_running = True
            self._spawn(self._stale_timer)
        elif self._timer_wake is not None and tick * _STALE_TICK < self._timer_until:
            self._timer_wake.cancel()  # an earlier deadline than the one being slept on

    def _file(self, tick: int, loop: WatchLoop) -> None:
        loop.stale_tick = tick
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = []
            heapq.heappush(self._bucket_ticks, tick)
        bucket.append(loop)
        self._filed += 1

    async def _stale_timer(self) -> None:
        """Empty due buckets; sleep till the next, at least a tick (not one wake per refresh)."""
        ticks, buckets = self._bucket_ticks, self._buckets
        clock = self._clock
        try:
            while ticks:
                now = clock()
                while ticks and ticks[0] * _STALE_TICK <= now:
                    tick = heapq.heappop(ticks)
                    bucket = buckets.pop(tick)
                    self._filed -= len(bucket)
                    for loop in bucket:
                        if loop.stale_tick != tick:
                            self._void -= 1  # stopped, or filed in an earlier bucket
                            continue
                        loop.stale_tick = None
                        due = loop.stale_due
                        if due <= now:
                            again = loop.publish_overdue(now)
                            if again is None:
                                continue
                            due = loop.stale_due = again
                        self._file(math.ceil(due / _STALE_TICK), loop)  # a later bucket
                if not ticks:
                    break
                self._timer_until = max(ticks[0] * _STALE_TICK, now + _STALE_TICK)
                if self._timer_until - now <= _STALE_TICK:
                    await anyio.sleep(self._timer_until - now)  # nothing can be due sooner
                else:
                    with anyio.CancelScope() as self._timer_wake:  # woken as Ticker._run is
                        await anyio.sleep(self._timer_until - now)
                    self._timer_wake = None
                if clock() - self._timer_until > _STALE_TICK:
                    # Woke late: the process was stalled (a long GC pause, a blocking call).
                    # The refreshes due meanwhile go out and queued answers are read first,
                    # or every name due in the stall would be flagged stale, then fresh.
                    await anyio.sleep(_STALE_TICK)
        finally:
            self._timer_running = False
            self._timer_wake = None

    def __len__(self) -> int:
        return len(self._loops)

    @property
    def ready(self) -> bool:
        return all(loop.answered for loop in self._loops.values())

    def pending(self) -> list[str]:
        return sorted({loop.name for loop in self._loops.values() if not loop.answered})

    @asynccontextmanager
    async def subscribe(
        self,
        key: Hashable,
        name: str,
        refresh: Refresh,
        on_stop: Callable[[], None] | None = None,
        quiet: Quiet | None = None,
    ) -> AsyncIterator[Updates]:
        """Subscribe to ``key``'s loop, started with ``refresh`` (and ``on_stop``) if new.

        ``on_stop`` runs when the last subscriber leaves and again as the loop ends: it
        must be idempotent.
        """
        loop = self._loops.get(key)
        if loop is None:
            loop = WatchLoop(
                name, refresh, self._policy, self._counters, self._clock, self, on_stop, quiet
            )
            self._loops[key] = loop
            self._spawn(self._run_loop, key, loop)
        updates = Updates(loop)
        loop.subscribers.add(updates)
        self._counters.watches_started += 1
        try:
            yield updates
        finally:
            updates.closed = True
            loop.subscribers.discard(updates)
            self._counters.watches_stopped += 1
            if not loop.subscribers:
                loop.stop()
                if self._loops.get(key) is loop:
                    del self._loops[key]

    async def _run_loop(self, key: Hashable, loop: WatchLoop) -> None:
        try:
            await loop.run()
        finally:
            if self._loops.get(key) is loop:
                del self._loops[key]
            self._drop_stopped_deadlines(loop)
            self.ticker.sleeper_stopped()

    def _drop_stopped_deadlines(self, loop: WatchLoop) -> None:
        """A stopped loop must not live on in the stale timer's buckets until their tick.

        Rebuilt once void slots could be half of them: amortized O(1) per
        stop, and a watch opened and closed in a loop holds no memory.
        """
        if loop.stale_tick is not None:
            loop.stale_tick = None
            self._void += 1
        if self._void * 2 < self._filed:
            return
        buckets = self._buckets
        for tick in list(buckets):
            live = [kept for kept in buckets[tick] if kept.stale_tick == tick]
            if live:
                buckets[tick] = live
            else:
                del buckets[tick]
        self._bucket_ticks[:] = list(buckets)
        heapq.heapify(self._bucket_ticks)
        self._filed = sum(map(len, buckets.values()))
        self._void = 0
