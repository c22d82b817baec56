"""The DNS stub: any client's query answered from the resolver's record store.

Point a proxy's resolver here and it can no longer storm the cluster DNS:
every answer comes from the one store the library and the watch loops fill,
through the one transport and its upstream health, so identical queries
share one upstream query, TTLs handed out are clamped to the policy's floor
and cap, names asked again near expiry are prefetched, and when upstream has
not answered within ``stale_after`` the last good answer goes out stale with
a 30 s TTL (RFC 8767), never TTL 0. Clients outside ``allow`` are refused:
never an open resolver.

The cache hit is synchronous (no task, no parse of the stored reply): the
:class:`~srvwatch.listen.DnsListener` sends what :meth:`Stub.answer` returns.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

import anyio

from .. import wire
from ..cache import Entry
from ..errors import NoData, NXDomain, ResolveError
from ..listen import Peer
from ..metrics import Counters
from ..reply import Negative, Positive, Reply
from ..resolver import Resolver
from .render import ClientQuery, Template, error_reply, read_query, template

__all__ = ["DEFAULT_ALLOW", "Stub"]

log = logging.getLogger(__name__)

DEFAULT_ALLOW = ("127.0.0.0/8", "::1/128")
_KEYS_MAX = 100_000
_PREFETCH_FRACTION = 0.1
_SERVFAIL = wire.RCODE_SERVFAIL
_REFUSED = wire.RCODE_REFUSED

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Hot = tuple[tuple[Any, ...], Entry, int, bytes, ClientQuery]


class Stub:
    """Answers DNS queries for a :class:`DnsListener` from a :class:`Resolver`'s store.

    ``answer(query, peer, tcp)`` is the listener's handler: bytes for a hit
    (or an error), an awaitable for a miss, None for what must not be
    answered (responses, garbage).
    """

    def __init__(self, resolver: Resolver, *, allow: Sequence[str] = DEFAULT_ALLOW) -> None:
        self._resolver = resolver
        self._records = resolver.records
        self._store = resolver.records.store
        self._policy = resolver.policy
        self._clock = resolver.records.store.clock
        self.counters: Counters = resolver.transport.counters
        self._allow: tuple[Network, ...] = tuple(_network(text) for text in allow)
        self._keys: dict[bytes, tuple[Any, ...]] = {}
        self._fetching: dict[tuple[Any, ...], anyio.Event] = {}
        self._allowed_peers: dict[str, bool] = {}
        self._hot: tuple[dict[bytes, _Hot], dict[bytes, _Hot]] = ({}, {})
        """Per transport (UDP, TCP): a query's bytes after its ID -> the reply to it this
        second. Clients repeat the same bytes, so a hit is a dict lookup and an ID patch."""

    def __repr__(self) -> str:
        return f"<Stub allow={[str(n) for n in self._allow]} keys={len(self._keys)}>"

    # -- the handler --------------------------------------------------------------------

    def answer(self, data: bytes, peer: Peer, tcp: bool) -> bytes | Awaitable[bytes | None] | None:
        counters = self.counters
        if tcp:
            counters.stub_requests_tcp += 1
        else:
            counters.stub_requests_udp += 1
        allowed = self._allowed_peers.get(peer[0])
        if allowed is None:
            allowed = self._allowed(peer[0])
        if not allowed:
            counters.stub_refused += 1
            return self._error(data, _REFUSED)
        hot = self._hot[tcp].get(data[2:])
        if hot is not None:
            hot_key, hot_entry, second, body, hot_query = hot
            now = self._clock()
            if (
                now < hot_entry.expires_at
                and int(now - hot_entry.stored_at) == second
                and self._store.peek(hot_key) is hot_entry
            ):
                counters.stub_hits += 1
                if hot_entry.expires_at - now < hot_entry.ttl * _PREFETCH_FRACTION:
                    self._prefetch(hot_key, hot_query, data)
                by_rcode = counters.stub_responses
                rcode = body[1] & 0xF
                by_rcode[rcode] = by_rcode.get(rcode, 0) + 1
                return data[:2] + body
        query = read_query(data)
        if query is None:
            counters.stub_ignored += 1
            return None
        if isinstance(query, int):
            return self._error(data, query)
        key = self._keys.get(query.key)
        if key is not None:
            entry = self._store.peek(key)
            if entry is not None and entry.answer is not None:
                now = self._clock()
                if now < entry.expires_at:
                    counters.stub_hits += 1
                    if entry.expires_at - now < entry.ttl * _PREFETCH_FRACTION:
                        self._prefetch(key, query, data)
                    reply = self._render(entry, query, now, tcp)
                    hot_for = self._hot[tcp]
                    if len(hot_for) >= _KEYS_MAX:
                        hot_for.clear()
                    hot_for[data[2:]] = (key, entry, int(now - entry.stored_at), reply[2:], query)
                    return reply
        counters.stub_misses += 1
        return self._slow(query, data, tcp)

    # -- misses -------------------------------------------------------------------------

    async def _slow(self, query: ClientQuery, data: bytes, tcp: bool) -> bytes | None:
        key = self._key_of(query)
        entry = self._store.peek(key)
        now = self._clock()
        if entry is not None and entry.answer is not None and now < entry.expires_at:
            return self._render(entry, query, now, tcp)
        if entry is not None and entry.failing(now):
            # Remembered failure: stale if we have it, else SERVFAIL, without asking.
            if entry.servable_stale(now):
                return self._stale(entry, query, tcp)
            return self._error(data, _SERVFAIL)
        done = self._fetch(key, query, data)
        stale_ok = entry is not None and entry.servable_stale(now)
        wait = self._policy.stale_after if stale_ok else self._policy.lifetime + 0.5
        with anyio.move_on_after(wait):
            await done.wait()
        entry = self._store.peek(key)
        now = self._clock()
        if entry is not None and entry.answer is not None and now < entry.expires_at:
            return self._render(entry, query, now, tcp)
        if entry is not None and entry.servable_stale(now):
            if entry.failure is not None:  # recheck upstream for it at most every 30 s
                until = max(entry.failure.until, now + self._policy.stale_refresh_interval)
                entry.failure = dataclasses.replace(entry.failure, until=until)
            return self._stale(entry, query, tcp)
        return self._error(data, _SERVFAIL)

    def _fetch(self, key: tuple[Any, ...], query: ClientQuery, data: bytes) -> anyio.Event:
        """One upstream fetch per key, in a task of the resolver's: a client gone never stops it."""
        done = self._fetching.get(key)
        if done is None:
            done = self._fetching[key] = anyio.Event()
            self._resolver.spawn(self._run_fetch, key, query, data, done)
        return done

    async def _run_fetch(
        self, key: tuple[Any, ...], query: ClientQuery, data: bytes, done: anyio.Event
    ) -> None:
        try:
            if len(key) == 2:
                await self._records.lookup(query.qname, query.qtype, refresh=True)
            else:
                await self._forward(key, data)
        except (NXDomain, NoData):
            pass  # stored as a negative answer: rendered from the store
        except ResolveError as exc:
            log.debug("stub: %s %d failed: %s", query.qname, query.qtype, exc)
        finally:
            self._fetching.pop(key, None)
            done.set()

    async def _forward(self, key: tuple[Any, ...], data: bytes) -> None:
        """A query the resolver does not ask itself (DO, CD, another class): sent as it came."""
        try:
            reply = await self._resolver.transport.forward(data)
        except ResolveError as exc:
            self._store.put_failure(key, exc)
            raise
        self._store.put(key, *_as_answer(reply, self._policy.negative_ttl))

    def _prefetch(self, key: tuple[Any, ...], query: ClientQuery, data: bytes) -> None:
        """Asked again in the last 10% of its TTL: refreshed in the background before it expires."""
        if key in self._fetching:
            return
        self.counters.stub_prefetches += 1
        self._fetch(key, query, data)

    # -- replies ------------------------------------------------------------------------

    def _template(self, entry: Entry) -> Template:
        built = entry.rendered
        if built is None:
            answer = entry.answer
            assert answer is not None
            built = entry.rendered = template(
                answer.data, answer.msg, self._policy, negative=type(answer) is Negative
            )
            self.counters.ttl_clamped_floor += built.clamped_floor
            self.counters.ttl_clamped_cap += built.clamped_cap
        assert isinstance(built, Template)
        return built

    def _render(self, entry: Entry, query: ClientQuery, now: float, tcp: bool) -> bytes:
        try:
            built = self._template(entry)
        except wire.WireError as exc:  # a stored reply dnspython cannot re-encode either
            log.info("stub: cannot serve the stored reply for %s: %s", query.qname, exc)
            return _servfail(query)
        elapsed = int(now - entry.stored_at)
        reply = built.reply(query, built.at(elapsed), tcp)
        self._count_rcode(reply)
        return reply

    def _stale(self, entry: Entry, query: ClientQuery, tcp: bool) -> bytes:
        self.counters.stub_stale_answers += 1
        try:
            built = self._template(entry)
        except wire.WireError:
            return _servfail(query)
        reply = built.reply(query, built.fixed(int(self._policy.stale_answer_ttl)), tcp)
        self._count_rcode(reply)
        return reply

    def _error(self, data: bytes, rcode: int) -> bytes | None:
        try:
            reply = error_reply(data, rcode)
        except (ValueError, wire.WireError):
            return None
        self._count_rcode(reply)
        return reply

    def _count_rcode(self, reply: bytes) -> None:
        rcode = reply[3] & 0xF
        by_rcode = self.counters.stub_responses
        by_rcode[rcode] = by_rcode.get(rcode, 0) + 1

    # -- keys and clients ----------------------------------------------------------------

    def _key_of(self, query: ClientQuery) -> tuple[Any, ...]:
        """The store key: the resolver's own for plain IN queries, a separate one otherwise."""
        if query.qclass == wire.CLASS_IN and not query.do and not query.cd:
            key: tuple[Any, ...] = (query.qname, query.qtype)
        else:
            key = (query.qname, query.qtype, query.qclass, query.do, bool(query.cd))
        if len(self._keys) >= _KEYS_MAX:
            self._keys.clear()
        self._keys[query.key] = key
        return key

    def _allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        allowed = any(address in network for network in self._allow)
        if len(self._allowed_peers) >= _KEYS_MAX:
            self._allowed_peers.clear()
        self._allowed_peers[host] = allowed
        return allowed


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"allow: {text!r} is not an IP network (e.g. 127.0.0.0/8)") from None


def _as_answer(reply: Reply, negative_ttl: Any) -> tuple[Positive | Negative, float]:
    """A forwarded reply as a store answer: positive with records, else negative (RFC 2308)."""
    data, msg, server = reply
    if msg.answers:
        ttl = min(rr.ttl for rr in msg.answers)
        return Positive(data, msg, msg.answers, (), msg.qname, ttl, {}, float("inf"), server), ttl
    soa = next((rr for rr in msg.authority if rr.rdtype == wire.TYPE_SOA), None)
    ttl = negative_ttl(soa.ttl if soa else None, None)
    message = f"{msg.qname} {msg.qtype}: no records"
    return Negative(data, msg, msg.rcode == wire.RCODE_NXDOMAIN, ttl, message, server), ttl


def _servfail(query: ClientQuery) -> bytes:
    """SERVFAIL to a query already read (its ID, RD and question kept)."""
    header = query.id + bytes((query.rd >> 8, 0)) + b"\x00\x01\x00\x00\x00\x00\x00\x00"
    return error_reply(header + query.question, _SERVFAIL)
