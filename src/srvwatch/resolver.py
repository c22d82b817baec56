"""The resolver: a facade over the record store, flights, transport, SRV assembly and watches.

Every name is made canonical here, at the API edge (case-folded, absolute,
expanded by the search list), so every spelling of one name shares one
cache entry, one upstream flight and one watch loop. A repeated lookup is
one dict lookup and one clock read; everything else is delegated to
modules with one job each (:mod:`~srvwatch.records`, :mod:`~srvwatch.srv`,
:mod:`~srvwatch.watch`, :mod:`~srvwatch.transport`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import dns.rdata

from . import wire
from .address import Nameserver, parse_nameservers
from .cache import Clock, RecordStore
from .endpoints import EndpointSet
from .errors import NoData, NXDomain, ResolveError
from .flight import Singleflight
from .names import (
    check_int,
    search_candidates,
    search_list,
    system_config,
    type_code,
    type_text,
)
from .policy import Policy
from .records import Records
from .reply import Positive, Reply, malformed_is_server_failure
from .srv import Assembler
from .tasks import TaskOwner
from .transport import SocketTransport, Transport
from .watch import Updates, Watches

__all__ = ["Answer", "Resolver", "watch"]

T = TypeVar("T")
_WATCH_TYPES = (wire.TYPE_SRV, wire.TYPE_A, wire.TYPE_AAAA)
_TARGET_MARGIN = 0.1
"""Seconds: a target answer expiring this soon is refreshed with the SRV records it serves."""
_DECODED_BY_DNSPYTHON = (wire.TYPE_A, wire.TYPE_AAAA, wire.TYPE_SRV, wire.TYPE_CNAME)


@dataclass(frozen=True, slots=True)
class Answer:
    """The records of one (name, type) lookup."""

    name: str
    """The name that answered (after the search list), lowercase, absolute."""
    rdtype: str
    records: tuple[dns.rdata.Rdata, ...]
    expires_at: float
    """When the cache stops trusting this answer, on the resolver's clock."""
    stale: bool = False
    """Served from the last good answer because the upstream is failing (RFC 8767)."""
    canonical_name: str = ""
    """Where the CNAME chain ended; equal to ``name`` when there was none."""
    clock: Clock = field(default=time.monotonic, repr=False, compare=False)

    @property
    def ttl(self) -> float:
        """Seconds this answer may still be trusted (0 once expired, as a stale answer is)."""
        return max(self.expires_at - self.clock(), 0.0)


class _Name:
    """One canonical name: the absolute names to try, and the views last derived for it."""

    __slots__ = ("addresses", "addresses_until", "answers", "candidates", "srv", "srv_until")

    def __init__(self, candidates: tuple[str, ...]) -> None:
        self.candidates = candidates
        self.srv: EndpointSet | None = None
        self.srv_until = 0.0
        self.addresses: tuple[str, ...] = ()
        self.addresses_until = 0.0
        self.answers: dict[int, tuple[Answer, float]] = {}


class _Pins:
    """The store's questions one watch loop depends on, pinned while the loop runs.

    An SRV watch depends on its SRV answer and on its targets' A and AAAA
    answers (when they came without glue); pinned, none of them is evicted
    by LRU churn before its own refresh (see :class:`~srvwatch.cache.RecordStore`).
    """

    __slots__ = ("_keys", "_store", "_targets")

    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._keys: frozenset[tuple[str, int]] = frozenset()
        self._targets: tuple[str, ...] = ()

    def srv(self, fqdn: str, targets: Sequence[str]) -> None:
        """Pin an SRV answer and its targets without glue, before those are asked.

        Called with the SRV answer in the store, so nothing can evict it
        first; an unchanged answer costs one tuple comparison.
        """
        names = (fqdn, *targets)
        if names == self._targets:
            return
        self._targets = names
        keys = {(fqdn, wire.TYPE_SRV)}
        for target in targets:
            keys.add((target, wire.TYPE_A))
            keys.add((target, wire.TYPE_AAAA))
        self.hold(frozenset(keys))

    def hold(self, keys: frozenset[tuple[str, int]]) -> None:
        old = self._keys
        if keys == old:
            return
        store = self._store
        for key in keys - old:
            store.pin(key)
        for key in old - keys:
            store.unpin(key)
        self._keys = keys

    def release(self) -> None:
        self._targets = ()
        self.hold(frozenset())


