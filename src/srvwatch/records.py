"""Records of one (canonical name, type): from the store when fresh, else one shared upstream query.

A hit is one dict lookup and one clock read. A miss starts at most one
upstream query per question however many callers ask at once (see
:mod:`srvwatch.flight`), follows CNAME chains that leave a reply, and stores
what came back: the records, an NXDOMAIN/NODATA with its RFC 2308 TTL, or
the failure. When the upstream fails, the last good answer is served,
flagged stale (RFC 8767); only an authoritative negative answer empties it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable
from typing import TypeVar

from . import reply as replies
from .cache import Clock, Entry, RecordStore
from .errors import NoData, NXDomain, ResolveError, ResolveTimeout, ServerFailure, UpstreamDown
from .flight import Singleflight
from .metrics import Counters
from .names import type_text
from .policy import Policy
from .reply import Negative, Positive, Reply
from .transport import Transport

__all__ = ["Found", "Records"]

log = logging.getLogger(__name__)

T = TypeVar("T")

Found = tuple[Entry, bool]
"""A positive entry of the store, and whether it is served stale."""


class Records:
    """The record store, filled through flights and the transport."""

    def __init__(
        self,
        store: RecordStore,
        transport: Transport,
        flights: Singleflight,
        policy: Policy,
        counters: Counters,
        clock: Clock,
    ) -> None:
        self.store = store
        self._transport = transport
        self.flights = flights
        self._policy = policy
        self._counters = counters
        self.clock = clock

    def use_policy(self, policy: Policy) -> None:
        """Follow a new policy from the next decision on (a sidecar reload)."""
        self._policy = policy

    async def lookup(
        self, fqdn: str, qtype: int, *, refresh: bool = False, stale_ok: bool = True
    ) -> Found:
        """The positive entry for ``fqdn``/``qtype``; negative answers and failures raise.

        ``refresh`` (for watch loops) skips the cache and never serves stale:
        failures are raised, because the loop keeps its own last good answer.
        ``stale_ok=False`` takes a fresh entry from the cache but never a stale
        one (an SRV refresh's targets: refreshed on their own TTL, not on
        every SRV refresh, and failing rather than going stale).
        """
        if refresh:
            return await self.refresh(fqdn, qtype)
        found = self.cached(fqdn, qtype, stale_ok=stale_ok)
        if found is not None:
            return found
        return await self.fetch(fqdn, qtype, stale_ok=stale_ok)

    def refresh(self, fqdn: str, qtype: int) -> Awaitable[Found]:
        """``lookup(fqdn, qtype, refresh=True)``, without a coroutine of its own.

        A watch refresh's path is a chain of coroutines, each made, resumed and
        unwound on every refresh: one level fewer on the hottest path.
        """
        return self.flights.run(("refresh", fqdn, qtype), self._fetch, fqdn, qtype, False)

    def cached(self, fqdn: str, qtype: int, *, stale_ok: bool = True) -> Found | None:
        """What :meth:`lookup` finds in the store without asking upstream, else None.

        Raises as :meth:`lookup` does for a cached negative answer or failure.
        Synchronous, so a caller can skip starting concurrent lookups (tasks)
        when everything it needs is cached (an SRV refresh's targets, mostly).
        """
        entry = self.store.peek((fqdn, qtype))
        if entry is None:
            return None
        now = self.clock()
        answer = entry.answer
        if answer is not None and now < entry.expires_at:
            if type(answer) is Negative:
                self._counters.negative_hits += 1
                raise _negative_error(answer, fqdn, qtype, entry.ttl)
            self._counters.hits += 1
            return entry, False
        failure = entry.failure
        if failure is not None and now < failure.until:
            if stale_ok and entry.servable_stale(now):
                self._counters.stale += 1
                return entry, True
            raise failure.error()
        return None

    def repeated(self, fqdn: str, qtype: int, reply: Reply) -> Entry | None:
        """The stored positive entry ``reply`` repeats but for ID and TTLs, else None."""
        entry = self.store.peek((fqdn, qtype))
        if entry is None or type(entry.answer) is not Positive or entry.answer.msg is not reply.msg:
            return None
        return entry

    def store_repeated(self, fqdn: str, qtype: int, entry: Entry, reply: Reply) -> Entry:
        """Store a reply :meth:`repeated` found: the same answer with the reply's TTLs."""
        previous = entry.answer
        assert type(previous) is Positive
        self._counters.unchanged_replies += 1
        answer = replies.refreshed(previous, reply.data)
        stored = self.store.put((fqdn, qtype), answer, answer.ttl)
        if stored is not entry:
            stored.view = entry.view  # what was derived from it still holds
        return stored

    def store_if_repeated(self, fqdn: str, qtype: int, reply: Reply) -> bool:
        """Store ``reply`` if it repeats the stored answer, positive or negative; whether it did.

        A negative answer is taken only byte for byte (its TTL comes from the
        SOA record, derived the usual way when that changes).
        """
        entry = self.store.peek((fqdn, qtype))
        if entry is None:
            return False
        answer = entry.answer
        if type(answer) is Positive:
            if answer.msg is not reply.msg:
                return False
            self.store_repeated(fqdn, qtype, entry, reply)
            return True
        if type(answer) is not Negative or reply.data[2:] != answer.data[2:]:
            return False
        self._counters.unchanged_replies += 1
        self.store.put((fqdn, qtype), answer, answer.ttl)
        return True

    async def fetch(self, fqdn: str, qtype: int, *, stale_ok: bool = True) -> Found:
        """Ask upstream (one shared flight per question): a :meth:`lookup` the store missed."""
        self._counters.misses += 1
        if not stale_ok:
            shared = ("refresh", fqdn, qtype)
            return await self.flights.run(shared, self._fetch, fqdn, qtype, False)
        return await self.flights.run((fqdn, qtype), self._fetch, fqdn, qtype, True)

    async def _fetch(self, fqdn: str, qtype: int, serve_stale: bool) -> Found:
        key = (fqdn, qtype)
        previous = self.store.peek(key)
        try:
            answer = await self._ask(fqdn, qtype, previous, bounded=serve_stale)
        except (ResolveTimeout, ServerFailure) as exc:
            if isinstance(exc, UpstreamDown):  # nothing was sent: nothing to remember
                found = self.store.get(key)
                if serve_stale and found is not None and found.servable_stale(self.clock()):
                    self._counters.stale += 1
                    return found, True
                raise
            entry = self.store.put_failure(key, exc)
            if serve_stale and entry.servable_stale(self.clock()):
                self._counters.stale += 1
                log.info("serving stale %s: %s", fqdn, exc)
                return entry, True
            raise
        entry = self.store.put(key, answer, answer.ttl)
        if (
            previous is not None
            and previous.answer is not None
            and answer.msg is previous.answer.msg
        ):
            entry.view = previous.view  # unchanged: what was derived from it still holds
        if type(answer) is Negative:
            raise _negative_error(answer, fqdn, qtype, entry.ttl)
        return entry, False

    async def _ask(
        self, fqdn: str, qtype: int, previous: Entry | None, *, bounded: bool
    ) -> Positive | Negative:
        """Ask upstream, following a CNAME chain across replies when one leaves its reply.

        A reply the transport found identical to the last one (ID and TTLs
        aside) comes back with the same parsed message: then the previous
        answer is reused with the new TTLs, and nothing is decoded again.

        ``bounded``: a caller is waiting (a one-shot lookup), so each query,
        its wait for a query slot included, ends within the lifetime. Watch
        refreshes are not bounded so: a refresh queued behind others (thousands
        of watches starting at once) has not failed, and its lifetime starts
        with its first attempt.
        """
        name = fqdn
        seen = {fqdn}
        hops = 0
        chain_ttl = math.inf
        last = previous.answer if previous is not None else None
        query = self._transport.query
        lifetime = self._policy.lifetime
        while True:
            if bounded:
                reply = await query(name, qtype, deadline=self.clock() + lifetime)
            else:
                reply = await query(name, qtype)
            if type(last) is Positive and reply.msg is last.msg:
                self._counters.unchanged_replies += 1
                return replies.refreshed(last, reply.data)
            outcome = replies.interpret(
                reply,
                fqdn,
                qtype,
                self._policy,
                seen=seen,
                hops=hops,
                chain_ttl=chain_ttl,
            )
            if type(outcome) is not replies.Follow:
                return outcome  # type: ignore[return-value]
            name, chain_ttl, hops = outcome.target, outcome.ttl, outcome.hops


def _negative_error(answer: Negative, fqdn: str, qtype: int, ttl: float) -> ResolveError:
    cls = NXDomain if answer.nxdomain else NoData
    return cls(answer.message, name=fqdn, rdtype=type_text(qtype), ttl=ttl)
