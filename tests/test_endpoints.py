"""Endpoint values, canonical sets, RFC 2782 selection and diffs (pure, synchronous)."""

from __future__ import annotations

import dataclasses
import pickle
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srvwatch.endpoints import (
    Endpoint,
    EndpointSet,
    Update,
    canonical_addresses,
    changed,
    diff,
)

NAME = "_http._tcp.api.svc.test."
DRAWS = 20_000


def ep(target: str, port: int = 80, priority: int = 0, weight: int = 0, *addrs: str) -> Endpoint:
    return Endpoint(target, port, priority, weight, tuple(addrs))


def frequencies(
    draw: Callable[[random.Random], Endpoint | None], seed: int, n: int = DRAWS
) -> dict[str, float]:
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    for _ in range(n):
        chosen = draw(rng)
        assert chosen is not None
        counts[chosen.target] += 1
    return {target: c / n for target, c in counts.items()}


def expected_first(eps: Sequence[Endpoint]) -> dict[str, float]:
    """Exact first-pick probabilities of the RFC 2782 rule within one priority.

    Integer r uniform in [0, T]; weight-0 records come first and take r == 0
    (uniformly among themselves); without them r == 0 goes to the first weighted
    record in canonical order.
    """
    total = sum(e.weight for e in eps)
    zeros = [e for e in eps if e.weight == 0]
    weighted = [e for e in eps if e.weight > 0]
    probs = {e.target: 0.0 for e in eps}
    if total == 0:
        return {e.target: 1 / len(eps) for e in eps}
    for e in weighted:
        probs[e.target] = e.weight / (total + 1)
    if zeros:
        for e in zeros:
            probs[e.target] = 1 / (total + 1) / len(zeros)
    else:
        probs[weighted[0].target] += 1 / (total + 1)
    return probs


def assert_close(got: dict[str, float], want: dict[str, float], tol: float) -> None:
    assert set(got) <= set(want), (got, want)
    for target, p in want.items():
        assert abs(got.get(target, 0.0) - p) <= tol, (target, got, want)


# --- Endpoint: normalization and validation -------------------------------------------


def test_endpoint_normalizes_target_and_addresses() -> None:
    e = Endpoint("A.Api.SVC.test", 8080, 1, 2, ("2001:DB8::1", "10.0.0.10", "10.0.0.2", "10.0.0.2"))
    assert e.target == "a.api.svc.test."
    assert e.addresses == ("10.0.0.2", "10.0.0.10", "2001:db8::1")
    assert e == Endpoint("a.api.svc.test.", 8080, 1, 2, ("10.0.0.10", "2001:db8:0::1", "10.0.0.2"))
    assert e.key() == ("a.api.svc.test.", 8080, 1, 2, ("10.0.0.2", "10.0.0.10", "2001:db8::1"))
    assert Endpoint("x.test", 1, addresses=["192.0.2.1"]).addresses == ("192.0.2.1",)  # type: ignore[arg-type]


def test_endpoint_defaults_and_immutability() -> None:
    e = Endpoint("x.test.", 443)
    assert (e.priority, e.weight, e.addresses) == (0, 0, ())
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.port = 80  # type: ignore[misc]
    assert hash(e) == hash(Endpoint("X.TEST", 443))


@pytest.mark.parametrize("field", ["port", "priority", "weight"])
@pytest.mark.parametrize("value", [-1, 65_536, 10**9])
def test_endpoint_range_errors_name_the_field(field: str, value: int) -> None:
    kwargs: dict[str, Any] = {"port": 80, "priority": 0, "weight": 0, field: value}
    with pytest.raises(ValueError, match=rf"Endpoint {field} must be in 0\.\.65535, got {value}"):
        Endpoint("x.test.", **kwargs)


@pytest.mark.parametrize("field", ["port", "priority", "weight"])
def test_endpoint_boundaries_are_accepted(field: str) -> None:
    for value in (0, 65_535):
        kwargs: dict[str, Any] = {"port": 80, "priority": 0, "weight": 0, field: value}
        assert getattr(Endpoint("x.test.", **kwargs), field) == value


@pytest.mark.parametrize("field", ["port", "priority", "weight"])
@pytest.mark.parametrize("value", [True, 1.0, "80", None])
def test_endpoint_type_errors_name_the_field(field: str, value: object) -> None:
    kwargs: dict[str, object] = {"port": 80, "priority": 0, "weight": 0, field: value}
    with pytest.raises(TypeError, match=f"Endpoint {field} must be an int"):
        Endpoint("x.test.", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["", "a..b.test", ".a.test", "..", "a.test.."])
