"""Service endpoints as values: what an SRV answer says, in a form that compares and diffs.

An :class:`EndpointSet` keeps its endpoints in one canonical order so that two
answers with the same records compare equal whatever order the server sent them
in; watchers can then tell "nothing changed" from "something changed" without
sorting. Selection (:meth:`EndpointSet.ordered`, :meth:`EndpointSet.pick`)
follows RFC 2782 and runs per request, so the priority groups and their weight
sums are computed once when the set is built, not on every call.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
import random
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from .names import absolute_name
from .wire import check_u16

__all__ = ["Endpoint", "EndpointSet", "Update", "canonical_addresses", "changed", "diff"]


EndpointKey = tuple[str, int, int, int, tuple[str, ...]]
"""The identity of an endpoint for diffing: (target, port, priority, weight, addresses)."""

WireRecord = tuple[int, str, int, int, tuple[str, ...]]
"""A decoded SRV record with its target's addresses: (priority, target, port, weight,
addresses), fields in canonical order, so sorting these tuples sorts the endpoints."""


def _normalize_name(value: object, what: str) -> str:
    """The wire decoder's canonical form (lowercase, absolute, escaped), so names compare equal.

    Escape-aware: a DNS-SD instance label may hold dots, spaces and
    backslashes (``printer v2\\.._ipp._tcp``), and every name a lookup
    accepts must make a valid set.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}: {value!r}")
    return _canonical_name(value, what)


@functools.lru_cache(maxsize=4096)
def _canonical_name(value: str, what: str) -> str:
    # Cached: sets are rebuilt for every stale flip and watch update, with the few
    # names a process uses, and the encode-decode round trip costs microseconds.
    return absolute_name(value, what)


