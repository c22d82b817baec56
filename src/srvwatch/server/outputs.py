"""What the sidecar shows of a watch: one JSON document per update, and files for proxies.

The same document is the body of ``/endpoints``, each ``data:`` line of
``/watch`` and the content of a watch's ``json_file``, so every consumer sees
one shape. :func:`eds_document` turns an update into the Envoy EDS file
(a ``DiscoveryResponse`` that file-based EDS reads), and :class:`OutputFiles`
keeps a watch's files in step with its updates, replacing them atomically so
a proxy never reads half a file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import AsyncIterable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ..endpoints import Endpoint, Update
from ..wire import check_u16

__all__ = [
    "CLUSTER_LOAD_ASSIGNMENT",
    "OutputFiles",
    "eds_document",
    "encode_document",
    "update_document",
    "write_atomic",
]

log = logging.getLogger(__name__)

CLUSTER_LOAD_ASSIGNMENT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
"""The ``@type`` of the one resource in an EDS file."""

MAX_PRIORITY = 128
"""Envoy rejects a ``LocalityLbEndpoints.priority`` above 128; lower SRV priorities share it."""

MAX_WEIGHT_SUM = 2**32 - 1
"""Envoy requires the weights of one locality (here: one priority) to sum to a uint32."""

ADDRESS_TYPES = frozenset({"A", "AAAA"})


def _endpoint_document(ep: Endpoint) -> dict[str, Any]:
    return {
        "target": ep.target,
        "port": ep.port,
        "priority": ep.priority,
        "weight": ep.weight,
        "addresses": list(ep.addresses),
    }


def update_document(update: Update) -> dict[str, Any]:
    """A JSON-ready view of one update: the whole set in canonical order, plus its state."""
    endpoints = update.endpoints
    return {
        "name": update.name,
        "version": update.version,
        "stale": update.stale,
        "error": update.error,
        "ttl": endpoints.ttl,
        "no_service": endpoints.no_service,
        "endpoints": [_endpoint_document(ep) for ep in endpoints.endpoints],
    }


def encode_document(document: dict[str, Any]) -> bytes:
    """A file's bytes: indented, keys in the order built, so equal documents are equal bytes."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


# -- Envoy EDS --------------------------------------------------------------------------


def _check_port(port: int | None) -> int | None:
    if port is None:
        return None
    check_u16(port, "port")
    if port == 0:
        raise ValueError("port must be 1-65535, got 0")
    return port


