"""The sidecar as a hostile user drives it: odd files at the config path, signals at bad
moments, upstream swaps to dead servers, listeners that cannot both bind, a crowd on the
admin port. Each test is a defect found that way; the ones not fixed yet are strict xfails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import dns.rcode
import httpx
import pytest

from srvwatch.server.config import ConfigError, parse_config
from tests import zones
from tests.dns_servers import HOST, KnotFactory, KnotServer, free_port
from tests.test_sidecar import HTTP_WATCH, ask, config_of, config_text, eventually, running

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def knot(knot_factory: KnotFactory) -> Iterator[KnotServer]:
    server = knot_factory()
    yield server
    server.stop()


def _serve(path: Path, loop: str = "asyncio") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "srvwatch.cli", "serve", "--config", str(path), "--loop", loop],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ready(admin: int, server: subprocess.Popen[str], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()
        try:
            if httpx.get(f"http://{HOST}:{admin}/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("/ready never said 200")


def _stop(server: subprocess.Popen[str]) -> None:
    if server.poll() is None:
        server.kill()
    server.communicate(timeout=10)


# -- signals -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_a_sighup_during_the_lame_duck_does_not_kill_the_process(
    knot: KnotServer, tmp_path: Path, loop: str
) -> None:
    """A config tool's SIGHUP racing a rollout's SIGTERM: the lame duck goes on, exit 0.

    Before the fix the SIGHUP handler was gone once shutdown began, so the default
    action killed the process (status -1/129) in the middle of the lame duck.
    """
    stub, admin = free_port(), free_port()
    path = tmp_path / "srvwatch.toml"
    path.write_text(config_text(knot.address(), [stub], admin, [HTTP_WATCH], lame_duck=2.0))
    server = _serve(path, loop)
    try:
        _wait_ready(admin, server)
        server.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        server.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert server.poll() is None, "killed by SIGHUP in the lame duck"
        out, err = server.communicate(timeout=15)
        assert server.returncode == 0, err
        assert "srvwatch: stopped" in out
    finally:
        _stop(server)


# -- what sits at the config path --------------------------------------------------------


@pytest.mark.slow
def test_a_fifo_at_the_config_path_never_freezes_the_sidecar(
    knot: KnotServer, tmp_path: Path
) -> None:
    """A FIFO (or any non-regular file) swapped in at the config path.

    Before the fix, a SIGHUP made the reload block the event loop in open()
    (DNS, /health and SIGTERM all dead), and the file check blocked a worker
    thread that SIGTERM's shutdown then waited on forever.
    """
    stub, admin = free_port(), free_port()
    path = tmp_path / "srvwatch.toml"
    path.write_text(config_text(knot.address(), [stub], admin, [HTTP_WATCH], lame_duck=0.5))
    server = _serve(path)
    try:
        _wait_ready(admin, server)
        path.unlink()
        os.mkfifo(path)
        time.sleep(2.5)  # the file check (every 2 s) has met the FIFO
        server.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert httpx.get(f"http://{HOST}:{admin}/health", timeout=2.0).status_code == 200
        answer = anyio.run(ask, stub, "a.api.svc.test.")
        assert answer.rcode() == dns.rcode.NOERROR
        metrics = httpx.get(f"http://{HOST}:{admin}/metrics", timeout=2.0).text
        assert "srvwatch_reload_failed_total 1.0" in metrics
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=10)
        assert server.returncode == 0, err
        assert "not a regular file" in out + err
    finally:
        _stop(server)


@pytest.mark.slow
def test_a_huge_file_at_the_config_path_is_not_read_whole(knot: KnotServer, tmp_path: Path) -> None:
    """The file check read the whole file every 2 s: a 300 MB file took RSS to 620 MB.

    Now it reads at most one byte past the size limit, as load_config does.
    """
    stub, admin = free_port(), free_port()
    path = tmp_path / "srvwatch.toml"
    path.write_text(config_text(knot.address(), [stub], admin, [HTTP_WATCH], lame_duck=0.2))
    server = _serve(path)
    try:
        _wait_ready(admin, server)
        status = Path(f"/proc/{server.pid}/status")
        before = _kib(status, "VmRSS")
        big = tmp_path / "big.toml"
        with big.open("wb") as file:
            file.truncate(100 << 20)  # 100 MiB, sparse: costs the disk nothing
        big.replace(path)
        time.sleep(5)  # two file checks and the rejected reload
        assert _kib(status, "VmHWM") - before < 30 << 10
        metrics = httpx.get(f"http://{HOST}:{admin}/metrics", timeout=2.0).text
        assert "srvwatch_reload_failed_total 1.0" in metrics
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=10)
        assert server.returncode == 0
    finally:
        _stop(server)


def _kib(status: Path, field: str) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in {status}")


# -- config that check-config passes and serve cannot run --------------------------------


def test_watches_that_differ_only_by_case_or_final_dot_are_one_watch() -> None:
    """The sidecar keys watches by name without case or final dot; the config did not.

    Before the fix both passed check-config, and the sidecar kept one of them:
    the other's runner went on writing its files, unlisted in /endpoints, and was
    never stopped by a reload (watches_started/stopped did not balance).
    """
    text = '[[watch]]\nname = "a.svc.test"\n[[watch]]\nname = "A.SVC.TEST."\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text.encode(), "srvwatch.toml")
    assert caught.value.path == "watch[1].name"
    assert "watch[0]" in str(caught.value)


def test_a_v6_wildcard_overlaps_v4_listeners_of_its_port() -> None:
    """``[::]:P`` takes IPv4 too on Linux (bindv6only=0): it and ``0.0.0.0:P`` cannot both
    bind. Before the fix check-config said ok, and serve exited 1 with only
    "[Errno 98] Address already in use"."""
    for other in ("0.0.0.0", "127.0.0.1"):
        text = f'[stub]\nlisten = ["[::]:5353", "{other}:5353"]\n'
        with pytest.raises(ConfigError, match=r"stub\.listen\[1\].*overlaps"):
            parse_config(text.encode(), "srvwatch.toml")
    text = '[stub]\nlisten = ["127.0.0.1:5353"]\n[admin]\nlisten = "[::]:5353"\n'
    with pytest.raises(ConfigError, match=r"admin\.listen"):
        parse_config(text.encode(), "srvwatch.toml")


@pytest.mark.anyio
async def test_a_stub_listener_that_cannot_bind_names_its_address(knot: KnotServer) -> None:
    """Before the fix: "cannot start: [Errno 98] Address already in use", naming nothing."""
    stub, admin = free_port(), free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, stub))
        config = config_of(config_text(knot.address(), [stub], admin))
        with pytest.raises(OSError, match=f"{HOST}:{stub}"):
            async with running(config):
                pass


@pytest.mark.anyio
async def test_an_admin_port_that_cannot_bind_names_its_address(knot: KnotServer) -> None:
    stub, admin = free_port(), free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, admin))
        taken.listen()
        config = config_of(config_text(knot.address(), [stub], admin))
        with pytest.raises(OSError, match=f"{HOST}:{admin}"):
            async with running(config):
                pass


# -- reloads -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_upstream_change_to_a_silent_server_keeps_serving(
    knot: KnotServer, tmp_path: Path
) -> None:
    stub, admin, dead = free_port(), free_port(), free_port()
    path = tmp_path / "srvwatch.toml"
    config = config_of(config_text(knot.address(), [stub], admin, [HTTP_WATCH]), path)
    async with running(config) as (sidecar, http):

        async def ready() -> bool:
            return (await http.get("/ready")).status_code == 200

        await eventually(ready, 15.0)
        assert (await ask(stub, "a.api.svc.test.")).rcode() == dns.rcode.NOERROR
        path.write_text(config_text(f"{HOST}:{dead}", [stub], admin, [HTTP_WATCH]))
        await sidecar.reload()
        assert (await http.get("/ready")).status_code == 200, (await http.get("/ready")).text
        assert (await ask(stub, "a.api.svc.test.")).rcode() == dns.rcode.NOERROR
        (document,) = (await http.get("/endpoints")).json().values()
        assert len(document["endpoints"]) == len(zones.HTTP_TARGETS)


@pytest.mark.anyio
async def test_ready_waits_for_output_files_that_cannot_be_written(
    knot: KnotServer, tmp_path: Path
) -> None:
    stub, admin = free_port(), free_port()
    missing = tmp_path / "no-such-dir" / "api.json"
    watch = {**HTTP_WATCH, "json_file": str(missing)}
    config = config_of(config_text(knot.address(), [stub], admin, [watch]))
    async with running(config) as (_, http):

        async def has_data() -> bool:
            return any((await http.get("/endpoints")).json().values())

        await eventually(has_data, 15.0)
        reply = await http.get("/ready")
        assert reply.status_code == 503
        assert str(missing) in reply.text
        # The operator makes the directory: the file is written on the next try, not at
        # the next DNS change (which may never come), and /ready follows.
        missing.parent.mkdir()

        async def ready() -> bool:
            return (await http.get("/ready")).status_code == 200

        await eventually(ready, 10.0)
        assert json.loads(missing.read_text())["endpoints"]


@pytest.mark.anyio
async def test_a_stub_only_sidecar_gets_ready_without_a_client_query(knot: KnotServer) -> None:
    stub, admin = free_port(), free_port()
    config = config_of(config_text(knot.address(), [stub], admin))
    async with running(config) as (_, http):

        async def ready() -> bool:
            return (await http.get("/ready")).status_code == 200

        await eventually(ready, 5.0)


# -- the admin port ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_silent_connections_cannot_lock_the_probes_out(knot: KnotServer) -> None:
    stub, admin = free_port(), free_port()
    config = config_of(config_text(knot.address(), [stub], admin))
    async with running(config) as (_, http):
        hogs = [await anyio.connect_tcp(HOST, admin) for _ in range(64)]
        try:
            await anyio.sleep(0.3)
            assert (await http.get("/health")).status_code == 200
        finally:
            for hog in hogs:
                await hog.aclose()


@pytest.mark.anyio
async def test_a_request_head_over_8_kib_in_one_packet_gets_431(knot: KnotServer) -> None:
    stub, admin = free_port(), free_port()
    config = config_of(config_text(knot.address(), [stub], admin))
    async with running(config):
        request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
        async with await anyio.connect_tcp(HOST, admin) as client:
            await client.send(request)
            with anyio.fail_after(5):
                head = await client.receive()
        assert head.startswith(b"HTTP/1.1 431 "), head[:80]


# -- the command line --------------------------------------------------------------------


def test_usage_errors_of_resolve_and_watch_exit_2_naming_the_flag() -> None:
    """Before the fix --timeout -1 exited 1 (a runtime failure) naming Policy.timeout."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "srvwatch.cli",
            "resolve",
            "a.test",
            "-n",
            "127.0.0.1:9",
            "--timeout",
            "-1",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "--timeout" in result.stderr