def _address_sort_key(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> tuple[int, int, str]:
    # Numeric, IPv4 before IPv6: "10.0.0.2" sorts before "10.0.0.10".
    return (addr.version, int(addr), str(addr))


def _normalize_addresses(value: object) -> tuple[str, ...]:
    """Canonical text, deduplicated, sorted: the same addresses always give the same tuple."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"Endpoint addresses must be an iterable of str, got {value!r}")
    parsed: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f"Endpoint addresses must contain str, got {item!r}")
        try:
            parsed.add(ipaddress.ip_address(item))
        except ValueError:
            raise ValueError(f"Endpoint addresses: {item!r} is not an IP address") from None
    return tuple(str(a) for a in sorted(parsed, key=_address_sort_key))


def _packed_key(address: str) -> tuple[int, bytes]:
    packed = socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
    return (len(packed), packed)


def canonical_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """Canonical address text, deduplicated, in the same order as :class:`Endpoint` uses.

    For text that is canonical already (as the wire decoder produces): IPv4
    before IPv6, numeric within each, without building ipaddress objects.
    """
    if isinstance(addresses, (tuple, list)) and len(addresses) < 2:
        return tuple(addresses)  # one address (one glue record) is already in order
    return tuple(sorted(dict.fromkeys(addresses), key=_packed_key))


@dataclass(frozen=True, slots=True, order=False)
class Endpoint:
    """One SRV record (RFC 2782) plus the addresses its target resolved to.

    Equality covers every field, addresses included: a target whose addresses
    change is a different endpoint to a client holding connections to it.
    The target is normalized to lowercase with a trailing dot and the addresses
    to canonical, numerically sorted text, so equal records are equal values.
    """

    target: str
    port: int
    priority: int = 0
    weight: int = 0
    addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", _normalize_name(self.target, "Endpoint target"))
        check_u16(self.port, "Endpoint port")
        check_u16(self.priority, "Endpoint priority")
        check_u16(self.weight, "Endpoint weight")
        object.__setattr__(self, "addresses", _normalize_addresses(self.addresses))

    @classmethod
    def from_wire(
        cls, target: str, port: int, priority: int, weight: int, addresses: Iterable[str]
    ) -> Endpoint:
        """Build from values the wire decoder produced, skipping re-validation.

        The decoder already yields lowercase absolute names, 16-bit integers
        and canonical address text, and re-parsing every address with
        :mod:`ipaddress` doubled the cost of a cold lookup.
        """
        return _new_endpoint(target, port, priority, weight, canonical_addresses(addresses))

    def key(self) -> EndpointKey:
        """A plain tuple with the endpoint's identity, for sets, logs and JSON."""
        return (self.target, self.port, self.priority, self.weight, self.addresses)


def _endpoint_maker() -> Callable[[str, int, int, int, tuple[str, ...]], Endpoint]:
    """A constructor for trusted values that fills the slots directly, skipping validation."""
    new = object.__new__
    set_target, set_port, set_priority, set_weight, set_addresses = (
        getattr(Endpoint, f.name).__set__ for f in dataclasses.fields(Endpoint)
    )

    def make(
        target: str, port: int, priority: int, weight: int, addresses: tuple[str, ...]
    ) -> Endpoint:
        ep: Endpoint = new(Endpoint)
        set_target(ep, target)
        set_port(ep, port)
        set_priority(ep, priority)
        set_weight(ep, weight)
        set_addresses(ep, addresses)
        return ep

    return make


_new_endpoint = _endpoint_maker()


def _canonical_key(ep: Endpoint) -> tuple[int, str, int, int, tuple[str, ...]]:
    return (ep.priority, ep.target, ep.port, ep.weight, ep.addresses)


class _Group(NamedTuple):
    """One priority level, split for RFC 2782 weighted selection."""

    weighted: tuple[Endpoint, ...]  # weight > 0, canonical order
    zeros: tuple[Endpoint, ...]  # weight == 0, canonical order
    total: int  # sum of weights


def _build_groups(endpoints: tuple[Endpoint, ...]) -> tuple[_Group, ...]:
    """Split the (priority-sorted) endpoints into priority groups with one linear scan."""
    groups: list[_Group] = []
    i, n = 0, len(endpoints)
    while i < n:
        prio = endpoints[i].priority
        weighted: list[Endpoint] = []
        zeros: list[Endpoint] = []
        total = 0
        while i < n and endpoints[i].priority == prio:
            ep = endpoints[i]
            if ep.weight:
                weighted.append(ep)
                total += ep.weight
            else:
                zeros.append(ep)
            i += 1
        groups.append(_Group(tuple(weighted), tuple(zeros), total))
    return tuple(groups)


def _below(rnd: Callable[[], float], n: int) -> int:
    """Uniform integer in [0, n); the same floor(random() * n) idiom random.choices uses."""
    return min(int(rnd() * n), n - 1)


def _select(
    weighted: Sequence[Endpoint],
    zeros: Sequence[Endpoint],
    total: int,
    rnd: Callable[[], float],
) -> tuple[bool, int]:
    """One RFC 2782 weighted draw among the not-yet-ordered records of a priority.

    Returns ``(from_zeros, index)``. The RFC puts weight-0 records first, draws
    an integer uniformly from ``[0, total]`` inclusive and takes the first record
    whose running weight sum reaches it, so weight-0 records win only on a draw
    of 0 (which of them is "any order": here uniform), or when nothing else is
    left. No draw at all when a single record remains.
    """
    if len(weighted) + len(zeros) == 1:
        return (not weighted, 0)
    if total == 0:
        return (True, _below(rnd, len(zeros)))
    r = _below(rnd, total + 1)
    if r == 0 and zeros:
        return (True, 0 if len(zeros) == 1 else _below(rnd, len(zeros)))
    running = 0
    for i, ep in enumerate(weighted):
        running += ep.weight
        if running >= r:
            return (False, i)
    return (False, len(weighted) - 1)  # unreachable: r <= total


@dataclass(frozen=True, slots=True)
class EndpointSet:
    """The endpoints of one SRV name at one moment, in canonical order.

    Canonical order is by (priority, target, port, weight, addresses), exact
    duplicates removed, so sets built from the same records compare equal.
    ``==`` compares every field including ``ttl``; use :func:`changed` to ask
    whether a subscriber would care. ``no_service`` means the zone said the
    service is decidedly not offered (a single SRV record with target ``.``):
    such a set is always empty.
    """

    name: str
    endpoints: tuple[Endpoint, ...]
    ttl: float = 0.0
    stale: bool = False
    no_service: bool = False
    _groups: tuple[_Group, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _normalize_name(self.name, "EndpointSet name"))
        eps = self.endpoints
        if not isinstance(eps, Iterable):
            raise TypeError(f"EndpointSet endpoints must be an iterable, got {eps!r}")
        items = tuple(eps)
        for ep in items:
            if not isinstance(ep, Endpoint):
                raise TypeError(f"EndpointSet endpoints must contain Endpoint, got {ep!r}")
            if ep.target == ".":
                raise ValueError(
                    f"EndpointSet endpoints: target '.' means no service; "
                    f"pass no_service=True instead (name {self.name!r})"
                )
        canonical = tuple(sorted(set(items), key=_canonical_key))
        object.__setattr__(self, "endpoints", canonical)
        ttl = self.ttl
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise TypeError(f"EndpointSet ttl must be a number, got {ttl!r}")
        if not (math.isfinite(ttl) and ttl >= 0):
            raise ValueError(f"EndpointSet ttl must be finite and >= 0, got {ttl!r}")
        object.__setattr__(self, "ttl", float(ttl))
        if self.no_service and canonical:
            raise ValueError(
                f"EndpointSet no_service=True must have no endpoints, got {len(canonical)}"
            )
        object.__setattr__(self, "_groups", _build_groups(canonical))

    @classmethod
    def build(
        cls,
        name: str,
        endpoints: Iterable[Endpoint],
        *,
        ttl: float = 0.0,
        stale: bool = False,
        no_service: bool = False,
    ) -> EndpointSet:
        """Build from records as they came off the wire.

        A lone target ``.`` (after removing duplicates) becomes ``no_service``
        (RFC 2782); a ``.`` among other records is malformed and dropped, since
        nobody can connect to it.
        """
        eps = set(endpoints)
        roots = {ep for ep in eps if ep.target == "."}
        if roots:
            eps -= roots
            if not eps:
                no_service = True
        return cls(name, tuple(eps), ttl=ttl, stale=stale, no_service=no_service)

    @classmethod
    def from_wire(
        cls, name: str, records: Iterable[WireRecord], *, ttl: float, stale: bool = False
    ) -> EndpointSet:
        """Build from decoded SRV records, skipping re-validation (the cold lookup's hot path).

        ``records`` are ``(priority, target, port, weight, addresses)`` tuples:
        canonical order is their natural tuple order, so deduplicating and
        sorting them runs in C before any :class:`Endpoint` exists. ``name``
        and every target must be canonical (lowercase, absolute, not ``.``),
        the addresses as :func:`canonical_addresses` returns them and ``ttl``
        a finite number >= 0: all true of what the wire decoder produces.
        """
        canonical = tuple(
            _new_endpoint(target, port, priority, weight, addresses)
            for priority, target, port, weight, addresses in sorted(set(records))
        )
        result = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(result, "name", name)
        setattr_(result, "endpoints", canonical)
        setattr_(result, "ttl", float(ttl))
        setattr_(result, "stale", stale)
        setattr_(result, "no_service", False)
        setattr_(result, "_groups", _build_groups(canonical))
        return result

    def __len__(self) -> int:
        return len(self.endpoints)

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self.endpoints)

    def __bool__(self) -> bool:
        return bool(self.endpoints)

    def __contains__(self, item: object) -> bool:
        return item in self.endpoints

    def ordered(self, rng: random.Random | None = None) -> list[Endpoint]:
        """All endpoints in RFC 2782 order: priorities ascending, weighted-random within each.

        Without ``rng`` the process-wide ``random`` generator is used, which is
        reseeded after ``fork()`` so pre-forked workers do not all pick alike.
        """
        rnd = random.random if rng is None else rng.random
        out: list[Endpoint] = []
        for group in self._groups:
            if len(group.weighted) + len(group.zeros) == 1:
                out.extend(group.weighted or group.zeros)
                continue
            weighted = list(group.weighted)
            zeros = list(group.zeros)
            total = group.total
            while weighted or zeros:
                from_zeros, i = _select(weighted, zeros, total, rnd)
                if from_zeros:
                    out.append(zeros.pop(i))
                else:
                    ep = weighted.pop(i)
                    total -= ep.weight
                    out.append(ep)
        return out

    def pick(self, rng: random.Random | None = None) -> Endpoint | None:
        """The first endpoint :meth:`ordered` would return, in O(size of the top priority).

        It consumes the same random draws as the first step of :meth:`ordered`,
        so with equally seeded generators both give the same endpoint.
        """
        if not self._groups:
            return None
        group = self._groups[0]
        rnd = random.random if rng is None else rng.random
        from_zeros, i = _select(group.weighted, group.zeros, group.total, rnd)
        return group.zeros[i] if from_zeros else group.weighted[i]

    def with_ttl(self, ttl: float, stale: bool) -> EndpointSet:
        """The same endpoints with another TTL and stale flag: no re-validation, no re-sorting.

        The same object when nothing differs (an unchanged refresh at the TTL floor).
        """
        if ttl == self.ttl and stale == self.stale:
            return self
        result = object.__new__(EndpointSet)
        setattr_ = object.__setattr__
        setattr_(result, "name", self.name)
        setattr_(result, "endpoints", self.endpoints)
        setattr_(result, "ttl", float(ttl))
        setattr_(result, "stale", stale)
        setattr_(result, "no_service", self.no_service)
        setattr_(result, "_groups", self._groups)
        return result

    def with_stale(self, stale: bool) -> EndpointSet:
        """The same answer, flagged (or no longer flagged) as served from stale data."""
        if stale == self.stale:
            return self
        return dataclasses.replace(self, stale=stale)

    def key(self) -> frozenset[EndpointKey]:
        """The endpoints' identities, for diffing and for comparing across processes."""
        return frozenset(ep.key() for ep in self.endpoints)


