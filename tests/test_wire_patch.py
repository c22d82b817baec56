"""TTL patching must never change a name (issue 10).

rewrite_ttls and age_ttls write TTL bytes in place. A compression pointer may lead
into a TTL field (or to labels that run over one); then a patch changes that name.
patchable() says whether a message is safe, make_patchable() re-encodes one that is
not, and the patch functions refuse an unsafe message. The property test checks,
against dnspython, that after make_patchable every patch keeps every name.
"""

from __future__ import annotations

import struct

import dns.message
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from srvwatch import wire
from srvwatch.wire import WireError
from tests.test_wire import (
    _cname_chain,
    _large,
    _reverse_v6,
    _txt_64k,
    check_against_dnspython,
    corpus_wires,
)

_FIXED = struct.Struct(">HHIH")
_HEADER = struct.Struct(">HHHHHH")
_A = b"\x7f\x00\x00\x01"


def _message(*records: bytes, qd: bytes = b"") -> bytes:
    return _HEADER.pack(7, 0x8180, 1 if qd else 0, len(records), 0, 0) + qd + b"".join(records)


def _rr(owner: bytes, ttl: int, rdtype: int = 1, rdata: bytes = _A, rdclass: int = 1) -> bytes:
    return owner + _FIXED.pack(rdtype, rdclass, ttl, len(rdata)) + rdata


def _ptr(offset: int) -> bytes:
    return struct.pack(">H", 0xC000 | offset)


def _names(ref: dns.message.Message) -> list[object]:
    """Everything that is a name, or holds names, in a dnspython message: all but TTLs."""
    out: list[object] = [(q.name, q.rdtype, q.rdclass) for q in ref.question]
    for section in (ref.answer, ref.authority, ref.additional):
        out.append([(r.name, r.rdtype, r.rdclass, list(r)) for r in section])
    return out


def _ttls(ref: dns.message.Message) -> list[int]:
    return [r.ttl for r in ref.answer + ref.authority + ref.additional]


def _read(data: bytes | bytearray) -> dns.message.Message:
    return dns.message.from_wire(bytes(data), one_rr_per_rrset=True, ignore_trailing=True)


# The issue's example: owners www.example.com. and a., the second a pointer to the first
# record's TTL, whose bytes 01 61 00 .. spell "a.". rewrite_ttls(300) made it ".".
WWW = wire.encode_name("www.example.com.")
TTL_SPELLS_A = 0x0161_0000 | 60
ISSUE_EXAMPLE = _message(_rr(WWW, TTL_SPELLS_A), _rr(_ptr(12 + len(WWW) + 4), 60))


def test_the_issue_example_is_not_patchable() -> None:
    msg = wire.parse(ISSUE_EXAMPLE)
    assert [rr.name for rr in msg.answers] == ["www.example.com.", "a."]
    assert not wire.patchable(ISSUE_EXAMPLE, msg)
    buf = bytearray(ISSUE_EXAMPLE)
    with pytest.raises(ValueError, match="make_patchable"):
        wire.rewrite_ttls(buf, msg, 300)
    with pytest.raises(ValueError, match="make_patchable"):
        wire.age_ttls(buf, msg, 10)
    assert buf == ISSUE_EXAMPLE  # refused before writing anything


def test_the_issue_example_after_make_patchable() -> None:
    before = _read(ISSUE_EXAMPLE)
    fixed, msg = wire.make_patchable(ISSUE_EXAMPLE)
    assert fixed != ISSUE_EXAMPLE
    assert wire.patchable(fixed, msg)
    assert msg.patch_safe is True
    for patch in (
        lambda buf: wire.rewrite_ttls(buf, msg, 300),
        lambda buf: wire.age_ttls(buf, msg, 10, floor=5),
    ):
        buf = bytearray(fixed)
        patch(buf)
        after = _read(buf)
        assert _names(after) == _names(before)
        assert [rr.name for rr in wire.parse(bytes(buf)).answers] == ["www.example.com.", "a."]
    buf = bytearray(fixed)
    wire.rewrite_ttls(buf, msg, 300)
    assert _ttls(_read(buf)) == [300, 300]
    check_against_dnspython(bytes(buf))


