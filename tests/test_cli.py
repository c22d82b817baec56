"""The command line: the demo's live watch, one-shot resolve, and clear errors."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from srvwatch.cli import main
from tests import zones
from tests.dns_servers import KnotServer


def test_demo_shows_a_rolling_deploy_and_an_outage() -> None:
    out = io.StringIO()
    assert main(["demo", "--step", "0.6"], out=out) == 0
    text = out.getvalue()
    # The sidecar part: the stub answers a query, /ready and /metrics work.
    assert re.search(r"DNS stub on 127\.0\.0\.1:\d+", text)
    assert ";; status: NOERROR" in text
    assert "api-1.svc.test. 1 IN A 10.0.0.11" in text
    assert "/ready\n200 ready" in text
    assert re.search(r"^srvwatch_stub_requests_total\{proto=\"udp\"\} 1\.0$", text, re.MULTILINE)
    versions = [int(v) for v in re.findall(r"^update (\d+)", text, re.MULTILINE)]
    assert versions == list(range(1, len(versions) + 1))
    assert "+api-3.svc.test.:8080['10.0.0.14']" in text
    assert "-api-2.svc.test.:8080['10.0.0.12']" in text
    assert "+api-1.svc.test.:8080['10.0.0.21', '2001:db8::11']" in text
    assert text.count("[STALE]") == 1
    assert "keeping the last good endpoints" in text
    # After the outage the last update is fresh again.
    assert re.findall(r"^update \d+ \[(\w+)\]", text, re.MULTILINE)[-1] == "fresh"
    opened, closed = re.search(r"sockets opened/closed: (\d+)/(\d+)", text).groups()  # type: ignore[union-attr]
    assert opened == closed


def test_resolve_command(knot_server: KnotServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", zones.HTTP_SRV, "-n", knot_server.address()]) == 0
    text = capsys.readouterr().out
    assert "a.api.svc.test.:8080" in text
    assert main(["resolve", zones.MULTI, "AAAA", "-n", knot_server.address()]) == 0
    assert "2001:db8::41" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["resolve", "x.test", "-n", "1.2.3"], "nameservers[0] '1.2.3'"),
        (["resolve", "a..b", "-n", "127.0.0.1"], "not a valid DNS name"),
        (["resolve", "x.test", "BOGUS", "-n", "127.0.0.1"], "unknown record type"),
        (["demo", "--step", "0"], "--step"),
    ],
)
def test_bad_input_is_one_clear_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_resolve_nxdomain_exit_code(knot_server: KnotServer) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "srvwatch.cli",
            "resolve",
            zones.NXDOMAIN,
            "-n",
            knot_server.address(),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "NXDOMAIN" in result.stderr
