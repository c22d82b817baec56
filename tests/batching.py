"""What the batched-refresh tests share: a zone of SRV names with glue, a fast policy, and
watches opened and carried (settled in batches) before a test begins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio

import srvwatch

FLOOR = 0.2
JITTER = 0.2


def srv_zone(names: int, *extra: str) -> str:
    """``names`` SRV names ``_s<i>._tcp`` with their targets (glue) in the zone, relative."""
    lines = ["$TTL 1", "@ SOA ns hostmaster 1 3600 600 86400 1", "@ NS ns", "ns A 127.0.0.1"]
    lines += extra
    for i in range(names):
        lines.append(f"_s{i}._tcp SRV 10 10 {8000 + i} t{i}")
        lines.append(f"t{i} A 127.0.1.{i}")
    return "\n".join(lines) + "\n"


def fast_policy() -> srvwatch.Policy:
    return srvwatch.Policy(
        min_ttl=FLOOR, max_ttl=FLOOR, jitter=JITTER, negative_min_ttl=FLOOR,
        timeout=0.5, lifetime=1.0, backoff_base=0.1, backoff_max=0.4,
    )  # fmt: skip


def srv_name(origin: str, i: int) -> str:
    return f"_s{i}._tcp.{origin}"


async def first(updates: srvwatch.Updates, limit: float = 3.0) -> srvwatch.Update:
    with anyio.fail_after(limit):
        return await updates.__anext__()


@asynccontextmanager
async def carried_watches(
    resolver: srvwatch.Resolver, origin: str, names: int
) -> AsyncIterator[list[srvwatch.Updates]]:
    """Watch ``names`` SRV names, each past its first update and its first (spread) refresh,
    so its refreshes are settled in batches."""
    async with AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(resolver.watch(srv_name(origin, i)))
            for i in range(names)
        ]
        for stream in streams:
            await first(stream)
        await anyio.sleep(0.5)
        assert resolver.stats()["batched_refreshes"] > 0
        yield streams
