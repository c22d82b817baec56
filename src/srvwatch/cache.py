"""The record store: every answer as the reply's wire bytes, with clamped TTLs and stale windows.

One entry per question (canonical name, type), positive or negative
(NXDOMAIN/NODATA with their SOA), kept as the reply that carried it: the
bytes and the offsets of their TTLs, so a DNS stub can answer from it by
patching the ID and counting TTLs down, and the resolver derives its parsed
views (records, endpoint sets) from the same entry. A failure is remembered
as the little a caller needs (kind, message, server, until when), never as
an exception with its traceback.

Pure and clock-injected: it never sleeps and never reads the wall clock
itself, so TTL rules (RFC 2308 negative caching, RFC 8767 serve-stale) are
tested without waiting.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from .errors import ResolveError
from .policy import Policy
from .reply import Negative, Positive

__all__ = ["Clock", "Entry", "Failure", "RecordStore"]

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Failure:
    """A remembered SERVFAIL, timeout or malformed reply: what to raise, and until when."""

    kind: type[ResolveError]
    message: str
    name: str
    rdtype: str
    until: float

    def error(self) -> ResolveError:
        """A fresh exception each time, so no traceback is ever kept or shared."""
        return self.kind(self.message, name=self.name, rdtype=self.rdtype)


class Entry:
    """One question's answer (or its absence) and the times that govern it.

    ``answer`` is the last reply the upstream gave, positive or negative; it
    is None only for an entry that has never had an answer but remembers a
    failure. ``view`` is free for a parsed form derived from ``answer``
    (built once, dropped with the entry).
    """

    __slots__ = (
        "answer",
        "expires_at",
        "failure",
        "rendered",
        "stale_until",
        "stored_at",
        "ttl",
        "view",
    )

    def __init__(
        self,
        answer: Positive | Negative | None,
        ttl: float,
        stored_at: float,
        expires_at: float,
        stale_until: float,
    ) -> None:
        self.answer = answer
        self.ttl = ttl
        self.stored_at = stored_at
        self.expires_at = expires_at
        self.stale_until = stale_until
        self.failure: Failure | None = None
        self.view: Any = None
        self.rendered: Any = None
        """The DNS stub's reply template and its per-second copies (see server/stub.py)."""

    def fresh(self, now: float) -> bool:
        return self.answer is not None and now < self.expires_at

    def servable_stale(self, now: float) -> bool:
        """Expired, but may still be served because the upstream is failing (RFC 8767)."""
        return isinstance(self.answer, Positive) and now < self.stale_until

    def failing(self, now: float) -> bool:
        """A recent failure is still remembered: don't ask again yet."""
        return self.failure is not None and now < self.failure.until

    def remaining(self, now: float) -> float:
        return max(self.expires_at - now, 0.0)

    def __repr__(self) -> str:
        kind = type(self.answer).__name__ if self.answer is not None else "None"
        return f"<Entry {kind} ttl={self.ttl:g} failure={self.failure is not None}>"


