"""SRV assembly: an SRV answer plus its targets' addresses, as one :class:`EndpointSet`.

Addresses come from in-bailiwick glue first (RFC 5452 section 6); targets
without glue are resolved concurrently (A and AAAA at once). A target with
no addresses gets none and a short TTL; a failing one does too, except in a
watch refresh, which raises so the watch keeps its last good endpoints.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import anyio

from . import wire
from .endpoints import EndpointSet, canonical_addresses
from .errors import NoData, NXDomain, ResolveError
from .policy import Policy
from .records import Records
from .reply import Positive, Reply

__all__ = ["Assembler", "gather"]

log = logging.getLogger(__name__)


class Pins(Protocol):
    """Told which store questions an SRV watch depends on (see ``resolver._Pins``)."""

    def srv(self, fqdn: str, targets: Sequence[str]) -> None: ...


AddressSet = tuple[tuple[str, ...], float, bool]
"""(addresses, ttl, stale) of one name."""


async def gather(calls: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run ``calls`` concurrently; each result, or the ``Exception`` it raised, in order.

    Errors are returned, never raised as an ``ExceptionGroup``: the caller
    decides which one a user sees. Cancellation still propagates. A DNS
    error is returned without its traceback: kept, the traceback's frame
    would hold ``results``, which holds the error, a reference cycle per
    failed lookup (an AAAA NODATA on every refresh of a target) left to the
    cyclic garbage collector.
    """
    results: list[Any] = [None] * len(calls)

    async def run(i: int) -> None:
        try:
            results[i] = await calls[i]()
        except ResolveError as exc:
            results[i] = exc.with_traceback(None)
        except Exception as exc:
            results[i] = exc  # a bug: its traceback is worth a cycle

    if len(calls) == 1:
        await run(0)
        return results
    async with anyio.create_task_group() as tg:
        for i in range(1, len(calls)):
            tg.start_soon(run, i)
        await run(0)
    return results


