"""The admin HTTP server over real HTTP (httpx, curl, raw sockets), with a real resolver behind.

The state it serves is :class:`LiveState`: a Resolver watching names on a real
Knot (or, where updates must come faster than knotc can make them, on an
in-process ZoneServer), the way the sidecar's application does.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import srvwatch
from srvwatch.address import ListenAddress
from srvwatch.endpoints import Update
from srvwatch.listen import DnsListener
from srvwatch.prometheus import ResolverCollector, SidecarInfo
from srvwatch.server.admin import AdminServer, AdminState
from srvwatch.server.outputs import update_document
from srvwatch.server.stub import Stub
from srvwatch.testing import ZoneServer
from tests import zones
from tests.dns_servers import KnotFactory, KnotServer

pytestmark = pytest.mark.anyio

FAST = srvwatch.Policy(min_ttl=0.5, max_ttl=1.0, timeout=0.3, backoff_base=0.2, backoff_max=0.5)
"""Refresh about every second, and retry a dead upstream within half a second."""

DESIGN_METRICS = [
    "srvwatch_build_info",
    "srvwatch_upstream_queries_total",
    "srvwatch_upstream_up",
    "srvwatch_cache_hits_total",
    "srvwatch_coalesced_total",
    "srvwatch_stale_answers_total",
    "srvwatch_ttl_clamped_total",
    "srvwatch_stub_requests_total",
    "srvwatch_stub_responses_total",
    "srvwatch_watch_updates_total",
    "srvwatch_open_sockets",
    "srvwatch_reload_total",
    "srvwatch_reload_failed_total",
    "srvwatch_config_info",
]
"""The metric names DESIGN.md ("The sidecar") promises."""


class LiveState:
    """An AdminState over a real Resolver, as the sidecar's application keeps one."""

    def __init__(self, resolver: srvwatch.Resolver, names: list[str], rdtype: str) -> None:
        self.resolver = resolver
        self.names = names
        self.rdtype = rdtype
        self.latest: dict[str, Update | None] = dict.fromkeys(names)
        self.updates: dict[str, int] = dict.fromkeys(names, 0)
        self.closing = False

    def live(self) -> bool:
        return True

    def waiting_on(self) -> list[str]:
        lines = ["shutting down"] if self.closing else []
        if not any(upstream["answered"] for upstream in self.resolver.upstreams()):
            lines.append("upstream: no answer yet")
        pending = set(self.resolver.pending())
        lines += [
            f"watch {name}: no data yet"
            for name in self.names
            if name in pending or self.latest[name] is None
        ]
        return lines

    def endpoints(self) -> dict[str, Any]:
        return {
            name: None if update is None else update_document(update)
            for name, update in self.latest.items()
        }

    def subscribe(self, name: str) -> AbstractAsyncContextManager[AsyncIterator[Update]]:
        if name not in self.names:
            raise KeyError(name)
        return self.resolver.watch(name, self.rdtype)

    def sidecar(self) -> SidecarInfo:
        return SidecarInfo(
            reloads=3, reload_failures=1, config_digest="abc123", watch_updates=self.updates
        )


def _check_protocol(state: LiveState) -> AdminState:
    return state  # mypy proves LiveState is an AdminState


class Site:
    def __init__(self, state: LiveState, admin: AdminServer, registry: CollectorRegistry) -> None:
        self.state = state
        self.admin = admin
        self.registry = registry

    @property
    def url(self) -> str:
        return f"http://{self.admin.address}"


@asynccontextmanager
async def admin_site(
    upstream: str,
    names: list[str],
    policy: srvwatch.Policy = FAST,
    rdtype: str = "SRV",
    **admin_options: Any,
) -> AsyncIterator[Site]:
    async with srvwatch.Resolver([upstream], policy=policy) as resolver:
        state = LiveState(resolver, names, rdtype)
        registry = CollectorRegistry()
        registry.register(ResolverCollector(resolver, state.sidecar))
        admin = AdminServer(
            _check_protocol(state), registry, ListenAddress("127.0.0.1", 0), **admin_options
        )
        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(_watch_as, state, name)
            async with admin:
                yield Site(state, admin, registry)
            tg.cancel_scope.cancel()
    balanced(admin.stats())


