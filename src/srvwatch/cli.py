"""Command line: ``srvwatch resolve`` for one lookup, ``srvwatch demo`` to see it work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

import anyio

from .endpoints import EndpointSet
from .errors import ResolveError
from .policy import Policy
from .resolver import Resolver

__all__ = ["main"]

DEMO_ZONE = """\
$TTL 30
@                 SOA  ns hostmaster 1 3600 600 86400 5
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


async def _demo(out: TextIO) -> int:
    from .testing import ZoneServer

    async with ZoneServer(DEMO_ZONE, origin=DEMO_ORIGIN) as server:
        print(f"ZoneServer for {DEMO_ORIGIN} on {server.address}", file=out)
        async with Resolver([server.address]) as resolver:
            endpoints = await resolver.resolve_srv(DEMO_SERVICE)
            print_endpoints(endpoints, out)
            again = await resolver.resolve_srv(DEMO_SERVICE)
            assert again is endpoints
            stats = resolver.stats()
            print(
                f"queries sent: {stats['queries']}, cache hits: {stats['hits']}, "
                f"sockets opened/closed: {stats['sockets_opened']}/{stats['sockets_closed']}",
                file=out,
            )
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
    resolve.add_argument("--timeout", type=float, default=1.0, help="per attempt, seconds")
    resolve.add_argument("--lifetime", type=float, default=5.0, help="per lookup, seconds")
    commands.add_parser("demo", help="resolve a sample zone served by an embedded DNS server")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    stream = out if out is not None else sys.stdout
    try:
        if args.command == "demo":
            return anyio.run(_demo, stream)
        return anyio.run(_resolve, args, stream)
    except (ResolveError, ValueError) as exc:
        print(f"srvwatch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
