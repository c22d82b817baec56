"""``srvwatch serve --config`` as a user runs it: reloads by SIGHUP and by file, lame-duck stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests import zones
from tests.dns_servers import HOST, KnotServer, free_port

pytestmark = pytest.mark.slow


def _config(upstream: str, stub: int, admin: int, watches: list[str], lame_duck: float) -> str:
    lines = [
        f'upstreams = ["{upstream}"]',
        "[policy]",
        "min_ttl = 1.0",
        "[stub]",
        f'listen = ["{HOST}:{stub}"]',
        "[admin]",
        f'listen = "{HOST}:{admin}"',
        f"lame_duck = {lame_duck}",
    ]
    for name in watches:
        lines += ["[[watch]]", f"name = {json.dumps(name)}"]
    return "\n".join(lines) + "\n"


def _kdig(port: int, name: str, rdtype: str = "A") -> str:
    result = subprocess.run(
        ["kdig", f"@{HOST}", "-p", str(port), name, rdtype, "+short", "+timeout=2", "+retry=0"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return result.stdout


def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds}s: {what}")


def _metric(http: httpx.Client, name: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.fixture(params=["asyncio", "uvloop", "trio"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


def test_reloads_on_sighup_and_on_a_changed_file_then_stops_as_a_lame_duck(
    knot_server: KnotServer, tmp_path: Path, loop: str, ports: tuple[int, int]
) -> None:
    stub, admin = ports
    path = tmp_path / "srvwatch.toml"
    upstream = knot_server.address()
    path.write_text(_config(upstream, stub, admin, [zones.HTTP_SRV], lame_duck=1.5))
    command = [sys.executable, "-m", "srvwatch.cli", "serve", "--config", str(path)]
    with (
        subprocess.Popen(
            [*command, "--loop", loop], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as server,
        httpx.Client(base_url=f"http://{HOST}:{admin}", timeout=2.0) as http,
    ):
        try:
            _until(lambda: http.get("/ready").status_code == 200, 15, "/ready 200")
            assert _kdig(stub, "a.api.svc.test.").strip() == zones.HTTP_A["a.api.svc.test."]

            # SIGHUP: a second watch appears.
            both = [zones.HTTP_SRV, zones.ONE_SRV]
            path.write_text(_config(upstream, stub, admin, both, lame_duck=1.5))
            server.send_signal(signal.SIGHUP)
            _until(lambda: len(http.get("/endpoints").json()) == 2, 5, "two watches")
            assert _metric(http, "srvwatch_reload_total") >= 1

            # A bad file: rejected and counted, the running config goes on.
            path.write_text(_config(upstream, stub, admin, both, 1.5) + "surprise = true\n")
            server.send_signal(signal.SIGHUP)
            _until(lambda: _metric(http, "srvwatch_reload_failed_total") >= 1, 5, "a failure")
            assert len(http.get("/endpoints").json()) == 2
            assert http.get("/ready").status_code == 200

            # A changed file, no signal: picked up by the file check.
            reloads = _metric(http, "srvwatch_reload_total")
            path.write_text(_config(upstream, stub, admin, [zones.ONE_SRV], lame_duck=1.5))
            _until(lambda: len(http.get("/endpoints").json()) == 1, 8, "one watch again")
            assert _metric(http, "srvwatch_reload_total") == reloads + 1

            # SIGTERM: /ready 503 at once, DNS still answered during the lame duck, exit 0.
            stopped_at = time.monotonic()
            server.send_signal(signal.SIGTERM)
            _until(lambda: http.get("/ready").status_code == 503, 0.5, "/ready 503 at once")
            assert _kdig(stub, "b.api.svc.test.").strip() == zones.HTTP_A["b.api.svc.test."]
            assert server.wait(timeout=15) == 0
            assert time.monotonic() - stopped_at >= 1.4
            out = server.stdout.read() if server.stdout else ""
            assert "reload rejected" in out
            assert out.rstrip().endswith("srvwatch: stopped")
        finally:
            server.kill()


def test_a_bad_config_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "srvwatch.toml"
    path.write_text('[stub]\nlisten = ["127.0.0.1:99999"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "srvwatch.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "stub.listen[0]" in result.stderr
    assert "99999" in result.stderr
