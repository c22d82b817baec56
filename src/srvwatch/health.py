"""Upstream health: one record per nameserver, shared by every lookup, watch and the stub.

An outage must not become a storm. A nameserver that times out or refuses a
connection is marked down; while it is down no lookup sends to it: they fail
over to a healthy one, or fail fast (and the callers serve stale). One probe
at a time goes to a down nameserver, on jittered exponential backoff (the
policy's failure backoff: 1 s doubling to 30 s); the first answer marks it up
and releases whoever waits for the recovery a few at a time, over one
refresh interval, so that they do not arrive together. unbound keeps the same kind of
infrastructure cache.

The decisions are pure and take the injected clock; the I/O-shaped parts are
the events that :meth:`Health.wait_recovered` and :meth:`Health.wait_turn`
wait on, and the one task that releases parked waiters after a recovery.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from .address import Nameserver
from .policy import Policy

__all__ = ["Health", "Upstream"]

Clock = Callable[[], float]
Spawn = Callable[..., None]

_RELEASE_TICK = 0.01
"""Seconds between two slices of a recovery's release: the loops come back as a steady flow."""


class Upstream:
    """What is known about one nameserver."""

    __slots__ = (
        "answered",
        "down_since",
        "failures",
        "last_error",
        "name",
        "next_probe",
        "probing",
        "server",
        "up",
    )

    def __init__(self, server: Nameserver) -> None:
        self.server = server
        self.name = str(server)
        self.up = True
        self.answered = False
        """Has answered at least once: what readiness waits for."""
        self.failures = 0
        """Consecutive failures: the one that marked it down, then each failed probe."""
        self.down_since = 0.0
        self.next_probe = 0.0
        self.probing = False
        self.last_error = ""

    def __repr__(self) -> str:
        return f"<Upstream {self.name} {'up' if self.up else 'down'} failures={self.failures}>"


