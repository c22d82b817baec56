"""Adapters that make Python HTTP clients resolve through srvwatch.

The adapters live in submodules behind extras (``srvwatch[aiohttp]``,
``srvwatch[httpx]``), so the core never imports an HTTP client. What they
share is here: which hosts are SRV services, and in which order to try the
addresses of a host, so both clients balance and fail over the same way.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Mapping

from .. import Resolver

__all__ = ["Targets"]

_LOOPBACK = ("127.0.0.1", "::1")


def _host_key(host: str) -> str:
    """``API.internal.`` and ``api.internal`` are one host, as they are to a URL parser."""
    return host.rstrip(".").lower()


def _is_ip(host: str) -> bool:
    # A name ending in a letter is not an IPv4 literal, and without ":" not an IPv6 one:
    # most hosts never pay for ipaddress's ValueError (microseconds per connection).
    if not host[-1:].isdigit() and ":" not in host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _family_of(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class Targets:
    """Where to connect for a host: ``(address, port)`` pairs, the first choice first.

    A host named in ``services`` is an SRV service: its endpoints come in
    RFC 2782 order (lowest priority first, weighted random within a
    priority), drawn afresh on every call, so each new connection is a new
    weighted pick and the rest of the list is its failover order. The SRV
    port replaces the URL's. Any other host is resolved with A and AAAA
    and its addresses are shuffled per call: srvwatch keeps them in one
    canonical order, and without the shuffle every connection would go to
    the lowest address.

    ``localhost`` (and names under it) is loopback without a query (RFC
    6761): the system resolver answers it from ``/etc/hosts``, which a DNS
    resolver never reads. IP literals are returned as they are.
    """

    def __init__(
        self,
        resolver: Resolver,
        services: Mapping[str, str] | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(resolver, Resolver):
            raise TypeError(f"resolver must be a srvwatch.Resolver, got {resolver!r}")
        self.resolver = resolver
        self.services: dict[str, str] = {}
        for host, srv_name in (services or {}).items():
            if not isinstance(host, str) or not _host_key(host):
                raise ValueError(f"services: host {host!r} must be a non-empty string")
            if not isinstance(srv_name, str) or not srv_name.strip("."):
                raise ValueError(f"services[{host!r}]: SRV name {srv_name!r} must be a DNS name")
            self.services[_host_key(host)] = srv_name
        self._rng = rng if rng is not None else random.Random()

    def service(self, host: str) -> str | None:
        """The SRV name ``host`` maps to, or None for a plain host."""
        return self.services.get(_host_key(host))

    async def resolve(
        self, host: str, port: int, family: int = socket.AF_UNSPEC
    ) -> list[tuple[str, int]]:
        """The ``(address, port)`` pairs to try for ``host``, in order, of ``family`` only.

        Raises :class:`srvwatch.ResolveError` when DNS fails with nothing
        stale to serve, and :class:`LookupError` when the answer has no
        address of the asked family (or the SRV name offers no service).
        """
        srv_name = self.service(host)
        if srv_name is not None:
            endpoints = await self.resolver.resolve_srv(srv_name)
            pairs = [
                (address, ep.port)
                for ep in endpoints.ordered(self._rng)
                for address in ep.addresses
                if _wanted(address, family)
            ]
            if not pairs:
                what = "offers no service" if endpoints.no_service else "has no usable address"
                raise LookupError(f"{host}: SRV {srv_name} {what}{_family_text(family)}")
            return pairs
        key = _host_key(host)
        if _is_ip(key):
            addresses: tuple[str, ...] = (key,)
        elif key == "localhost" or key.endswith(".localhost"):
            addresses = _LOOPBACK
        else:
            addresses = await self.resolver.resolve_addresses(host)
        wanted = [address for address in addresses if _wanted(address, family)]
        if not wanted:
            raise LookupError(f"{host} has no address{_family_text(family)}")
        if len(wanted) > 1:
            wanted = self._rng.sample(wanted, len(wanted))
        return [(address, port) for address in wanted]


def _wanted(address: str, family: int) -> bool:
    return family == socket.AF_UNSPEC or _family_of(address) == family


def _family_text(family: int) -> str:
    if family == socket.AF_INET:
        return " of family AF_INET"
    if family == socket.AF_INET6:
        return " of family AF_INET6"
    return ""
