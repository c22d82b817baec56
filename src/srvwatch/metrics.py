"""Counters that prove what the resolver did: queries sent, cache hits, sockets opened and closed.

Plain integers on a slotted object so the hot path pays one attribute
increment; :meth:`Counters.snapshot` is what ``Resolver.stats()`` returns and
what an exporter (Prometheus, in the sidecar to come) reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["PER_NAME_LIMIT", "Counters"]

PER_NAME_LIMIT = 10_000


@dataclass(slots=True)
class Counters:
    """Monotonic counters; ``opened == closed`` pairs must balance after ``aclose()``."""

    queries: int = 0
    """Upstream queries sent (UDP and TCP)."""
    tcp_queries: int = 0
    truncated: int = 0
    """UDP answers with TC set, retried over TCP."""
    edns_fallbacks: int = 0
    """FORMERR answers to a query with EDNS, asked again without it."""
    timeouts: int = 0
    fast_failures: int = 0
    """Lookups failed at once, without a query, because every nameserver is down."""
    server_errors: int = 0
    """Answers with an rcode other than NOERROR and NXDOMAIN, or truncated over TCP."""
    network_errors: int = 0
    unchanged_replies: int = 0
    """Replies identical to the last one for their question but for ID and TTLs: not re-parsed."""
    batches: int = 0
    """Sockets that carried a batch of watch refreshes due together (see ``send_batch``)."""
    batched_refreshes: int = 0
    """Watch refreshes whose unchanged reply was settled in a batch, without waking their loop."""
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
    handoffs: int = 0
    """Shared lookups whose first caller was cancelled, finished by the resolver for the others."""
    adopted_queries: int = 0
    """Queries already on the wire taken over from a cancelled caller instead of sent again."""
    watches_started: int = 0
    watches_stopped: int = 0
    loops_started: int = 0
    loops_stopped: int = 0
    updates_emitted: int = 0

    stub_requests_udp: int = 0
    stub_requests_tcp: int = 0
    stub_hits: int = 0
    """Stub queries answered from the store without waiting."""
    stub_misses: int = 0
    stub_prefetches: int = 0
    """Entries asked again in the last 10% of their TTL, refreshed before they expire."""
    stub_stale_answers: int = 0
    """Stale answers the stub gave (TTL 30 s) because upstream had not answered in time."""
    stub_refused: int = 0
    """Queries from clients outside ``allow``, answered REFUSED."""
    stub_ignored: int = 0
    """Datagrams the stub did not answer: responses, garbage, truncated headers."""
    ttl_clamped_floor: int = 0
    """Records the stub served with their upstream TTL raised to the floor."""
    ttl_clamped_cap: int = 0
    """Records the stub served with their upstream TTL lowered to the cap."""

    stub_responses: dict[int, int] = field(default_factory=dict)
    """Stub replies by rcode."""
    queries_by_name: dict[str, int] = field(default_factory=dict)
    """Upstream queries per absolute name, for the first ``PER_NAME_LIMIT`` names seen."""

    def count_query(self, qname: str) -> None:
        self.queries += 1
        by_name = self.queries_by_name
        if qname in by_name:
            by_name[qname] += 1
        elif len(by_name) < PER_NAME_LIMIT:
            by_name[qname] = 1

    def snapshot(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type == "int"}
