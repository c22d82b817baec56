"""DNS wire format (RFC 1035) walked by hand, with every offset bounds-checked.

Every response the resolver receives and every query the stub receives goes through
here, so the walk avoids building objects it does not need: it records where each
resource record's TTL and RDATA sit and decodes only the few types srvwatch uses
(SRV, A, AAAA, CNAME/NS/PTR, SOA). Anything else is handed to dnspython on demand.

The bytes come from the network and may be hostile: the only exception a parse or
decode function raises is :class:`WireError`. Compression pointers must point
strictly backwards (so a walk always terminates), never into the header, and names
are limited to 255 octets once expanded. A parse reads each byte through pointers at
most once, so its cost follows the message's size, whatever the pointers.

TTLs are patched in place (cached answers are served that way), which is only safe
where no compression pointer leads into a TTL field: :func:`patchable` checks that,
and :func:`make_patchable` re-encodes the rare message that fails.
"""

from __future__ import annotations

import bisect
import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias

import dns.message
import dns.rdata
import dns.rdataclass
import dns.rdatatype

__all__ = [
    "CLASS_IN",
    "DEFAULT_EDNS_PAYLOAD",
    "FLAG_AA",
    "FLAG_QR",
    "FLAG_RA",
    "FLAG_RD",
    "FLAG_TC",
    "RCODE_FORMERR",
    "RCODE_NOERROR",
    "RCODE_NOTIMP",
    "RCODE_NXDOMAIN",
    "RCODE_REFUSED",
    "RCODE_SERVFAIL",
    "SECTION_ADDITIONAL",
    "SECTION_ANSWER",
    "SECTION_AUTHORITY",
    "TYPE_A",
    "TYPE_AAAA",
    "TYPE_ANY",
    "TYPE_CNAME",
    "TYPE_NS",
    "TYPE_OPT",
    "TYPE_PTR",
    "TYPE_SOA",
    "TYPE_SRV",
    "TYPE_TXT",
    "Message",
    "NameCache",
    "Record",
    "Soa",
    "WireError",
    "age_ttls",
    "build_query",
    "check_u16",
    "decode_a",
    "decode_aaaa",
    "decode_cname",
    "decode_rdata",
    "decode_soa",
    "decode_srv",
    "encode_name",
    "make_patchable",
    "make_response",
    "parse",
    "patch_id",
    "patchable",
    "question_key",
    "question_of",
    "read_name",
    "rewrite_ttls",
]

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_OPT = 41
TYPE_ANY = 255

CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080

#: DNS flag day 2020: large enough for typical answers, small enough to avoid IP fragmentation.
DEFAULT_EDNS_PAYLOAD = 1232

SECTION_ANSWER = 1
SECTION_AUTHORITY = 2
SECTION_ADDITIONAL = 3

_OPCODE_MASK = 0x7800
_HEADER_LEN = 12
# The smallest possible resource record: a root owner name plus the 10-byte fixed part.
_MIN_RR_LEN = 11
# A legitimate name needs a handful of hops; the cap bounds the work a hostile
# message can cause per name (pointer-to-pointer chains add no length).
_MAX_POINTERS = 32
# A failed walk (at most 127 labels and 32 pointers) caches nothing: parse() reads
# SRV targets ahead only until this many have failed; decode_srv reads the rest.
_MAX_BAD_TARGETS = 4
# Pointers into a segment of at most this many labels cost at most this many reads each;
# in longer segments every label's name is cached (see _cache_suffixes).
_SHORT_SEGMENT = 4
_MAX_TTL = 0x7FFFFFFF

