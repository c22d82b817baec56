"""The sidecar as a whole: real Knot behind, real DNS and HTTP clients in front, reloads live."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import dns.message
import dns.query
import dns.rcode
import httpx
import pytest

from srvwatch.server.app import Sidecar
from srvwatch.server.config import Config, parse_config
from tests import zones
from tests.dns_servers import HOST, KnotFactory, KnotServer, free_port

pytestmark = pytest.mark.anyio

FAST_POLICY = """\
[policy]
min_ttl = 1.0
timeout = 0.5
lifetime = 1.5
backoff_base = 0.2
backoff_max = 1.0
"""


def config_text(
    upstream: str,
    listen: list[int],
    admin: int,
    watches: list[dict[str, Any]] | None = None,
    policy: str = FAST_POLICY,
    lame_duck: float = 0.5,
) -> str:
    listen_list = ", ".join(f'"{HOST}:{port}"' for port in listen)
    lines = [
        f'upstreams = ["{upstream}"]',
        policy,
        "[stub]",
        f"listen = [{listen_list}]",
        "[admin]",
        f'listen = "{HOST}:{admin}"',
        f"lame_duck = {lame_duck}",
    ]
    for watch in watches or []:
        lines.append("[[watch]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in watch.items()]
    return "\n".join(lines) + "\n"


def config_of(text: str, path: Path | None = None) -> Config:
    if path is not None:
        path.write_text(text)
    return parse_config(text.encode(), str(path) if path else "test.toml")


@pytest.fixture
def knot(knot_factory: KnotFactory) -> Iterator[KnotServer]:
    server = knot_factory()
    yield server
    server.stop()


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[tuple[Sidecar, httpx.AsyncClient]]:
    with open(os.devnull, "w") as quiet:  # noqa: ASYNC230 - /dev/null never blocks
        async with Sidecar(config, out=quiet) as sidecar:
            base = f"http://{HOST}:{config.admin.listen.port}"
            async with httpx.AsyncClient(base_url=base, timeout=5.0) as http:
                yield sidecar, http


async def ask(port: int, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    reply: dns.message.Message = await anyio.to_thread.run_sync(
        lambda: send(query, HOST, timeout=3.0, port=port)
    )
    return reply


async def eventually(check: Any, seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not await check():  # noqa: ASYNC110 - polling a server from outside
            await anyio.sleep(0.05)


HTTP_WATCH = {"name": zones.HTTP_SRV, "type": "SRV"}
ONE_WATCH = {"name": zones.ONE_SRV, "type": "SRV"}


async def test_ready_lists_what_it_waits_on_then_serves(knot: KnotServer) -> None:
    stub, admin = free_port(), free_port()
    await anyio.to_thread.run_sync(knot.stop)
    config = config_of(config_text(knot.address(), [stub], admin, [HTTP_WATCH]))
    async with running(config) as (sidecar, http):
        reply = await http.get("/ready")
        assert reply.status_code == 503
        assert "upstream" in reply.text
        assert f"watch {zones.HTTP_SRV.rstrip('.')}" in reply.text or zones.HTTP_SRV in reply.text
        assert (await http.get("/health")).status_code == 200
        await anyio.to_thread.run_sync(knot.start)

        async def ready() -> bool:
            return (await http.get("/ready")).status_code == 200

        await eventually(ready, 15.0)
        endpoints = (await http.get("/endpoints")).json()
        (document,) = endpoints.values()
        assert {ep["target"] for ep in document["endpoints"]} == set(zones.HTTP_TARGETS)
        answer = await ask(stub, "a.api.svc.test.")
        assert answer.rcode() == dns.rcode.NOERROR
        assert answer.answer[0][0].address == zones.HTTP_A["a.api.svc.test."]
        assert sidecar.counts() == {"listeners": 1, "watches": 1, "admin": 1}


async def test_reload_applies_the_difference_and_keeps_unchanged_sockets(
    knot: KnotServer, tmp_path: Path
) -> None:
    port_a, port_b, admin = free_port(), free_port(), free_port()
    path = tmp_path / "srvwatch.toml"
    first = config_of(config_text(knot.address(), [port_a], admin, [HTTP_WATCH]), path)
    async with running(first) as (sidecar, http):
        await eventually(lambda: _status(http, "/ready", 200))
        listener_a = sidecar._listeners[first.stub.listen[0]][1].dns
        resolver = sidecar.resolver
        # Add a listener and a watch, change the policy: one reload.
        text = config_text(
            knot.address(),
            [port_a, port_b],
            admin,
            [HTTP_WATCH, ONE_WATCH],
            policy=FAST_POLICY.replace("min_ttl = 1.0", "min_ttl = 2.0"),
        )
        path.write_text(text)
        assert await sidecar.reload()
        assert sidecar.resolver is resolver, "same upstreams: the store is kept"
        assert resolver.policy.min_ttl == 2.0
        assert sidecar._listeners[first.stub.listen[0]][1].dns is listener_a
        assert (await ask(port_b, "a.api.svc.test.")).rcode() == dns.rcode.NOERROR
        await eventually(lambda: _has_endpoints(http, zones.ONE_SRV))
        # Remove the first listener and the first watch.
        path.write_text(config_text(knot.address(), [port_b], admin, [ONE_WATCH]))
        assert await sidecar.reload()
        assert sidecar.counts() == {"listeners": 1, "watches": 1, "admin": 1}
        assert listener_a.stats()["sockets_opened"] == listener_a.stats()["sockets_closed"]
        query = dns.message.make_query("a.api.svc.test.", "A")
        with pytest.raises(dns.exception.Timeout):
            await anyio.to_thread.run_sync(
                lambda: dns.query.udp(query, HOST, timeout=0.5, port=port_a)
            )
        assert sidecar.reloads == 2
        assert sidecar.reload_failures == 0


async def test_a_bad_file_is_rejected_and_the_old_config_keeps_serving(
    knot: KnotServer, tmp_path: Path
) -> None:
    stub, admin, taken = free_port(), free_port(), free_port()
    path = tmp_path / "srvwatch.toml"
    config = config_of(config_text(knot.address(), [stub], admin, [HTTP_WATCH]), path)
    async with running(config) as (sidecar, http):
        await eventually(lambda: _status(http, "/ready", 200))
        digest = sidecar.config.digest
        path.write_text(config_text(knot.address(), [stub], admin) + "\nbogus = 1\n")
        assert not await sidecar.reload()
        # A listener that cannot bind rejects the reload whole, too.
        with port_taken(taken):
            path.write_text(config_text(knot.address(), [stub, taken], admin, []))
            assert not await sidecar.reload()
        assert sidecar.config.digest == digest
        assert sidecar.counts() == {"listeners": 1, "watches": 1, "admin": 1}
        assert sidecar.reload_failures == 2
        assert (await http.get("/ready")).status_code == 200
        assert (await ask(stub, "a.api.svc.test.")).rcode() == dns.rcode.NOERROR
        metrics = (await http.get("/metrics")).text
        assert "srvwatch_reload_failed_total 2.0" in metrics


class port_taken:
    """Hold a UDP port so that binding it fails."""

    def __init__(self, port: int) -> None:
        import socket

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, port))

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


async def test_upstream_change_switches_resolver_without_flapping_ready(
    knot_factory: KnotFactory, tmp_path: Path
) -> None:
    first, second = knot_factory(), knot_factory()
    stub, admin = free_port(), free_port()
    path = tmp_path / "srvwatch.toml"
    config = config_of(config_text(first.address(), [stub], admin, [HTTP_WATCH]), path)
    async with running(config) as (sidecar, http):
        await eventually(lambda: _status(http, "/ready", 200))
        old = sidecar.resolver
        path.write_text(config_text(second.address(), [stub], admin, [HTTP_WATCH]))
        assert await sidecar.reload()
        assert sidecar.resolver is not old
        assert (await http.get("/ready")).status_code == 200
        stats = old.stats()
        assert stats["sockets_opened"] == stats["sockets_closed"]
        assert stats["loops_started"] == stats["loops_stopped"]
        before = second.query_count()
        assert (await ask(stub, "b.api.svc.test.")).rcode() == dns.rcode.NOERROR
        assert second.query_count() > before


async def test_shutdown_says_503_at_once_and_answers_dns_during_the_lame_duck(
    knot: KnotServer,
) -> None:
    stub, admin = free_port(), free_port()
    config = config_of(config_text(knot.address(), [stub], admin, [HTTP_WATCH], lame_duck=1.0))
    async with running(config) as (sidecar, http):
        await eventually(lambda: _status(http, "/ready", 200))
        async with anyio.create_task_group() as tg:
            tg.start_soon(sidecar.shutdown)
            await anyio.sleep(0.1)
            reply = await http.get("/ready")
            assert reply.status_code == 503
            assert "shutting down" in reply.text
            assert (await ask(stub, "a.api.svc.test.")).rcode() == dns.rcode.NOERROR
    assert sidecar.counts() == {"listeners": 0, "watches": 0, "admin": 0}


async def _status(http: httpx.AsyncClient, path: str, status: int) -> bool:
    try:
        return (await http.get(path)).status_code == status
    except httpx.TransportError:
        return False


async def _has_endpoints(http: httpx.AsyncClient, name: str) -> bool:
    documents = (await http.get("/endpoints")).json()
    return any(
        doc is not None and doc["name"].rstrip(".") == name.rstrip(".") and doc["endpoints"]
        for doc in documents.values()
    )


def _threads() -> int:
    return threading.active_count()


async def test_an_event_stream_ends_when_a_reload_removes_its_watch(
    knot: KnotServer, tmp_path: Path
) -> None:
    stub, admin = free_port(), free_port()
    path = tmp_path / "srvwatch.toml"
    both = [HTTP_WATCH, ONE_WATCH]
    config = config_of(config_text(knot.address(), [stub], admin, both), path)
    async with running(config) as (sidecar, http):
        await eventually(lambda: _status(http, "/ready", 200))
        events: list[dict[str, Any]] = []
        async with http.stream("GET", "/watch", params={"name": zones.ONE_SRV}) as stream:
            lines = stream.aiter_lines()
            async for line in lines:
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    break
            path.write_text(config_text(knot.address(), [stub], admin, [HTTP_WATCH]))
            assert await sidecar.reload()
            with anyio.fail_after(5):
                rest = [line async for line in lines]
        assert events[0]["name"] == zones.ONE_SRV
        assert all(not line.startswith("data:") for line in rest)

        # Nothing keeps the removed name's refresh loop alive.
        async def one_loop() -> bool:
            return sidecar.resolver.stats()["loops_running"] == 1

        await eventually(one_loop, 2.0)


def test_a_resolv_conf_that_names_the_stub_is_refused_without_upstreams(tmp_path: Path) -> None:
    from srvwatch.server.app import check_upstreams_are_not_the_stub
    from srvwatch.server.config import ConfigError

    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    own = config_of('[stub]\nlisten = ["127.0.0.1:53"]\n')
    with pytest.raises(ConfigError, match="names the stub itself"):
        check_upstreams_are_not_the_stub(own, str(resolv))
    every = config_of('[stub]\nlisten = [":53"]\n')
    with pytest.raises(ConfigError, match="names the stub itself"):
        check_upstreams_are_not_the_stub(every, str(resolv))
    elsewhere = config_of('[stub]\nlisten = ["127.0.0.1:5353"]\n')
    check_upstreams_are_not_the_stub(elsewhere, str(resolv))
    explicit = config_of('upstreams = ["10.0.0.10"]\n[stub]\nlisten = ["127.0.0.1:53"]\n')
    check_upstreams_are_not_the_stub(explicit, str(resolv))


async def test_output_files_follow_a_change_on_knot_and_ready_waits_for_them(
    knot: KnotServer, tmp_path: Path
) -> None:
    stub, admin = free_port(), free_port()
    json_file, eds_file = tmp_path / "out" / "one.json", tmp_path / "out" / "one-eds.json"
    json_file.parent.mkdir()
    watch = {
        "name": zones.ONE_SRV,
        "json_file": str(json_file),
        "eds_file": str(eds_file),
        "cluster": "one",
    }
    config = config_of(config_text(knot.address(), [stub], admin, [watch]))
    async with running(config) as (_, http):
        await eventually(lambda: _status(http, "/ready", 200))
        # Ready means written: both files are there the moment /ready says 200.
        document = json.loads(json_file.read_text())
        assert [ep["addresses"] for ep in document["endpoints"]] == [[zones.ONE_ADDRESS]]
        eds = json.loads(eds_file.read_text())
        (assignment,) = eds["resources"]
        assert assignment["cluster_name"] == "one"
        (group,) = assignment["endpoints"]
        (lb,) = group["lb_endpoints"]
        assert lb["endpoint"]["address"]["socket_address"] == {
            "address": zones.ONE_ADDRESS,
            "port_value": zones.ONE_PORT,
        }
        await anyio.to_thread.run_sync(
            lambda: knot.set_records(zones.ONE_TARGET, "A", 1, ["127.0.0.77"])
        )

        async def moved() -> bool:
            text = eds_file.read_text()
            return "127.0.0.77" in text and "127.0.0.77" in json_file.read_text()

        await eventually(moved, 10.0)
        assert sorted(p.name for p in json_file.parent.iterdir()) == ["one-eds.json", "one.json"]


async def test_metrics_count_output_writes_and_failures_per_watch(
    knot: KnotServer, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    stub, admin = free_port(), free_port()
    good = {"name": zones.HTTP_SRV, "json_file": str(tmp_path / "http.json")}
    bad = {"name": zones.ONE_SRV, "json_file": str(tmp_path / "missing-dir" / "one.json")}
    config = config_of(config_text(knot.address(), [stub], admin, [good, bad]))
    async with running(config) as (_, http):

        async def counted() -> bool:
            families = {
                f.name: f for f in text_string_to_metric_families((await http.get("/metrics")).text)
            }
            samples = {
                (f, s.labels.get("name")): s.value
                for f in ("srvwatch_output_writes", "srvwatch_output_write_failures")
                for s in families[f].samples
            }
            return (
                samples.get(("srvwatch_output_writes", zones.HTTP_SRV), 0) >= 1
                and samples.get(("srvwatch_output_write_failures", zones.ONE_SRV), 0) >= 1
            )

        await eventually(counted, 10.0)
        assert (tmp_path / "http.json").exists()
        # The failing watch still serves: its endpoints are in /endpoints.
        assert await _has_endpoints(http, zones.ONE_SRV)


async def test_no_reload_once_shutting_down(knot: KnotServer, tmp_path: Path) -> None:
    stub, admin, other = free_port(), free_port(), free_port()
    path = tmp_path / "srvwatch.toml"
    config = config_of(config_text(knot.address(), [stub], admin, [HTTP_WATCH]), path)
    async with running(config) as (sidecar, _):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sidecar.shutdown, 0.5)
            await anyio.sleep(0.05)
            path.write_text(config_text(knot.address(), [stub, other], admin, [HTTP_WATCH]))
            assert not await sidecar.reload()
            assert sidecar.counts()["listeners"] == 1
