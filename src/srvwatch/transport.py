"""Exchange one DNS query with a list of nameservers, over UDP and TCP, through anyio.

Everything above this module talks to a :class:`Transport`: a small interface
(ask a question, forward a client's query as it came, close) that tests
replace with :class:`srvwatch.scripted.ScriptedTransport`, as httpcore's tests
drive a mock backend. :class:`SocketTransport` is the real one and the only
code in srvwatch's core that touches sockets. It owns every socket it opens
and counts them (``sockets_opened`` / ``sockets_closed``). Spoofing defences
follow RFC 5452: a fresh random ID per attempt, source ports rotated by
retiring each UDP socket after a bounded number of queries, and a response
whose ID or question does not match is ignored, not trusted.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio
import anyio.lowlevel
import dns.rcode
from anyio.streams.buffered import BufferedByteReceiveStream

from . import wire
from .address import Nameserver, parse_nameserver
from .errors import ResolveTimeout, ServerFailure, UpstreamDown
from .health import Health
from .metrics import Counters
from .names import type_text
from .policy import Policy
from .reply import Reply

__all__ = [
    "Clock",
    "Health",
    "Nameserver",
    "Reply",
    "SocketTransport",
    "Transport",
    "parse_nameserver",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Spawn = Callable[..., None]
Settle = Callable[[Reply | None], bool]
"""How a batched query ended: its reply when it is the last one again but for the ID and
TTLs, else None (no reply, an error rcode, or a new reply kept for the question's next
query): the caller then takes the usual path. Returns whether it used the reply; a reply
it did not use is kept for the question's next query too, so it is never asked twice."""

_ANSWER_RCODES = frozenset({wire.RCODE_NOERROR, wire.RCODE_NXDOMAIN})
"""The only rcodes that answer a question; any other moves on to the next nameserver."""
_MAX_UDP_RESPONSE = 65535
_QUERY_CACHE_SIZE = 10_000
_DRAIN_BATCH = 32
"""Datagrams read per wake-up before yielding: a flood cannot stall the event loop."""


class Transport(Protocol):
    """What the resolver and the stub need from the network: one question, or a forwarded query.

    Implementations map every network failure to :class:`ResolveTimeout` or
    :class:`ServerFailure` (naming the servers), return only replies that
    answer the question asked (right ID, right question), and count what they
    do in ``counters``, which everything built over the transport shares.
    """

    nameservers: tuple[Nameserver, ...]
    counters: Counters
    health: Health

    def attach(self, spawn: Spawn) -> None:
        """Give the transport a way to start background tasks (its orphan sweeper, and
        its health record's release of parked waiters after a recovery)."""
        ...

    async def query(self, qname: str, qtype: int, *, deadline: float | None = None) -> Reply:
        """Ask ``qname``/``qtype`` (canonical absolute name) with RD and EDNS(0) set.

        ``deadline`` (on the transport's clock) is a caller's own: the lookup,
        its wait for a query slot included, ends by then. Without one, the
        wait for a slot is not bounded (cancellation still ends it) and the
        lifetime starts with the first attempt.
        """
        ...

    async def forward(self, query: bytes) -> Reply:
        """Send a client's query as it came (its flags, EDNS options), under an ID of ours.

        The reply comes back with our ID; the caller puts the client's back.
        """
        ...

    async def aclose(self) -> None:
        """Close every socket; safe to call twice."""
        ...


class _AttemptFailed(Exception):
    """One attempt at one nameserver failed in a way worth retrying elsewhere."""


class _AttemptTimeout(_AttemptFailed):
    pass


class _AttemptRcode(_AttemptFailed):
    def __init__(self, why: str) -> None:
        super().__init__(why)


