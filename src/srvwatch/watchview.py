"""What ``srvwatch watch`` prints: text, one JSON document per line, or a live table.

The table needs rich (the ``sidecar`` extra), imported only when asked for,
so the library and the other formats never depend on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from .endpoints import Update
from .server.outputs import update_document

if TYPE_CHECKING:
    from .resolver import Resolver
    from .watch import Updates

__all__ = ["EndpointTable", "show_watches", "watch_targets"]

WATCH_TYPES = ("SRV", "A", "AAAA")

ShowUpdate = Callable[[str, Update], None]
"""Shows one update of the watch of the name given (an update may name what answered)."""
PrintUpdate = Callable[[Update, TextIO], None]


def watch_targets(names: Sequence[str], rdtype: str | None) -> tuple[list[str], str]:
    """The names and the record type of ``watch NAME... [--type T]``.

    The older ``watch NAME TYPE`` still works: two arguments whose second is
    exactly SRV, A or AAAA give a type, not a second name (write ``A.`` to
    watch a name that really is "A").
    """
    found = list(names)
    if len(found) == 2 and found[1] in WATCH_TYPES:
        if rdtype is not None and rdtype != found[1]:
            raise ValueError(f"watch: two types given, {found[1]!r} and --type {rdtype!r}")
        return found[:1], found[1]
    return found, rdtype or "SRV"


def _load_rich() -> Any:
    try:
        import rich.console
    except ImportError:
        raise ValueError(
            "--format table needs rich: pip install 'srvwatch[sidecar]' (or pip install rich)"
        ) from None
    return rich.console


class EndpointTable:
    """The newest update of each watched name, as a rich table: one row per endpoint.

    Pure state plus rendering: the caller decides when to draw, so the table
    is tested by rendering it, without a terminal.
    """

    def __init__(self, names: Sequence[str], clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._latest: dict[str, tuple[Update, float]] = {}
        self.names = list(names)

    def update(self, name: str, update: Update) -> None:
        self._latest[name] = (update, self._clock())

    def render(self) -> Any:
        from rich.table import Table

        table = Table(title="srvwatch watch", expand=False)
        # Long names fold rather than squeeze the addresses out of a narrow terminal.
        table.add_column("name", overflow="fold")
        table.add_column("target:port", overflow="fold")
        table.add_column("pri", justify="right")
        table.add_column("weight", justify="right")
        table.add_column("addresses", min_width=12)
        table.add_column("state")
        table.add_column("age")
        now = self._clock()
        for name in self.names:
            latest = self._latest.get(name)
            if latest is None:
                table.add_row(name, "(waiting for the first answer)", "", "", "", "", "")
                continue
            update, received = latest
            state = "[bold red]STALE[/]" if update.stale else "fresh"
            age = f"{now - received:.0f}s"
            endpoints = update.endpoints
            if not endpoints.endpoints:
                what = "service not offered" if endpoints.no_service else "(no endpoints)"
                table.add_row(update.name, what, "", "", "", state, age)
            for ep in endpoints.endpoints:
                target = f"{ep.target}:{ep.port}" if ep.port else ep.target
                addresses = ", ".join(ep.addresses) or "-"
                table.add_row(
                    update.name, target, str(ep.priority), str(ep.weight), addresses, state, age
                )
        return table


@asynccontextmanager
async def _live_table(names: list[str], out: TextIO) -> AsyncIterator[ShowUpdate]:
    """A table redrawn on every update; on a terminal it also ticks the ages once a second.

    Off a terminal (a pipe, a file) a live display cannot redraw, so each
    update prints the whole table once.
    """
    console_module = _load_rich()
    from rich.live import Live

    console = console_module.Console(file=out)
    table = EndpointTable(names)
    if not console.is_terminal:

        def print_table(name: str, update: Update) -> None:
            table.update(name, update)
            console.print(table.render())
            out.flush()

        yield print_table
        return
    with Live(get_renderable=table.render, console=console, refresh_per_second=1) as live:

        def redraw(name: str, update: Update) -> None:
            table.update(name, update)
            live.refresh()

        yield redraw


@asynccontextmanager
async def _lines(format: str, out: TextIO, text: PrintUpdate) -> AsyncIterator[ShowUpdate]:
    def show(name: str, update: Update) -> None:
        if format == "json":
            print(json.dumps(update_document(update)), file=out)
        else:
            text(update, out)
        out.flush()

    yield show


async def show_watches(
    resolver: Resolver,
    names: Sequence[str],
    rdtype: str,
    format: str,
    out: TextIO,
    *,
    text: PrintUpdate,
) -> None:
    """Watch every name and show each update as ``format`` says, until cancelled.

    Every watch is opened before any is followed, so a bad name is one clear
    error (a ValueError) and not a failure inside a task group.
    """
    if format not in ("text", "json", "table"):
        raise ValueError(f"--format must be text, json or table, got {format!r}")
    if format == "table":
        _load_rich()  # a clear error before anything starts
    async with AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(resolver.watch(n, rdtype)) for n in names]
        if format == "table":
            show = await stack.enter_async_context(_live_table([s.name for s in streams], out))
        else:
            show = await stack.enter_async_context(_lines(format, out, text))
        async with anyio.create_task_group() as tasks:
            for updates in streams:
                tasks.start_soon(_follow, updates, show)


async def _follow(updates: Updates, show: ShowUpdate) -> None:
    async for update in updates:
        show(updates.name, update)