class Assembler:
    """Builds endpoint and address sets from :class:`Records` lookups."""

    def __init__(self, records: Records, policy: Policy) -> None:
        self._records = records
        self._policy = policy

    def use_policy(self, policy: Policy) -> None:
        """Follow a new policy from the next decision on (a sidecar reload)."""
        self._policy = policy

    def srv_set(
        self, fqdn: str, *, refresh: bool = False, pins: Pins | None = None
    ) -> Awaitable[EndpointSet]:
        """The endpoint set of ``fqdn``; ``pins`` (a watch's) hears which questions it needs.

        One-shot callers share a flight. A watch refresh (one loop per watched
        name) needs none: its SRV query is shared below, in :class:`Records`.
        Not a coroutine itself: on a refresh, one coroutine fewer to make,
        resume and unwind.
        """
        if refresh:
            return self._build(fqdn, refresh, pins)
        return self._records.flights.run(("srv", fqdn, refresh), self._build, fqdn, refresh)

    def due_questions(self, fqdn: str, margin: float) -> list[tuple[str, int]] | None:
        """What a refresh of ``fqdn``'s endpoint set asks: the SRV question, and each
        target without glue whose A or AAAA answer expires within ``margin`` (targets are
        refreshed on their own TTL). None when nothing is derived to reuse yet."""
        records = self._records
        entry = records.store.peek((fqdn, wire.TYPE_SRV))
        if entry is None or entry.view is None:
            return None
        questions = [(fqdn, wire.TYPE_SRV)]
        missing = entry.view[4]
        if missing:
            until = records.clock() + margin
            for target in missing:
                for qtype in (wire.TYPE_A, wire.TYPE_AAAA):
                    cached = records.store.peek((target, qtype))
                    if cached is None or cached.answer is None or cached.expires_at <= until:
                        questions.append((target, qtype))
        return questions

    def repeated_set(self, fqdn: str, reply: Reply) -> EndpointSet | None:
        """The endpoint set again from an SRV reply that repeats the stored one (a watch's
        batched refresh), without waiting: None when a target's addresses must be asked
        (or changed), or nothing was derived from the stored answer yet."""
        records = self._records
        entry = records.repeated(fqdn, wire.TYPE_SRV, reply)
        if entry is None:
            return None
        answer = entry.answer
        view = entry.view
        assert type(answer) is Positive
        if view is None or view[0] is not answer.values or view[1] is not answer.glue:
            return None
        previous: EndpointSet = view[2]
        missing, addresses = view[4], view[5]
        ttl = math.inf
        if missing:
            found = []
            for target in missing:
                cached = self._cached_addresses(target)
                if cached is None:
                    return None
                found.append(cached[0])
                ttl = min(ttl, cached[1])
            if tuple(found) != addresses:
                return None
        entry = records.store_repeated(fqdn, wire.TYPE_SRV, entry, reply)
        answer = entry.answer
        assert type(answer) is Positive
        ttl = min(ttl, entry.ttl)
        if answer.glue:
            ttl = min(ttl, self._policy.clamp_ttl(answer.glue_ttl))
        return previous.with_ttl(ttl, False)

    def _cached_addresses(self, fqdn: str) -> tuple[tuple[str, ...], float] | None:
        """A target's fresh addresses and their TTL from the store, as a refresh takes them;
        None when one of A and AAAA must be asked, has failed, or neither has any."""
        records = self._records
        found: list[str] = []
        ttl = math.inf
        for qtype in (wire.TYPE_A, wire.TYPE_AAAA):
            try:
                hit = records.cached(fqdn, qtype, stale_ok=False)
            except (NXDomain, NoData):
                continue
            except ResolveError:
                return None
            if hit is None:
                return None
            answer = hit[0].answer
            assert type(answer) is Positive
            found.extend(answer.values)
            ttl = min(ttl, hit[0].ttl)
        if not found:
            return None
        return canonical_addresses(found), ttl

    async def _build(self, fqdn: str, refresh: bool, pins: Pins | None = None) -> EndpointSet:
        records = self._records
        if refresh:
            entry, stale = await records.refresh(fqdn, wire.TYPE_SRV)
        else:
            entry, stale = await records.lookup(fqdn, wire.TYPE_SRV)
        answer = entry.answer
        assert type(answer) is Positive
        values = answer.values
        if len(values) == 1 and values[0][3] == ".":
            return EndpointSet.build(fqdn, (), ttl=entry.ttl, stale=stale, no_service=True)
        ttl = entry.ttl
        if answer.glue:
            ttl = min(ttl, self._policy.clamp_ttl(answer.glue_ttl))
        view = entry.view
        if view is not None and view[0] is values and view[1] is answer.glue:
            # The same records and glue as last time (an unchanged refresh): no decoding,
            # no sorting, and, while the targets' addresses stay the same, the same
            # endpoint set, so watchers diff by identity and nothing new is kept.
            previous: EndpointSet = view[2]
            glue_found, missing, addresses = view[3], view[4], view[5]
            if not missing:
                return previous.with_ttl(ttl, stale)
            if pins is not None:
                pins.srv(fqdn, missing)
            found = dict(glue_found)
            ttl, stale = await self._expand(fqdn, missing, found, ttl, stale, refresh)
            if tuple([found[target] for target in missing]) == addresses:
                return previous.with_ttl(ttl, stale)
        else:
            glue_found = {target: canonical_addresses(glue) for target, glue in answer.glue.items()}
            missing = list(
                dict.fromkeys(v[3] for v in values if v[3] != "." and v[3] not in glue_found)
            )
            cap = self._policy.max_srv_targets
            if len(missing) > cap:
                log.warning(
                    "SRV %s: %d targets without glue; resolving the first %d "
                    "(Policy.max_srv_targets)",
                    fqdn,
                    len(missing),
                    cap,
                )
                missing = missing[:cap]
            if pins is not None:
                pins.srv(fqdn, missing)
            found = dict(glue_found)
            if missing:
                ttl, stale = await self._expand(fqdn, missing, found, ttl, stale, refresh)
        result = EndpointSet.from_wire(
            fqdn,
            [
                (priority, target, port, weight, found.get(target, ()))
                for priority, weight, port, target in values
                if target != "."
            ],
            ttl=ttl,
            stale=stale,
        )
        addresses = tuple([found[target] for target in missing])
        entry.view = (values, answer.glue, result, glue_found, missing, addresses)
        return result

    async def _expand(
        self,
        fqdn: str,
        targets: list[str],
        found: dict[str, tuple[str, ...]],
        ttl: float,
        stale: bool,
        refresh: bool,
    ) -> tuple[float, bool]:
        """Resolve targets that came without glue into ``found``; the set's TTL and stale flag."""
        results = await gather(
            [functools.partial(self.address_set, target, refresh=refresh) for target in targets]
        )
        negative_ttl = self._policy.negative_min_ttl
        for target, result in zip(targets, results, strict=True):
            if isinstance(result, (NXDomain, NoData)):
                log.debug("SRV %s: target %s has no addresses: %s", fqdn, target, result)
                result = ((), result.ttl or negative_ttl, False)
            elif isinstance(result, ResolveError):
                if refresh:
                    raise result
                log.debug("SRV %s: target %s has no addresses: %s", fqdn, target, result)
                result = ((), negative_ttl, False)
            elif isinstance(result, BaseException):
                raise result
            found[target] = result[0]
            ttl = min(ttl, result[1])
            stale = stale or result[2]
        return ttl, stale

    async def address_set(self, fqdn: str, *, refresh: bool = False) -> AddressSet:
        """(addresses, ttl, stale) for one absolute name: A and AAAA asked at once.

        ``refresh`` (an SRV refresh's targets) takes fresh cached addresses and
        asks only for expired ones, never serving stale ones: each target is
        refreshed on its own TTL, not on every refresh of the SRV set.
        """
        records = self._records
        stale_ok = not refresh
        results: list[Any] = []
        missing: list[int] = []
        for qtype in (wire.TYPE_A, wire.TYPE_AAAA):
            hit: Any
            try:
                hit = records.cached(fqdn, qtype, stale_ok=stale_ok)
            except ResolveError as exc:
                hit = exc.with_traceback(None)  # its frame holds `results`: no cycle
            results.append(hit)
            if hit is None:
                missing.append(qtype)
        if missing:  # only then concurrent lookups (tasks): a cached target costs none
            fetched = await gather(
                [
                    functools.partial(records.fetch, fqdn, qtype, stale_ok=stale_ok)
                    for qtype in missing
                ]
            )
            for qtype, result in zip(missing, fetched, strict=True):
                results[0 if qtype == wire.TYPE_A else 1] = result
        found: list[str] = []
        ttl = math.inf
        stale = False
        errors: list[BaseException] = []
        for result in results:
            if isinstance(result, BaseException):
                errors.append(result)
                continue
            entry, entry_stale = result
            answer = entry.answer
            assert type(answer) is Positive
            found.extend(answer.values)
            ttl = min(ttl, entry.ttl)
            stale = stale or entry_stale
        if not found:
            hard = [e for e in errors if not isinstance(e, (NXDomain, NoData))]
            nx = [e for e in errors if isinstance(e, NXDomain)]
            raise (hard or nx or errors)[0]
        return canonical_addresses(found), ttl, stale
