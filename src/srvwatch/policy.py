"""How long to trust an answer, when to ask again, and how to back off.

Every number that shapes upstream query volume lives here, so the rules that
keep a fleet from becoming a query storm are in one place and testable without
a clock or a socket.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields

from tenacity import AsyncRetrying, RetryCallState, wait_exponential

__all__ = ["Policy"]

_MAX_WIRE_TTL = 2**31 - 1
_WIRE_TTLS = ("min_ttl", "max_ttl", "negative_min_ttl", "negative_max_ttl", "stale_answer_ttl")
"""Fields that can end up as a TTL on the wire, so they must fit one."""
_RETRYING = AsyncRetrying()  # only to give tenacity's wait strategies a call state


@dataclass(frozen=True, slots=True)
class Policy:
    """TTL clamping, jittered refresh, failure backoff and stale windows.

    The defaults are the ones in the design document: a 5 s floor (TTL 0 is
    the storm trigger), a 300 s cap, refresh at ``ttl * U(1 - jitter, 1)`` so
    clients never refresh after expiry and never in lock-step.
    """

    min_ttl: float = 5.0
    """Floor for positive TTLs: a TTL of 0 or 1 never means "ask again now"."""
    max_ttl: float = 300.0
    """Cap, so new endpoints appear within minutes even when a zone says a day."""
    jitter: float = 0.2
    """Refresh after ``ttl * U(1 - jitter, 1)``."""
    negative_min_ttl: float = 5.0
    """Floor for NXDOMAIN/NODATA caching (RFC 2308 SOA minimum may be 0)."""
    negative_max_ttl: float = 60.0
    """Cap for negative caching."""
    servfail_ttl: float = 5.0
    """How long a SERVFAIL is remembered (RFC 2308 section 7.1: at most 5 minutes)."""
    stale_ttl: float = 86_400.0
    """How long the last good answer may be served after failures (RFC 8767)."""
    stale_after: float = 1.8
    """A watch says ``stale`` once its data has expired and no answer came within this
    (the RFC 8767 client response timer; the stub answers stale after it too). Not while
    the upstream answers other questions meanwhile: the process is then behind, not
    failing, and the name is flagged when its own refresh fails."""
    stale_answer_ttl: float = 30.0
    """TTL the stub gives a stale answer (RFC 8767); never 0, which restarts the storm."""
    stale_refresh_interval: float = 30.0
    """While the stub serves a name stale, upstream is asked for it at most this often."""
    timeout: float = 1.0
    """Per-attempt timeout for one query to one nameserver."""
    lifetime: float = 5.0
    """Overall deadline of one lookup, retries and failover included. A watch refresh
    queued for a query slot (``max_in_flight``) has not started: its lifetime starts with
    its first attempt. A one-shot lookup's caller is waiting: there the queue counts."""
    backoff_base: float = 1.0
    """First failure backoff; doubles per consecutive failure (jittered)."""
    backoff_max: float = 30.0
    """Failure backoff cap."""
    cache_size: int = 10_000
    """LRU bound on the cached answers no live watch depends on. The answers a watch
    needs (its SRV set and its targets' A and AAAA) are pinned while it runs and never
    evicted, so 10,000 watches without glue (30,000 answers) keep theirs."""
    max_srv_targets: int = 32
    """SRV targets without glue resolved per answer; more get no addresses (as unbound and
    c-ares cap the work one answer can cause), so a huge answer cannot flood the upstream."""
    rng: random.Random | None = field(default=None, compare=False, repr=False)
    """The source of every jitter and backoff draw; seed one for reproducible runs
    (default: the process-wide generator, reseeded after ``fork()``)."""

    def __post_init__(self) -> None:
        if self.rng is not None and not isinstance(self.rng, random.Random):
            raise ValueError(f"Policy.rng must be a random.Random, got {self.rng!r}")
        for f in fields(self):
            if f.name == "rng":
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"Policy.{f.name} must be a number, got {value!r}")
            try:
                finite = math.isfinite(value)  # an int beyond float range overflows here
            except OverflowError:
                finite = False
            if not finite or value < 0:
                raise ValueError(f"Policy.{f.name} must be a finite number >= 0, got {value!r}")
        for name in _WIRE_TTLS:
            if getattr(self, name) > _MAX_WIRE_TTL:
                raise ValueError(
                    f"Policy.{name} must be at most {_MAX_WIRE_TTL} (RFC 2181 section 8), "
                    f"got {getattr(self, name)!r}"
                )
        if self.min_ttl <= 0:
            raise ValueError(f"Policy.min_ttl must be > 0, got {self.min_ttl!r}")
        if self.max_ttl < self.min_ttl:
            raise ValueError(
                f"Policy.max_ttl ({self.max_ttl!r}) must be >= min_ttl ({self.min_ttl!r})"
            )
        if self.jitter >= 1:
            raise ValueError(f"Policy.jitter must be in [0, 1), got {self.jitter!r}")
        if self.negative_min_ttl <= 0:
            raise ValueError(f"Policy.negative_min_ttl must be > 0, got {self.negative_min_ttl!r}")
        if self.negative_max_ttl < self.negative_min_ttl:
            raise ValueError(
                f"Policy.negative_max_ttl ({self.negative_max_ttl!r}) must be >= "
                f"negative_min_ttl ({self.negative_min_ttl!r})"
            )
        for name in ("servfail_ttl", "stale_answer_ttl", "timeout", "lifetime", "backoff_base"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Policy.{name} must be > 0, got {getattr(self, name)!r}")
        if self.backoff_max < self.backoff_base:
            raise ValueError(
                f"Policy.backoff_max ({self.backoff_max!r}) must be >= "
                f"backoff_base ({self.backoff_base!r})"
            )
        for name in ("cache_size", "max_srv_targets"):
            value = getattr(self, name)
            if value < 1 or int(value) != value:
                raise ValueError(f"Policy.{name} must be an integer >= 1, got {value!r}")

    def clamp_ttl(self, ttl: float) -> float:
        """A positive answer's TTL, forced into ``[min_ttl, max_ttl]``."""
        if ttl < self.min_ttl:
            return self.min_ttl
        if ttl > self.max_ttl:
            return self.max_ttl
        return float(ttl)

    def clamp_negative_ttl(self, ttl: float) -> float:
        """A negative answer's TTL, forced into ``[negative_min_ttl, negative_max_ttl]``."""
        return min(max(float(ttl), self.negative_min_ttl), self.negative_max_ttl)

    def negative_ttl(self, soa_ttl: float | None, soa_minimum: float | None) -> float:
        """RFC 2308 section 5: min(SOA TTL, SOA MINIMUM), clamped; floor when no SOA came back."""
        candidates = [v for v in (soa_ttl, soa_minimum) if v is not None]
        return self.clamp_negative_ttl(min(candidates) if candidates else self.negative_min_ttl)

    def draw(self) -> float:
        """One draw in [0, 1) from ``rng``: every jitter in srvwatch comes from here."""
        return (self.rng or random).random()

    def refresh_delay(
        self, ttl: float, rng: random.Random | None = None, *, first: bool = False
    ) -> float:
        """When to ask again: ``ttl * U(1 - jitter, 1)``, never after expiry, never in lock-step.

        ``first``: the first refresh of a new watch is drawn from the whole
        TTL, ``ttl * U(0, 1]``. Clients started together (a deploy, a node
        restart) are spread across the TTL at once, instead of drifting apart
        over dozens of refreshes while they query in bursts. It costs at
        most one early query per watch.
        """
        if self.jitter == 0:
            return ttl
        u = rng.random() if rng is not None else self.draw()
        if first:
            return ttl * (1.0 - u)
        return ttl * (1.0 - self.jitter * u)

    def backoff_delay(self, failures: int) -> float:
        """Delay after ``failures`` consecutive failures (1-based): full-jitter exponential.

        Drawn from ``[backoff_base / 2, step]``, where the step (tenacity's
        exponential wait) doubles from ``backoff_base`` up to ``backoff_max``:
        a failing fleet spreads over the whole step instead of retrying in
        lock-step, and no loop ever waits less than ``backoff_base / 2``, so
        none spins, whatever the server does.
        """
        state = RetryCallState(_RETRYING, None, (), {})
        state.attempt_number = max(int(failures), 1)
        step = float(wait_exponential(multiplier=self.backoff_base, max=self.backoff_max)(state))
        floor = self.backoff_base / 2
        return floor + (max(step, floor) - floor) * self.draw()

    def retry_delay(self, rounds: int) -> float:
        """Pause between rounds over every nameserver within one lookup (1-based).

        Failover to the next nameserver is immediate; only a whole round that
        failed waits, a tenth of the attempt timeout doubling per round up to
        the timeout, with jitter, so a lookup never spins against dead servers.
        """
        step = min(self.timeout * 0.1 * 2.0 ** (max(rounds, 1) - 1), self.timeout)
        return step * (0.5 + 0.5 * self.draw())
