"""httpx resolving through srvwatch, by a transport: httpx has no resolver hook of its own.

The transport is httpcore's connection pool with a network backend that asks
srvwatch where to connect. The pool, its keys and TLS never see the
addresses: they keep the URL's host, so connection reuse, the ``Host``
header, SNI and certificate checks are what they would be without srvwatch.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

from .. import ResolveError
from .. import Resolver as _SrvwatchResolver
from . import Targets

__all__ = ["AsyncTransport", "NetworkBackend"]


class _Unresolved(httpcore.ConnectError):
    """A failed lookup; keeps the srvwatch error, which httpcore's pool drops from the chain."""

    def __init__(self, host: str, error: ResolveError | LookupError) -> None:
        super().__init__(f"cannot resolve {host}: {error}")
        self.error = error


class NetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves hosts with srvwatch and fails over.

    Every new connection asks :class:`srvwatch.contrib.Targets` for the
    addresses to try (for an SRV service: a fresh RFC 2782 weighted order)
    and connects to the first that accepts. ``timeout`` applies to each
    attempt. The byte streams are those of httpcore's anyio backend, which
    runs on asyncio and trio alike.
    """

    def __init__(self, targets: Targets, backend: httpcore.AsyncNetworkBackend | None = None):
        self.targets = targets
        self._backend = backend if backend is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            pairs = await self.targets.resolve(host, port)
        except (ResolveError, LookupError) as exc:
            raise _Unresolved(host, exc) from exc
        failures: list[httpcore.ConnectError | httpcore.ConnectTimeout] = []
        for address, target_port in pairs:
            try:
                return await self._backend.connect_tcp(
                    address,
                    target_port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failures.append(exc)
        tried = ", ".join(
            f"{a}:{p} ({e or type(e).__name__})" for (a, p), e in zip(pairs, failures, strict=True)
        )
        error = (
            httpcore.ConnectTimeout
            if all(isinstance(e, httpcore.ConnectTimeout) for e in failures)
            else httpcore.ConnectError
        )
        raise error(f"cannot connect to {host}: tried {tried}") from failures[-1]

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._backend.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def _httpx_error(exc: Exception) -> type[httpx.HTTPError] | None:
    """The httpx error named like the most specific httpcore class ``exc`` is (they pair up)."""
    for cls in type(exc).__mro__:
        if getattr(httpcore, cls.__name__, None) is cls:
            mapped = getattr(httpx, cls.__name__, None)
            if isinstance(mapped, type) and issubclass(mapped, httpx.HTTPError):
                return mapped
    return None


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpx callers catch ``httpx.HTTPError``; the httpcore error stays as the cause."""
    try:
        yield
    except Exception as exc:
        mapped = _httpx_error(exc)
        if mapped is None:
            raise
        if isinstance(exc, _Unresolved) and exc.__cause__ is None:
            exc.__cause__ = exc.error  # the pool re-raised it ``from None``
        raise mapped(str(exc)) from exc


class _Body(httpx.AsyncByteStream):
    """httpcore's response body as an httpx stream, with its errors mapped too."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class AsyncTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose connections go where srvwatch says.

    ``services`` maps a URL host to an SRV name, as for the aiohttp
    adapter: each new connection to that host picks an endpoint by RFC 2782
    priority and weight, connects to its SRV port, and fails over to the
    next endpoint when the connect fails. Other hosts resolve with A and
    AAAA. ``pool_options`` go to ``httpcore.AsyncConnectionPool``
    (``ssl_context``, ``max_connections``, ``max_keepalive_connections``,
    ``keepalive_expiry``, ``http2``, ``retries``, ...).

    ``aclose()`` closes the pool's connections but not the srvwatch
    resolver, which belongs to whoever passed it in.
    """

    def __init__(
        self,
        resolver: _SrvwatchResolver,
        services: Mapping[str, str] | None = None,
        *,
        rng: random.Random | None = None,
        **pool_options: Any,
    ) -> None:
        if "network_backend" in pool_options:
            raise ValueError("AsyncTransport makes its own network_backend; do not pass one")
        self.targets = Targets(resolver, services, rng=rng)
        self.pool = httpcore.AsyncConnectionPool(
            network_backend=NetworkBackend(self.targets), **pool_options
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self.pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()
