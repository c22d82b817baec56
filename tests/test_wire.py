"""Unit tests for srvwatch.wire, plus differential tests against dnspython.

``check_against_dnspython(wire)`` is exported so responses captured from real
servers can be run through the same comparison.
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct
import time
from collections.abc import Callable

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from srvwatch import wire
from srvwatch.wire import Record, WireError

# ---------------------------------------------------------------------------
# differential helper
# ---------------------------------------------------------------------------


def _dns_text(name: dns.name.Name) -> str:
    return name.to_text().lower()


def _check_rdata(data: bytes, rr: Record, rd: dns.rdata.Rdata) -> None:
    if rr.rdtype == wire.TYPE_A and rr.rdclass == wire.CLASS_IN:
        assert wire.decode_a(data, rr) == rd.address  # type: ignore[attr-defined]
    elif rr.rdtype == wire.TYPE_AAAA and rr.rdclass == wire.CLASS_IN:
        expected = ipaddress.IPv6Address(rd.address).compressed  # type: ignore[attr-defined]
        assert wire.decode_aaaa(data, rr) == expected
    elif rr.rdtype == wire.TYPE_SRV and rr.rdclass == wire.CLASS_IN:
        assert wire.decode_srv(data, rr) == (
            rd.priority,  # type: ignore[attr-defined]
            rd.weight,  # type: ignore[attr-defined]
            rd.port,  # type: ignore[attr-defined]
            _dns_text(rd.target),  # type: ignore[attr-defined]
        )
    elif rr.rdtype in (wire.TYPE_CNAME, wire.TYPE_NS, wire.TYPE_PTR):
        assert wire.decode_cname(data, rr) == _dns_text(rd.target)  # type: ignore[attr-defined]
    elif rr.rdtype == wire.TYPE_SOA:
        soa = wire.decode_soa(data, rr)
        assert soa == wire.Soa(
            _dns_text(rd.mname),  # type: ignore[attr-defined]
            _dns_text(rd.rname),  # type: ignore[attr-defined]
            rd.serial,  # type: ignore[attr-defined]
            rd.refresh,  # type: ignore[attr-defined]
            rd.retry,  # type: ignore[attr-defined]
            rd.expire,  # type: ignore[attr-defined]
            rd.minimum,  # type: ignore[attr-defined]
        )
    # Every type, including the five above, must also round-trip through dnspython.
    assert wire.decode_rdata(data, rr) == rd


def check_against_dnspython(data: bytes, *, rdata: bool = True) -> wire.Message:
    """Assert that parse() agrees with dnspython on every field of ``data``.

    Returns the parsed message so callers can make further assertions.
    """
    msg = wire.parse(data)
    ref = dns.message.from_wire(data, one_rr_per_rrset=True, ignore_trailing=True)
    assert msg.id == ref.id
    assert msg.flags == int(ref.flags)
    assert msg.rcode == int(ref.rcode())
    assert msg.opcode == int(ref.opcode())
    assert msg.qr == bool(ref.flags & dns.flags.QR)
    assert msg.aa == bool(ref.flags & dns.flags.AA)
    assert msg.tc == bool(ref.flags & dns.flags.TC)
    assert msg.rd == bool(ref.flags & dns.flags.RD)
    assert msg.ra == bool(ref.flags & dns.flags.RA)
    if ref.question:
        (question,) = ref.question
        assert (msg.qname, msg.qtype, msg.qclass) == (
            _dns_text(question.name),
            question.rdtype,
            question.rdclass,
        )
        assert wire.question_key(data) == (msg.qname, msg.qtype, msg.qclass)
    else:
        assert (msg.qname, msg.qtype, msg.qclass) == ("", 0, 0)
    assert msg.edns_payload == (ref.payload if ref.edns >= 0 else None)
    for ours, theirs, section in (
        (msg.answers, ref.answer, wire.SECTION_ANSWER),
        (msg.authority, ref.authority, wire.SECTION_AUTHORITY),
        (msg.additional, ref.additional, wire.SECTION_ADDITIONAL),
    ):
        assert len(ours) == len(theirs)
        for rr, rrset in zip(ours, theirs, strict=True):
            assert len(rrset) == 1
            assert rr.section == section
            assert rr.name == _dns_text(rrset.name)
            assert (rr.rdtype, rr.rdclass, rr.ttl) == (rrset.rdtype, rrset.rdclass, rrset.ttl)
            raw_ttl = struct.unpack_from(">I", data, rr.ttl_offset)[0]
            assert rr.ttl == (raw_ttl if raw_ttl < 2**31 else 0)
            assert rr.rdata_offset == rr.ttl_offset + 6
            assert struct.unpack_from(">H", data, rr.ttl_offset + 4)[0] == rr.rdata_length
            if rdata:
                _check_rdata(data, rr, rrset[0])
    return msg


# ---------------------------------------------------------------------------
# a corpus of realistic responses built with dnspython
# ---------------------------------------------------------------------------

SRV_NAME = "_http._tcp.api.svc.test."


def _response(
    qname: str, rdtype: str, *, edns: bool = True, payload: int = 1232
) -> dns.message.Message:
    if edns:
        query = dns.message.make_query(qname, rdtype, use_edns=0, payload=payload)
    else:
        query = dns.message.make_query(qname, rdtype, use_edns=False)
    return dns.message.make_response(query, our_payload=payload)


def _add(section: list[dns.rrset.RRset], name: str, ttl: int, rdtype: str, *rdatas: str) -> None:
    section.append(dns.rrset.from_text(name, ttl, "IN", rdtype, *rdatas))


def _srv_with_glue() -> dns.message.Message:
    r = _response(SRV_NAME, "SRV")
    r.flags |= dns.flags.AA | dns.flags.RA
    _add(
        r.answer,
        SRV_NAME,
        30,
        "SRV",
        "10 60 8080 a.api.svc.test.",
        "10 40 8080 b.api.svc.test.",
        "20 0 9090 c.api.svc.test.",
    )
    for host, ip in (("a", "192.0.2.1"), ("b", "192.0.2.2"), ("c", "192.0.2.3")):
        _add(r.additional, f"{host}.api.svc.test.", 30, "A", ip)
    _add(r.additional, "a.api.svc.test.", 30, "AAAA", "2001:db8::1")
    return r


def _srv_no_service() -> dns.message.Message:
    r = _response(SRV_NAME, "SRV")
    _add(r.answer, SRV_NAME, 0, "SRV", "0 0 0 .")
    return r


def _cname_chain() -> dns.message.Message:
    r = _response("www.Example.TEST.", "A")
    _add(r.answer, "www.Example.TEST.", 300, "CNAME", "edge.cdn.test.")
    _add(r.answer, "edge.cdn.test.", 60, "CNAME", "edge-7.pop.cdn.test.")
    _add(r.answer, "edge-7.pop.cdn.test.", 20, "A", "198.51.100.7", "198.51.100.8")
    _add(r.authority, "cdn.test.", 3600, "NS", "ns1.cdn.test.", "ns2.cdn.test.")
    _add(r.additional, "ns1.cdn.test.", 3600, "A", "203.0.113.53")
    _add(r.additional, "ns2.cdn.test.", 3600, "AAAA", "2001:db8:0:1::53")
    return r


def _nxdomain() -> dns.message.Message:
    r = _response("missing.svc.test.", "SRV")
    r.set_rcode(dns.rcode.NXDOMAIN)
    r.flags |= dns.flags.AA
    _add(
        r.authority,
        "svc.test.",
        900,
        "SOA",
        "ns1.svc.test. hostmaster.svc.test. 2024010101 7200 900 1209600 30",
    )
    return r


def _nodata() -> dns.message.Message:
    r = _response("api.svc.test.", "AAAA", edns=False)
    _add(
        r.authority,
        "svc.test.",
        60,
        "SOA",
        "ns1.other.test. dns\\.admin.svc.test. 1 2 3 4 5",
    )
    return r


def _truncated() -> dns.message.Message:
    r = _response(SRV_NAME, "SRV", payload=512)
    r.flags |= dns.flags.TC
    return r


def _badvers() -> dns.message.Message:
    r = _response("x.test.", "A")
    r.use_edns(0, ednsflags=dns.flags.DO, payload=4096)
    r.set_rcode(dns.rcode.BADVERS)  # 16: needs the OPT extended-rcode bits
    return r


def _odd_names() -> dns.message.Message:
    odd = dns.name.Name([b"we.ird", b"Sp ace", b'"q"(x);\\@$', b"\x00\x7f\xff\x80", b"TEST", b""])
    r = _response(odd.to_text(), "TXT")
    r.answer.append(dns.rrset.from_text(odd, 42, "IN", "TXT", '"hello world"', '"a" "b"'))
    r.answer.append(dns.rrset.from_text(odd, 42, "IN", "SRV", f"1 2 3 {odd.to_text()}"))
    r.answer.append(dns.rrset.from_text(odd, 42, "IN", "CNAME", "UPPER.Case.test."))
    sub = dns.name.Name([b"*", b"_under", b"x-y"]).concatenate(odd)
    r.additional.append(dns.rrset.from_text(sub, 7, "IN", "A", "10.0.0.1"))
    return r


def _other_types() -> dns.message.Message:
    r = _response("mixed.test.", "ANY")
    _add(r.answer, "mixed.test.", 10, "MX", "10 mail.mixed.test.", "20 mail2.other.test.")
    _add(r.answer, "mixed.test.", 10, "CAA", '0 issue "ca.test"')
    _add(r.answer, "mixed.test.", 10, "TYPE65280", "\\# 3 abcdef")
    _add(r.answer, "mixed.test.", 10, "TXT", '""')
    _add(r.answer, "7.2.0.192.in-addr.arpa.", 10, "PTR", "mixed.test.")
    _add(r.answer, "mixed.test.", 10, "NAPTR", '100 10 "S" "SIP+D2U" "" _sip._udp.mixed.test.')
    _add(r.authority, "mixed.test.", 10, "NS", "ns.mixed.test.")
    r.additional.append(dns.rrset.from_text("mixed.test.", 10, "CH", "TXT", '"chaos"'))
    return r


def _large() -> dns.message.Message:
    r = _response("_grpc._tcp.big.test.", "SRV", payload=65535)
    rdatas = [f"{i % 3} {i} {1000 + i} host-{i}.pool.big.test." for i in range(60)]
    _add(r.answer, "_grpc._tcp.big.test.", 5, "SRV", *rdatas)
    for i in range(60):
        _add(r.additional, f"host-{i}.pool.big.test.", 5, "A", f"10.1.{i}.{i + 1}")
        _add(r.additional, f"host-{i}.pool.big.test.", 5, "AAAA", f"fd00::{i:x}:0:0:1")
    return r


def _odd_ttls() -> dns.message.Message:
    r = _response("ttl.test.", "A")
    _add(r.answer, "ttl.test.", 0, "A", "192.0.2.10")
    _add(r.answer, "ttl.test.", 2**31 - 1, "A", "192.0.2.11")
    return r


def _no_question() -> dns.message.Message:
    r = dns.message.Message(id=4321)
    r.flags = dns.flags.QR | dns.flags.RA
    r.set_rcode(dns.rcode.REFUSED)
    return r


def _aaaa_forms() -> dns.message.Message:
    r = _response("v6.test.", "AAAA")
    for address in ("::", "::1", "1::", "2001:db8:0:0:1:0:0:1", "::ffff:192.0.2.1", "fe80::1:2"):
        _add(r.answer, "v6.test.", 60, "AAAA", address)
    _add(r.answer, "v6.test.", 60, "AAAA", "::192.0.2.1")
    return r


CORPUS: dict[str, Callable[[], dns.message.Message]] = {
    "srv_with_glue": _srv_with_glue,
    "srv_no_service": _srv_no_service,
    "cname_chain": _cname_chain,
    "nxdomain": _nxdomain,
    "nodata": _nodata,
    "truncated": _truncated,
    "extended_rcode": _badvers,
    "odd_names": _odd_names,
    "other_types": _other_types,
    "large": _large,
    "odd_ttls": _odd_ttls,
    "no_question": _no_question,
    "aaaa_forms": _aaaa_forms,
}


def corpus_wires() -> list[bytes]:
    """Every corpus response, compressed and uncompressed (the fuzz tests mutate these)."""
    out = []
    for build in CORPUS.values():
        message = build()
        out.append(message.to_wire())
        out.append(message.to_wire(max_size=65535, want_shuffle=False))
    return out


@pytest.mark.parametrize("name", sorted(CORPUS))
@pytest.mark.parametrize("compress", [True, False])
def test_differential_against_dnspython(name: str, compress: bool) -> None:
    message = CORPUS[name]()
    # dnspython always compresses; _uncompressed() re-assembles the message without pointers.
    data = message.to_wire() if compress else _uncompressed(message)
    msg = check_against_dnspython(data)
    total = len(msg.answers) + len(msg.authority) + len(msg.additional)
    assert total == sum(
        len(rrset) for rrset in message.answer + message.authority + message.additional
    )


def _name_wire(name: dns.name.Name) -> bytes:
    data = name.to_wire()
    assert data is not None
    return data


def _uncompressed(message: dns.message.Message) -> bytes:
    parts = []
    counts = []
    question = b""
    for q in message.question:
        question += _name_wire(q.name) + struct.pack(">HH", q.rdtype, q.rdclass)
    for section in (message.answer, message.authority, message.additional):
        count = 0
        for rrset in section:
            for rd in rrset:
                body = rd.to_wire()  # no compression dict: names stay whole
                parts.append(
                    _name_wire(rrset.name)
                    + struct.pack(">HHIH", rrset.rdtype, rrset.rdclass, rrset.ttl, len(body))
                    + body
                )
                count += 1
        counts.append(count)
    if message.edns >= 0:
        parts.append(b"\x00" + struct.pack(">HHIH", 41, message.payload, message.ednsflags, 0))
        counts[2] += 1
    flags = int(message.flags) | (int(message.rcode()) & 0xF)
    header = struct.pack(">HHHHHH", message.id, flags, len(message.question), *counts)
    return header + question + b"".join(parts)


def test_compressed_corpus_really_uses_pointers() -> None:
    data = _srv_with_glue().to_wire()
    assert data.count(b"\xc0") >= 6
    assert len(data) < len(_uncompressed(_srv_with_glue()))


def test_srv_response_fields() -> None:
    data = _srv_with_glue().to_wire(want_shuffle=False)
    msg = wire.parse(data)
    assert msg.qname == SRV_NAME
    assert (msg.qtype, msg.qclass) == (wire.TYPE_SRV, wire.CLASS_IN)
    assert (msg.qr, msg.aa, msg.rd, msg.ra, msg.tc) == (True, True, True, True, False)
    assert msg.rcode == wire.RCODE_NOERROR
    assert msg.edns_payload == 1232
    assert sorted(wire.decode_srv(data, rr) for rr in msg.answers) == [
        (10, 40, 8080, "b.api.svc.test."),
        (10, 60, 8080, "a.api.svc.test."),
        (20, 0, 9090, "c.api.svc.test."),
    ]
    assert [rr.name for rr in msg.additional] == [
        "a.api.svc.test.",
        "b.api.svc.test.",
        "c.api.svc.test.",
        "a.api.svc.test.",
    ]
    assert [wire.decode_a(data, rr) for rr in msg.additional[:3]] == [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
    ]
    assert wire.decode_aaaa(data, msg.additional[3]) == "2001:db8::1"
    assert all(rr.ttl == 30 for rr in msg.answers + msg.additional)


def test_srv_no_service_target_is_root() -> None:
    data = _srv_no_service().to_wire()
    (rr,) = wire.parse(data).answers
    assert wire.decode_srv(data, rr) == (0, 0, 0, ".")
    assert rr.ttl == 0


def test_nxdomain_with_soa() -> None:
    data = _nxdomain().to_wire()
    msg = wire.parse(data)
    assert msg.rcode == wire.RCODE_NXDOMAIN
    assert msg.answers == ()
    (soa_rr,) = msg.authority
    assert soa_rr.section == wire.SECTION_AUTHORITY
    assert wire.decode_soa(data, soa_rr) == wire.Soa(
        "ns1.svc.test.", "hostmaster.svc.test.", 2024010101, 7200, 900, 1209600, 30
    )


def test_extended_rcode_and_edns_payload() -> None:
    msg = wire.parse(_badvers().to_wire())
    assert msg.rcode == 16
    assert msg.flags & 0xF == 0
    assert msg.edns_payload == 4096
    assert msg.additional == ()


def test_truncated_flag() -> None:
    msg = wire.parse(_truncated().to_wire())
    assert msg.tc
    assert msg.edns_payload == 512


def test_no_edns_means_none() -> None:
    msg = wire.parse(_nodata().to_wire())
    assert msg.edns_payload is None


def test_odd_names_escaped_like_dnspython() -> None:
    data = _odd_names().to_wire()
    msg = wire.parse(data)
    assert msg.qname == r"we\.ird.sp\032ace.\"q\"\(x\)\;\\\@\$.\000\127\255\128.test."
    assert msg.answers[0].name == msg.qname
    assert wire.decode_cname(data, msg.answers[3]) == "upper.case.test."


def test_odd_ttls() -> None:
    msg = wire.parse(_odd_ttls().to_wire())
    assert [rr.ttl for rr in msg.answers] == [0, 2**31 - 1]


def test_ttl_with_top_bit_set_counts_as_zero() -> None:
    data = bytearray(_odd_ttls().to_wire())
    msg = wire.parse(bytes(data))
    struct.pack_into(">I", data, msg.answers[1].ttl_offset, 2**31)
    assert wire.parse(bytes(data)).answers[1].ttl == 0
    check_against_dnspython(bytes(data))


def test_no_question() -> None:
    msg = wire.parse(_no_question().to_wire())
    assert (msg.id, msg.qname, msg.qtype, msg.qclass) == (4321, "", 0, 0)
    assert msg.rcode == wire.RCODE_REFUSED


def test_message_properties_and_opcode() -> None:
    header = struct.pack(">HHHHHH", 1, 0x8000 | (5 << 11) | 0x0400 | 0x0200 | 0x0080, 0, 0, 0, 0)
    msg = wire.parse(header)
    assert (msg.qr, msg.aa, msg.tc, msg.rd, msg.ra) == (True, True, True, False, True)
    assert msg.opcode == 5


def test_parse_accepts_bytearray_and_memoryview() -> None:
    data = _srv_with_glue().to_wire()
    assert wire.parse(bytearray(data)) == wire.parse(data)
    assert wire.parse(memoryview(data)) == wire.parse(data)


def test_trailing_garbage_is_ignored() -> None:
    data = _srv_with_glue().to_wire()
    assert wire.parse(data + b"\xff\x00garbage") == wire.parse(data)


def test_records_are_frozen_and_equal_to_constructed() -> None:
    data = _srv_no_service().to_wire()
    (rr,) = wire.parse(data).answers
    same = Record(rr.name, rr.rdtype, rr.rdclass, rr.ttl, rr.ttl_offset, rr.rdata_offset, 7, 1)
    assert rr == same
    assert hash(rr) == hash(same)
    assert type(rr) is Record
    with pytest.raises(AttributeError):
        rr.ttl = 5  # type: ignore[misc]
    assert not hasattr(rr, "__dict__")


# ---------------------------------------------------------------------------
# hand-built hostile messages
# ---------------------------------------------------------------------------


def _header(qd: int = 0, an: int = 0, ns: int = 0, ar: int = 0, *, qid: int = 0x1234) -> bytes:
    return struct.pack(">HHHHHH", qid, 0x8180, qd, an, ns, ar)


QUESTION = b"\x03api\x04test\x00" + struct.pack(">HH", 1, 1)  # at offset 12, ends at 26


def _rr(owner: bytes, rdtype: int = 1, rdata: bytes = b"\x7f\x00\x00\x01", ttl: int = 60) -> bytes:
    return owner + struct.pack(">HHIH", rdtype, 1, ttl, len(rdata)) + rdata


def _bad(data: bytes, match: str) -> None:
    with pytest.raises(WireError, match=match):
        wire.parse(data)


def test_hand_built_message_parses() -> None:
    data = _header(1, 1) + QUESTION + _rr(b"\xc0\x0c")
    msg = check_against_dnspython(data)
    assert msg.answers[0].name == "api.test."
    assert wire.decode_a(data, msg.answers[0]) == "127.0.0.1"


@pytest.mark.parametrize("length", range(12))
def test_short_header(length: int) -> None:
    _bad(_header(1, 1)[:length], "shorter than the 12-byte header")


def test_every_truncation_is_rejected() -> None:
    for data in (_srv_with_glue().to_wire(), _nxdomain().to_wire(), _odd_names().to_wire()):
        wire.parse(data)
        for cut in range(len(data)):
            with pytest.raises(WireError):
                wire.parse(data[:cut])


def test_self_pointer() -> None:
    _bad(_header(1) + b"\xc0\x0c" + b"\x00\x01\x00\x01", "does not point back")
    _bad(_header(1, 1) + QUESTION + _rr(b"\xc0\x1a"), "does not point back")


def test_forward_pointer() -> None:
    _bad(_header(1, 1) + QUESTION + _rr(b"\xc0\x30") + b"\x00" * 40, "does not point back")


def test_pointer_loop() -> None:
    # offset 26: "a" + pointer to 31; offset 31: "b" + pointer back to 26 -> a loop
    # that a naive walker follows forever. The first pointer already points forward.
    loop = b"\x01a\xc0\x1f" + b"\x00" + b"\x01b\xc0\x1a"
    _bad(_header(1, 1) + QUESTION + _rr(loop), "does not point back")
    # Entering the loop from a later name (at 36): the jump back to 26 is fine, the
    # jump from there forward to 31 is not.
    data = _header(1, 1) + QUESTION + loop + b"\x00" + b"\xc0\x1a"
    assert len(data) == 38
    with pytest.raises(WireError, match="does not point back"):
        wire.read_name(data, 36)


def test_nested_pointers_are_followed() -> None:
    # Owner at 26 is "x" + pointer to the question; the next owner is "y" + pointer to 26.
    data = _header(1, 2) + QUESTION + _rr(b"\x01x\xc0\x0c") + _rr(b"\x01y\xc0\x1a")
    msg = check_against_dnspython(data)
    assert [rr.name for rr in msg.answers] == ["x.api.test.", "y.x.api.test."]


def test_pointer_into_header() -> None:
    _bad(_header(1, 1) + QUESTION + _rr(b"\xc0\x05"), "into the header")
    _bad(_header(1, 1) + QUESTION + _rr(b"\x01a\xc0\x00"), "into the header")


@pytest.mark.parametrize(
    ("label", "match"), [(b"\x05hello", "overlaps"), (b"\x06hello", "runs past")]
)
def test_suffix_running_into_the_pointing_name(label: bytes, match: str) -> None:
    # Record 1 (owner at 26) has 6 bytes of rdata at 38..44 that look like a label; the
    # owner of record 2 at 44 points to 38. The label read there reaches offset 44, the
    # start of the very name that pointed to it: that must not be read as part of it.
    data = _header(1, 2) + QUESTION + _rr(b"\xc0\x0c", rdtype=16, rdata=label) + _rr(b"\xc0\x26")
    _bad(data, match)


@pytest.mark.parametrize("label_byte", [0x40, 0x41, 0x7F, 0x80, 0xBF])
def test_reserved_label_types(label_byte: int) -> None:
    _bad(_header(1) + bytes([label_byte]) + b"abc\x00\x00\x01\x00\x01", "reserved label type")
    _bad(_header(1, 1) + QUESTION + _rr(b"\x01a" + bytes([label_byte])), "reserved label type")


def test_label_length_64_is_rejected() -> None:
    # 63 is the largest label; a length byte of 64 is the reserved 0x40 type.
    ok = _header(1) + b"\x3f" + b"a" * 63 + b"\x00\x00\x01\x00\x01"
    assert wire.parse(ok).qname == "a" * 63 + "."
    _bad(_header(1) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", "reserved label type")


def test_name_length_limit_uncompressed() -> None:
    # 127 one-octet labels + root = 255 octets: the longest legal name.
    longest = b"\x01a" * 127 + b"\x00"
    assert len(longest) == 255
    msg = check_against_dnspython(_header(1) + longest + b"\x00\x01\x00\x01")
    assert msg.qname == "a." * 127
    _bad(_header(1) + b"\x01a" + longest + b"\x00\x01\x00\x01", "longer than 255")


def test_name_length_limit_counts_expanded_length() -> None:
    long_q = b"\x3f" + b"q" * 63 + b"\x3f" + b"r" * 63 + b"\x3f" + b"s" * 63 + b"\x00"  # 193
    q = long_q + b"\x00\x01\x00\x01"
    fits = b"\x3d" + b"x" * 61 + b"\xc0\x0c"  # 62 + 193 = 255
    too_long = b"\x3e" + b"x" * 62 + b"\xc0\x0c"  # 63 + 193 = 256
    check_against_dnspython(_header(1, 1) + q + _rr(fits))
    _bad(_header(1, 1) + q + _rr(too_long), "longer than 255")


def _pointer_chain(records: int) -> tuple[bytes, list[int]]:
    """A message whose record k's owner is a pointer to record k-1's owner."""
    data = bytearray(_header(0, records))
    starts = []
    for k in range(records):
        starts.append(len(data))
        owner = b"\x01a\x00" if k == 0 else struct.pack(">H", 0xC000 | starts[k - 1])
        data += _rr(owner, rdtype=16, rdata=b"")
    return bytes(data), starts


def test_pointer_chain_limit_matches_uncached_walk() -> None:
    data, starts = _pointer_chain(33)  # the last owner follows 32 pointers
    msg = wire.parse(data)
    assert [rr.name for rr in msg.answers] == ["a."] * 33
    assert all(
        wire.read_name(data, s) == ("a.", s + (3 if i == 0 else 2)) for i, s in enumerate(starts)
    )
    data, starts = _pointer_chain(34)
    with pytest.raises(WireError, match="too many compression pointers"):
        wire.read_name(data, starts[-1])
    _bad(data, "too many compression pointers")


def test_counts_that_lie() -> None:
    _bad(_header(1, 5000) + QUESTION + _rr(b"\xc0\x0c"), "exceed")
    _bad(_header(1, 0, 0, 65535) + QUESTION, "exceed")
    # Plausible count, but the bytes run out.
    _bad(_header(1, 2) + QUESTION + _rr(b"\xc0\x0c") + b"\x00" * 10, "is truncated")


def test_too_many_questions() -> None:
    _bad(_header(2) + QUESTION + QUESTION, "2 questions")


def test_truncated_question() -> None:
    _bad(_header(1) + QUESTION[:-1], "question is truncated")
    _bad(_header(1) + b"\x03api", "truncated")


def test_rdata_past_end() -> None:
    data = _header(1, 1) + QUESTION + b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 5) + b"\x01"
    _bad(data, "runs past the end")


def test_truncated_record_header() -> None:
    data = _header(1, 1) + QUESTION + b"\xc0\x0c" + struct.pack(">HHI", 1, 1, 60)
    _bad(data, "exceed")
    _bad(data + b"\x00", "is truncated")


def _opt(owner: bytes = b"\x00", payload: int = 1232, ttl: int = 0) -> bytes:
    return owner + struct.pack(">HHIH", 41, payload, ttl, 0)


def test_opt_record_parsed_and_excluded() -> None:
    data = _header(1, 1, 0, 2) + QUESTION + _rr(b"\xc0\x0c") + _opt(ttl=1 << 24) + _rr(b"\xc0\x0c")
    msg = check_against_dnspython(data)
    assert msg.edns_payload == 1232
    assert msg.rcode == 16
    assert len(msg.additional) == 1


def test_opt_outside_additional() -> None:
    _bad(_header(1, 1) + QUESTION + _opt(), "OPT record outside")
    _bad(_header(1, 0, 1) + QUESTION + _opt(), "OPT record outside")


def test_opt_with_non_root_owner() -> None:
    _bad(_header(1, 0, 0, 1) + QUESTION + _opt(b"\xc0\x0c"), "non-root owner")


def test_two_opt_records() -> None:
    _bad(_header(1, 0, 0, 2) + QUESTION + _opt() + _opt(), "more than one OPT")


# ---------------------------------------------------------------------------
# read_name / question_key
# ---------------------------------------------------------------------------


def test_read_name_offsets() -> None:
    data = _header(1, 1) + QUESTION + _rr(b"\x01X\xc0\x0c")
    assert wire.read_name(data, 12) == ("api.test.", 22)
    assert wire.read_name(data, 16) == ("test.", 22)
    assert wire.read_name(data, 26) == ("x.api.test.", 30)
    assert wire.read_name(data, 21) == (".", 22)


@pytest.mark.parametrize("offset", [-1, 10_000])
def test_read_name_offset_outside(offset: int) -> None:
    with pytest.raises(WireError, match="outside"):
        wire.read_name(_header(1) + QUESTION, offset)


def test_question_key() -> None:
    query = dns.message.make_query("_HTTP._tcp.Api.TEST.", "SRV").to_wire()
    assert wire.question_key(query) == ("_http._tcp.api.test.", wire.TYPE_SRV, wire.CLASS_IN)
    # It parses only the question: a QR bit or garbage after it does not matter.
    assert wire.question_key(_header(1, 9) + QUESTION + b"junk") == ("api.test.", 1, 1)


@pytest.mark.parametrize("qd", [0, 2])
def test_question_key_needs_one_question(qd: int) -> None:
    with pytest.raises(WireError, match=f"{qd} questions"):
        wire.question_key(_header(qd) + QUESTION * qd)


def test_question_key_hostile() -> None:
    for data in (b"", _header(1)[:11], _header(1) + QUESTION[:-2], _header(1) + b"\xc0\x0c"):
        with pytest.raises(WireError):
            wire.question_key(data)


# ---------------------------------------------------------------------------
# decoders
# ---------------------------------------------------------------------------


def _single(rdtype: int, rdata: bytes, extra: bytes = b"") -> tuple[bytes, Record]:
    data = _header(1, 1) + QUESTION + _rr(b"\xc0\x0c", rdtype=rdtype, rdata=rdata) + extra
    return data, wire.parse(data).answers[0]


@pytest.mark.parametrize("length", [0, 3, 5, 16])
def test_decode_a_length(length: int) -> None:
    data, rr = _single(1, b"\x01" * length)
    with pytest.raises(WireError, match="not 4"):
        wire.decode_a(data, rr)


@pytest.mark.parametrize("length", [0, 4, 15, 17])
def test_decode_aaaa_length(length: int) -> None:
    data, rr = _single(28, b"\x01" * length)
    with pytest.raises(WireError, match="not 16"):
        wire.decode_aaaa(data, rr)


@pytest.mark.parametrize(
    "packed",
    [
        bytes(16),
        bytes(15) + b"\x01",
        bytes(10) + b"\xff\xff\xc0\x00\x02\x01",
        bytes(12) + b"\xc0\x00\x02\x01",
        bytes(12) + b"\x00\x00\x00\x01",
        bytes.fromhex("20010db8000000010000000000000001"),
        bytes.fromhex("20010db8000100000001000000000001"),
        bytes.fromhex("00010000000000000000000000000000"),
        bytes.fromhex("ffffffffffffffffffffffffffffffff"),
    ],
)
def test_decode_aaaa_matches_ipaddress(packed: bytes) -> None:
    data, rr = _single(28, packed)
    assert wire.decode_aaaa(data, rr) == ipaddress.IPv6Address(packed).compressed


def test_decode_srv_validation() -> None:
    fixed = struct.pack(">HHH", 1, 2, 3)
    data, rr = _single(33, fixed + b"\x00")
    assert wire.decode_srv(data, rr) == (1, 2, 3, ".")
    data, rr = _single(33, fixed + b"\xc0\x0c")  # compressed target: tolerated, like dnspython
    assert wire.decode_srv(data, rr) == (1, 2, 3, "api.test.")
    for bad in (fixed, fixed[:5], fixed + b"\x00\x00", fixed + b"\x01a"):
        data, rr = _single(33, bad, extra=b"\x00" * 8)
        with pytest.raises(WireError):
            wire.decode_srv(data, rr)
    # Target name running past the rdata into the following bytes.
    data, rr = _single(33, fixed + b"\x01a", extra=b"\x00")
    with pytest.raises(WireError, match="does not fill"):
        wire.decode_srv(data, rr)


def test_decode_cname_validation() -> None:
    data, rr = _single(5, b"\x01a\xc0\x0c")
    assert wire.decode_cname(data, rr) == "a.api.test."
    for bad in (b"", b"\x00\x00", b"\x01a\xc0\x0c\x00", b"\x01a", b"\xc0\x0c\x00"):
        data, rr = _single(5, bad, extra=b"\x00" * 4)
        with pytest.raises(WireError):
            wire.decode_cname(data, rr)


def test_decode_soa_validation() -> None:
    numbers = struct.pack(">IIIII", 1, 2, 3, 4, 5)
    data, rr = _single(6, b"\x00\x00" + numbers)
    assert wire.decode_soa(data, rr) == wire.Soa(".", ".", 1, 2, 3, 4, 5)
    for bad in (b"\x00\x00" + numbers[:-1], b"\x00\x00" + numbers + b"\x00", b"\x00" + numbers):
        data, rr = _single(6, bad, extra=b"\x00" * 8)
        with pytest.raises(WireError):
            wire.decode_soa(data, rr)


def test_decoders_check_rdata_bounds() -> None:
    data, rr = _single(1, b"\x01\x02\x03\x04")
    forged = rr._replace(rdata_offset=len(data) - 2)
    for decode in (wire.decode_a, wire.decode_srv, wire.decode_cname, wire.decode_rdata):
        with pytest.raises(WireError, match="outside"):
            decode(data, forged)


def test_decode_rdata_maps_errors() -> None:
    data, rr = _single(15, b"\x00")  # MX needs a preference and a name
    with pytest.raises(WireError, match="type 15"):
        wire.decode_rdata(data, rr)
    data, rr = _single(15, b"\x00\x0a\xc0\x0c")
    rd = wire.decode_rdata(data, rr)
    assert rd.rdtype == dns.rdatatype.MX
    assert rd.exchange == dns.name.from_text("api.test.")  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# encode_name
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (".", b"\x00"),
        ("a", b"\x01a\x00"),
        ("a.", b"\x01a\x00"),
        ("_http._tcp.Api.Test.", b"\x05_http\x04_tcp\x03Api\x04Test\x00"),
        (r"a\.b.c", b"\x03a.b\x01c\x00"),
        (r"\065bc.\000\255", b"\x03Abc\x02\x00\xff\x00"),
        (r"\@\$\\\"", b'\x04@$\\"\x00'),
        (r"a\..", b"\x02a.\x00"),
        ("x" * 63, b"\x3f" + b"x" * 63 + b"\x00"),
    ],
)
def test_encode_name(text: str, expected: bytes) -> None:
    assert wire.encode_name(text) == expected
    assert dns.name.from_text(text).to_wire() == expected


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "empty name"),
        ("a..b", "empty label"),
        (".a", "empty label"),
        ("..", "empty label"),
        ("a.b..", "empty label"),
        ("x" * 64 + ".test", "longer than 63"),
        (r"\120" * 64, "longer than 63"),
        (".".join(["abcdefghi"] * 26), "more than 255"),
        ("a\\", "trailing backslash"),
        (r"a\12", "three digits"),
        (r"a\1x2", "three digits"),
        (r"a\256", "above 255"),
        ("caf\u00e9.test", "non-ASCII"),
        ("a\\\u00e9", "not ASCII"),
    ],
)
def test_encode_name_errors(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        wire.encode_name(bad)
    assert repr(bad) in str(info.value)
    assert not isinstance(info.value, WireError)


def test_encode_name_longest() -> None:
    name = ".".join(["a" * 63] * 3 + ["b" * 61])  # 64*3 + 62 + 1 = 255
    assert len(wire.encode_name(name)) == 255
    with pytest.raises(ValueError, match="more than 255"):
        wire.encode_name(name + "b")


# ---------------------------------------------------------------------------
# build_query / make_response
# ---------------------------------------------------------------------------


def test_build_query_round_trip() -> None:
    data = wire.build_query("_http._tcp.API.svc.test", wire.TYPE_SRV, 0xBEEF)
    ref = dns.message.from_wire(data)
    assert ref.id == 0xBEEF
    assert ref.flags == dns.flags.RD
    assert ref.opcode() == dns.opcode.QUERY
    (question,) = ref.question
    assert question.name.to_text() == "_http._tcp.API.svc.test."  # case preserved
    assert (question.rdtype, question.rdclass) == (dns.rdatatype.SRV, dns.rdataclass.IN)
    assert ref.edns == 0
    assert ref.payload == 1232
    assert ref.ednsflags == 0
    msg = wire.parse(data)
    assert (msg.qname, msg.qtype, msg.edns_payload, msg.rd, msg.qr) == (
        "_http._tcp.api.svc.test.",
        33,
        1232,
        True,
        False,
    )


def test_build_query_options() -> None:
    data = wire.build_query("a.test.", wire.TYPE_AAAA, 7, rd=False, edns_payload=None, qclass=3)
    ref = dns.message.from_wire(data)
    assert ref.flags == 0
    assert ref.edns == -1
    assert ref.question[0].rdclass == dns.rdataclass.CH
    assert ref.question[0].rdtype == dns.rdatatype.AAAA
    assert dns.message.from_wire(wire.build_query(".", 2, 1, edns_payload=4096)).payload == 4096


@pytest.mark.parametrize(
    "kwargs",
    [
        {"qid": 65536},
        {"qid": -1},
        {"qtype": 70000},
        {"qclass": -2},
        {"edns_payload": 511},
        {"edns_payload": 65536},
        {"qname": "a..b"},
    ],
)
def test_build_query_rejects(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"qname": "a.test", "qtype": 1, "qid": 1, **kwargs}
    with pytest.raises(ValueError, match=repr(next(iter(kwargs.values()))).replace(".", r"\.")):
        wire.build_query(**args)  # type: ignore[arg-type]


def test_make_response_echoes_question() -> None:
    query = dns.message.make_query("_HTTP._Tcp.api.TEST.", "SRV", id=4242)
    raw = query.to_wire()
    for rcode in (wire.RCODE_SERVFAIL, wire.RCODE_REFUSED, wire.RCODE_FORMERR, wire.RCODE_NOERROR):
        ref = dns.message.from_wire(wire.make_response(raw, rcode))
        assert ref.id == 4242
        assert ref.flags & dns.flags.QR
        assert ref.flags & dns.flags.RD
        assert not ref.flags & (dns.flags.AA | dns.flags.TC | dns.flags.RA)
        assert ref.rcode() == rcode
        assert ref.question[0].name.to_text() == "_HTTP._Tcp.api.TEST."  # 0x20 case kept
        assert ref.question[0].rdtype == dns.rdatatype.SRV
        assert ref.answer == ref.authority == ref.additional == []
        assert ref.edns == -1
        assert query.is_response(ref)


def test_make_response_copies_opcode_and_clears_rd() -> None:
    query = bytearray(wire.build_query("a.test", 1, 9, rd=False))
    struct.pack_into(">H", query, 2, 4 << 11)  # NOTIFY
    msg = wire.parse(wire.make_response(bytes(query), wire.RCODE_NOTIMP))
    assert msg.opcode == 4
    assert not msg.rd
    assert msg.rcode == wire.RCODE_NOTIMP
    assert msg.qname == "a.test."


@pytest.mark.parametrize(
    "query",
    [
        b"\x12\x34",
        b"\x12\x34\x01",
        b"\x12\x34\x01\x00",
        _header(0, qid=0x1234),
        _header(2, qid=0x1234) + QUESTION * 2,
        _header(1, qid=0x1234) + QUESTION[:-1],
        _header(1, qid=0x1234) + b"\xc0\x0c\x00\x01\x00\x01",
        _header(1, qid=0x1234) + b"\x41",
    ],
)
def test_make_response_header_only_formerr(query: bytes) -> None:
    response = wire.make_response(query, wire.RCODE_SERVFAIL)
    assert len(response) == 12
    msg = wire.parse(response)
    assert msg.id == 0x1234
    assert msg.rcode == wire.RCODE_FORMERR
    assert msg.qr
    assert msg.rd == (len(query) >= 4 and bool(query[2] & 1))
    assert (msg.answers, msg.authority, msg.additional, msg.qname) == ((), (), (), "")


@pytest.mark.parametrize("query", [b"", b"\x12"])
def test_make_response_without_id(query: bytes) -> None:
    with pytest.raises(WireError, match="too short"):
        wire.make_response(query, wire.RCODE_FORMERR)


@pytest.mark.parametrize("rcode", [-1, 16, 23])
def test_make_response_rejects_wide_rcode(rcode: int) -> None:
    with pytest.raises(ValueError, match=str(rcode)):
        wire.make_response(wire.build_query("a.test", 1, 1), rcode)


# ---------------------------------------------------------------------------
# in-place rewrites
# ---------------------------------------------------------------------------


def _edns_srv() -> bytes:
    r = _srv_with_glue()
    r.use_edns(0, ednsflags=dns.flags.DO, payload=1232)
    return r.to_wire()


def test_patch_id() -> None:
    buf = bytearray(_edns_srv())
    wire.patch_id(buf, 0xBEEF)
    assert dns.message.from_wire(bytes(buf)).id == 0xBEEF
    assert wire.parse(bytes(buf)).id == 0xBEEF
    with pytest.raises(ValueError, match="65536"):
        wire.patch_id(buf, 65536)
    with pytest.raises(ValueError, match="no room"):
        wire.patch_id(bytearray(b"\x00"), 1)


def test_rewrite_ttls_keeps_opt() -> None:
    buf = bytearray(_edns_srv())
    msg = wire.parse(bytes(buf))
    wire.rewrite_ttls(buf, msg, 7)
    ref = dns.message.from_wire(bytes(buf))
    rrsets = ref.answer + ref.authority + ref.additional
    assert rrsets
    assert all(rrset.ttl == 7 for rrset in rrsets)
    assert ref.ednsflags == dns.flags.DO  # the OPT "TTL" holds EDNS flags: untouched
    assert ref.payload == 1232
    check_against_dnspython(bytes(buf))
    with pytest.raises(ValueError, match="ttl"):
        wire.rewrite_ttls(buf, msg, 2**31)
    with pytest.raises(ValueError, match="shorter"):
        wire.rewrite_ttls(buf[:-30], msg, 1)


def test_age_ttls() -> None:
    r = _cname_chain()  # TTLs 300, 60, 20 in answer; 3600 elsewhere
    r.use_edns(0, ednsflags=dns.flags.DO)
    buf = bytearray(r.to_wire())
    msg = wire.parse(bytes(buf))
    wire.age_ttls(buf, msg, 50, floor=15)
    ref = dns.message.from_wire(bytes(buf), one_rr_per_rrset=True)
    assert [rrset.ttl for rrset in ref.answer] == [250, 15, 15, 15]
    assert {rrset.ttl for rrset in ref.authority + ref.additional} == {3550}
    assert ref.ednsflags == dns.flags.DO
    wire.age_ttls(buf, msg, 10_000)
    ref = dns.message.from_wire(bytes(buf), one_rr_per_rrset=True)
    assert {rrset.ttl for rrset in ref.answer + ref.authority + ref.additional} == {0}


def test_age_ttls_top_bit_counts_as_zero() -> None:
    buf = bytearray(_odd_ttls().to_wire())
    msg = wire.parse(bytes(buf))
    struct.pack_into(">I", buf, msg.answers[0].ttl_offset, 0xFFFFFFFF)
    wire.age_ttls(buf, msg, 1, floor=5)
    assert [rr.ttl for rr in wire.parse(bytes(buf)).answers] == [5, 2**31 - 2]


@pytest.mark.parametrize(("elapsed", "floor"), [(-1, 0), (0, -1), (2**31, 0), (0, 2**31)])
def test_age_ttls_rejects(elapsed: int, floor: int) -> None:
    buf = bytearray(_odd_ttls().to_wire())
    with pytest.raises(ValueError, match=r"elapsed|floor"):
        wire.age_ttls(buf, wire.parse(bytes(buf)), elapsed, floor)


def test_parse_with_the_asked_question_skips_reading_it_but_agrees() -> None:
    data = _srv_with_glue().to_wire()
    plain = wire.parse(data)
    asked = wire.question_of(wire.build_query(plain.qname, plain.qtype, 0))
    assert asked[1] == plain.qname
    assert wire.parse(data, asked) == plain
    # A question echoed in other case (0x20) does not match byte for byte: read as usual.
    upper = data[:12] + data[12:].replace(b"svc", b"SVC", 1)
    assert wire.parse(upper, asked) == wire.parse(upper)
    # Another question entirely: read, not taken from ``asked``.
    other = wire.question_of(wire.build_query("other.test.", wire.TYPE_A, 0))
    assert wire.parse(data, other).qname == plain.qname


def test_srv_targets_read_once_per_process_agree_with_a_fresh_walk() -> None:
    data = _srv_with_glue().to_wire()
    for _ in range(2):  # the second parse takes the targets from the process-wide memo
        msg = wire.parse(data)
        for rr in msg.answers:
            assert wire.decode_srv(data, rr, msg.names) == wire.decode_srv(data, rr)


# ---------------------------------------------------------------------------
# parse cost: pointers into the middle of names (issue 10)
# ---------------------------------------------------------------------------


def check_names_cache(data: bytes, msg: wire.Message) -> None:
    """Every name parse() cached is what a fresh walk from that offset reads."""
    for offset, entry in msg.names.items():
        fresh: wire.NameCache = {}
        wire._read_name(data, offset, fresh)
        assert fresh[offset] == entry, offset


_FIXED = struct.Struct(">HHIH")
_LONG_NAME = b"\x01a" * 127 + b"\x00"  # 127 labels, 255 octets: the longest walk there is
_MESSAGE_SIZE = 64_000


def _fill(first: bytes, record: Callable[[int], bytes], qd: int = 0) -> bytes:
    """A message of about _MESSAGE_SIZE bytes: ``first``, then record(0), record(1), ..."""
    body = bytearray(first)
    count = 1 if first and not qd else 0
    while 12 + len(body) + len(record(count)) <= _MESSAGE_SIZE:
        body += record(count)
        count += 1
    return _header(qd, count) + bytes(body)


def _into_long_name(label: Callable[[int], int]) -> bytes:
    """A long owner, then A records whose owners point at its label ``label(i)``."""
    first = _LONG_NAME + _FIXED.pack(1, 1, 60, 4) + b"\x7f\x00\x00\x01"
    return _fill(
        first,
        lambda i: (
            struct.pack(">H", 0xC000 | (12 + 2 * label(i)))
            + _FIXED.pack(1, 1, 60, 4)
            + b"\x7f\x00\x00\x01"
        ),
    )


def _srv_targets_into_long_name() -> bytes:
    first = _LONG_NAME + _FIXED.pack(1, 1, 60, 4) + b"\x7f\x00\x00\x01"
    return _fill(
        first,
        lambda i: (
            b"\xc0\x0c"
            + _FIXED.pack(33, 1, 60, 8)
            + b"\x00\x01\x00\x01\x00\x01"
            + struct.pack(">H", 0xC000 | (12 + 2 * (126 - i % 127)))
        ),
    )


def _failing_srv_targets() -> bytes:
    """SRV targets pointing at 120 labels that end in a reserved label type: each fails late."""
    bad = b"\x01a" * 120 + b"\x40"
    first = b"\x00" + _FIXED.pack(65280, 1, 60, len(bad)) + bad
    return _fill(
        first, lambda i: b"\x00" + _FIXED.pack(33, 1, 60, 8) + b"\x00\x01\x00\x01\x00\x01\xc0\x17"
    )


def _srv_targets_running_on() -> bytes:
    """Each SRV target's labels run on through the following records (TTL, SRV fields)."""
    # From a target at offset 18: 7 -> next record's TTL: 1 'a', 3 'b' + rdlength, then
    # priority..port: 4 'cccc', 1 (covers the next target's first byte), 6 -> the next record.
    record = (
        b"\xc0\x0c\x00\x21\x00\x01" + b"\x01a\x03b" + b"\x00\x08" + b"\x04cccc\x01" + b"\x07\x06"
    )
    return _fill(b"\x00\x00\x01\x00\x01", lambda i: record, qd=1)


