"""The sidecar's parts, each held in a task of its own so a reload can start and stop any one.

Task groups (and so listeners, servers and resolvers) must otherwise close
in the reverse of their opening order within one task; :class:`Hosted`
lifts that, and :class:`WatchRunner` is one configured watch with its
output files. :class:`~srvwatch.server.app.Sidecar` composes them.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from ..endpoints import Update
from ..errors import ResolveError
from ..listen import DnsListener
from ..resolver import Resolver
from ..watch import Updates
from .config import WatchConfig
from .outputs import OutputFiles

__all__ = [
    "Hosted",
    "StubListener",
    "WatchRunner",
    "outputs_for",
    "until_removed",
    "watch_key",
]

log = logging.getLogger(__name__)

FILE_RETRY_INTERVAL = 5.0
"""Seconds between attempts to write an output file whose last write failed."""


class Hosted:
    """An async context manager held open in a task of its own until :meth:`stop`.

    Task groups (and so listeners and resolvers) must close in the reverse of
    their opening order in one task; holding each in its own task lets a
    reload stop any of them while the others go on.
    """

    def __init__(self, resource: AbstractAsyncContextManager[Any], what: str) -> None:
        self.resource = resource
        self.what = what
        self._scope: anyio.CancelScope | None = None
        self._done = anyio.Event()

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Enter the resource in a new task; its error (a port taken...) is raised here."""
        await tg.start(self._hold)

    async def _hold(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            with anyio.CancelScope() as self._scope:
                async with self.resource:
                    task_status.started()
                    await anyio.sleep_forever()
        finally:
            self._done.set()

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            await self._done.wait()


class StubListener(AbstractAsyncContextManager["StubListener"]):
    """A stub listener that drains on a graceful stop, and closes at once otherwise."""

    def __init__(self, listener: DnsListener) -> None:
        self.dns = listener
        self.grace = 0.0

    async def __aenter__(self) -> StubListener:
        await self.dns.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.grace > 0:
            await self.dns.drain(self.grace)
        else:
            await self.dns.aclose()


@dataclass(eq=False)
class WatchRunner:
    """One configured watch: its latest update, its output files and its task."""

    config: WatchConfig
    outputs: OutputFiles | None
    gates_ready: bool
    latest: Update | None = None
    updates: int = 0
    _scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    _done: anyio.Event = field(default_factory=anyio.Event)

    @property
    def label(self) -> str:
        return f"{self.config.name} {self.config.type}"

    async def run(self, resolver: Resolver) -> None:
        try:
            with self._scope:
                async with resolver.watch(self.config.name, self.config.type) as updates:
                    await self._follow(updates)
        except (ResolveError, ValueError) as exc:  # a bad name found late: this watch only
            log.error("watch %s stopped: %s", self.label, exc)
        except Exception:  # never the sidecar, nor the other watches
            log.exception("watch %s failed", self.label)
        finally:
            self._done.set()

    async def _follow(self, updates: Updates) -> None:
        """Keep ``latest`` and the files current; retry a file that failed every few seconds.

        A file fails for a missing directory or a full disk, which an operator
        fixes without touching DNS: waiting for the next update could wait forever.
        """
        while True:
            retry = FILE_RETRY_INTERVAL if self.files_failing else math.inf
            with anyio.move_on_after(retry):
                try:
                    update = await updates.__anext__()
                except StopAsyncIteration:
                    return
                if self.outputs is not None:  # files first: /ready waits for them
                    await self.outputs.write(update)
                self.latest = update
                self.updates += 1
                log.info(
                    "watch %s: v%d %d endpoints%s",
                    self.label,
                    update.version,
                    len(update.endpoints),
                    " (stale)" if update.stale else "",
                )
                continue
            if self.outputs is not None and self.latest is not None:
                await self.outputs.write(self.latest)

    @property
    def files_failing(self) -> dict[str, str]:
        """Output files whose last write failed: path -> why."""
        if self.outputs is None:
            return {}
        return {str(path): why for path, why in self.outputs.failing.items()}

    @property
    def has_data(self) -> bool:
        """An answer to serve, and its files written: what ``/ready`` waits for."""
        latest = self.latest
        answered = latest is not None and (bool(latest.endpoints) or latest.error is None)
        return answered and not self.files_failing

    async def stop(self) -> None:
        self._scope.cancel()
        await self._done.wait()

    @property
    def stopped(self) -> bool:
        return self._done.is_set()

    async def wait_stopped(self) -> None:
        await self._done.wait()


async def until_removed(updates: Updates, runner: WatchRunner) -> AsyncIterator[Update]:
    """A watch's updates, ending when a reload removes the watch (its subscribers let go)."""
    while not runner.stopped:
        update: Update | None = None
        async with anyio.create_task_group() as tg:

            async def end_on_removal() -> None:
                await runner.wait_stopped()
                tg.cancel_scope.cancel()

            tg.start_soon(end_on_removal)
            with contextlib.suppress(StopAsyncIteration):
                update = await updates.__anext__()
            tg.cancel_scope.cancel()
        if update is None:
            return
        yield update


def watch_key(watch: WatchConfig) -> tuple[str, str]:
    return (watch.name.lower().rstrip("."), watch.type)


def outputs_for(watch: WatchConfig) -> OutputFiles | None:
    if watch.json_file is None and watch.eds_file is None:
        return None
    return OutputFiles(
        watch.name,
        json_file=watch.json_file,
        eds_file=watch.eds_file,
        cluster=watch.cluster,
        rdtype=watch.type,
        port=watch.port,
    )