class Health:
    """The health records of a list of nameservers, and the rules that move them."""

    def __init__(self, servers: Sequence[Nameserver], policy: Policy, clock: Clock) -> None:
        self.upstreams = tuple(Upstream(server) for server in servers)
        self._policy = policy
        self._clock = clock
        self._changed: anyio.Event | None = None
        """Set when a nameserver comes back up or the probe carrier leaves; then replaced."""
        self._prober: object | None = None
        self._parked: dict[object, anyio.Event] = {}
        """Waiters parked until a recovery releases them (or a resign hands them the probes)."""
        self._releasing = False
        self._spawn: Spawn | None = None
        self.last_answer = -math.inf
        """When a nameserver last answered (any rcode), on the clock."""
        self.recoveries = 0
        self.probes = 0
        self.marked_down = 0

    def use_policy(self, policy: Policy) -> None:
        """Follow a new policy from the next decision on (a sidecar reload)."""
        self._policy = policy

    def attach(self, spawn: Spawn) -> None:
        """Give the record a way to run its release task (the resolver's task group).

        Not attached, a recovery releases every parked waiter at once.
        """
        self._spawn = spawn

    @property
    def parked(self) -> int:
        """Waiters parked on a dead upstream, not yet released."""
        return len(self._parked)

    def __repr__(self) -> str:
        states = ", ".join(f"{u.name} {'up' if u.up else 'down'}" for u in self.upstreams)
        return f"<Health {states}>"

    @property
    def any_up(self) -> bool:
        return any(u.up for u in self.upstreams)

    @property
    def any_answered(self) -> bool:
        return any(u.answered for u in self.upstreams)

    def pick(self, start: int, skip: set[int]) -> int | None:
        """The first usable nameserver at or after position ``start`` (wrapping), else None.

        A nameserver that is up is usable. A down one is usable once, as the
        probe, when its probe is due and no other probe to it is out: the
        lookup that carries the probe fails over as usual if it gets no
        answer. The caller reports the outcome with :meth:`succeeded`,
        :meth:`failed` or :meth:`released`.
        """
        upstreams = self.upstreams
        count = len(upstreams)
        now = -1.0
        for step in range(count):
            i = (start + step) % count
            if i in skip:
                continue
            upstream = upstreams[i]
            if upstream.up:
                return i
            if not upstream.probing:
                if now < 0:
                    now = self._clock()
                if now >= upstream.next_probe:
                    upstream.probing = True
                    self.probes += 1
                    return i
        return None

    def probe_due(self, before: int) -> bool:
        """A nameserver ahead of position ``before`` is down and :meth:`pick` would probe it."""
        now = self._clock()
        return any(
            not u.up and not u.probing and now >= u.next_probe for u in self.upstreams[:before]
        )

    def succeeded(self, i: int) -> None:
        """Position ``i`` answered (any rcode: it is alive)."""
        upstream = self.upstreams[i]
        upstream.probing = False
        upstream.answered = True
        upstream.failures = 0
        self.last_answer = self._clock()
        if not upstream.up:
            upstream.up = True
            self.recoveries += 1
            self._prober = None
            self._wake()
            self._release()

    def failed(self, i: int, why: str) -> None:
        """Position ``i`` timed out or refused: down, with its next probe backed off.

        The backoff steps once when it goes down and once per failed probe.
        The other attempts that were already on the wire fail too, as many as
        were in flight (168 of them at 10,000 watches): counted, they would
        push the probe step to its cap at once, and the recovery of a short
        outage would be found up to ``backoff_max`` late.
        """
        upstream = self.upstreams[i]
        now = self._clock()
        probe = upstream.probing
        upstream.probing = False
        upstream.last_error = why
        if upstream.up:
            upstream.up = False
            upstream.down_since = now
            self.marked_down += 1
        elif not probe:
            return  # sent before it was known down: the probe schedule stands
        upstream.failures += 1
        upstream.next_probe = now + self._policy.backoff_delay(upstream.failures)

    def released(self, i: int) -> None:
        """A probe ended with no verdict (its caller was cancelled): another may go."""
        self.upstreams[i].probing = False

    def down_message(self) -> str:
        """Why a lookup failed without sending anything: for the ResolveTimeout it raises."""
        now = self._clock()
        parts = []
        for u in self.upstreams:
            wait = max(u.next_probe - now, 0.0)
            parts.append(
                f"{u.name} down since {now - u.down_since:.1f}s ago ({u.last_error}), "
                f"next probe in {wait:.1f}s"
            )
        return "upstream down: " + "; ".join(parts)

    def answered_since(self, when: float) -> bool:
        """A nameserver is up and has answered since ``when``: the upstream is answering.

        A watch whose data expired at ``when`` and has no answer yet is then
        behind (its refresh queued, or the process busy), not failing: it is
        not flagged stale for that (see :meth:`srvwatch.watch.Watches.expect_answer_by`).
        """
        return self.last_answer >= when and self.any_up

    async def wait_recovered(self) -> None:
        """Return when any nameserver that was down answers again."""
        recoveries = self.recoveries
        while self.recoveries == recoveries:
            await self._event().wait()

    async def wait_turn(self, waiter: object, limit: float) -> bool:
        """While every nameserver is down, park ``waiter`` until it has something to do.

        True: a nameserver answered again and ``waiter``'s turn to refresh
        came. False: ``waiter`` should refresh now, because it carries the
        next probe (one waiter at a time does: it returns when a probe is
        due, and its lookup sends it), or ``limit`` seconds passed. The
        others park, each on an event of its own, so thousands of watch
        loops on a dead upstream cost one wake-up per probe, not a failed
        lookup each per backoff step. A recovery releases them a slice at a
        time over one refresh interval, in random order (see :meth:`_release_parked`):
        woken all at once, 10,000 loops stalled the process for a second and
        then reached the server 2.7x faster than their steady rate. The
        carrier keeps its turn until it calls :meth:`resign` or a nameserver
        comes back.
        """
        parked = self._parked
        with anyio.move_on_after(limit):
            while not self.any_up:
                if self._prober is None:
                    self._prober = waiter
                if self._prober is waiter:
                    wait = self._probe_wait()
                    if wait <= 0:
                        return False
                    with anyio.move_on_after(wait):
                        await self._event().wait()
                    continue
                event = parked[waiter] = anyio.Event()
                try:
                    await event.wait()
                except BaseException:
                    if event.is_set():  # handed the turn as it was cancelled: pass it on
                        self._hand_on_turn()
                    raise
                finally:
                    if parked.get(waiter) is event:
                        del parked[waiter]
            return True
        return False

    def resign(self, waiter: object) -> None:
        """``waiter`` stops (a watch loop ending): if it carried the probes, another takes over.

        One parked waiter is woken to take the turn, not all of them.
        """
        if self._prober is waiter:
            self._prober = None
            self._wake()
            self._hand_on_turn()

    def _hand_on_turn(self) -> None:
        """Nobody carries the probes of a dead upstream: wake one parked waiter to take them.

        If that waiter is being cancelled too (watches closed together), it
        passes the turn on as it leaves, so the probes never stop while a
        loop still waits for the recovery.
        """
        if self._prober is None and self._parked and not self.any_up:
            _, event = self._parked.popitem()
            event.set()

    def _release(self) -> None:
        """A nameserver is back: release the parked waiters, spread over one refresh interval."""
        if not self._parked or self._releasing:
            return
        if self._spawn is None:
            for event in self._parked.values():
                event.set()
            self._parked.clear()
            return
        self._releasing = True
        self._spawn(self._release_parked)

    async def _release_parked(self) -> None:
        """Release parked waiters at an even rate in random order, over the shortest
        refresh interval, ``min_ttl * (1 - jitter)``.

        Released, a waiter refreshes at once and next after at least that
        interval: the first released come back only as the last go, so a
        recovering server sees about the steady rate, not the release and
        the next round on top of each other (over the whole ``min_ttl``,
        that overlap was 1.6x the steady rate at 10,000 names on trio). If
        every nameserver goes down again meanwhile, the rest stay parked for
        the next recovery.
        """
        parked = self._parked
        try:
            while parked and self.any_up:
                policy = self._policy
                order = list(parked)
                (policy.rng or random).shuffle(order)
                window = max(policy.min_ttl * (1.0 - policy.jitter), _RELEASE_TICK)
                start = anyio.current_time()
                released = 0
                while released < len(order) and self.any_up:
                    elapsed = anyio.current_time() - start
                    due = min(len(order), 1 + int(len(order) * elapsed / window))
                    for waiter in order[released:due]:
                        event = parked.pop(waiter, None)
                        if event is not None:
                            event.set()
                    released = due
                    if released < len(order):
                        await anyio.sleep(_RELEASE_TICK)
        finally:
            self._releasing = False

    def _probe_wait(self) -> float:
        """Seconds until a probe may go; a probe already out is waited on for one timeout."""
        now = self._clock()
        wait = math.inf
        for u in self.upstreams:
            if u.up:
                return 0.0
            wait = min(wait, self._policy.timeout if u.probing else u.next_probe - now)
        return wait

    def _event(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def snapshot(self) -> list[dict[str, Any]]:
        """Each nameserver's state, for ``Resolver.upstreams()``, ``/ready`` and metrics."""
        now = self._clock()
        return [
            {
                "server": u.name,
                "up": u.up,
                "answered": u.answered,
                "failures": u.failures,
                "last_error": u.last_error,
                "down_for": 0.0 if u.up else now - u.down_since,
                "next_probe_in": 0.0 if u.up else max(u.next_probe - now, 0.0),
            }
            for u in self.upstreams
        ]
