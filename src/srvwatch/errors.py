"""The errors srvwatch raises: one base class so callers can catch every DNS failure at once."""

from __future__ import annotations

__all__ = ["NXDomain", "NoData", "ResolveError", "ResolveTimeout", "ServerFailure", "UpstreamDown"]


class ResolveError(Exception):
    """A lookup failed; ``name`` and ``rdtype`` say which one.

    ``ttl`` is set on negative answers (NXDOMAIN, NODATA): how long the
    answer may be trusted, from the SOA minimum (RFC 2308), clamped.
    """

    def __init__(
        self, message: str, *, name: str = "", rdtype: str = "", ttl: float | None = None
    ) -> None:
        super().__init__(message)
        self.name = name
        self.rdtype = rdtype
        self.ttl = ttl


class NXDomain(ResolveError):
    """The name does not exist (authoritative answer)."""


class NoData(ResolveError):
    """The name exists but has no records of the asked type."""


class ResolveTimeout(ResolveError):
    """No nameserver answered within the lifetime of the lookup."""


class UpstreamDown(ResolveTimeout):
    """Every nameserver is marked down, so nothing was sent: the lookup failed at once.

    Not remembered like other failures: it costs no query, and the first
    probe that gets an answer ends it.
    """


class ServerFailure(ResolveError):
    """Every nameserver answered with SERVFAIL, REFUSED or a malformed reply."""
