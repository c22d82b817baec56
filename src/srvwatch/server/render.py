"""Client queries in, replies out: the DNS stub's wire work, pure and clock-free.

A query is read just far enough to key it (its question, as the client sent
it, and the DO and CD bits); a reply is built from the upstream reply kept
in the record store: its records with every TTL clamped to the policy's
floor and cap and counted down in whole seconds, under the client's ID,
question and RD bit, with an OPT record only if the client sent one, and
truncated (TC) when larger than the client can take. A cache hit builds
nothing: the TTL-patched bytes of one second are kept and only the ID and
the question's letter case change per reply.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import dns.message

from .. import wire
from ..policy import Policy

__all__ = ["ClientQuery", "Template", "error_reply", "read_query", "template"]

_HEADER = struct.Struct(">HHHHHH")
_OPT_FIXED = struct.Struct(">HHIH")
_DO = 0x8000
_CD = 0x0010
_QR_RA = wire.FLAG_QR | wire.FLAG_RA
_RCODE_FORMERR = wire.RCODE_FORMERR
_RCODE_NOTIMP = wire.RCODE_NOTIMP
OUR_PAYLOAD = wire.DEFAULT_EDNS_PAYLOAD


class ClientQuery(NamedTuple):
    """What a reply to a client's query depends on."""

    id: bytes
    rd: int
    cd: int
    question: bytes
    """The question section as sent: name (case kept), type, class."""
    qname: str
    qtype: int
    qclass: int
    edns: bool
    payload: int
    do: bool
    key: bytes
    """The question lowercased, plus the DO and CD bits: what a cached reply is found by."""


def read_query(data: bytes) -> ClientQuery | int | None:
    """A query's parts; an rcode to answer it with (FORMERR, NOTIMP); or None to ignore it.

    Responses (QR set) and anything without a whole header are ignored, so
    the stub can never be made to answer a reply. Work is bounded by the
    message's size: one walk of the question and of at most one OPT record.
    """
    if len(data) < 12:
        return None
    _qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & wire.FLAG_QR:
        return None
    if (flags >> 11) & 0xF:
        return _RCODE_NOTIMP
    if qdcount != 1 or ancount or nscount or arcount > 1:
        return _RCODE_FORMERR
    # The name: plain labels only (clients never compress a lone question).
    i, n = 12, len(data)
    while True:
        if i >= n:
            return _RCODE_FORMERR
        length = data[i]
        if length == 0:
            i += 1
            break
        if length > 63:
            return _RCODE_FORMERR
        i += length + 1
    if i - 12 > 255 or i + 4 > n:
        return _RCODE_FORMERR
    qtype, qclass = struct.unpack_from(">HH", data, i)
    question = data[12 : i + 4]
    end = i + 4
    edns, payload, do = False, 512, False
    if arcount:
        if end + 11 > n or data[end] != 0:
            return _RCODE_FORMERR
        rtype, rclass, ttl, rdlen = _OPT_FIXED.unpack_from(data, end + 1)
        if rtype != wire.TYPE_OPT or end + 11 + rdlen != n:
            return _RCODE_FORMERR
        edns, payload, do = True, max(512, rclass), bool(ttl & _DO)
        end += 11 + rdlen
    if end != n:
        return _RCODE_FORMERR
    try:
        qname, _ = wire.read_name(data, 12)
    except wire.WireError:
        return _RCODE_FORMERR
    if qtype in (0, wire.TYPE_OPT) or (128 <= qtype <= 255 and qtype != wire.TYPE_ANY):
        return _RCODE_NOTIMP  # meta types and zone transfers are not for a stub cache
    cd = flags & _CD
    key = question.lower() + bytes(((2 if do else 0) | (1 if cd else 0),))
    return ClientQuery(
        data[:2], flags & wire.FLAG_RD, cd, question, qname, qtype, qclass, edns, payload, do, key
    )


def error_reply(query: bytes, rcode: int) -> bytes:
    """A header-and-question reply with ``rcode`` (REFUSED, SERVFAIL, FORMERR, NOTIMP)."""
    return wire.make_response(query, rcode)


