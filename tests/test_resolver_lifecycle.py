"""Bad input gets a clear error naming it; every socket and task the resolver opens is closed."""

from __future__ import annotations

import asyncio
import gc
import os

import pytest

import srvwatch
from srvwatch.testing import ZoneServer
from srvwatch.transport import Nameserver, parse_nameserver

pytestmark = pytest.mark.anyio

ZONE = """\
$TTL 30
@               SOA  ns hostmaster 1 3600 600 86400 5
@               NS   ns
_http._tcp.api  SRV  10 60 8080 a.api
a.api           A    10.0.0.1
"""


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def running_tasks(backend: str) -> int:
    if backend == "trio":
        import trio

        return int(trio.lowlevel.current_statistics().tasks_living)
    import asyncio

    return len(asyncio.all_tasks())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", Nameserver("127.0.0.1", 53)),
        ("127.0.0.1:5300", Nameserver("127.0.0.1", 5300)),
        ("[::1]:5300", Nameserver("::1", 5300)),
        ("[::1]", Nameserver("::1", 53)),
        ("::1", Nameserver("::1", 53)),
        (" 10.0.0.1:53 ", Nameserver("10.0.0.1", 53)),
    ],
)
def test_nameserver_forms(text: str, expected: Nameserver) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3",
        "dns.example.com",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:x",
        "[::1",
        "[127.0.0.1]:53",
        "[::1]x",
        "127.0.0.1:",
        "",
        "::1:53:",
    ],
)
def test_bad_nameserver_is_a_value_error_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="nameserver") as info:
        srvwatch.Resolver([text])
    assert repr(text) in str(info.value)


def test_nameservers_must_be_a_list() -> None:
    with pytest.raises(ValueError, match="list"):
        srvwatch.Resolver("127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        srvwatch.Resolver([])


@pytest.mark.parametrize(
    "name",
    ["", "a..b", "." * 2, "x" * 64 + ".test", ".".join(["abcdefghi"] * 26), " a.test", "a\\"],
)
async def test_bad_names_are_value_errors_naming_the_input(name: str) -> None:
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address]) as r:
        for call in (r.resolve_srv, r.resolve_addresses, r.resolve):
            with pytest.raises(ValueError, match="not a valid DNS name") as info:
                await call(name)
            assert repr(name) in str(info.value)
        assert server.query_count() == 0
        # Nothing lost: the resolver still works after bad input.
        assert len(await r.resolve_srv("_http._tcp.api.svc.test")) == 1


async def test_bad_record_type() -> None:
    async with srvwatch.Resolver(["127.0.0.1:1"]) as r:
        for rdtype in ("BOGUS", 0, 70000, True):
            with pytest.raises(ValueError, match="record type"):
                await r.resolve("a.test", rdtype)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_ttl", 0),
        ("min_ttl", -1),
        ("max_ttl", 1.0),
        ("jitter", 1.0),
        ("jitter", -0.1),
        ("timeout", float("nan")),
        ("cache_size", 0),
        ("lifetime", "5"),
    ],
)
def test_bad_policy_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        srvwatch.Policy(**{field: value})  # type: ignore[arg-type]


def test_resolver_requires_async_with() -> None:
    import anyio

    async def use() -> None:
        r = srvwatch.Resolver(["127.0.0.1:1"])
        try:
            await r.resolve_srv("a.test")
        finally:
            await r.aclose()

    with pytest.raises(RuntimeError, match="async with"):
        anyio.run(use)


async def test_thousand_resolvers_leave_nothing_behind(anyio_backend: tuple[str, object]) -> None:
    backend = anyio_backend[0]
    async with ZoneServer(ZONE) as server:
        # Warm up anything lazily created once per process (loop internals, imports).
        async with srvwatch.Resolver([server.address]) as r:
            await r.resolve_srv("_http._tcp.api.svc.test")
        gc.collect()
        fds, tasks = open_fds(), running_tasks(backend)
        opened = closed = 0
        for _ in range(1000):
            async with srvwatch.Resolver([server.address]) as r:
                eps = await r.resolve_srv("_http._tcp.api.svc.test")
                assert len(eps) == 1
            stats = r.stats()
            assert stats["sockets_opened"] == stats["sockets_closed"]
            assert stats["flights_in_progress"] == 0
            opened += stats["sockets_opened"]
            closed += stats["sockets_closed"]
        gc.collect()
        assert opened == closed >= 1000
        assert open_fds() == fds
        assert running_tasks(backend) == tasks
        assert server.query_count() == 1001


def test_a_resolver_belongs_to_the_event_loop_that_entered_it() -> None:
    """Entered on asyncio, used from trio (or another asyncio loop): a clear error, no warning."""
    import anyio.to_thread
    import trio

    async def use(resolver: srvwatch.Resolver) -> None:
        with pytest.raises(RuntimeError, match="belongs to the event loop that entered it"):
            await resolver.resolve_srv("_x._tcp.svc.test.")
        with pytest.raises(RuntimeError, match="belongs to the event loop"):
            await resolver.resolve("a.svc.test.", "A")

    async def main() -> None:
        async with srvwatch.Resolver(["127.0.0.1:1"]) as resolver:
            await anyio.to_thread.run_sync(trio.run, use, resolver)
            await anyio.to_thread.run_sync(asyncio.run, use(resolver))  # another asyncio loop

    asyncio.run(main())
