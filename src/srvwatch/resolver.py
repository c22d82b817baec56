"""The one-shot resolver: cache, singleflight, transport and SRV target expansion.

A cache hit is one dict lookup and one clock read. A miss starts at most one
upstream query per (name, type) however many callers ask at once: the query
runs as a task owned by the resolver, so a cancelled caller never cancels it
for the others. When the upstream fails, the last good answer is served,
flagged ``stale`` (RFC 8767); only an authoritative NXDOMAIN or NODATA empties
an answer.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc
import dns.rdata

from . import wire
from .cache import Cache, Clock
from .endpoints import EndpointSet, canonical_addresses
from .errors import NoData, NXDomain, ResolveError, ResolveTimeout, ServerFailure
from .flight import Singleflight, clone_error
from .metrics import Counters
from .names import absolute_name, search_candidates, system_config, type_code, type_text, within
from .policy import Policy
from .transport import Nameserver, Transport, parse_nameserver
from .watch import Updates, WatchLoop

__all__ = ["Answer", "Resolver", "watch"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_MAX_CNAME_HOPS = 8
_ADDRESS_TYPES = (wire.TYPE_A, wire.TYPE_AAAA)


@dataclass(frozen=True, slots=True)
class Answer:
    """The records of one (name, type) lookup."""

    name: str
    """The name that answered (after the search list), lowercase, absolute."""
    rdtype: str
    records: tuple[dns.rdata.Rdata, ...]
    ttl: float
    """The TTL the cache keeps this answer for, after clamping by the policy."""
    stale: bool = False
    """Served from the last good answer because the upstream is failing (RFC 8767)."""
    canonical_name: str = ""
    """Where the CNAME chain ended; equal to ``name`` when there was none."""


@dataclass(slots=True)
class _Lookup:
    """What the record cache keeps: the raw response and where its records are.

    Never mutated once built (a stale copy is made with ``replace``); not
    frozen only because a frozen ``__init__`` costs a microsecond per cold
    lookup.
    """

    name: str
    rdtype: int
    data: bytes
    records: tuple[wire.Record, ...]
    additional: tuple[wire.Record, ...]
    bailiwick: str
    canonical_name: str
    ttl: float
    stale: bool = False
    names: wire.NameCache = field(default_factory=dict, compare=False, repr=False)
    """The response's :attr:`wire.Message.names`, for decoding its SRV targets."""


@dataclass(frozen=True, slots=True)
class _Negative:
    """A cached NXDOMAIN or NODATA, re-raised as a fresh exception on every hit."""

    nxdomain: bool
    message: str
    name: str
    rdtype: str
    ttl: float = 0.0

    def error(self) -> ResolveError:
        cls = NXDomain if self.nxdomain else NoData
        return cls(self.message, name=self.name, rdtype=self.rdtype, ttl=self.ttl)


