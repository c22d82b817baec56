"""Host-and-port text as users and config files write it: nameservers and listen addresses.

One parser per kind of address, each strict: a misread address fails loudly at
start-up with an error naming the entry, never silently as a default port or
an unexpected interface (a readiness port that silently failed to start once
took a whole cluster's DNS down).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "AddressError",
    "ListenAddress",
    "Nameserver",
    "format_hostport",
    "parse_listen",
    "parse_nameserver",
    "parse_nameservers",
]

_MAX_PORT = 65_535
_LISTEN_FORMS = "use HOST:PORT, [V6]:PORT, :PORT or localhost:PORT"


class AddressError(ValueError):
    """A malformed address: ``what`` names the entry (``stub.listen[0]``), ``entry`` is the
    text as given and ``reason`` what is wrong with it, so a config error can put each
    part where its reader looks for it."""

    def __init__(self, what: str, entry: str, reason: str) -> None:
        super().__init__(f"{what} {entry!r}: {reason}")
        self.what = what
        self.entry = entry
        self.reason = reason


def format_hostport(host: str, port: int) -> str:
    """``host:port``, with IPv6 in brackets so the port stays readable: ``[::1]:53``."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _parse_port(port_text: str, what: str, entry: str, *, minimum: int = 1) -> int:
    # str.isdigit() accepts "²" and Arabic-Indic digits, and int() then reads some of
    # them as numbers: only ASCII digits are a port. Five digits at most also keeps
    # int() away from its huge-string limit, whose error names nothing.
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise AddressError(
            what, entry, f"port must be ASCII digits {minimum}-{_MAX_PORT}, got {port_text!r}"
        )
    port = int(port_text)
    if not minimum <= port <= _MAX_PORT:
        raise AddressError(what, entry, f"port must be {minimum}-{_MAX_PORT}, got {port}")
    return port


def _split_brackets(text: str, what: str, entry: str) -> tuple[str, str | None]:
    """``[v6]`` or ``[v6]:port`` into the address and the port text (None: no port given)."""
    end = text.find("]")
    if end < 0:
        raise AddressError(what, entry, "missing ']' after IPv6 address")
    host, rest = text[1:end], text[end + 1 :]
    if not rest:
        return host, None
    if not rest.startswith(":"):
        raise AddressError(what, entry, "expected ':port' after ']'")
    return host, rest[1:]


def _ipv6_in_brackets(host: str, what: str, entry: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(what, entry, f"{host!r} is not an IPv6 address") from None
    if address.version != 6:
        raise AddressError(what, entry, "brackets are only for IPv6 addresses")
    return address.compressed


@dataclass(frozen=True, slots=True)
class Nameserver:
    """An upstream nameserver: an IP literal and a port."""

    host: str
    port: int = 53

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return format_hostport(self.host, self.port)


def parse_nameserver(text: str, what: str = "nameserver") -> Nameserver:
    """Parse ``"host"``, ``"host:port"``, ``"[v6]"`` or ``"[v6]:port"``; host must be an IP literal.

    A bare IPv6 address (``"2001:db8::"``) takes the default port: with more
    than one colon and no brackets there is no port to split off. Anything
    else is a ValueError naming the entry.
    """
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string like '127.0.0.1:53', got {text!r}")
    raw = text.strip()
    port_text: str | None = None
    if raw.startswith("["):
        host, port_text = _split_brackets(raw, what, text)
        return Nameserver(
            _ipv6_in_brackets(host, what, text),
            53 if port_text is None else _parse_port(port_text, what, text),
        )
    host = raw
    if raw.count(":") == 1:
        host, port_text = raw.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(
            what,
            text,
            f"{host!r} is not an IP address "
            "(use 'host', 'host:port' or '[v6]:port' with a literal address)",
        ) from None
    port = 53 if port_text is None else _parse_port(port_text, what, text)
    return Nameserver(address.compressed, port)


def parse_nameservers(value: object, what: str = "nameservers") -> tuple[Nameserver, ...]:
    """A non-empty list of nameserver entries, parsed, duplicates dropped, order kept.

    A lone string is rejected rather than read as a list of characters.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{what} must be a list of strings like '127.0.0.1:53', got {value!r}")
    servers = tuple(
        dict.fromkeys(parse_nameserver(item, f"{what}[{i}]") for i, item in enumerate(value))
    )
    if not servers:
        raise ValueError(f"{what} must not be empty")
    return servers


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where a server listens: one parsed ``--listen`` or ``listen =`` entry.

    ``host`` is an IP literal, ``"localhost"``, or ``""`` for every interface
    (``:PORT``, as Go servers read it).
    """

    host: str
    port: int

    @property
    def bind_host(self) -> str:
        """The IP to bind: ``localhost`` is 127.0.0.1, ``:PORT`` every IPv4 interface (0.0.0.0)."""
        if self.host == "localhost":
            return "127.0.0.1"
        return self.host or "0.0.0.0"

    def __str__(self) -> str:
        return format_hostport(self.host, self.port)


def parse_listen(text: str, what: str = "listen", *, ephemeral: bool = False) -> ListenAddress:
    """Parse ``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``localhost:PORT``; the port is required.

    Port 0 (the system picks one) needs ``ephemeral=True``: a configured
    listener on a port nobody knows is one nobody can reach. ``what`` names
    the entry in errors, for example ``stub.listen[0]``.
    """
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string like '127.0.0.1:8181', got {text!r}")
    if not text or text.strip() != text:
        raise AddressError(what, text, f"not an address ({_LISTEN_FORMS})")
    minimum = 0 if ephemeral else 1
    if text.startswith("["):
        host, port_text = _split_brackets(text, what, text)
        if port_text is None:
            raise AddressError(what, text, f"missing port ({_LISTEN_FORMS})")
        return ListenAddress(
            _ipv6_in_brackets(host, what, text),
            _parse_port(port_text, what, text, minimum=minimum),
        )
    host, colon, port_text = text.rpartition(":")
    if not colon:
        if text.isascii() and text.isdigit():
            # A port alone is ambiguous (every interface, or loopback?): say both spellings.
            raise AddressError(
                what,
                text,
                f"missing host: write ':{text}' for every interface "
                f"or '127.0.0.1:{text}' for loopback only",
            )
        raise AddressError(what, text, f"missing port ({_LISTEN_FORMS})")
    if not host:
        return ListenAddress("", _parse_port(port_text, what, text, minimum=minimum))
    if host.lower() == "localhost":
        return ListenAddress("localhost", _parse_port(port_text, what, text, minimum=minimum))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(
            what, text, f"{host!r} is not an IP address or localhost ({_LISTEN_FORMS})"
        ) from None
    if address.version == 6:
        raise AddressError(what, text, f"an IPv6 address needs brackets ({_LISTEN_FORMS})")
    return ListenAddress(address.compressed, _parse_port(port_text, what, text, minimum=minimum))
