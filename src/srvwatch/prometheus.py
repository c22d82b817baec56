"""Prometheus metrics read from a resolver's own counters at scrape time.

There is no second set of counters to keep in step: :class:`ResolverCollector`
turns ``Resolver.stats()``, ``Resolver.upstreams()`` and
``Resolver.stub_responses()`` into metric families each time Prometheus
scrapes. The sidecar adds what only it knows (reloads, the config digest,
updates per configured watch, its listeners' sockets) through a
:class:`SidecarInfo` callable.

For a library user with a Prometheus endpoint of their own::

    from prometheus_client import REGISTRY
    from srvwatch.prometheus import ResolverCollector

    REGISTRY.register(ResolverCollector(resolver))

prometheus-client is an optional dependency (the ``prometheus`` extra):
``import srvwatch`` never imports it, only this module does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import dns.rcode
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import __version__
from .resolver import Resolver

__all__ = ["ResolverCollector", "SidecarInfo"]


@dataclass(frozen=True, slots=True)
class SidecarInfo:
    """What the sidecar adds to the resolver's counters, read at each scrape."""

    reloads: int = 0
    """Config reloads applied (SIGHUP or a changed file)."""
    reload_failures: int = 0
    """Reloads rejected (the file did not validate); the running config went on."""
    config_digest: str = ""
    """A hash of the running config file's content: ``srvwatch_config_info{hash}``."""
    watch_updates: Mapping[str, int] = field(default_factory=dict)
    """Updates published per configured watch name."""
    open_sockets: int = 0
    """Sockets the sidecar's own listeners hold (stub UDP and TCP, admin), beyond the resolver's."""
    output_writes: Mapping[str, int] = field(default_factory=dict)
    """Output files (JSON, EDS) replaced, per configured watch name."""
    output_write_failures: Mapping[str, int] = field(default_factory=dict)
    """Output files that could not be written (logged with the path), per configured watch name."""


_COUNTERS: tuple[tuple[str, str, str], ...] = (
    # (metric name without _total, stats() key, help)
    ("srvwatch_upstream_queries", "queries", "Upstream queries sent, UDP and TCP."),
    ("srvwatch_upstream_tcp_queries", "tcp_queries", "Upstream queries sent over TCP."),
    ("srvwatch_upstream_truncated", "truncated", "UDP answers with TC set, retried over TCP."),
    (
        "srvwatch_upstream_ignored_responses",
        "ignored_responses",
        "Upstream responses ignored: wrong ID or question (RFC 5452), or malformed.",
    ),
    ("srvwatch_upstream_probes", "upstream_probes", "Probes sent to nameservers marked down."),
    (
        "srvwatch_upstream_recoveries",
        "upstream_recoveries",
        "Times a nameserver marked down answered again.",
    ),
    (
        "srvwatch_fast_failures",
        "fast_failures",
        "Lookups failed at once, without a query, because every nameserver was down.",
    ),
    ("srvwatch_lookups", "lookups", "Calls to resolve*."),
    ("srvwatch_cache_hits", "hits", "Lookups answered from the cache."),
    ("srvwatch_cache_misses", "misses", "Lookups that needed the upstream."),
    ("srvwatch_cache_negative_hits", "negative_hits", "Cached NXDOMAIN/NODATA answers served."),
    ("srvwatch_cache_evictions", "cache_evictions", "Records evicted by the cache's bound."),
    (
        "srvwatch_coalesced",
        "coalesced",
        "Callers that waited for a lookup another caller had started.",
    ),
    (
        "srvwatch_stale_answers",
        "stale",
        "Answers served from the last good answer after a failure (RFC 8767).",
    ),
    ("srvwatch_sockets_opened", "sockets_opened", "Upstream sockets opened."),
    ("srvwatch_sockets_closed", "sockets_closed", "Upstream sockets closed."),
    (
        "srvwatch_stub_cache_hits",
        "stub_hits",
        "Stub queries answered from the store without waiting.",
    ),
    (
        "srvwatch_stub_prefetches",
        "stub_prefetches",
        "Stub entries refreshed in the last 10% of their TTL.",
    ),
    (
        "srvwatch_stub_stale_answers",
        "stub_stale_answers",
        "Stale answers the stub gave (TTL 30 s) because upstream had not answered in time.",
    ),
    (
        "srvwatch_stub_refused",
        "stub_refused",
        "Stub queries from clients outside allow, answered REFUSED.",
    ),
    (
        "srvwatch_stub_ignored",
        "stub_ignored",
        "Datagrams the stub did not answer: responses, garbage, truncated headers.",
    ),
)

_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("srvwatch_cache_entries", "cache_entries", "Records in the cache."),
    ("srvwatch_lookups_in_flight", "flights_in_progress", "Shared upstream lookups running."),
    ("srvwatch_watch_loops", "loops_running", "Refresh loops running (one per watched name)."),
)

_UPSTREAM_ERRORS = (
    ("timeout", "timeouts"),
    ("network", "network_errors"),
    ("server", "server_errors"),
)