class Resolver:
    """A caching, coalescing, stale-serving DNS resolver for service discovery.

    Use it as ``async with Resolver(...) as r``: the resolver owns the tasks
    that run shared lookups and the sockets they use, and closes them all on
    exit (``stats()`` proves it: sockets opened == closed).

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
    ) -> None:
        self.policy = policy if policy is not None else Policy()
        if not isinstance(self.policy, Policy):
            raise ValueError(f"policy must be a srvwatch.Policy, got {policy!r}")
        if isinstance(nameservers, str):
            raise ValueError(
                f"nameservers must be a list of strings, got the string {nameservers!r}"
            )
        if nameservers is None:
            nameservers, system_search, system_ndots = system_config()
            search = system_search if search is None else search
            ndots = system_ndots if ndots is None else ndots
        servers = [parse_nameserver(text) for text in nameservers]
        if not servers:
            raise ValueError("nameservers must not be empty (None reads /etc/resolv.conf)")
        self.nameservers: tuple[Nameserver, ...] = tuple(servers)
        self.search: tuple[str, ...] = tuple(
            absolute_name(s, "search domain") for s in search or ()
        )
        self.ndots = 1 if ndots is None else ndots
        if isinstance(self.ndots, bool) or not isinstance(self.ndots, int) or self.ndots < 0:
            raise ValueError(f"ndots must be an integer >= 0, got {ndots!r}")
        self._clock = clock
        self._counters = Counters()
        self._transport = Transport(
            self.nameservers,
            self.policy,
            self._counters,
            max_socket_uses=max_socket_uses,
            max_in_flight=max_in_flight,
        )
        self._records: Cache[tuple[str, int], _Lookup | _Negative] = Cache(self.policy, clock)
        self._srv_sets: Cache[str, EndpointSet] = Cache(self.policy, clock)
        self._address_sets: Cache[str, tuple[str, ...]] = Cache(self.policy, clock)
        self._answers: Cache[tuple[str, int], Answer] = Cache(self.policy, clock)
        self._flights = Singleflight(self._counters, self._spawn, lambda: self._closed)
        self._loops: dict[tuple[str, int], WatchLoop] = {}
        self._names: dict[str, tuple[str, ...]] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._task_scopes: set[anyio.CancelScope] = set()
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Resolver:
        if self._task_group is not None or self._closed:
            raise RuntimeError("a Resolver can be entered only once")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The task group holds only the resolver's own lookups, which never
        # raise; the body's exception is not handed to it, so users see their
        # own exception, not an ExceptionGroup around it.
        task_group = self._task_group
        try:
            if task_group is not None:
                task_group.cancel_scope.cancel()
                await task_group.__aexit__(None, None, None)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop every lookup and watch loop in progress and close every socket.

        Safe to call inside the ``async with`` body: only the resolver's own
        tasks are cancelled, never the caller.
        """
        self._closed = True
        for scope in list(self._task_scopes):
            scope.cancel()
        await self._transport.aclose()

    def _spawn(self, func: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Start one of the resolver's own tasks, cancellable by :meth:`aclose`."""
        assert self._task_group is not None
        self._task_group.start_soon(self._guarded, func, *args)

    async def _guarded(self, func: Callable[..., Awaitable[None]], *args: Any) -> None:
        with anyio.CancelScope() as scope:
            if self._closed:
                scope.cancel()
            self._task_scopes.add(scope)
            try:
                await func(*args)
            finally:
                self._task_scopes.discard(scope)

    def stats(self) -> dict[str, int]:
        """Counters: queries, hits, misses, coalesced, stale, sockets opened/closed, ..."""
        snapshot = self._counters.snapshot()
        snapshot["flights_in_progress"] = len(self._flights)
        snapshot["loops_running"] = len(self._loops)
        snapshot["cache_entries"] = len(self._records)
        snapshot["cache_evictions"] = self._records.evictions
        return snapshot

    def queries_by_name(self) -> dict[str, int]:
        """Upstream queries sent per absolute name (the first 10,000 names seen)."""
        return dict(self._counters.queries_by_name)

    # -- watching -------------------------------------------------------------------

    @asynccontextmanager
    async def watch(self, name: str, rdtype: str = "SRV") -> AsyncIterator[Updates]:
        """Subscribe to endpoint changes of ``name``: ``async for update in updates``.

        The first update is the initial state; later ones come only when the
        endpoints, their addresses, priorities, weights or ports, or the stale
        flag change. Every watcher of one (name, type) shares one refresh
        loop, which stops when the last watcher leaves. ``rdtype`` is "SRV",
        or "A"/"AAAA" to watch addresses (one endpoint per address, port 0).
        """
        qtype = type_code(rdtype)
        if qtype not in (wire.TYPE_SRV, wire.TYPE_A, wire.TYPE_AAAA):
            raise ValueError(f"watch supports SRV, A and AAAA records, not {rdtype!r}")
        self._candidates(name)  # a bad name fails here, before anything starts
        self._check_open()
        key = (name, qtype)
        loop = self._loops.get(key)
        if loop is None:
            loop = WatchLoop(
                name,
                lambda: self._refresh(name, qtype),
                self.policy,
                self._counters,
                self._clock,
            )
            self._loops[key] = loop
            self._spawn(self._run_loop, key, loop)
        updates = Updates(loop)
        loop.subscribers.add(updates)
        self._counters.watches_started += 1
        try:
            yield updates
        finally:
            updates.closed = True
            loop.subscribers.discard(updates)
            self._counters.watches_stopped += 1
            if not loop.subscribers:
                loop.stop()
                if self._loops.get(key) is loop:
                    del self._loops[key]

    async def _run_loop(self, key: tuple[str, int], loop: WatchLoop) -> None:
        try:
            await loop.run()
        finally:
            if self._loops.get(key) is loop:
                del self._loops[key]

    @property
    def ready(self) -> bool:
        """Every watched name has had an answer, so it serves endpoints, fresh or stale.

        A name whose lookups have failed from the start keeps the resolver unready
        (its watchers still get an update with ``error`` set).
        """
        return all(loop.answered for loop in self._loops.values())

    def pending(self) -> list[str]:
        """Watched names still waiting for their first answer, for a readiness endpoint."""
        return sorted({loop.name for loop in self._loops.values() if not loop.answered})

    async def _refresh(self, name: str, qtype: int) -> EndpointSet:
        """A fresh upstream answer for a watch loop; failures raise, nothing stale."""
        if qtype == wire.TYPE_SRV:
            result = await self._search(name, lambda fqdn: self._srv_set(fqdn, refresh=True))
            self._srv_sets.put(name, result, result.ttl)
            return result

        async def addresses(fqdn: str) -> EndpointSet:
            lookup = await self._lookup(fqdn, qtype, refresh=True)
            records = [(0, fqdn, 0, 0, (_address(lookup.data, rr),)) for rr in lookup.records]
            return EndpointSet.from_wire(fqdn, records, ttl=lookup.ttl)

        return await self._search(name, addresses)

    # -- public lookups -----------------------------------------------------------

    async def resolve_srv(self, name: str) -> EndpointSet:
        """SRV endpoints of ``name`` with target addresses; ``ordered()`` gives RFC 2782 order."""
        self._counters.lookups += 1
        entry = self._srv_sets.fresh(name)
        if entry is not None and entry.value is not None:
            self._counters.hits += 1
            return entry.value
        result = await self._search(name, self._srv_set)
        if not result.stale:
            self._srv_sets.put(name, result, result.ttl)
        return result

    async def resolve_addresses(self, name: str) -> tuple[str, ...]:
        """IPv4 and IPv6 addresses of ``name`` (A and AAAA asked at once)."""
        self._counters.lookups += 1
        entry = self._address_sets.fresh(name)
        if entry is not None and entry.value is not None:
            self._counters.hits += 1
            return entry.value
        addresses, ttl, stale = await self._search(name, self._address_set)
        if not stale:
            self._address_sets.put(name, addresses, ttl)
        return addresses

    async def resolve(self, name: str, rdtype: str | int = "A") -> Answer:
        """Records of any type, as dnspython rdata objects."""
        self._counters.lookups += 1
        qtype = type_code(rdtype)
        key = (name, qtype)
        entry = self._answers.fresh(key)
        if entry is not None and entry.value is not None:
            self._counters.hits += 1
            return entry.value

        async def one(fqdn: str) -> Answer:
            lookup = await self._lookup(fqdn, qtype)
            answer = Answer(
                name=fqdn,
                rdtype=type_text(qtype),
                records=tuple(wire.decode_rdata(lookup.data, r) for r in lookup.records),
                ttl=lookup.ttl,
                stale=lookup.stale,
                canonical_name=lookup.canonical_name,
            )
            if not answer.stale:
                self._answers.put(key, answer, lookup.ttl)
            return answer

        return await self._search(name, one)

    # -- search list --------------------------------------------------------------

    async def _search(self, name: str, lookup: Callable[[str], Awaitable[T]]) -> T:
        """Try each candidate from the search list; NXDOMAIN/NODATA move on to the next."""
        candidates = self._candidates(name)
        last: ResolveError | None = None
        for fqdn in candidates:
            try:
                return await lookup(fqdn)
            except (NXDomain, NoData) as exc:
                last = exc
        assert last is not None
        raise last

    def _candidates(self, name: str) -> tuple[str, ...]:
        known = self._names.get(name)
        if known is not None:
            return known
        candidates = search_candidates(name, self.search, self.ndots)
        if len(self._names) >= self.policy.cache_size:
            self._names.clear()
        self._names[name] = candidates
        return candidates

    # -- SRV and address sets -----------------------------------------------------

    async def _srv_set(self, fqdn: str, *, refresh: bool = False) -> EndpointSet:
        return await self._coalesce(("srv", fqdn, refresh), self._build_srv_set, fqdn, refresh)

    async def _build_srv_set(self, fqdn: str, refresh: bool) -> EndpointSet:
        lookup = await self._lookup(fqdn, wire.TYPE_SRV, refresh=refresh)
        data = lookup.data
        names = lookup.names
        records = [wire.decode_srv(data, rr, names) for rr in lookup.records]
        if len(records) == 1 and records[0][3] == ".":
            return EndpointSet.build(fqdn, (), ttl=lookup.ttl, stale=lookup.stale, no_service=True)
        # target -> its addresses, from in-bailiwick glue first (RFC 5452 section 6)
        addresses: dict[str, list[str]] = {r[3]: [] for r in records if r[3] != "."}
        ttl = lookup.ttl
        if lookup.additional:
            bailiwick = lookup.bailiwick
            clamp_ttl = self.policy.clamp_ttl
            for rr in lookup.additional:
                glue = addresses.get(rr.name)
                if glue is not None and rr.rdtype in _ADDRESS_TYPES and within(rr.name, bailiwick):
                    glue.append(_address(data, rr))
                    ttl = min(ttl, clamp_ttl(rr.ttl))
        found = {target: canonical_addresses(glue) for target, glue in addresses.items() if glue}
        stale = lookup.stale
        if len(found) < len(addresses):
            missing = [target for target in addresses if target not in found]
            ttl, stale = await self._expand_targets(fqdn, missing, found, ttl, stale, refresh)
        return EndpointSet.from_wire(
            fqdn,
            [
                (priority, target, port, weight, found.get(target, ()))
                for priority, weight, port, target in records
                if target != "."
            ],
            ttl=ttl,
            stale=stale,
        )

    async def _expand_targets(
        self,
        fqdn: str,
        targets: list[str],
        found: dict[str, tuple[str, ...]],
        ttl: float,
        stale: bool,
        refresh: bool,
    ) -> tuple[float, bool]:
        """Resolve SRV targets that came without glue, concurrently, into ``found``.

        Returns the set's TTL and stale flag with the targets' folded in. A
        target without addresses gets none (and a short TTL); a failing one
        does too, except in a watch refresh, which raises so the watch keeps
        its last good endpoints.
        """
        failures: list[ResolveError] = []

        async def expand(target: str) -> None:
            nonlocal ttl, stale
            try:
                addresses, target_ttl, target_stale = await self._address_set(
                    target, refresh=refresh
                )
            except (NXDomain, NoData) as exc:
                log.debug("SRV %s: target %s has no addresses: %s", fqdn, target, exc)
                addresses, target_ttl, target_stale = (
                    (),
                    exc.ttl or self.policy.negative_min_ttl,
                    False,
                )
            except ResolveError as exc:
                if refresh:
                    failures.append(exc)
                    return
                log.debug("SRV %s: target %s has no addresses: %s", fqdn, target, exc)
                addresses, target_ttl, target_stale = (), self.policy.negative_min_ttl, False
            found[target] = addresses
            ttl = min(ttl, target_ttl)
            stale = stale or target_stale

        if len(targets) == 1:
            await expand(targets[0])
        else:
            async with anyio.create_task_group() as task_group:
                for target in targets:
                    task_group.start_soon(expand, target)
        if failures:
            raise failures[0]
        return ttl, stale

    async def _address_set(
        self, fqdn: str, *, refresh: bool = False
    ) -> tuple[tuple[str, ...], float, bool]:
        """(addresses, ttl, stale) for one absolute name: A and AAAA at once."""
        results: dict[int, _Lookup | ResolveError] = {}

        async def one(qtype: int) -> None:
            try:
                results[qtype] = await self._lookup(fqdn, qtype, refresh=refresh)
            except ResolveError as exc:
                results[qtype] = exc

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(one, wire.TYPE_AAAA)
            await one(wire.TYPE_A)
        found: list[str] = []
        ttl = math.inf
        stale = False
        for qtype in _ADDRESS_TYPES:
            result = results[qtype]
            if isinstance(result, _Lookup):
                found.extend(_address(result.data, rr) for rr in result.records)
                ttl = min(ttl, result.ttl)
                stale = stale or result.stale
        if not found:
            errors = [r for r in results.values() if isinstance(r, ResolveError)]
            hard = [e for e in errors if not isinstance(e, (NXDomain, NoData))]
            nx = [e for e in errors if isinstance(e, NXDomain)]
            raise (hard or nx or errors)[0]
        return canonical_addresses(found), ttl, stale

    # -- records: cache, coalescing, upstream ---------------------------------------

    async def _lookup(self, fqdn: str, qtype: int, *, refresh: bool = False) -> _Lookup:
        """Cached records of one absolute name.

        ``refresh`` (for watch loops) skips the cache and never serves stale:
        failures are raised, because the loop keeps its own last good answer.
        """
        if refresh:
            serve_stale = False  # the loop keeps its own last good answer
            return await self._coalesce(
                ("refresh", fqdn, qtype), self._fetch, fqdn, qtype, serve_stale
            )
        key = (fqdn, qtype)
        entry = self._records.get(key)
        if entry is not None:
            now = self._clock()
            value = entry.value
            if value is not None and now < entry.expires_at:
                if isinstance(value, _Negative):
                    self._counters.negative_hits += 1
                    raise value.error()
                self._counters.hits += 1
                return value
            if entry.failing(now) and entry.error is not None:
                if isinstance(value, _Lookup) and entry.servable_stale(now):
                    self._counters.stale += 1
                    return replace(value, stale=True)
                raise clone_error(entry.error)
        self._counters.misses += 1
        return await self._coalesce(key, self._fetch, fqdn, qtype)

    async def _fetch(self, fqdn: str, qtype: int, serve_stale: bool = True) -> _Lookup:
        key = (fqdn, qtype)
        try:
            lookup = await self._query(fqdn, qtype)
        except _NegativeAnswer as negative:
            stored = self._records.put(key, negative.value, negative.ttl, negative=True)
            negative_value = replace(negative.value, ttl=stored.ttl)
            stored.value = negative_value
            raise negative_value.error() from None
        except (ResolveTimeout, ServerFailure) as exc:
            entry = self._records.put_failure(key, exc)
            value = entry.value
            if serve_stale and isinstance(value, _Lookup) and entry.servable_stale(self._clock()):
                self._counters.stale += 1
                log.info("serving stale %s: %s", fqdn, exc)
                return replace(value, stale=True)
            raise
        self._records.put(key, lookup, lookup.ttl)
        return lookup

    async def _query(self, fqdn: str, qtype: int) -> _Lookup:
        """Ask upstream, following a CNAME chain across responses when it is incomplete."""
        name = fqdn
        chain_ttl = math.inf
        for _ in range(_MAX_CNAME_HOPS):
            data, msg = await self._transport.exchange(name, qtype)
            current = name
            records: list[wire.Record] = []
            for _hop in range(_MAX_CNAME_HOPS):
                records = [
                    r
                    for r in msg.answers
                    if r.name == current and r.rdtype == qtype and r.rdclass == wire.CLASS_IN
                ]
                if records or qtype == wire.TYPE_CNAME:
                    break
                cname = next(
                    (r for r in msg.answers if r.name == current and r.rdtype == wire.TYPE_CNAME),
                    None,
                )
                if cname is None:
                    break
                chain_ttl = min(chain_ttl, cname.ttl)
                current = wire.decode_cname(data, cname)
            if records:
                ttl = min(chain_ttl, min([r.ttl for r in records]))
                return _Lookup(
                    name=fqdn,
                    rdtype=qtype,
                    data=data,
                    records=tuple(records),
                    additional=msg.additional,
                    bailiwick=_bailiwick(msg, fqdn),
                    canonical_name=current,
                    ttl=self.policy.clamp_ttl(ttl),  # what the cache keeps it for
                    names=msg.names,
                )
            type_name = type_text(qtype)
            soa = next((r for r in msg.authority if r.rdtype == wire.TYPE_SOA), None)
            negative_ttl = self.policy.negative_ttl(
                soa.ttl if soa else None, wire.decode_soa(data, soa).minimum if soa else None
            )
            if msg.rcode == wire.RCODE_NXDOMAIN:
                raise _NegativeAnswer(
                    _Negative(
                        True, f"{fqdn} {type_name}: no such name (NXDOMAIN)", fqdn, type_name
                    ),
                    negative_ttl,
                )
            if current != name and soa is None:
                name = current  # the chain leaves this server's data: ask about its end
                continue
            raise _NegativeAnswer(
                _Negative(False, f"{fqdn} has no {type_name} records (NODATA)", fqdn, type_name),
                negative_ttl,
            )
        raise ServerFailure(
            f"{fqdn} {type_text(qtype)}: CNAME chain longer than {_MAX_CNAME_HOPS}",
            name=fqdn,
            rdtype=type_text(qtype),
        )

    async def _coalesce(self, key: object, work: Callable[..., Awaitable[T]], *args: Any) -> T:
        """One shared ``work(*args)`` per key (see :class:`~srvwatch.flight.Singleflight`)."""
        self._check_open()
        return await self._flights.run(key, work, *args)

    def _check_open(self) -> None:
        """Lookups and watches need the task group that ``async with`` opens, and no close."""
        if self._closed:
            raise RuntimeError("the Resolver is closed")
        if self._task_group is None:
            raise RuntimeError(
                "use the Resolver as `async with srvwatch.Resolver(...) as resolver:`"
            )


@asynccontextmanager
async def watch(name: str, rdtype: str = "SRV", **resolver_options: Any) -> AsyncIterator[Updates]:
    """Watch one name with a :class:`Resolver` of its own, closed when the watch ends.

    ``resolver_options`` are :class:`Resolver`'s keyword arguments
    (``nameservers``, ``policy``, ...).
    """
    async with Resolver(**resolver_options) as resolver, resolver.watch(name, rdtype) as updates:
        yield updates


class _NegativeAnswer(Exception):
    def __init__(self, value: _Negative, ttl: float) -> None:
        super().__init__(value.message)
        self.value = value
        self.ttl = ttl


def _address(data: bytes, rr: wire.Record) -> str:
    """The address text of an A or AAAA record."""
    return wire.decode_a(data, rr) if rr.rdtype == wire.TYPE_A else wire.decode_aaaa(data, rr)


def _bailiwick(msg: wire.Message, fqdn: str) -> str:
    """The zone the server vouched for: its SOA/NS owner, else the service's parent domain.

    Additional records outside it are ignored (RFC 5452 section 6).
    """
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
