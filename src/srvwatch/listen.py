"""UDP and TCP DNS serving over anyio, shared by :class:`~srvwatch.testing.ZoneServer` and the stub.

A :class:`DnsListener` owns the I/O and nothing else: it binds UDP and TCP on one port,
reads queries, hands each one to a *handler* and writes whatever the handler returns.
What to answer is the handler's business; how bytes move, and how much a hostile client
can make them cost, is this module's.

The handler is a plain callable, ``handler(query, peer, tcp)``, and it may answer at once
or later:

- ``bytes``: one reply, sent at once. The hot path: a cache hit (the stub) or a rendered
  answer (ZoneServer) goes out from inside the read loop, with no task, no await and no
  allocation beyond the reply itself. On asyncio and uvloop the UDP read loop is a reader
  callback on the event loop (no task switch per datagram at all): issue 10 measured a
  stub on anyio's UDP socket objects several times slower than one on the loop itself.
- a list or tuple of ``bytes``: several replies in order (a spoofed reply, then the real
  one: fault injection).
- ``None``: nothing (a dropped query, a response, garbage).
- :data:`CLOSE`: nothing, and over TCP close the connection, abandoning the answers still
  in flight on it (what a server does when it drops a client).
- an awaitable resolving to any of the above: the slow path (a cache miss waiting for
  upstream, an injected latency). The listener awaits it in a task it owns, so other
  queries, on the same TCP connection too (RFC 7766 pipelining), are answered meanwhile,
  and answers leave in the order they are ready.

Every resource has an owner and a counter pair: sockets, connections and tasks opened and
closed are counted, and after :meth:`DnsListener.aclose` each pair balances. The bounds:
datagrams handled per wake-up, TCP connections at once (the excess is closed at once),
queries in flight per connection (reading stops until one finishes), deferred answers in
flight in all (the excess is dropped), an idle timeout that also covers a message that
arrives too slowly (slow-loris) and a reply the client does not read. A message is at
most 65535 bytes by construction (the two-byte length prefix).
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from .address import format_hostport
from .serving import CountedServer

__all__ = ["CLOSE", "DnsListener", "Handler", "Peer", "Reply"]

log = logging.getLogger(__name__)

_BIND_ATTEMPTS = 10  # port 0: free for UDP is not always free for TCP
_UDP_BATCH = 64  # datagrams handled per wake-up before other work gets its turn
_SOCKET_BUFFER = 4 << 20  # the kernel caps it at net.core.rmem_max / wmem_max
_MAX_MESSAGE = 65535


class _Close:
    """The type of :data:`CLOSE`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "CLOSE"


CLOSE: Final = _Close()
"""Reply meaning: send nothing, and close the TCP connection (over UDP: the same as None)."""

Peer: TypeAlias = "tuple[Any, ...]"
"""The client's address as the socket module gives it: ``(host, port)``, or a 4-tuple for IPv6."""

Reply: TypeAlias = "bytes | Sequence[bytes] | _Close | None"
Handler: TypeAlias = "Callable[[bytes, Peer, bool], Reply | Awaitable[Reply]]"
"""``handler(query, peer, tcp)``: see the module docstring. It must not raise for any input;
if it does, the query is dropped and counted in ``handler_errors``."""


@dataclass(slots=True)
class _Conn:
    """One TCP connection: its stream, its write lock and its in-flight slots."""

    stream: anyio.abc.SocketStream
    peer: Peer
    slots: anyio.Semaphore
    lock: anyio.Lock = field(default_factory=lambda: anyio.Lock(fast_acquire=True))
    tg: anyio.abc.TaskGroup | None = None


