"""``srvwatch serve``: the sidecar's lifecycle: start, reload by difference, lame-duck shutdown.

One :class:`Sidecar` owns everything the process opens: the resolver (its
sockets and tasks), a stub listener per address, the admin server, a runner
per watch and its output files. Each lives in a task of its own (see
:class:`Hosted`), so a reload can start and stop any of them in any order,
and every one is closed on the way out.

A reload validates the new file first; a bad one is logged and counted, and
the running config goes on. Then only the difference is applied: new
listeners are bound before anything changes (a bind failure rejects the
reload whole), unchanged listeners keep their sockets, removed watches stop
and close what they own, and a policy change keeps the store. ``/ready``
stays 200 throughout: watches added by a reload are reported while they
warm up, but only the watches present at start-up gate readiness.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from typing import Any, TextIO

import anyio
import anyio.abc
import anyio.to_thread
from prometheus_client import CollectorRegistry

from ..address import ListenAddress
from ..endpoints import Update
from ..errors import ResolveError
from ..listen import DnsListener, Peer
from ..prometheus import ResolverCollector, SidecarInfo
from ..resolver import Resolver
from .admin import AdminServer
from .config import Config, ConfigError, WatchConfig, load_config, read_config_bytes
from .outputs import update_document
from .parts import (
    Hosted,
    StubListener,
    WatchRunner,
    outputs_for,
    until_removed,
    watch_key,
)
from .stub import Stub

__all__ = ["Sidecar", "check_upstreams_are_not_the_stub", "serve"]

log = logging.getLogger(__name__)

POLL_INTERVAL = 2.0
"""Seconds between checks of the config file's content (reload when its hash changes)."""


def check_upstreams_are_not_the_stub(config: Config, resolv_conf: str = "/etc/resolv.conf") -> None:
    """With no ``upstreams``, resolv.conf's nameservers are used: they must not be the stub.

    A pod whose resolv.conf points at its own sidecar would otherwise send
    every query round in a loop. Raises :class:`ConfigError` naming the file.
    """
    if config.upstreams is not None:
        return
    from ..address import parse_nameservers
    from ..names import system_config

    listening = {(a.bind_host, a.port) for a in config.stub.listen}
    for server in parse_nameservers(system_config(resolv_conf)[0]):
        if (server.host, server.port) in listening or (
            server.port in {port for host, port in listening if host == "0.0.0.0"}
        ):
            raise ConfigError(
                config.source,
                "upstreams",
                f"not set, and {resolv_conf} names the stub itself ({server}): "
                "set upstreams to the cluster's DNS server",
            )


