"""Counters that prove what the resolver did: queries sent, cache hits, sockets opened and closed.

Plain integers on a slotted object so the hot path pays one attribute
increment; Prometheus exposition is built from :meth:`Counters.snapshot`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Counters"]


@dataclass(slots=True)
class Counters:
    """Monotonic counters; ``opened == closed`` pairs must balance after ``aclose()``."""

    queries: int = 0
    """Upstream queries sent (UDP and TCP)."""
    tcp_queries: int = 0
    truncated: int = 0
    """UDP answers with TC set, retried over TCP."""
    timeouts: int = 0
    server_errors: int = 0
    """Answers with SERVFAIL, REFUSED, FORMERR or NOTIMP."""
    network_errors: int = 0
    ignored_responses: int = 0
    """Responses whose ID or question did not match (RFC 5452) or that were malformed."""
    lookups: int = 0
    """Calls to ``resolve*``."""
    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    """Callers that waited for a lookup another caller had started."""
    stale: int = 0
    """Answers served from the last good answer after a failure (RFC 8767)."""
    negative_hits: int = 0
    sockets_opened: int = 0
    sockets_closed: int = 0
    flights_started: int = 0
    flights_finished: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)