class _UdpSocket:
    __slots__ = ("server", "sock", "uses")

    def __init__(self, server: Nameserver, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.uses = 0


class _Orphan:
    """A UDP query whose caller was cancelled, kept until its timeout for a successor."""

    __slots__ = ("deadline", "entry", "expected_id")

    def __init__(self, entry: _UdpSocket, expected_id: int, deadline: float) -> None:
        self.entry = entry
        self.expected_id = expected_id
        self.deadline = deadline


class _Query:
    """One query as sent, with ID 0, and the question its reply must echo."""

    __slots__ = (
        "_plain",
        "asked",
        "failed_by",
        "last",
        "qclass",
        "qname",
        "qtype",
        "received",
        "same_spans",
        "template",
        "udp_unusable",
    )

    def __init__(self, template: bytes, plain: bytes | None = None) -> None:
        self.template = b"\x00\x00" + template[2:]
        msg = wire.parse(self.template)
        if msg.qr or msg.opcode != 0 or not msg.qname:
            raise ValueError("a query needs QR clear, opcode QUERY and one question")
        self.qname = msg.qname
        self.qtype = msg.qtype
        self.qclass = msg.qclass
        self.asked = wire.question_of(self.template)
        self._plain: _Query | bytes | None = plain
        """The same question without EDNS: its bytes until a server answers FORMERR to OPT."""
        self.last: tuple[bytes, wire.Message] | None = None
        """The last reply that answered this query, parsed."""
        self.same_spans: tuple[tuple[int, int], ...] = ()
        """The byte ranges of ``last`` outside its ID and TTL fields."""
        self.received: tuple[Reply, float] | None = None
        """A new reply a batch received, and until when (``clock``) it answers the next query."""
        self.failed_by: tuple[int, str, float] | None = None
        """A nameserver (position) that answered a batch with an error rcode, what it said, and
        until when (``clock``): the next query starts past it, as after its own such answer."""
        self.udp_unusable = False
        """Its last UDP reply was truncated or FORMERR (no EDNS): not batched, for a batch's
        reply would be thrown away and the query asked again over UDP before TCP."""

    @property
    def plain(self) -> _Query | None:
        """The same question without EDNS, for a server that answers FORMERR to OPT.

        Prepared on first use: few servers need it, and every remembered question would
        otherwise carry a second parsed query.
        """
        plain = self._plain
        if isinstance(plain, bytes):
            plain = self._plain = _Query(plain)
        return plain

    def remember(self, data: bytes, msg: wire.Message) -> None:
        offsets = sorted(rr.ttl_offset for rr in (*msg.answers, *msg.authority, *msg.additional))
        starts = [2, *(offset + 4 for offset in offsets)]
        ends = [*offsets, len(data)]
        self.last = (data, msg)
        self.same_spans = tuple(zip(starts, ends, strict=True))

    def unchanged(self, data: bytes) -> wire.Message | None:
        """The last reply's parse, if ``data`` is that reply but for its ID and TTLs."""
        last = self.last
        if last is None or len(data) != len(last[0]):
            return None
        previous = last[0]
        if data[2:] == previous[2:]:
            return last[1]  # the TTLs too (an authoritative server's): one comparison
        for start, end in self.same_spans:
            if data[start:end] != previous[start:end]:
                return None
        return last[1]


class SocketTransport:
    """Sends queries to nameservers with failover, retries, timeouts and TCP fallback.

    UDP sockets are connected (the kernel drops datagrams from other
    addresses, and an ICMP port-unreachable fails the attempt at once) and
    pooled per nameserver; each is retired after ``max_socket_uses``
    queries so the source port keeps changing. ``max_in_flight`` bounds the
    queries (and so the sockets) in flight at once; more wait their turn.
    Deadlines are kept on ``clock`` and converted to the event loop's clock
    only when an attempt has to wait.
    """

    def __init__(
        self,
        nameservers: Sequence[Nameserver],
        policy: Policy,
        counters: Counters | None = None,
        *,
        clock: Clock = time.monotonic,
        max_socket_uses: int = 64,
        max_idle_sockets: int | None = None,
        max_in_flight: int = 256,
        question_capacity: Callable[[], int] | None = None,
    ) -> None:
        """``question_capacity``: how many questions' query bytes and last replies to keep
        (least recently asked dropped first), a callable so it can follow the record store's
        capacity, which grows with the questions watches depend on."""
        if not nameservers:
            raise ValueError("at least one nameserver is required")
        if max_socket_uses < 1:
            raise ValueError(f"max_socket_uses must be >= 1, got {max_socket_uses!r}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        # Duplicate resolv.conf lines are common; each server is walked once, by position.
        self.nameservers = tuple(dict.fromkeys(nameservers))
        self.counters = counters if counters is not None else Counters()
        self._names = {ns: str(ns) for ns in self.nameservers}  # formatted once, not per reply
        self._policy = policy
        self._clock = clock
        self._max_uses = max_socket_uses
        # Idle sockets wait for the next query: as many as may be in flight at once, so a
        # burst of refreshes does not close sockets only to open new ones the next second.
        self._max_idle = max_in_flight if max_idle_sockets is None else max_idle_sockets
        self._idle: dict[Nameserver, list[_UdpSocket]] = {ns: [] for ns in self.nameservers}
        self._queries: OrderedDict[tuple[str, int], _Query] = OrderedDict()
        self._question_capacity = question_capacity or (lambda: _QUERY_CACHE_SIZE)
        self._orphans: dict[tuple[Nameserver, bytes], _Orphan] = {}
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._slot_waiters: deque[anyio.Event] = deque()
        self._closed = False
        self.health = Health(self.nameservers, policy, clock)
        self._spawn: Spawn | None = None
        self._sweeping = False

    def use_policy(self, policy: Policy) -> None:
        """Follow a new policy from the next query on (a sidecar reload); health too."""
        self._policy = policy
        self.health.use_policy(policy)

    def attach(self, spawn: Spawn) -> None:
        self._spawn = spawn
        self.health.attach(spawn)

    def __repr__(self) -> str:
        servers = ", ".join(map(str, self.nameservers))
        idle = sum(len(pool) for pool in self._idle.values())
        state = "closed" if self._closed else f"{self._in_flight} in flight, {idle} idle sockets"
        return f"<SocketTransport [{servers}] {state}>"

    # -- public -------------------------------------------------------------------

    async def query(self, qname: str, qtype: int, *, deadline: float | None = None) -> Reply:
        """One lookup of a (canonical name, type), with the query bytes built once per pair.

        A lookup queued for a query slot has not started: without a caller's
        ``deadline`` it waits as long as it takes, and its lifetime starts
        with the slot (see :meth:`Transport.query`).
        """
        query = self._query_for(qname, qtype)
        received = query.received
        if received is not None:
            # A batch brought a new reply for this question (see send_batch): the caller
            # it went back to asks now, and gets it without a second query.
            query.received = None
            if received[1] > self._clock() and not self._closed:
                await anyio.lowlevel.checkpoint()
                return received[0]
        failed_by = query.failed_by
        if failed_by is not None:
            query.failed_by = None
            if failed_by[2] <= self._clock():
                failed_by = None
        if self._closed:
            raise RuntimeError("transport is closed")
        await self._take_slot(query, deadline)  # inlined _bounded: one coroutine less
        try:
            lifetime = self._clock() + self._policy.lifetime
            return await self._exchange(
                query, lifetime if deadline is None else deadline, failed_by
            )
        finally:
            self._give_slot()

    async def forward(self, query: bytes) -> Reply:
        deadline = self._clock() + self._policy.lifetime
        try:
            prepared = _Query(query)
        except wire.WireError as exc:
            raise ValueError(f"cannot forward a malformed query: {exc}") from None
        if self._closed:
            raise RuntimeError("transport is closed")
        await self._take_slot(prepared, deadline)
        try:
            return await self._exchange(prepared, deadline)
        finally:
            self._give_slot()

    # -- batches ------------------------------------------------------------------

    def send_batch(self, asks: Sequence[tuple[str, int, Settle]]) -> list[Settle]:
        """Send refreshes due together over shared sockets; one task reads each socket's replies.

        At thousands of watches most refreshes change nothing. One at a time,
        each costs its loop's task a chain of coroutines, a socket, a timer
        and a wake-up or two; sent together, a socket and a reader task serve
        up to ``max_socket_uses`` of them (so source ports still rotate, RFC
        5452), and each reply is matched by ID and settled by a call. Only a
        nameserver known up is used, with one query slot per socket. Each ask
        is settled exactly once, in its reader task, unless it is returned:
        the asks this could not send (no nameserver up, no free slot, no way
        to start a task), for their callers to take the usual path. When a
        nameserver ahead of the one used is down and due a probe, the first
        ask is returned too: its caller's query carries the probe, or a
        preferred nameserver that recovers would never be tried again.
        """
        if not asks:
            return []
        server = self._first_up()
        if server is None or self._spawn is None or self._closed:
            return [settle for _, _, settle in asks]
        usual: list[Settle] = []
        if server and self.health.probe_due(server):
            usual.append(asks[0][2])
            asks = asks[1:]
        ready: list[tuple[_Query, Settle]] = []
        for qname, qtype, settle in asks:
            query = self._query_for(qname, qtype)
            if query.udp_unusable:
                usual.append(settle)  # the usual path: TCP, or no EDNS, after one UDP query
            else:
                ready.append((query, settle))
        upstream = self.health.upstreams[server]
        start = 0
        while start < len(ready):
            if not upstream.up or self._in_flight >= self._max_in_flight or self._slot_waiters:
                return usual + [settle for _, settle in ready[start:]]
            self._in_flight += 1
            try:
                entry = self._acquire(self.nameservers[server])
            except OSError:
                self._give_slot()
                return usual + [settle for _, settle in ready[start:]]
            # As many as the socket has uses left (a pooled one has carried queries already).
            chunk = ready[start : start + self._max_uses - entry.uses + 1]
            start += len(chunk)
            pending = self._send_chunk(entry, server, chunk)
            entry.uses += max(len(pending) - 1, 0)
            if not pending:  # the first send failed: the server is down, nothing to read
                self._release(entry, False)
                self._give_slot()
                continue
            try:
                self._spawn(self._collect, entry, server, pending)
            except RuntimeError:  # the owner is closing
                self._release(entry, False)
                self._give_slot()
                unsent = [settle for _, settle in ready[start:]]
                return usual + [settle for _, settle in pending.values()] + unsent
        return usual

    def _first_up(self) -> int | None:
        for i, upstream in enumerate(self.health.upstreams):
            if upstream.up:
                return i
        return None

    def _send_chunk(
        self, entry: _UdpSocket, server: int, chunk: Sequence[tuple[_Query, Settle]]
    ) -> dict[int, tuple[_Query, Settle]]:
        """Send each question under an ID unique on this socket; the asks by ID.

        A send that fails (a server that has gone away: its ICMP port
        unreachable is reported by the next send on the connected socket)
        marks the server down and hands back the asks not sent, so a dead
        server gets a few datagrams, not the whole batch.
        """
        pending: dict[int, tuple[_Query, Settle]] = {}
        ids = os.urandom(2 * len(chunk))
        send = entry.sock.send
        counters = self.counters
        for n, (query, settle) in enumerate(chunk):
            query_id = ids[2 * n : 2 * n + 2]
            while int.from_bytes(query_id, "big") in pending:
                query_id = os.urandom(2)
            try:
                send(query_id + query.template[2:])
            except OSError as exc:
                counters.network_errors += 1
                self.health.failed(server, f"{self.nameservers[server]}: {exc.strerror or exc}")
                for _, unsent in chunk[n:]:
                    _settle_safely(unsent, None)  # the usual path: fail over, or fail fast
                break
            counters.count_query(query.qname)
            pending[int.from_bytes(query_id, "big")] = (query, settle)
        counters.batches += 1
        return pending

    async def _collect(
        self, entry: _UdpSocket, server: int, pending: dict[int, tuple[_Query, Settle]]
    ) -> None:
        """Read one batch's replies until each is settled or the attempt timeout passes.

        A timeout marks the nameserver down, as one attempt's does; what was
        not answered is settled with None, and its callers ask the usual way.
        """
        sock = entry.sock
        budget = self._policy.timeout
        deadline = self._clock() + budget
        failure: str | None = None
        try:
            await anyio.lowlevel.checkpoint()
            with anyio.CancelScope(deadline=self._event_loop_time(deadline)):
                while True:
                    self._settle_ready(sock, server, pending)
                    if not pending:
                        break
                    await anyio.wait_readable(sock)
            if pending:
                self.counters.timeouts += 1
                failure = f"{self.nameservers[server]} timed out after {budget:.3g}s"
        except OSError as exc:  # an ICMP port unreachable, most likely
            self.counters.network_errors += 1
            failure = f"{self.nameservers[server]}: {exc.strerror or exc}"
        finally:
            self._release(entry, not pending)
            self._give_slot()
        if failure is not None:
            self.health.failed(server, failure)
        for _, settle in pending.values():
            _settle_safely(settle, None)

    def _settle_ready(
        self, sock: socket.socket, server: int, pending: dict[int, tuple[_Query, Settle]]
    ) -> None:
        """Settle the asks whose replies are queued; a bounded number of reads per wake-up."""
        name = self._names[self.nameservers[server]]
        heard = False
        try:
            for _ in range(len(pending) + _DRAIN_BATCH):
                try:
                    data = sock.recv(_MAX_UDP_RESPONSE)
                except BlockingIOError:
                    return
                heard = self._settle_one(data, server, name, pending) or heard
                if not pending:
                    return
        finally:
            if heard:
                self.health.succeeded(server)  # once per read, not per reply

    def _settle_one(
        self, data: bytes, server: int, name: str, pending: dict[int, tuple[_Query, Settle]]
    ) -> bool:
        """Settle the ask ``data`` answers, if any; whether it answered one."""
        query_id = int.from_bytes(data[:2], "big")
        ask = pending.get(query_id)
        if ask is None:
            self.counters.ignored_responses += 1
            return False
        query, settle = ask
        msg = self._match(data, query_id, query)
        if msg is None:
            return False
        del pending[query_id]
        last = query.last
        if last is not None and msg is last[1]:
            reply = Reply(data, msg, name)
            if not _settle_safely(settle, reply):
                query.received = (reply, self._clock() + self._policy.timeout)
            return True
        if msg.rcode == wire.RCODE_FORMERR or msg.tc:
            query.udp_unusable = True  # the usual path falls back to no EDNS, or to TCP
        elif msg.rcode not in _ANSWER_RCODES:
            self.counters.server_errors += 1
            why = f"{name} answered {_rcode_text(msg.rcode)}"
            query.failed_by = (server, why, self._clock() + self._policy.timeout)
        else:
            query.remember(data, msg)
            query.received = (Reply(data, msg, name), self._clock() + self._policy.timeout)
        _settle_safely(settle, None)
        return True

    def _query_for(self, qname: str, qtype: int) -> _Query:
        """The prepared query of a (canonical name, type), built once and kept (LRU)."""
        queries = self._queries
        question = (qname, qtype)
        query = queries.get(question)
        if query is None:
            query = _Query(
                wire.build_query(qname, qtype, 0),
                wire.build_query(qname, qtype, 0, edns_payload=None),
            )
            queries[question] = query
            if len(queries) > self._question_capacity():
                del queries[next(iter(queries))]
        else:
            queries.move_to_end(question)
        return query

    async def _take_slot(self, query: _Query, deadline: float | None) -> None:
        """A slot among ``max_in_flight``, first come first served, by ``deadline`` if one is set.

        The bound keeps thousands of watches starting at once from opening
        thousands of sockets (and running out of descriptors).
        """
        if self._in_flight < self._max_in_flight and not self._slot_waiters:
            self._in_flight += 1
            return
        event = anyio.Event()
        self._slot_waiters.append(event)
        try:
            if deadline is None:
                await event.wait()
            else:
                with anyio.move_on_after(deadline - self._clock()):
                    await event.wait()
        except BaseException:
            self._abandon_slot(event)
            raise
        if not event.is_set():
            self._abandon_slot(event)
            self.counters.timeouts += 1
            raise self._timeout(query, "no free query slot (max_in_flight)")

    def _abandon_slot(self, event: anyio.Event) -> None:
        if event in self._slot_waiters:
            self._slot_waiters.remove(event)
        else:
            self._give_slot()  # handed a slot just as we gave up: pass it on

    def _give_slot(self) -> None:
        if self._slot_waiters:
            self._slot_waiters.popleft().set()  # the slot goes straight to the next waiter
        else:
            self._in_flight -= 1

    async def _exchange(
        self, query: _Query, deadline: float, failed_by: tuple[int, str, float] | None = None
    ) -> Reply:
        """One lookup: the first reply that answers, walking the nameservers by position.

        NOERROR and NXDOMAIN are answers; any other rcode moves on to the next
        nameserver, and when every one has said so, :class:`ServerFailure`.
        A timeout or network error marks the nameserver down (see
        :mod:`~srvwatch.health`): no attempt goes to a down nameserver but
        its one probe, so when none is usable the lookup fails at once with a
        :class:`ResolveTimeout` that says the upstream is down. Rounds over
        the nameservers pause with jitter; no sleep and no attempt runs past
        the lifetime. ``failed_by``: a batch's error answer to the same
        question (see ``_Query.failed_by``), counted as this lookup's own.
        """
        servers = self.nameservers
        health = self.health
        policy = self._policy
        clock = self._clock
        answered_badly: set[int] = set()
        last_failure: _AttemptFailed | None = None
        if failed_by is not None:  # a batch's query has just had this answer (see send_batch)
            answered_badly.add(failed_by[0])
            last_failure = _AttemptRcode(failed_by[1])
        position = -1
        rounds = 0
        while True:
            remaining = deadline - clock()
            if remaining <= 0.001:
                break
            i = health.pick(position + 1, answered_badly)
            if i is None:
                break
            if i <= position:  # wrapped around: a new round over the nameservers
                rounds += 1
                pause = min(policy.retry_delay(rounds), deadline - clock())
                if pause > 0:
                    try:
                        await anyio.sleep(pause)
                    except BaseException:
                        health.released(i)
                        raise
                remaining = deadline - clock()
                if remaining <= 0.001:
                    health.released(i)
                    break
            position = i
            try:
                reply = await self._attempt(servers[i], query, min(policy.timeout, remaining))
            except _AttemptRcode as exc:
                health.succeeded(i)  # alive, if not helpful
                answered_badly.add(i)
                last_failure = exc
                if len(answered_badly) == len(servers):
                    break
                continue
            except _AttemptFailed as exc:
                health.failed(i, str(exc))
                last_failure = exc
                continue
            except BaseException:
                health.released(i)
                raise
            health.succeeded(i)
            return reply
        if isinstance(last_failure, _AttemptRcode):
            raise self._server_failure(query, last_failure)
        if last_failure is None and not health.any_up:
            self.counters.fast_failures += 1
            raise self._timeout(query, health.down_message(), UpstreamDown)
        why = str(last_failure) if last_failure is not None else "no attempt could start"
        if not health.any_up:
            why += "; " + health.down_message()
        raise self._timeout(query, why)

    def _timeout(
        self, query: _Query, why: str, kind: type[ResolveTimeout] = ResolveTimeout
    ) -> ResolveTimeout:
        return kind(
            f"{query.qname} {type_text(query.qtype)}: no answer within "
            f"{self._policy.lifetime:g}s from {', '.join(map(str, self.nameservers))} ({why})",
            name=query.qname,
            rdtype=type_text(query.qtype),
        )

    @staticmethod
    def _server_failure(query: _Query, cause: object) -> ServerFailure:
        return ServerFailure(
            f"{query.qname} {type_text(query.qtype)}: every nameserver failed: {cause}",
            name=query.qname,
            rdtype=type_text(query.qtype),
        )

    async def aclose(self) -> None:
        """Close every pooled socket; sockets in use are closed by their attempt."""
        self._closed = True
        while self._orphans:
            self._drop_orphan(self._orphans.popitem()[1])
        for pool in self._idle.values():
            while pool:
                self._close_udp(pool.pop())

    # -- one attempt --------------------------------------------------------------

    async def _attempt(self, server: Nameserver, query: _Query, budget: float) -> Reply:
        deadline = self._clock() + budget
        counters = self.counters
        try:
            data, msg = await self._udp(server, query, deadline)
            query.udp_unusable = msg.tc or msg.rcode == wire.RCODE_FORMERR
            if msg.rcode == wire.RCODE_FORMERR and query.plain is not None:
                # Old servers reject EDNS with FORMERR: ask once more without it (RFC 6891 §7).
                counters.edns_fallbacks += 1
                query = query.plain
                data, msg = await self._udp(server, query, deadline)
            if msg.tc:
                counters.truncated += 1
                data, msg = await self._tcp(server, query, deadline)
                if msg.tc:
                    counters.server_errors += 1
                    raise _AttemptRcode(f"{server} sent a truncated reply over TCP")
        except TimeoutError:
            counters.timeouts += 1
            raise _AttemptTimeout(f"{server} timed out after {budget:.3g}s") from None
        except OSError as exc:
            counters.network_errors += 1
            raise _AttemptFailed(f"{server}: {exc.strerror or exc}") from None
        if msg.rcode not in _ANSWER_RCODES:
            counters.server_errors += 1
            raise _AttemptRcode(f"{server} answered {_rcode_text(msg.rcode)}")
        if query.last is None or msg is not query.last[1]:
            query.remember(data, msg)  # an answer worth comparing the next refresh with
        return Reply(data, msg, self._names[server])

    async def _udp(
        self, server: Nameserver, query: _Query, deadline: float
    ) -> tuple[bytes, wire.Message]:
        """Send the query (or adopt an orphaned one) and return its matching answer.

        After sending it yields to the event loop once, then tries to read:
        a nearby server (a node-local cache, a sidecar) has answered by then,
        and the answer is taken without registering for readiness or arming
        a timer. Only when nothing matching has arrived does it wait, under
        a cancel scope with the attempt's deadline (a ``clock`` value).
        """
        key = (server, query.template)
        clock = self._clock
        orphan = self._orphans.pop(key, None) if self._orphans else None
        if orphan is not None and orphan.deadline > clock():
            # A cancelled caller's query is still on the wire: wait for its answer. We
            # hold a slot of our own, so the one the orphan held goes back.
            entry, expected_id = orphan.entry, orphan.expected_id
            self._give_slot()
            self.counters.adopted_queries += 1
        else:
            if orphan is not None:
                self._drop_orphan(orphan)
            entry = self._acquire(server)
            query_id = os.urandom(2)
            try:
                entry.sock.send(query_id + query.template[2:])
            except BaseException:
                self._release(entry, False)
                raise
            self.counters.count_query(query.qname)
            expected_id = int.from_bytes(query_id, "big")
        sock = entry.sock
        reusable = parked = False
        try:
            # A checkpoint: other tasks run, cancellation is seen, the server answers.
            await anyio.lowlevel.checkpoint()
            found = self._receive_ready(sock, expected_id, query)
            if found is None:
                with anyio.CancelScope(deadline=self._event_loop_time(deadline)):
                    while found is None:
                        await anyio.wait_readable(sock)
                        found = self._receive_ready(sock, expected_id, query)
                if found is None:
                    raise TimeoutError  # the deadline passed
            reusable = True
            return found
        except anyio.get_cancelled_exc_class():
            # The caller was cancelled (a timeout ends in the scope above and never gets
            # here): keep the query for whoever takes over the lookup (see flight.py).
            if not self._closed and key not in self._orphans:
                # Kept until the attempt's own deadline, holding a query slot, so
                # orphans count against max_in_flight and close on time.
                self._orphans[key] = _Orphan(entry, expected_id, deadline)
                self._in_flight += 1
                parked = True
                self._sweep_later()
            raise
        finally:
            if not parked:
                self._release(entry, reusable)

    def _receive_ready(
        self, sock: socket.socket, expected_id: int, query: _Query
    ) -> tuple[bytes, wire.Message] | None:
        """The matching answer among the datagrams already queued, else None.

        At most a batch per call: a flood of non-matching datagrams is read
        a batch per wake-up of the event loop, never in one blocking drain.
        """
        for _ in range(_DRAIN_BATCH):
            try:
                data = sock.recv(_MAX_UDP_RESPONSE)
            except BlockingIOError:
                return None
            msg = self._match(data, expected_id, query)
            if msg is not None:
                return data, msg
        return None

    async def _tcp(
        self, server: Nameserver, query: _Query, deadline: float
    ) -> tuple[bytes, wire.Message]:
        with anyio.CancelScope(deadline=self._event_loop_time(deadline)):
            return await self._tcp_exchange(server, query)
        raise TimeoutError  # only the deadline ends the scope without a return

    async def _tcp_exchange(self, server: Nameserver, query: _Query) -> tuple[bytes, wire.Message]:
        query_id = os.urandom(2)
        packet = query_id + query.template[2:]
        expected_id = int.from_bytes(query_id, "big")
        stream = await anyio.connect_tcp(server.host, server.port)
        counters = self.counters
        counters.sockets_opened += 1
        try:
            await stream.send(struct.pack("!H", len(packet)) + packet)
            counters.count_query(query.qname)
            counters.tcp_queries += 1
            reader = BufferedByteReceiveStream(stream)
            while True:
                (length,) = struct.unpack("!H", await reader.receive_exactly(2))
                data = await reader.receive_exactly(length)
                msg = self._match(data, expected_id, query)
                if msg is not None:
                    return data, msg
        except (anyio.EndOfStream, anyio.IncompleteRead):
            raise ConnectionResetError(f"{server} closed the TCP connection") from None
        finally:
            # Counted first: aclose() closes the socket even when it is cancelled, but
            # then raises before a line after it would run.
            counters.sockets_closed += 1
            await stream.aclose()

    def _match(self, data: bytes, expected_id: int, query: _Query) -> wire.Message | None:
        """The parsed response if it answers our question, else None (RFC 5452: ignore it).

        The ID and the QR bit are checked before anything is parsed, so a
        spoofed datagram costs a comparison, not a walk of its records.
        """
        if len(data) < 12 or int.from_bytes(data[:2], "big") != expected_id or not data[2] & 0x80:
            self.counters.ignored_responses += 1
            return None
        same = query.unchanged(data)
        if same is not None:
            return same  # a refresh that changed nothing: no parse (records.py reuses it all)
        try:
            msg = wire.parse(data, query.asked)
        except wire.WireError as exc:
            self.counters.ignored_responses += 1
            log.debug("ignoring malformed response: %s", exc)
            return None
        if msg.qname != query.qname or msg.qtype != query.qtype or msg.qclass != query.qclass:
            self.counters.ignored_responses += 1
            log.debug("ignoring response id=%d q=%s/%d", msg.id, msg.qname, msg.qtype)
            return None
        return msg

    # -- socket pool --------------------------------------------------------------

    def _acquire(self, server: Nameserver) -> _UdpSocket:
        if self._orphans:
            self._sweep_orphans()
        pool = self._idle[server]
        if pool:
            entry = pool.pop()
        else:
            sock = socket.socket(server.family, socket.SOCK_DGRAM)
            self.counters.sockets_opened += 1
            try:
                sock.setblocking(False)
                sock.connect((server.host, server.port))
            except BaseException:
                sock.close()
                self.counters.sockets_closed += 1
                raise
            entry = _UdpSocket(server, sock)
        entry.uses += 1
        return entry

    def _release(self, entry: _UdpSocket, reusable: bool) -> None:
        pool = self._idle[entry.server]
        if (
            reusable
            and not self._closed
            and entry.uses < self._max_uses
            and len(pool) < self._max_idle
        ):
            pool.append(entry)
        else:
            self._close_udp(entry)

    def _sweep_orphans(self) -> None:
        now = self._clock()
        for key, orphan in list(self._orphans.items()):
            if orphan.deadline <= now:
                del self._orphans[key]
                self._drop_orphan(orphan)

    def _drop_orphan(self, orphan: _Orphan) -> None:
        self._close_udp(orphan.entry)
        self._give_slot()

    def _sweep_later(self) -> None:
        """Close orphans at their deadline even when no new query comes to sweep them."""
        if self._spawn is not None and not self._sweeping:
            try:
                self._spawn(self._sweeper)
            except RuntimeError:
                return  # the owner is closing: aclose() closes the orphans
            self._sweeping = True

    async def _sweeper(self) -> None:
        try:
            while self._orphans and not self._closed:
                first = min(orphan.deadline for orphan in self._orphans.values())
                await anyio.sleep(max(first - self._clock(), 0.0) + 0.001)
                self._sweep_orphans()
        finally:
            self._sweeping = False

    def _close_udp(self, entry: _UdpSocket) -> None:
        # Only idle sockets or sockets whose attempt has finished get here, so
        # no task is waiting on this descriptor when it closes.
        entry.sock.close()
        self.counters.sockets_closed += 1

    def _event_loop_time(self, deadline: float) -> float:
        """A ``clock`` deadline on the event loop's clock (trio's has an offset)."""
        return anyio.current_time() + (deadline - self._clock())


def _settle_safely(settle: Settle, reply: Reply | None) -> bool:
    """Settle one ask; a failing caller's bug is logged, never the batch's end."""
    try:
        return settle(reply)
    except Exception:
        log.exception("settling a batched query failed")
        return False


def _next_position(count: int, last: int, refused: set[int]) -> int:
    """The server after position ``last``, skipping ones that refused (by position, not value)."""
    for step in range(1, count + 1):
        candidate = (last + step) % count
        if candidate not in refused:
            return candidate
    return (last + 1) % count


def _rcode_text(rcode: int) -> str:
    try:
        return dns.rcode.to_text(dns.rcode.Rcode(rcode))
    except ValueError:
        return f"rcode {rcode}"
