"""The sidecar part of ``srvwatch demo``: the stub and the admin server, shown working.

Starts a :class:`~srvwatch.server.app.Sidecar` on free loopback ports in front
of the demo's zone server, prints where they listen, answers one query
through the stub as ``dig`` would show it, and fetches ``/ready`` and
``/metrics`` with a plain HTTP/1.1 client (h11), so a user sees every face
of the sidecar before pointing anything at it.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TextIO

import anyio
import dns.message
import dns.rcode
import h11

from ..address import ListenAddress
from ..policy import Policy
from .app import Sidecar
from .config import AdminConfig, Config, StubConfig, WatchConfig

__all__ = ["sidecar_demo"]

_LOOPBACK = "127.0.0.1"
_SHOWN_METRICS = (
    "srvwatch_upstream_queries_total",
    "srvwatch_cache_hits_total",
    "srvwatch_stub_requests_total",
    "srvwatch_upstream_up",
)


@asynccontextmanager
async def sidecar_demo(
    upstream: str, service: str, host: str, policy: Policy, out: TextIO
) -> AsyncIterator[Sidecar]:
    """Run the sidecar for the demo's lifetime, after showing the stub and the admin server."""
    config = Config(
        upstreams=(upstream,),
        policy=policy,
        stub=StubConfig(listen=(ListenAddress(_LOOPBACK, 0),)),
        admin=AdminConfig(listen=ListenAddress(_LOOPBACK, 0), lame_duck=0.0),
        watch=(WatchConfig(service),),
    )
    async with Sidecar(config, out=out) as sidecar:
        (stub,) = sidecar.stub_addresses()
        admin = sidecar.admin_address()
        with anyio.fail_after(10):
            while (await http_get(admin, "/ready"))[0] != 200:  # noqa: ASYNC110 - over HTTP
                await anyio.sleep(0.1)
        print(f"\n$ dig @{stub.host} -p {stub.port} {host} A", file=out)
        print(await dig(stub, host), file=out)
        status, body = await http_get(admin, "/ready")
        print(f"$ curl http://{admin}/ready\n{status} {body.strip()}", file=out)
        status, body = await http_get(admin, "/metrics")
        shown = [line for line in body.splitlines() if line.startswith(_SHOWN_METRICS)]
        print(f"$ curl http://{admin}/metrics  ({status}; a few of its lines)", file=out)
        print("\n".join(shown) + "\n", file=out, flush=True)
        yield sidecar


async def dig(server: ListenAddress, name: str) -> str:
    """One UDP query, shown as dig's sections show it."""
    query = dns.message.make_query(name, "A")
    query.id = random.randrange(1 << 16)
    async with await anyio.create_connected_udp_socket(server.host, server.port) as sock:
        await sock.send(query.to_wire())
        with anyio.fail_after(5):
            reply = dns.message.from_wire(await sock.receive())
    lines = [f";; status: {dns.rcode.to_text(reply.rcode())}, id: {reply.id}"]
    lines += [";; ANSWER SECTION:"] + [rrset.to_text() for rrset in reply.answer]
    return "\n".join(lines)


async def http_get(address: ListenAddress, path: str) -> tuple[int, str]:
    """GET ``path`` with HTTP/1.1 (h11), the connection closed after one response."""
    client = h11.Connection(h11.CLIENT)
    host = f"{address.host}:{address.port}"
    request = h11.Request(
        method="GET", target=path, headers=[("Host", host), ("Connection", "close")]
    )
    async with await anyio.connect_tcp(address.host, address.port) as stream:
        await stream.send(client.send(request) + client.send(h11.EndOfMessage()))
        status, body = 0, b""
        with anyio.fail_after(5):
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    try:
                        client.receive_data(await stream.receive())
                    except anyio.EndOfStream:
                        client.receive_data(b"")
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    return status, body.decode("utf-8", "replace")
