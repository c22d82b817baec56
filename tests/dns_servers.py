"""Real DNS servers for the tests: Knot DNS (authoritative) and unbound (caching resolver).

Loaded as a pytest plugin by tests/conftest.py. Each server runs in the foreground as a child
process on a free 127.0.0.1 port (UDP and TCP), with its config, zone files, control socket
and log in its own temporary directory. Nothing is ever left running: every server is stopped
by its fixture's finalizer (and, as a last resort, at interpreter exit).

Fixtures:

- ``knot_server`` (session): shared Knot with ``svc.test.`` (tests/zones.py DEFAULT_ZONE) and
  ``other.test.``. Do not mutate or stop it; use ``knot_factory`` for that.
- ``unbound_server`` (session): unbound forwarding every name to ``knot_server``, so TTLs are
  counted down the way cluster DNS caches do.
- ``knot_factory`` (session): ``knot_factory(zone_text=None, origin="svc.test.")`` returns a fresh,
  running Knot that a test may mutate, stop and restart.
- ``unbound_factory`` (session): ``unbound_factory(upstream)`` returns a fresh unbound in front of
  the given Knot (for outage tests that must not disturb the shared resolver).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.zones import DEFAULT_ORIGIN, DEFAULT_ZONE, OTHER_ORIGIN, OTHER_ZONE

__all__ = [
    "KnotFactory",
    "KnotServer",
    "UnboundFactory",
    "UnboundServer",
    "free_port",
]

HOST = "127.0.0.1"
START_DEADLINE = 10.0  # seconds a daemon gets to answer its first query
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path, minus the NUL

_handed_out_ports: set[int] = set()
_live: list[_Daemon] = []


_SERVER_PORTS = range(20_000, 32_768)
"""Below Linux's ephemeral range (32768-60999), which every client socket and every port-0
bind draws from: a server stopped and started again on its port must not find it taken."""


def free_port(host: str = HOST) -> int:
    """A port free for both UDP and TCP on ``host``, never the same one twice in a session.

    The probe sockets are closed before returning, so there is a small race with other
    programs; handing out each port only once removes the race between our own servers,
    and taking it outside the ephemeral range keeps the kernel from handing it to a
    client socket while a server restarts on it.
    """
    for _ in range(500):
        port = random.choice(_SERVER_PORTS)
        if port in _handed_out_ports:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                tcp.bind((host, port))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
        except OSError:
            continue
        _handed_out_ports.add(port)
        return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host}")


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return text[-limit:]


def _check_socket_path(path: Path) -> None:
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise RuntimeError(
            f"control socket path {path} is longer than {_SUN_PATH_MAX} bytes; "
            "use a shorter --basetemp"
        )


def _probe(
    host: str, port: int, qname: str, rdtype: str, timeout: float
) -> dns.message.Message | None:
    """One UDP query; None when nothing answered (not up yet)."""
    query = dns.message.make_query(qname, rdtype)
    try:
        return dns.query.udp(query, host, port=port, timeout=timeout, ignore_unexpected=True)
    except (dns.exception.Timeout, OSError):
        return None


class _Daemon:
    """A foreground daemon process whose output goes to a log file in its workdir.

    Our copy of the log file is closed right after the fork, so the only descriptors
    we hold are the Popen's (none: no pipes) and the process handle, reaped in stop().
    """

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
            )
        _live.append(self)

    def fail(self, why: str) -> RuntimeError:
        """Stop the process and build an error that carries its log."""
        self.terminate()
        return RuntimeError(
            f"{self.name}: {why}\n--- log {self.log_path}:\n{_log_tail(self.log_path)}"
        )

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise self.fail(f"exited with status {code} during startup")

    def terminate(self) -> None:
        proc, self.proc = self.proc, None
        if self in _live:
            _live.remove(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@atexit.register
def _kill_leftovers() -> None:  # pragma: no cover - only when a finalizer never ran
    for daemon in list(_live):
        daemon.terminate()


def _wait_until(daemon: _Daemon, what: str, ready: Callable[[float], bool]) -> None:
    """Poll ``ready(timeout)`` until true; the probe timeout grows from 20 ms to 0.5 s.

    Short first probes matter: a query sent while the daemon is still setting up its
    sockets can be lost, and waiting long for it would double the startup time.
    """
    deadline = time.monotonic() + START_DEADLINE
    timeout = 0.02
    while True:
        daemon.check_alive()
        if ready(timeout):
            return
        if time.monotonic() > deadline:
            raise daemon.fail(f"not ready after {START_DEADLINE:.0f} s: {what}")
        timeout = min(timeout * 1.5, 0.5)
        time.sleep(0.005)


# --------------------------------------------------------------------------- Knot


def _abs_owner(owner: str, zone: str) -> str:
    """Absolute owner name: trailing dot, "@", or already ending in the zone name are absolute."""
    if owner.endswith("."):
        return owner
    if owner == "@":
        return zone
    bare = zone.rstrip(".")
    if owner == bare or owner.endswith("." + bare):
        return owner + "."
    return f"{owner}.{zone}"


_STAT_RE = re.compile(r"^mod-stats\.server-operation\[query\]\s*=\s*(\d+)\s*$", re.MULTILINE)


class _ServerProcess:
    """What Knot and unbound fixtures share: an address and one daemon process with a log."""

    host: str
    port: int
    workdir: Path
    _daemon: _Daemon
    LOG_NAME: ClassVar[str]

    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        proc = self._daemon.proc
        return None if proc is None else proc.pid

    @property
    def running(self) -> bool:
        return self._daemon.running

    def log(self) -> str:
        return _log_tail(self.workdir / self.LOG_NAME, 20000)


@dataclass(eq=False)
class KnotServer(_ServerProcess):
    """A Knot DNS authoritative server on ``host:port``, controlled with knotc.

    ``zones`` maps each origin to its initial zone text. Record changes go through knotc
    zone transactions and survive stop()/start() (Knot writes them to the zone file).
    """

    host: str
    port: int
    zone: str
    workdir: Path
    zones: dict[str, str] = field(default_factory=dict, repr=False)
    conf_path: Path = field(init=False, repr=False)
    socket_path: Path = field(init=False, repr=False)
    _daemon: _Daemon = field(init=False, repr=False)
    _count_base: int = field(default=0, init=False, repr=False)
    _count_offset: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.zones:
            raise ValueError("KnotServer needs at least one zone")
        self.conf_path = self.workdir / "knot.conf"
        self.socket_path = self.workdir / "knot.sock"
        _check_socket_path(self.socket_path)
        zonedir = self.workdir / "zones"
        zonedir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "db").mkdir(exist_ok=True)
        for origin, text in self.zones.items():
            (zonedir / f"{origin}zone").write_text(text)
        self.conf_path.write_text(self._config())
        self._daemon = _Daemon(
            f"knotd {self.address()}",
            ["knotd", "-c", str(self.conf_path)],
            self.workdir / "knotd.log",
        )

    def _config(self) -> str:
        # No `user:`: knotd keeps the invoking user, so the files it writes stay ours.
        # mod-stats as a global module counts every query the server receives.
        zone_lines = "".join(
            f'  - domain: "{origin}"\n    file: "{origin}zone"\n' for origin in self.zones
        )
        return (
            "server:\n"
            f'    rundir: "{self.workdir}"\n'
            f"    listen: {self.host}@{self.port}\n"
            "    udp-workers: 2\n"
            "    tcp-workers: 2\n"
            "    background-workers: 1\n"
            "control:\n"
            f'    listen: "{self.socket_path}"\n'
            "log:\n"
            "  - target: stderr\n"
            "    any: info\n"
            "database:\n"
            f'    storage: "{self.workdir / "db"}"\n'
            "mod-stats:\n"
            "  - id: counters\n"
            "    request-protocol: on\n"
            "    server-operation: on\n"
            "    response-code: on\n"
            "template:\n"
            "  - id: default\n"
            f'    storage: "{self.workdir / "zones"}"\n'
            "    global-module: mod-stats/counters\n"
            "    semantic-checks: off\n"
            "zone:\n" + zone_lines
        )

    # -- addresses and process state

    LOG_NAME = "knotd.log"

    # -- lifecycle

    def start(self) -> None:
        """Start knotd (same port as before) and wait until every zone answers and knotc works."""
        if self.running:
            return
        self._daemon.spawn()

        def zones_loaded(timeout: float) -> bool:
            for origin in self.zones:
                resp = _probe(self.host, self.port, origin, "SOA", timeout)
                if resp is None or resp.rcode() != dns.rcode.NOERROR or not resp.answer:
                    return False
            return True

        _wait_until(self._daemon, "zones answering SOA", zones_loaded)
        _wait_until(
            self._daemon, "knotc status", lambda _: self._knotc("status", check=False)[0] == 0
        )
        # Our own readiness probes are not the tests' queries.
        self._count_base = self._raw_query_count()

    def stop(self) -> None:
        """Stop knotd (SIGTERM, then SIGKILL after 5 s) and reap it. Idempotent."""
        if self.running:
            with contextlib.suppress(RuntimeError):
                self._count_offset += self._raw_query_count() - self._count_base
        self._daemon.terminate()

    # -- control

    def _knotc(self, *args: str, check: bool = True) -> tuple[int, str]:
        argv = ["knotc", "-c", str(self.conf_path), "-s", str(self.socket_path), "-t", "5"]
        argv.extend(args)
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        out = (res.stdout + res.stderr).strip()
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {out}")
        return res.returncode, out

    def _transaction(self, zone: str, edits: list[tuple[str, ...]]) -> None:
        """Apply knotc zone-set/zone-unset edits atomically; abort on any failure.

        A zone-unset of something that does not exist is not an error here: callers
        ask for an end state, not for a diff.
        """
        self._knotc("zone-begin", zone)
        try:
            for edit in edits:
                code, out = self._knotc(*edit, check=False)
                if code != 0 and not (edit[0] == "zone-unset" and "no such" in out):
                    raise RuntimeError(f"knotc {' '.join(edit)} failed: {out}")
            code, out = self._knotc("zone-commit", zone, check=False)
            if code != 0 and "no changes" not in out:
                raise RuntimeError(f"knotc zone-commit {zone} failed: {out}")
        except BaseException:
            self._knotc("zone-abort", zone, check=False)
            raise

    def set_records(
        self, owner: str, rdtype: str, ttl: int, rdatas: list[str], zone: str | None = None
    ) -> None:
        """Replace the RRset ``owner``/``rdtype`` with ``rdatas`` (presentation format).

        ``owner`` is absolute when it ends with "." or with the zone name, else relative.
        Names inside rdatas should be absolute (trailing dot). Visible at once; the SOA
        serial is bumped by Knot.
        """
        zone = zone or self.zone
        name = _abs_owner(owner, zone)
        edits: list[tuple[str, ...]] = [("zone-unset", zone, name, rdtype)]
        edits += [("zone-set", zone, name, str(ttl), rdtype, rdata) for rdata in rdatas]
        self._transaction(zone, edits)

    def delete_records(
        self, owner: str, rdtype: str | None = None, zone: str | None = None
    ) -> None:
        """Remove the RRset ``owner``/``rdtype``, or everything at ``owner`` if rdtype is None."""
        zone = zone or self.zone
        name = _abs_owner(owner, zone)
        edit = ("zone-unset", zone, name) if rdtype is None else ("zone-unset", zone, name, rdtype)
        self._transaction(zone, [edit])

    def read_records(self, owner: str, rdtype: str | None = None, zone: str | None = None) -> str:
        """knotc zone-read output for ``owner`` (handy in assertion messages)."""
        zone = zone or self.zone
        args = ["zone-read", zone, _abs_owner(owner, zone)]
        if rdtype is not None:
            args.append(rdtype)
        return self._knotc(*args, check=False)[1]

    def _raw_query_count(self) -> int:
        _, out = self._knotc("stats", "mod-stats.server-operation")
        match = _STAT_RE.search(out)
        return int(match.group(1)) if match else 0  # Knot omits counters that are still 0

    def query_count(self) -> int:
        """DNS queries this server has received from clients, counted by Knot's mod-stats.

        Counts across stop()/start(); the fixture's own readiness probes are excluded.
        """
        if not self.running:
            return self._count_offset
        return self._count_offset + self._raw_query_count() - self._count_base


# --------------------------------------------------------------------------- unbound


@dataclass(eq=False)
class UnboundServer(_ServerProcess):
    """An unbound caching resolver on ``host:port`` forwarding every name to ``upstream``."""

    host: str
    port: int
    upstream: KnotServer
    workdir: Path
    conf_path: Path = field(init=False, repr=False)
    control_path: Path = field(init=False, repr=False)
    _daemon: _Daemon = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.conf_path = self.workdir / "unbound.conf"
        self.control_path = self.workdir / "unbound.ctl"
        _check_socket_path(self.control_path)
        self.conf_path.write_text(self._config())
        self._daemon = _Daemon(
            f"unbound {self.address()}",
            ["unbound", "-d", "-c", str(self.conf_path)],
            self.workdir / "unbound.log",
        )

    def _config(self) -> str:
        up = f"{self.upstream.host}@{self.upstream.port}"
        # "." is forwarded too, so unbound never primes the root or leaves the machine.
        zones = [*self.upstream.zones, "."]
        forwards = "".join(
            f'forward-zone:\n    name: "{origin}"\n    forward-addr: {up}\n' for origin in zones
        )
        return (
            "server:\n"
            f"    interface: {self.host}@{self.port}\n"
            f"    port: {self.port}\n"
            "    do-ip4: yes\n"
            "    do-ip6: no\n"
            "    do-udp: yes\n"
            "    do-tcp: yes\n"
            "    access-control: 127.0.0.0/8 allow\n"
            "    do-not-query-localhost: no\n"
            '    chroot: ""\n'
            '    username: ""\n'
            f'    directory: "{self.workdir}"\n'
            f'    pidfile: "{self.workdir / "unbound.pid"}"\n'
            "    use-syslog: no\n"
            '    logfile: ""\n'
            "    verbosity: 1\n"
            "    num-threads: 1\n"
            '    module-config: "iterator"\n'
            "    cache-min-ttl: 0\n"
            "    prefetch: no\n"
            "    serve-expired: no\n"
            "    qname-minimisation: no\n"
            # Cluster DNS puts SRV target addresses in the additional section; so do we.
            "    minimal-responses: no\n"
            # After an upstream outage, keep probing instead of blocking the server.
            "    infra-keep-probing: yes\n"
            "    infra-host-ttl: 60\n"
            # "test." is a default (refusing) local zone in unbound: lift that.
            '    local-zone: "test." nodefault\n'
            "remote-control:\n"
            "    control-enable: yes\n"
            f'    control-interface: "{self.control_path}"\n'
            "    control-use-cert: no\n" + forwards
        )

    LOG_NAME = "unbound.log"

    def start(self) -> None:
        """Start unbound (same port as before); wait until it answers and can be controlled."""
        if self.running:
            return
        self.control_path.unlink(missing_ok=True)  # so its reappearance means "listening"
        self._daemon.spawn()

        def answers(timeout: float) -> bool:
            # localhost. is answered from unbound's built-in local zone: no upstream query.
            resp = _probe(self.host, self.port, "localhost.", "A", timeout)
            return resp is not None and resp.rcode() == dns.rcode.NOERROR

        _wait_until(self._daemon, "answering localhost. A", answers)
        _wait_until(self._daemon, "control socket", lambda _: self.control_path.exists())

    def stop(self) -> None:
        """Stop unbound and reap it. Idempotent."""
        self._daemon.terminate()

    def control(self, *args: str) -> str:
        argv = ["unbound-control", "-c", str(self.conf_path), *args]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        out = (res.stdout + res.stderr).strip()
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {out}")
        return out

    def flush(self, name: str = ".") -> None:
        """Forget cached data at and below ``name`` (default: all) and upstream RTT/down state."""
        self.control("flush_zone", name)
        self.control("flush_infra", "all")


# --------------------------------------------------------------------------- factories


class KnotFactory:
    """Creates running Knot servers in fresh directories; stops them all on close()."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self._tmp = tmp
        self.servers: list[KnotServer] = []

    def __call__(
        self,
        zone_text: str | None = None,
        origin: str = DEFAULT_ORIGIN,
        *,
        extra_zones: Mapping[str, str] | None = None,
    ) -> KnotServer:
        """A new running server. With no zone_text it serves DEFAULT_ZONE and OTHER_ZONE."""
        if not origin.endswith("."):
            origin += "."
        zones = {origin: DEFAULT_ZONE if zone_text is None else zone_text}
        if extra_zones is None and zone_text is None:
            extra_zones = {OTHER_ORIGIN: OTHER_ZONE}
        zones.update(extra_zones or {})
        server = KnotServer(
            host=HOST,
            port=free_port(),
            zone=origin,
            workdir=self._tmp.mktemp("knot"),
            zones=zones,
        )
        self.servers.append(server)
        server.start()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.stop()


class UnboundFactory:
    """Creates running unbound resolvers in front of a given Knot; stops them all on close()."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self._tmp = tmp
        self.servers: list[UnboundServer] = []

    def __call__(self, upstream: KnotServer) -> UnboundServer:
        server = UnboundServer(
            host=HOST, port=free_port(), upstream=upstream, workdir=self._tmp.mktemp("unbound")
        )
        self.servers.append(server)
        server.start()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="session")
def knot_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotFactory]:
    factory = KnotFactory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def unbound_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UnboundFactory]:
    factory = UnboundFactory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def knot_server(knot_factory: KnotFactory) -> KnotServer:
    """The shared authoritative server (svc.test. + other.test.). Read-only for tests."""
    return knot_factory()


@pytest.fixture(scope="session")
def unbound_server(unbound_factory: UnboundFactory, knot_server: KnotServer) -> UnboundServer:
    """The shared caching resolver in front of knot_server."""
    return unbound_factory(knot_server)
