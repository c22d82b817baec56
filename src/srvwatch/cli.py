"""Command line: ``srvwatch resolve`` once, ``srvwatch watch`` continuously, ``srvwatch demo``."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import TYPE_CHECKING, TextIO

import anyio

from .endpoints import EndpointSet, Update
from .errors import ResolveError
from .policy import Policy
from .resolver import Resolver

if TYPE_CHECKING:
    from .testing import ZoneServer

__all__ = ["main"]

DEMO_ZONE = """\
$TTL 1
@                 SOA  ns hostmaster 1 3600 600 86400 1
@                 NS   ns
ns                A    127.0.0.1
_http._tcp.api    SRV  10 60 8080 api-1
_http._tcp.api    SRV  10 40 8080 api-2
_http._tcp.api    SRV  20 0  8080 api-backup
api-1             A    10.0.0.11
api-1             AAAA 2001:db8::11
api-2             A    10.0.0.12
api-backup        A    10.0.0.13
"""
DEMO_ORIGIN = "svc.test."
DEMO_SERVICE = "_http._tcp.api.svc.test"
DEMO_POLICY = Policy(
    min_ttl=0.5, max_ttl=1.0, timeout=0.3, lifetime=0.6, backoff_base=0.5, backoff_max=2.0
)
# Long enough, whatever --step says, for the last answer to expire and a refresh to
# time out (so the watch turns stale), and after it for a backed-off retry to succeed.
DEMO_OUTAGE_MIN = DEMO_POLICY.max_ttl + DEMO_POLICY.lifetime + DEMO_POLICY.backoff_max / 2
DEMO_RECOVERY_MIN = DEMO_POLICY.backoff_max + 2 * DEMO_POLICY.lifetime


def print_endpoints(endpoints: EndpointSet, out: TextIO) -> None:
    """Endpoints in one RFC 2782 selection order, one per line."""
    flag = " (stale)" if endpoints.stale else ""
    print(f"{endpoints.name}  ttl={endpoints.ttl:g}s{flag}", file=out)
    if endpoints.no_service:
        print("  service not offered (SRV target '.')", file=out)
    for ep in endpoints.ordered():
        addresses = ", ".join(ep.addresses) or "-"
        print(
            f"  {ep.target}:{ep.port}  priority={ep.priority} weight={ep.weight}  [{addresses}]",
            file=out,
        )


def print_update(update: Update, out: TextIO) -> None:
    """One update: what changed, then the whole set in RFC 2782 order."""
    state = "STALE" if update.stale else "fresh"
    changes = [f"+{ep.target}:{ep.port}{list(ep.addresses)}" for ep in update.added]
    changes += [f"-{ep.target}:{ep.port}{list(ep.addresses)}" for ep in update.removed]
    print(
        f"update {update.version} [{state}] {' '.join(changes) or '(no endpoint change)'}", file=out
    )
    if update.error:
        print(f"  upstream failing, keeping the last good endpoints: {update.error}", file=out)
    print_endpoints(update.endpoints, out)


async def _rolling_deploy(server: ZoneServer, out: TextIO, step: float, forever: bool) -> None:
    """Change the demo zone the way a rolling deploy and a DNS outage would."""
    from .testing import Fault

    while True:
        await anyio.sleep(step)
        print("-- deploy: api-3 joins", file=out)
        server.set_records("api-3", "A", ["10.0.0.14"], ttl=1)
        server.add_records("_http._tcp.api", "SRV", ["10 50 8080 api-3"], ttl=1)
        await anyio.sleep(step)
        print("-- deploy: api-2 leaves", file=out)
        server.set_records(
            "_http._tcp.api",
            "SRV",
            ["10 60 8080 api-1", "20 0 8080 api-backup", "10 50 8080 api-3"],
            ttl=1,
        )
        await anyio.sleep(step)
        print("-- deploy: api-1 moves to a new address", file=out)
        server.set_records("api-1", "A", ["10.0.0.21"], ttl=1)
        await anyio.sleep(step)
        print("-- DNS outage: the server stops answering", file=out)
        server.inject(Fault(drop=True))
        await anyio.sleep(max(step * 2, DEMO_OUTAGE_MIN))
        print("-- DNS is back", file=out)
        server.clear_faults()
        await anyio.sleep(max(step, DEMO_RECOVERY_MIN))
        if not forever:
            return
        print("-- back to the start", file=out)
        server.set_records(
            "_http._tcp.api",
            "SRV",
            ["10 60 8080 api-1", "10 40 8080 api-2", "20 0 8080 api-backup"],
            ttl=1,
        )
        server.set_records("api-1", "A", ["10.0.0.11"], ttl=1)


def _demo_sidecar(server: ZoneServer, out: TextIO) -> AbstractAsyncContextManager[object]:
    """The stub and admin server in front of the demo zone, when the sidecar extra is installed."""
    try:
        from .server.demo import sidecar_demo
    except ImportError as exc:
        print(f"(the sidecar part needs `pip install 'srvwatch[sidecar]'`: {exc})", file=out)
        return nullcontext()
    return sidecar_demo(server.address, DEMO_SERVICE, "api-1." + DEMO_ORIGIN, DEMO_POLICY, out)


async def _demo(out: TextIO, forever: bool = False, step: float = 2.0) -> int:
    from .testing import ZoneServer

    policy = DEMO_POLICY
    async with ZoneServer(DEMO_ZONE, origin=DEMO_ORIGIN) as server:
        print(
            f"ZoneServer for {DEMO_ORIGIN} on {server.address}; watching {DEMO_SERVICE}", file=out
        )
        async with (
            _demo_sidecar(server, out),
            Resolver([server.address], policy=policy) as resolver,
        ):
            async with anyio.create_task_group() as tasks, resolver.watch(DEMO_SERVICE) as updates:

                async def script() -> None:
                    await _rolling_deploy(server, out, step, forever)
                    await anyio.sleep(step / 2)
                    tasks.cancel_scope.cancel()

                tasks.start_soon(script)
                async for update in updates:
                    print_update(update, out)
        stats = resolver.stats()
        print(
            f"queries sent: {stats['queries']}, updates: {stats['updates_emitted']}, "
            f"sockets opened/closed: {stats['sockets_opened']}/{stats['sockets_closed']}, "
            f"loops started/stopped: {stats['loops_started']}/{stats['loops_stopped']}",
            file=out,
        )
    return 0


async def _watch(args: argparse.Namespace, out: TextIO) -> int:
    from .watchview import show_watches, watch_targets

    names, rdtype = watch_targets(args.name, args.type)
    policy = Policy(timeout=args.timeout, lifetime=max(args.lifetime, args.timeout))
    resolver = Resolver(args.nameserver or None, policy=policy)
    async with resolver:
        await show_watches(resolver, names, rdtype, args.format, out, text=print_update)
    return 0


async def _resolve(args: argparse.Namespace, out: TextIO) -> int:
    policy = Policy(timeout=args.timeout, lifetime=max(args.lifetime, args.timeout))
    async with Resolver(args.nameserver or None, policy=policy) as resolver:
        if args.type.upper() == "SRV":
            print_endpoints(await resolver.resolve_srv(args.name), out)
        else:
            answer = await resolver.resolve(args.name, args.type)
            flag = " (stale)" if answer.stale else ""
            print(f"{answer.name} {answer.rdtype} ttl={answer.ttl:g}s{flag}", file=out)
            for record in answer.records:
                print(f"  {record.to_text()}", file=out)
    return 0


def _seconds(text: str) -> float:
    """A ``--timeout``/``--lifetime`` value: argparse names the flag and exits 2 otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def _broken_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` is only the reader of our output going away (``| head``)."""
    if isinstance(exc, BrokenPipeError):
        return True
    inner: Sequence[BaseException] = getattr(exc, "exceptions", ())  # a task group's group
    return bool(inner) and all(_broken_pipe(e) for e in inner)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srvwatch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    resolve = commands.add_parser("resolve", help="resolve a name once")
    resolve.add_argument("name")
    resolve.add_argument("type", nargs="?", default="SRV")
    resolve.add_argument(
        "-n",
        "--nameserver",
        action="append",
        help="host, host:port or [v6]:port (repeatable; default: /etc/resolv.conf)",
    )
    resolve.add_argument("--timeout", type=_seconds, default=1.0, help="per attempt, seconds")
    resolve.add_argument("--lifetime", type=_seconds, default=5.0, help="per lookup, seconds")
    watch = commands.add_parser(
        "watch", help="print every change of one or more names until Ctrl-C"
    )
    watch.add_argument("name", nargs="+", help="names to watch (NAME TYPE also works)")
    watch.add_argument(
        "-t", "--type", type=str.upper, choices=["SRV", "A", "AAAA"], help="default SRV"
    )
    watch.add_argument(
        "--format",
        choices=["text", "json", "table"],
        default="text",
        help="text (default), json (a document per line) or table (live; needs rich)",
    )
    watch.add_argument("-n", "--nameserver", action="append", help="as for resolve")
    watch.add_argument("--timeout", type=_seconds, default=1.0, help="per attempt, seconds")
    watch.add_argument("--lifetime", type=_seconds, default=5.0, help="per lookup, seconds")
    serve = commands.add_parser(
        "serve", help="run the DNS stub: point any client's resolver at it (until SIGTERM)"
    )
    serve.add_argument("--config", metavar="FILE", help="TOML config file (flags override it)")
    serve.add_argument(
        "--admin", metavar="ADDR", help="admin HTTP listen address (default 127.0.0.1:8181)"
    )
    serve.add_argument(
        "--listen",
        action="append",
        help="HOST:PORT, [V6]:PORT, :PORT or localhost:PORT (repeatable; default 127.0.0.1:5353)",
    )
    serve.add_argument(
        "--upstream", action="append", help="as -n for resolve (default: /etc/resolv.conf)"
    )
    serve.add_argument("--allow", action="append", help="client networks (default: loopback)")
    serve.add_argument("--watch", action="append", help="a name kept fresh (repeatable)")
    serve.add_argument("--min-ttl", type=float, help="the TTL floor in seconds (default 5)")
    serve.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop", "trio"],
        default="auto",
        help="event loop (auto: uvloop when installed, else asyncio)",
    )
    check_config = commands.add_parser(
        "check-config", help="validate a config file: exit 0, or 2 with the error"
    )
    check_config.add_argument("file", metavar="FILE")
    demo = commands.add_parser(
        "demo", help="watch a sample service through a rolling deploy and a DNS outage"
    )
    demo.add_argument("--forever", action="store_true", help="repeat until Ctrl-C")
    demo.add_argument("--step", type=float, default=2.0, help="seconds between zone changes")
    return parser


def _run_serve(args: argparse.Namespace, out: TextIO) -> int:
    from .server.app import check_upstreams_are_not_the_stub, serve
    from .server.config import Config, ConfigError, load_config

    def overrides(config: Config) -> Config:
        return config.with_overrides(
            listen=args.listen,
            admin=args.admin,
            upstreams=args.upstream,
            allow=args.allow,
            watch=args.watch,
            min_ttl=args.min_ttl,
        )

    try:
        config = load_config(args.config) if args.config else Config()
        check_upstreams_are_not_the_stub(overrides(config))  # and a bad flag fails now
    except ConfigError as exc:
        print(f"srvwatch: {exc}", file=sys.stderr)
        return 2
    backend, backend_options = "asyncio", {}
    if args.loop == "trio":
        backend = "trio"
    elif args.loop in ("auto", "uvloop"):
        try:
            import uvloop  # noqa: F401
        except ImportError:
            if args.loop == "uvloop":
                raise ValueError("--loop uvloop: uvloop is not installed") from None
        else:
            backend_options = {"use_uvloop": True}
    try:
        return anyio.run(
            serve, config, overrides, out, backend=backend, backend_options=backend_options
        )
    except OSError as exc:  # a listen port taken, an address not on this host
        print(f"srvwatch: cannot start: {exc}", file=sys.stderr)
        return 1


def _check_config(path: str, out: TextIO) -> int:
    """Exit 0 with a one-line summary, or 2 with the error that names file, key and value."""
    from .server.config import ConfigError, load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"srvwatch: {exc}", file=sys.stderr)
        return 2
    print(config.summary(), file=out)
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    stream = out if out is not None else sys.stdout
    if args.command == "check-config":
        return _check_config(args.file, stream)
    try:
        if args.command == "demo":
            if args.step <= 0:
                raise ValueError(f"--step must be > 0, got {args.step}")
            return anyio.run(_demo, stream, args.forever, args.step)
        if args.command == "watch":
            return anyio.run(_watch, args, stream)
        if args.command == "serve":
            return _run_serve(args, stream)
        return anyio.run(_resolve, args, stream)
    except (ResolveError, ValueError) as exc:
        print(f"srvwatch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        if not _broken_pipe(exc):
            raise
        # The reader left (`srvwatch watch ... | head`): end quietly, as a killed
        # SIGPIPE would, and keep the interpreter's last flush off the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141


if __name__ == "__main__":
    sys.exit(main())
