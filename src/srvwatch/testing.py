"""An in-process authoritative DNS server on loopback, for tests and fault injection.

``ZoneServer`` answers from a zone you can change while it runs and misbehaves on request
(latency, drops, error rcodes, truncation, spoofed replies), so resolver code can be tested
against the failures it exists to survive without a real DNS server. It runs on anyio, so the
same tests work on asyncio, uvloop and trio.

Supported: exact names, CNAME chains inside the zone, NODATA / NXDOMAIN with the SOA for
negative caching, EDNS(0) payload sizes and truncation, UDP and TCP on one port. Not
supported (not needed by a service-discovery client): wildcards, delegations, DNSSEC, zone
transfers.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import struct
import textwrap
from collections import Counter
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from types import TracebackType

import anyio
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rdtypes.IN.SRV
import dns.rdtypes.mxbase
import dns.rdtypes.nsbase
import dns.rrset
import dns.zone

from . import wire
from .address import format_hostport
from .listen import CLOSE, DnsListener, Peer, Reply

__all__ = ["Fault", "ZoneServer"]

log = logging.getLogger(__name__)

_IN = dns.rdataclass.IN
_A = dns.rdatatype.A
_AAAA = dns.rdatatype.AAAA
_CNAME = dns.rdatatype.CNAME
_SOA = dns.rdatatype.SOA
_ANY = dns.rdatatype.ANY
_MAX_UDP = 65507
_CACHE_LIMIT = 10_000  # rendered answers; cleared when full (0x20-randomised names could grow it)
# The header's third byte: QR, opcode, AA, TC, RD (wire's flags are 16-bit, this walk reads bytes).
_QR = wire.FLAG_QR >> 8
_RD = wire.FLAG_RD >> 8
_QR_OR_OPCODE = _QR | 0x78
# wire keeps its structs private; the walk below needs the same two layouts.
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_WRONG_QNAME = dns.name.from_text("wrong-question.invalid.")


@dataclass(frozen=True, slots=True)
class Fault:
    """A misbehaviour applied to matching queries (all of them if ``name``/``rdtype`` are None).

    Several active faults may match one query; their effects add up (latencies are summed).
    ``truncate``, ``wrong_id`` and ``wrong_question`` only affect UDP, so a fault made only of
    them does not match (nor use up its ``count`` on) TCP queries.  The spoofed reply sent
    first by ``wrong_id`` / ``wrong_question`` is an authoritative NXDOMAIN, so a client that
    wrongly accepts it fails visibly.
    """

    latency: float = 0.0
    drop: bool = False
    rcode: str | None = None
    truncate: bool = False
    wrong_id: bool = False
    wrong_question: bool = False
    name: str | None = None
    rdtype: str | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency) and self.latency >= 0):
            raise ValueError(f"Fault latency must be a finite number >= 0, not {self.latency!r}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"Fault count must be >= 1 or None, not {self.count!r}")
        if self.rcode is not None:
            _rcode(self.rcode)
        if self.rdtype is not None:
            _rdtype(self.rdtype)

    def _affects_tcp(self) -> bool:
        return self.latency > 0 or self.drop or self.rcode is not None


@dataclass(slots=True)
class _Armed:
    """An injected fault with its match key precomputed and its remaining uses."""

    fault: Fault
    qname: bytes | None  # lowercased wire form
    rdtype: int | None
    remaining: int | None


@dataclass(slots=True)
class _Query:
    """What the answer depends on, read from a query's wire form."""

    qid: int
    rd: bool
    question: bytes | None  # as sent (case preserved), to echo back; None: not available
    qname: bytes  # lowercased wire form
    qtype: int
    qclass: int
    edns: int  # -1: no OPT, else the EDNS version
    payload: int


@dataclass(slots=True)
class _Plan:
    """What to do for one query: wait ``delay``, then send ``packets`` (or drop)."""

    packets: list[bytes]
    delay: float = 0.0
    drop: bool = False


def _rcode(text: str) -> dns.rcode.Rcode:
    try:
        return dns.rcode.Rcode.from_text(text)
    except dns.rcode.UnknownRcode:
        raise ValueError(f"unknown rcode {text!r}") from None


