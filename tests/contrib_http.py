"""Real HTTP backends named by SRV records on a live Knot, for the adapter tests.

A :class:`Backend` is one ``tests/contrib_server.py`` process on its own
loopback address; a :class:`Service` is a set of them behind one SRV name
(and one A/AAAA name) in a fresh Knot zone, which a test may change with
dynamic updates or stop like a DNS outage.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from tests.dns_servers import KnotFactory, KnotServer

ORIGIN = "contrib.test."
SRV_NAME = "_http._tcp.web.contrib.test."
PLAIN_NAME = "plain.contrib.test."  # A records: every backend's address (same port for all)
DUAL_NAME = "dual.contrib.test."  # one A and one AAAA
DUAL_A, DUAL_AAAA = "127.0.0.60", "2001:db8::60"
HOST = "web.internal"  # the URL host the adapters map to SRV_NAME
SERVICES = {HOST: SRV_NAME}
TTL = 1  # seconds: changes reach clients within about a second (min_ttl is lowered to match)

_SERVER = Path(__file__).with_name("contrib_server.py")


@dataclass(eq=False)
class Backend:
    """One HTTP server process; ``name`` is what it puts in every response."""

    name: str
    address: str
    port: int
    proc: subprocess.Popen[bytes] = field(repr=False)

    @classmethod
    def start(
        cls, name: str, address: str, port: int = 0, tls: tuple[str, str] | None = None
    ) -> Backend:
        argv = [sys.executable, str(_SERVER), name, address, str(port), *(tls or ())]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.stdout.close()
        if not line.strip():
            proc.kill()
            proc.wait()
            raise RuntimeError(f"backend {name} on {address}:{port} did not start")
        return cls(name, address, int(line), proc)

    def kill(self) -> None:
        """Stop the process at once, as a crash would: its port then refuses connections."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def target(self) -> str:
        return f"{self.name}.web.{ORIGIN}"


@dataclass(frozen=True)
class Slot:
    """A backend's place in the SRV RRset."""

    backend: Backend
    priority: int
    weight: int

    def srv(self) -> str:
        return f"{self.priority} {self.weight} {self.backend.port} {self.backend.target()}"


def zone_text(slots: Sequence[Slot]) -> str:
    lines = [
        f"$ORIGIN {ORIGIN}",
        f"$TTL {TTL}",
        f"@ 5 IN SOA ns.{ORIGIN} hostmaster.{ORIGIN} 1 3600 600 86400 5",
        f"@ 30 IN NS ns.{ORIGIN}",
        "ns 30 IN A 127.0.0.1",
        f"{DUAL_NAME} {TTL} IN A {DUAL_A}",
        f"{DUAL_NAME} {TTL} IN AAAA {DUAL_AAAA}",
    ]
    for slot in slots:
        lines.append(f"{SRV_NAME} {TTL} IN SRV {slot.srv()}")
        lines.append(f"{slot.backend.target()} {TTL} IN A {slot.backend.address}")
        lines.append(f"{PLAIN_NAME} {TTL} IN A {slot.backend.address}")
    return "\n".join(lines) + "\n"


class Service:
    """Backends behind ``SRV_NAME`` on a Knot of their own; closes everything it started."""

    def __init__(
        self,
        knot_factory: KnotFactory,
        layout: Iterable[tuple[int, int]],
        tls: tuple[str, str] | None = None,
    ) -> None:
        """``layout``: (priority, weight) per backend; they share one port on 127.0.0.51, .52, ...

        ``tls``: (certificate, key) files for every backend to serve HTTPS with.
        """
        self.backends: list[Backend] = []
        self.slots: list[Slot] = []
        port = 0
        try:
            for i, (priority, weight) in enumerate(layout):
                backend = Backend.start(chr(ord("a") + i), f"127.0.0.{51 + i}", port, tls)
                port = backend.port
                self.backends.append(backend)
                self.slots.append(Slot(backend, priority, weight))
            self.knot: KnotServer = knot_factory(zone_text(self.slots), ORIGIN)
        except BaseException:
            self.close()
            raise

    @property
    def port(self) -> int:
        return self.backends[0].port

    def add_backend(self, name: str, address: str) -> Backend:
        backend = Backend.start(name, address, self.port)
        self.backends.append(backend)
        return backend

    def publish(self, slots: Sequence[Slot]) -> None:
        """Replace the SRV RRset on Knot (a dynamic update, visible at once)."""
        for slot in slots:
            self.knot.set_records(slot.backend.target(), "A", TTL, [slot.backend.address])
        self.knot.set_records(SRV_NAME, "SRV", TTL, [slot.srv() for slot in slots])
        self.slots = list(slots)

    def close(self) -> None:
        for backend in self.backends:
            backend.kill()
        knot = getattr(self, "knot", None)
        if knot is not None:
            knot.stop()


def served_by(body: bytes | str) -> str:
    name: str = json.loads(body)["name"]
    return name


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def tally(get: Callable[[], Awaitable[str]], requests: int, workers: int = 8) -> Counter[str]:
    """Send ``requests`` requests from ``workers`` concurrent tasks; count who served each."""
    counts: Counter[str] = Counter()

    async def worker(n: int) -> None:
        for _ in range(n):
            counts[await get()] += 1

    async with anyio.create_task_group() as task_group:
        for i in range(workers):
            task_group.start_soon(worker, requests // workers + (i < requests % workers))
    assert sum(counts.values()) == requests
    return counts


# -- statistics --------------------------------------------------------------------

FALSE_FAILURE = 1e-6
"""Chance that a correct adapter fails a weight test by bad luck."""


def chi_square_survival(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ chi-square with 1, 2 or 3 degrees of freedom (closed forms)."""
    if dof == 1:
        return math.erfc(math.sqrt(statistic / 2))
    if dof == 2:
        return math.exp(-statistic / 2)
    if dof == 3:
        half = statistic / 2
        return math.erfc(math.sqrt(half)) + math.sqrt(4 * half / math.pi) * math.exp(-half)
    raise ValueError(f"only 1 to 3 degrees of freedom, got {dof}")


def assert_weighted(counts: Counter[str], weights: dict[str, int]) -> None:
    """Pearson's chi-square goodness of fit of ``counts`` against ``weights``.

    Fails when a correct weighted choice would give counts this far off with
    probability below :data:`FALSE_FAILURE`; a uniform or a fixed choice is
    rejected by many orders of magnitude at the sample sizes used.
    """
    assert set(counts) <= set(weights), f"requests reached {set(counts) - set(weights)}"
    total = sum(counts.values())
    weight_sum = sum(weights.values())
    statistic = 0.0
    for name, weight in weights.items():
        expected = total * weight / weight_sum
        assert expected >= 20, "too few requests for the chi-square approximation"
        statistic += (counts[name] - expected) ** 2 / expected
    p = chi_square_survival(statistic, len(weights) - 1)
    assert p > FALSE_FAILURE, f"counts {dict(counts)} vs weights {weights}: chi2={statistic:.1f}"
