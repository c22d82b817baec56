"""What one upstream reply says about one question, decided without I/O.

A reply is walked once by :func:`wire.parse`; here its CNAME chain is
followed, the records of the asked type are decoded and checked, and the
outcome is one of three values: records (:class:`Positive`), authoritative
emptiness (:class:`Negative`), or a chain that leaves the reply
(:class:`Follow`). This is the boundary where wire errors become DNS
errors: any damage found while decoding is a :class:`ServerFailure` naming
the server, so no parser exception ever reaches a caller, and a damaged
reply is remembered like any SERVFAIL instead of replacing a good answer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from . import wire
from .errors import ServerFailure
from .names import type_text, within
from .policy import Policy

__all__ = [
    "MAX_CNAME_HOPS",
    "Follow",
    "Negative",
    "Positive",
    "Reply",
    "interpret",
    "malformed_is_server_failure",
    "refreshed",
]

MAX_CNAME_HOPS = 8
"""CNAMEs followed per lookup, within one reply and across replies together."""

_ADDRESS_TYPES = (wire.TYPE_A, wire.TYPE_AAAA)
_NAME_TYPES = (wire.TYPE_CNAME, wire.TYPE_NS, wire.TYPE_PTR)


class Reply(NamedTuple):
    """A response that answers the question asked, and the nameserver that sent it."""

    data: bytes
    msg: wire.Message
    server: str


class Positive(NamedTuple):
    """Records of the asked type, decoded and checked; ``ttl`` is the wire minimum, unclamped.

    ``values`` hold one decoded value per record: address text for A/AAAA,
    ``(priority, weight, port, target)`` for SRV, a name for CNAME/NS/PTR,
    dnspython rdata for every other type. ``glue`` maps an SRV target to
    the addresses the additional section gave for it (in bailiwick only,
    RFC 5452 section 6); ``glue_ttl`` is their smallest TTL.
    """

    data: bytes
    msg: wire.Message
    records: tuple[wire.Record, ...]
    values: tuple[Any, ...]
    canonical_name: str
    ttl: float
    glue: dict[str, list[str]]
    glue_ttl: float
    server: str


class Negative(NamedTuple):
    """NXDOMAIN or NODATA, with its RFC 2308 TTL (clamped) and the message to raise."""

    data: bytes
    msg: wire.Message
    nxdomain: bool
    ttl: float
    message: str
    server: str


class Follow(NamedTuple):
    """The chain leaves this reply: ask about ``target`` next."""

    target: str
    ttl: float
    """The smallest TTL along the chain so far (the answer may be kept no longer)."""
    hops: int
    """CNAMEs followed so far, this reply's included."""


@contextmanager
def malformed_is_server_failure(server: str, name: str, qtype: int) -> Iterator[None]:
    """Turn damage found while decoding a reply into the ServerFailure a caller can handle."""
    try:
        yield
    except wire.WireError as exc:
        raise _malformed(server, name, qtype, exc) from None


def interpret(
    reply: Reply,
    fqdn: str,
    qtype: int,
    policy: Policy,
    *,
    seen: set[str],
    hops: int = 0,
    chain_ttl: float = math.inf,
) -> Positive | Negative | Follow:
    """Decide what ``reply`` (to a question about ``seen``'s last name) says about ``fqdn``.

    ``seen`` holds every name of the chain so far (``fqdn`` first) and is
    extended here; a name seen twice is a CNAME loop, and more than
    :data:`MAX_CNAME_HOPS` links is a chain too long: both are server
    failures, as unbound answers them, never an empty answer.
    """
    data, msg, server = reply
    try:
        return _interpret(data, msg, server, fqdn, qtype, policy, seen, hops, chain_ttl)
    except wire.WireError as exc:
        raise _malformed(server, fqdn, qtype, exc) from None


def _interpret(
    data: bytes,
    msg: wire.Message,
    server: str,
    fqdn: str,
    qtype: int,
    policy: Policy,
    seen: set[str],
    hops: int,
    chain_ttl: float,
) -> Positive | Negative | Follow:
    current = msg.qname
    answers = msg.answers
    while True:
        records = tuple(
            [r for r in answers if r.name == current and r.rdtype == qtype and r.rdclass == 1]
        )
        if records or qtype == wire.TYPE_CNAME:
            break
        cname = next(
            (r for r in answers if r.name == current and r.rdtype == wire.TYPE_CNAME), None
        )
        if cname is None:
            break
        hops += 1
        target = wire.decode_cname(data, cname)
        if hops > MAX_CNAME_HOPS:
            raise _chain_failure(fqdn, qtype, f"CNAME chain longer than {MAX_CNAME_HOPS}")
        if target in seen:
            raise _chain_failure(fqdn, qtype, f"CNAME loop at {target}")
        seen.add(target)
        chain_ttl = min(chain_ttl, cname.ttl)
        current = target
    if records:
        values = _decode(data, msg, records, qtype)
        glue: dict[str, list[str]] = {}
        glue_ttl = math.inf
        if qtype == wire.TYPE_SRV and msg.additional:
            glue, glue_ttl = _glue(data, msg, fqdn, values)
        ttl = min(chain_ttl, min([r.ttl for r in records]))
        return Positive(data, msg, records, values, current, ttl, glue, glue_ttl, server)
    soa = next((r for r in msg.authority if r.rdtype == wire.TYPE_SOA), None)
    if msg.rcode == wire.RCODE_NXDOMAIN:
        message = f"{fqdn} {type_text(qtype)}: no such name (NXDOMAIN)"
        return Negative(data, msg, True, _negative_ttl(data, soa, policy), message, server)
    if current != msg.qname and soa is None:
        return Follow(current, chain_ttl, hops)
    message = f"{fqdn} has no {type_text(qtype)} records (NODATA)"
    return Negative(data, msg, False, _negative_ttl(data, soa, policy), message, server)


