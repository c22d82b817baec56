"""A UDP proxy in front of a DNS server that timestamps every query it forwards.

Knot's query counter can only be sampled (``knotc stats`` costs about 15 ms a
call here), which blurs 100 ms buckets; this proxy records the arrival time of
each query instead, so the fleet-jitter benchmark can bucket queries exactly.
It runs as its own process so that the benchmark's event loop never delays a
timestamp. Times are ``time.monotonic()`` (CLOCK_MONOTONIC, shared by every
process on Linux), the clock the benchmark's anyio/asyncio loop also uses.

Usage::

    python benchmarks/watch_proxy.py UPSTREAM_HOST:PORT OUT_FILE

It prints the port it listens on (127.0.0.1, UDP) and forwards until its
standard input is closed; then it writes the arrival times to OUT_FILE (raw
native doubles, ``array('d')``) and exits. Each client address gets its own
upstream socket, so responses go back to the right client without rewriting
message IDs.
"""

from __future__ import annotations

import array
import selectors
import socket
import sys
import time

IDLE_CLOSE = 10.0  # seconds an upstream socket may sit unused before it is closed
MAX_DATAGRAM = 65535


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} UPSTREAM_HOST:PORT OUT_FILE", file=sys.stderr)
        return 2
    host, _, port_text = argv[1].rpartition(":")
    upstream = (host, int(port_text))
    out_path = argv[2]

    sel = selectors.DefaultSelector()
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    front.bind(("127.0.0.1", 0))
    front.setblocking(False)
    sel.register(front, selectors.EVENT_READ, None)
    sel.register(sys.stdin.buffer, selectors.EVENT_READ, "stdin")

    times = array.array("d")
    backs: dict[tuple[str, int], socket.socket] = {}
    last_used: dict[tuple[str, int], float] = {}
    next_sweep = time.monotonic() + IDLE_CLOSE

    print(front.getsockname()[1], flush=True)
    running = True
    while running:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "stdin":
                if not sys.stdin.buffer.read1(4096):
                    running = False
            elif key.data is None:
                while True:
                    try:
                        data, client = front.recvfrom(MAX_DATAGRAM)
                    except BlockingIOError:
                        break
                    now = time.monotonic()
                    times.append(now)
                    back = backs.get(client)
                    if back is None:
                        back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        back.setblocking(False)
                        back.connect(upstream)
                        backs[client] = back
                        sel.register(back, selectors.EVENT_READ, client)
                    last_used[client] = now
                    try:
                        back.send(data)
                    except OSError as exc:
                        print(f"proxy: forwarding failed: {exc}", file=sys.stderr)
            else:
                client = key.data
                back = backs[client]
                while True:
                    try:
                        data = back.recv(MAX_DATAGRAM)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    try:
                        front.sendto(data, client)
                    except OSError as exc:
                        print(f"proxy: reply failed: {exc}", file=sys.stderr)
        now = time.monotonic()
        if now >= next_sweep:
            next_sweep = now + IDLE_CLOSE
            for client in [c for c, t in last_used.items() if now - t > IDLE_CLOSE]:
                back = backs.pop(client)
                del last_used[client]
                sel.unregister(back)
                back.close()

    for back in backs.values():
        sel.unregister(back)
        back.close()
    sel.close()
    front.close()
    with open(out_path, "wb") as out:
        times.tofile(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
