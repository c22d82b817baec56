"""Property tests for srvwatch.wire: hostile bytes only ever raise WireError, and
whenever both srvwatch and dnspython accept a message they read it the same way."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import struct

import dns.message
import dns.name
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srvwatch import wire
from srvwatch.wire import WireError
from tests.test_wire import check_against_dnspython, check_names_cache, corpus_wires

FUZZ = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

CORPUS = corpus_wires()


def _decode_all(data: bytes, msg: wire.Message) -> None:
    """Run every decoder on every record: each must return or raise WireError."""
    for rr in msg.answers + msg.authority + msg.additional:
        for decode in (
            wire.decode_a,
            wire.decode_aaaa,
            wire.decode_srv,
            wire.decode_cname,
            wire.decode_soa,
            wire.decode_rdata,
        ):
            with contextlib.suppress(WireError):
                decode(data, rr)
        _agree_srv_with_parse_names(data, msg, rr)


def _agree_srv_with_parse_names(data: bytes, msg: wire.Message, rr: wire.Record) -> None:
    """decode_srv with the names parse() read must give what a fresh walk gives, or fail alike."""
    try:
        fresh: object = wire.decode_srv(data, rr)
    except WireError as exc:
        fresh = type(exc)
    try:
        reused: object = wire.decode_srv(data, rr, msg.names)
    except WireError as exc:
        reused = type(exc)
    assert reused == fresh


def _walk(data: bytes) -> wire.Message | None:
    """Everything a hostile peer can reach; returns the parse result, or None."""
    with contextlib.suppress(WireError):
        wire.question_key(data)
    if len(data) >= 2:
        response = wire.make_response(data, wire.RCODE_SERVFAIL)  # never raises here
        _check_response(data, response)
    else:
        with pytest.raises(WireError):
            wire.make_response(data, wire.RCODE_SERVFAIL)
    try:
        msg = wire.parse(data)
    except WireError:
        return None
    _decode_all(data, msg)
    _agree_with_asked_question(data, msg)
    return msg


def _agree_with_asked_question(data: bytes, msg: wire.Message) -> None:
    """parse() given the question we asked reads exactly what it reads without it."""
    if not msg.qname:
        return
    try:
        query = wire.build_query(msg.qname, msg.qtype, 0)
    except ValueError:
        return  # a name the presentation form cannot carry back (escapes, length)
    asked = wire.question_of(query)
    again = wire.parse(data, asked)
    assert again == msg
    for rr in msg.answers:
        if rr.rdtype == wire.TYPE_SRV:
            _agree_srv_with_parse_names(data, again, rr)


def _check_response(query: bytes, response: bytes) -> None:
    msg = wire.parse(response)
    assert response[:2] == query[:2]
    assert msg.qr
    if len(response) == 12:
        assert msg.rcode == wire.RCODE_FORMERR
    else:
        assert msg.rcode == wire.RCODE_SERVFAIL
        assert response[12:] == query[12 : len(response)]  # question echoed byte for byte
        assert (msg.qname, msg.qtype, msg.qclass) == wire.question_key(query)
    if msg.opcode != 5:  # dnspython reads UPDATE's question as a zone section (SOA only)
        check_against_dnspython(response)


def _ref(data: bytes) -> dns.message.Message | None:
    try:
        return dns.message.from_wire(data, one_rr_per_rrset=True, ignore_trailing=True)
    except Exception:  # dnspython may reject for many reasons; only agreement matters
        return None


def _agree(data: bytes, msg: wire.Message, ref: dns.message.Message) -> None:
    assert (msg.id, msg.flags, msg.rcode) == (ref.id, int(ref.flags), int(ref.rcode()))
    if ref.question:
        assert msg.qname == ref.question[0].name.to_text().lower()
        assert (msg.qtype, msg.qclass) == (ref.question[0].rdtype, ref.question[0].rdclass)
    assert msg.edns_payload == (ref.payload if ref.edns >= 0 else None)
    for ours, theirs in (
        (msg.answers, ref.answer),
        (msg.authority, ref.authority),
        (msg.additional, ref.additional),
    ):
        assert len(ours) == len(theirs)
        for rr, rrset in zip(ours, theirs, strict=True):
            assert rr.name == rrset.name.to_text().lower()
            assert (rr.rdtype, rr.rdclass, rr.ttl) == (rrset.rdtype, rrset.rdclass, rrset.ttl)
            _agree_rdata(data, rr, rrset[0])


def _agree_rdata(data: bytes, rr: wire.Record, rd: object) -> None:
    """Where our decoder accepts the rdata, it must read what dnspython read."""
    if rr.rdclass != wire.CLASS_IN:
        return
    try:
        if rr.rdtype == wire.TYPE_A:
            assert wire.decode_a(data, rr) == rd.address  # type: ignore[attr-defined]
        elif rr.rdtype == wire.TYPE_AAAA:
            expected = ipaddress.IPv6Address(rd.address).compressed  # type: ignore[attr-defined]
            assert wire.decode_aaaa(data, rr) == expected
        elif rr.rdtype == wire.TYPE_SRV:
            assert wire.decode_srv(data, rr) == (
                rd.priority,  # type: ignore[attr-defined]
                rd.weight,  # type: ignore[attr-defined]
                rd.port,  # type: ignore[attr-defined]
                rd.target.to_text().lower(),  # type: ignore[attr-defined]
            )
        elif rr.rdtype in (wire.TYPE_CNAME, wire.TYPE_NS, wire.TYPE_PTR):
            assert wire.decode_cname(data, rr) == rd.target.to_text().lower()  # type: ignore[attr-defined]
        elif rr.rdtype == wire.TYPE_SOA:
            soa = wire.decode_soa(data, rr)
            assert (soa.mname, soa.rname, soa.serial, soa.minimum) == (
                rd.mname.to_text().lower(),  # type: ignore[attr-defined]
                rd.rname.to_text().lower(),  # type: ignore[attr-defined]
                rd.serial,  # type: ignore[attr-defined]
                rd.minimum,  # type: ignore[attr-defined]
            )
    except WireError:
        pass  # stricter than dnspython (e.g. pointers into the header): allowed


# (1) random bytes ----------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    _walk(data)


@st.composite
def _headed(draw: st.DrawFn) -> bytes:
    """A plausible header followed by random bytes, to get past the first checks."""
    header = struct.pack(
        ">HHHHHH",
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 2)),
        draw(st.integers(0, 6)),
        draw(st.integers(0, 3)),
        draw(st.integers(0, 4)),
    )
    body = draw(
        st.lists(
            st.one_of(
                st.binary(max_size=12),
                st.sampled_from([b"\x00", b"\xc0\x0c", b"\x00\x29", b"\x00\x21", b"\x01a"]),
                st.integers(12, 80).map(lambda p: struct.pack(">H", 0xC000 | p)),
            ),
            max_size=30,
        )
    )
    return header + b"".join(body)


@FUZZ
@given(_headed())
def test_random_bodies(data: bytes) -> None:
    msg = _walk(data)
    ref = _ref(data)
    if msg is not None and ref is not None:
        _agree(data, msg, ref)


# (2) mutated real responses ----------------------------------------------------


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "pointer", "byte"]))
        if not data:
            break
        index = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[index] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[index:]
        elif kind == "insert":
            data[index:index] = draw(st.binary(min_size=1, max_size=4))
        else:
            pointers = [i for i in range(12, len(data) - 1) if data[i] >= 0xC0]
            if pointers:
                at = pointers[index % len(pointers)]
                target = draw(st.one_of(st.integers(0, 0x3FFF), st.integers(0, len(data))))
                struct.pack_into(">H", data, at, 0xC000 | target)
    return bytes(data)


@FUZZ
@given(_mutated())
def test_mutated_responses(data: bytes) -> None:
    msg = _walk(data)
    ref = _ref(data)
    if msg is not None and ref is not None:
        _agree(data, msg, ref)


@settings(max_examples=len(CORPUS) * 2, deadline=None, database=None)
@given(st.sampled_from(CORPUS), st.binary(max_size=8))
def test_corpus_with_trailing_garbage(data: bytes, garbage: bytes) -> None:
    assert wire.parse(data + garbage) == wire.parse(data)
    check_against_dnspython(data + garbage)


# (3) names -------------------------------------------------------------------------

_labels = st.lists(st.binary(min_size=1, max_size=63), max_size=10).filter(
    lambda labels: sum(len(label) + 1 for label in labels) + 1 <= 255
)


@FUZZ
@given(_labels)
def test_encode_name_round_trip(labels: list[bytes]) -> None:
    name = dns.name.Name([*labels, b""])
    text = name.to_text()
    encoded = wire.encode_name(text)
    assert encoded == name.to_wire()
    assert encoded == dns.name.from_text(text).to_wire()
    if labels:
        assert wire.encode_name(name.to_text(omit_final_dot=True)) == encoded
    header = bytes(12)
    assert wire.read_name(header + encoded + b"junk", 12) == (text.lower(), 12 + len(encoded))


@FUZZ
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80))
def test_encode_name_agrees_with_dnspython_from_text(text: str) -> None:
    try:
        ref: bytes | None = dns.name.from_text(text).to_wire()
    except Exception:
        ref = None
    ours: bytes | None = None
    with contextlib.suppress(ValueError):
        ours = wire.encode_name(text)
    if ours is None:
        with pytest.raises(ValueError, match=re.escape(repr(text))):
            wire.encode_name(text)
    if text == "@":  # dnspython's shorthand for the origin; a literal label for us
        assert ours == b"\x01@\x00"
    elif text == "":  # dnspython reads "" as the root; an empty name is a mistake for us
        assert ours is None
    else:
        assert ours == ref


# AAAA formatting -------------------------------------------------------------------

_words = st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0x0DB8, 0xC000]), min_size=8, max_size=8)


@FUZZ
@given(st.one_of(st.binary(min_size=16, max_size=16), _words.map(lambda w: struct.pack(">8H", *w))))
def test_decode_aaaa_matches_ipaddress(packed: bytes) -> None:
    data = (
        struct.pack(">HHHHHH", 0, 0x8000, 0, 1, 0, 0)
        + b"\x00"
        + struct.pack(">HHIH", 28, 1, 0, 16)
        + packed
    )
    (rr,) = wire.parse(data).answers
    assert wire.decode_aaaa(data, rr) == ipaddress.IPv6Address(packed).compressed


# (4) the names cache (issue 10) ------------------------------------------------------


@st.composite
def _pointer_soup(draw: st.DrawFn) -> bytes:
    """Records whose owners and SRV targets are a few labels and a pointer to anywhere earlier."""
    data = bytearray(struct.pack(">HHHHHH", 1, 0x8180, 0, 0, 0, 0))
    count = draw(st.integers(1, 12))
    for _ in range(count):
        labels = draw(
            st.lists(st.sampled_from([b"\x01a", b"\x02bc", b"\x01\xff", b"\x03d.e"]), max_size=6)
        )
        owner = b"".join(labels)
        if len(data) > 12 and draw(st.booleans()):
            owner += struct.pack(">H", 0xC000 | draw(st.integers(12, len(data) - 1)))
        else:
            owner += b"\x00"
        rdtype = draw(st.sampled_from([1, 33, 65280]))
        if rdtype == 33:
            rdata = b"\x00\x01\x00\x02\x00\x03" + struct.pack(
                ">H", 0xC000 | draw(st.integers(12, len(data)))
            )
        else:
            rdata = draw(
                st.sampled_from([b"\x7f\x00\x00\x01", b"\x01a\x01b\x00", b"\x01a" * 20 + b"\x00"])
            )
        data += owner + struct.pack(">HHIH", rdtype, 1, 60, len(rdata)) + rdata
    struct.pack_into(">H", data, 6, count)
    return bytes(data)


@FUZZ
@given(st.one_of(_pointer_soup(), _headed(), _mutated()))
def test_names_cache_matches_fresh_walks(data: bytes) -> None:
    """Every name parse() caches (at pointer targets and labels inside names too) is exact."""
    try:
        msg = wire.parse(data)
    except WireError:
        return
    check_names_cache(data, msg)
    _decode_all(data, msg)
    ref = _ref(data)
    if ref is not None:
        _agree(data, msg, ref)