def _malformed(server: str, name: str, qtype: int, exc: wire.WireError) -> ServerFailure:
    return ServerFailure(
        f"{name} {type_text(qtype)}: malformed answer from {server}: {exc}",
        name=name,
        rdtype=type_text(qtype),
    )


def _chain_failure(fqdn: str, qtype: int, why: str) -> ServerFailure:
    return ServerFailure(f"{fqdn} {type_text(qtype)}: {why}", name=fqdn, rdtype=type_text(qtype))


def _negative_ttl(data: bytes, soa: wire.Record | None, policy: Policy) -> float:
    if soa is None:
        return policy.negative_ttl(None, None)
    return policy.negative_ttl(soa.ttl, wire.decode_soa(data, soa).minimum)


def _decode(
    data: bytes, msg: wire.Message, records: tuple[wire.Record, ...], qtype: int
) -> tuple[Any, ...]:
    """Every record's value, so a damaged one fails here, once, and never on a cache hit."""
    if qtype == wire.TYPE_A:
        return tuple([wire.decode_a(data, rr) for rr in records])
    if qtype == wire.TYPE_AAAA:
        return tuple([wire.decode_aaaa(data, rr) for rr in records])
    if qtype == wire.TYPE_SRV:
        names = msg.names
        return tuple([wire.decode_srv(data, rr, names) for rr in records])
    if qtype in _NAME_TYPES:
        return tuple([wire.decode_cname(data, rr) for rr in records])
    return tuple([wire.decode_rdata(data, rr) for rr in records])


def address_of(data: bytes, rr: wire.Record) -> str:
    """The address text of an A or AAAA record."""
    return wire.decode_a(data, rr) if rr.rdtype == wire.TYPE_A else wire.decode_aaaa(data, rr)


def _glue(
    data: bytes, msg: wire.Message, fqdn: str, values: tuple[Any, ...]
) -> tuple[dict[str, list[str]], float]:
    """Addresses of SRV targets from the additional section, in bailiwick only (RFC 5452 §6)."""
    targets = {value[3] for value in values}
    bailiwick = _bailiwick(msg, fqdn)
    glue: dict[str, list[str]] = {}
    ttl = math.inf
    for rr in msg.additional:
        if rr.rdtype in _ADDRESS_TYPES and rr.name in targets and within(rr.name, bailiwick):
            glue.setdefault(rr.name, []).append(address_of(data, rr))
            ttl = min(ttl, rr.ttl)
    return glue, ttl


def refreshed(previous: Positive, data: bytes) -> Positive:
    """``previous`` again, from a reply identical to its own but for the ID and TTL fields.

    Nothing is parsed or decoded: the values, glue and offsets are reused
    and only the TTLs are read again (a cache upstream counts them down).
    With the TTLs the same too, ``previous`` itself comes back (its ID aside,
    the same bytes).
    """
    if data[2:] == previous.data[2:]:
        # The TTLs too (an authoritative server's): the same answer, kept as it is, so the
        # store moves the times of its entry and nothing new is allocated or kept.
        return previous
    msg = previous.msg
    ttl = min([_ttl_at(data, rr.ttl_offset) for rr in msg.answers])
    glue_ttl = math.inf
    if previous.glue:
        glue = previous.glue
        ttls = [_ttl_at(data, rr.ttl_offset) for rr in msg.additional if rr.name in glue]
        glue_ttl = min(ttls) if ttls else math.inf
    # Built directly: NamedTuple._replace costs several times as much, once per refresh.
    return Positive(
        data,
        msg,
        previous.records,
        previous.values,
        previous.canonical_name,
        ttl,
        previous.glue,
        glue_ttl,
        previous.server,
    )


def _ttl_at(data: bytes, offset: int) -> int:
    ttl = int.from_bytes(data[offset : offset + 4], "big")
    return 0 if ttl > 0x7FFFFFFF else ttl  # RFC 2181 section 8


def _bailiwick(msg: wire.Message, fqdn: str) -> str:
    """The zone the server vouched for: its SOA/NS owner, else the service's parent domain."""
    for rr in msg.authority:
        if rr.rdtype in (wire.TYPE_SOA, wire.TYPE_NS) and within(fqdn, rr.name):
            return rr.name
    return _parent_domain(fqdn)


@functools.lru_cache(maxsize=4096)
def _parent_domain(fqdn: str) -> str:
    """``_http._tcp.api.svc.test.`` -> ``svc.test.``: the service labels and the host go."""
    labels = fqdn.rstrip(".").split(".")
    while labels and labels[0].startswith("_"):
        labels.pop(0)
    parent = labels[1:] if len(labels) > 2 else labels
    return ".".join(parent) + "." if parent else "."