def _unsafe_messages() -> dict[str, bytes]:
    owner = wire.encode_name("x.test.")
    ttl_at = 12 + len(owner) + 4  # the first record's TTL field
    class_at = ttl_at - 2
    return {
        "owner into a TTL": ISSUE_EXAMPLE,
        "owner into the middle of a TTL": _message(
            _rr(owner, 0x0000_0162 | (1 << 16)), _rr(_ptr(ttl_at + 2), 60)
        ),
        # Class 0x0161 reads as a label "a"; the TTL's first byte, 0, ends the name.
        "owner's labels run over a TTL": _message(
            _rr(owner, 0x0000_1000, rdclass=0x0161), _rr(_ptr(class_at), 60)
        ),
        # The TTL holds "c" and a pointer back to the first owner.
        "pointer inside a TTL": _message(
            _rr(owner, 0x0163_C000 | 12), _rr(b"\x01b" + _ptr(ttl_at), 60)
        ),
        "CNAME target into a TTL": _message(
            _rr(owner, TTL_SPELLS_A), _rr(_ptr(12), 60, rdtype=5, rdata=_ptr(ttl_at))
        ),
        "MX exchange into a TTL": _message(
            _rr(owner, TTL_SPELLS_A), _rr(_ptr(12), 60, rdtype=15, rdata=b"\x00\x0a" + _ptr(ttl_at))
        ),
        "SRV target into a TTL": _message(
            _rr(owner, TTL_SPELLS_A),
            _rr(_ptr(12), 60, rdtype=33, rdata=b"\x00\x01\x00\x01\x00\x50" + _ptr(ttl_at)),
        ),
        "SOA rname into a TTL": _message(
            _rr(owner, TTL_SPELLS_A),
            _rr(_ptr(12), 60, rdtype=6, rdata=_ptr(12) + _ptr(ttl_at) + bytes(20)),
        ),
        # The second record's TTL lies 16 bytes after the first's.
        "into a later record's TTL": _message(
            _rr(owner, 60), _rr(_ptr(12), TTL_SPELLS_A), _rr(_ptr(ttl_at + 16), 60)
        ),
    }


UNSAFE = _unsafe_messages()


@pytest.mark.parametrize("name", sorted(UNSAFE))
def test_unsafe_messages_are_refused_then_re_encoded(name: str) -> None:
    data = UNSAFE[name]
    before = _read(data)  # dnspython reads every one of these
    msg = wire.parse(data)
    assert not wire.patchable(data, msg)
    with pytest.raises(ValueError, match="make_patchable"):
        wire.rewrite_ttls(bytearray(data), msg, 300)
    fixed, again = wire.make_patchable(data, msg)
    assert wire.patchable(fixed, again)
    buf = bytearray(fixed)
    wire.rewrite_ttls(buf, again, 300)
    assert _names(_read(buf)) == _names(before)
    assert set(_ttls(_read(buf))) == {300}


def test_blind_patches_would_have_changed_names() -> None:
    """Each unsafe example really is one: a blind patch changes a name or breaks the message."""
    for name, data in UNSAFE.items():
        msg = wire.parse(data)
        changed = False
        for ttl in (300, 0x0102_0304):
            buf = bytearray(data)
            for rr in msg.answers:
                struct.pack_into(">I", buf, rr.ttl_offset, ttl)
            try:
                changed |= _names(_read(buf)) != _names(_read(data))
            except Exception:
                changed = True
        assert changed, name


def test_pointers_near_ttls_that_miss_them_are_safe() -> None:
    owner = wire.encode_name("x.test.")
    ttl_at = 12 + len(owner) + 4
    data = _message(
        _rr(owner, TTL_SPELLS_A),
        _rr(_ptr(ttl_at - 4), 60),  # the type's first byte (0): the root
        _rr(_ptr(ttl_at - 2), 60),  # the class's first byte (0): the root
        _rr(_ptr(ttl_at + 4), 60),  # the RDLENGTH's first byte (0): the root
    )
    msg = wire.parse(data)
    assert [rr.name for rr in msg.answers] == ["x.test.", ".", ".", "."]
    assert wire.patchable(data, msg)
    assert wire.make_patchable(data)[0] is data


@pytest.mark.parametrize("data", corpus_wires(), ids=range(len(corpus_wires())))
def test_ordinary_messages_are_patched_in_place(data: bytes) -> None:
    fixed, msg = wire.make_patchable(data)
    assert fixed is data
    assert msg == wire.parse(data)
    assert msg.patch_safe is True


@pytest.mark.parametrize("build", [_txt_64k, _reverse_v6, lambda: _large().to_wire()])
def test_large_messages_are_patched_in_place(build: object) -> None:
    data = build()  # type: ignore[operator]
    assert wire.make_patchable(data)[0] is data


def test_the_verdict_is_kept_on_the_message() -> None:
    data = _cname_chain().to_wire()
    msg = wire.parse(data)
    assert msg.patch_safe is None
    assert wire.patchable(data, msg)
    assert msg.patch_safe is True
    unsafe = wire.parse(ISSUE_EXAMPLE)
    wire.patchable(ISSUE_EXAMPLE, unsafe)
    assert unsafe.patch_safe is False
    assert unsafe == wire.parse(ISSUE_EXAMPLE)  # not part of equality


