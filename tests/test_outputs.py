"""The sidecar's output files: Envoy EDS and JSON, atomically replaced, following a live Knot.

Every EDS document a test builds is parsed with Envoy's own protos (xds-protos:
unknown fields fail) and checked against the validation rules those protos
carry (weights >= 1, priority <= 128, ports <= 65535), plus the rules the
comments state (priorities dense from 0, weight sums within uint32).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

# Envoy's generated protos (xds-protos); importing them registers the types json_format needs.
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format, wrappers_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from validate import validate_pb2

import srvwatch
from srvwatch.endpoints import Endpoint, EndpointSet, Update
from srvwatch.server.outputs import (
    CLUSTER_LOAD_ASSIGNMENT,
    MAX_WEIGHT_SUM,
    OutputFiles,
    eds_document,
    encode_document,
    update_document,
    write_atomic,
)
from tests import zones
from tests.dns_servers import KnotFactory, KnotServer

NAME = "_http._tcp.api.svc.test."
WRAPPERS = {
    d.full_name for d in (wrappers_pb2.UInt32Value.DESCRIPTOR, wrappers_pb2.StringValue.DESCRIPTOR)
}


# -- Envoy's schema ---------------------------------------------------------------------


def _check_scalar(value: Any, rules: Any, where: str) -> list[str]:
    kind = rules.WhichOneof("type")
    if kind is None:
        return []
    rule = getattr(rules, kind)
    bad = []
    for bound, ok in (
        ("gte", lambda b: value >= b),
        ("gt", lambda b: value > b),
        ("lte", lambda b: value <= b),
        ("lt", lambda b: value < b),
        ("min_len", lambda b: len(value) >= b),
    ):
        known = bound in rule.DESCRIPTOR.fields_by_name and rule.HasField(bound)
        if known and not ok(getattr(rule, bound)):
            bad.append(f"{where}={value!r} breaks {kind}.{bound}={getattr(rule, bound)}")
    return bad


def rule_violations(message: Message, where: str = "") -> list[str]:
    """The protoc-gen-validate rules in Envoy's protos that ``message`` breaks (the ones we use)."""
    bad: list[str] = []
    for field in message.DESCRIPTOR.fields:
        rules = field.GetOptions().Extensions[validate_pb2.rules]
        at = f"{where}.{field.name}"
        value = getattr(message, field.name)
        if field.is_repeated:
            items = list(value)
            if field.message_type is not None:
                for i, item in enumerate(items):
                    bad += rule_violations(item, f"{at}[{i}]")
            continue
        if field.message_type is not None:
            if not message.HasField(field.name):
                if rules.HasField("message") and rules.message.required:
                    bad.append(f"{at} is required")
                continue
            if field.message_type.full_name in WRAPPERS:
                bad += _check_scalar(value.value, rules, at)
            else:
                bad += rule_violations(value, at)
            continue
        if field.containing_oneof is not None and not message.HasField(field.name):
            continue
        if field.type != FieldDescriptor.TYPE_ENUM:
            bad += _check_scalar(value, rules, at)
    return bad


