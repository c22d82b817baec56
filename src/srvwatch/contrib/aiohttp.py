"""aiohttp resolving through srvwatch: a TTL floor, coalescing, serve-stale and SRV balancing.

Pass it to the connector with the connector's own DNS cache off::

    connector = aiohttp.TCPConnector(resolver=Resolver(r, services), use_dns_cache=False)

aiohttp's cache keeps every answer for a fixed 10 s (``ttl_dns_cache``) and
hands its addresses out round-robin; with it on, a changed record is seen up
to 10 s late and the RFC 2782 order drawn for one connection is replayed for
the others. srvwatch caches by the record's TTL (clamped) already, so with
``use_dns_cache=False`` each new connection asks srvwatch, which answers from
memory, and gets a fresh weighted order.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Mapping

from aiohttp.abc import AbstractResolver, ResolveResult

from .. import ResolveError
from .. import Resolver as _SrvwatchResolver
from . import Targets

__all__ = ["Resolver"]

_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class Resolver(AbstractResolver):
    """An ``aiohttp.abc.AbstractResolver`` backed by a :class:`srvwatch.Resolver`.

    ``services`` maps a URL host to an SRV name
    (``{"api.internal": "_http._tcp.api.svc.cluster.local"}``): such a host
    resolves to its endpoints' addresses with the SRV ports, in RFC 2782
    order, and aiohttp's connector tries them in that order, so a refused
    connection moves on to the next endpoint. Any other host resolves with
    A and AAAA. ``hostname`` stays the name asked, and aiohttp takes TLS
    SNI and certificate checks from the URL, so they keep the original host.

    Failures are raised as ``OSError``, as aiohttp's own resolvers do, so
    callers see ``aiohttp.ClientConnectorDNSError``; the srvwatch error is
    its ``__cause__``.
    """

    def __init__(
        self,
        resolver: _SrvwatchResolver,
        services: Mapping[str, str] | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.targets = Targets(resolver, services, rng=rng)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            pairs = await self.targets.resolve(host, port, family)
        except (ResolveError, LookupError) as exc:
            raise OSError(None, f"cannot resolve {host}: {exc}") from exc
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=target_port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=_FLAGS,
            )
            for address, target_port in pairs
        ]

    async def close(self) -> None:
        """Nothing to release: the srvwatch resolver belongs to whoever passed it in."""
