"""The floor of a DNS cache in Python: the least a stub on an asyncio event loop can do.

A peer of the stub benchmark (``bench_stub.py``), run as its own process::

    python -m benchmarks._stub_floor --listen 127.0.0.1:PORT --upstream 127.0.0.1:KNOTPORT \
        --loop uvloop|asyncio --mode protocol|reader

A cache hit is one dict lookup keyed on the query bytes after the ID, the stored
response with the client's ID put in front, and one ``sendto``: no parsing, no
TTL patching, no expiry, no EDNS or truncation handling, no accounting. A miss
is forwarded to the upstream once and its response is kept forever (identical
queries arriving while it is outstanding are forwarded again: no coalescing).
It is not a resolver anyone should run; it says how fast Python can answer
from a cache at all, so that the srvwatch stub's figure can be read against it.

Two ways to receive:

- ``protocol``: the event loop's datagram endpoint, ``datagram_received`` called
  once per datagram (the issue's reference measurement);
- ``reader``: a non-blocking socket and one reader callback
  (``loop.add_reader``) that drains up to 64 datagrams per wake-up with
  ``recvfrom``/``sendto``, no transport object in between.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable
from typing import cast

Address = tuple[str, int]
BATCH = 64  # datagrams per wake-up in reader mode


class Upstream(asyncio.DatagramProtocol):
    """One UDP socket to the upstream; replies are matched on their 16-bit ID."""

    def __init__(self, cache: dict[bytes, bytes]) -> None:
        self.cache = cache
        self.transport: asyncio.DatagramTransport | None = None
        self.reply: Callable[[bytes, Address], object] | None = None
        self.pending: dict[bytes, tuple[bytes, bytes, Address]] = {}
        self.next_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def forward(self, query: bytes, client: Address) -> None:
        self.next_id = (self.next_id + 1) & 0xFFFF
        upstream_id = self.next_id.to_bytes(2, "big")
        self.pending[upstream_id] = (query[:2], query[2:], client)
        assert self.transport is not None
        self.transport.sendto(upstream_id + query[2:])

    def datagram_received(self, data: bytes, addr: Address) -> None:
        entry = self.pending.pop(data[:2], None)
        if entry is None:
            return
        client_id, key, client = entry
        self.cache[key] = data
        assert self.reply is not None
        self.reply(client_id + data[2:], client)


class Stub(asyncio.DatagramProtocol):
    def __init__(self, cache: dict[bytes, bytes], upstream: Upstream) -> None:
        self.cache = cache
        self.upstream = upstream
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: Address) -> None:
        cached = self.cache.get(data[2:])
        if cached is not None:
            self.transport.sendto(data[:2] + cached[2:], addr)  # type: ignore[union-attr]
        elif len(data) > 12:
            self.upstream.forward(data, addr)


def _address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _reader(
    loop: asyncio.AbstractEventLoop, listen: Address, cache: dict[bytes, bytes], up: Upstream
) -> Callable[[], None]:
    """The ``reader`` mode: one reader callback draining a batch per wake-up. Returns a closer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(listen)
    recvfrom, sendto, lookup = sock.recvfrom, sock.sendto, cache.get

    def drain() -> None:
        for _ in range(BATCH):
            try:
                data, addr = recvfrom(65535)
            except BlockingIOError:
                return
            cached = lookup(data[2:])
            if cached is not None:
                try:  # noqa: SIM105 - a with-block costs more than the lookup on this path
                    sendto(data[:2] + cached[2:], addr)
                except OSError:
                    pass
            elif len(data) > 12:
                up.forward(data, addr)

    def reply(packet: bytes, addr: Address) -> None:
        with contextlib.suppress(OSError):
            sendto(packet, addr)

    up.reply = reply
    loop.add_reader(sock.fileno(), drain)

    def close() -> None:
        loop.remove_reader(sock.fileno())
        sock.close()

    return close


async def serve(listen: Address, upstream: Address, mode: str) -> None:
    loop = asyncio.get_running_loop()
    cache: dict[bytes, bytes] = {}
    up_transport, up = await loop.create_datagram_endpoint(
        lambda: Upstream(cache), remote_addr=upstream
    )
    if mode == "reader":
        close = _reader(loop, listen, cache, up)
    else:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: Stub(cache, up), local_addr=listen
        )
        up.reply = transport.sendto
        close = transport.close
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"floor stub ({mode}) on {listen[0]}:{listen[1]} -> {upstream[0]}:{upstream[1]}")
    try:
        await stop.wait()
    finally:
        close()
        up_transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, type=_address)
    parser.add_argument("--upstream", required=True, type=_address)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--mode", choices=("protocol", "reader"), default="protocol")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args.listen, args.upstream, args.mode))
    else:
        asyncio.run(serve(args.listen, args.upstream, args.mode))


if __name__ == "__main__":
    main()
