"""``srvwatch serve``: one resolver, the DNS stub on each listen address, and watches.

Everything the process opens is owned here and closed on the way out: the
resolver (its sockets and tasks), each listener (UDP and TCP sockets,
connections), each watch. SIGTERM or Ctrl-C ends it cleanly with exit 0.
The admin server, the config file and reload build on this (the next issue).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

import anyio

from ..address import ListenAddress, parse_listen
from ..listen import DnsListener
from ..policy import Policy
from ..resolver import Resolver
from .stub import DEFAULT_ALLOW, Stub

__all__ = ["ServeOptions", "serve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """What ``srvwatch serve`` runs with, validated before anything starts."""

    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 5353),)
    upstreams: tuple[str, ...] | None = None
    """None: the nameservers of /etc/resolv.conf."""
    allow: tuple[str, ...] = DEFAULT_ALLOW
    watch: tuple[str, ...] = ()
    policy: Policy = field(default_factory=Policy)

    @classmethod
    def from_args(
        cls,
        listen: Sequence[str] | None,
        upstreams: Sequence[str] | None,
        allow: Sequence[str] | None,
        watch: Sequence[str] | None,
        min_ttl: float | None,
    ) -> ServeOptions:
        addresses = tuple(
            parse_listen(text, f"--listen {text!r}") for text in (listen or ["127.0.0.1:5353"])
        )
        policy = Policy() if min_ttl is None else Policy(min_ttl=min_ttl, max_ttl=max(300, min_ttl))
        return cls(
            addresses,
            tuple(upstreams) if upstreams else None,
            tuple(allow) if allow else DEFAULT_ALLOW,
            tuple(watch or ()),
            policy,
        )


def _bind_host(address: ListenAddress) -> str:
    if address.host == "localhost":
        return "127.0.0.1"
    return address.host or "0.0.0.0"  # ":PORT": every IPv4 interface, as Go servers read it


async def serve(options: ServeOptions, out: TextIO = sys.stdout) -> int:
    """Run until SIGTERM or SIGINT; 0 on a clean stop."""
    resolver = Resolver(
        list(options.upstreams) if options.upstreams else None, policy=options.policy
    )
    async with resolver:
        stub = Stub(resolver, allow=options.allow)
        listeners = [
            DnsListener(stub.answer, _bind_host(a), a.port, name=f"stub {a}")
            for a in options.listen
        ]
        try:
            for listener in listeners:
                await listener.start()
                print(
                    f"srvwatch: DNS stub on {listener.address} (UDP and TCP)", file=out, flush=True
                )
            upstreams = ", ".join(map(str, resolver.nameservers))
            print(f"srvwatch: upstream {upstreams}", file=out, flush=True)
            async with anyio.create_task_group() as tg:
                for name in options.watch:
                    tg.start_soon(_keep_watching, resolver, name)
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("srvwatch: %s, stopping", signal.Signals(signum).name)
                        break
                tg.cancel_scope.cancel()
        finally:
            # Last opened, first closed: each listener's task group nests in the one before.
            for listener in reversed(listeners):
                await listener.aclose()
    print("srvwatch: stopped", file=out, flush=True)
    return 0


async def _keep_watching(resolver: Resolver, name: str) -> None:
    """A --watch name: its loop keeps it fresh in the store, so the stub always has it."""
    async with resolver.watch(name) as updates:
        async for update in updates:
            log.info(
                "watch %s: v%d %d endpoints%s",
                name,
                update.version,
                len(update.endpoints),
                " (stale)" if update.stale else "",
            )
