"""DNS names and record types as users write them: validation, canonical form, search list.

Everything a user passes in is checked here first, so a bad name or type is a
``ValueError`` that names the input, before any query is sent.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.rdatatype
import dns.resolver

from . import wire

__all__ = [
    "absolute_name",
    "is_absolute",
    "search_candidates",
    "system_config",
    "type_code",
    "type_text",
    "within",
]


def type_text(qtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(qtype))


def type_code(rdtype: str | int) -> int:
    try:
        if isinstance(rdtype, str):
            return int(dns.rdatatype.from_text(rdtype.strip().upper()))
        if isinstance(rdtype, int) and not isinstance(rdtype, bool) and 0 < rdtype < 65536:
            return int(rdtype)
    except (dns.rdatatype.UnknownRdatatype, ValueError):
        pass
    raise ValueError(f"unknown record type {rdtype!r}")


def absolute_name(name: str, what: str) -> str:
    """Canonical lowercase absolute form, or a ValueError that names the invalid input."""
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string, got {name!r}")
    if not name or name.strip() != name:
        raise ValueError(f"{what} {name!r} is not a valid DNS name")
    try:
        canonical, _end = wire.read_name(wire.encode_name(name), 0)
    except (ValueError, wire.WireError) as exc:
        raise ValueError(f"{what} {name!r} is not a valid DNS name: {exc}") from None
    return canonical


def is_absolute(name: str) -> bool:
    """Whether the name ends in an unescaped dot (``a\\.`` is a relative name)."""
    backslashes = len(name[:-1]) - len(name[:-1].rstrip("\\"))
    return name.endswith(".") and backslashes % 2 == 0


def within(name: str, zone: str) -> bool:
    return zone == "." or name == zone or name.endswith("." + zone)


def search_candidates(name: str, search: Sequence[str], ndots: int) -> tuple[str, ...]:
    """The absolute names to try for ``name``, in order, as stub resolvers do (resolv.conf).

    An absolute name is tried alone. A relative one is tried as-is first when
    it has at least ``ndots`` dots, else after the search domains; a suffix
    that makes the name too long is skipped.
    """
    absolute = absolute_name(name, "name")
    if is_absolute(name):
        return (absolute,)
    searched = []
    for domain in search:
        try:
            searched.append(absolute_name(f"{absolute}{domain}".rstrip(".") + ".", "name"))
        except ValueError:
            continue
    if absolute.count(".") - 1 >= ndots:
        return (absolute, *searched)
    return (*searched, absolute)


def system_config() -> tuple[list[str], list[str], int]:
    """Nameservers ("host:port"), search list, ndots: /etc/resolv.conf as dnspython reads it."""
    try:
        system = dns.resolver.Resolver(configure=True)
    except dns.resolver.NoResolverConfiguration as exc:
        raise ValueError(f"no nameservers given and the system has none: {exc}") from None
    servers = []
    for ns in system.nameservers:
        text = str(ns)
        host = f"[{text}]" if ":" in text else text
        servers.append(f"{host}:{system.port}")
    search = [s.to_text() for s in system.search]
    return servers, search, system.ndots if system.ndots is not None else 1
