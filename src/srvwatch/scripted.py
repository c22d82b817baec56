"""An in-memory transport answering from a script: resolver logic tested with no socket, no sleep.

As httpcore's tests drive a mock backend of scripted bytes, resolver,
SRV assembly, negative caching and stale logic are tested here against
replies built on demand: the same bytes a server would send, walked by the
same parser, so only the network is left out. Real-server tests (Knot,
unbound, ZoneServer) cover the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from . import wire
from .errors import ResolveTimeout, ServerFailure
from .health import Health
from .metrics import Counters
from .names import type_text
from .policy import Policy
from .reply import Reply
from .transport import Nameserver, parse_nameserver

__all__ = ["ScriptedTransport"]

Respond = Callable[[dns.message.Message], "dns.message.Message | bytes | str"]
"""Builds the reply to a query: a message, raw bytes, or "timeout" / "servfail"."""


@dataclass
class _Zone:
    records: dict[tuple[str, int], dns.rrset.RRset]
    soa: dns.rrset.RRset | None


class ScriptedTransport:
    """A :class:`~srvwatch.transport.Transport` whose upstream is a dict of records.

    ``set(name, type, [rdata...], ttl)`` puts records in; names without any
    record are NXDOMAIN, names with others NODATA, both with the SOA given
    to :meth:`soa`. :meth:`fail` makes a question fail (``"timeout"`` or an
    rcode name), :meth:`respond` installs a function for full control, and
    :meth:`hold` makes queries wait until :meth:`release`, for tests of
    concurrency. ``asked`` lists every question in order.
    """

    def __init__(self, nameservers: tuple[str, ...] = ("192.0.2.53",)) -> None:
        self.nameservers: tuple[Nameserver, ...] = tuple(map(parse_nameserver, nameservers))
        self.counters = Counters()
        self.health = Health(self.nameservers, Policy(), time.monotonic)
        """Every nameserver stays up: outages are scripted per question with :meth:`fail`."""
        self.asked: list[tuple[str, str]] = []
        self._zone = _Zone({}, None)
        self._failures: dict[tuple[str, int] | None, str] = {}
        self._respond: Respond | None = None
        self._gate: anyio.Event | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"<ScriptedTransport {len(self._zone.records)} rrsets, {len(self.asked)} asked>"

    # -- the script ------------------------------------------------------------------

    def set(self, name: str, rdtype: str, rdatas: list[str], ttl: int = 30) -> None:
        """Replace the records of ``name``/``rdtype`` (an empty list removes them)."""
        key = (_canonical(name), int(dns.rdatatype.from_text(rdtype)))
        if not rdatas:
            self._zone.records.pop(key, None)
            return
        self._zone.records[key] = dns.rrset.from_text_list(key[0], ttl, "IN", rdtype, rdatas)

    def soa(self, zone: str, minimum: int = 5, ttl: int = 30) -> None:
        """The SOA that negative answers carry (RFC 2308)."""
        self._zone.soa = dns.rrset.from_text(
            _canonical(zone),
            ttl,
            "IN",
            "SOA",
            f"ns.{zone} hostmaster.{zone} 1 3600 600 86400 {minimum}",
        )

    def fail(self, how: str, name: str | None = None, rdtype: str | None = None) -> None:
        """Make a question (or, with no name, every question) fail: "timeout" or an rcode name."""
        key = None
        if name is not None:
            key = (_canonical(name), int(dns.rdatatype.from_text(rdtype or "A")))
        self._failures[key] = how

    def heal(self) -> None:
        """Forget every :meth:`fail`."""
        self._failures.clear()

    def respond(self, respond: Respond | None) -> None:
        """Answer every query with ``respond(query)`` (None: back to the records)."""
        self._respond = respond

    def hold(self) -> None:
        """Queries wait from now on until :meth:`release`."""
        self._gate = anyio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    # -- the Transport interface -------------------------------------------------------

    def attach(self, spawn: Callable[..., None]) -> None:
        """Only the health record's release after a recovery runs in the background here."""
        self.health.attach(spawn)

    async def query(self, qname: str, qtype: int, *, deadline: float | None = None) -> Reply:
        return await self.forward(wire.build_query(qname, qtype, 0))

    async def forward(self, query: bytes) -> Reply:
        if self.closed:
            raise RuntimeError("transport is closed")
        message = dns.message.from_wire(query)
        question = message.question[0]
        qname, qtype = question.name.to_text().lower(), int(question.rdtype)
        self.asked.append((qname, type_text(qtype)))
        self.counters.count_query(qname)
        await anyio.lowlevel.checkpoint()
        while self._gate is not None:
            await self._gate.wait()
        how = self._failures.get((qname, qtype), self._failures.get(None))
        if self._respond is not None:
            built = self._respond(message)
            if isinstance(built, str):
                how = built
            else:
                return self._reply(query, built if isinstance(built, bytes) else built.to_wire())
        if how is not None:
            self._raise(how, qname, qtype)
        return self._reply(query, self._answer(message).to_wire())

    async def aclose(self) -> None:
        self.closed = True

    # -- answering ---------------------------------------------------------------------

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        question = query.question[0]
        name, qtype = question.name, int(question.rdtype)
        seen = set()
        while name not in seen:
            seen.add(name)
            key = (name.to_text().lower(), qtype)
            found = self._zone.records.get(key)
            if found is not None:
                response.answer.append(found)
                return response
            cname = self._zone.records.get((key[0], int(dns.rdatatype.CNAME)))
            if cname is None:
                break
            response.answer.append(cname)
            name = cname[0].target
        exists = any(owner == name.to_text().lower() for owner, _ in self._zone.records)
        if not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        if self._zone.soa is not None:
            response.authority.append(self._zone.soa)
        return response

    def _reply(self, query: bytes, data: bytes) -> Reply:
        data = query[:2] + data[2:]
        return Reply(data, wire.parse(data), str(self.nameservers[0]))

    def _raise(self, how: str, qname: str, qtype: int) -> None:
        server = str(self.nameservers[0])
        if how == "timeout":
            self.counters.timeouts += 1
            raise ResolveTimeout(
                f"{qname} {type_text(qtype)}: no answer from {server} (scripted)",
                name=qname,
                rdtype=type_text(qtype),
            )
        self.counters.server_errors += 1
        raise ServerFailure(
            f"{qname} {type_text(qtype)}: every nameserver failed: {server} answered {how}",
            name=qname,
            rdtype=type_text(qtype),
        )


def _canonical(name: str) -> str:
    return dns.name.from_text(name).to_text().lower()