_HEADER = struct.Struct(">HHHHHH")
_RR_FIXED = struct.Struct(">HHIH")
_QUESTION_FIXED = struct.Struct(">HH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_SRV_FIXED = struct.Struct(">HHH")
_SOA_FIXED = struct.Struct(">IIIII")

# Bytes that dnspython prints unescaped in a label: printable ASCII except "().;\@$ and
# the double quote. Everything else is written as \X (specials) or \DDD.
_SPECIALS = b'"().;\\@$'
_PLAIN = bytes(c for c in range(0x21, 0x7F) if c not in _SPECIALS)
_ESCAPES = tuple(
    ("\\" + chr(c)) if c in _SPECIALS else (chr(c) if 0x20 < c < 0x7F else f"\\{c:03d}")
    for c in range(256)
)

_BytesLike: TypeAlias = "bytes | bytearray | memoryview"


class WireError(ValueError):
    """Malformed or hostile DNS bytes."""


class Record(NamedTuple):
    """Where one resource record sits in a message; RDATA is decoded only on request.

    ``ttl`` is the wire value, except that values with the top bit set count as 0
    (RFC 2181 §8). The offsets let callers rewrite TTLs in place without re-encoding.
    A named tuple, because parse() makes one per record and a tuple is the cheapest
    immutable object Python builds.
    """

    name: str
    rdtype: int
    rdclass: int
    ttl: int
    ttl_offset: int
    rdata_offset: int
    rdata_length: int
    section: int


@dataclass(frozen=True, slots=True)
class Message:
    """The header, question and record positions of one DNS message."""

    id: int
    flags: int
    rcode: int
    qname: str
    qtype: int
    qclass: int
    answers: tuple[Record, ...]
    authority: tuple[Record, ...]
    additional: tuple[Record, ...]
    edns_payload: int | None
    names: NameCache = field(default_factory=dict, compare=False, repr=False)
    """The names read while parsing, by offset; lets :func:`decode_srv` skip a second walk.

    Also every offset a compression pointer led to: :func:`patchable` checks these."""
    patch_safe: bool | None = field(default=None, compare=False, repr=False)
    """:func:`patchable`'s verdict once it has looked (None before): TTL patches check it."""

    @property
    def qr(self) -> bool:
        return bool(self.flags & FLAG_QR)

    @property
    def aa(self) -> bool:
        return bool(self.flags & FLAG_AA)

    @property
    def tc(self) -> bool:
        return bool(self.flags & FLAG_TC)

    @property
    def rd(self) -> bool:
        return bool(self.flags & FLAG_RD)

    @property
    def ra(self) -> bool:
        return bool(self.flags & FLAG_RA)

    @property
    def opcode(self) -> int:
        return (self.flags & _OPCODE_MASK) >> 11


@dataclass(frozen=True, slots=True)
class Soa:
    """SOA RDATA; ``minimum`` bounds the negative-caching TTL (RFC 2308)."""

    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


def _as_bytes(data: _BytesLike) -> bytes:
    # bytes(b) returns b itself for exact bytes, so the common case costs nothing.
    return data if type(data) is bytes else bytes(data)


def _labels_to_text(labels: list[bytes]) -> str:
    if not labels:
        return "."
    raw = b".".join(labels)
    # Deleting the plain bytes leaves only the separators when no label needs escaping.
    if len(raw.translate(None, _PLAIN)) == len(labels) - 1:
        return raw.lower().decode("ascii") + "."
    escapes = _ESCAPES
    return ".".join("".join([escapes[c] for c in label.lower()]) for label in labels) + "."


# A per-message cache of names already read, keyed by the offset they start at:
# offset -> (text, octets on the wire, pointers followed, offset just after the name).
NameCache: TypeAlias = "dict[int, tuple[str, int, int, int]]"


def _read_name(
    data: bytes, offset: int, cache: NameCache | None = None, stop: int = 0
) -> tuple[str, int]:
    """Walk one possibly compressed name starting at ``offset``.

    Each pointer must target an offset strictly before the segment it was found in
    (so the walk terminates), at or after the header, and the labels read after a
    jump must stay before that segment: the same rules dnspython applies. ``stop``
    (when not 0) bounds the name's own bytes, as an RDATA's end does.

    With ``cache``, a pointer to a name already read is resolved without walking it
    again, but only when walking it would have passed the same checks, so the result
    (and every error) is exactly that of the uncached walk. This loop reads the name's
    own bytes; after a jump, :func:`_read_jumped` goes on.
    """
    n = len(data)
    pos = offset
    limit = stop or n
    wire_len = 1
    labels: list[bytes] = []
    while True:
        if pos >= limit:
            if limit == n:
                raise WireError(f"name at offset {offset} is truncated")
            raise WireError(f"name at offset {offset} runs past the end of its field")
        length = data[pos]
        if length == 0:
            end = pos + 1
            break
        if length < 0x40:
            pos += 1
            nxt = pos + length
            if nxt > limit:
                raise WireError(f"name at offset {offset}: label at {pos - 1} runs past its end")
            wire_len += length + 1
            if wire_len > 255:
                raise WireError(f"name at offset {offset} is longer than 255 octets")
            labels.append(data[pos:nxt])
            pos = nxt
        elif length >= 0xC0:
            if pos + 1 >= limit:
                raise WireError(f"name at offset {offset}: compression pointer is truncated")
            ptr = ((length & 0x3F) << 8) | data[pos + 1]
            if ptr >= offset:
                raise WireError(
                    f"name at offset {offset}: compression pointer to {ptr} does not point back"
                )
            if ptr < _HEADER_LEN:
                raise WireError(
                    f"name at offset {offset}: compression pointer into the header ({ptr})"
                )
            if cache is not None:
                hit = cache.get(ptr)
                # The cached walk read [ptr, hit_end) under limit n; here the limit is
                # offset, so it is only the same walk if it ended before offset.
                if (
                    hit is not None
                    and hit[3] <= offset
                    and wire_len + hit[1] - 1 <= 255
                    and hit[2] < _MAX_POINTERS
                ):
                    text = hit[0]
                    if labels and text != ".":
                        text = _labels_to_text(labels) + text
                    elif labels:
                        text = _labels_to_text(labels)
                    cache[offset] = (text, wire_len + hit[1] - 1, hit[2] + 1, pos + 2)
                    return text, pos + 2
            return _read_jumped(data, offset, ptr, pos + 2, wire_len, labels, cache)
        else:
            raise WireError(f"name at offset {offset}: reserved label type 0x{length & 0xC0:02x}")
    text = _labels_to_text(labels)
    if cache is not None:
        cache[offset] = (text, wire_len, 0, end)
    return text, end


def _read_jumped(
    data: bytes,
    offset: int,
    ptr: int,
    end: int,
    wire_len: int,
    labels: list[bytes],
    cache: NameCache | None,
) -> tuple[str, int]:
    """Go on walking the name at ``offset`` from its first pointer, to ``ptr``, at ``end - 2``.

    With ``cache``, the walk also caches the name at every pointer target and label
    it reads here, and looks each label up before reading it: pointers into the
    middle of one long name then cost one lookup each, not a walk each.
    """
    limit = offset
    seg_start = pos = ptr
    hops = 1
    suffix = ""
    suffix_len = 1
    # (target, labels before it, wire_len before it, hops after it) of each jump that
    # missed the cache, and where each segment read from such a target ends.
    jumps: list[tuple[int, int, int, int]] = []
    ends: list[int] = []
    if cache is not None:
        jumps.append((ptr, len(labels), wire_len, 1))
    while True:
        if pos >= limit:
            raise WireError(f"name at offset {offset}: compressed suffix overlaps the name")
        length = data[pos]
        if length == 0:
            ends.append(pos + 1)
            break
        if length < 0x40:
            if cache is not None:
                hit = cache.get(pos)
                if (
                    hit is not None
                    and hit[3] <= limit
                    and wire_len + hit[1] - 1 <= 255
                    and hops + hit[2] <= _MAX_POINTERS
                    and (hit[2] == 0 or _jump_fits(data, cache, hit[3], seg_start))
                ):
                    ends.append(hit[3])
                    suffix = hit[0]
                    suffix_len = hit[1]
                    wire_len += hit[1] - 1
                    hops += hit[2]
                    break
            pos += 1
            nxt = pos + length
            if nxt > limit:
                raise WireError(f"name at offset {offset}: label at {pos - 1} runs past its end")
            wire_len += length + 1
            if wire_len > 255:
                raise WireError(f"name at offset {offset} is longer than 255 octets")
            labels.append(data[pos:nxt])
            pos = nxt
        elif length >= 0xC0:
            if pos + 1 >= limit:
                raise WireError(f"name at offset {offset}: compression pointer is truncated")
            ptr = ((length & 0x3F) << 8) | data[pos + 1]
            ends.append(pos + 2)
            if ptr >= seg_start:
                raise WireError(
                    f"name at offset {offset}: compression pointer to {ptr} does not point back"
                )
            if ptr < _HEADER_LEN:
                raise WireError(
                    f"name at offset {offset}: compression pointer into the header ({ptr})"
                )
            hops += 1
            if hops > _MAX_POINTERS:
                raise WireError(f"name at offset {offset}: too many compression pointers")
            if cache is not None:
                hit = cache.get(ptr)
                # As in _read_name: the same walk only if it ended before seg_start.
                if (
                    hit is not None
                    and hit[3] <= seg_start
                    and wire_len + hit[1] - 1 <= 255
                    and hops + hit[2] <= _MAX_POINTERS
                ):
                    suffix = hit[0]
                    suffix_len = hit[1]
                    wire_len += hit[1] - 1
                    hops += hit[2]
                    break
                jumps.append((ptr, len(labels), wire_len, hops))
            limit = seg_start
            seg_start = pos = ptr
        else:
            raise WireError(f"name at offset {offset}: reserved label type 0x{length & 0xC0:02x}")
    head = _labels_to_text(labels)
    if suffix and suffix != ".":
        text = head + suffix if labels else suffix
    else:
        text = head
        suffix = ""
    if cache is not None:
        cache[offset] = (text, wire_len, hops, end)
        # Escapes lengthen the text; without any, a suffix's text is a slice of the whole.
        plain = len(head) == wire_len - suffix_len
        _cache_suffixes(cache, labels, jumps, ends, text, suffix, plain, wire_len, hops)
    return text, end


def _jump_fits(data: bytes, cache: NameCache, seg_end: int, seg_start: int) -> bool:
    """Whether a cached walk from inside this segment also holds from its start.

    That walk's first segment began later, at the cached offset, and ended with a
    pointer (at ``seg_end - 2``): from ``seg_start``, the pointer must point before it,
    and the segment it points to must end before it.
    """
    target = ((data[seg_end - 2] & 0x3F) << 8) | data[seg_end - 1]
    if target >= seg_start:
        return False
    after = cache.get(target)
    return after is not None and after[3] <= seg_start


def _cache_suffixes(
    cache: NameCache,
    labels: list[bytes],
    jumps: list[tuple[int, int, int, int]],
    ends: list[int],
    text: str,
    suffix: str,
    plain: bool,
    wire_len: int,
    hops: int,
) -> None:
    """Cache, from one successful walk, the name at each pointer target it followed.

    A walk that succeeded under a limit reads the same as one under no limit, so these
    entries are what walks starting there would cache. In a long segment, the name at
    each label is cached too: then no byte is read through a pointer more than once per
    parse (plus a few labels per name), whatever the pointers.
    """
    count = len(jumps)
    nlabels = len(labels)
    for k in range(count):
        p, i, w, after = jumps[k]
        last = jumps[k + 1][1] - 1 if k + 1 < count else nlabels - 1
        if last - i < _SHORT_SEGMENT:
            last = i
        seg_end = ends[k]
        rest_hops = hops - after
        while True:
            if i == nlabels:
                sub = suffix or "."
            elif plain:
                sub = text[w - 1 :]
            else:
                sub = _labels_to_text(labels[i:]) + suffix
            cache[p] = (sub, wire_len - w + 1, rest_hops, seg_end)
            if i >= last:
                break
            step = len(labels[i]) + 1
            p += step
            w += step
            i += 1


# Uncompressed names seen as SRV targets (RFC 2782 forbids compressing them): their
# wire bytes -> (text, octets). The same few targets come back in every answer.
_TARGET_NAMES: dict[bytes, tuple[str, int]] = {}
_TARGET_NAMES_MAX = 4096


def _read_srv_target(buf: bytes, start: int, end: int, cache: NameCache) -> bool:
    """Put the SRV target at ``start`` (rdata ending at ``end``) into ``cache``, if valid.

    Identical bytes holding a whole name without pointers walk identically in
    any message, so such a name is read once per process. A bad target is
    left out (False): decode_srv reports it, if anyone asks for that record.
    The walk stops at the rdata's end, so one target never reads the records after it.
    """
    raw = buf[start:end]
    known = _TARGET_NAMES.get(raw)
    if known is not None:
        cache[start] = (known[0], known[1], 0, end)
        return True
    try:
        text, name_end = _read_name(buf, start, cache, end)
    except WireError:
        return False
    if name_end == end and cache[start][2] == 0:
        if len(_TARGET_NAMES) >= _TARGET_NAMES_MAX:
            _TARGET_NAMES.clear()
        _TARGET_NAMES[raw] = (text, cache[start][1])
    return True


def question_of(query: bytes) -> tuple[bytes, str]:
    """The question section of a query, and its name: :func:`parse`'s ``asked``.

    A question without its type and class is an error: parse() would otherwise take
    them from the bytes before the name (the header, for a query ending at the root).
    """
    if len(query) < _HEADER_LEN:
        raise WireError(f"query is {len(query)} bytes, shorter than the 12-byte header")
    qdcount = _U16.unpack_from(query, 4)[0]
    if qdcount != 1:
        raise WireError(f"query has {qdcount} questions, expected exactly 1")
    name, end = _read_name(query, _HEADER_LEN)
    if end + 4 > len(query):
        raise WireError("question is truncated: no type and class")
    return query[_HEADER_LEN : end + 4], name


def read_name(data: _BytesLike, offset: int) -> tuple[str, int]:
    """Read the name at ``offset``: (lowercase presentation form, offset just after it).

    The returned offset is where the name ends in place (after the first pointer, if
    any), i.e. where the next field starts.
    """
    buf = _as_bytes(data)
    if offset < 0 or offset >= len(buf):
        raise WireError(f"name offset {offset} is outside the message ({len(buf)} bytes)")
    return _read_name(buf, offset)


def parse(data: _BytesLike, asked: tuple[bytes, str] | None = None) -> Message:
    """Walk a whole message: header, the single question, and every record's offsets.

    ``asked`` is the question section of the query this should answer, as
    sent, with its name as text (see :func:`question_of`): when the response
    echoes it byte for byte, as servers do, the name is not read again.
    """
    buf = _as_bytes(data)
    n = len(buf)
    if n < _HEADER_LEN:
        raise WireError(f"message is {n} bytes, shorter than the 12-byte header")
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(buf, 0)
    pos = _HEADER_LEN
    names: NameCache = {}
    if qdcount == 1 and asked is not None and buf.startswith(asked[0], _HEADER_LEN):
        qname = asked[1]
        pos += len(asked[0]) - 4
        names[_HEADER_LEN] = (qname, pos - _HEADER_LEN, 0, pos)
        qtype, qclass = _QUESTION_FIXED.unpack_from(buf, pos)
        pos += 4
    elif qdcount == 1:
        qname, pos = _read_name(buf, pos, names)
        if pos + 4 > n:
            raise WireError("question is truncated")
        qtype, qclass = _QUESTION_FIXED.unpack_from(buf, pos)
        pos += 4
    elif qdcount == 0:
        qname = ""
        qtype = qclass = 0
    else:
        raise WireError(f"message has {qdcount} questions; only 0 or 1 is supported")
    if (ancount + nscount + arcount) * _MIN_RR_LEN > n - pos:
        raise WireError(
            f"record counts ({ancount}/{nscount}/{arcount}) exceed the {n}-byte message"
        )

    answers: list[Record] = []
    authority: list[Record] = []
    additional: list[Record] = []
    edns_payload: int | None = None
    ext_rcode = 0
    bad_targets = 0
    unpack_rr = _RR_FIXED.unpack_from
    new_record = tuple.__new__
    for section, count, out in (
        (SECTION_ANSWER, ancount, answers),
        (SECTION_AUTHORITY, nscount, authority),
        (SECTION_ADDITIONAL, arcount, additional),
    ):
        for _ in range(count):
            first = buf[pos] if pos < n else 0
            hit = None
            if first >= 0xC0 and pos + 1 < n:
                # Most owners are one pointer to a name already read: resolve it from the
                # cache when the full walk would pass the same checks (see _read_name).
                ptr = ((first & 0x3F) << 8) | buf[pos + 1]
                hit = names.get(ptr)
                if hit is not None and not (
                    _HEADER_LEN <= ptr < pos and hit[3] <= pos and hit[2] < _MAX_POINTERS
                ):
                    hit = None
            if hit is not None:
                name = hit[0]
                pos += 2
            elif first == 0 and pos < n:
                name = "."  # the root: every OPT record's owner
                pos += 1
            else:
                name, pos = _read_name(buf, pos, names)
            rdata = pos + 10
            if rdata > n:
                raise WireError(f"record at offset {pos} is truncated")
            rdtype, rdclass, ttl, rdlen = unpack_rr(buf, pos)
            pos = rdata + rdlen
            if pos > n:
                raise WireError(f"rdata at offset {rdata} runs past the end of the message")
            if rdtype == TYPE_OPT:
                if section != SECTION_ADDITIONAL:
                    raise WireError("OPT record outside the additional section")
                if edns_payload is not None:
                    raise WireError("more than one OPT record")
                if name != ".":
                    raise WireError(f"OPT record with non-root owner {name!r}")
                edns_payload = rdclass
                ext_rcode = ttl >> 24
                continue
            if ttl > _MAX_TTL:
                ttl = 0
            # Read SRV targets now: glue owners point at them, and decode_srv reuses them.
            # A failed walk caches nothing, so only a few are tried per message.
            if (
                rdtype == TYPE_SRV
                and rdclass == CLASS_IN
                and rdlen > 6
                and bad_targets < _MAX_BAD_TARGETS
                and not _read_srv_target(buf, rdata + 6, pos, names)
            ):
                bad_targets += 1
            out.append(
                new_record(Record, (name, rdtype, rdclass, ttl, rdata - 6, rdata, rdlen, section))
            )

    return Message(
        qid,
        flags,
        (flags & 0xF) | (ext_rcode << 4),
        qname,
        qtype,
        qclass,
        tuple(answers),
        tuple(authority),
        tuple(additional),
        edns_payload,
        names,
    )


def question_key(data: _BytesLike) -> tuple[str, int, int]:
    """(lowercase qname, qtype, qclass) of the single question, without walking the rest."""
    buf = _as_bytes(data)
    if len(buf) < _HEADER_LEN:
        raise WireError(f"message is {len(buf)} bytes, shorter than the 12-byte header")
    qdcount = _U16.unpack_from(buf, 4)[0]
    if qdcount != 1:
        raise WireError(f"message has {qdcount} questions, expected exactly 1")
    qname, pos = _read_name(buf, _HEADER_LEN)
    if pos + 4 > len(buf):
        raise WireError("question is truncated")
    qtype, qclass = _QUESTION_FIXED.unpack_from(buf, pos)
    return qname, qtype, qclass


def make_response(query: _BytesLike, rcode: int) -> bytes:
    """A minimal error response to ``query`` (ID, opcode and RD copied, question echoed).

    A query without one parsable question gets a header-only FORMERR instead; the
    question is echoed byte for byte so a client's 0x20 case randomisation survives.
    """
    if not 0 <= rcode <= 15:
        raise ValueError(f"rcode {rcode!r} does not fit the 4-bit header field")
    buf = _as_bytes(query)
    n = len(buf)
    if n < 2:
        raise WireError(f"query is {n} bytes, too short to carry an ID")
    in_flags = _U16.unpack_from(buf, 2)[0] if n >= 4 else 0
    flags = FLAG_QR | (in_flags & (_OPCODE_MASK | FLAG_RD))
    end = -1
    if n >= _HEADER_LEN and _U16.unpack_from(buf, 4)[0] == 1:
        try:
            _, name_end = _read_name(buf, _HEADER_LEN)
        except WireError:
            pass
        else:
            if name_end + 4 <= n:
                end = name_end + 4
    if end < 0:
        return buf[:2] + _U16.pack(flags | RCODE_FORMERR) + bytes(8)
    return buf[:2] + struct.pack(">HHHHH", flags | rcode, 1, 0, 0, 0) + buf[_HEADER_LEN:end]


def _name_error(name: str, why: str) -> ValueError:
    return ValueError(f"invalid DNS name {name!r}: {why}")


def encode_name(name: str) -> bytes:
    """Presentation form (``\\DDD`` and ``\\X`` escapes allowed, case kept) to uncompressed wire."""
    if name == "":
        raise _name_error(name, "empty name")
    if name == ".":
        return b"\x00"
    labels: list[bytes]
    if "\\" not in name and name.isascii():
        text = name[:-1] if name.endswith(".") else name
        labels = [label.encode("ascii") for label in text.split(".")]
        if b"" in labels:
            raise _name_error(name, "empty label")
    else:
        labels = _unescape_labels(name)
    for label in labels:
        if len(label) > 63:
            raise _name_error(name, f"label {label!r} is longer than 63 octets")
    wire = b"".join([bytes((len(label),)) + label for label in labels]) + b"\x00"
    if len(wire) > 255:
        raise _name_error(name, f"{len(wire)} octets on the wire, more than 255")
    return wire


def _unescape_labels(name: str) -> list[bytes]:
    labels: list[bytes] = []
    current = bytearray()
    i = 0
    n = len(name)
    while i < n:
        ch = name[i]
        if ch == ".":
            if not current:
                raise _name_error(name, "empty label")
            labels.append(bytes(current))
            current = bytearray()
            i += 1
        elif ch == "\\":
            if i + 1 >= n:
                raise _name_error(name, "bad escape: trailing backslash")
            nxt = name[i + 1]
            if "0" <= nxt <= "9":
                digits = name[i + 1 : i + 4]
                if len(digits) != 3 or not all("0" <= d <= "9" for d in digits):
                    raise _name_error(name, f"bad escape \\{digits}: \\DDD needs three digits")
                value = int(digits)
                if value > 255:
                    raise _name_error(name, f"bad escape \\{digits}: value above 255")
                current.append(value)
                i += 4
            else:
                if not nxt.isascii():
                    raise _name_error(name, f"bad escape \\{nxt}: not ASCII")
                current.append(ord(nxt))
                i += 2
        else:
            if not ch.isascii():
                raise _name_error(name, f"non-ASCII character {ch!r} (IDNA-encode it first)")
            current.append(ord(ch))
            i += 1
    if current:
        labels.append(bytes(current))
    return labels


def check_u16(value: object, what: str) -> None:
    """The one check of a 16-bit field (ports, IDs, types): TypeError for non-integers.

    ``bool`` is an int subclass, but ``Endpoint("x", True)`` is a bug, not port 1.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}: {value!r}")
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} must be in 0..65535, got {value!r}")


def build_query(
    qname: str,
    qtype: int,
    qid: int,
    *,
    rd: bool = True,
    edns_payload: int | None = DEFAULT_EDNS_PAYLOAD,
    qclass: int = CLASS_IN,
) -> bytes:
    """A standard query for one question, with an EDNS(0) OPT record unless disabled."""
    check_u16(qid, "query id")
    check_u16(qtype, "qtype")
    check_u16(qclass, "qclass")
    if edns_payload is not None and not 512 <= edns_payload <= 0xFFFF:
        raise ValueError(f"EDNS payload {edns_payload!r} is outside 512..65535")
    wire = encode_name(qname)
    header = _HEADER.pack(qid, FLAG_RD if rd else 0, 1, 0, 0, 0 if edns_payload is None else 1)
    query = header + wire + _QUESTION_FIXED.pack(qtype, qclass)
    if edns_payload is not None:
        query += b"\x00" + _RR_FIXED.pack(TYPE_OPT, edns_payload, 0, 0)
    return query


def _rdata_end(data: bytes, rr: Record) -> int:
    end = rr.rdata_offset + rr.rdata_length
    if rr.rdata_offset < _HEADER_LEN or end > len(data):
        raise WireError(f"rdata at offset {rr.rdata_offset} lies outside the message")
    return end


def decode_srv(
    data: _BytesLike, rr: Record, names: NameCache | None = None
) -> tuple[int, int, int, str]:
    """(priority, weight, port, target); a target of ``"."`` means "no service" (RFC 2782).

    ``names`` is the :attr:`Message.names` of the message ``rr`` came from.
    """
    buf = _as_bytes(data)
    end = _rdata_end(buf, rr)
    if rr.rdata_length < 7:
        raise WireError(f"SRV rdata at offset {rr.rdata_offset} is {rr.rdata_length} bytes")
    priority, weight, port = _SRV_FIXED.unpack_from(buf, rr.rdata_offset)
    # A name read from the same offset of the same message, under the same limit.
    known = names.get(rr.rdata_offset + 6) if names is not None else None
    if known is not None:
        target, name_end = known[0], known[3]
    else:
        target, name_end = _read_name(buf, rr.rdata_offset + 6)
    if name_end != end:
        raise WireError(f"SRV target at offset {rr.rdata_offset + 6} does not fill the rdata")
    return priority, weight, port, target


def decode_a(data: _BytesLike, rr: Record) -> str:
    buf = _as_bytes(data)
    _rdata_end(buf, rr)
    if rr.rdata_length != 4:
        raise WireError(f"A rdata at offset {rr.rdata_offset} is {rr.rdata_length} bytes, not 4")
    return socket.inet_ntoa(buf[rr.rdata_offset : rr.rdata_offset + 4])


def decode_aaaa(data: _BytesLike, rr: Record) -> str:
    """RFC 5952 text, identical to ``ipaddress.IPv6Address(...).compressed``."""
    buf = _as_bytes(data)
    _rdata_end(buf, rr)
    if rr.rdata_length != 16:
        raise WireError(
            f"AAAA rdata at offset {rr.rdata_offset} is {rr.rdata_length} bytes, not 16"
        )
    packed = buf[rr.rdata_offset : rr.rdata_offset + 16]
    text = socket.inet_ntop(socket.AF_INET6, packed)
    if "." in text:
        # The C library prints IPv4-mapped/compatible addresses in dotted form; ipaddress
        # decides that form differently across Python versions, so defer to it.
        return ipaddress.IPv6Address(packed).compressed
    return text


def decode_cname(data: _BytesLike, rr: Record) -> str:
    """The single name that is the whole RDATA of a CNAME, NS or PTR record."""
    buf = _as_bytes(data)
    end = _rdata_end(buf, rr)
    if rr.rdata_length < 1:
        raise WireError(f"empty name rdata at offset {rr.rdata_offset}")
    name, name_end = _read_name(buf, rr.rdata_offset)
    if name_end != end:
        raise WireError(f"name at offset {rr.rdata_offset} does not fill the rdata")
    return name


def decode_soa(data: _BytesLike, rr: Record) -> Soa:
    buf = _as_bytes(data)
    end = _rdata_end(buf, rr)
    if rr.rdata_length < 22:
        raise WireError(f"SOA rdata at offset {rr.rdata_offset} is {rr.rdata_length} bytes")
    mname, pos = _read_name(buf, rr.rdata_offset)
    if pos >= end:
        raise WireError(f"SOA mname at offset {rr.rdata_offset} runs past the rdata")
    rname, pos = _read_name(buf, pos)
    if pos + 20 != end:
        raise WireError(f"SOA rdata at offset {rr.rdata_offset} has the wrong length")
    serial, refresh, retry, expire, minimum = _SOA_FIXED.unpack_from(buf, pos)
    return Soa(mname, rname, serial, refresh, retry, expire, minimum)


def decode_rdata(data: _BytesLike, rr: Record) -> dns.rdata.Rdata:
    """Any type, through dnspython; the whole message is passed so compression works."""
    buf = _as_bytes(data)
    _rdata_end(buf, rr)
    try:
        return dns.rdata.from_wire(
            dns.rdataclass.RdataClass.make(rr.rdclass),
            dns.rdatatype.RdataType.make(rr.rdtype),
            buf,
            rr.rdata_offset,
            rr.rdata_length,
        )
    except Exception as exc:  # dnspython raises many types; callers need exactly one
        raise WireError(f"bad type {rr.rdtype} rdata at offset {rr.rdata_offset}: {exc!r}") from exc


def patch_id(buf: bytearray, qid: int) -> None:
    """Overwrite the message ID in place (cached answers are served under the asker's ID)."""
    check_u16(qid, "query id")
    if len(buf) < 2:
        raise ValueError(f"buffer of {len(buf)} bytes has no room for an ID")
    _U16.pack_into(buf, 0, qid)


def _ttl_offsets(buf: bytearray, msg: Message) -> list[int]:
    offsets = [rr.ttl_offset for rr in (*msg.answers, *msg.authority, *msg.additional)]
    if offsets and max(offsets) + 4 > len(buf):
        raise ValueError("buffer is shorter than the message it was parsed from")
    return offsets


def _check_ttl(what: str, value: int) -> None:
    if not 0 <= value <= _MAX_TTL:
        raise ValueError(f"{what} {value!r} is outside 0..{_MAX_TTL}")


# Where RDATA holds names that readers decompress: the types dnspython reads names in
# (clients such as glibc and c-ares read fewer). A step is a number of fixed octets to
# skip, _NAME or _STRING (a length-prefixed character-string). HIP, IPSECKEY and
# AMTRELAY, whose names depend on earlier fields, are in _walk_rdata_names.
_NAME = -1
_STRING = -2
_NAMES_ANY_CLASS: dict[int, tuple[int, ...]] = {
    TYPE_NS: (_NAME,),
    TYPE_CNAME: (_NAME,),
    TYPE_PTR: (_NAME,),
    39: (_NAME,),  # DNAME
    47: (_NAME,),  # NSEC
    249: (_NAME,),  # TKEY
    250: (_NAME,),  # TSIG
    TYPE_SOA: (_NAME, _NAME),
    17: (_NAME, _NAME),  # RP
    15: (2, _NAME),  # MX
    18: (2, _NAME),  # AFSDB
    21: (2, _NAME),  # RT
    107: (2, _NAME),  # LP
    24: (18, _NAME),  # SIG
    46: (18, _NAME),  # RRSIG
    66: (5, _NAME),  # DSYNC
}
_NAMES_IN: dict[int, tuple[int, ...]] = {
    TYPE_SRV: (6, _NAME),
    23: (_NAME,),  # NSAP-PTR
    26: (2, _NAME, _NAME),  # PX
    35: (4, _STRING, _STRING, _STRING, _NAME),  # NAPTR
    36: (2, _NAME),  # KX
    64: (2, _NAME),  # SVCB
    65: (2, _NAME),  # HTTPS
}
_CLASS_CH = 3
_TYPE_HIP = 55
_TYPE_IPSECKEY = 45
_TYPE_AMTRELAY = 260


def _rdata_name(buf: bytes, pos: int, end: int, names: NameCache) -> int:
    """Read the RDATA name at ``pos`` into ``names`` (it must not leave the RDATA); its end."""
    if pos >= end:
        raise WireError(f"name at offset {pos} lies past the end of its rdata")
    known = names.get(pos)
    if known is not None and known[3] <= end:
        return known[3]
    return _read_name(buf, pos, names, end)[1]


def _walk_rdata_names(buf: bytes, rr: Record, names: NameCache) -> None:
    """Read every name in ``rr``'s RDATA into ``names``, so its pointers are known."""
    start = rr.rdata_offset
    end = start + rr.rdata_length
    if start == end:
        return
    rdtype = rr.rdtype
    layout = _NAMES_ANY_CLASS.get(rdtype)
    if layout is None:
        if rr.rdclass == CLASS_IN:
            layout = _NAMES_IN.get(rdtype)
        elif rr.rdclass == _CLASS_CH and rdtype == TYPE_A:
            layout = (_NAME,)
    if layout is not None:
        pos = start
        for step in layout:
            if step >= 0:
                pos += step
            elif step == _STRING:
                pos += 1 + buf[pos] if pos < end else 1
            else:
                pos = _rdata_name(buf, pos, end, names)
            if pos > end:
                raise WireError(f"type {rdtype} rdata at offset {start} is too short")
    elif rdtype == _TYPE_HIP and end - start >= 4:
        pos = start + 4 + buf[start] + _U16.unpack_from(buf, start + 2)[0]
        while pos < end:
            pos = _rdata_name(buf, pos, end, names)
    elif rdtype == _TYPE_IPSECKEY and rr.rdclass == CLASS_IN and end - start > 3:
        if buf[start + 1] == 3:
            _rdata_name(buf, start + 3, end, names)
    elif rdtype == _TYPE_AMTRELAY and end - start > 2 and buf[start + 1] & 0x7F == 3:
        _rdata_name(buf, start + 2, end, names)


def patchable(data: _BytesLike, msg: Message) -> bool:
    """Whether TTLs can be patched in ``data`` (the bytes ``msg`` was parsed from) in place.

    Not when a compression pointer (in an owner, the question or the RDATA of a type
    whose names readers decompress) leads into a record's TTL field, or to labels
    that run over one: a patch would change that name. The verdict is kept in
    ``msg.patch_safe``; a malformed RDATA name counts as unsafe.
    """
    safe = msg.patch_safe
    if safe is not None:
        return safe
    buf = _as_bytes(data)
    records = (*msg.answers, *msg.authority, *msg.additional)
    names = msg.names
    safe = True
    try:
        for rr in records:
            _walk_rdata_names(buf, rr, names)
    except WireError:
        safe = False
    if safe and records:
        # Each cached name's first segment, [offset, end), must miss every TTL's 4 octets.
        # Every segment read through a pointer starts at an offset the cache holds.
        ttls = sorted(rr.ttl_offset for rr in records)
        last = len(ttls)
        for offset, entry in names.items():
            i = bisect.bisect_left(ttls, offset - 3)
            if i < last and ttls[i] < entry[3]:
                safe = False
                break
    object.__setattr__(msg, "patch_safe", safe)
    return safe


def make_patchable(data: _BytesLike, msg: Message | None = None) -> tuple[bytes, Message]:
    """``data`` and its parse, re-encoded once if TTLs cannot be patched in place.

    The common case costs one :func:`patchable` check and returns ``data`` itself.
    Otherwise dnspython renders the message anew (records in order, names compressed
    only against names), so a stored message can always be patched. ``msg`` is the
    parse of ``data``, when the caller has it.
    """
    buf = _as_bytes(data)
    if msg is None:
        msg = parse(buf)
    if patchable(buf, msg):
        return buf, msg
    try:
        ref = dns.message.from_wire(buf, one_rr_per_rrset=True, ignore_trailing=True)
        again = ref.to_wire()
    except Exception as exc:  # dnspython raises many types; callers need exactly one
        raise WireError(f"message with pointers into TTLs cannot be re-encoded: {exc!r}") from exc
    fixed = parse(again)
    if not patchable(again, fixed):
        raise WireError("re-encoded message still has pointers into TTL fields")
    return again, fixed


def _require_patchable(buf: bytearray, msg: Message) -> None:
    if not patchable(buf, msg):
        raise ValueError(
            "compression pointers lead into this message's TTL fields, so patching "
            "them would change names: patch the bytes make_patchable() returns"
        )


def rewrite_ttls(buf: bytearray, msg: Message, ttl: int) -> None:
    """Set every record's TTL (never the OPT record's, which holds EDNS flags) in place.

    ValueError if the message is not :func:`patchable`, rather than corrupt a name.
    """
    _check_ttl("ttl", ttl)
    offsets = _ttl_offsets(buf, msg)
    if msg.patch_safe is not True:
        _require_patchable(buf, msg)
    pack = _U32.pack_into
    for offset in offsets:
        pack(buf, offset, ttl)


def age_ttls(buf: bytearray, msg: Message, elapsed: int, floor: int = 0) -> None:
    """Count every record's TTL down by ``elapsed`` seconds, never below ``floor``.

    ValueError if the message is not :func:`patchable`, rather than corrupt a name.
    """
    _check_ttl("elapsed", elapsed)
    _check_ttl("floor", floor)
    offsets = _ttl_offsets(buf, msg)
    if msg.patch_safe is not True:
        _require_patchable(buf, msg)
    unpack = _U32.unpack_from
    pack = _U32.pack_into
    for offset in offsets:
        current = unpack(buf, offset)[0]
        if current > _MAX_TTL:
            current = 0
        pack(buf, offset, max(current - elapsed, floor))
