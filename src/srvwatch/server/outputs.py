"""What the sidecar shows of a watch: one JSON document per update, and (to come) files for proxies.

The same document is the body of ``/endpoints``, each ``data:`` line of
``/watch`` and the content of a watch's ``json_file``, so every consumer sees
one shape.
"""

from __future__ import annotations

from typing import Any

from ..endpoints import Endpoint, Update

__all__ = ["update_document"]


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
