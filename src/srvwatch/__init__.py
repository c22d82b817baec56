"""srvwatch: resilient client-side service discovery over DNS.

Resolves SRV and A/AAAA records continuously, clamps zero or tiny TTLs to a
floor, adds jitter, coalesces concurrent lookups, keeps the last good answer
when DNS fails, and streams endpoint changes.
"""

from __future__ import annotations

from .endpoints import Endpoint, EndpointSet, Update
from .errors import NoData, NXDomain, ResolveError, ResolveTimeout, ServerFailure, UpstreamDown
from .policy import Policy
from .resolver import Answer, Resolver, watch
from .watch import Updates

__all__ = [
    "Answer",
    "Endpoint",
    "EndpointSet",
    "NXDomain",
    "NoData",
    "Policy",
    "ResolveError",
    "ResolveTimeout",
    "Resolver",
    "ServerFailure",
    "Update",
    "Updates",
    "UpstreamDown",
    "watch",
]

__version__ = "0.1.0"