def envoy_checked(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` after Envoy's protos accepted it; fails the test otherwise."""
    text = encode_document(document).decode()
    response = json_format.Parse(text, discovery_pb2.DiscoveryResponse())  # unknown fields fail
    assert response.version_info
    assert len(response.resources) == 1
    assert response.resources[0].type_url == CLUSTER_LOAD_ASSIGNMENT
    assignment = endpoint_pb2.ClusterLoadAssignment()
    assert response.resources[0].Unpack(assignment)
    assert rule_violations(assignment) == []
    priorities = [group.priority for group in assignment.endpoints]
    assert priorities == list(range(len(priorities))), "priorities dense from 0"
    for group in assignment.endpoints:
        assert group.lb_endpoints, "no empty priority"
        assert sum(lb.load_balancing_weight.value for lb in group.lb_endpoints) <= MAX_WEIGHT_SUM
        for lb in group.lb_endpoints:
            assert lb.HasField("load_balancing_weight")
            assert lb.endpoint.address.socket_address.port_value > 0
    return document


def test_the_schema_check_catches_what_envoy_rejects() -> None:
    """The checker itself: each of these breaks a rule Envoy enforces."""
    good = eds_document(srv_update(ep("a", 80, 0, 5, "10.0.0.1")), "api")
    envoy_checked(good)
    lb = good["resources"][0]["endpoints"][0]["lb_endpoints"][0]
    for field, value in (("load_balancing_weight", 0), ("unknown_field", 1)):
        bad = json.loads(json.dumps(good))
        bad["resources"][0]["endpoints"][0]["lb_endpoints"][0][field] = value
        with pytest.raises((AssertionError, json_format.ParseError)):
            envoy_checked(bad)
    bad = json.loads(json.dumps(good))
    bad["resources"][0]["endpoints"][0]["priority"] = 129
    with pytest.raises(AssertionError):
        envoy_checked(bad)
    assert lb["endpoint"]["address"]["socket_address"]["port_value"] == 80


# -- building EDS documents -------------------------------------------------------------


def ep(target: str, port: int, priority: int, weight: int, *addresses: str) -> Endpoint:
    return Endpoint(f"{target}.svc.test.", port, priority, weight, addresses)


def srv_update(
    *endpoints: Endpoint,
    stale: bool = False,
    version: int = 1,
    no_service: bool = False,
    error: str | None = None,
) -> Update:
    endpoint_set = EndpointSet(NAME, endpoints, ttl=30.0, stale=stale, no_service=no_service)
    return Update.between(None, endpoint_set, version=version, error=error)


def lb_rows(document: dict[str, Any]) -> list[tuple[int, str, int, int]]:
    """(priority, address, port, weight) of every lb_endpoint, in file order."""
    (assignment,) = document["resources"]
    return [
        (
            group["priority"],
            lb["endpoint"]["address"]["socket_address"]["address"],
            lb["endpoint"]["address"]["socket_address"]["port_value"],
            lb["load_balancing_weight"],
        )
        for group in assignment["endpoints"]
        for lb in group["lb_endpoints"]
    ]


def test_srv_priorities_become_dense_and_weight_zero_the_smallest_share() -> None:
    update = srv_update(
        ep("a", 8080, 10, 60, "10.0.0.11"),
        ep("b", 8080, 10, 40, "10.0.0.12"),
        ep("c", 8081, 20, 0, "10.0.0.13"),
    )
    document = envoy_checked(eds_document(update, "api"))
    assert lb_rows(document) == [
        (0, "10.0.0.11", 8080, 60),
        (0, "10.0.0.12", 8080, 40),
        (1, "10.0.0.13", 8081, 1),
    ]
    (assignment,) = document["resources"]
    assert assignment["@type"] == CLUSTER_LOAD_ASSIGNMENT
    assert assignment["cluster_name"] == "api"
    # Weight 0 beside others: still at least 1, and the smallest share.
    mixed = srv_update(ep("a", 80, 5, 3, "10.0.0.1"), ep("z", 80, 5, 0, "10.0.0.2"))
    assert [row[3] for row in lb_rows(envoy_checked(eds_document(mixed, "api")))] == [3, 1]


def test_every_address_is_an_endpoint_and_a_target_keeps_its_share() -> None:
    """a.api has two addresses: each gets half of a's weight, so a still has 60%."""
    update = srv_update(
        ep("a", 8080, 10, 60, "10.0.0.11", "2001:db8::11"),
        ep("b", 8080, 10, 40, "10.0.0.12"),
        ep("c", 8080, 20, 0, "10.0.0.13", "10.0.0.14", "10.0.0.15"),
    )
    rows = lb_rows(envoy_checked(eds_document(update, "api")))
    assert [row[1] for row in rows] == [
        "10.0.0.11", "2001:db8::11", "10.0.0.12", "10.0.0.13", "10.0.0.14", "10.0.0.15",
    ]  # fmt: skip
    top = [row for row in rows if row[0] == 0]
    total = sum(row[3] for row in top)
    assert (top[0][3] + top[1][3]) / total == pytest.approx(0.6)
    assert top[0][3] == top[1][3]
    assert {row[3] for row in rows if row[0] == 1} == {1}  # weight 0 over three addresses


def test_targets_without_addresses_are_left_out_and_priorities_stay_dense() -> None:
    update = srv_update(
        ep("gone", 8080, 1, 10),
        ep("a", 8080, 7, 10, "10.0.0.1"),
        ep("b", 8080, 9, 10, "10.0.0.2"),
    )
    rows = lb_rows(envoy_checked(eds_document(update, "api")))
    assert rows == [(0, "10.0.0.1", 8080, 10), (1, "10.0.0.2", 8080, 10)]


def test_no_service_and_an_empty_answer_have_no_endpoints() -> None:
    for update in (srv_update(no_service=True), srv_update()):
        document = envoy_checked(eds_document(update, "api"))
        assert document["resources"][0]["endpoints"] == []


def test_a_stale_update_gives_the_same_file_as_the_fresh_one() -> None:
    """version_info hashes the content: a stale flip or a new update number rewrites nothing."""
    endpoints = (ep("a", 8080, 10, 60, "10.0.0.11"), ep("b", 8080, 10, 40, "10.0.0.12"))
    fresh = eds_document(srv_update(*endpoints, version=1), "api")
    stale = eds_document(srv_update(*endpoints, version=5, stale=True, error="timeout"), "api")
    assert encode_document(fresh) == encode_document(stale)
    moved = eds_document(srv_update(endpoints[0], ep("b", 8080, 10, 40, "10.0.0.99")), "api")
    assert moved["version_info"] != fresh["version_info"]
    renamed = eds_document(srv_update(*endpoints), "api-2")
    assert renamed["version_info"] != fresh["version_info"]


def address_update(*addresses: str, name: str = "multi.svc.test.") -> Update:
    records = [(0, name, 0, 0, (a,)) for a in addresses]
    return Update.between(None, EndpointSet.from_wire(name, records, ttl=30.0), version=1)


def test_an_address_watch_uses_the_configured_port() -> None:
    update = address_update("127.0.0.41", "127.0.0.42", "2001:db8::41")
    with pytest.raises(ValueError, match=r"port 0 .*A/AAAA"):
        eds_document(update, "multi")
    rows = lb_rows(envoy_checked(eds_document(update, "multi", port=8443)))
    assert rows == [
        (0, "127.0.0.41", 8443, 1),
        (0, "127.0.0.42", 8443, 1),
        (0, "2001:db8::41", 8443, 1),
    ]


def test_more_priorities_than_envoy_allows_share_the_lowest() -> None:
    update = srv_update(
        *(ep(f"t{p}", 80, p, 1, f"10.0.{p // 250}.{p % 250 + 1}") for p in range(140))
    )
    rows = lb_rows(envoy_checked(eds_document(update, "api")))
    assert len(rows) == 140
    assert max(row[0] for row in rows) == 128
    assert sum(1 for row in rows if row[0] == 128) == 12


def test_weights_are_scaled_to_fit_uint32_and_keep_their_proportions() -> None:
    """Address counts 7, 9, 11, ...: the common multiple would overflow Envoy's uint32 sum."""
    counts = (7, 9, 11, 13, 16, 17, 19)
    endpoints = [
        ep(f"t{n}", 80, 0, 65535 if n != 19 else 0, *(f"10.{n}.0.{i + 1}" for i in range(n)))
        for n in counts
    ]
    rows = lb_rows(envoy_checked(eds_document(srv_update(*endpoints), "api")))
    assert len(rows) == sum(counts)
    weights = [row[3] for row in rows]
    assert sum(weights) <= MAX_WEIGHT_SUM
    assert min(weights) >= 1
    share = {n: 0 for n in counts}
    for row in rows:
        share[int(row[1].split(".")[1])] += row[3]
    total = sum(weights)
    for n in counts[:-1]:
        assert share[n] / total == pytest.approx(65535 / (6 * 65535 + 1), rel=1e-6)
    assert share[19] / total == pytest.approx(1 / (6 * 65535 + 1), rel=1e-2)  # weight 0 -> 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: eds_document(srv_update(), ""), "cluster"),
        (lambda: eds_document(srv_update(), "api", port=0), "port"),
        (lambda: eds_document(srv_update(), "api", port=70000), "port"),
        (lambda: OutputFiles(NAME, eds_file="x.json", port=80), "SRV records carry"),
        (lambda: OutputFiles("m.test", eds_file="x.json", rdtype="A"), "needs a port"),
        (lambda: OutputFiles("m.test", rdtype="TXT"), "SRV, A or AAAA"),
        (lambda: OutputFiles("m.test", cluster=""), "cluster"),
    ],
)
def test_bad_arguments_are_named(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# -- atomic replacement -----------------------------------------------------------------


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_a_concurrent_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "eds.json"
    write_atomic(target, b'{"n": -1}')
    stop = threading.Event()
    seen: list[int] = []
    broken: list[bytes] = []

    def reader() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            try:
                seen.append(json.loads(data)["n"])
            except ValueError:
                broken.append(data[:80])

    thread = threading.Thread(target=reader)
    descriptors = open_descriptors()
    thread.start()
    try:
        for n in range(1000):
            # Sizes vary from a few bytes to 200 KB: a torn write would show as bad JSON.
            write_atomic(target, json.dumps({"n": n, "pad": "x" * (n * 7919 % 200_000)}).encode())
    finally:
        stop.set()
        thread.join()
    assert broken == []
    assert len(seen) > 100, "the reader must have overlapped the writes"
    assert seen == sorted(seen), "never an older file after a newer one"
    assert json.loads(target.read_bytes())["n"] == 999
    assert leftovers(tmp_path) == []
    assert (target.stat().st_mode & 0o777) == 0o644
    assert open_descriptors() == descriptors


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_failed_writes_leave_no_temp_files(tmp_path: Path) -> None:
    (tmp_path / "a-directory").mkdir()
    descriptors = open_descriptors()
    with pytest.raises(IsADirectoryError):  # fails at the rename, after the temp was written
        write_atomic(tmp_path / "a-directory", b"data")
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "eds.json", b"data")
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory"]
    assert open_descriptors() == descriptors


def test_a_write_cut_short_by_a_full_disk_leaves_the_old_file(tmp_path: Path) -> None:
    """A file-size limit makes write() fail halfway, as a full disk would (EFBIG ~ ENOSPC)."""
    target = tmp_path / "eds.json"
    target.write_bytes(b"old")
    script = f"""
import errno, resource, signal
from srvwatch.server.outputs import write_atomic
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    write_atomic({str(target)!r}, b"x" * 100_000)
except OSError as exc:
    assert exc.errno == errno.EFBIG, exc
    print("failed as expected")
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(Path(srvwatch.__file__).parent.parent)},
        check=False,
    )
    assert result.stdout.strip() == "failed as expected", result.stderr
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


# -- OutputFiles ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_only_changes_are_written_and_a_restart_rewrites_nothing(tmp_path: Path) -> None:
    json_file, eds_file = tmp_path / "api.json", tmp_path / "eds" / "api.json"
    eds_file.parent.mkdir()
    files = OutputFiles(NAME, json_file=json_file, eds_file=eds_file, cluster="api")
    endpoints = (ep("a", 8080, 10, 60, "10.0.0.11"), ep("b", 8080, 10, 40, "10.0.0.12"))

    await files.write(srv_update(*endpoints, version=1))
    assert files.stats() == {"writes": 2, "write_failures": 0, "unchanged": 0, "held": 0}
    assert json.loads(json_file.read_bytes()) == update_document(srv_update(*endpoints))
    eds_before = eds_file.read_bytes()
    envoy_checked(json.loads(eds_before))

    # Stale, with the last good endpoints: the JSON says so, the EDS file is left alone.
    await files.write(srv_update(*endpoints, version=2, stale=True, error="timed out"))
    assert json.loads(json_file.read_bytes())["stale"] is True
    assert eds_file.read_bytes() == eds_before
    assert (files.writes, files.unchanged) == (3, 1)

    # A restart finds the same content in place and writes nothing.
    again = OutputFiles(NAME, json_file=json_file, eds_file=eds_file, cluster="api")
    await again.write(srv_update(*endpoints, version=2, stale=True, error="timed out"))
    assert (again.writes, again.unchanged) == (0, 2)
    assert leftovers(tmp_path) == []
    assert leftovers(eds_file.parent) == []


@pytest.mark.anyio
async def test_a_failure_with_nothing_to_keep_never_empties_the_files(tmp_path: Path) -> None:
    json_file, eds_file = tmp_path / "api.json", tmp_path / "api-eds.json"
    files = OutputFiles(NAME, json_file=json_file, eds_file=eds_file, cluster="api")
    failed = srv_update(stale=True, error="no answer")  # what a watch says before any answer
    await files.write(failed)
    assert not json_file.exists()
    assert not eds_file.exists()
    assert files.held == 1

    await files.write(srv_update(ep("a", 8080, 10, 60, "10.0.0.11"), version=2))
    eds_good = eds_file.read_bytes()
    await files.write(srv_update(stale=True, error="past the stale window", version=3))
    assert eds_file.read_bytes() == eds_good
    assert files.held == 2

    # Authoritative emptiness is written: the zone said the service is not offered.
    await files.write(srv_update(no_service=True, version=4))
    assert envoy_checked(json.loads(eds_file.read_bytes()))["resources"][0]["endpoints"] == []
    assert json.loads(json_file.read_bytes())["no_service"] is True


@pytest.mark.anyio
async def test_a_write_failure_is_logged_counted_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    json_file, eds_file = tmp_path / "api.json", tmp_path / "later" / "api.json"
    files = OutputFiles(NAME, json_file=json_file, eds_file=eds_file, cluster="api")
    with caplog.at_level(logging.WARNING, logger="srvwatch.server.outputs"):
        await files.write(srv_update(ep("a", 8080, 10, 60, "10.0.0.11")))
    assert (files.writes, files.write_failures) == (1, 1)  # the JSON file still made it
    assert str(eds_file) in caplog.text
    eds_file.parent.mkdir()
    await files.write(srv_update(ep("a", 8080, 10, 60, "10.0.0.11"), version=2, stale=True))
    assert (files.writes, files.write_failures) == (3, 1)
    envoy_checked(json.loads(eds_file.read_bytes()))


@pytest.mark.anyio
async def test_a_build_error_is_counted_and_the_watch_goes_on(tmp_path: Path) -> None:
    """An SRV record with port 0 cannot go into an EDS file: counted, JSON still written."""
    files = OutputFiles(NAME, json_file=tmp_path / "j.json", eds_file=tmp_path / "e.json")
    await files.write(srv_update(ep("a", 0, 10, 60, "10.0.0.11")))
    assert (files.writes, files.write_failures) == (1, 1)
    await files.write(srv_update(ep("a", 80, 10, 60, "10.0.0.11"), version=2))
    assert (files.writes, files.write_failures) == (3, 1)


# -- against a live Knot ----------------------------------------------------------------


@pytest.fixture
def knot(knot_factory: KnotFactory) -> Iterator[KnotServer]:
    server = knot_factory()
    yield server
    server.stop()


def fast_policy() -> srvwatch.Policy:
    return srvwatch.Policy(
        min_ttl=0.1, max_ttl=0.1, negative_min_ttl=0.1, timeout=0.2, lifetime=0.4,
        backoff_base=0.05, backoff_max=0.2,
    )  # fmt: skip


async def wait_for(check: Callable[[], bool], limit: float = 5.0) -> None:
    with anyio.fail_after(limit):
        while not check():  # noqa: ASYNC110 - a file on disk has no event to wait on
            await anyio.sleep(0.02)


def eds_addresses(path: Path) -> set[str]:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return set()
    return {row[1] for row in lb_rows(document)}


@pytest.mark.anyio
async def test_a_live_change_on_knot_reaches_both_files(knot: KnotServer, tmp_path: Path) -> None:
    json_file, eds_file = tmp_path / "api.json", tmp_path / "api-eds.json"
    files = OutputFiles(NAME, json_file=json_file, eds_file=eds_file, cluster="api")
    first = {*zones.HTTP_A.values(), *zones.HTTP_AAAA.values()}
    async with srvwatch.Resolver([knot.address()], policy=fast_policy()) as resolver:
        async with resolver.watch(NAME) as updates, anyio.create_task_group() as tasks:
            tasks.start_soon(files.follow, updates)
            await wait_for(lambda: eds_addresses(eds_file) == first)
            await anyio.to_thread.run_sync(knot.set_records, "d.api", "A", 30, ["127.0.0.14"])
            await anyio.to_thread.run_sync(
                knot.set_records,
                "_http._tcp.api",
                "SRV",
                30,
                ["10 60 8080 a.api.svc.test.", "30 5 9090 d.api.svc.test."],
            )
            want = {"127.0.0.11", "2001:db8::11", "127.0.0.14"}
            await wait_for(lambda: eds_addresses(eds_file) == want)
            tasks.cancel_scope.cancel()
    document = envoy_checked(json.loads(eds_file.read_bytes()))
    assert lb_rows(document) == [
        (0, "127.0.0.11", 8080, 60),
        (0, "2001:db8::11", 8080, 60),
        (1, "127.0.0.14", 9090, 5),
    ]
    targets = {e["target"] for e in json.loads(json_file.read_bytes())["endpoints"]}
    assert targets == {"a.api.svc.test.", "d.api.svc.test."}
    assert files.write_failures == 0
    assert leftovers(tmp_path) == []


# -- the command line -------------------------------------------------------------------


class Lines:
    """The stdout lines of a running process, read in a thread so waits can time out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert process.stdout is not None
        stream = process.stdout

        def pump() -> None:
            for line in stream:
                self._queue.put(line)
            self._queue.put(None)

        self._thread = threading.Thread(target=pump, daemon=True)
        self._thread.start()

    def until(self, check: Callable[[str], bool], limit: float = 15.0) -> str:
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"not seen in {limit}s; got:\n{''.join(self.seen)[-3000:]}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the process ended; got:\n{''.join(self.seen)[-3000:]}")
            self.seen.append(line)
            if check(line):
                return line


def run_watch(*args: str, columns: int | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(srvwatch.__file__).parent.parent)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.Popen(
        [sys.executable, "-m", "srvwatch.cli", "watch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    try:
        _, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err


def test_watch_format_json_prints_documents_and_follows_a_change(knot: KnotServer) -> None:
    # _one has TTL 1, clamped to the 5 s floor: the CLI sees a change within one floor.
    process = run_watch(NAME, zones.ONE_SRV, "-n", knot.address(), "--format", "json")
    try:
        lines = Lines(process)
        names: set[str] = set()
        while names != {NAME, zones.ONE_SRV}:
            document = json.loads(lines.until(lambda line: line.startswith("{")))
            assert document["version"] == 1
            assert not document["stale"]
            names.add(document["name"])
        knot.set_records("_one._tcp.api", "SRV", 1, [f"10 10 7001 {zones.ONE_TARGET}"])
        line = lines.until(lambda line: '"version": 2' in line, limit=20)
        document = json.loads(line)
        assert document["name"] == zones.ONE_SRV
        assert [(e["port"], e["addresses"]) for e in document["endpoints"]] == [
            (7001, [zones.ONE_ADDRESS])
        ]
    finally:
        err = stop(process)
    assert "Traceback" not in err, err


def test_watch_format_table_shows_every_endpoint(knot_server: KnotServer) -> None:
    process = run_watch(NAME, "-n", knot_server.address(), "--format", "table", columns=160)
    try:
        lines = Lines(process)
        for target, (priority, weight, port) in zones.HTTP_TARGETS.items():
            cell = f"{target}:{port}"
            row = lines.until(lambda line, cell=cell: cell in line)  # type: ignore[misc]
            cells = [cell.strip() for cell in row.split("│")]
            assert cells[3:5] == [str(priority), str(weight)], row
            assert zones.HTTP_A[target] in cells[5]
            assert cells[6] == "fresh"
    finally:
        err = stop(process)
    assert "Traceback" not in err, err


def test_watch_format_table_on_a_terminal_is_a_live_display(knot_server: KnotServer) -> None:
    """On a terminal rich redraws one table in place (cursor movements, no scrolling copies)."""
    import pty
    import select

    controller, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm"}
    env["PYTHONPATH"] = str(Path(srvwatch.__file__).parent.parent)
    command = [sys.executable, "-m", "srvwatch.cli", "watch", NAME, "-n", knot_server.address()]
    process = subprocess.Popen(
        [*command, "--format", "table"], stdout=terminal, stderr=subprocess.PIPE, env=env
    )
    os.close(terminal)
    screen = b""
    try:
        deadline = time.monotonic() + 15
        while b"c.api.svc.test.:8080" not in screen or screen.count(b"age") < 2:
            assert time.monotonic() < deadline, screen.decode(errors="replace")
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                screen += os.read(controller, 65536)
    finally:
        stop(process)  # type: ignore[arg-type]
        os.close(controller)
    text = screen.decode(errors="replace")
    assert "\x1b[2K" in text, "a live display erases and redraws its lines"
    for target, address in zones.HTTP_A.items():
        assert target in text
        assert address in text


def test_watch_keeps_the_name_type_form(knot_server: KnotServer) -> None:
    process = run_watch(zones.MULTI, "AAAA", "-n", knot_server.address(), "--format", "json")
    try:
        document = json.loads(Lines(process).until(lambda line: line.startswith("{")))
    finally:
        stop(process)
    assert {a for e in document["endpoints"] for a in e["addresses"]} == set(zones.MULTI_AAAA)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([zones.MULTI, "A", "--type", "AAAA"], "two types given"),
        (["a..b", "--format", "json"], "not a valid DNS name"),
    ],
)
def test_watch_bad_input_is_one_clear_line(args: list[str], message: str) -> None:
    process = run_watch(*args, "-n", "127.0.0.1:9")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert message in err
    assert "Traceback" not in err


def test_watch_table_without_rich_says_what_to_install() -> None:
    script = (
        "import sys; sys.modules['rich'] = None\n"
        "from srvwatch.cli import main\n"
        "sys.exit(main(['watch', 'x.test', '--format', 'table', '-n', '127.0.0.1:9']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(Path(srvwatch.__file__).parent.parent)},
        check=False,
    )
    assert result.returncode == 1
    assert "needs rich" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_table_renders_stale_empty_and_waiting_names() -> None:
    from rich.console import Console

    from srvwatch.watchview import EndpointTable

    now = [100.0]
    table = EndpointTable([NAME, "_none._tcp.api.svc.test.", "later.svc.test."], lambda: now[0])
    table.update(NAME, srv_update(ep("a", 8080, 10, 60, "10.0.0.11"), stale=True))
    none = EndpointSet("_none._tcp.api.svc.test.", (), no_service=True)
    table.update("_none._tcp.api.svc.test.", Update.between(None, none, version=1))
    now[0] = 107.0
    console = Console(width=150, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(table.render())
    console.file.close()
    text = console.export_text()
    row = next(line for line in text.splitlines() if "a.svc.test.:8080" in line)
    assert [c.strip() for c in row.split("│")][3:8] == ["10", "60", "10.0.0.11", "STALE", "7s"]
    assert "service not offered" in text
    assert "waiting for the first answer" in text


def test_the_table_keeps_every_column_in_80_columns() -> None:
    """Long names fold instead of squeezing the addresses (or the last column) away."""
    from rich.console import Console

    from srvwatch.watchview import EndpointTable

    name = "_http._tcp.api.default.svc.cluster.local."
    endpoints = EndpointSet(
        name,
        (
            Endpoint(
                "api-1.default.svc.cluster.local.", 8080, 10, 60, ("10.0.0.11", "2001:db8::11")
            ),
        ),
        ttl=5,
    )
    table = EndpointTable([name], clock=lambda: 0.0)
    table.update(name, Update.between(None, endpoints, version=1))
    console = Console(width=80, record=True, color_system=None)
    console.print(table.render())
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    for shown in ("2001:db8::11", "10.0.0.11", "age", "fresh", "60"):
        assert shown in text, shown
    assert all(line.rstrip().endswith(("┓", "┃", "┩", "│", "┘")) for line in lines[1:])
