"""The tasks an object owns: started in its task group, cancelled by its close, never leaked.

A resolver runs shared lookups (handed off from cancelled callers) and watch
loops in tasks of its own. They live in one task group opened by
``async with`` and are cancelled together on close, so nothing outlives its
owner. A task that fails with an unexpected error is logged and ends alone:
it never takes down the task group, the other tasks or the caller's block.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

__all__ = ["TaskOwner"]

log = logging.getLogger(__name__)


class TaskOwner:
    """One task group and the cancel scopes of the tasks started in it."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._task_group: anyio.abc.TaskGroup | None = None
        self._scopes: set[anyio.CancelScope] = set()
        self._loop: object = None
        self.closed = False

    def __len__(self) -> int:
        return len(self._scopes)

    async def open(self) -> None:
        if self._task_group is not None or self.closed:
            raise RuntimeError(f"a {self._owner} can be entered only once")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._loop = _event_loop()

    async def close(self) -> None:
        """Cancel every task and wait for them to end."""
        self.cancel_all()
        task_group, self._task_group = self._task_group, None
        if task_group is not None:
            # The body's exception is not handed to the group: users see their own.
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)

    def cancel_all(self) -> None:
        """Mark closed and cancel every task; safe inside the owner's ``async with`` body."""
        self.closed = True
        for scope in list(self._scopes):
            scope.cancel()

    def check_open(self) -> None:
        """Raise a RuntimeError that says how to use the owner, unless it is open."""
        if self.closed:
            raise RuntimeError(f"the {self._owner} is closed")
        if self._task_group is None:
            raise RuntimeError(
                f"use the {self._owner} as `async with srvwatch.{self._owner}(...) as ...:`"
            )

    def check_caller(self) -> None:
        """:meth:`check_open`, and the caller runs on the event loop that entered the owner.

        Sockets, events and tasks belong to one event loop: used from another
        (trio after asyncio, or a second asyncio loop), they fail with errors
        that never say why, so this says it first.
        """
        self.check_open()
        if _event_loop() != self._loop:
            raise RuntimeError(
                f"this {self._owner} belongs to the event loop that entered it "
                f"({_describe(self._loop)}); it cannot be used from another one"
            )

    @property
    def entered(self) -> bool:
        return self._task_group is not None

    def spawn(self, func: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Start ``func(*args)`` as one of the owner's tasks; RuntimeError once it is closed."""
        if self._task_group is None:
            raise RuntimeError(f"the {self._owner} is closed or was never entered")
        self._task_group.start_soon(self._guarded, func, *args)

    async def _guarded(self, func: Callable[..., Awaitable[None]], *args: Any) -> None:
        with anyio.CancelScope() as scope:
            if self.closed:
                scope.cancel()
            self._scopes.add(scope)
            try:
                await func(*args)
            except Exception as exc:
                if self.closed and isinstance(exc, RuntimeError):
                    # Cancelled by the close, it met the closed owner before a checkpoint.
                    log.debug("%s: a task ended by the close", self._owner, exc_info=True)
                else:
                    log.exception("%s: a background task failed", self._owner)
            finally:
                self._scopes.discard(scope)


def _event_loop() -> object:
    """The running event loop's identity: asyncio's loop object (cheap), else anyio's token."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return anyio.lowlevel.current_token()


def _describe(loop: object) -> str:
    if isinstance(loop, asyncio.AbstractEventLoop):
        return f"asyncio, {type(loop).__module__}.{type(loop).__name__}"
    return type(getattr(loop, "native_token", loop)).__module__.split(".")[0]