class RecordStore:
    """Map from a question to its :class:`Entry`: LRU-bounded, except what live watches need.

    ``policy.cache_size`` bounds the entries no watch depends on. A question
    a live watch depends on (its SRV set, its targets' addresses) is pinned
    with :meth:`pin` and is never evicted for others: LRU churn from one-shot
    lookups or from more watched questions than ``cache_size`` would
    otherwise evict an answer just before its own refresh and ask for it
    again. The store then holds up to ``cache_size`` + the pinned questions.

    A TTL of 0 can never produce an entry that expires at once: positive
    TTLs are clamped to ``policy.min_ttl`` and negative ones to
    ``policy.negative_min_ttl``. Negative answers have no stale window:
    only a positive answer is worth serving after it expires.
    """

    def __init__(self, policy: Policy, clock: Clock = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._data: dict[Hashable, Entry] = {}
        self._lru: OrderedDict[Hashable, None] = OrderedDict()
        """The keys of unpinned entries, least recently used first: what the bound counts."""
        self._pins: dict[Hashable, int] = {}
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return (
            f"<RecordStore {len(self)} entries, {len(self._pins)} pinned, "
            f"bound {self.policy.cache_size} unpinned>"
        )

    @property
    def capacity(self) -> int:
        """The most entries the store may hold now: the bound plus the pinned questions."""
        return self.policy.cache_size + len(self._pins)

    def pin(self, key: Hashable) -> None:
        """A live watch depends on ``key``: keep its entry out of LRU eviction (counted)."""
        pins = self._pins
        count = pins.get(key, 0)
        pins[key] = count + 1
        if not count:
            self._lru.pop(key, None)

    def unpin(self, key: Hashable) -> None:
        """One dependent fewer; the last one returns the entry to the LRU, as most recent."""
        pins = self._pins
        count = pins.get(key, 0)
        if count > 1:
            pins[key] = count - 1
            return
        if not count:
            return
        del pins[key]
        if key in self._data:
            self._lru[key] = None
            self._evict()

    def pinned(self, key: Hashable) -> bool:
        return key in self._pins

    def peek(self, key: Hashable) -> Entry | None:
        """The entry whatever its state, without touching the LRU order: the hot path."""
        return self._data.get(key)

    def get(self, key: Hashable) -> Entry | None:
        """The entry, as long as something in it is still usable; marks it recently used."""
        entry = self._data.get(key)
        if entry is None:
            return None
        now = self.clock()
        failed_until = entry.failure.until if entry.failure is not None else -1.0
        if now >= entry.stale_until and now >= entry.expires_at and now >= failed_until:
            self.discard(key)
            return None
        if key in self._lru:
            self._lru.move_to_end(key)
        return entry

    def put(self, key: Hashable, answer: Positive | Negative, ttl: float) -> Entry:
        """Store an answer with its TTL clamped by the policy; replaces any failure marker.

        The answer already stored (the same object) keeps its entry, with new times.
        """
        policy = self.policy
        if type(answer) is Positive:
            ttl = policy.clamp_ttl(ttl)
            stale_window = policy.stale_ttl
        else:
            ttl = policy.clamp_negative_ttl(ttl)
            stale_window = 0.0
        now = self.clock()
        expires_at = now + ttl
        entry = self._data.get(key)
        if entry is not None and entry.answer is answer:
            # The same answer again (an unchanged refresh, see reply.refreshed): only its
            # times move. Its derived views and the stub's rendering stay valid, and no new
            # entry is kept per refresh for the cyclic garbage collector to walk.
            entry.ttl = ttl
            entry.stored_at = now
            entry.expires_at = expires_at
            entry.stale_until = expires_at + stale_window
            entry.failure = None
            if key in self._lru:
                self._lru.move_to_end(key)
            return entry
        entry = Entry(answer, ttl, now, expires_at, expires_at + stale_window)
        self._store(key, entry)
        return entry

    def put_failure(
        self, key: Hashable, error: ResolveError, *, duration: float | None = None
    ) -> Entry:
        """Remember a failure for ``servfail_ttl``; keep the last good answer for serve-stale."""
        now = self.clock()
        entry = self._data.get(key)
        if entry is None:
            entry = Entry(None, 0.0, now, now, now)
            self._store(key, entry)
        until = now + (self.policy.servfail_ttl if duration is None else duration)
        entry.failure = Failure(type(error), str(error), error.name, error.rdtype, until)
        return entry

    def discard(self, key: Hashable) -> None:
        self._data.pop(key, None)
        self._lru.pop(key, None)

    def clear(self) -> None:
        """Drop every entry (pins stay: a watch still depends on its questions)."""
        self._data.clear()
        self._lru.clear()

    def _store(self, key: Hashable, entry: Entry) -> None:
        self._data[key] = entry
        if key in self._pins:
            return
        lru = self._lru
        lru[key] = None
        lru.move_to_end(key)
        self._evict()

    def _evict(self) -> None:
        lru, data, bound = self._lru, self._data, self.policy.cache_size
        while len(lru) > bound:
            key, _ = lru.popitem(last=False)
            del data[key]
            self.evictions += 1