def test_malformed_rdata_names_count_as_unsafe() -> None:
    # A CNAME whose name runs past its RDATA: nothing can vouch for what a reader sees.
    data = _message(_rr(wire.encode_name("x.test."), 60, rdtype=5, rdata=b"\x05ab"))
    assert not wire.patchable(data, wire.parse(data))
    with pytest.raises(WireError, match="re-encoded"):
        wire.make_patchable(data)


# ---------------------------------------------------------------------------
# property: after make_patchable, no patch changes a name (dnspython is the judge)
# ---------------------------------------------------------------------------

# TTL bytes that spell names (or hold a pointer), so that pointers into them are readable.
_TTL_BYTES = st.one_of(
    st.sampled_from([b"\x00\x00\x00\x3c", b"\x01a\x00\x00", b"\x02bc\x00", b"\x00\x01\x02\x03"]),
    st.integers(12, 40).map(lambda p: b"\x01c\xc0" + bytes([p])),
    st.binary(min_size=4, max_size=4),
)
_LABELS = st.lists(st.sampled_from([b"\x01a", b"\x02bc", b"\x03DeF", b"\x01\x00"]), max_size=3)


@st.composite
def _crafted(draw: st.DrawFn) -> bytes:
    """Records whose names are literal, or end in pointers to anywhere a name can be read."""
    data = bytearray(_HEADER.pack(9, 0x8180, 1, 0, 0, 0))
    data += b"\x01q\x04test\x00" + struct.pack(">HH", 1, 1)
    count = draw(st.integers(1, 8))
    sections = [0, 0, 0]

    def name() -> bytes:
        readable = []
        for offset in range(12, len(data)):
            try:
                wire.read_name(bytes(data), offset)
            except WireError:
                continue
            readable.append(offset)
        labels = b"".join(draw(_LABELS))
        if readable and draw(st.integers(0, 3)):
            return labels + _ptr(draw(st.sampled_from(readable)))
        return labels + b"\x00"

    for _ in range(count):
        data += name()
        rdtype = draw(st.sampled_from([1, 5, 15, 33, 6, 16, 2, 65280]))
        rdclass = draw(st.sampled_from([1, 1, 1, 0x0161, 3]))
        data += struct.pack(">HH", rdtype, rdclass) + draw(_TTL_BYTES) + b"\x00\x00"
        start = len(data)
        if rdtype == 1:
            data += _A
        elif rdtype in (5, 2):
            data += name()
        elif rdtype == 15:
            data += b"\x00\x0a"
            data += name()
        elif rdtype == 33:
            data += b"\x00\x01\x00\x02\x00\x03"
            data += name()
        elif rdtype == 6:
            data += name()
            data += name()
            data += bytes(range(20))
        elif rdtype == 16:
            data += b"\x03txt"
        else:
            data += draw(st.sampled_from([b"", b"\x01a\x00", b"\xc0\x0c"]))
        struct.pack_into(">H", data, start - 2, len(data) - start)
        sections[draw(st.integers(0, 2))] += 1
    struct.pack_into(">HHH", data, 6, *sections)
    return bytes(data)


@settings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(_crafted(), st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_patches_after_make_patchable_keep_every_name(data: bytes, ttl: int, elapsed: int) -> None:
    try:
        before = _read(data)
        msg = wire.parse(data)
    except Exception:
        assume(False)
        raise
    safe = wire.patchable(data, msg)
    fixed, fixed_msg = wire.make_patchable(data, msg)
    assert (fixed is data) == safe
    assert wire.patchable(fixed, fixed_msg)
    for patch in (
        lambda buf: wire.rewrite_ttls(buf, fixed_msg, ttl),
        lambda buf: wire.age_ttls(buf, fixed_msg, elapsed, floor=ttl % 100),
        lambda buf: (wire.age_ttls(buf, fixed_msg, 1), wire.rewrite_ttls(buf, fixed_msg, 0)),
    ):
        buf = bytearray(fixed)
        patch(buf)
        after = _read(buf)
        assert _names(after) == _names(before)
        ours = wire.parse(bytes(buf))
        assert [rr.name for rr in ours.answers + ours.authority + ours.additional] == [
            rr.name for rr in msg.answers + msg.authority + msg.additional
        ]
    if not safe:
        with pytest.raises(ValueError, match="make_patchable"):
            wire.rewrite_ttls(bytearray(data), msg, ttl)


def test_the_property_sees_unsafe_messages() -> None:
    """The strategy does produce messages that need re-encoding (else the test proves little)."""
    seen = {"safe": 0, "unsafe": 0}

    @settings(
        max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(_crafted())
    def count(data: bytes) -> None:
        try:
            _read(data)
            msg = wire.parse(data)
        except Exception:
            return
        seen["safe" if wire.patchable(data, msg) else "unsafe"] += 1

    count()
    assert seen["unsafe"] >= 10, seen
    assert seen["safe"] >= 10, seen
