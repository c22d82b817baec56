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
from collections import deque
from collections.abc import Callable, Sequence
from typing import NoReturn, Protocol

import anyio
import anyio.lowlevel
import dns.rcode
from anyio.streams.buffered import BufferedByteReceiveStream
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from . import wire
from .address import Nameserver, parse_nameserver
from .errors import ResolveTimeout, ServerFailure
from .metrics import Counters
from .names import type_text
from .policy import Policy
from .reply import Reply

__all__ = ["Clock", "Nameserver", "Reply", "SocketTransport", "Transport", "parse_nameserver"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]

_ANSWER_RCODES = frozenset({wire.RCODE_NOERROR, wire.RCODE_NXDOMAIN})
"""The only rcodes that answer a question; any other moves on to the next nameserver."""
_MAX_UDP_RESPONSE = 65535
_QUERY_CACHE_SIZE = 10_000


class Transport(Protocol):
    """What the resolver and the stub need from the network: one question, or a forwarded query.

    Implementations map every network failure to :class:`ResolveTimeout` or
    :class:`ServerFailure` (naming the servers), return only replies that
    answer the question asked (right ID, right question), and count what they
    do in ``counters``, which everything built over the transport shares.
    """

    nameservers: tuple[Nameserver, ...]
    counters: Counters

    async def query(self, qname: str, qtype: int) -> Reply:
        """Ask ``qname``/``qtype`` (canonical absolute name) with RD and EDNS(0) set."""
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

    __slots__ = ("asked", "plain", "qclass", "qname", "qtype", "template")

    def __init__(self, template: bytes, plain: bytes | None = None) -> None:
        self.template = b"\x00\x00" + template[2:]
        msg = wire.parse(self.template)
        if msg.qr or msg.opcode != 0 or not msg.qname:
            raise ValueError("a query needs QR clear, opcode QUERY and one question")
        self.qname = msg.qname
        self.qtype = msg.qtype
        self.qclass = msg.qclass
        self.asked = wire.question_of(self.template)
        self.plain = None if plain is None else _Query(plain)
        """The same question without EDNS, for a server that answers FORMERR to OPT."""


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
        max_idle_sockets: int = 16,
        max_in_flight: int = 256,
    ) -> None:
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
        self._max_idle = max_idle_sockets
        self._idle: dict[Nameserver, list[_UdpSocket]] = {ns: [] for ns in self.nameservers}
        self._queries: dict[tuple[str, int], _Query] = {}
        self._orphans: dict[tuple[Nameserver, bytes], _Orphan] = {}
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._slot_waiters: deque[anyio.Event] = deque()
        self._closed = False

    def __repr__(self) -> str:
        servers = ", ".join(map(str, self.nameservers))
        idle = sum(len(pool) for pool in self._idle.values())
        state = "closed" if self._closed else f"{self._in_flight} in flight, {idle} idle sockets"
        return f"<SocketTransport [{servers}] {state}>"

    # -- public -------------------------------------------------------------------

    async def query(self, qname: str, qtype: int) -> Reply:
        """One lookup of a (canonical name, type), with the query bytes built once per pair."""
        query = self._queries.get((qname, qtype))
        if query is None:
            query = _Query(
                wire.build_query(qname, qtype, 0),
                wire.build_query(qname, qtype, 0, edns_payload=None),
            )
            if len(self._queries) >= _QUERY_CACHE_SIZE:
                self._queries.clear()
            self._queries[qname, qtype] = query
        if self._closed:
            raise RuntimeError("transport is closed")
        await self._take_slot()  # inlined _bounded: one coroutine less on the cold path
        try:
            return await self._exchange(query)
        finally:
            self._give_slot()

    async def forward(self, query: bytes) -> Reply:
        try:
            prepared = _Query(query)
        except wire.WireError as exc:
            raise ValueError(f"cannot forward a malformed query: {exc}") from None
        return await self._bounded(prepared)

    async def _bounded(self, query: _Query) -> Reply:
        """One lookup, once a slot among ``max_in_flight`` is free (see :meth:`_exchange`).

        The bound keeps thousands of watches starting at once from opening
        thousands of sockets (and running out of descriptors): the rest wait
        their turn, first come first served.
        """
        if self._closed:
            raise RuntimeError("transport is closed")
        await self._take_slot()
        try:
            return await self._exchange(query)
        finally:
            self._give_slot()

    async def _take_slot(self) -> None:
        if self._in_flight < self._max_in_flight and not self._slot_waiters:
            self._in_flight += 1
            return
        await self._wait_for_slot()

    async def _wait_for_slot(self) -> None:
        event = anyio.Event()
        self._slot_waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event in self._slot_waiters:
                self._slot_waiters.remove(event)
            else:
                self._give_slot()  # handed a slot just as we were cancelled: pass it on
            raise

    def _give_slot(self) -> None:
        if self._slot_waiters:
            self._slot_waiters.popleft().set()  # the slot goes straight to the next waiter
        else:
            self._in_flight -= 1

    async def _exchange(self, query: _Query) -> Reply:
        """One lookup: returns the first valid reply that answers the question.

        NOERROR and NXDOMAIN are answers. Any other rcode moves on to the next
        nameserver; when every nameserver has said so, :class:`ServerFailure`.
        Timeouts and network errors are retried with jittered backoff until
        ``policy.lifetime``, then :class:`ResolveTimeout`.
        """
        servers = self.nameservers
        policy = self._policy
        clock = self._clock
        loop_start = clock()
        refused: set[int] = set()

        def backoff(attempts_made: int) -> float:
            # Failover to the next server at once; back off only between rounds.
            if attempts_made % len(servers):
                return 0.0
            return policy.retry_delay(attempts_made // len(servers))

        # The common case, one attempt that works, stays off the retry machinery.
        first_budget = min(policy.timeout, policy.lifetime)
        try:
            return await self._attempt(servers[0], query, first_budget)
        except _AttemptRcode as exc:
            refused.add(0)
            if len(servers) == 1:
                raise self._server_failure(query, exc) from None
        except _AttemptFailed:
            await anyio.sleep(backoff(1))

        def wait(state: RetryCallState) -> float:
            return backoff(state.attempt_number + 1)

        def stop(state: RetryCallState) -> bool:
            if len(refused) == len(servers):
                return True
            return clock() - loop_start >= policy.lifetime

        retrying = AsyncRetrying(
            sleep=anyio.sleep,
            stop=stop,
            wait=wait,
            retry=retry_if_exception_type(_AttemptFailed),
            reraise=True,
        )
        position = 0
        try:
            async for attempt in retrying:
                with attempt:
                    position = _next_position(len(servers), position, refused)
                    remaining = policy.lifetime - (clock() - loop_start)
                    budget = max(min(policy.timeout, remaining), 0.001)
                    try:
                        return await self._attempt(servers[position], query, budget)
                    except _AttemptRcode:
                        refused.add(position)
                        raise
        except _AttemptRcode as exc:
            raise self._server_failure(query, exc) from None
        except _AttemptFailed as exc:
            raise ResolveTimeout(
                f"{query.qname} {type_text(query.qtype)}: no answer within {policy.lifetime:g}s "
                f"from {', '.join(map(str, servers))} ({exc})",
                name=query.qname,
                rdtype=type_text(query.qtype),
            ) from None
        _unreachable()

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
            self._close_udp(self._orphans.popitem()[1].entry)
        for pool in self._idle.values():
            while pool:
                self._close_udp(pool.pop())

    # -- one attempt --------------------------------------------------------------

    async def _attempt(self, server: Nameserver, query: _Query, budget: float) -> Reply:
        deadline = self._clock() + budget
        counters = self.counters
        try:
            data, msg = await self._udp(server, query, deadline)
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
            # A cancelled caller's query is still on the wire: wait for its answer.
            entry, expected_id = orphan.entry, orphan.expected_id
            self.counters.adopted_queries += 1
        else:
            if orphan is not None:
                self._close_udp(orphan.entry)
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
                kept_until = clock() + self._policy.timeout
                self._orphans[key] = _Orphan(entry, expected_id, kept_until)
                parked = True
            raise
        finally:
            if not parked:
                self._release(entry, reusable)

    def _receive_ready(
        self, sock: socket.socket, expected_id: int, query: _Query
    ) -> tuple[bytes, wire.Message] | None:
        """The matching answer among the datagrams already queued, else None."""
        while True:
            try:
                data = sock.recv(_MAX_UDP_RESPONSE)
            except BlockingIOError:
                return None
            msg = self._match(data, expected_id, query)
            if msg is not None:
                return data, msg

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
                self._close_udp(orphan.entry)

    def _close_udp(self, entry: _UdpSocket) -> None:
        # Only idle sockets or sockets whose attempt has finished get here, so
        # no task is waiting on this descriptor when it closes.
        entry.sock.close()
        self.counters.sockets_closed += 1

    def _event_loop_time(self, deadline: float) -> float:
        """A ``clock`` deadline on the event loop's clock (trio's has an offset)."""
        return anyio.current_time() + (deadline - self._clock())


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


def _unreachable() -> NoReturn:
    raise AssertionError("tenacity returned without an outcome")