class _QuietSrv:
    """An SRV watch's refresh as a batch can settle it (see :class:`~srvwatch.watch.Quiet`)."""

    __slots__ = ("_fqdn", "_known", "_resolver")

    def __init__(self, resolver: Resolver, known: _Name) -> None:
        self._resolver = resolver
        self._known = known
        self._fqdn = known.candidates[0]

    def questions(self) -> list[tuple[str, int]] | None:
        # Targets expired, or expiring before the replies are in, are asked along with the
        # SRV records; the others are asked by a later refresh, on their own TTL.
        return self._resolver._assembler.due_questions(self._fqdn, _TARGET_MARGIN)

    def settle(self, replies: list[Reply]) -> EndpointSet | None:
        resolver = self._resolver
        records = resolver._records
        for reply in replies[1:]:  # targets' addresses: stored first, then the set is built
            if not records.store_if_repeated(reply.msg.qname, reply.msg.qtype, reply):
                return None
        result = resolver._assembler.repeated_set(self._fqdn, replies[0])
        if result is not None:
            known = self._known
            known.srv = result
            known.srv_until = resolver._clock() + resolver.policy.clamp_ttl(result.ttl)
        return result


class Resolver:
    """A caching, coalescing, stale-serving DNS resolver for service discovery.

    Use it as ``async with Resolver(...) as r``: the resolver owns the tasks
    that run shared lookups and the watch loops, and closes them all on exit
    with the transport it made (``stats()`` proves it: sockets opened ==
    closed). A ``transport`` passed in is shared, and closed by its owner.

    ``max_in_flight`` bounds the upstream queries (and so the sockets) in
    flight at once; more wait their turn. ``max_socket_uses``: a UDP socket
    is retired after this many queries, so the source port keeps changing
    (RFC 5452).
    """

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        policy: Policy | None = None,
        search: Sequence[str] | None = None,
        ndots: int | None = None,
        clock: Clock = time.monotonic,
        max_socket_uses: int = 64,
        max_in_flight: int = 256,
        transport: Transport | None = None,
    ) -> None:
        self.policy = policy if policy is not None else Policy()
        if not isinstance(self.policy, Policy):
            raise ValueError(f"policy must be a srvwatch.Policy, got {policy!r}")
        if transport is not None and nameservers is not None:
            raise ValueError("give nameservers or a transport, not both")
        if nameservers is None and transport is None:
            nameservers, system_search, system_ndots = system_config()
            search = system_search if search is None else search
            ndots = system_ndots if ndots is None else ndots
        self.search: tuple[str, ...] = search_list(search)
        self.ndots = check_int(1 if ndots is None else ndots, "ndots", 0)
        store = RecordStore(self.policy, clock)
        if transport is None:
            transport = SocketTransport(
                parse_nameservers(nameservers),
                self.policy,
                clock=clock,
                max_socket_uses=check_int(max_socket_uses, "max_socket_uses", 1),
                max_in_flight=check_int(max_in_flight, "max_in_flight", 1),
                question_capacity=lambda: store.capacity,
            )
            self._owns_transport = True
            self._socket_transport: SocketTransport | None = transport
        else:
            self._owns_transport = False
            self._socket_transport = None
        self.nameservers: tuple[Nameserver, ...] = transport.nameservers
        self._clock = clock
        self._transport = transport
        self._counters = transport.counters
        self._tasks = TaskOwner("Resolver")
        self._store = store
        self._flights = Singleflight(self._counters, self._tasks.spawn, self._tasks.check_open)
        self._records = Records(
            self._store, transport, self._flights, self.policy, self._counters, clock
        )
        self._assembler = Assembler(self._records, self.policy)
        self._watches = Watches(
            self.policy,
            self._counters,
            clock,
            self._tasks.spawn,
            transport.health,
            send_batch=self._socket_transport.send_batch if self._socket_transport else None,
        )
        self._names: dict[str, _Name] = {}
        self._canonical: dict[tuple[str, ...], _Name] = {}

    def __repr__(self) -> str:
        tasks = self._tasks
        state = "closed" if tasks.closed else "open" if tasks.entered else "not entered"
        return (
            f"<Resolver {state} nameservers=[{', '.join(map(str, self.nameservers))}] "
            f"entries={len(self._store)} watches={len(self._watches)}>"
        )

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Resolver:
        await self._tasks.open()
        if self._owns_transport:
            self._transport.attach(self._tasks.spawn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._tasks.close()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop every lookup and watch loop in progress and close every socket.

        Safe to call inside the ``async with`` body: only the resolver's own
        tasks are cancelled, never the caller.
        """
        self._tasks.cancel_all()
        if self._owns_transport:
            await self._transport.aclose()

    def use_policy(self, policy: Policy) -> None:
        """Apply a new policy in place, keeping the store, flights and watch loops.

        What is stored keeps the expiry it was given; every later answer,
        refresh, retry and stale decision follows ``policy``. A smaller
        ``cache_size`` evicts on the next store.
        """
        if not isinstance(policy, Policy):
            raise ValueError(f"policy must be a srvwatch.Policy, got {policy!r}")
        self.policy = policy
        self._store.policy = policy
        self._records.use_policy(policy)
        self._assembler.use_policy(policy)
        self._watches.use_policy(policy)
        if self._socket_transport is not None:
            self._socket_transport.use_policy(policy)

    def stats(self) -> dict[str, int]:
        """Counters: queries, hits, misses, coalesced, stale, sockets opened/closed, ..."""
        snapshot = self._counters.snapshot()
        snapshot["flights_in_progress"] = len(self._flights)
        snapshot["loops_running"] = len(self._watches)
        snapshot["tasks_running"] = len(self._tasks)
        snapshot["cache_entries"] = len(self._store)
        snapshot["cache_evictions"] = self._store.evictions
        health = self._transport.health
        snapshot["upstreams_up"] = sum(u.up for u in health.upstreams)
        snapshot["upstreams_down"] = len(health.upstreams) - snapshot["upstreams_up"]
        snapshot["upstream_probes"] = health.probes
        snapshot["upstream_recoveries"] = health.recoveries
        return snapshot

    # -- seams for the sidecar ------------------------------------------------------

    @property
    def records(self) -> Records:
        """The record store and its lookups, which the DNS stub answers from (shared)."""
        return self._records

    @property
    def transport(self) -> Transport:
        return self._transport

    def spawn(self, func: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``func(*args)`` as one of the resolver's tasks (cancelled when it closes)."""
        self._tasks.check_open()
        self._tasks.spawn(func, *args)

    def upstreams(self) -> list[dict[str, Any]]:
        """Each nameserver's health: up, answered, failures, last error, next probe (seconds)."""
        return self._transport.health.snapshot()

    def stub_responses(self) -> dict[int, int]:
        """Replies the DNS stub sent from this resolver's store, by rcode (0 NOERROR...)."""
        return dict(self._counters.stub_responses)

    def queries_by_name(self) -> dict[str, int]:
        """Upstream queries sent per absolute name (the first 10,000 names seen)."""
        return dict(self._counters.queries_by_name)

    # -- names --------------------------------------------------------------------

    def _name(self, text: str) -> _Name:
        """The canonical name for what a user typed: validated once, shared by every spelling."""
        if not isinstance(text, str):
            raise ValueError(f"name must be a string, got {text!r}")
        name = self._names.get(text)
        if name is not None:
            return name
        candidates = search_candidates(text, self.search, self.ndots)
        if len(self._names) >= self.policy.cache_size:
            self._names.clear()
            self._canonical.clear()
        name = self._canonical.get(candidates)
        if name is None:
            name = self._canonical[candidates] = _Name(candidates)
        self._names[text] = name
        return name

    async def _search(self, name: _Name, lookup: Callable[[str], Awaitable[T]]) -> T:
        """Try each candidate from the search list; NXDOMAIN/NODATA move on to the next."""
        last: ResolveError | None = None
        for fqdn in name.candidates:
            try:
                return await lookup(fqdn)
            except (NXDomain, NoData) as exc:
                last = exc
        assert last is not None
        raise last

    # -- public lookups -----------------------------------------------------------

    async def resolve_srv(self, name: str) -> EndpointSet:
        """SRV endpoints of ``name`` with target addresses; ``ordered()`` gives RFC 2782 order."""
        self._counters.lookups += 1
        try:
            known = self._names[name]
        except (KeyError, TypeError):  # new, or not a name at all (unhashable)
            known = self._name(name)
        if known.srv is not None and self._clock() < known.srv_until:
            self._counters.hits += 1
            return known.srv
        self._tasks.check_caller()
        result = await self._search(known, self._assembler.srv_set)
        if not result.stale:
            known.srv, known.srv_until = result, self._clock() + self.policy.clamp_ttl(result.ttl)
        return result

    async def resolve_addresses(self, name: str) -> tuple[str, ...]:
        """IPv4 and IPv6 addresses of ``name`` (A and AAAA asked at once)."""
        self._counters.lookups += 1
        try:
            known = self._names[name]
        except (KeyError, TypeError):  # new, or not a name at all (unhashable)
            known = self._name(name)
        if known.addresses and self._clock() < known.addresses_until:
            self._counters.hits += 1
            return known.addresses
        self._tasks.check_caller()
        addresses, ttl, stale = await self._search(known, self._assembler.address_set)
        if not stale:
            known.addresses = addresses
            known.addresses_until = self._clock() + self.policy.clamp_ttl(ttl)
        return addresses

    async def resolve(self, name: str, rdtype: str | int = "A") -> Answer:
        """Records of any type, as dnspython rdata objects."""
        self._counters.lookups += 1
        qtype = type_code(rdtype)
        try:
            known = self._names[name]
        except (KeyError, TypeError):  # new, or not a name at all (unhashable)
            known = self._name(name)
        view = known.answers.get(qtype)
        if view is not None and self._clock() < view[1]:
            self._counters.hits += 1
            return view[0]
        self._tasks.check_caller()

        async def one(fqdn: str) -> Answer:
            entry, stale = await self._records.lookup(fqdn, qtype)
            answer = entry.answer
            assert type(answer) is Positive
            if qtype in _DECODED_BY_DNSPYTHON:
                with malformed_is_server_failure(answer.server, fqdn, qtype):
                    records = tuple(wire.decode_rdata(answer.data, rr) for rr in answer.records)
            else:
                records = answer.values
            result = Answer(
                fqdn,
                type_text(qtype),
                records,
                entry.expires_at,
                stale,
                answer.canonical_name,
                self._clock,
            )
            if not stale:
                known.answers[qtype] = (result, entry.expires_at)
            return result

        return await self._search(known, one)

    # -- watching -------------------------------------------------------------------

    @asynccontextmanager
    async def watch(self, name: str, rdtype: str = "SRV") -> AsyncIterator[Updates]:
        """Subscribe to endpoint changes of ``name``: ``async for update in updates``.

        The first update is the initial state; later ones come only when the
        endpoints, their addresses, priorities, weights or ports, or the stale
        flag change. Every watcher of one (name, type), however spelled,
        shares one refresh loop, which stops when the last watcher leaves.
        ``rdtype`` is "SRV", or "A"/"AAAA" to watch addresses (one endpoint
        per address, port 0).
        """
        qtype = type_code(rdtype)
        if qtype not in _WATCH_TYPES:
            raise ValueError(f"watch supports SRV, A and AAAA records, not {rdtype!r}")
        known = self._name(name)  # a bad name fails here, before anything starts
        self._tasks.check_caller()
        pins = _Pins(self._store)
        srv_set = functools.partial(self._assembler.srv_set, refresh=True, pins=pins)

        async def refresh() -> EndpointSet:
            if qtype == wire.TYPE_SRV:
                candidates = known.candidates
                if len(candidates) == 1:  # an absolute name: no search list to walk
                    result = await srv_set(candidates[0])
                else:
                    result = await self._search(known, srv_set)
                known.srv = result
                known.srv_until = self._clock() + self.policy.clamp_ttl(result.ttl)
                return result
            result = await self._search(known, lambda fqdn: self._address_endpoints(fqdn, qtype))
            pins.hold(frozenset({(result.name, qtype)}))
            return result

        key = (known.candidates, qtype)
        quiet = None
        if qtype == wire.TYPE_SRV and len(known.candidates) == 1:
            quiet = _QuietSrv(self, known)
        async with self._watches.subscribe(
            key, known.candidates[0], refresh, on_stop=pins.release, quiet=quiet
        ) as updates:
            yield updates

    async def _address_endpoints(self, fqdn: str, qtype: int) -> EndpointSet:
        entry, _ = await self._records.lookup(fqdn, qtype, refresh=True)
        answer = entry.answer
        assert type(answer) is Positive
        records = [(0, fqdn, 0, 0, (address,)) for address in answer.values]
        return EndpointSet.from_wire(fqdn, records, ttl=entry.ttl)

    @property
    def ready(self) -> bool:
        """Every watched name has had an answer, so it serves endpoints, fresh or stale.

        A name whose lookups have failed from the start keeps the resolver unready
        (its watchers still get an update with ``error`` set).
        """
        return self._watches.ready

    def pending(self) -> list[str]:
        """Watched names still waiting for their first answer, for a readiness endpoint."""
        return self._watches.pending()


@asynccontextmanager
async def watch(name: str, rdtype: str = "SRV", **resolver_options: Any) -> AsyncIterator[Updates]:
    """Watch one name with a :class:`Resolver` of its own, closed when the watch ends.

    ``resolver_options`` are :class:`Resolver`'s keyword arguments
    (``nameservers``, ``policy``, ...).
    """
    async with Resolver(**resolver_options) as resolver, resolver.watch(name, rdtype) as updates:
        yield updates
