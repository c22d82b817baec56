"""DNS names and record types as users write them: validation, canonical form, search list.

Everything a user passes in is checked here first, so a bad name or type is a
``ValueError`` that names the input, before any query is sent.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence

import dns.rdatatype

from . import wire
from .address import format_hostport

__all__ = [
    "absolute_name",
    "check_int",
    "is_absolute",
    "search_candidates",
    "search_list",
    "system_config",
    "type_code",
    "type_text",
    "within",
]

log = logging.getLogger(__name__)

_MAX_NDOTS = 15  # glibc's cap for "options ndots:N"
_ESCAPE = re.compile(r"\\.")


def type_text(qtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(qtype))


def type_code(rdtype: str | int) -> int:
    """The numeric query type, or a ValueError naming the input.

    Meta types (OPT, TSIG, TKEY, IXFR, AXFR, MAILA, MAILB, ANY and the rest of
    128-255) and type 0 are rejected: they are not data a name can hold, and a
    server answers them with errors or nothing, which would read as NoData.
    """
    code: int | None = None
    if isinstance(rdtype, str):
        text = rdtype.strip().upper()
        if text.isascii():
            try:
                code = int(dns.rdatatype.from_text(text))
            except (dns.rdatatype.UnknownRdatatype, ValueError):
                code = None
    elif isinstance(rdtype, int) and not isinstance(rdtype, bool) and 0 <= rdtype < 65536:
        code = int(rdtype)
    if code is None:
        raise ValueError(f"unknown record type {rdtype!r}")
    if code == 0 or dns.rdatatype.is_metatype(dns.rdatatype.RdataType.make(code)):
        raise ValueError(f"record type {rdtype!r} is a meta type, not one a lookup can ask for")
    return code


def check_int(value: object, what: str, minimum: int, maximum: int | None = None) -> int:
    """An integer option, or a ValueError naming it: None, bool, str and float are refused.

    ``1.5`` or ``"3"`` for a count is a bug in the caller, not a value to round.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"{what} must be an integer {bounds}, got {value!r}")
    return int(value)


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


def search_list(search: object, what: str = "search") -> tuple[str, ...]:
    """The search domains as canonical absolute names, duplicates dropped, order kept.

    A string is one domain, never a list of one-letter domains; None is none.
    """
    if search is None:
        return ()
    if isinstance(search, str):
        items: Iterable[object] = (search,)
    elif isinstance(search, bytes) or not isinstance(search, Iterable):
        raise ValueError(f"{what} must be a domain or a list of domains, got {search!r}")
    else:
        items = search
    domains = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(f"{what}[{i}] must be a string, got {item!r}")
        domains.append(absolute_name(item, f"{what} domain"))
    return tuple(dict.fromkeys(domains))


def _dots(canonical: str) -> int:
    """Unescaped dots in a canonical absolute name, the final one excluded."""
    escaped = sum(1 for escape in _ESCAPE.findall(canonical) if escape == "\\.")
    return canonical.count(".") - escaped - 1


def search_candidates(name: str, search: Sequence[str], ndots: int) -> tuple[str, ...]:
    """The absolute names to try for ``name``, in order, as stub resolvers do (resolv.conf).

    An absolute name is tried alone. A relative one is tried as-is first when
    it has at least ``ndots`` dots, else after the search domains; a suffix
    that makes the name too long is skipped, and a name that two suffixes
    make alike (``.`` and none) is tried once.
    """
    absolute = absolute_name(name, "name")
    if is_absolute(name):
        return (absolute,)
    searched = []
    for domain in search:
        if domain == ".":
            searched.append(absolute)
            continue
        try:
            searched.append(absolute_name(absolute + domain, "name"))
        except ValueError:
            continue
    if _dots(absolute) >= ndots:
        return tuple(dict.fromkeys((absolute, *searched)))
    return tuple(dict.fromkeys((*searched, absolute)))


def system_config(path: str = "/etc/resolv.conf") -> tuple[list[str], list[str], int]:
    """Nameservers (``"host:port"``), search list and ndots from a resolv.conf file.

    Read here rather than by dnspython so that a bad line is skipped with a
    warning naming the file and line, instead of one typo rejecting the whole
    file (or an exception escaping). Only a file with no usable nameserver
    is an error. As in glibc, the last ``search`` or ``domain`` line wins.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ValueError(f"no nameservers given and {path} cannot be read: {exc}") from None
    servers: dict[str, None] = {}
    search: list[str] = []
    ndots = 1
    for lineno, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith(("#", ";")):
            continue
        keyword, args = tokens[0], tokens[1:]
        where = f"{path} line {lineno}"
        if keyword == "nameserver":
            try:
                address = ipaddress.ip_address(args[0]) if args else None
            except ValueError:
                address = None
            if address is None:
                log.warning("%s: skipped, not a nameserver IP address: %r", where, line)
            else:
                servers[format_hostport(address.compressed, 53)] = None
        elif keyword in ("search", "domain"):
            search = []
            for domain in args if keyword == "search" else args[:1]:
                try:
                    search.append(absolute_name(domain, "search domain"))
                except ValueError as exc:
                    log.warning("%s: search domain skipped: %s", where, exc)
        elif keyword == "options":
            for option in args:
                if option.startswith("ndots:"):
                    value = option[len("ndots:") :]
                    if value.isascii() and value.isdigit():
                        digits = value.lstrip("0") or "0"
                        ndots = _MAX_NDOTS if len(digits) > 2 else min(int(digits), _MAX_NDOTS)
                    else:
                        log.warning("%s: bad option %r ignored", where, option)
    if not servers:
        raise ValueError(f"no nameservers given and {path} has no usable nameserver line")
    return list(servers), list(dict.fromkeys(search)), ndots
