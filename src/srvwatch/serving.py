"""What every srvwatch server shares: ``async with`` lifetime, counted tasks, tracked connections.

The DNS listener, the admin HTTP server and the test zone server each own a
task group, the tasks they start in it and the connections they accept.
Counting each start and finish, open and close here, in one place, is what
lets every leak test check that the pairs balance after ``aclose()``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc

from .address import format_hostport

log = logging.getLogger(__name__)

__all__ = ["CountedServer"]

_Server = TypeVar("_Server", bound="CountedServer")


class CountedServer:
    """Base of a server owning one task group (``_tg``) and a set of connections (``_conns``).

    Subclasses implement :meth:`start` and :meth:`aclose`, start their tasks
    with :meth:`_spawn` and close connections with :meth:`_close_conn`.
    """

    name: str
    host: str
    port: int
    max_connections: int

    def __init__(self) -> None:
        self._tg: anyio.abc.TaskGroup | None = None
        self._conns: set[anyio.abc.SocketStream] = set()
        self.connections_opened = self.connections_closed = self.connections_rejected = 0
        self.tasks_started = self.tasks_finished = 0

    async def start(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: _Server) -> _Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def address(self) -> str:
        """``host:port`` bound (the real port once started, when 0 was asked for)."""
        return format_hostport(self.host, self.port)

    @property
    def serving(self) -> bool:
        return self._tg is not None

    def _spawn(
        self, tg: anyio.abc.TaskGroup, func: Callable[..., Awaitable[Any]], *args: Any
    ) -> None:
        self.tasks_started += 1
        tg.start_soon(self._counted, func, *args)

    async def _counted(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await func(*args)
        finally:
            self.tasks_finished += 1

    async def _serve_conn(self, stream: anyio.abc.SocketStream) -> None:
        raise NotImplementedError

    async def _accept_loop(
        self, listener: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup
    ) -> None:
        """Take connections until the listener closes; past ``max_connections``, close at once."""
        while True:
            try:
                stream = await listener.accept()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            except OSError as exc:  # out of descriptors, aborted handshake...
                log.debug("%s: accept failed: %s", self.name, exc)
                await anyio.sleep(0.01)
                continue
            self.connections_opened += 1
            self._conns.add(stream)
            if len(self._conns) > self.max_connections and not self._make_room():
                self.connections_rejected += 1
                await self._close_conn(stream)
                continue
            self._spawn(tg, self._serve_conn, stream)

    def _make_room(self) -> bool:
        """At the connection cap: close an idle connection for a new one (True), or refuse."""
        return False

    async def _close_conn(self, stream: anyio.abc.SocketStream) -> None:
        if stream in self._conns:
            self._conns.discard(stream)
            self.connections_closed += 1
            await anyio.aclose_forcefully(stream)