def _group_weights(group: list[Endpoint]) -> list[int]:
    """One weight per address of ``group`` (one priority), each >= 1, summing to a uint32.

    SRV weight 0 becomes 1, the smallest share. A target's weight is its
    share of the priority (RFC 2782), so it is split evenly over its
    addresses: every weight is multiplied by the least common multiple of
    the address counts, then divided by the target's own count. With one
    address per target (the usual case) the weights are the SRV weights.
    If that would overflow the uint32 sum Envoy allows, all are scaled down
    in proportion, none below 1.
    """
    scale = math.lcm(*(len(ep.addresses) for ep in group))
    weights = [
        max(ep.weight, 1) * (scale // len(ep.addresses)) for ep in group for _ in ep.addresses
    ]
    total = sum(weights)
    if total <= MAX_WEIGHT_SUM:
        return weights
    budget = MAX_WEIGHT_SUM - len(weights)  # room for the ones rounding might add
    return [max(1, w * budget // total) for w in weights]


def eds_document(update: Update, cluster: str, port: int | None = None) -> dict[str, Any]:
    """An Envoy ``DiscoveryResponse`` holding one ``ClusterLoadAssignment`` for ``update``.

    Every address of a target becomes an ``lb_endpoint`` on the SRV port, or
    on ``port`` for an A/AAAA watch, whose endpoints carry port 0; ``port``
    is required then. Targets without addresses are left out. SRV priorities
    become dense priorities from 0 in ascending order (Envoy wants no gaps).
    ``version_info`` is a hash of the assignment, so equal endpoints give
    byte-equal files whatever the update counter says, also across restarts.
    """
    if not isinstance(cluster, str) or not cluster:
        raise ValueError(f"cluster must be a non-empty str, got {cluster!r}")
    port = _check_port(port)
    usable = [ep for ep in update.endpoints.endpoints if ep.addresses]
    if port is None:
        for ep in usable:
            if ep.port == 0:
                raise ValueError(
                    f"{update.name}: endpoint {ep.target} has port 0 "
                    f"(an A/AAAA watch): give the port the proxy should connect to"
                )
    groups: dict[int, list[Endpoint]] = {}
    for rank, priority in enumerate(sorted({ep.priority for ep in usable})):
        groups.setdefault(min(rank, MAX_PRIORITY), []).extend(
            ep for ep in usable if ep.priority == priority
        )
    localities = []
    for priority, group in groups.items():
        weights = iter(_group_weights(group))
        lb_endpoints = [
            {
                "endpoint": {
                    "address": {
                        "socket_address": {
                            "address": address,
                            "port_value": port if port is not None else ep.port,
                        }
                    }
                },
                "load_balancing_weight": next(weights),
            }
            for ep in group
            for address in ep.addresses
        ]
        localities.append({"priority": priority, "lb_endpoints": lb_endpoints})
    assignment = {
        "@type": CLUSTER_LOAD_ASSIGNMENT,
        "cluster_name": cluster,
        "endpoints": localities,
    }
    digest = hashlib.sha256(json.dumps(assignment, separators=(",", ":")).encode())
    return {"version_info": digest.hexdigest()[:16], "resources": [assignment]}


# -- atomic files -----------------------------------------------------------------------


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # not every filesystem can
            raise
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new one, never a mix.

    A temp file in the same directory (a rename is atomic only within one
    filesystem) is written, fsynced and renamed over ``path``, then the
    directory is fsynced so the rename survives a crash. A move is also
    what Envoy's file watch reacts to. On any error the temp file is removed
    and the error raised: nothing is left behind.
    """
    target = os.fspath(path)
    directory, base = os.path.split(target)
    directory = directory or "."
    fd, temp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_directory(directory)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


class OutputFiles:
    """The files of one watch (``json_file``, ``eds_file``), kept in step with its updates.

    Only changed content is written, so a proxy reloads only for a real
    change, and a restart that finds the same content in place writes
    nothing. A stale update carries the last good endpoints and is written
    (the JSON says ``stale``); a stale update with nothing to keep (a failure
    before any answer, or past the stale window) is held back: the files keep
    the last endpoints, and an EDS file never empties Envoy's cluster because
    the DNS failed. A write that fails is logged with its path and counted;
    it never ends the watch, and the next update tries again.
    """

    def __init__(
        self,
        name: str,
        *,
        json_file: str | os.PathLike[str] | None = None,
        eds_file: str | os.PathLike[str] | None = None,
        cluster: str | None = None,
        rdtype: str = "SRV",
        port: int | None = None,
        mode: int = 0o644,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        rdtype = rdtype.upper() if isinstance(rdtype, str) else rdtype
        if rdtype not in ADDRESS_TYPES | {"SRV"}:
            raise ValueError(f"watch {name!r}: type must be SRV, A or AAAA, got {rdtype!r}")
        port = _check_port(port)
        if rdtype == "SRV" and port is not None:
            raise ValueError(
                f"watch {name!r}: port is for A/AAAA watches; SRV records carry their own ports"
            )
        if rdtype in ADDRESS_TYPES and eds_file is not None and port is None:
            raise ValueError(f"watch {name!r}: an {rdtype} watch with an eds_file needs a port")
        cluster = name if cluster is None else cluster
        if not isinstance(cluster, str) or not cluster:
            raise ValueError(f"watch {name!r}: cluster must be a non-empty str, got {cluster!r}")
        self.name = name
        self.json_file = Path(json_file) if json_file is not None else None
        self.eds_file = Path(eds_file) if eds_file is not None else None
        self.cluster = cluster
        self.port = port
        self.mode = mode
        self.writes = 0
        """Files replaced."""
        self.write_failures = 0
        """Files that could not be built or written (logged with the path)."""
        self.unchanged = 0
        """Files not written because their content was already in place."""
        self.held = 0
        """Updates not written because they were stale with no endpoints to keep."""
        self._written: dict[Path, bytes | None] = {}
        self.failing: dict[Path, str] = {}
        """Files whose last write failed, with why: what ``/ready`` reports until one succeeds."""
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return (
            f"<OutputFiles {self.name} json_file={self.json_file} eds_file={self.eds_file} "
            f"writes={self.writes} failures={self.write_failures}>"
        )

    def stats(self) -> dict[str, int]:
        return {
            "writes": self.writes,
            "write_failures": self.write_failures,
            "unchanged": self.unchanged,
            "held": self.held,
        }

    @staticmethod
    def holds(update: Update) -> bool:
        """A failure with nothing to keep: writing it would empty the files."""
        endpoints = update.endpoints
        return update.stale and not endpoints.endpoints and not endpoints.no_service

    async def write(self, update: Update) -> None:
        """Bring both files up to ``update``, in a worker thread (fsync blocks).

        The thread is not abandoned on cancellation, so a file is always
        either fully replaced or untouched.
        """
        if self.json_file is None and self.eds_file is None:
            return
        if self.holds(update):
            self.held += 1
            log.info("%s: stale with no endpoints, files keep the last ones", self.name)
            return
        async with self._lock:
            await anyio.to_thread.run_sync(self._write_files, update)

    async def follow(self, updates: AsyncIterable[Update]) -> None:
        """Write every update of a watch until it ends."""
        async for update in updates:
            await self.write(update)

    def _write_files(self, update: Update) -> None:
        if self.json_file is not None:
            self._write_one(self.json_file, lambda: update_document(update))
        if self.eds_file is not None:
            self._write_one(self.eds_file, lambda: eds_document(update, self.cluster, self.port))

    def _write_one(self, path: Path, build: Callable[[], dict[str, Any]]) -> None:
        try:
            data = encode_document(build())
            if path not in self._written:
                self._written[path] = _read_or_none(path)  # what an earlier run left
            if self._written[path] == data:
                self.unchanged += 1
                self.failing.pop(path, None)
                return
            write_atomic(path, data, self.mode)
        except Exception as exc:
            self.write_failures += 1
            self.failing[path] = str(exc) or type(exc).__name__
            self._written.pop(path, None)  # unknown now: compare with the disk next time
            if isinstance(exc, OSError):
                log.warning("%s: cannot write %s: %s", self.name, path, exc)
            else:
                log.error("%s: cannot build %s", self.name, path, exc_info=exc)
            return
        self._written[path] = data
        self.failing.pop(path, None)
        self.writes += 1