class Template:
    """An upstream reply made ready to serve: sections without OPT, TTL offsets, clamps.

    ``ttls`` are the wire TTLs, each already clamped (positive answers to
    ``[min_ttl, max_ttl]``, negative ones to the negative bounds); a reply
    ``elapsed`` whole seconds later carries ``max(floor, ttl - elapsed)``.
    """

    __slots__ = (
        "body",
        "clamped_cap",
        "clamped_floor",
        "copies",
        "counts",
        "flags",
        "floor",
        "offsets",
        "question_end",
        "ttls",
    )

    def __init__(
        self,
        body: bytes,
        offsets: list[int],
        ttls: list[int],
        floor: int,
        flags: int,
        counts: bytes,
        question_end: int,
    ) -> None:
        self.body = body
        self.offsets = offsets
        self.ttls = ttls
        self.floor = floor
        self.flags = flags
        self.counts = counts
        self.question_end = question_end
        self.copies: dict[int, bytes] = {}
        """Elapsed whole seconds -> the body with its TTLs counted down (one kept)."""
        self.clamped_floor = 0
        """Records whose upstream TTL was raised to the floor."""
        self.clamped_cap = 0
        """Records whose upstream TTL was lowered to the cap."""

    def at(self, elapsed: int) -> bytes:
        """The body ``elapsed`` seconds after storage; made once per second, not per reply."""
        body = self.copies.get(elapsed)
        if body is None:
            buf = bytearray(self.body)
            floor = self.floor
            for offset, ttl in zip(self.offsets, self.ttls, strict=True):
                struct.pack_into(">I", buf, offset, max(floor, ttl - elapsed))
            body = bytes(buf)
            self.copies = {elapsed: body}
        return body

    def fixed(self, ttl: int) -> bytes:
        """The body with every TTL set to ``ttl`` (a stale answer: RFC 8767's 30 s)."""
        buf = bytearray(self.body)
        for offset in self.offsets:
            struct.pack_into(">I", buf, offset, ttl)
        return bytes(buf)

    def reply(self, query: ClientQuery, body: bytes, tcp: bool = False) -> bytes:
        """The reply to ``query``: its ID, RD and CD, its question's case, OPT if it sent one.

        Over UDP a reply larger than the client takes (512 bytes without EDNS)
        is truncated with TC set, and the client asks again over TCP.
        """
        flags = self.flags | query.rd | query.cd
        head = query.id + struct.pack(">H", flags)
        end = self.question_end
        if not query.edns:
            data = head + self.counts + query.question + body[end:]
            if not tcp and len(data) > 512:
                return self._truncated(query, head, with_opt=False)
            return data
        counts = self.counts[:6] + struct.pack(">H", int.from_bytes(self.counts[6:], "big") + 1)
        opt = b"\x00" + _OPT_FIXED.pack(wire.TYPE_OPT, OUR_PAYLOAD, _DO if query.do else 0, 0)
        data = head + counts + query.question + body[end:] + opt
        if not tcp and len(data) > query.payload:
            return self._truncated(query, head, with_opt=True)
        return data

    @staticmethod
    def _truncated(query: ClientQuery, head: bytes, *, with_opt: bool) -> bytes:
        flags = struct.unpack(">H", head[2:])[0] | wire.FLAG_TC
        tc_head = head[:2] + struct.pack(">H", flags)
        if with_opt:
            opt = b"\x00" + _OPT_FIXED.pack(wire.TYPE_OPT, OUR_PAYLOAD, _DO if query.do else 0, 0)
            return tc_head + struct.pack(">HHHH", 1, 0, 0, 1) + query.question + opt
        return tc_head + struct.pack(">HHHH", 1, 0, 0, 0) + query.question


def template(data: bytes, msg: wire.Message, policy: Policy, *, negative: bool) -> Template:
    """Make an upstream reply servable to clients: clamp its TTLs, drop its OPT record.

    The body keeps the upstream's question (the client's replaces it, same
    length) and its records; the OPT record, when it is the last record as
    servers send it, is cut off, else the reply is re-rendered without it.
    """
    # A reply whose compression pointers lead into a TTL field is re-encoded once, here:
    # counting its TTLs down in place would otherwise change a name.
    data, msg = wire.make_patchable(data, msg)
    records = (*msg.answers, *msg.authority, *msg.additional)
    end = max((rr.rdata_offset + rr.rdata_length for rr in records), default=0)
    question_end = 12 + len(wire.question_of(data)[0]) if msg.qname else 12
    arcount = len(msg.additional)
    if msg.edns_payload is not None and end and end < len(data):
        body = data[:end]  # OPT was last: drop it
    elif msg.edns_payload is not None:
        rendered = dns.message.from_wire(data)
        rendered.use_edns(False)
        plain = rendered.to_wire()
        return template(plain, wire.parse(plain), policy, negative=negative)
    else:
        body = data if not records else data[: max(end, question_end)]
    if negative:
        low, high = policy.negative_min_ttl, policy.negative_max_ttl
    else:
        low, high = policy.min_ttl, policy.max_ttl
    floor = max(int(low + 0.999), 1)  # whole seconds, never 0
    cap = int(high)
    offsets = [rr.ttl_offset for rr in records]
    cap = max(cap, floor)
    ttls = [min(max(rr.ttl, floor), cap) for rr in records]
    counts = struct.pack(">HHHH", 1, len(msg.answers), len(msg.authority), arcount)
    flags = _QR_RA | (msg.rcode & 0xF)
    result = Template(body, offsets, ttls, floor, flags, counts, question_end)
    result.clamped_floor = sum(1 for rr in records if rr.ttl < floor)
    result.clamped_cap = sum(1 for rr in records if rr.ttl > cap)
    return result
