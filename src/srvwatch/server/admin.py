"""The sidecar's admin HTTP server: health, readiness, metrics, endpoints and live watch streams.

HTTP/1.1 comes from h11 (no networking code, no hand-written parser) driven
over anyio TCP streams, so the server runs on asyncio, uvloop and trio. What
it shows comes from an :class:`AdminState` the application implements, plus
a prometheus-client registry for ``/metrics``.

A probe port must not be a way to hurt the process it watches, so every cost
a client can impose is bounded: the request line and headers (431), request
bodies (413, never read), the time to send a request once it has started
(408, then closed: slow-loris), the time a kept-alive connection may sit
idle, the time a client may leave a response unread, and the connections
open at once (the excess is closed at once). A malformed request gets 400
and the connection is closed. Every connection, task and event stream has
an owner (:class:`AdminServer`) and an opened/closed counter pair that
balances after :meth:`AdminServer.aclose`.

``GET /watch?name=N`` streams server-sent events with the watch streams'
latest-value semantics: each subscriber holds at most one update not yet
written; a reader that falls behind gets the newest state next (its
``version`` tells it how many it skipped), never a queue.
"""

from __future__ import annotations

import json
import logging
import math
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import h11

from ..address import ListenAddress
from ..endpoints import Update
from ..serving import CountedServer
from .outputs import update_document

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["AdminServer", "AdminState"]

log = logging.getLogger(__name__)

_ALLOW = "GET, HEAD"
_PATHS = ("/health", "/ready", "/metrics", "/endpoints", "/watch")
_RECEIVE_SIZE = 65536
_PROBE_SLOTS = 8
"""Connections event streams can never take: room for /health, /ready and /metrics."""
_STREAM_SEND_BUFFER = 65536
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)
"""What a socket raises when the client has gone away."""
_STREAM_END_GRACE = 1.0  # seconds aclose() gives event streams to send their last chunk
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
_EVENT_STREAM = "text/event-stream; charset=utf-8"


class AdminState(Protocol):
    """What the admin server shows; the sidecar application implements it.

    Every method is called from the event loop that runs the server and must
    answer at once (no I/O): the server calls them on each request.
    """

    def live(self) -> bool:
        """False once the process can no longer do its job: ``/health`` says 503."""
        ...

    def waiting_on(self) -> list[str]:
        """What readiness still waits for, one line each; empty means ready.

        For example ``stub 127.0.0.1:5353: not listening``, ``upstream: no
        answer yet``, ``watch _http._tcp.x: no data yet``, ``shutting down``.
        """
        ...

    def endpoints(self) -> dict[str, Any]:
        """Each configured watch's name mapped to its newest
        :func:`~srvwatch.server.outputs.update_document`, or None before its first data.

        The keys are also what a ``/watch`` for an unknown name lists.
        """
        ...

    def subscribe(self, name: str) -> AbstractAsyncContextManager[AsyncIterator[Update]]:
        """A latest-value stream of the updates of configured watch ``name``, current state first.

        Raises KeyError (when called or when entered) for a name that is not a
        configured watch. The stream ends when the watch is removed or the
        application stops.
        """
        ...


class _Timeout:
    """What :meth:`AdminServer._read_request` returns when the client took too long."""

    def __init__(self, partial: bool) -> None:
        self.partial = partial


@dataclass(slots=True, eq=False)
class _Feed:
    """One event stream's latest-value slot between the subscription and the socket."""

    latest: Update | None = None
    ended: bool = False
    wake: anyio.Event = field(default_factory=anyio.Event)


