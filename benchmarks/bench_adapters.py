"""aiohttp and httpx with the srvwatch adapters against their default resolvers, side by side.

Keep-alive is off, so every request opens a new connection and resolves the
host. DNS queries are counted at the server: a Knot DNS on 127.0.0.153:53,
the only nameserver in each client's ``/etc/resolv.conf``. The default
resolvers read that file (glibc's ``getaddrinfo`` for httpx, c-ares for
aiohttp's default ``AsyncResolver``), and glibc cannot use a port other
than 53; so each client runs in a private mount namespace (``unshare -m``)
with a ``resolv.conf`` bound over the real one, which the rest of the
machine never sees. Needs root (for ``unshare`` and port 53).

Per client, in rounds with the order rotated (the machine's noise falls on
every peer alike), each peer a fresh process:

- ``default``: the client as shipped, URL ``http://web.bench.test:PORT/``;
- ``srvwatch A``: the adapter, same URL (A/AAAA through srvwatch);
- ``srvwatch SRV``: the adapter with ``services={"web.internal": SRV}``,
  URL ``http://web.internal/``: the SRV record names three addresses of the
  same server, picked by weight per connection.

The HTTP server (aiohttp.web on uvloop, one process, listening on three
loopback addresses) runs in its own process. Run::

    sudo python -m benchmarks.bench_adapters                  # 5 rounds x 5 s per peer
    sudo python -m benchmarks.bench_adapters --seconds 2 --rounds 1   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DNS_HOST, DNS_PORT = "127.0.0.153", 53
ORIGIN = "bench.test."
HOST = "web.bench.test"
SRV = "_http._tcp.web.bench.test"
SERVICE_HOST = "web.internal"
ADDRESSES = ("127.0.0.81", "127.0.0.82", "127.0.0.83")
PEERS = ("default", "srvwatch A", "srvwatch SRV")
CLIENTS = ("aiohttp", "httpx")


# -- the HTTP server process ----------------------------------------------------------


def serve(port: int) -> None:
    """aiohttp.web on uvloop: a tiny 200 on every address; prints the port when listening."""
    import uvloop
    from aiohttp import web

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for address in ADDRESSES:
            await web.TCPSite(runner, address, port, backlog=1024).start()
        print(port, flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


# -- one client process ---------------------------------------------------------------


async def measure(
    get: Callable[[], Awaitable[None]], seconds: float, workers: int
) -> dict[str, Any]:
    """Requests from ``workers`` tasks for ``seconds`` after a 0.5 s warm-up; latencies in ms."""
    latencies: list[float] = []
    errors = done = 0
    recording = False
    stop_at = 0.0

    async def worker() -> None:
        nonlocal errors, done
        while True:
            start = time.perf_counter()
            if recording and start >= stop_at:
                return
            try:
                await get()
            except Exception:
                errors += 1
                continue
            done += 1
            if recording:
                latencies.append((time.perf_counter() - start) * 1000)

    async def clock() -> None:
        nonlocal recording, stop_at
        await asyncio.sleep(0.5)
        stop_at = time.perf_counter() + seconds
        recording = True

    started = time.perf_counter()
    await asyncio.gather(clock(), *(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - started - 0.5
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99)],
        "errors": errors,
        "all_requests": done,  # warm-up included: what the DNS queries are counted against
    }


async def run_client(client: str, peer: str, port: int, seconds: float, workers: int) -> None:
    import srvwatch

    url = f"http://{SERVICE_HOST}/" if peer == "srvwatch SRV" else f"http://{HOST}:{port}/"
    services = {SERVICE_HOST: SRV} if peer == "srvwatch SRV" else None
    async with srvwatch.Resolver() as r:  # /etc/resolv.conf: the namespace's, Knot
        if client == "aiohttp":
            import aiohttp

            from srvwatch.contrib.aiohttp import Resolver

            if peer == "default":
                connector = aiohttp.TCPConnector(force_close=True, limit=0)
            else:
                connector = aiohttp.TCPConnector(
                    resolver=Resolver(r, services), use_dns_cache=False, force_close=True, limit=0
                )
            async with aiohttp.ClientSession(connector=connector) as session:

                async def get() -> None:
                    async with session.get(url) as response:
                        await response.read()
                        response.raise_for_status()

                result = await measure(get, seconds, workers)
        else:
            import httpx

            from srvwatch.contrib.httpx import AsyncTransport

            limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
            if peer == "default":
                http = httpx.AsyncClient(limits=limits)
            else:
                transport = AsyncTransport(
                    r, services, max_connections=None, max_keepalive_connections=0
                )
                http = httpx.AsyncClient(transport=transport)
            async with http:

                async def get() -> None:
                    response = await http.get(url)
                    response.raise_for_status()

                result = await measure(get, seconds, workers)
        result["srvwatch_queries"] = r.stats()["queries"]
    print(json.dumps(result), flush=True)


# -- the driver -----------------------------------------------------------------------


def zone_text(ttl: int, port: int) -> str:
    lines = [
        f"$ORIGIN {ORIGIN}",
        f"$TTL {ttl}",
        f"@ {ttl} IN SOA ns.{ORIGIN} hostmaster.{ORIGIN} 1 3600 600 86400 {ttl}",
        f"@ 30 IN NS ns.{ORIGIN}",
        f"ns 30 IN A {DNS_HOST}",
        f"{HOST}. {ttl} IN A {ADDRESSES[0]}",
    ]
    for i, address in enumerate(ADDRESSES):
        lines.append(f"{SRV}. {ttl} IN SRV 10 {(i + 1) * 10} {port} s{i}.{ORIGIN}")
        lines.append(f"s{i}.{ORIGIN} {ttl} IN A {address}")
    return "\n".join(lines) + "\n"


def client_process(resolv: Path, args: list[str]) -> dict[str, Any]:
    """One client in a private mount namespace whose /etc/resolv.conf names only Knot."""
    inner = f"mount --bind {resolv} /etc/resolv.conf && exec {sys.executable} -m {__spec__.name} "
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}:{ROOT}")
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", inner + " ".join(f"'{a}'" for a in args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"client {args} failed:\n{result.stderr}")
    data: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs per peer (median reported)")
    parser.add_argument("--workers", type=int, default=16, help="concurrent requests")
    parser.add_argument("--ttl", type=int, default=5, help="zone TTL (CoreDNS's default: 5)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port)
        return
    if args.client:
        asyncio.run(run_client(args.client, args.peer, args.port, args.seconds, args.workers))
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        sys.exit("bench_adapters needs root and unshare(1): see the module docstring")
    sys.path.insert(0, str(ROOT))
    from tests.dns_servers import KnotServer, free_port

    port = free_port(ADDRESSES[0])
    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as tmp:
        work = Path(tmp)
        resolv = work / "resolv.conf"
        resolv.write_text(f"nameserver {DNS_HOST}\noptions timeout:1 attempts:2\n")
        knot = KnotServer(
            host=DNS_HOST,
            port=DNS_PORT,
            zone=ORIGIN,
            workdir=work / "knot",
            zones={ORIGIN: zone_text(args.ttl, port)},
        )
        server = subprocess.Popen(
            [sys.executable, "-m", __spec__.name, "--serve", "--port", str(port)],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}:{ROOT}"),
        )
        try:
            assert server.stdout is not None
            if not server.stdout.readline().strip():
                raise RuntimeError("the HTTP server did not start")
            knot.start()
            results = drive(knot, resolv, port, args)
        finally:
            server.kill()
            server.wait()
            knot.stop()
    report(results, args)


def drive(knot: Any, resolv: Path, port: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for round_ in range(args.rounds):
        for client in CLIENTS:
            order = PEERS[round_ % len(PEERS) :] + PEERS[: round_ % len(PEERS)]
            for peer in order:
                before = knot.query_count()
                data = client_process(
                    resolv,
                    [
                        "--client", client, "--peer", peer, "--port", str(port),
                        "--seconds", str(args.seconds), "--workers", str(args.workers),
                    ],
                )  # fmt: skip
                data.update(client=client, peer=peer, round=round_)
                data["dns_queries"] = knot.query_count() - before
                print(
                    f"round {round_ + 1} {client:8} {peer:13} {data['rps']:8.0f} req/s  "
                    f"p99 {data['p99_ms']:6.2f} ms  {data['dns_queries']:6} DNS queries  "
                    f"{data['errors']} errors",
                    file=sys.stderr,
                    flush=True,
                )
                results.append(data)
    return results


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(
        f"\n{args.rounds} rounds x {args.seconds:g} s per peer, {args.workers} concurrent "
        f"requests, keep-alive off, zone TTL {args.ttl} s; medians over the rounds\n"
    )
    print(
        "| client | resolver | requests/s | (min-max) | p99 (ms) | DNS queries per 1,000 requests "
        "| requests/s vs default | p99 vs default |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for client in CLIENTS:
        rows = {}
        for peer in PEERS:
            runs = [r for r in results if r["client"] == client and r["peer"] == peer]
            rows[peer] = {
                "rps": statistics.median(r["rps"] for r in runs),
                "range": f"{min(r['rps'] for r in runs):,.0f}-{max(r['rps'] for r in runs):,.0f}",
                "p99": statistics.median(r["p99_ms"] for r in runs),
                "qpk": statistics.median(1000 * r["dns_queries"] / r["all_requests"] for r in runs),
                "errors": sum(r["errors"] for r in runs),
            }
        base = rows["default"]
        for peer, row in rows.items():
            print(
                f"| {client} | {peer} | {row['rps']:,.0f} | {row['range']} | {row['p99']:.2f} "
                f"| {row['qpk']:.2f} "
                f"| {row['rps'] / base['rps']:.2f}x | {row['p99'] / base['p99']:.2f}x |"
            )
    errors = sum(r["errors"] for r in results)
    print(f"\nfailed requests: {errors}")


if __name__ == "__main__":
    main()