def test_endpoint_bad_target(target: str) -> None:
    with pytest.raises(ValueError, match="Endpoint target"):
        Endpoint(target, 80)


def test_endpoint_target_type() -> None:
    with pytest.raises(TypeError, match="Endpoint target must be a str"):
        Endpoint(b"x.test.", 80)  # type: ignore[arg-type]


@pytest.mark.parametrize("addrs", [("not-an-ip",), ("192.0.2.1", "300.0.0.1"), ("",)])
def test_endpoint_bad_address(addrs: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="Endpoint addresses"):
        Endpoint("x.test.", 80, addresses=addrs)


@pytest.mark.parametrize("addrs", ["192.0.2.1", (1,), 5])
def test_endpoint_address_types(addrs: object) -> None:
    with pytest.raises(TypeError, match="Endpoint addresses"):
        Endpoint("x.test.", 80, addresses=addrs)  # type: ignore[arg-type]


# --- EndpointSet: canonical order, equality, validation --------------------------------


def test_build_sorts_canonically_and_dedups() -> None:
    records = [
        ep("c.test", 80, 1, 5),
        ep("b.test", 81, 0, 5),
        ep("b.test", 80, 0, 7),
        ep("a.test", 80, 2, 0),
        ep("b.test", 80, 0, 5),
        ep("B.TEST.", 80, 0, 5),  # exact duplicate after normalization
    ]
    s = EndpointSet.build("_HTTP._tcp.API.svc.test", records, ttl=30)
    assert s.name == NAME
    assert [(e.priority, e.target, e.port, e.weight) for e in s] == [
        (0, "b.test.", 80, 5),
        (0, "b.test.", 80, 7),
        (0, "b.test.", 81, 5),
        (1, "c.test.", 80, 5),
        (2, "a.test.", 80, 0),
    ]
    assert len(s) == 5
    assert s.ttl == 30.0
    assert isinstance(s.ttl, float)


@settings(max_examples=60, deadline=None)
@given(st.permutations([ep(f"{c}.test", 80 + i, i % 3, i * 7) for i, c in enumerate("abcdef")]))
def test_equal_records_make_equal_sets(perm: list[Endpoint]) -> None:
    reference = EndpointSet.build(NAME, sorted(perm, key=lambda e: e.target), ttl=5)
    s = EndpointSet.build(NAME, perm, ttl=5)
    assert s == reference
    assert hash(s) == hash(reference)
    assert s.endpoints == reference.endpoints
    assert s.key() == reference.key()
    # the plain constructor canonicalizes too, so no path yields a non-canonical set
    assert EndpointSet(NAME, tuple(perm), ttl=5) == reference


def test_same_target_different_addresses_are_distinct() -> None:
    s = EndpointSet.build(
        NAME, [ep("a.test", 80, 0, 1, "192.0.2.2"), ep("a.test", 80, 0, 1, "192.0.2.1")]
    )
    assert [e.addresses for e in s] == [("192.0.2.1",), ("192.0.2.2",)]


def test_dunders() -> None:
    a, b = ep("a.test"), ep("b.test", 81)
    s = EndpointSet.build(NAME, [b, a])
    assert list(s) == [a, b]
    assert len(s) == 2
    assert bool(s)
    assert a in s
    assert ep("c.test") not in s
    assert "a.test." not in s
    empty = EndpointSet.build(NAME, [])
    assert not empty
    assert len(empty) == 0
    assert list(empty) == []
    assert empty.ordered() == []
    assert empty.pick() is None
    assert empty.pick(random.Random(1)) is None