class ResolverCollector:
    """A prometheus-client collector for one :class:`~srvwatch.Resolver`, read at scrape time.

    ``sidecar``: a callable returning the :class:`SidecarInfo` of the running
    sidecar; without it the reload and config families are left out and
    ``srvwatch_watch_updates_total`` is one unlabelled total. With it, the
    updates are labelled ``name`` for each configured watch (the only
    per-name label).
    """

    def __init__(
        self, resolver: Resolver, sidecar: Callable[[], SidecarInfo] | None = None
    ) -> None:
        if not isinstance(resolver, Resolver):
            raise ValueError(f"ResolverCollector needs a srvwatch.Resolver, got {resolver!r}")
        if sidecar is not None and not callable(sidecar):
            raise ValueError(f"sidecar must be a callable returning SidecarInfo, got {sidecar!r}")
        self._resolver = resolver
        self._sidecar = sidecar

    def collect(self) -> Iterator[Metric]:
        """The metric families, from the counters as they are now."""
        resolver = self._resolver
        stats = resolver.stats()
        info = self._sidecar() if self._sidecar is not None else None

        build = GaugeMetricFamily(
            "srvwatch_build_info", "The srvwatch version, as a label; always 1.", labels=["version"]
        )
        build.add_metric([__version__], 1)
        yield build

        for name, key, help_text in _COUNTERS:
            yield CounterMetricFamily(name, help_text, value=stats[key])
        for name, key, help_text in _GAUGES:
            yield GaugeMetricFamily(name, help_text, value=stats[key])

        errors = CounterMetricFamily(
            "srvwatch_upstream_errors",
            "Upstream attempts that failed, by kind: timeout, network (refused, unreachable), "
            "server (an rcode other than NOERROR and NXDOMAIN).",
            labels=["kind"],
        )
        for kind, key in _UPSTREAM_ERRORS:
            errors.add_metric([kind], stats[key])
        yield errors

        up = GaugeMetricFamily(
            "srvwatch_upstream_up", "1 while a nameserver is marked up, else 0.", labels=["server"]
        )
        for upstream in resolver.upstreams():
            up.add_metric([upstream["server"]], 1 if upstream["up"] else 0)
        yield up

        clamped = CounterMetricFamily(
            "srvwatch_ttl_clamped",
            "Records the stub served with their TTL raised to the floor (min) "
            "or lowered to the cap (max).",
            labels=["bound"],
        )
        clamped.add_metric(["min"], stats["ttl_clamped_floor"])
        clamped.add_metric(["max"], stats["ttl_clamped_cap"])
        yield clamped

        requests = CounterMetricFamily(
            "srvwatch_stub_requests", "Queries the DNS stub received.", labels=["proto"]
        )
        requests.add_metric(["udp"], stats["stub_requests_udp"])
        requests.add_metric(["tcp"], stats["stub_requests_tcp"])
        yield requests

        responses = CounterMetricFamily(
            "srvwatch_stub_responses", "Replies the DNS stub sent, by rcode.", labels=["rcode"]
        )
        for rcode, count in sorted(resolver.stub_responses().items()):
            responses.add_metric([_rcode_text(rcode)], count)
        yield responses

        updates_help = "Updates published by watches."
        if info is None:
            yield CounterMetricFamily(
                "srvwatch_watch_updates", updates_help, value=stats["updates_emitted"]
            )
        else:
            updates = CounterMetricFamily(
                "srvwatch_watch_updates", updates_help + " By configured watch.", labels=["name"]
            )
            for name, count in sorted(info.watch_updates.items()):
                updates.add_metric([name], count)
            yield updates

        open_sockets = stats["sockets_opened"] - stats["sockets_closed"]
        yield GaugeMetricFamily(
            "srvwatch_open_sockets",
            "Sockets open now: the resolver's upstream sockets, and the sidecar's listeners.",
            value=open_sockets + (info.open_sockets if info is not None else 0),
        )

        if info is not None:
            yield CounterMetricFamily(
                "srvwatch_reload", "Config reloads applied.", value=info.reloads
            )
            yield CounterMetricFamily(
                "srvwatch_reload_failed",
                "Config reloads rejected; the running config went on.",
                value=info.reload_failures,
            )
            config = GaugeMetricFamily(
                "srvwatch_config_info",
                "A hash of the running config file, as a label; always 1.",
                labels=["hash"],
            )
            config.add_metric([info.config_digest], 1)
            yield config
            for metric, by_name, text in (
                ("srvwatch_output_writes", info.output_writes, "Output files replaced."),
                (
                    "srvwatch_output_write_failures",
                    info.output_write_failures,
                    "Output files that could not be written; the last ones stay.",
                ),
            ):
                family = CounterMetricFamily(
                    metric, text + " By configured watch.", labels=["name"]
                )
                for name, count in sorted(by_name.items()):
                    family.add_metric([name], count)
                yield family


def _rcode_text(rcode: int) -> str:
    try:
        return dns.rcode.to_text(dns.rcode.Rcode(rcode))
    except ValueError:
        return str(rcode)