def _normal_same_size() -> bytes:
    """The baseline: as many records, each owner written out in full."""
    return _fill(
        b"",
        lambda i: (
            b"\x04h%03d\x03svc\x04test\x00" % (i % 1000)
            + _FIXED.pack(1, 1, 60, 4)
            + b"\x7f\x00\x00\x01"
        ),
    )


def _best_parse_time(data: bytes) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        with contextlib.suppress(WireError):
            wire.parse(data)
        best = min(best, time.perf_counter() - start)
    return best


CRAFTED = {
    "owners into the middle of one long name": lambda: _into_long_name(lambda i: 63),
    "owners into each label, first to last": lambda: _into_long_name(lambda i: i % 127),
    "owners into each label, last to first": lambda: _into_long_name(lambda i: 126 - i % 127),
    "SRV targets into each label": _srv_targets_into_long_name,
    "SRV targets that fail late": _failing_srv_targets,
    "SRV targets running on": _srv_targets_running_on,
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_pointers_cost_what_a_normal_message_costs(name: str) -> None:
    """A 64 KB message of pointers into long names parsed 10-20x slower than a normal one."""
    crafted = CRAFTED[name]()
    normal = _normal_same_size()
    assert abs(len(crafted) - len(normal)) < 300
    _best_parse_time(normal)  # warm up
    ratio = _best_parse_time(crafted) / _best_parse_time(normal)
    assert ratio < 3, f"{name}: {ratio:.1f}x a normal message of the same size"


def test_crafted_pointers_still_read_right() -> None:
    data = _into_long_name(lambda i: 126 - i % 127)
    msg = wire.parse(data)
    for i, rr in enumerate(msg.answers[1:], start=1):
        assert rr.name == "a." * (127 - (126 - i % 127))
    check_names_cache(data, msg)
    check_against_dnspython(data, rdata=False)


def _txt_64k() -> bytes:
    r = _response("big.txt.test.", "TXT", payload=65535)
    strings = " ".join(f'"{chr(97 + i % 26) * 255}"' for i in range(250))
    _add(r.answer, "big.txt.test.", 60, "TXT", strings)
    return r.to_wire(max_size=65535)


def _reverse_v6() -> bytes:
    """PTR records under ip6.arpa: owners compressed against the middle of earlier owners."""
    r = _response("8.b.d.0.1.0.0.2.ip6.arpa.", "PTR", payload=65535)
    for i in range(400):
        nibbles = ".".join(f"{i:032x}"[::-1])
        _add(r.answer, f"{nibbles}.8.b.d.0.1.0.0.2.ip6.arpa.", 60, "PTR", f"host-{i}.v6.test.")
    return r.to_wire(max_size=65535)


@pytest.mark.parametrize(
    "build", [_txt_64k, _reverse_v6, lambda: _large().to_wire(), lambda: _uncompressed(_large())]
)
def test_legitimate_large_messages_parse_as_before(build: Callable[[], bytes]) -> None:
    data = build()
    msg = check_against_dnspython(data)
    check_names_cache(data, msg)


# ---------------------------------------------------------------------------
# truncated questions (issue 10)
# ---------------------------------------------------------------------------

TRUNCATED_QUERIES = [
    _header(1) + b"\x00",  # the root name, then nothing: type and class were read from the header
    _header(1) + b"\x00\x00\x21",  # half of the fixed part
    _header(1) + QUESTION[:-4],  # a whole name, no type or class
    _header(1) + QUESTION[:-1],
]


TRUNCATED_IDS = ["root name only", "half the fixed part", "name only", "one byte short"]


@pytest.mark.parametrize("query", TRUNCATED_QUERIES, ids=TRUNCATED_IDS)
def test_question_of_rejects_a_question_without_type_and_class(query: bytes) -> None:
    with pytest.raises(WireError, match="question is truncated"):
        wire.question_of(query)


@pytest.mark.parametrize(
    "query",
    [b"", _header(1)[:11], _header(0), _header(2) + QUESTION * 2],
    ids=["empty", "short header", "no question", "two questions"],
)
def test_question_of_needs_one_question(query: bytes) -> None:
    with pytest.raises(WireError):
        wire.question_of(query)


def test_question_of_root_query() -> None:
    query = _header(1) + b"\x00" + struct.pack(">HH", wire.TYPE_SOA, 1)
    assert wire.question_of(query) == (query[12:], ".")
    response = bytearray(query)
    struct.pack_into(">H", response, 2, 0x8180)
    assert wire.parse(bytes(response), wire.question_of(query)).qtype == wire.TYPE_SOA


@pytest.mark.parametrize("query", TRUNCATED_QUERIES, ids=TRUNCATED_IDS)
def test_question_key_and_make_response_reject_truncated_questions(query: bytes) -> None:
    with pytest.raises(WireError, match="question is truncated"):
        wire.question_key(query)
    response = wire.make_response(query, wire.RCODE_SERVFAIL)
    assert wire.parse(response).rcode == wire.RCODE_FORMERR
    assert len(response) == 12  # nothing echoed: there is no whole question to echo