def _rdtype(text: str) -> dns.rdatatype.RdataType:
    try:
        value = dns.rdatatype.RdataType.from_text(text)
    except dns.rdatatype.UnknownRdatatype:
        raise ValueError(f"unknown record type {text!r}") from None
    if dns.rdatatype.is_metatype(value) or value == _ANY:
        raise ValueError(f"{text!r} is not a record type that can be stored or matched")
    return value


def _parse_query(data: bytes) -> _Query | None:
    """Read a plain query (one question, optional OPT) without dnspython: the hot path.

    Returns None for anything else; the slow path then decides (FORMERR, NOTIMP, ignore...).
    Not :func:`wire.question_key`: the answer also needs the question's bytes as sent (to
    echo the client's letter case), the name in wire form (the render cache's key) and the
    OPT record's version and payload, and this server is the one the benchmarks query.
    """
    size = len(data)
    if size < 17 or data[2] & _QR_OR_OPCODE:  # QR set or opcode != QUERY
        return None
    qid, _, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if qdcount != 1 or ancount or nscount or arcount > 1:
        return None
    i = 12
    while True:
        if i >= size:
            return None
        length = data[i]
        if length == 0:
            i += 1
            break
        if length > 63:  # compression pointer or extended label: leave it to dnspython
            return None
        i += length + 1
    if i - 12 > 255 or i + 4 > size:
        return None
    qname_end = i
    qtype, qclass = struct.unpack_from("!HH", data, i)
    i += 4
    edns, payload = -1, 512
    if arcount:
        if i + 11 > size or data[i] != 0:
            return None
        rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, i + 1)
        if rtype != wire.TYPE_OPT:
            return None
        i += 11 + rdlen
        edns, payload = (ttl >> 16) & 0xFF, max(512, rclass)
    if i != size:
        return None
    return _Query(
        qid=qid,
        rd=bool(data[2] & _RD),
        question=data[12 : qname_end + 4],
        qname=data[12:qname_end].lower(),
        qtype=qtype,
        qclass=qclass,
        edns=edns,
        payload=payload,
    )


def _header_only(data: bytes, rcode: int) -> bytes:
    """A reply that echoes the ID, opcode and RD of a query we could not otherwise parse.

    For NOTIMP: :func:`wire.make_response` answers FORMERR to a message without a question.
    """
    return struct.pack(
        "!HBBHHHH", (data[0] << 8) | data[1], 0x80 | (data[2] & 0x79), rcode, 0, 0, 0, 0
    )


def _patch(template: bytes, query: _Query) -> bytes:
    """Make a cached reply answer this query: its ID, its RD bit, its question's letter case."""
    flags = bytes((template[2] | (1 if query.rd else 0),))
    head = query.qid.to_bytes(2, "big") + flags + template[3:12]
    if query.question is None:
        return head + template[12:]
    return head + query.question + template[12 + len(query.question) :]


def _slots(rdata: dns.rdata.Rdata) -> Iterable[str]:
    for cls in type(rdata).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        yield from (slots,) if isinstance(slots, str) else slots