def test_set_validation() -> None:
    with pytest.raises(ValueError, match="EndpointSet ttl"):
        EndpointSet.build(NAME, [], ttl=-1)
    with pytest.raises(ValueError, match="EndpointSet ttl"):
        EndpointSet.build(NAME, [], ttl=float("nan"))
    with pytest.raises(ValueError, match="EndpointSet ttl"):
        EndpointSet.build(NAME, [], ttl=float("inf"))
    with pytest.raises(TypeError, match="EndpointSet ttl"):
        EndpointSet.build(NAME, [], ttl="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="EndpointSet name"):
        EndpointSet.build("a..b", [])
    with pytest.raises(TypeError, match="EndpointSet endpoints must contain Endpoint"):
        EndpointSet(NAME, (("a.test.", 80),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no_service=True must have no endpoints"):
        EndpointSet.build(NAME, [ep("a.test")], no_service=True)
    with pytest.raises(ValueError, match="no_service=True instead"):
        EndpointSet(NAME, (ep("."),))


def test_no_service() -> None:
    # RFC 2782: a single record with target "." means "decidedly not available"
    s = EndpointSet.build(NAME, [Endpoint(".", 0)], ttl=60)
    assert s.no_service
    assert not s
    assert s.pick() is None
    assert s.ordered() == []
    assert s == EndpointSet.build(NAME, [], ttl=60, no_service=True)
    assert s != EndpointSet.build(NAME, [], ttl=60)
    # duplicates of "." are still a single record
    assert EndpointSet.build(NAME, [Endpoint(".", 0), Endpoint(".", 0)]).no_service
    # "." among real targets is malformed: it is dropped, the rest is served
    mixed = EndpointSet.build(NAME, [Endpoint(".", 0), ep("a.test")])
    assert not mixed.no_service
    assert list(mixed) == [ep("a.test")]


def test_with_stale_and_pickle() -> None:
    s = EndpointSet.build(NAME, [ep("a.test", 80, 0, 1), ep("b.test", 80, 1, 1)], ttl=7)
    t = s.with_stale(True)
    assert t.stale
    assert not s.stale
    assert t.endpoints == s.endpoints
    assert t.ttl == s.ttl
    assert t != s
    assert t.with_stale(False) == s
    assert s.with_stale(False) is s
    assert t.pick(random.Random(0)) == s.pick(random.Random(0))
    restored = pickle.loads(pickle.dumps(t))
    assert restored == t
    assert restored.ordered(random.Random(3)) == t.ordered(random.Random(3))


def test_repr_hides_internal_groups() -> None:
    assert "_groups" not in repr(EndpointSet.build(NAME, [ep("a.test")]))


# --- RFC 2782 selection -----------------------------------------------------------------

_targets = st.sampled_from([f"{c}.svc.test." for c in "abcdefgh"])
_endpoints = st.builds(
    Endpoint,
    target=_targets,
    port=st.integers(0, 65_535),
    priority=st.integers(0, 4) | st.just(65_535),
    weight=st.sampled_from([0, 0, 1, 5, 100, 65_535]) | st.integers(0, 65_535),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_endpoints, max_size=20), st.integers(0, 2**32))
def test_ordered_is_a_priority_respecting_permutation(eps: list[Endpoint], seed: int) -> None:
    s = EndpointSet.build(NAME, eps)
    out = s.ordered(random.Random(seed))
    assert sorted(out, key=lambda e: (e.priority, e.target, e.port, e.weight)) == list(s.endpoints)
    assert len(out) == len(s)
    priorities = [e.priority for e in out]
    assert priorities == sorted(priorities)
    first = s.pick(random.Random(seed))
    if s:
        assert first is not None
        assert first.priority == s.endpoints[0].priority
        # pick() consumes the same draws as the first step of ordered()
        assert first == out[0]
    else:
        assert first is None
    assert s.ordered(random.Random(seed)) == out  # deterministic for a seed, set unchanged


def test_ordered_without_rng_uses_global_random() -> None:
    s = EndpointSet.build(NAME, [ep(f"{c}.test", weight=1) for c in "abc"])
    for _ in range(50):
        out = s.ordered()
        assert sorted(out, key=lambda e: e.target) == list(s)
        assert s.pick() in s


def test_priority_is_strict() -> None:
    # a heavy weight never lets a worse priority jump ahead of a zero-weight better one
    low = ep("z.test", 80, 0, 0)
    high = [ep(f"{c}.test", 80, 1, 65_535) for c in "abc"]
    s = EndpointSet.build(NAME, [*high, low])
    rng = random.Random(7)
    for _ in range(500):
        assert s.pick(rng) == low
        assert s.ordered(rng)[0] == low


def test_weighted_pick_converges_60_30_10() -> None:
    eps = [ep("a.test", weight=60), ep("b.test", weight=30), ep("c.test", weight=10)]
    s = EndpointSet.build(NAME, [*eps, ep("lower.test", 80, 1, 1000)])
    got = frequencies(s.pick, seed=2782)
    assert_close(got, {"a.test.": 0.6, "b.test.": 0.3, "c.test.": 0.1}, tol=0.02)
    # tighter: the exact shares of the inclusive [0, total] rule (61/101, 30/101, 10/101)
    assert_close(got, expected_first(eps), tol=0.012)


def test_weighted_ordered_first_converges() -> None:
    eps = [ep("a.test", weight=60), ep("b.test", weight=30), ep("c.test", weight=10)]
    s = EndpointSet.build(NAME, eps)
    got = frequencies(lambda rng: s.ordered(rng)[0], seed=5, n=10_000)
    assert_close(got, {"a.test.": 0.6, "b.test.": 0.3, "c.test.": 0.1}, tol=0.02)


def test_weighted_second_position() -> None:
    # after the first draw the chosen record leaves the pool and the rest are redrawn:
    # P(b second) = P(a first) * 31/41 + P(c first) * 30/91 (r == 0 goes to the first record)
    eps = [ep("a.test", weight=60), ep("b.test", weight=30), ep("c.test", weight=10)]
    s = EndpointSet.build(NAME, eps)
    p_first = expected_first(eps)
    want_b_second = p_first["a.test."] * 31 / 41 + p_first["c.test."] * 30 / 91
    got = frequencies(lambda rng: s.ordered(rng)[1], seed=11, n=10_000)
    assert abs(got["b.test."] - want_b_second) <= 0.02, (got, want_b_second)


def test_zero_weight_is_rare_but_possible() -> None:
    eps = [ep("zero.test", weight=0), ep("ten.test", weight=10)]
    s = EndpointSet.build(NAME, eps)
    got = frequencies(s.pick, seed=99)
    # inclusive draw in [0, 10]: the zero-weight record wins only on 0, i.e. 1/11
    # (3 sigma is 0.006: tight enough to tell 1/11 from an exclusive draw's 1/10)
    assert abs(got["zero.test."] - 1 / 11) <= 0.006, got
    assert abs(got["ten.test."] - 10 / 11) <= 0.006, got
    # in ordered(), it is last unless it won the first draw
    last = frequencies(lambda rng: s.ordered(rng)[-1], seed=100, n=10_000)
    assert abs(last["zero.test."] - 10 / 11) <= 0.015, last


def test_several_zero_weights_share_the_zero_draw() -> None:
    eps = [ep("z1.test"), ep("z2.test"), ep("w.test", weight=3)]
    s = EndpointSet.build(NAME, eps)
    got = frequencies(s.pick, seed=4)
    assert_close(got, {"z1.test.": 0.125, "z2.test.": 0.125, "w.test.": 0.75}, tol=0.015)


def test_all_zero_weights_are_uniform() -> None:
    s = EndpointSet.build(NAME, [ep(f"{c}.test") for c in "abcd"])
    got = frequencies(s.pick, seed=1)
    assert_close(got, dict.fromkeys(("a.test.", "b.test.", "c.test.", "d.test."), 0.25), tol=0.02)
    ordered_first = frequencies(lambda rng: s.ordered(rng)[0], seed=2, n=8_000)
    assert_close(ordered_first, dict.fromkeys(ordered_first, 0.25), tol=0.025)
    ordered_last = frequencies(lambda rng: s.ordered(rng)[-1], seed=3, n=8_000)
    assert_close(ordered_last, dict.fromkeys(ordered_first, 0.25), tol=0.025)


def test_single_endpoint_groups_draw_nothing() -> None:
    s = EndpointSet.build(NAME, [ep("a.test", 80, 0, 5), ep("b.test", 80, 1, 0)])
    rng = random.Random(0)
    state = rng.getstate()
    assert s.pick(rng) == ep("a.test", 80, 0, 5)
    assert s.ordered(rng) == list(s)
    assert rng.getstate() == state


def test_pick_matches_ordered_first_distribution() -> None:
    eps = [
        ep("a.test", weight=0),
        ep("b.test", weight=5),
        ep("c.test", weight=1),
        ep("d.test", weight=14),
        ep("e.test", 80, 3, 100),
    ]
    s = EndpointSet.build(NAME, eps)
    by_pick = frequencies(s.pick, seed=1234)
    by_ordered = frequencies(lambda rng: s.ordered(rng)[0], seed=4321, n=10_000)
    assert "e.test." not in by_pick
    assert "e.test." not in by_ordered
    assert_close(by_pick, by_ordered, tol=0.02)
    assert_close(by_pick, expected_first(eps[:4]), tol=0.015)


# --- diff / changed / Update ------------------------------------------------------------

A = ep("a.test", 80, 0, 10, "192.0.2.1")
B = ep("b.test", 80, 0, 10, "192.0.2.2")
BASE = EndpointSet.build(NAME, [A, B], ttl=30)


def test_diff_from_nothing() -> None:
    assert diff(None, BASE) == ((A, B), ())
    assert changed(None, BASE)
    assert changed(None, EndpointSet.build(NAME, []))


def test_identical_and_ttl_only() -> None:
    same = EndpointSet.build(NAME, [B, A], ttl=30)
    assert diff(BASE, same) == ((), ())
    assert not changed(BASE, same)
    ttl_only = EndpointSet.build(NAME, [A, B], ttl=3)
    assert ttl_only != BASE  # value equality sees the TTL...
    assert diff(BASE, ttl_only) == ((), ())
    assert not changed(BASE, ttl_only)  # ...subscribers do not


def test_added_and_removed_targets() -> None:
    c = ep("c.test", 80, 0, 10)
    grown = EndpointSet.build(NAME, [c, A, B])
    assert diff(BASE, grown) == ((c,), ())
    assert changed(BASE, grown)
    shrunk = EndpointSet.build(NAME, [B])
    assert diff(BASE, shrunk) == ((), (A,))
    assert changed(BASE, shrunk)
    empty = EndpointSet.build(NAME, [])
    assert diff(BASE, empty) == ((), (A, B))
    assert changed(BASE, empty)


@pytest.mark.parametrize(
    "replacement",
    [
        ep("a.test", 80, 0, 10, "192.0.2.9"),  # address changed
        ep("a.test", 80, 0, 10, "192.0.2.1", "2001:db8::1"),  # address added
        ep("a.test", 80, 0, 10),  # addresses gone
        ep("a.test", 8080, 0, 10, "192.0.2.1"),  # port
        ep("a.test", 80, 1, 10, "192.0.2.1"),  # priority
        ep("a.test", 80, 0, 11, "192.0.2.1"),  # weight
    ],
)
def test_changed_attribute_is_remove_plus_add(replacement: Endpoint) -> None:
    new = EndpointSet.build(NAME, [replacement, B])
    assert diff(BASE, new) == ((replacement,), (A,))
    assert changed(BASE, new)


def test_diff_is_in_canonical_order() -> None:
    old = EndpointSet.build(NAME, [ep("d.test", 1), ep("c.test", 1), ep("x.test", 1, 0)])
    new = EndpointSet.build(NAME, [ep("x.test", 1, 0), ep("b.test", 1, 1), ep("a.test", 1, 2)])
    added, removed = diff(old, new)
    assert added == (ep("b.test", 1, 1), ep("a.test", 1, 2))  # priority before target
    assert removed == (ep("c.test", 1), ep("d.test", 1))


def test_stale_and_no_service_flags_count() -> None:
    assert changed(BASE, BASE.with_stale(True))
    assert diff(BASE, BASE.with_stale(True)) == ((), ())
    assert changed(BASE.with_stale(True), BASE)
    empty = EndpointSet.build(NAME, [])
    gone = EndpointSet.build(NAME, [], no_service=True)
    assert changed(empty, gone)
    assert changed(gone, empty)
    assert diff(empty, gone) == ((), ())
    assert not changed(gone, EndpointSet.build(NAME, [Endpoint(".", 0)], ttl=99))


@settings(max_examples=100, deadline=None)
@given(st.lists(_endpoints, max_size=10), st.lists(_endpoints, max_size=10))
def test_diff_reconstructs_new(old_eps: list[Endpoint], new_eps: list[Endpoint]) -> None:
    old = EndpointSet.build(NAME, old_eps)
    new = EndpointSet.build(NAME, new_eps)
    added, removed = diff(old, new)
    assert (set(old) - set(removed)) | set(added) == set(new)
    assert not set(added) & set(removed)
    assert changed(old, new) == bool(added or removed)
    assert changed(old, new) == (old.key() != new.key())


def test_update_between() -> None:
    first = Update.between(None, BASE, version=1)
    assert first == Update(NAME, BASE, (A, B), (), False, None, 1)
    c = ep("c.test")
    stale = EndpointSet.build(NAME, [B, c], ttl=30, stale=True)
    u = Update.between(BASE, stale, version=2, error="timeout after 5.0 s")
    assert (u.name, u.endpoints, u.added, u.removed) == (NAME, stale, (c,), (A,))
    assert u.stale
    assert u.error == "timeout after 5.0 s"
    assert u.version == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        u.version = 3  # type: ignore[misc]


@pytest.mark.parametrize("version", [0, -1])
def test_update_version_must_be_positive(version: int) -> None:
    with pytest.raises(ValueError, match="Update version must be >= 1"):
        Update(NAME, BASE, (), (), False, None, version)
    with pytest.raises(ValueError, match="Update version"):
        Update.between(None, BASE, version=version)


def test_update_version_type() -> None:
    with pytest.raises(TypeError, match="Update version must be an int"):
        Update(NAME, BASE, (), (), False, None, True)


@given(
    st.lists(st.ip_addresses().map(lambda a: a.compressed), max_size=8),
    st.integers(0, 65535),
)
def test_from_wire_equals_the_validating_constructor(addresses: list[str], port: int) -> None:
    fast = Endpoint.from_wire("a.svc.test.", port, 1, 2, addresses)
    slow = Endpoint("a.svc.test.", port, 1, 2, tuple(addresses))
    assert fast == slow
    assert fast.addresses == slow.addresses
    assert hash(fast) == hash(slow)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a.svc.test.", "b.svc.test.", "c.svc.test."]),
            st.integers(0, 65535),
            st.integers(0, 3),
            st.integers(0, 100),
            st.lists(st.ip_addresses().map(lambda a: a.compressed), max_size=3),
        ),
        max_size=8,
    ),
    st.floats(0, 1e6),
)
def test_set_from_wire_equals_the_validating_build(
    records: list[tuple[str, int, int, int, list[str]]], ttl: float
) -> None:
    fast = EndpointSet.from_wire(
        "_x._tcp.svc.test.",
        [(pr, t, p, w, canonical_addresses(a)) for t, p, pr, w, a in records],
        ttl=ttl,
    )
    slow = EndpointSet.build(
        "_x._tcp.svc.test.",
        [Endpoint(t, p, pr, w, tuple(a)) for t, p, pr, w, a in records],
        ttl=ttl,
    )
    assert fast == slow
    assert fast.ordered(random.Random(7)) == slow.ordered(random.Random(7))