async def _watch_as(state: LiveState, name: str) -> None:
    async with state.resolver.watch(name, state.rdtype) as updates:
        async for update in updates:
            state.latest[name] = update
            state.updates[name] += 1


def balanced(stats: dict[str, int]) -> None:
    for opened, closed in [
        ("sockets_opened", "sockets_closed"),
        ("connections_opened", "connections_closed"),
        ("tasks_started", "tasks_finished"),
        ("sse_opened", "sse_closed"),
    ]:
        assert stats[opened] == stats[closed], (opened, stats)
    assert stats["connections_open"] == stats["sse_pending"] == stats["handler_errors"] == 0, stats


async def wait_for(condition: Any, within: float = 10.0) -> None:
    """Poll: the conditions are counters of the server under test, which has no events for them."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.05)


async def sse_events(
    lines: AsyncGenerator[str, None],
) -> AsyncGenerator[dict[str, Any], None]:
    async with aclosing(lines):
        async for line in lines:
            if line.startswith("data: "):
                yield json.loads(line[len("data: ") :])


@pytest.fixture
def knot(knot_factory: KnotFactory) -> Iterator[KnotServer]:
    server = knot_factory()
    yield server
    server.stop()


# -- the endpoints --------------------------------------------------------------------------


async def test_sse_stream_receives_a_change_made_on_knot(knot: KnotServer) -> None:
    async with (
        admin_site(knot.address(), [zones.HTTP_SRV]) as site,
        httpx.AsyncClient(base_url=site.url, timeout=10) as client,
        client.stream("GET", "/watch", params={"name": zones.HTTP_SRV}) as response,
        aclosing(sse_events(response.aiter_lines())) as events,  # type: ignore[arg-type]
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        with anyio.fail_after(10):
            first = await events.__anext__()
        assert first["name"] == zones.HTTP_SRV
        assert {ep["target"] for ep in first["endpoints"]} == set(zones.HTTP_TARGETS)
        assert site.admin.stats()["sse_opened"] == 1

        await anyio.to_thread.run_sync(
            knot.set_records, zones.HTTP_SRV, "SRV", 30, ["10 60 9090 a.api.svc.test."]
        )
        with anyio.fail_after(10):
            second = await events.__anext__()
        assert second["version"] > first["version"]
        assert [(ep["target"], ep["port"]) for ep in second["endpoints"]] == [
            ("a.api.svc.test.", 9090)
        ]
        assert second["endpoints"][0]["addresses"] == ["127.0.0.11", "2001:db8::11"]
        await site.admin.aclose()  # streams end with a last chunk: a clean end, not a cut
        assert [event async for event in events] == []
        assert site.admin.stats()["sse_closed"] == 1


async def test_ready_lists_what_it_waits_on_until_the_upstream_answers(knot: KnotServer) -> None:
    knot.stop()  # the watch's upstream drops everything at first
    async with (
        admin_site(knot.address(), [zones.HTTP_SRV, zones.ONE_SRV]) as site,
        httpx.AsyncClient(base_url=site.url, timeout=5) as client,
    ):
        await anyio.sleep(0.5)  # a couple of timeouts: still no data
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.headers["content-type"].startswith("text/plain")
        assert ready.text.splitlines() == [
            "upstream: no answer yet",
            f"watch {zones.HTTP_SRV}: no data yet",
            f"watch {zones.ONE_SRV}: no data yet",
        ]
        assert (await client.get("/health")).text == "ok\n"
        for document in (await client.get("/endpoints")).json().values():
            # Failures from the start publish an empty, stale set that says why.
            assert (document["endpoints"], document["stale"]) == ([], True)
            assert "no answer" in document["error"]

        await anyio.to_thread.run_sync(knot.start)
        with anyio.fail_after(10):
            while (ready := await client.get("/ready")).status_code != 200:
                assert ready.status_code == 503
                await anyio.sleep(0.1)
        assert ready.text == "ready\n"
        documents = (await client.get("/endpoints")).json()
        assert {ep["target"] for ep in documents[zones.HTTP_SRV]["endpoints"]} == set(
            zones.HTTP_TARGETS
        )
        assert documents[zones.ONE_SRV]["endpoints"][0]["port"] == zones.ONE_PORT
        assert not documents[zones.HTTP_SRV]["stale"]

        site.state.closing = True
        ready = await client.get("/ready")
        assert (ready.status_code, ready.text) == (503, "shutting down\n")


async def test_metrics_parse_and_carry_every_name_of_the_design(knot_server: KnotServer) -> None:
    async with admin_site(knot_server.address(), [zones.HTTP_SRV]) as site:
        resolver = site.state.resolver
        stub = Stub(resolver)
        async with (
            DnsListener(stub.answer, "127.0.0.1", 0, name="stub") as listener,
            httpx.AsyncClient(base_url=site.url, timeout=5) as client,
        ):
            await wait_for(lambda: site.state.latest[zones.HTTP_SRV] is not None)
            for name in (zones.ZERO_SRV, zones.NXDOMAIN):
                result = await anyio.run_process(
                    ["kdig", "@127.0.0.1", "-p", str(listener.port), name, "SRV", "+short"]
                )
                assert result.returncode == 0
            response = await client.get("/metrics")
            stats = resolver.stats()
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        samples = {s.name: s for f in families.values() for s in f.samples}
        by_labels = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in families.values()
            for s in f.samples
        }
        missing = [name for name in DESIGN_METRICS if name not in samples]
        assert not missing, missing
        assert samples["srvwatch_build_info"].labels == {"version": srvwatch.__version__}
        assert samples["srvwatch_config_info"].labels == {"hash": "abc123"}
        assert samples["srvwatch_reload_total"].value == 3
        assert samples["srvwatch_reload_failed_total"].value == 1
        server = knot_server.address()
        assert by_labels[("srvwatch_upstream_up", (("server", server),))] == 1
        assert by_labels[("srvwatch_stub_requests_total", (("proto", "udp"),))] == 2
        assert by_labels[("srvwatch_stub_responses_total", (("rcode", "NOERROR"),))] == 1
        assert by_labels[("srvwatch_stub_responses_total", (("rcode", "NXDOMAIN"),))] == 1
        assert by_labels[("srvwatch_ttl_clamped_total", (("bound", "min"),))] >= 2  # TTL 0 SRV
        watch_updates = ("srvwatch_watch_updates_total", (("name", zones.HTTP_SRV),))
        assert by_labels[watch_updates] == site.state.updates[zones.HTTP_SRV] >= 1
        # Read at scrape time from the resolver's own counters: no second set to drift.
        assert samples["srvwatch_upstream_queries_total"].value == stats["queries"]
        assert samples["srvwatch_cache_hits_total"].value == stats["hits"]
        open_sockets = stats["sockets_opened"] - stats["sockets_closed"]
        assert samples["srvwatch_open_sockets"].value == open_sockets


def test_the_library_collector_has_no_sidecar_families() -> None:
    registry = CollectorRegistry()
    resolver = srvwatch.Resolver(["127.0.0.1"])
    registry.register(ResolverCollector(resolver))
    names = {m.name for m in registry.collect()}
    assert "srvwatch_upstream_queries" in names
    assert not {"srvwatch_reload", "srvwatch_reload_failed", "srvwatch_config_info"} & names
    with pytest.raises(ValueError, match=r"srvwatch\.Resolver"):
        ResolverCollector(object())  # type: ignore[arg-type]


async def test_paths_methods_and_head(knot_server: KnotServer) -> None:
    async with (
        admin_site(knot_server.address(), [zones.HTTP_SRV]) as site,
        httpx.AsyncClient(base_url=site.url, timeout=5) as client,
    ):
        missing = await client.get("/nope")
        assert missing.status_code == 404
        assert "/health" in missing.text
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            refused = await client.request(method, "/health")
            assert refused.status_code == 405, method
            assert refused.headers["allow"] == "GET, HEAD"
        unknown = await client.get("/watch", params={"name": "_x._tcp.nowhere.test."})
        assert unknown.status_code == 404
        assert zones.HTTP_SRV in unknown.text.splitlines()
        assert (await client.get("/watch")).status_code == 400
        with_body = await client.request("GET", "/health", content=b"x" * 100)
        assert with_body.status_code == 413
        for path in ("/health", "/ready", "/metrics", "/endpoints"):
            got, head = await client.get(path), await client.head(path)
            assert head.status_code == got.status_code, path
            assert head.content == b"", path
            assert head.headers["content-type"] == got.headers["content-type"], path
        # Every response above went over one kept-alive connection, but for the 413.
        stats = site.admin.stats()
        assert stats["connections_opened"] == 2, stats
        assert stats["responses_405"] == 4


async def test_curl_head_and_event_stream(knot_server: KnotServer) -> None:
    async with admin_site(knot_server.address(), [zones.HTTP_SRV]) as site:
        head = await anyio.run_process(["curl", "-sSI", f"{site.url}/health"])
        lines = head.stdout.decode().splitlines()
        assert lines[0].startswith("HTTP/1.1 200")
        assert "content-length: 3" in [line.lower() for line in lines]
        stream = await anyio.run_process(
            ["curl", "-sSN", "--max-time", "2", f"{site.url}/watch?name={zones.HTTP_SRV}"],
            check=False,
        )
        assert stream.returncode == 28  # curl's "timed out": the stream stays open
        (event,) = [line for line in stream.stdout.decode().splitlines() if line]
        document = json.loads(event.removeprefix("data: "))
        assert document["name"] == zones.HTTP_SRV
        await wait_for(lambda: site.admin.stats()["sse_closed"] == 1)


# -- hostile clients ------------------------------------------------------------------------


async def exchange(address: str, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    host, port = address.rsplit(":", 1)
    received = b""
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(data)
        with anyio.fail_after(wait):
            try:
                while True:
                    received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass
    return received


async def test_hostile_requests_get_short_errors_and_are_closed(knot_server: KnotServer) -> None:
    async with admin_site(
        knot_server.address(), [zones.HTTP_SRV], header_timeout=0.5, idle_timeout=1.0
    ) as site:
        address = site.admin.address
        big = await exchange(address, b"GET /health HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 10_000)
        assert big.startswith(b"HTTP/1.1 431 ")
        assert b"too large" in big
        for garbage, status in [
            (os.urandom(200) + b"\r\n\r\n", b"400"),
            (b"GET / FOO/1.1\r\n\r\n", b"400"),
            (b"\x16\x03\x01\x02\x00\x01", b"400"),  # a TLS hello
        ]:
            reply = await exchange(address, garbage)
            assert reply.startswith(b"HTTP/1.1 " + status + b" "), (garbage, reply)
        assert (await exchange(address, b"GET /health HTTP/1.1\r\n\r\n")).startswith(
            b"HTTP/1.1 400 "  # HTTP/1.1 without Host
        )
        chunked = b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        assert (await exchange(address, chunked)).startswith(b"HTTP/1.1 405 ")

        # Slow-loris: a byte at a time, never finishing the head.
        host, port = address.rsplit(":", 1)
        started = time.monotonic()
        reply = b""
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(b"GET /health HTTP/1.1\r\n")
            with anyio.fail_after(5):
                try:
                    while True:
                        await stream.send(b"X")
                        with anyio.move_on_after(0.1):
                            reply += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    pass
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert 0.4 < time.monotonic() - started < 2.0

        # A client that connects and says nothing is closed silently after the header
        # timeout: a new connection gets that long for its first request (idle_timeout is
        # for a kept-alive one between requests), so silent ones cannot hold the slots.
        started = time.monotonic()
        assert await exchange(address, b"") == b""
        assert 0.4 < time.monotonic() - started < 2.0

        stats = site.admin.stats()
        assert stats["connections_timed_out"] == 2
        assert stats["responses_431"] == 1
        assert stats["responses_408"] == 1
        assert stats["handler_errors"] == 0
        async with httpx.AsyncClient(base_url=site.url) as client:
            assert (await client.get("/health")).status_code == 200


async def test_connections_over_the_cap_are_closed_at_once(knot_server: KnotServer) -> None:
    async with admin_site(knot_server.address(), [zones.HTTP_SRV], max_connections=8) as site:
        host, port = site.admin.address.rsplit(":", 1)
        held = [await anyio.connect_tcp(host, int(port)) for _ in range(8)]
        for stream in held:  # each has begun a request: busy, not evictable
            await stream.send(b"GET /health HTTP/1.1\r\n")
        await wait_for(lambda: site.admin.stats()["connections_open"] == 8)
        started = time.monotonic()
        for _ in range(50):
            assert (
                await exchange(site.admin.address, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                == b""
            )
        assert time.monotonic() - started < 5
        stats = site.admin.stats()
        assert stats["connections_rejected"] == 50
        assert stats["connections_open"] == 8
        for stream in held:
            await stream.aclose()
        await wait_for(lambda: site.admin.stats()["connections_open"] == 0)
        async with httpx.AsyncClient(base_url=site.url) as client:
            assert (await client.get("/health")).status_code == 200


async def test_a_stalled_event_reader_holds_one_update_at_most() -> None:
    """Updates 20 times a second; the reader stops reading for 3 s, then reads again."""
    name = "many.svc.test."
    policy = srvwatch.Policy(min_ttl=0.05, max_ttl=0.05, jitter=0.0)

    def addresses(step: int) -> list[str]:  # 100 endpoints: about 9 kB of JSON an update
        return [f"10.{step % 250}.{i}.{step // 250 % 250}" for i in range(100)]

    async with ZoneServer() as zone:
        zone.set_records(name, "A", addresses(0), ttl=0)
        async with admin_site(
            zone.address, [name], policy=policy, rdtype="A", write_timeout=60.0
        ) as site:
            state = site.state
            await wait_for(lambda: state.latest[name] is not None)
            host, port = site.admin.address.rsplit(":", 1)
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect((host, int(port)))
            try:
                client.sendall(f"GET /watch?name={name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                pending_seen = 0
                for step in range(1, 61):  # 3 s of changes, and nobody reading
                    zone.set_records(name, "A", addresses(step), ttl=0)
                    await anyio.sleep(0.05)
                    pending_seen = max(pending_seen, site.admin.stats()["sse_pending"])
                await anyio.sleep(0.3)
                latest = state.latest[name]
                assert latest is not None
                produced = latest.version
                stats = site.admin.stats()
                assert produced > 40
                # The writer is stuck on a full socket; the newest update waits in the
                # stream's one slot, and nothing else is held: no queue of the rest.
                assert stats["sse_events"] < produced / 2, stats
                assert stats["sse_pending"] == 1 == pending_seen, stats
                client.settimeout(0.5)
                text = b""
                versions: list[int] = []
                with anyio.fail_after(10):
                    while produced not in versions:
                        text += await anyio.to_thread.run_sync(client.recv, 1 << 20)
                        events = re.findall(rb"data: (.*)\n\n", text)
                        versions = [json.loads(event)["version"] for event in events]
            finally:
                client.close()
    assert versions == sorted(set(versions))
    assert versions[-1] == produced
    assert len(versions) < produced  # versions were skipped, not queued


async def test_a_reader_that_never_reads_is_closed_after_the_write_timeout() -> None:
    name = "many.svc.test."
    policy = srvwatch.Policy(min_ttl=0.05, max_ttl=0.05, jitter=0.0)
    async with ZoneServer() as zone:
        big = [f"10.0.{i // 250}.{i % 250}" for i in range(60)]
        zone.set_records(name, "A", big, ttl=0)
        async with admin_site(
            zone.address, [name], policy=policy, rdtype="A", write_timeout=1.0
        ) as site:
            host, port = site.admin.address.rsplit(":", 1)
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect((host, int(port)))
            try:
                client.sendall(f"GET /watch?name={name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                step = 0
                with anyio.fail_after(15):
                    while site.admin.stats()["sse_closed"] == 0:
                        step += 1
                        zone.set_records(
                            name, "A", [*big[1:], f"10.9.{step // 250}.{step % 250}"], ttl=0
                        )
                        await anyio.sleep(0.05)
            finally:
                client.close()
            stats = site.admin.stats()
            assert stats["connections_open"] == 0
            assert stats["connections_timed_out"] == 1


# -- ownership ------------------------------------------------------------------------------


async def read_to_the_end(stream: anyio.abc.SocketStream) -> None:
    with anyio.fail_after(5):
        while await stream.receive():
            pass


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_aclose_leaves_no_descriptors_or_tasks(knot_server: KnotServer) -> None:
    for round in range(4):
        if round == 1:  # after a first round has made what the event loop makes once
            fds, tasks = open_fds(), len(anyio.get_running_tasks())
        async with admin_site(knot_server.address(), [zones.HTTP_SRV]) as site:
            url = site.url
            await wait_for(lambda: site.state.latest[zones.HTTP_SRV] is not None)
            host, port = site.admin.address.rsplit(":", 1)
            idle = [await anyio.connect_tcp(host, int(port)) for _ in range(5)]
            streams: list[anyio.abc.SocketStream] = []
            for _ in range(5):
                stream = await anyio.connect_tcp(host, int(port))
                await stream.send(
                    f"GET /watch?name={zones.HTTP_SRV} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                )
                received = b""
                with anyio.fail_after(5):
                    while b"data: " not in received:
                        received += await stream.receive()
                streams.append(stream)
            stats = site.admin.stats()
            assert stats["sse_opened"] == 5
            assert stats["connections_open"] == 10
            await site.admin.aclose()  # with everything open: admin_site checks the balance
            for stream in idle + streams:
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
                    await read_to_the_end(stream)
                await stream.aclose()
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as client:
                await client.get(f"{url}/health")
    await anyio.sleep(0.1)
    assert open_fds() == fds
    assert len(anyio.get_running_tasks()) == tasks


def test_bad_options_are_value_errors_naming_them() -> None:
    registry = CollectorRegistry()
    state: Any = object()
    with pytest.raises(ValueError, match="ListenAddress"):
        AdminServer(state, registry, "127.0.0.1:8181")  # type: ignore[arg-type]
    for option, value in [
        ("max_connections", 0),
        ("max_header_bytes", True),
        ("header_timeout", 0),
        ("idle_timeout", float("inf")),
        ("write_timeout", -1),
        ("keepalive_interval", "15"),
    ]:
        options: dict[str, Any] = {option: value}
        with pytest.raises(ValueError, match=option):
            AdminServer(state, registry, ListenAddress("127.0.0.1", 0), **options)


async def test_keepalive_comments_keep_a_quiet_stream_open(knot_server: KnotServer) -> None:
    async with admin_site(knot_server.address(), [zones.HTTP_SRV], keepalive_interval=0.2) as site:
        host, port = site.admin.address.rsplit(":", 1)
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(
                f"GET /watch?name={zones.HTTP_SRV} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            received = b""
            with anyio.move_on_after(1.0):
                while True:
                    received += await stream.receive()
        assert received.count(b"data: ") == 1
        assert received.count(b": keep-alive\n\n") >= 3
        assert site.admin.stats()["sse_keepalives"] >= 3


@pytest.mark.parametrize(
    ("listen", "bound", "connect"),
    [
        (ListenAddress("", 0), "0.0.0.0", "127.0.0.1"),  # ":PORT": every IPv4 interface
        (ListenAddress("localhost", 0), "127.0.0.1", "127.0.0.1"),
        (ListenAddress("::1", 0), "[::1]", "[::1]"),
    ],
)
async def test_every_listen_form_binds_where_it_says(
    listen: ListenAddress, bound: str, connect: str
) -> None:
    state: Any = object()  # /health of this server is never asked: only the bind matters
    async with AdminServer(state, CollectorRegistry(), listen) as admin:
        host, port = admin.address.rsplit(":", 1)
        assert host == bound
        assert int(port) > 0
        async with httpx.AsyncClient() as client:
            missing = await client.get(f"http://{connect}:{port}/nothing-here")
        assert missing.status_code == 404
    assert admin.stats()["sockets_opened"] == admin.stats()["sockets_closed"] == 1


async def test_at_the_cap_a_silent_connection_makes_room_for_a_new_one(
    knot_server: KnotServer,
) -> None:
    async with admin_site(knot_server.address(), [zones.HTTP_SRV], max_connections=8) as site:
        host, port = site.admin.address.rsplit(":", 1)
        silent = [await anyio.connect_tcp(host, int(port)) for _ in range(8)]
        await wait_for(lambda: site.admin.stats()["connections_open"] == 8)
        try:
            for _ in range(3):
                request = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                reply = await exchange(site.admin.address, request)
                assert reply.startswith(b"HTTP/1.1 200 ")
            stats = site.admin.stats()
            assert stats["connections_evicted"] == 1  # then the closed one freed a slot
            assert stats["connections_rejected"] == 0
        finally:
            for stream in silent:
                await stream.aclose()