class _Reply:
    """A whole response: status, content type, body and extra headers."""

    __slots__ = ("body", "close", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes | str,
        content_type: str = _TEXT,
        headers: tuple[tuple[str, str], ...] = (),
        *,
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.content_type = content_type
        self.headers = headers
        self.close = close


class AdminServer(CountedServer):
    """Serve the admin endpoints of an :class:`AdminState` over HTTP/1.1 on ``listen``.

    ``listen.host`` ``""`` means every IPv4 interface and ``localhost`` means
    127.0.0.1, as for the stub; port 0 picks a free port (tests), read back
    from :attr:`address`. Bounds: ``max_connections`` at once,
    ``max_header_bytes`` of request line and headers, ``header_timeout``
    seconds to send a whole request once it started, ``idle_timeout`` between
    requests on a kept-alive connection, ``write_timeout`` for the client to
    take a response (or the next event of a stream), and a ``: keep-alive``
    comment every ``keepalive_interval`` seconds on an event stream so proxies
    do not cut it.
    """

    def __init__(
        self,
        state: AdminState,
        registry: CollectorRegistry,
        listen: ListenAddress,
        *,
        max_connections: int = 64,
        max_header_bytes: int = 8192,
        header_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        write_timeout: float = 30.0,
        keepalive_interval: float = 15.0,
        name: str = "admin",
    ) -> None:
        if not isinstance(listen, ListenAddress):
            raise ValueError(
                f"admin listen must be a srvwatch.address.ListenAddress, got {listen!r}"
            )
        for what, number in (
            ("max_connections", max_connections),
            ("max_header_bytes", max_header_bytes),
        ):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ValueError(f"{what} must be an integer >= 1, not {number!r}")
        for what, seconds in (
            ("header_timeout", header_timeout),
            ("idle_timeout", idle_timeout),
            ("write_timeout", write_timeout),
            ("keepalive_interval", keepalive_interval),
        ):
            if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"{what} must be a finite number of seconds > 0, not {seconds!r}")
        self._state = state
        self._registry = registry
        self.listen = listen
        self.host = listen.bind_host
        self.port = listen.port
        self.max_connections = max_connections
        self.max_streams = max(1, max_connections - _PROBE_SLOTS)
        """Event streams at most: the rest of the connections stay free for probes."""
        self.max_header_bytes = max_header_bytes
        self.header_timeout = float(header_timeout)
        self.idle_timeout = float(idle_timeout)
        self.write_timeout = float(write_timeout)
        self.keepalive_interval = float(keepalive_interval)
        self.name = name
        super().__init__()
        self._listener: anyio.abc.SocketListener | None = None
        self._feeds: set[_Feed] = set()
        self._idle: dict[anyio.abc.SocketStream, anyio.CancelScope] = {}
        """Connections waiting for a request's first byte, oldest first: evicted at the cap."""
        self._streams_ended: anyio.Event | None = None
        self._responses: Counter[int] = Counter()
        self.sockets_opened = self.sockets_closed = 0
        self.connections_timed_out = self.connections_evicted = 0
        self.requests = self.protocol_errors = self.handler_errors = 0
        self.sse_opened = self.sse_closed = self.sse_events = self.sse_keepalives = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        state = "serving" if self._tg is not None else "closed"
        return (
            f"<AdminServer {self.name} {self.address} {state} "
            f"connections={len(self._conns)}/{self.max_connections} streams={len(self._feeds)}>"
        )

    def stats(self) -> dict[str, int]:
        """Counters; after :meth:`aclose` every opened/closed and started/finished pair balances.

        ``responses_NNN`` counts responses by status; ``sse_pending`` is the
        updates taken from subscriptions and not yet written (at most one per stream).
        """
        counts = {
            "sockets_opened": self.sockets_opened,
            "sockets_closed": self.sockets_closed,
            "connections_opened": self.connections_opened,
            "connections_closed": self.connections_closed,
            "connections_open": len(self._conns),
            "connections_rejected": self.connections_rejected,
            "connections_timed_out": self.connections_timed_out,
            "connections_evicted": self.connections_evicted,
            "tasks_started": self.tasks_started,
            "tasks_finished": self.tasks_finished,
            "requests": self.requests,
            "protocol_errors": self.protocol_errors,
            "handler_errors": self.handler_errors,
            "sse_opened": self.sse_opened,
            "sse_closed": self.sse_closed,
            "sse_events": self.sse_events,
            "sse_keepalives": self.sse_keepalives,
            "sse_pending": sum(feed.latest is not None for feed in self._feeds),
        }
        for status in sorted(self._responses):
            counts[f"responses_{status}"] = self._responses[status]
        return counts

    async def start(self) -> None:
        """Bind and serve in tasks of our own until :meth:`aclose`; OSError if the bind fails.

        Call :meth:`aclose` from the task that called this (a task group's rule).
        """
        if self._tg is not None:
            raise RuntimeError(f"{self.name} is already serving on {self.address}")
        try:
            multi = await anyio.create_tcp_listener(
                local_host=self.host, local_port=self.listen.port
            )
        except OSError as exc:
            raise OSError(
                exc.errno, f"{self.name}: cannot bind {self.address}: {exc.strerror or exc}"
            ) from exc
        listeners = [x for x in multi.listeners if isinstance(x, anyio.abc.SocketListener)]
        self.sockets_opened += len(multi.listeners)
        if len(listeners) != 1:  # an IP literal binds one socket
            await multi.aclose()
            self.sockets_closed += len(multi.listeners)
            raise RuntimeError(f"{self.name}: expected one listening socket for {self.address}")
        self._listener = listener = listeners[0]
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tg = anyio.create_task_group()
        try:
            await tg.__aenter__()
        except BaseException:
            await self.aclose()
            raise
        self._tg = tg
        self._spawn(tg, self._accept_loop, listener, tg)
        log.info("%s: HTTP on %s", self.name, self.address)

    async def aclose(self) -> None:
        """Stop serving: close the listener, cancel every connection and stream, wait for them."""
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                await self._end_streams()
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                for stream in list(self._conns):  # tasks cancelled before they first ran
                    await self._close_conn(stream)
                if self._listener is not None:
                    await anyio.aclose_forcefully(self._listener)
                    self._listener = None
                    self.sockets_closed += 1

    async def _end_streams(self) -> None:
        """End each event stream with a proper last chunk, so clients see a clean end
        (and reconnect) rather than a cut; a client that does not take it in time is cut."""
        if not self._feeds:
            return
        if self._listener is not None:
            await anyio.aclose_forcefully(self._listener)  # no new streams meanwhile
            self._listener = None
            self.sockets_closed += 1
        self._streams_ended = anyio.Event()
        for feed in self._feeds:
            feed.ended = True
            feed.wake.set()
        with anyio.move_on_after(_STREAM_END_GRACE):
            await self._streams_ended.wait()

    # -- connections -------------------------------------------------------------------------

    def _make_room(self) -> bool:
        """At the connection cap, close the oldest connection that has sent nothing yet."""
        for stream, waiting in self._idle.items():
            del self._idle[stream]
            waiting.cancel()
            self.connections_evicted += 1
            return True
        return False

    async def _serve_conn(self, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_header_bytes)
        try:
            await self._serve_requests(stream, conn)
        except TimeoutError:
            self.connections_timed_out += 1
            log.debug("%s: a client did not take its response in time", self.name)
        except _GONE as exc:
            log.debug("%s: connection ended: %r", self.name, exc)
        except Exception:
            self.handler_errors += 1
            log.exception("%s: connection failed", self.name)
        finally:
            with anyio.CancelScope(shield=True):
                await self._close_conn(stream)

    async def _serve_requests(self, stream: anyio.abc.SocketStream, conn: h11.Connection) -> None:
        """Requests one after another on a kept-alive connection, until one says close."""
        first = True
        while True:
            try:
                event = await self._read_request(stream, conn, first)
                first = False
            except h11.RemoteProtocolError as exc:
                self.protocol_errors += 1
                status = exc.error_status_hint
                why = "request line and headers too large" if status == 431 else str(exc)
                await self._error_before_request(stream, conn, status, f"bad request: {why}\n")
                return
            if isinstance(event, _Timeout):
                self.connections_timed_out += 1
                if event.partial:  # a request began and never finished: slow-loris
                    await self._error_before_request(
                        stream, conn, 408, "request not received in time\n"
                    )
                return
            if event is None:  # the client closed between requests
                return
            self.requests += 1
            if not await self._handle(stream, conn, event):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _read_request(
        self, stream: anyio.abc.SocketStream, conn: h11.Connection, first: bool = False
    ) -> h11.Request | _Timeout | None:
        """The next request's head, or None at a clean close, or a timeout.

        The connection may sit idle for ``idle_timeout``; once the first byte
        of a request is in, the whole head must follow within ``header_timeout``.
        """
        partial = bool(conn.trailing_data[0])
        # A new connection gets header_timeout for its first request, a kept-alive one
        # idle_timeout between requests: connections that never send cannot hold slots.
        wait = self.header_timeout if partial or first else self.idle_timeout
        deadline = anyio.current_time() + wait
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                return event
            if isinstance(event, h11.ConnectionClosed):
                return None
            if event is not h11.NEED_DATA:  # nothing else can come before a request
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}", 400)
            data: bytes | None = None
            # At most the head's bound per read: h11 bounds only an incomplete head, and a
            # whole oversized head arriving in one read would otherwise pass.
            with anyio.move_on_after(deadline - anyio.current_time()) as waiting:
                if not partial:
                    self._idle[stream] = waiting  # evictable while it has sent nothing
                try:
                    room = self.max_header_bytes + 1 - len(conn.trailing_data[0])
                    data = await stream.receive(max(room, 1))
                except anyio.EndOfStream:
                    data = b""
                finally:
                    self._idle.pop(stream, None)
            if data is None:
                return _Timeout(partial)
            if data and not partial:
                partial = True
                deadline = anyio.current_time() + self.header_timeout
            conn.receive_data(data)

    async def _error_before_request(
        self, stream: anyio.abc.SocketStream, conn: h11.Connection, status: int, body: str
    ) -> None:
        """Answer a request that never arrived whole (400, 408, 431), when HTTP still allows."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        await self._send_reply(stream, conn, None, _Reply(status, body, close=True))

    # -- requests ------------------------------------------------------------------------------

    async def _handle(
        self, stream: anyio.abc.SocketStream, conn: h11.Connection, request: h11.Request
    ) -> bool:
        """Answer one request; False when the connection must close."""
        method = request.method.decode("ascii", "replace")
        try:
            target = urlsplit(request.target.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            await self._send_reply(
                stream, conn, request, _Reply(400, "bad request target\n", close=True)
            )
            return False
        path = target.path
        if path not in _PATHS:
            reply = _Reply(404, f"not found: {path}\nendpoints: {' '.join(_PATHS)}\n")
        elif method not in ("GET", "HEAD"):
            reply = _Reply(
                405,
                f"method {method} not allowed on {path}: use GET or HEAD\n",
                headers=(("allow", _ALLOW),),
            )
        else:
            reply = None
        if _has_body(request):
            # The body is never read: answer, then close instead of draining it.
            if reply is None:
                reply = _Reply(413, "request bodies are not accepted\n")
            reply.close = True
        elif not await self._finish_request(stream, conn):
            return False
        if reply is None:
            if path == "/watch":
                return await self._watch(stream, conn, request, parse_qs(target.query))
            reply = self._route(path)
        await self._send_reply(stream, conn, request, reply)
        return not reply.close

    async def _finish_request(self, stream: anyio.abc.SocketStream, conn: h11.Connection) -> bool:
        """Read the EndOfMessage of a request without a body (it is already buffered)."""
        while True:
            event = conn.next_event()
            if isinstance(event, h11.EndOfMessage):
                return True
            if event is not h11.NEED_DATA:
                return False
            with anyio.move_on_after(self.header_timeout):
                data = await stream.receive(_RECEIVE_SIZE)
                conn.receive_data(data)
                continue
            return False

    def _route(self, path: str) -> _Reply:
        state = self._state
        try:
            if path == "/health":
                return _Reply(200, "ok\n") if state.live() else _Reply(503, "not live\n")
            if path == "/ready":
                waiting = state.waiting_on()
                if not waiting:
                    return _Reply(200, "ready\n")
                return _Reply(503, "".join(f"{line}\n" for line in waiting))
            if path == "/endpoints":
                body = json.dumps(state.endpoints(), indent=2, sort_keys=True) + "\n"
                return _Reply(200, body, _JSON)
            assert path == "/metrics"
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return _Reply(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
        except Exception as exc:
            self.handler_errors += 1
            log.exception("%s: %s failed", self.name, path)
            return _Reply(500, f"{path} failed: {type(exc).__name__}\n")

    async def _send_reply(
        self,
        stream: anyio.abc.SocketStream,
        conn: h11.Connection,
        request: h11.Request | None,
        reply: _Reply,
    ) -> None:
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            ("cache-control", "no-store"),
            *reply.headers,
        ]
        if reply.close:
            headers.append(("connection", "close"))
        data = (
            conn.send(
                h11.Response(
                    status_code=reply.status, headers=headers, reason=_reason(reply.status)
                )
            )
            or b""
        )
        if request is None or request.method != b"HEAD":
            data += conn.send(h11.Data(data=reply.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        self._responses[reply.status] += 1
        await self._write(stream, data)

    async def _write(self, stream: anyio.abc.SocketStream, data: bytes) -> None:
        """Send, or raise TimeoutError if the client does not take it within ``write_timeout``."""
        with anyio.fail_after(self.write_timeout):
            await stream.send(data)

    # -- server-sent events ----------------------------------------------------------------------

    async def _watch(
        self,
        stream: anyio.abc.SocketStream,
        conn: h11.Connection,
        request: h11.Request,
        query: dict[str, list[str]],
    ) -> bool:
        names = query.get("name", [])
        if len(names) != 1 or not names[0]:
            await self._send_reply(
                stream, conn, request, _Reply(400, "use /watch?name=NAME with one watch name\n")
            )
            return True
        name = names[0]
        if len(self._feeds) >= self.max_streams:
            reply = _Reply(503, "too many event streams; try again later\n", close=True)
            await self._send_reply(stream, conn, request, reply)
            return False
        try:
            subscription = self._state.subscribe(name)
            updates = await subscription.__aenter__()
        except KeyError:
            await self._send_reply(stream, conn, request, self._unknown_watch(name))
            return True
        except Exception as exc:
            self.handler_errors += 1
            log.exception("%s: subscribing to %s failed", self.name, name)
            await self._send_reply(
                stream, conn, request, _Reply(500, f"/watch failed: {type(exc).__name__}\n")
            )
            return True
        try:
            await self._stream_events(stream, conn, request, updates)
        finally:
            with anyio.CancelScope(shield=True):
                await subscription.__aexit__(None, None, None)
        return False

    def _unknown_watch(self, name: str) -> _Reply:
        try:
            configured = sorted(self._state.endpoints())
        except Exception:
            log.exception("%s: endpoints() failed", self.name)
            configured = []
        listed = "\n".join(configured) if configured else "(none)"
        return _Reply(404, f"no watch named {name!r}; configured watches:\n{listed}\n")

    async def _stream_events(
        self,
        stream: anyio.abc.SocketStream,
        conn: h11.Connection,
        request: h11.Request,
        updates: AsyncIterator[Update],
    ) -> None:
        head = conn.send(
            h11.Response(
                status_code=200,
                reason=b"OK",
                headers=[
                    ("content-type", _EVENT_STREAM),
                    ("cache-control", "no-store"),
                    ("x-accel-buffering", "no"),  # nginx: pass events through at once
                    ("connection", "close"),
                ],
            )
        )
        self._responses[200] += 1
        if request.method == b"HEAD":
            await self._write(stream, (head or b"") + (conn.send(h11.EndOfMessage()) or b""))
            return
        await self._write(stream, head or b"")
        _bound_send_buffer(stream)
        feed = _Feed()
        self._feeds.add(feed)
        self.sse_opened += 1
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_pull, updates, feed)
                tg.start_soon(self._watch_client, stream, tg.cancel_scope)
                await self._push(stream, conn, feed)
                tg.cancel_scope.cancel()
        finally:
            self._feeds.discard(feed)
            self.sse_closed += 1
            if not self._feeds and self._streams_ended is not None:
                self._streams_ended.set()

    async def _push(
        self, stream: anyio.abc.SocketStream, conn: h11.Connection, feed: _Feed
    ) -> None:
        """Write the newest update when there is one; a comment after a quiet while.

        Returns when the stream ends, the client goes away or does not take an
        event within ``write_timeout``: never raises for what a client does.
        """
        try:
            await self._push_events(stream, conn, feed)
        except TimeoutError:
            self.connections_timed_out += 1
            log.debug("%s: an event stream's reader stalled; closed", self.name)
        except _GONE as exc:
            log.debug("%s: event stream ended: %r", self.name, exc)

    async def _push_events(
        self, stream: anyio.abc.SocketStream, conn: h11.Connection, feed: _Feed
    ) -> None:
        while True:
            with anyio.move_on_after(self.keepalive_interval):
                await feed.wake.wait()
            feed.wake = anyio.Event()
            update, feed.latest = feed.latest, None
            if update is not None and feed.ended:
                feed.wake.set()  # write this one, then end
            if update is None:
                if feed.ended:
                    await self._write(stream, conn.send(h11.EndOfMessage()) or b"")
                    return
                self.sse_keepalives += 1
                await self._write(stream, conn.send(h11.Data(data=b": keep-alive\n\n")) or b"")
                continue
            document = json.dumps(update_document(update), separators=(",", ":"))
            self.sse_events += 1
            await self._write(
                stream, conn.send(h11.Data(data=f"data: {document}\n\n".encode())) or b""
            )

    async def _watch_client(self, stream: anyio.abc.SocketStream, scope: anyio.CancelScope) -> None:
        """End the stream as soon as the client goes away; whatever else it sends is discarded."""
        try:
            while True:
                await stream.receive(_RECEIVE_SIZE)
        except _GONE:
            pass
        scope.cancel()


async def _pull(updates: AsyncIterator[Update], feed: _Feed) -> None:
    """Keep only the newest update in the feed: a slow writer skips versions, never queues them."""
    try:
        async for update in updates:
            feed.latest = update
            feed.wake.set()
    except Exception:
        log.exception("a watch stream failed; its event stream ends")
    finally:
        feed.ended = True
        feed.wake.set()


def _bound_send_buffer(stream: anyio.abc.SocketStream) -> None:
    """Cap the kernel's send buffer of an event stream (Linux grows it to 4 MiB otherwise).

    A reader that stalls then holds at most this much in the kernel, plus
    the event loop's own write buffer (64 KiB) and the one update in its slot.
    """
    try:
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _STREAM_SEND_BUFFER)
    except (OSError, AttributeError, anyio.TypedAttributeLookupError) as exc:
        log.debug("cannot bound an event stream's send buffer: %s", exc)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _has_body(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False