# -- issue 8: DNS-SD instance names (escaped dots, spaces, backslashes) ---------------


@pytest.mark.parametrize(
    ("given_name", "canonical"),
    [
        ("printer v2\\.._ipp._tcp.svc.test.", "printer\\032v2\\.._ipp._tcp.svc.test."),
        ("Printer V2\\.._IPP._tcp.svc.test", "printer\\032v2\\.._ipp._tcp.svc.test."),
        ("a\\.b.svc.test.", "a\\.b.svc.test."),
        ("\\.a.svc.test.", "\\.a.svc.test."),
        ("a\\\\b.svc.test.", "a\\\\b.svc.test."),
        ("a\\.", "a\\.."),  # a relative name whose one label ends in a dot
        ("a\\065b.test", "aab.test."),
        (".", "."),
    ],
)
def test_escaped_names_are_accepted_in_the_wire_decoder_s_form(
    given_name: str, canonical: str
) -> None:
    from srvwatch import wire

    assert wire.read_name(wire.encode_name(canonical), 0)[0] == canonical
    s = EndpointSet.build(given_name, [], ttl=1.0)
    assert s.name == canonical
    assert s.with_stale(True).name == canonical
    assert Endpoint(given_name, 1).target == canonical


@pytest.mark.parametrize("bad", ["a..b.test.", ".a.test.", "..", "a.test..", "", " a.test", "a\\"])
def test_names_with_empty_labels_or_bad_escapes_are_still_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="EndpointSet name") as info:
        EndpointSet.build(bad, [], ttl=1.0)
    assert repr(bad) in str(info.value)
    with pytest.raises(ValueError, match="Endpoint target"):
        Endpoint(bad, 1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=5))
def test_any_wire_name_makes_a_set_with_that_name(labels: list[bytes]) -> None:
    from srvwatch import wire

    canonical = wire.read_name(b"".join(bytes((len(b),)) + b for b in labels) + b"\0", 0)[0]
    assert EndpointSet.build(canonical, [], ttl=1.0).name == canonical
    assert EndpointSet.from_wire(canonical, [], ttl=1.0) == EndpointSet.build(
        canonical, [], ttl=1.0
    )
