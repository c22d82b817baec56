"""A bounded cache of answers with clamped TTLs, negative entries and stale windows.

Pure and clock-injected: it never sleeps and never reads the wall clock
itself, so TTL rules (RFC 2308 negative caching, RFC 8767 serve-stale) are
tested exhaustively without waiting.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .policy import Policy

__all__ = ["Cache", "CacheEntry", "Clock"]

Clock = Callable[[], float]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class CacheEntry(Generic[V]):
    """One cached answer and the times that govern it.

    ``value`` is the last answer the upstream gave (positive or negative);
    it is None only for an entry that has never seen an answer but
    remembers a failure.
    """

    value: V | None
    negative: bool
    ttl: float
    stored_at: float
    expires_at: float
    stale_until: float
    failed_until: float = float("-inf")
    error: BaseException | None = None

    def fresh(self, now: float) -> bool:
        return self.value is not None and now < self.expires_at

    def servable_stale(self, now: float) -> bool:
        """Expired, but may still be served because the upstream is failing (RFC 8767)."""
        return self.value is not None and not self.negative and now < self.stale_until

    def failing(self, now: float) -> bool:
        """A recent SERVFAIL/timeout is still remembered: don't ask again yet."""
        return now < self.failed_until

    def remaining(self, now: float) -> float:
        return max(self.expires_at - now, 0.0)


class Cache(Generic[K, V]):
    """LRU-bounded map from a key to its :class:`CacheEntry`.

    A TTL of 0 can never produce an entry that expires at once: positive TTLs
    are clamped to ``policy.min_ttl`` and negative ones to
    ``policy.negative_min_ttl``.
    """

    def __init__(self, policy: Policy, clock: Clock = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._data: OrderedDict[K, CacheEntry[V]] = OrderedDict()
        self.evictions = 0

    @property
    def clock(self) -> Clock:
        return self._clock

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def fresh(self, key: K) -> CacheEntry[V] | None:
        """The entry if still within its TTL: the hot path, one dict lookup and one clock read."""
        entry = self._data.get(key)
        if entry is not None and self._clock() < entry.expires_at and entry.value is not None:
            self._data.move_to_end(key)
            return entry
        return None

    def get(self, key: K) -> CacheEntry[V] | None:
        """The entry whatever its state, as long as something in it is still usable."""
        entry = self._data.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now >= entry.stale_until and now >= entry.expires_at and now >= entry.failed_until:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry

    def put(self, key: K, value: V, ttl: float, *, negative: bool = False) -> CacheEntry[V]:
        """Store an answer; TTL clamped by the policy; replaces any failure marker."""
        p = self._policy
        if negative:
            ttl = min(max(ttl, p.negative_min_ttl), p.negative_max_ttl)
            stale_window = 0.0
        else:
            ttl = p.clamp_ttl(ttl)
            stale_window = p.stale_ttl
        now = self._clock()
        expires_at = now + ttl
        # value, negative, ttl, stored_at, expires_at, stale_until (positional: a hot path)
        entry = CacheEntry(value, negative, ttl, now, expires_at, expires_at + stale_window)
        self._store(key, entry)
        return entry

    def put_failure(self, key: K, error: BaseException) -> CacheEntry[V]:
        """Remember a failure for ``servfail_ttl``; keep the last good answer for serve-stale."""
        now = self._clock()
        entry = self._data.get(key)
        if entry is None:
            entry = CacheEntry(
                value=None,
                negative=False,
                ttl=0.0,
                stored_at=now,
                expires_at=now,
                stale_until=now,
            )
            self._store(key, entry)
        entry.failed_until = now + self._policy.servfail_ttl
        entry.error = error
        return entry

    def discard(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def _store(self, key: K, entry: CacheEntry[V]) -> None:
        self._data[key] = entry
        self._data.move_to_end(key)
        while len(self._data) > self._policy.cache_size:
            self._data.popitem(last=False)
            self.evictions += 1