class Sidecar:
    """The running sidecar: resolver, stub listeners, admin server and watches, reloadable.

    Use as ``async with Sidecar(config) as sidecar:`` then ``await sidecar.run()``
    (signals and the config file), or drive :meth:`reload` and :meth:`shutdown`
    directly (tests do).
    """

    def __init__(
        self,
        config: Config,
        *,
        overrides: Callable[[Config], Config] | None = None,
        out: TextIO = sys.stdout,
    ) -> None:
        self._overrides = overrides or (lambda config: config)
        self.config = self._overrides(config)
        self._out = out
        self._tg: anyio.abc.TaskGroup | None = None
        self._resolver: Resolver | None = None
        self._resolver_host: Hosted | None = None
        self._stub: Stub | None = None
        self._listeners: dict[ListenAddress, tuple[Hosted, StubListener]] = {}
        self._admin: Hosted | None = None
        self._admin_server: AdminServer | None = None
        self._registry = CollectorRegistry(auto_describe=True)
        self._collector: ResolverCollector | None = None
        self._watches: dict[tuple[str, str], WatchRunner] = {}
        self._ever_ready = False
        self.shutting_down = False
        self.reloads = 0
        self.reload_failures = 0
        self._reload_lock = anyio.Lock()
        self._reload_waits = anyio.CancelScope()
        """Entered by each reload that waits on new upstreams; cancelled by a shutdown."""
        self._opened: collections.Counter[str] = collections.Counter()
        self._retired: collections.Counter[str] = collections.Counter()
        """The summed stats() of closed stub listeners."""

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Sidecar:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._start(self.config)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _start(self, config: Config) -> None:
        self._resolver, self._resolver_host = await self._open_resolver(config)
        self._collect(self._resolver)
        self._stub = Stub(self._resolver, allow=config.stub.allow)
        for address in config.stub.listen:
            await self._start_listener(address)
        await self._start_admin(config.admin.listen)
        for watch in config.watch:
            self._start_watch(watch, gates_ready=True)
        assert self._tg is not None
        # Without watches nothing would ask upstream before a client does, and /ready
        # (which clients may wait for) would wait on that: ask it something now.
        self._tg.start_soon(self._probe, self._resolver, math.inf)
        self._say(f"upstream {', '.join(map(str, self._resolver.nameservers))}")

    async def _probe(self, resolver: Resolver, within: float) -> bool:
        """Ask the upstreams the root's NS until one answers (any rcode) or ``within`` runs out.

        True once a nameserver has answered. Failures back off as the policy says.
        """
        health = resolver.transport.health
        failures = 0
        with anyio.move_on_after(within):
            while not health.any_answered and not self.shutting_down:
                with contextlib.suppress(ResolveError):
                    await resolver.resolve(".", "NS")
                if health.any_answered:
                    break
                failures += 1
                await anyio.sleep(resolver.policy.backoff_delay(failures))
        return health.any_answered

    async def aclose(self) -> None:
        """Close everything, last opened first; idempotent."""
        tg, self._tg = self._tg, None
        if tg is None:
            return
        try:
            with anyio.CancelScope(shield=True):
                for key in list(self._watches):
                    await self._stop_watch(key)
                for address in list(self._listeners):
                    await self._stop_listener(address)
                if self._admin is not None:
                    await self._admin.stop()
                    self._admin = self._admin_server = None
                    self._opened["admin_servers_closed"] += 1
                if self._resolver_host is not None:
                    await self._resolver_host.stop()
                    self._resolver_host = None
        finally:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)

    async def shutdown(self, lame_duck: float | None = None) -> None:
        """``/ready`` 503 at once, DNS answered for ``lame_duck`` seconds; closing then drains.

        After this, leaving ``async with`` stops taking queries and lets the
        ones in flight finish (up to one lookup's lifetime) before closing.
        """
        self.shutting_down = True
        self._reload_waits.cancel()
        grace = self.config.policy.lifetime
        for _, listener in self._listeners.values():
            listener.grace = grace
        delay = self.config.admin.lame_duck if lame_duck is None else lame_duck
        self._say(f"shutting down: /ready is 503, DNS answered for {delay:g}s more")
        await anyio.sleep(delay)

    # -- the parts ----------------------------------------------------------------------

    async def _open_resolver(self, config: Config) -> tuple[Resolver, Hosted]:
        policy = replace(config.policy, cache_size=config.stub.cache_size)
        resolver = Resolver(
            list(config.upstreams) if config.upstreams is not None else None, policy=policy
        )
        hosted = Hosted(resolver, "resolver")
        assert self._tg is not None
        await hosted.start(self._tg)
        return resolver, hosted

    def _answer(self, data: bytes, peer: Peer, tcp: bool) -> Any:
        stub = self._stub
        assert stub is not None
        return stub.answer(data, peer, tcp)

    async def _start_listener(self, address: ListenAddress) -> None:
        listener = StubListener(
            DnsListener(self._answer, address.bind_host, address.port, name=f"stub {address}")
        )
        hosted = Hosted(listener, f"stub {address}")
        assert self._tg is not None
        await hosted.start(self._tg)
        self._listeners[address] = (hosted, listener)
        self._opened["listeners_opened"] += 1
        self._say(f"DNS stub on {listener.dns.address} (UDP and TCP)")

    async def _start_admin(self, address: ListenAddress) -> None:
        server = AdminServer(self, self._registry, address)
        hosted = Hosted(server, f"admin {address}")
        assert self._tg is not None
        await hosted.start(self._tg)
        old, self._admin, self._admin_server = self._admin, hosted, server
        self._opened["admin_servers_opened"] += 1
        self._say(f"admin on http://{server.address}")
        if old is not None:
            await old.stop()
            self._opened["admin_servers_closed"] += 1

    def _collect(self, resolver: Resolver) -> None:
        """Point /metrics at ``resolver``: one collector, reading its counters at scrape time."""
        if self._collector is not None:
            self._registry.unregister(self._collector)
        self._collector = ResolverCollector(resolver, self.info)
        self._registry.register(self._collector)

    def _start_watch(self, watch: WatchConfig, *, gates_ready: bool) -> None:
        runner = WatchRunner(watch, outputs_for(watch), gates_ready)
        self._watches[watch_key(watch)] = runner
        self._opened["watches_started"] += 1
        assert self._tg is not None
        self._tg.start_soon(runner.run, self.resolver)

    async def _stop_watch(self, key: tuple[str, str]) -> None:
        await self._watches.pop(key).stop()
        self._opened["watches_stopped"] += 1

    async def _stop_listener(self, address: ListenAddress) -> None:
        """Close a stub listener and keep its counters, so the pairs can be checked later."""
        hosted, listener = self._listeners.pop(address)
        await hosted.stop()
        self._opened["listeners_closed"] += 1
        self._retired.update(listener.dns.stats())

    # -- reload -----------------------------------------------------------------------------

    async def reload(self, config: Config | None = None) -> bool:
        """Read the config file again (or take ``config``) and apply what changed.

        False, with the running config untouched, when the new one is invalid
        or a new listener cannot bind, and once shutting down.
        """
        async with self._reload_lock:
            if self.shutting_down or self._tg is None:
                log.warning("reload ignored: shutting down")
                return False
            try:
                if config is None:
                    if self.config.source is None:
                        raise ValueError("no config file to reload (started without --config)")
                    config = load_config(self.config.source)
                new = self._overrides(config)
                await self._apply(new)
            except (ConfigError, OSError, ValueError) as exc:
                self.reload_failures += 1
                log.error("reload rejected, the running config goes on: %s", exc)
                self._say(f"reload rejected: {exc}")
                return False
            except Exception:  # a reload must never take the sidecar down
                self.reload_failures += 1
                log.exception("reload failed, the running config goes on")
                self._say("reload failed: see the log")
                return False
            self.reloads += 1
            return True

    async def _apply(self, new: Config) -> None:
        old = self.config
        self.waiting_on()  # notes whether the sidecar has been ready, for the watches added
        # 1. What can fail comes first, so a failure leaves everything as it was: new
        #    upstreams must answer, new listeners and a new admin address must bind.
        fresh = None
        if new.upstreams != old.upstreams:
            self._reload_waits = anyio.CancelScope()  # the one long wait: a shutdown cuts it
            with self._reload_waits:
                fresh = await self._answering_resolver(new)
            if fresh is None:
                raise ValueError("reload cancelled: shutting down")
        added = [a for a in new.stub.listen if a not in self._listeners]
        started: list[ListenAddress] = []
        try:
            for address in added:
                await self._start_listener(address)
                started.append(address)
            if new.admin.listen != old.admin.listen:
                await self._start_admin(new.admin.listen)
        except BaseException:
            for address in started:
                await self._stop_listener(address)
            if fresh is not None:
                await fresh[1].stop()
            raise
        # 2. The resolver: the new one for new upstreams (the watches move to it), else
        #    the new policy applied in place, keeping the store.
        policy = replace(new.policy, cache_size=new.stub.cache_size)
        if fresh is not None:
            await self._switch_resolver(new, *fresh)
        elif policy != self.resolver.policy:
            self.resolver.use_policy(policy)
            self._stub = Stub(self.resolver, allow=new.stub.allow)  # it reads the policy once
        elif new.stub.allow != old.stub.allow:
            self._stub = Stub(self.resolver, allow=new.stub.allow)
        # 3. Watches: removed ones stop (and close their loops), added ones start.
        wanted = {watch_key(w): w for w in new.watch}
        for key in [k for k in self._watches if k not in wanted]:
            await self._stop_watch(key)
        for key, watch in wanted.items():
            runner = self._watches.get(key)
            if runner is None:
                self._start_watch(watch, gates_ready=not self._ever_ready)
            elif runner.config != watch:
                runner.config = watch
                runner.outputs = outputs_for(watch)
                if runner.outputs is not None and runner.latest is not None:
                    await runner.outputs.write(runner.latest)
        # 4. Listeners no longer wanted close last: the new ones already answer.
        for address in [a for a in self._listeners if a not in new.stub.listen]:
            await self._stop_listener(address)
        self.config = new
        self._say(f"reloaded config {new.digest[:12]}")

    async def _answering_resolver(self, new: Config) -> tuple[Resolver, Hosted]:
        """A resolver for the new upstreams, once one of them has answered.

        Switching to upstreams that never answer would drop every cached
        answer for nothing: the reload is rejected instead, and the running
        upstreams stay.
        """
        resolver, hosted = await self._open_resolver(new)
        try:
            answered = await self._probe(resolver, new.policy.lifetime)
        except BaseException:  # cancelled by a shutdown
            with anyio.CancelScope(shield=True):
                await hosted.stop()
            raise
        if not answered:
            await hosted.stop()
            upstreams = ", ".join(map(str, resolver.nameservers))
            raise ValueError(
                f"upstreams {upstreams}: none answered within {new.policy.lifetime:g}s; "
                "the running upstreams stay"
            )
        return resolver, hosted

    async def _switch_resolver(self, new: Config, resolver: Resolver, hosted: Hosted) -> None:
        old_resolver, old_host = self._resolver, self._resolver_host
        old_runners = self._watches
        self._resolver, self._resolver_host = resolver, hosted
        self._watches = {}
        for key, runner in old_runners.items():
            self._start_watch(runner.config, gates_ready=False)
            self._watches[key].latest = runner.latest  # the endpoints served while it warms
        self._stub = Stub(resolver, allow=new.stub.allow)
        self._collect(resolver)
        for runner in old_runners.values():
            await runner.stop()
            self._opened["watches_stopped"] += 1
        if old_host is not None:
            await old_host.stop()
        log.info("upstreams now %s (was %s)", resolver.nameservers, old_resolver)

    # -- what the admin server and the metrics read ---------------------------------------

    @property
    def resolver(self) -> Resolver:
        if self._resolver is None:
            raise RuntimeError("the sidecar is not running")
        return self._resolver

    def live(self) -> bool:
        return self._tg is not None

    def waiting_on(self) -> list[str]:
        """What ``/ready`` waits on, one line each; empty when ready."""
        if self.shutting_down:
            return ["shutting down"]
        waiting = [
            f"stub {address}: not listening"
            for address, (_, listener) in self._listeners.items()
            if not listener.dns.serving
        ]
        if self._resolver is None or not self._resolver.transport.health.any_answered:
            waiting.append("upstream: no nameserver has answered yet")
        for runner in self._watches.values():
            if runner.gates_ready and not runner.has_data:
                waiting += [
                    f"watch {runner.label}: cannot write {path}: {why}"
                    for path, why in runner.files_failing.items()
                ]
                if runner.latest is None or not runner.files_failing:
                    waiting.append(f"watch {runner.label}: no data yet")
        if not waiting:
            self._ever_ready = True
        return waiting

    def warming(self) -> list[str]:
        """Watches added by a reload that have no data yet (reported, not gating)."""
        return [
            f"watch {r.label}: no data yet"
            for r in self._watches.values()
            if not r.gates_ready and not r.has_data
        ]

    def endpoints(self) -> dict[str, Any]:
        """Each watch's newest document (None before its first answer), keyed by its name.

        A name watched as two types is keyed ``"NAME TYPE"`` for the second.
        """
        documents: dict[str, Any] = {}
        for runner in self._watches.values():
            key = runner.config.name if runner.config.name not in documents else runner.label
            documents[key] = update_document(runner.latest) if runner.latest else None
        return documents

    def subscribe(self, name: str) -> AbstractAsyncContextManager[AsyncIterator[Update]]:
        """Updates of a configured watch, for ``/watch?name=``; KeyError for any other name."""
        key = name.lower().rstrip(".")
        for runner in self._watches.values():
            if watch_key(runner.config)[0] == key:
                return self._subscription(runner)
        raise KeyError(name)

    @asynccontextmanager
    async def _subscription(self, runner: WatchRunner) -> AsyncIterator[AsyncIterator[Update]]:
        watch = runner.config
        async with self.resolver.watch(watch.name, watch.type) as updates:
            yield until_removed(updates, runner)

    def info(self) -> SidecarInfo:
        return SidecarInfo(
            reloads=self.reloads,
            reload_failures=self.reload_failures,
            config_digest=self.config.digest,
            watch_updates=self._by_name(lambda runner: runner.updates),
            output_writes=self._by_name(
                lambda runner: runner.outputs.writes if runner.outputs else None
            ),
            output_write_failures=self._by_name(
                lambda runner: runner.outputs.write_failures if runner.outputs else None
            ),
            open_sockets=sum(
                listener.dns.sockets_opened - listener.dns.sockets_closed
                for _, listener in self._listeners.values()
            )
            + (
                self._admin_server.sockets_opened - self._admin_server.sockets_closed
                if self._admin_server is not None
                else 0
            ),
        )

    def stub_addresses(self) -> list[ListenAddress]:
        """Where the stub listens, with the ports actually bound (a configured port 0 picks one)."""
        return [
            ListenAddress(address.bind_host, listener.dns.port)
            for address, (_, listener) in self._listeners.items()
        ]

    def admin_address(self) -> ListenAddress:
        """Where the admin server listens, with the port actually bound."""
        if self._admin_server is None:
            raise RuntimeError("the admin server is not running")
        configured = self.config.admin.listen
        return ListenAddress(configured.bind_host, self._admin_server.port)

    def _by_name(self, count: Callable[[WatchRunner], int | None]) -> dict[str, int]:
        """A figure per configured watch name (None: the watch has none, so no label)."""
        by_name: dict[str, int] = {}
        for runner in self._watches.values():
            value = count(runner)
            if value is not None:
                name = runner.config.name
                by_name[name] = by_name.get(name, 0) + value
        return by_name

    def stats(self) -> dict[str, int]:
        """Opened/closed pairs of what the sidecar owns, for leak checks.

        ``listeners_*``, ``watches_*`` and ``admin_servers_*`` count starts and
        stops; ``retired_*`` sums the counters of every stub listener closed
        so far, whose pairs (sockets, connections, tasks) must each balance.
        """
        stats = dict(self._opened)
        for key in (
            "listeners_opened",
            "listeners_closed",
            "watches_started",
            "watches_stopped",
            "admin_servers_opened",
            "admin_servers_closed",
        ):
            stats.setdefault(key, 0)
        stats.update({f"retired_{key}": value for key, value in self._retired.items()})
        return stats

    def counts(self) -> dict[str, int]:
        """What is open now, for leak checks: listeners, watches, admin servers."""
        return {
            "listeners": len(self._listeners),
            "watches": len(self._watches),
            "admin": int(self._admin is not None),
        }

    def _say(self, text: str) -> None:
        print(f"srvwatch: {text}", file=self._out, flush=True)

    # -- the process ------------------------------------------------------------------------

    async def run(self, signals: AsyncIterator[int]) -> int:
        """Serve until SIGTERM or SIGINT, reloading on SIGHUP and on a file change; 0 when clean.

        ``signals`` (SIGTERM, SIGINT, SIGHUP) is open from before the start to
        after the close, so no SIGHUP ever meets its default action (exit).
        """
        assert self._tg is not None
        if self.config.source is not None:
            self._tg.start_soon(self._poll_file, self.config.source)
        async for signum in signals:
            if signum == signal.SIGHUP:
                self._tg.start_soon(self.reload)  # signals keep being heard meanwhile
                continue
            log.info("%s: stopping", signal.Signals(signum).name)
            break
        with anyio.CancelScope() as lame_duck:
            self._tg.start_soon(_cancel_on_second_signal, signals, lame_duck)
            await self.shutdown()
        return 0

    async def _poll_file(self, path: str) -> None:
        """Reload when the file's content changes: a stat every 2 s, a read when it moved.

        Read on the event loop, no worker thread: the read is bounded and never
        blocks (a FIFO or device at the path is refused before reading).
        """
        seen = self.config.digest
        stamp: tuple[int, int, int] | None = None
        while not self.shutting_down:
            await anyio.sleep(POLL_INTERVAL)
            try:
                status = os.stat(path)  # follows a ConfigMap's ..data symlink swap
                if (status.st_ino, status.st_mtime_ns, status.st_size) == stamp:
                    continue
                stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
                data = read_config_bytes(path)
            except (OSError, ConfigError):
                stamp = None
                continue  # mid-replacement (an editor, a ConfigMap symlink swap): look again
            digest = hashlib.sha256(data).hexdigest()
            if digest == self.config.digest:  # running already (a SIGHUP reloaded it)
                seen = digest
            elif digest != seen and not self.shutting_down:
                seen = digest  # a rejected file is not tried again until it changes
                await self.reload()


async def _cancel_on_second_signal(signals: AsyncIterator[int], scope: anyio.CancelScope) -> None:
    """A second SIGTERM or Ctrl-C during the lame duck: stop waiting, close at once.

    A SIGHUP now is noted and ignored: a reload is moot on the way out.
    """
    async for signum in signals:
        if signum == signal.SIGHUP:
            log.info("SIGHUP while shutting down: no reload")
            continue
        scope.cancel()


async def serve(
    config: Config,
    overrides: Callable[[Config], Config] | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Run the sidecar until SIGTERM or SIGINT; 0 on a clean stop."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with Sidecar(config, overrides=overrides, out=out) as sidecar:
            status = await sidecar.run(signals)
    print("srvwatch: stopped", file=out, flush=True)
    return status