class DnsListener(CountedServer):
    """Serve DNS over UDP and TCP on ``host:port`` (port 0: one free port for both).

    ``idle_timeout`` closes a TCP connection that has not sent a whole message for that
    long, whether it sent nothing or part of one, and one that leaves a reply unread for
    that long. ``max_connections`` bounds TCP connections at once, ``max_in_flight``
    deferred answers per connection, ``max_deferred`` deferred answers in all.
    Not thread-safe: use it from the event loop that runs it.
    """

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_connections: int = 256,
        idle_timeout: float = 30.0,
        max_in_flight: int = 64,
        max_deferred: int = 10_000,
        name: str = "DnsListener",
    ) -> None:
        try:
            self._ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"listen host must be an IP address, not {host!r}") from None
        if not 0 <= port <= 65535:
            raise ValueError(f"listen port must be in 0..65535, not {port!r}")
        for what, value in (
            ("max_connections", max_connections),
            ("max_in_flight", max_in_flight),
            ("max_deferred", max_deferred),
        ):
            if value < 1:
                raise ValueError(f"{what} must be >= 1, not {value!r}")
        if not (math.isfinite(idle_timeout) and idle_timeout > 0):
            raise ValueError(f"idle_timeout must be a finite number > 0, not {idle_timeout!r}")
        self._handler = handler
        self.host = host
        self.port = port
        self._requested_port = port
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_in_flight = max_in_flight
        self.max_deferred = max_deferred
        self.name = name
        super().__init__()
        self._udp: socket.socket | None = None
        self._listeners: list[anyio.abc.SocketListener] = []
        self._udp_reading = anyio.CancelScope()
        self._deferred = 0
        # Counters (see stats()); plain attributes, because the hot path bumps them.
        self.sockets_opened = self.sockets_closed = 0
        self.connections_idle = 0
        self.udp_queries = self.udp_replies = self.udp_errors = 0
        self.tcp_queries = self.tcp_replies = self.tcp_errors = 0
        self.deferred_dropped = self.handler_errors = self.oversized = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        state = "serving" if self._tg is not None else "closed"
        return (
            f"<DnsListener {self.name} {self.address} {state} "
            f"tcp={len(self._conns)}/{self.max_connections} deferred={self._deferred}>"
        )

    def stats(self) -> dict[str, int]:
        """Counters; after :meth:`aclose` every opened/closed and started/finished pair balances."""
        return {
            "sockets_opened": self.sockets_opened,
            "sockets_closed": self.sockets_closed,
            "connections_opened": self.connections_opened,
            "connections_closed": self.connections_closed,
            "connections_open": len(self._conns),
            "connections_rejected": self.connections_rejected,
            "connections_idle": self.connections_idle,
            "tasks_started": self.tasks_started,
            "tasks_finished": self.tasks_finished,
            "udp_queries": self.udp_queries,
            "udp_replies": self.udp_replies,
            "udp_errors": self.udp_errors,
            "tcp_queries": self.tcp_queries,
            "tcp_replies": self.tcp_replies,
            "tcp_errors": self.tcp_errors,
            "deferred_in_flight": self._deferred,
            "deferred_dropped": self.deferred_dropped,
            "handler_errors": self.handler_errors,
            "oversized": self.oversized,
        }

    async def start(self) -> None:
        """Bind UDP and TCP on one port and serve in tasks of our own until :meth:`aclose`.

        Call :meth:`aclose` from the task that called this (a task group's rule).
        """
        if self._tg is not None:
            raise RuntimeError(f"{self.name} is already serving on {self.address}")
        udp, listeners = await self._bind()
        self._udp, self._listeners = udp, listeners
        tg = anyio.create_task_group()
        try:
            await tg.__aenter__()
        except BaseException:
            await self.aclose()
            raise
        self._tg = tg
        self._udp_reading = anyio.CancelScope()
        self._spawn(tg, self._serve_udp, udp)
        for listener in listeners:
            self._spawn(tg, self._accept_loop, listener, tg)
        log.debug("%s serving on %s", self.name, self.address)

    async def drain(self, grace: float) -> None:
        """Stop taking queries, give the answers still owed up to ``grace`` seconds, then close.

        For a graceful shutdown: no new UDP query is read and no new TCP
        connection accepted, while deferred answers (waiting on upstream) are
        still sent; whatever is left after ``grace`` is cancelled by :meth:`aclose`.
        """
        if self._tg is not None:
            self._udp_reading.cancel()
            # Shielded: a drain is often the cleanup of a cancelled task.
            with anyio.CancelScope(shield=True):
                for listener in self._listeners:
                    await anyio.aclose_forcefully(listener)
                    self.sockets_closed += 1
                self._listeners = []
                with anyio.move_on_after(grace):
                    # Polled: once per shutdown, and the hot path stays free of wake-ups.
                    while self._deferred:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
        await self.aclose()

    async def aclose(self) -> None:
        """Stop serving; close every socket, connection and task. Idempotent."""
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            # A task cancelled before it first ran never reached its own cleanup.
            with anyio.CancelScope(shield=True):
                for stream in list(self._conns):
                    await self._close_conn(stream)
                for listener in self._listeners:
                    await anyio.aclose_forcefully(listener)
                    self.sockets_closed += 1
                self._listeners = []
                if self._udp is not None:
                    self._udp.close()
                    self._udp = None
                    self.sockets_closed += 1

    async def _bind(self) -> tuple[socket.socket, list[anyio.abc.SocketListener]]:
        last: OSError | None = None
        family = socket.AF_INET6 if self._ip.version == 6 else socket.AF_INET
        for _ in range(1 if self._requested_port else _BIND_ATTEMPTS):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            self.sockets_opened += 1
            try:
                udp.setblocking(False)
                _grow_buffers(udp)
                udp.bind((self.host, self._requested_port))
                port: int = udp.getsockname()[1]
                multi = await anyio.create_tcp_listener(local_host=self.host, local_port=port)
            except OSError as exc:  # taken (for TCP, when the port was picked for UDP)
                udp.close()
                self.sockets_closed += 1
                last = exc
                continue
            except BaseException:
                udp.close()
                self.sockets_closed += 1
                raise
            listeners = [x for x in multi.listeners if isinstance(x, anyio.abc.SocketListener)]
            self.sockets_opened += len(listeners)
            self.port = port
            return udp, listeners
        assert last is not None
        # Name the address: "[Errno 98] Address already in use" alone says nothing of
        # which listener of several (or which config key) is at fault.
        where = format_hostport(self.host, self._requested_port)
        raise OSError(
            last.errno, f"{self.name}: cannot bind {where}: {last.strerror or last}"
        ) from last

    # -- UDP ---------------------------------------------------------------------------------

    async def _serve_udp(self, udp: socket.socket) -> None:
        """Drain the socket in batches with plain non-blocking calls.

        Not anyio's UDP socket: its asyncio flavour queues at most 100 datagrams and drops
        the rest, which a burst of a thousand watchers overflows, and each datagram would
        cost a task switch. On asyncio and uvloop one reader callback stays registered and
        drains at most a batch per call (then the loop runs everything else); on trio (no
        reader callbacks) a task waits for readability and drains a batch per wake-up.
        """
        with self._udp_reading:  # cancelled by drain(): stop reading, keep the socket to reply
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:  # trio
                loop = None
            if loop is not None:
                fd = udp.fileno()
                try:
                    loop.add_reader(fd, self._drain_udp, udp)
                except NotImplementedError:  # a loop without reader callbacks (Windows proactor)
                    pass
                else:
                    try:
                        await anyio.sleep_forever()
                    finally:
                        loop.remove_reader(fd)
            while True:
                await anyio.wait_readable(udp)
                self._drain_udp(udp)

    def _drain_udp(self, udp: socket.socket) -> None:
        handler = self._handler
        for _ in range(_UDP_BATCH):
            try:
                data, addr = udp.recvfrom(_MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. ICMP errors surfacing on some platforms
                self.udp_errors += 1
                log.debug("%s: UDP receive error %s", self.name, exc)
                continue
            self.udp_queries += 1
            try:
                reply = handler(data, addr, False)
            except Exception:
                self.handler_errors += 1
                log.debug(
                    "%s: handler failed on a UDP query from %s", self.name, addr, exc_info=True
                )
                continue
            if type(reply) is bytes:
                try:
                    udp.sendto(reply, addr)
                    self.udp_replies += 1
                except OSError as exc:  # full buffer or gone peer: UDP may lose a reply anyway
                    self.udp_errors += 1
                    log.debug("%s: UDP send to %s failed: %s", self.name, addr, exc)
            elif reply is not None:
                self._udp_reply(udp, reply, addr)

    def _udp_reply(self, udp: socket.socket, reply: Any, addr: Peer) -> None:
        if isinstance(reply, (bytes, list, tuple)):
            self._send_udp(udp, reply, addr)
        elif reply is CLOSE:
            pass
        elif inspect.isawaitable(reply):
            if self._tg is None or self._deferred >= self.max_deferred:
                self._drop_deferred(reply)
            else:
                self._deferred += 1
                self._spawn(self._tg, self._deferred_udp, udp, reply, addr)
        else:
            self.handler_errors += 1
            log.debug("%s: handler returned %r", self.name, reply)

    def _send_udp(self, udp: socket.socket, packets: bytes | Sequence[bytes], addr: Peer) -> None:
        for packet in (packets,) if isinstance(packets, bytes) else packets:
            try:
                udp.sendto(packet, addr)
                self.udp_replies += 1
            except OSError as exc:
                self.udp_errors += 1
                log.debug("%s: UDP send to %s failed: %s", self.name, addr, exc)

    async def _deferred_udp(self, udp: socket.socket, reply: Awaitable[Reply], addr: Peer) -> None:
        try:
            result = await reply
        except Exception:
            self.handler_errors += 1
            log.debug("%s: deferred UDP answer failed", self.name, exc_info=True)
            return
        finally:
            self._deferred -= 1
        if isinstance(result, (bytes, list, tuple)):
            self._send_udp(udp, result, addr)
        elif result is not None and result is not CLOSE:
            self.handler_errors += 1
            log.debug("%s: deferred answer resolved to %r", self.name, result)

    def _drop_deferred(self, reply: Awaitable[Any]) -> None:
        self.deferred_dropped += 1
        if inspect.iscoroutine(reply):
            reply.close()  # never awaited, on purpose: no RuntimeWarning

    # -- TCP ---------------------------------------------------------------------------------

    async def _serve_conn(self, stream: anyio.abc.SocketStream) -> None:
        try:
            peer = stream.extra(anyio.abc.SocketAttribute.remote_address, ())
            slots = anyio.Semaphore(self.max_in_flight, fast_acquire=True)
            conn = _Conn(stream, tuple(peer), slots)
            async with anyio.create_task_group() as tg:
                conn.tg = tg
                await self._read_conn(conn, tg)
        except Exception:
            self.tcp_errors += 1
            log.debug("%s: TCP connection failed", self.name, exc_info=True)
        finally:
            with anyio.CancelScope(shield=True):
                await self._close_conn(stream)

    async def _read_conn(self, conn: _Conn, tg: anyio.abc.TaskGroup) -> None:
        """Read framed queries (RFC 1035 4.2.2) until EOF, idle timeout or CLOSE.

        The deadline covers a whole message, its length prefix included, so a client that
        sends part of one and stalls is closed like an idle one. Returning lets the
        connection's task group finish the deferred answers still owed (the client may
        have half-closed); CLOSE cancels them instead.
        """
        reader = BufferedByteReceiveStream(conn.stream)
        handler = self._handler
        while True:
            data: bytes | None = None
            try:
                with anyio.move_on_after(self.idle_timeout):
                    length = int.from_bytes(await reader.receive_exactly(2), "big")
                    data = await reader.receive_exactly(length) if length else b""
            except (
                anyio.EndOfStream,
                anyio.IncompleteRead,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                OSError,
            ):
                return
            if data is None:
                self.connections_idle += 1
                return
            self.tcp_queries += 1
            try:
                reply = handler(data, conn.peer, True)
            except Exception:
                self.handler_errors += 1
                log.debug("%s: handler failed on a TCP query", self.name, exc_info=True)
                continue
            if reply is None:
                continue
            if reply is CLOSE:
                tg.cancel_scope.cancel()
                return
            if isinstance(reply, (bytes, list, tuple)):
                await self._send_tcp(conn, reply)
            elif inspect.isawaitable(reply):
                if self._deferred >= self.max_deferred:
                    self._drop_deferred(reply)
                    continue
                try:
                    await conn.slots.acquire()  # too many in flight: stop reading until one ends
                except BaseException:  # cancelled meanwhile (CLOSE, aclose)
                    self._drop_deferred(reply)
                    raise
                self._deferred += 1
                self._spawn(tg, self._deferred_tcp, conn, reply)
            else:
                self.handler_errors += 1
                log.debug("%s: handler returned %r", self.name, reply)

    async def _deferred_tcp(self, conn: _Conn, reply: Awaitable[Reply]) -> None:
        try:
            try:
                result = await reply
            finally:
                self._deferred -= 1
            if result is CLOSE:
                assert conn.tg is not None
                conn.tg.cancel_scope.cancel()
            elif isinstance(result, (bytes, list, tuple)):
                await self._send_tcp(conn, result)
            elif result is not None:
                self.handler_errors += 1
                log.debug("%s: deferred answer resolved to %r", self.name, result)
        except Exception:
            self.handler_errors += 1
            log.debug("%s: deferred TCP answer failed", self.name, exc_info=True)
        finally:
            conn.slots.release()

    async def _send_tcp(self, conn: _Conn, packets: bytes | Sequence[bytes]) -> None:
        """Write framed replies, one writer at a time; a reader too slow to take them is closed."""
        if isinstance(packets, bytes):
            packets = (packets,)
        if any(len(p) > _MAX_MESSAGE for p in packets):
            self.oversized += 1
            log.debug("%s: reply over 65535 bytes dropped", self.name)
            return
        frame = b"".join(len(p).to_bytes(2, "big") + p for p in packets)
        async with conn.lock:
            try:
                with anyio.fail_after(self.idle_timeout):
                    await conn.stream.send(frame)
                self.tcp_replies += len(packets)
                return
            except TimeoutError:
                self.connections_idle += 1
                log.debug("%s: TCP client %s does not read its replies", self.name, conn.peer)
            except (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
                self.tcp_errors += 1
                log.debug("%s: TCP send to %s failed: %s", self.name, conn.peer, exc)
        assert conn.tg is not None
        conn.tg.cancel_scope.cancel()  # the connection is of no more use


def _grow_buffers(sock: socket.socket) -> None:
    """Room for bursts (a thousand watchers refreshing at once) instead of silent drops."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            if sock.getsockopt(socket.SOL_SOCKET, option) < _SOCKET_BUFFER:
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        except OSError as exc:  # the kernel caps or refuses: keep its default
            log.debug("cannot grow socket buffer: %s", exc)
