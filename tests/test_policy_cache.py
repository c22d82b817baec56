"""The pure core: TTL clamping, jittered refresh, backoff, and the clock-injected cache."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from srvwatch import wire
from srvwatch.cache import RecordStore
from srvwatch.errors import ServerFailure
from srvwatch.policy import Policy
from srvwatch.reply import Negative, Positive


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_defaults_are_the_documented_ones() -> None:
    p = Policy()
    assert (p.min_ttl, p.max_ttl, p.jitter) == (5.0, 300.0, 0.2)
    assert (p.negative_min_ttl, p.negative_max_ttl, p.servfail_ttl) == (5.0, 60.0, 5.0)
    assert p.stale_ttl == 86_400.0
    assert (p.timeout, p.lifetime, p.backoff_base, p.backoff_max) == (1.0, 5.0, 1.0, 30.0)
    assert p.cache_size == 10_000


@given(st.floats(min_value=0, max_value=1e9))
def test_clamp_keeps_ttls_in_the_window(ttl: float) -> None:
    p = Policy()
    clamped = p.clamp_ttl(ttl)
    assert p.min_ttl <= clamped <= p.max_ttl
    if p.min_ttl <= ttl <= p.max_ttl:
        assert clamped == ttl


@pytest.mark.parametrize(
    ("soa_ttl", "minimum", "expected"),
    [(3600, 0, 5.0), (0, 3600, 5.0), (30, 20, 20.0), (3600, 3600, 60.0), (None, None, 5.0)],
)
def test_negative_ttl_is_rfc2308_min_clamped(
    soa_ttl: int | None, minimum: int | None, expected: float
) -> None:
    assert Policy().negative_ttl(soa_ttl, minimum) == expected


def test_refresh_is_jittered_below_expiry() -> None:
    p = Policy(jitter=0.2)
    rng = random.Random(1)
    delays = [p.refresh_delay(10.0, rng) for _ in range(10_000)]
    assert all(8.0 <= d <= 10.0 for d in delays)
    # Spread over the whole window, not lumped: each tenth of it gets a share.
    buckets = [0] * 10
    for d in delays:
        buckets[min(int((d - 8.0) / 0.2), 9)] += 1
    assert min(buckets) > 800
    assert Policy(jitter=0).refresh_delay(10.0) == 10.0


def test_backoff_grows_with_full_jitter_and_is_capped() -> None:
    """The delay is drawn from [base / 2, step]: spread over the whole step, never near zero."""
    p = Policy(backoff_base=1.0, backoff_max=30.0)
    for failures, high in {1: 1.0, 2: 2.0, 5: 16.0, 6: 30.0, 50: 30.0, 10**6: 30.0}.items():
        delays = [p.backoff_delay(failures) for _ in range(2000)]
        assert all(0.5 <= d <= high for d in delays)
        assert max(delays) - min(delays) > (high - 0.5) * 0.9  # spread over the whole step
        assert abs(sum(delays) / len(delays) - (0.5 + high) / 2) < (high - 0.5) * 0.05 + 0.01
    assert p.backoff_delay(0) >= 0.5  # never zero, whatever the caller passes


_MSG = wire.parse(wire.build_query("a.svc.test.", wire.TYPE_A, 0))


def positive(value: str = "10.0.0.1") -> Positive:
    return Positive(b"", _MSG, (), (value,), "a.svc.test.", 30, {}, float("inf"), "192.0.2.1:53")


def negative() -> Negative:
    return Negative(b"", _MSG, True, 5.0, "a.svc.test. A: no such name", "192.0.2.1:53")


def test_store_never_keeps_an_entry_that_expires_at_once() -> None:
    clock = FakeClock()
    store = RecordStore(Policy(), clock)
    entry = store.put("a", positive(), 0)
    assert entry.ttl == 5.0
    clock.now += 4.9
    assert entry.fresh(clock.now)
    clock.now += 0.2
    assert not entry.fresh(clock.now)
    assert store.get("a") is entry  # expired but servable stale
    assert entry.servable_stale(clock.now)


def test_negative_entries_are_clamped_and_never_stale() -> None:
    clock = FakeClock()
    store = RecordStore(Policy(), clock)
    entry = store.put("nx", negative(), 0)
    assert entry.ttl == 5.0
    clock.now += 6
    assert not entry.servable_stale(clock.now)
    assert store.get("nx") is None  # nothing usable left: dropped
    assert store.put("nx", negative(), 10**6).ttl == 60.0


def test_stale_window_ends() -> None:
    clock = FakeClock()
    store = RecordStore(Policy(stale_ttl=100.0), clock)
    store.put("a", positive(), 10)
    clock.now += 109
    assert store.get("a") is not None
    clock.now += 2
    assert store.get("a") is None


def test_failure_marker_keeps_the_last_good_answer_and_no_exception() -> None:
    clock = FakeClock()
    store = RecordStore(Policy(servfail_ttl=5.0), clock)
    good = positive("good")
    store.put("a", good, 10)
    clock.now += 11
    try:
        raise ServerFailure("boom from 192.0.2.1:53", name="a.svc.test.", rdtype="A")
    except ServerFailure as exc:
        entry = store.put_failure("a", exc)
    assert entry.answer is good
    assert entry.failing(clock.now)
    assert entry.servable_stale(clock.now)
    failure = entry.failure
    assert failure is not None
    assert not any(isinstance(v, BaseException) for v in vars_of(failure))  # no traceback kept
    again = failure.error()
    assert type(again) is ServerFailure
    assert str(again) == "boom from 192.0.2.1:53"
    assert again.__traceback__ is None
    assert again.name == "a.svc.test."
    clock.now += 5.1
    assert not entry.failing(clock.now)
    fresh_failure = store.put_failure("b", ServerFailure("boom"))
    assert fresh_failure.answer is None
    assert not fresh_failure.servable_stale(clock.now)


def test_the_same_answer_again_moves_its_entry_times_and_nothing_else() -> None:
    """An unchanged refresh stores the answer it already has: one entry, new times."""
    clock = FakeClock()
    store = RecordStore(Policy(servfail_ttl=5.0, stale_ttl=100.0), clock)
    good = positive("good")
    entry = store.put("a", good, 10)
    entry.view = "derived"
    entry.rendered = "the stub's template"
    clock.now += 11
    store.put_failure("a", ServerFailure("boom", name="a.svc.test.", rdtype="A"))
    assert entry.failing(clock.now)
    again = store.put("a", good, 20)
    assert again is entry
    assert (entry.ttl, entry.stored_at, entry.expires_at) == (20, clock.now, clock.now + 20)
    assert entry.stale_until == clock.now + 120
    assert entry.failure is None
    assert entry.fresh(clock.now)
    assert (entry.view, entry.rendered) == ("derived", "the stub's template")
    # Another answer, even an equal one, is a new entry: nothing derived is carried over.
    other = store.put("a", positive("good"), 20)
    assert other is not entry
    assert other.view is None
    assert other.rendered is None
    assert len(store) == 1


def vars_of(obj: object) -> list[object]:
    return [getattr(obj, name) for name in obj.__slots__]  # type: ignore[attr-defined]


def test_lru_bound() -> None:
    clock = FakeClock()
    store = RecordStore(Policy(cache_size=100), clock)
    for i in range(250):
        store.put(i, positive(), 30)
        if i == 10:
            assert store.get(0) is not None  # touch 0: most recently used
    assert len(store) == 100
    assert store.evictions == 150
    assert 0 not in store  # touched early, but 240 newer entries since
    assert 249 in store
    assert 149 not in store


def test_pinned_entries_are_never_evicted_and_the_bound_counts_the_others() -> None:
    clock = FakeClock()
    store = RecordStore(Policy(cache_size=10), clock)
    for i in range(30):
        store.pin(("watched", i))
        store.put(("watched", i), positive(), 30)
    for i in range(100):
        store.put(i, positive(), 30)  # LRU churn from one-shot lookups
    assert all(("watched", i) in store for i in range(30))
    assert len(store) == 30 + 10
    assert store.capacity == 40
    assert store.evictions == 90  # only unpinned entries were evicted
    store.pin(("watched", 0))  # a second watch of the same question
    for i in range(30):
        store.unpin(("watched", i))
    assert ("watched", 0) in store  # still pinned once
    assert len(store) == 11  # unpinned, the others went back under the LRU bound
    store.unpin(("watched", 0))
    store.unpin(("watched", 0))  # one unpin too many is harmless
    assert len(store) == 10
    assert store.capacity == 10


def test_first_refresh_is_spread_over_the_whole_ttl() -> None:
    p = Policy(jitter=0.2)
    rng = random.Random(3)
    delays = [p.refresh_delay(10.0, rng, first=True) for _ in range(10_000)]
    assert all(0.0 < d <= 10.0 for d in delays)
    assert sum(d < 5.0 for d in delays) > 4_500  # uniform, not in the last fifth only
    assert Policy(jitter=0).refresh_delay(10.0, first=True) == 10.0


# -- issue 8: every field refuses what is not a usable number, naming the field ------

POLICY_FIELDS = [
    "min_ttl",
    "max_ttl",
    "jitter",
    "negative_min_ttl",
    "negative_max_ttl",
    "servfail_ttl",
    "stale_ttl",
    "stale_after",
    "stale_answer_ttl",
    "stale_refresh_interval",
    "timeout",
    "lifetime",
    "backoff_base",
    "backoff_max",
    "cache_size",
    "max_srv_targets",
]


def test_the_field_list_is_complete() -> None:
    import dataclasses

    assert [f.name for f in dataclasses.fields(Policy)] == [*POLICY_FIELDS, "rng"]


@pytest.mark.parametrize("field", POLICY_FIELDS)
@pytest.mark.parametrize(
    "value",
    [True, False, "5", None, float("nan"), float("inf"), -float("inf"), -1, 10**400, -(10**400)],
    ids=["True", "False", "str", "None", "nan", "inf", "-inf", "-1", "10**400", "-10**400"],
)
def test_bad_policy_values_are_value_errors_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^Policy\.{field}\b"):
        Policy(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["min_ttl", "max_ttl", "negative_min_ttl", "negative_max_ttl"])
def test_ttls_that_reach_the_wire_fit_in_a_ttl(field: str) -> None:
    top = 2**31 - 1
    caps = {"min_ttl": "max_ttl", "negative_min_ttl": "negative_max_ttl"}
    raised = {field: top, **({caps[field]: top} if field in caps else {})}
    assert getattr(Policy(**raised), field) == top  # type: ignore[arg-type]
    raised = {field: top + 1, **({caps[field]: top + 1} if field in caps else {})}
    with pytest.raises(ValueError, match=rf"^Policy\.{field} must be at most {top}"):
        Policy(**raised)  # type: ignore[arg-type]