@dataclass(frozen=True, slots=True)
class Update:
    """What a watch subscriber receives: the full current set plus what changed since the last.

    ``version`` starts at 1 and grows by one per update of a watch, so a
    subscriber that was conflated (skipped intermediate states) can tell.
    ``error`` carries the text of the failure that made the answer stale.
    """

    name: str
    endpoints: EndpointSet
    added: tuple[Endpoint, ...]
    removed: tuple[Endpoint, ...]
    stale: bool
    error: str | None
    version: int

    def __post_init__(self) -> None:
        v = self.version
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"Update version must be an int, got {v!r}")
        if v < 1:
            raise ValueError(f"Update version must be >= 1, got {v!r}")

    @classmethod
    def between(
        cls,
        old: EndpointSet | None,
        new: EndpointSet,
        *,
        version: int,
        error: str | None = None,
    ) -> Update:
        """The update that takes a subscriber from ``old`` (None: nothing yet) to ``new``."""
        added, removed = diff(old, new)
        return cls(
            name=new.name,
            endpoints=new,
            added=added,
            removed=removed,
            stale=new.stale,
            error=error,
            version=version,
        )


def diff(
    old: EndpointSet | None, new: EndpointSet
) -> tuple[tuple[Endpoint, ...], tuple[Endpoint, ...]]:
    """``(added, removed)`` by full endpoint equality, each in canonical order.

    A target whose port, priority, weight or addresses changed shows up as the
    old endpoint removed and the new one added.
    """
    if old is None:
        return new.endpoints, ()
    if old.endpoints == new.endpoints:
        return (), ()
    old_set = frozenset(old.endpoints)
    new_set = frozenset(new.endpoints)
    added = tuple(ep for ep in new.endpoints if ep not in old_set)
    removed = tuple(ep for ep in old.endpoints if ep not in new_set)
    return added, removed


def changed(old: EndpointSet | None, new: EndpointSet) -> bool:
    """Whether a subscriber would care: endpoints, stale flag or no_service differ.

    A TTL change alone does not count: TTLs count down in caches and would
    otherwise wake every subscriber on every refresh.
    """
    if old is None:
        return True
    return (
        old.endpoints != new.endpoints
        or old.stale != new.stale
        or old.no_service != new.no_service
        or old.name != new.name
    )