class ZoneServer:
    """An authoritative server for one zone on ``host`` (UDP and TCP on the same port).

    Names passed to the methods are absolute when they end with a dot or when, read as
    absolute, they fall inside the zone (``"a.api.svc.test"``); otherwise they are relative to
    ``origin`` (``"a.api"``, ``"@"``).  Names inside ``rdatas`` follow the same rule.  Changes
    to records and faults take effect for the next query.  Not thread-safe: use it from the
    event loop that runs it.
    """

    tcp_idle_timeout: float = 30.0  # close idle TCP connections, as RFC 7766 asks servers to

    def __init__(
        self,
        zone: str | None = None,
        *,
        origin: str = "svc.test.",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        try:
            self._ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"ZoneServer host must be an IP address, not {host!r}") from None
        if not 0 <= port <= 65535:
            raise ValueError(f"ZoneServer port must be in 0..65535, not {port!r}")
        try:
            self.origin = dns.name.from_text(origin)
        except dns.exception.DNSException as exc:
            raise ValueError(f"bad ZoneServer origin {origin!r}: {exc}") from None
        self.host = host
        self.port = port
        self._requested_port = port
        self.queries = 0
        self._counts: Counter[tuple[bytes, int]] = Counter()
        self._nodes: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
        self._cache: dict[
            tuple[bytes, int, int, int, dns.rcode.Rcode | None], tuple[bytes, bytes]
        ] = {}
        self._faults: list[_Armed] = []
        self._listener: DnsListener | None = None
        self._load(zone)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> ZoneServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def address(self) -> str:
        """``host:port`` (``[host]:port`` for IPv6), the form nameserver lists take."""
        return format_hostport(self.host, self.port)

    async def start(self) -> None:
        """Bind UDP and TCP on one port and serve until :meth:`aclose`."""
        if self._listener is not None:
            raise RuntimeError("ZoneServer is already running")
        listener = DnsListener(
            self._handle,
            self.host,
            self._requested_port,
            idle_timeout=self.tcp_idle_timeout,
            name=f"ZoneServer({self.origin})",
        )
        await listener.start()
        self._listener = listener
        self.port = listener.port
        log.debug("ZoneServer for %s serving on %s", self.origin, self.address)

    async def aclose(self) -> None:
        """Stop serving and close every socket, connection and task. Idempotent."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.aclose()

    # -- records -----------------------------------------------------------------------------

    def set_records(self, name: str, rdtype: str, rdatas: list[str], ttl: int = 30) -> None:
        """Replace the RRset ``name``/``rdtype`` (an empty list deletes it)."""
        owner, rt = self._name(name), _rdtype(rdtype)
        rds = [self._rdata(rt, text) for text in rdatas]
        if not rds:
            self.delete(name, rdtype)
            return
        self._put(owner, rt, dns.rrset.from_rdata_list(owner, _ttl(ttl), rds))

    def add_records(self, name: str, rdtype: str, rdatas: list[str], ttl: int = 30) -> None:
        """Add records to the RRset ``name``/``rdtype``; the whole RRset takes ``ttl``."""
        owner, rt = self._name(name), _rdtype(rdtype)
        rds = [self._rdata(rt, text) for text in rdatas]
        old = self._nodes.get(owner, {}).get(rt)
        if old is not None:
            rds = list(old) + rds
        if rds:
            self._put(owner, rt, dns.rrset.from_rdata_list(owner, _ttl(ttl), rds))

    def delete(self, name: str, rdtype: str | None = None) -> None:
        """Delete one RRset, or every record at ``name``. Deleting nothing is not an error."""
        owner = self._name(name)
        node = self._nodes.get(owner)
        if node is None:
            return
        if rdtype is None:
            del self._nodes[owner]
        else:
            node.pop(_rdtype(rdtype), None)
            if not node:
                del self._nodes[owner]
        self._changed()

    # -- faults and counters -----------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Arm ``fault`` for the next matching queries (until ``count`` runs out or cleared)."""
        qname = (
            None if fault.name is None else self._name(fault.name).canonicalize().to_digestable()
        )
        rdtype = None if fault.rdtype is None else _rdtype(fault.rdtype)
        self._faults.append(_Armed(fault, qname, rdtype, fault.count))

    def clear_faults(self) -> None:
        """Disarm every fault: the server answers normally again."""
        self._faults.clear()

    def query_count(self, name: str | None = None, rdtype: str | None = None) -> int:
        """Queries received for ``name`` and/or ``rdtype`` (both None: all readable queries)."""
        key = None if name is None else self._name(name).canonicalize().to_digestable()
        rt = None if rdtype is None else int(dns.rdatatype.from_text(rdtype))
        return sum(
            n
            for (qname, qtype), n in self._counts.items()
            if (key is None or qname == key) and (rt is None or qtype == rt)
        )

    # -- zone contents -----------------------------------------------------------------------

    def _load(self, text: str | None) -> None:
        if text is not None:
            try:
                zone = dns.zone.from_text(
                    textwrap.dedent(text),  # an indented literal would read as owner-less lines
                    origin=self.origin,
                    relativize=False,
                    check_origin=False,
                )
            except (dns.exception.DNSException, KeyError) as exc:
                raise ValueError(f"bad zone text for {self.origin}: {exc}") from None
            for owner, node in zone.nodes.items():
                for rds in node.rdatasets:
                    rrset = dns.rrset.from_rdata_list(owner, rds.ttl, list(rds))
                    self._nodes.setdefault(owner, {})[rds.rdtype] = rrset
        apex = self._nodes.setdefault(self.origin, {})
        ns = dns.name.Name(("ns", *self.origin.labels))
        host = dns.name.Name(("hostmaster", *self.origin.labels))
        if _SOA not in apex:
            soa = f"{ns} {host} 1 3600 600 86400 5"
            apex[_SOA] = dns.rrset.from_text_list(self.origin, 30, _IN, _SOA, [soa])
        if dns.rdatatype.NS not in apex:
            apex[dns.rdatatype.NS] = dns.rrset.from_text_list(
                self.origin, 30, _IN, dns.rdatatype.NS, [str(ns)]
            )

    def _name(self, text: str) -> dns.name.Name:
        try:
            if text.endswith("."):
                name = dns.name.from_text(text)
            elif text in ("", "@"):
                name = self.origin
            else:
                name = dns.name.from_text(text)
                if not name.is_subdomain(self.origin):
                    name = dns.name.from_text(text, self.origin)
        except dns.exception.DNSException as exc:
            raise ValueError(f"bad name {text!r}: {exc}") from None
        if not name.is_subdomain(self.origin):
            raise ValueError(f"name {text!r} is outside the zone {self.origin}")
        return name

    def _rdata(self, rdtype: dns.rdatatype.RdataType, text: str) -> dns.rdata.Rdata:
        """Parse record text; a name in it that reads as absolute and in-zone stays absolute."""
        try:
            rel = dns.rdata.from_text(_IN, rdtype, text, origin=self.origin, relativize=False)
            absolute = dns.rdata.from_text(
                _IN, rdtype, text, origin=dns.name.root, relativize=False
            )
        except (dns.exception.DNSException, ValueError) as exc:
            kind = dns.rdatatype.to_text(rdtype)
            raise ValueError(f"bad {kind} record {text!r}: {exc}") from None
        changes = {}
        for slot in _slots(rel):
            value = getattr(absolute, slot)
            if (
                isinstance(value, dns.name.Name)
                and value != getattr(rel, slot)
                and value.is_subdomain(self.origin)
            ):
                changes[slot] = value
        return rel.replace(**changes) if changes else rel

    def _put(self, owner: dns.name.Name, rdtype: int, rrset: dns.rrset.RRset) -> None:
        node = self._nodes.get(owner, {})
        others = [t for t in node if t != rdtype]
        if (rdtype == _CNAME and others) or (rdtype != _CNAME and _CNAME in node):
            raise ValueError(f"{owner}: a CNAME cannot coexist with other records (RFC 1034 3.6.2)")
        self._nodes.setdefault(owner, node)[rdtype] = rrset
        self._changed(bump_serial=rdtype != _SOA)

    def _changed(self, *, bump_serial: bool = True) -> None:
        """Forget rendered answers; bump the SOA serial like a real primary would."""
        self._cache.clear()
        soa = self._nodes.get(self.origin, {}).get(_SOA)
        if bump_serial and soa is not None:
            old = soa[0]
            assert isinstance(old, dns.rdtypes.ANY.SOA.SOA)
            new = old.replace(serial=(old.serial + 1) & 0xFFFFFFFF)
            self._nodes[self.origin][_SOA] = dns.rrset.from_rdata_list(self.origin, soa.ttl, [new])

    # -- answering ---------------------------------------------------------------------------

    def _handle(self, data: bytes, peer: Peer, tcp: bool) -> Reply | Awaitable[Reply]:
        """The listener's handler: the reply now, or later when a fault adds latency."""
        plan = self._plan(data, tcp=tcp)
        if plan is None:
            return None
        reply: Reply
        if plan.drop:
            if not tcp:
                return None  # a dropped datagram: the latency does not matter
            reply = CLOSE
        else:
            reply = plan.packets[0] if len(plan.packets) == 1 else plan.packets
        if plan.delay > 0:
            return _later(plan.delay, reply)
        return reply

    def _plan(self, data: bytes, *, tcp: bool) -> _Plan | None:
        """Decide the reply to one message, or None to ignore it. Never raises on bad input."""
        query = _parse_query(data)
        if query is None:
            if len(data) < 12 or data[2] & _QR:  # no header, or a response: never answer
                return None
            if (data[2] >> 3) & 0xF != dns.opcode.QUERY:
                return _Plan([_header_only(data, wire.RCODE_NOTIMP)])
            query = self._parse_slow(data)
            if query is None:
                return _Plan([wire.make_response(data, wire.RCODE_FORMERR)])
        self.queries += 1
        self._counts[(query.qname, query.qtype)] += 1

        plan = _Plan([])
        forced: dns.rcode.Rcode | None = None
        truncate = wrong_id = wrong_question = False
        if self._faults:
            for armed in self._matching(query, tcp=tcp):
                fault = armed.fault
                plan.delay += fault.latency
                plan.drop |= fault.drop
                truncate |= fault.truncate
                wrong_id |= fault.wrong_id
                wrong_question |= fault.wrong_question
                if fault.rcode is not None and forced is None:
                    forced = _rcode(fault.rcode)
        if plan.drop:
            return plan

        full, tc = self._rendered(query, forced)
        limit = 65535 if tcp else (min(query.payload, _MAX_UDP) if query.edns >= 0 else 512)
        if not tcp:
            if wrong_id:
                spoof = self._spoof(query, query.qname)
                spoof.qid ^= 0x5A5A
                plan.packets.append(_patch(self._render(spoof, dns.rcode.NXDOMAIN)[0], spoof))
            if wrong_question:
                wrong = _WRONG_QNAME.to_digestable()
                spoof = self._spoof(query, wrong if query.qname != wrong else b"\x01x\x00")
                plan.packets.append(_patch(self._render(spoof, dns.rcode.NXDOMAIN)[0], spoof))
        plan.packets.append(
            _patch(tc if (truncate and not tcp) or len(full) > limit else full, query)
        )
        return plan

    def _matching(self, query: _Query, *, tcp: bool) -> list[_Armed]:
        hits = []
        for armed in self._faults:
            if (
                (armed.qname is None or armed.qname == query.qname)
                and (armed.rdtype is None or armed.rdtype == query.qtype)
                and (not tcp or armed.fault._affects_tcp())
            ):
                hits.append(armed)
                if armed.remaining is not None:
                    armed.remaining -= 1
        if any(armed.remaining == 0 for armed in hits):
            self._faults = [a for a in self._faults if a.remaining != 0]
        return hits

    @staticmethod
    def _spoof(query: _Query, qname: bytes) -> _Query:
        return _Query(query.qid, query.rd, None, qname, query.qtype, query.qclass, query.edns, 512)

    def _parse_slow(self, data: bytes) -> _Query | None:
        try:
            msg = dns.message.from_wire(data)
        except Exception as exc:  # hostile bytes: any parse error is the client's
            log.debug("ZoneServer: malformed query (%s)", exc)
            return None
        if len(msg.question) != 1:
            return None
        q = msg.question[0]
        return _Query(
            qid=msg.id,
            rd=bool(msg.flags & dns.flags.RD),
            question=None,
            qname=q.name.canonicalize().to_digestable(),
            qtype=q.rdtype,
            qclass=q.rdclass,
            edns=msg.edns,
            payload=max(512, msg.payload) if msg.edns >= 0 else 512,
        )

    def _rendered(self, query: _Query, forced: dns.rcode.Rcode | None) -> tuple[bytes, bytes]:
        """The reply templates (full, truncated) for this question: rendered once per change."""
        key = (query.qname, query.qtype, query.qclass, min(query.edns, 1), forced)
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            hit = self._cache[key] = self._render(query, forced)
        return hit

    def _render(self, query: _Query, forced: dns.rcode.Rcode | None) -> tuple[bytes, bytes]:
        qname = dns.name.from_wire(query.qname, 0)[0]
        msg = self._message(qname, query)
        if query.edns > 0:
            msg.set_rcode(dns.rcode.BADVERS)
        elif forced is not None:
            msg.set_rcode(forced)
            if forced in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                msg.flags |= dns.flags.AA
        else:
            self._answer(msg, qname, query.qtype, query.qclass)
        try:
            full = msg.to_wire(max_size=65535)
        except dns.exception.TooBig:
            log.debug("ZoneServer: answer for %s does not fit in 64 KiB", qname)
            msg = self._message(qname, query)
            msg.set_rcode(dns.rcode.SERVFAIL)
            full = msg.to_wire()
        tc = self._message(qname, query)
        tc.flags = msg.flags | dns.flags.TC
        tc.set_rcode(msg.rcode())
        return full, tc.to_wire()

    @staticmethod
    def _message(qname: dns.name.Name, query: _Query) -> dns.message.Message:
        msg = dns.message.Message(id=0)
        msg.flags = dns.flags.QR
        rdclass, rdtype = (
            dns.rdataclass.RdataClass(query.qclass),
            dns.rdatatype.RdataType(query.qtype),
        )
        msg.question = [dns.rrset.RRset(qname, rdclass, rdtype)]
        if query.edns >= 0:
            msg.use_edns(0, 0, wire.DEFAULT_EDNS_PAYLOAD)
        return msg

    def _answer(
        self, msg: dns.message.Message, qname: dns.name.Name, qtype: int, qclass: int
    ) -> None:
        """Fill ``msg`` from the zone (RFC 1034 4.3.2, without wildcards or delegations)."""
        if (
            qclass != _IN
            or qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
            or not qname.is_subdomain(self.origin)
        ):
            msg.set_rcode(dns.rcode.REFUSED)
            return
        msg.flags |= dns.flags.AA
        name, seen, negative = qname, {qname}, False
        while True:
            node = self._nodes.get(name)
            if node is None:
                if not any(other.is_subdomain(name) for other in self._nodes):
                    msg.set_rcode(dns.rcode.NXDOMAIN)  # RFC 6604: rcode of the chain's last name
                negative = True
                break
            if qtype == _ANY:
                msg.answer.extend(node.values())
                break
            rrset = node.get(qtype)
            if rrset is not None:
                msg.answer.append(rrset)
                break
            cname = node.get(_CNAME)
            if cname is None:
                negative = True
                break
            msg.answer.append(cname)
            target = cname[0]
            assert isinstance(target, dns.rdtypes.nsbase.NSBase)
            if target.target in seen or not target.target.is_subdomain(self.origin):
                break
            name = target.target
            seen.add(name)
        soa = self._nodes.get(self.origin, {}).get(_SOA)
        if negative and soa is not None:
            first = soa[0]
            assert isinstance(first, dns.rdtypes.ANY.SOA.SOA)
            ttl = min(soa.ttl, first.minimum)  # RFC 2308 section 3
            msg.authority.append(dns.rrset.from_rdata_list(self.origin, ttl, list(soa)))
        self._additional(msg)

    def _additional(self, msg: dns.message.Message) -> None:
        """Addresses of in-zone SRV/MX/NS targets, as authoritative servers add them."""
        added: set[tuple[dns.name.Name, int]] = set()
        for rrset in msg.answer:
            for rd in rrset:
                if isinstance(rd, dns.rdtypes.IN.SRV.SRV):
                    target = rd.target
                elif isinstance(rd, dns.rdtypes.mxbase.MXBase):
                    target = rd.exchange
                elif rrset.rdtype == dns.rdatatype.NS and isinstance(rd, dns.rdtypes.nsbase.NSBase):
                    target = rd.target
                else:
                    continue
                node = self._nodes.get(target)
                if node is None:
                    continue
                for rt in (_A, _AAAA):
                    if rt in node and (target, rt) not in added:
                        added.add((target, rt))
                        msg.additional.append(node[rt])


async def _later(delay: float, reply: Reply) -> Reply:
    """A latency fault: the listener sends ``reply`` after ``delay``, other queries meanwhile."""
    await anyio.sleep(delay)
    return reply


def _ttl(ttl: int) -> int:
    if not 0 <= ttl <= 0x7FFFFFFF:
        raise ValueError(f"TTL must be in 0..2147483647, not {ttl!r}")
    return ttl