# -- the Kubernetes example --------------------------------------------------------------


def test_the_kubernetes_probes_can_reach_the_admin_port() -> None:
    """The kubelet runs httpGet probes from the node, against the pod IP unless ``host`` is
    set: ``host: 127.0.0.1`` probes the node's own loopback, so the pod never gets ready
    (or the kubelet restarts it). The admin port must listen on the pod IP for them.
    Before the fix the example set ``host: 127.0.0.1`` with ``listen = "127.0.0.1:8181"``.
    """
    import yaml

    from tests.test_docs import blocks_of

    docs = [d for b in blocks_of("yaml", "sidecar.md") for d in yaml.safe_load_all(b.text)]
    (config_map,) = [d for d in docs if d.get("kind") == "ConfigMap"]
    (pod,) = [d for d in docs if d.get("kind") == "Pod"]
    config = parse_config(config_map["data"]["srvwatch.toml"].encode(), "srvwatch.toml")
    assert config.admin.listen.host in ("", "0.0.0.0", "::"), "probes come from the node"
    spec = pod["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]  # a native sidecar or not
    (sidecar,) = [c for c in containers if c["name"] == "srvwatch"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert "host" not in sidecar[probe]["httpGet"], f"{probe} would probe the node"


@pytest.mark.slow
def test_a_change_reloaded_by_sighup_is_not_applied_again_by_the_file_check(
    knot: KnotServer, tmp_path: Path
) -> None:
    """Before the fix the file check compared with the digest it saw last, not the running
    one: every change reloaded by SIGHUP was applied a second time 2 s later, and
    srvwatch_reload_total counted 2 (201 SIGHUPs in a soak counted 216)."""
    stub, admin = free_port(), free_port()
    path = tmp_path / "srvwatch.toml"
    path.write_text(config_text(knot.address(), [stub], admin, [HTTP_WATCH], lame_duck=0.2))
    server = _serve(path)
    try:
        _wait_ready(admin, server)
        path.write_text(config_text(knot.address(), [stub], admin, [], lame_duck=0.2))
        server.send_signal(signal.SIGHUP)
        time.sleep(4.5)  # two file checks
        metrics = httpx.get(f"http://{HOST}:{admin}/metrics", timeout=2.0).text
        assert "srvwatch_reload_total 1.0" in metrics
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=10)
        assert out.count("reloaded config") == 1, out
    finally:
        _stop(server)


def test_watch_into_a_closed_pipe_exits_quietly(knot: KnotServer) -> None:
    """Before the fix: an ExceptionGroup traceback around BrokenPipeError on stderr."""
    command = [sys.executable, "-m", "srvwatch.cli", "watch", zones.ONE_SRV,
               "-n", knot.address(), "--format", "json"]  # fmt: skip
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as watcher:
        assert watcher.stdout is not None
        assert watcher.stderr is not None
        assert watcher.stdout.readline().startswith("{")
        watcher.stdout.close()  # as `| head -1` does; then a change makes the next line
        knot.set_records(zones.ONE_TARGET, "A", 1, ["127.0.0.32"])
        try:
            watcher.wait(timeout=15)
        finally:
            if watcher.poll() is None:
                watcher.kill()
        err = watcher.stderr.read()
    assert "Traceback" not in err, err[-400:]


@pytest.mark.slow
def test_a_sigterm_during_a_reload_starts_the_shutdown_at_once(
    knot: KnotServer, tmp_path: Path
) -> None:
    stub, admin, dead = free_port(), free_port(), free_port()
    slow = "[policy]\nmin_ttl = 1.0\ntimeout = 0.5\nlifetime = 8.0\n"
    path = tmp_path / "srvwatch.toml"
    path.write_text(
        config_text(knot.address(), [stub], admin, [HTTP_WATCH], policy=slow, lame_duck=0.2)
    )
    server = _serve(path)
    try:
        _wait_ready(admin, server)
        path.write_text(
            config_text(f"{HOST}:{dead}", [stub], admin, [HTTP_WATCH], policy=slow, lame_duck=0.2)
        )
        server.send_signal(signal.SIGHUP)  # the new resolver warms for up to 8 s
        time.sleep(0.3)
        asked = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.stdout is not None
        for line in server.stdout:
            if "shutting down" in line:
                break
        assert time.monotonic() - asked < 2.0
        server.communicate(timeout=15)
        assert server.returncode == 0
    finally:
        _stop(server)
