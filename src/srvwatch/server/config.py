"""The sidecar's TOML config file: read, validated, and every error pinned to one key.

A config mistake must stop the sidecar at start (or be refused on reload) with
a message that names the file, the key path as the user wrote it
(``stub.listen[0]``) and the bad value: never a silent default, never a
listener on an address nobody meant. msgspec checks the shape (unknown keys,
types) and gives each error its path; the meaning of each value (addresses,
networks, names, the policy's numbers) is checked here, by the same parsers
the library uses.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import math
import os
import re
import reprlib
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import msgspec

from ..address import AddressError, ListenAddress, parse_listen, parse_nameserver
from ..names import absolute_name
from ..policy import Policy
from .stub import DEFAULT_ALLOW

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "AdminConfig",
    "Config",
    "ConfigError",
    "StubConfig",
    "WatchConfig",
    "WatchType",
    "load_config",
    "parse_config",
    "read_config_bytes",
]

WatchType = Literal["SRV", "A", "AAAA"]

DEFAULT_STUB_LISTEN = ListenAddress("127.0.0.1", 5353)
DEFAULT_ADMIN_LISTEN = ListenAddress("127.0.0.1", 8181)
MAX_FILE_SIZE = 1 << 20
"""A config file is a few hundred bytes; a huge one is a mistake (or /dev/zero)."""
MAX_CACHE_SIZE = 10_000_000
_WATCH_TYPES: tuple[WatchType, ...] = ("SRV", "A", "AAAA")
_NO_VALUE: Any = object()
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_MSGSPEC_ERROR = re.compile(r"(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.S)
_MSGSPEC_PATH = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_MSGSPEC_TYPES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "array": "a list",
    "object": "a table",
    "date": "a date",
    "time": "a time",
    "datetime": "a date-time",
}
_POLICY_FIELDS = tuple(f for f in fields(Policy) if f.name != "rng")
_POLICY_NAMES = frozenset(f.name for f in _POLICY_FIELDS)
_POLICY_ELSEWHERE = {"cache_size": "stub.cache_size"}
"""Policy fields the file sets under another key, so one number has one place."""
_EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()

_short = reprlib.Repr()
_short.maxstring = 80
_short.maxother = 80
_short.maxlist = _short.maxdict = 6


class ConfigError(ValueError):
    """A config that cannot run: ``file``, the key ``path`` (``stub.listen[0]``, empty for
    the whole file) and the bad ``value`` (None when the key is missing).

    ``str()`` is one line for logs and stderr:
    ``srvwatch.toml: stub.listen[0]: port must be 1-65535, got 99999 ('127.0.0.1:99999')``.
    """

    def __init__(
        self,
        file: str | None,
        path: str,
        message: str,
        value: object = _NO_VALUE,
        *,
        quoted: bool = False,
    ) -> None:
        self.file = file
        self.path = path
        self.message = message
        self.value = None if value is _NO_VALUE else value
        text = f"{path}: {message}" if path else message
        if value is not _NO_VALUE and not quoted:  # quoted: the message shows it already
            text += f" ({_short.repr(value)})"
        super().__init__(f"{file}: {text}" if file else text)


@dataclass(frozen=True, slots=True)
class StubConfig:
    """``[stub]``: where the DNS stub listens, whom it answers, how much it remembers."""

    listen: tuple[ListenAddress, ...] = (DEFAULT_STUB_LISTEN,)
    allow: tuple[str, ...] = DEFAULT_ALLOW
    """Client networks; everyone else gets REFUSED (never an open resolver)."""
    cache_size: int = 10_000
    """The record store's LRU bound (the policy's ``cache_size``)."""


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """``[admin]``: the HTTP server for probes, metrics and endpoints."""

    listen: ListenAddress = DEFAULT_ADMIN_LISTEN
    lame_duck: float = 5.0
    """Seconds ``/ready`` says 503 while DNS is still served, before listeners close."""


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """One ``[[watch]]``: a name kept fresh, and the files written on every change."""

    name: str
    type: WatchType = "SRV"
    json_file: str | None = None
    eds_file: str | None = None
    cluster: str | None = None
    """The EDS ``cluster_name``; None: the name."""
    port: int | None = None
    """The port of an A/AAAA watch's endpoints (EDS needs one; SRV records carry theirs)."""


@dataclass(frozen=True, slots=True)
class Config:
    """A validated config: what ``srvwatch serve`` runs with.

    Built by :func:`load_config` or :func:`parse_config` (the defaults are
    ``Config()``); command-line flags are laid over it with :meth:`with_overrides`.
    """

    upstreams: tuple[str, ...] | None = None
    """Nameservers as ``host:port``; None: those of /etc/resolv.conf."""
    policy: Policy = field(default_factory=Policy)
    stub: StubConfig = StubConfig()
    admin: AdminConfig = AdminConfig()
    watch: tuple[WatchConfig, ...] = ()
    source: str | None = None
    """The file it came from; None for the built-in defaults."""
    digest: str = _EMPTY_DIGEST
    """sha256 hex of the file's bytes: a reload with the same digest changes nothing."""

    def with_overrides(
        self,
        *,
        listen: Sequence[str] | None = None,
        admin: str | None = None,
        upstreams: Sequence[str] | None = None,
        allow: Sequence[str] | None = None,
        watch: Sequence[str] | None = None,
        min_ttl: float | None = None,
    ) -> Config:
        """This config with command-line flags laid over it: each flag given replaces its key.

        ``watch`` names are SRV watches without output files. A ``min_ttl``
        above ``max_ttl`` raises ``max_ttl`` with it. Errors name the flag.
        """
        check = _Checker(None, {})
        stub, admin_config, policy = self.stub, self.admin, self.policy
        if listen is not None:
            stub = replace(stub, listen=check.listen_list(list(listen), lambda i: "--listen"))
        if allow is not None:
            stub = replace(stub, allow=check.allow(list(allow), lambda i: "--allow"))
        if admin is not None:
            admin_config = replace(admin_config, listen=check.listen(admin, "--admin"))
        check.no_overlap(
            stub.listen,
            admin_config.listen,
            (lambda i: "--listen") if listen is not None else (lambda i: f"stub.listen[{i}]"),
            "--admin" if admin is not None else "admin.listen",
        )
        new_upstreams = self.upstreams
        if upstreams is not None:
            new_upstreams = check.upstreams(list(upstreams), lambda i: "--upstream")
        if new_upstreams is not None:
            check.not_itself(
                new_upstreams,
                stub.listen,
                (lambda i: "--upstream")
                if upstreams is not None
                else (lambda i: f"upstreams[{i}]"),
                "--listen" if listen is not None else "stub.listen",
            )
        watches = self.watch
        if watch is not None:
            watches = check.watches([{"name": name} for name in watch], lambda i, key: "--watch")
        if min_ttl is not None:
            try:
                policy = replace(policy, min_ttl=min_ttl, max_ttl=max(policy.max_ttl, min_ttl))
            except (ValueError, TypeError) as exc:
                check.fail("--min-ttl", _policy_message(str(exc)), min_ttl, quoted=True)
        return replace(
            self,
            upstreams=new_upstreams,
            policy=policy,
            stub=stub,
            admin=admin_config,
            watch=watches,
        )

    def summary(self) -> str:
        """One line for ``check-config`` and the reload log."""
        listeners = ", ".join(str(a) for a in self.stub.listen)
        upstreams = ", ".join(self.upstreams) if self.upstreams else "/etc/resolv.conf"
        watches = f"{len(self.watch)} watch{'es' if len(self.watch) != 1 else ''}"
        return (
            f"{self.source or 'defaults'}: ok: stub {listeners}; admin {self.admin.listen}; "
            f"upstreams {upstreams}; {watches}; sha256 {self.digest}"
        )


def read_config_bytes(path: str | os.PathLike[str]) -> bytes:
    """A config file's bytes, at most one past :data:`MAX_FILE_SIZE`; a :class:`ConfigError`
    for anything but a readable regular file.

    Opened without blocking and checked before reading, so a FIFO or a device
    swapped in at the path (or a symlink to ``/dev/zero``) can neither hang the
    reader nor fill its memory.
    """
    source = os.fspath(path)
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read the file: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO, socket or device"
            raise ConfigError(source, "", f"not a regular file ({kind})")
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read the file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; every failure is a :class:`ConfigError`."""
    source = os.fspath(path)
    data = read_config_bytes(source)
    if len(data) > MAX_FILE_SIZE:
        raise ConfigError(source, "", f"larger than {MAX_FILE_SIZE} bytes: not a config file")
    return parse_config(data, source)


def parse_config(data: bytes, source: str) -> Config:
    """Validate a config file's bytes; ``source`` names it in errors."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_config: data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            source, "", f"not UTF-8 text: byte {data[exc.start]:#04x} at offset {exc.start}"
        ) from None
    try:
        document = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(source, "", "not valid TOML: nested too deeply") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError, with its line and column
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    check = _Checker(source, document)
    try:
        raw = msgspec.convert(document, _File)
    except msgspec.ValidationError as exc:
        check.shape_error(str(exc))
    return check.config(raw, hashlib.sha256(data).hexdigest())


# -- the file's shape, for msgspec ----------------------------------------------------


def _policy_table() -> type[msgspec.Struct]:
    """``[policy]``: every Policy field but ``rng``, each optional (None: Policy's default)."""
    return msgspec.defstruct(
        "PolicyTable",
        [(f.name, (int if type(f.default) is int else float) | None, None) for f in _POLICY_FIELDS],
        forbid_unknown_fields=True,
        frozen=True,
    )


if TYPE_CHECKING:
    _PolicyTable = msgspec.Struct
else:
    _PolicyTable = _policy_table()


class _Stub(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    listen: list[str] | None = None
    allow: list[str] | None = None
    cache_size: int | None = None


class _Admin(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    listen: str | None = None
    lame_duck: float | None = None


class _Watch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    type: str = "SRV"
    json_file: str | None = None
    eds_file: str | None = None
    cluster: str | None = None
    port: int | None = None


class _File(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    upstreams: list[str] | None = None
    policy: _PolicyTable = msgspec.field(default_factory=_PolicyTable)
    stub: _Stub = msgspec.field(default_factory=_Stub)
    admin: _Admin = msgspec.field(default_factory=_Admin)
    watch: list[_Watch] = msgspec.field(default_factory=list)


_KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "": _File.__struct_fields__,
    "policy": _PolicyTable.__struct_fields__,
    "stub": _Stub.__struct_fields__,
    "admin": _Admin.__struct_fields__,
    "watch[]": _Watch.__struct_fields__,
}


# -- meaning --------------------------------------------------------------------------


def _policy_message(text: str) -> str:
    return text.replace("Policy.", "")


def _user_path(tokens: Sequence[str | int]) -> str:
    parts: list[str] = []
    for token in tokens:
        if isinstance(token, int):
            parts.append(f"[{token}]")
        else:
            key = token if _BARE_KEY.fullmatch(token) else json.dumps(token, ensure_ascii=False)
            parts.append(f".{key}" if parts else key)
    return "".join(parts)


def _overlap_key(address: ListenAddress) -> tuple[str, int]:
    host = "127.0.0.1" if address.host == "localhost" else address.host or "0.0.0.0"
    mapped = ipaddress.ip_address(host)
    if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
        host = str(mapped.ipv4_mapped)  # [::ffff:127.0.0.1] binds 127.0.0.1 too
    return host, address.port


def _overlaps(a: ListenAddress, b: ListenAddress) -> bool:
    """Whether two listeners would fight over one port: same host, or a wildcard of its family.

    ``[::]`` is a wildcard of both families: Linux binds it dual-stack (bindv6only=0).
    """
    (host_a, port_a), (host_b, port_b) = _overlap_key(a), _overlap_key(b)
    if port_a != port_b:
        return False
    if host_a == host_b or "::" in (host_a, host_b):
        return True
    v6_a, v6_b = ":" in host_a, ":" in host_b
    return v6_a == v6_b and "0.0.0.0" in (host_a, host_b)


class _Checker:
    """Turns the shape msgspec checked into a :class:`Config`, naming each bad key."""

    def __init__(self, source: str | None, document: dict[str, Any]) -> None:
        self.source = source
        self.document = document

    def fail(
        self, path: str, message: str, value: object = _NO_VALUE, *, quoted: bool = False
    ) -> NoReturn:
        raise ConfigError(self.source, path, message, value, quoted=quoted)

    def _lookup(self, tokens: Sequence[str | int]) -> object:
        value: object = self.document
        for token in tokens:
            try:
                value = value[token]  # type: ignore[index]
            except (KeyError, IndexError, TypeError):
                return _NO_VALUE
        return value

    def shape_error(self, text: str) -> NoReturn:
        """A msgspec error as the user would say it: their key path, their value."""
        match = _MSGSPEC_ERROR.fullmatch(text)
        assert match is not None  # the pattern matches any text
        message, at = match["message"], match["path"] or ""
        tokens: list[str | int] = [
            m[1] if m[1] is not None else int(m[2]) for m in _MSGSPEC_PATH.finditer(at)
        ]
        unknown = re.fullmatch(r"Object contains unknown field `(.*)`", message, re.S)
        missing = re.fullmatch(r"Object missing required field `(.*)`", message, re.S)
        if unknown:
            key = unknown[1]
            table = ".".join(t for t in tokens if isinstance(t, str))
            if tokens and isinstance(tokens[-1], int):
                table += "[]"
            known = _KNOWN_KEYS.get(table, ())
            if not table:
                where = "the top level"
            elif table.endswith("[]"):
                where = f"[[{table.removesuffix('[]')}]]"
            else:
                where = f"[{table}]"
            hint = f"; {where} takes {', '.join(known)}" if known else ""
            if table == "policy" and key == "rng":
                hint = "; the policy's random source is not configurable"
            tokens.append(key)
            self.fail(_user_path(tokens), f"unknown key{hint}", self._lookup(tokens))
        if missing:
            tokens.append(missing[1])
            self.fail(_user_path(tokens), "missing, and required")
        message = message.replace(" | null", "")
        message = re.sub(
            r"`(\w+)`", lambda m: _MSGSPEC_TYPES.get(m[1], f"`{m[1]}`"), message
        ).replace("Expected", "expected", 1)
        self.fail(_user_path(tokens), message, self._lookup(tokens))

    # -- addresses and networks -----------------------------------------------------------

    def listen(self, text: str, path: str) -> ListenAddress:
        try:
            return parse_listen(text, path)
        except AddressError as exc:
            self.fail(path, exc.reason, text)
        except ValueError as exc:  # not a string: only from a caller that skipped msgspec
            self.fail(path, str(exc), text)

    def listen_list(self, items: list[str], path: Any) -> tuple[ListenAddress, ...]:
        if not items:
            self.fail(path(None), "must list at least one address", items)
        addresses: list[ListenAddress] = []
        for i, text in enumerate(items):
            address = self.listen(text, path(i))
            for j, earlier in enumerate(addresses):
                if _overlaps(earlier, address):
                    message = f"{text!r} overlaps {path(j)} {str(earlier)!r}"
                    self.fail(path(i), message, text, quoted=True)
            addresses.append(address)
        return tuple(addresses)

    def no_overlap(
        self, stub: Sequence[ListenAddress], admin: ListenAddress, stub_path: Any, admin_path: str
    ) -> None:
        for i, address in enumerate(stub):
            if _overlaps(address, admin):
                self.fail(
                    admin_path,
                    f"{str(admin)!r} overlaps {stub_path(i)} {str(address)!r}",
                    str(admin),
                    quoted=True,
                )

    def not_itself(
        self, upstreams: Sequence[str], stub: Sequence[ListenAddress], path: Any, stub_path: str
    ) -> None:
        """An upstream that is the stub itself would send every miss round in a loop."""
        for i, text in enumerate(upstreams):
            server = parse_nameserver(text)
            for j, address in enumerate(stub):
                if _overlaps(ListenAddress(server.host, server.port), address):
                    self.fail(
                        path(i),
                        f"{text} is the stub itself ({stub_path}[{j}] {str(address)!r}): "
                        "queries would loop",
                        text,
                        quoted=True,
                    )

    def upstreams(self, items: list[str], path: Any) -> tuple[str, ...]:
        if not items:
            self.fail(path(None), "must list at least one nameserver (leave it out for the "
                      "nameservers of /etc/resolv.conf)", items)  # fmt: skip
        servers: dict[str, int] = {}
        for i, text in enumerate(items):
            try:
                server = str(parse_nameserver(text, path(i)))
            except AddressError as exc:
                self.fail(path(i), exc.reason, text)
            except ValueError as exc:
                self.fail(path(i), str(exc), text)
            if server in servers:
                self.fail(path(i), f"the same server as {path(servers[server])} ({server})", text)
            servers[server] = i
        return tuple(servers)

    def allow(self, items: list[str], path: Any) -> tuple[str, ...]:
        if not items:
            self.fail(path(None), "must list at least one network (clients outside get "
                      "REFUSED)", items)  # fmt: skip
        networks: list[str] = []
        for i, text in enumerate(items):
            try:
                network = ipaddress.ip_network(text, strict=False)
            except ValueError:
                self.fail(path(i), "not an IP network (like 127.0.0.0/8 or ::1/128)", text)
            try:
                ipaddress.ip_network(text)  # strict: 10.0.0.1/8 is a typo more often than not
            except ValueError:
                self.fail(path(i), f"has host bits set: write {network} if that is meant", text)
            networks.append(str(network))
        return tuple(dict.fromkeys(networks))

    # -- the tables ------------------------------------------------------------------------

    def policy(self, table: msgspec.Struct, cache_size: int) -> Policy:
        given = {
            name: value
            for name in table.__struct_fields__
            if (value := getattr(table, name)) is not None
        }
        for name, elsewhere in _POLICY_ELSEWHERE.items():
            if name in given:
                self.fail(f"policy.{name}", f"set it as {elsewhere}", given[name])
        try:
            return Policy(**given, cache_size=cache_size)
        except ValueError as exc:
            self.policy_error(_policy_message(str(exc)), given)

    def policy_error(self, message: str, given: dict[str, Any]) -> NoReturn:
        """Blame the key the file set: ``min_ttl = 600`` breaks the default ``max_ttl``."""
        mentioned = [word for word in re.findall(r"\w+", message) if word in _POLICY_NAMES] or [""]
        key = next((word for word in mentioned if word in given), mentioned[0])
        if message.startswith(f"{key} must"):
            message = message.removeprefix(f"{key} ")
        path = f"policy.{key}" if key else "policy"
        self.fail(path, message, given.get(key, _NO_VALUE), quoted=True)

    def stub(self, raw: _Stub) -> StubConfig:
        default = StubConfig()
        listen = default.listen
        if raw.listen is not None:
            listen = self.listen_list(raw.listen, lambda i: "stub.listen" + _index(i))
        allow = default.allow
        if raw.allow is not None:
            allow = self.allow(raw.allow, lambda i: "stub.allow" + _index(i))
        cache_size = default.cache_size
        if raw.cache_size is not None:
            cache_size = raw.cache_size
            if not 1 <= cache_size <= MAX_CACHE_SIZE:
                self.fail("stub.cache_size", f"must be 1-{MAX_CACHE_SIZE}", cache_size)
        return StubConfig(listen, allow, cache_size)

    def admin(self, raw: _Admin) -> AdminConfig:
        default = AdminConfig()
        listen = default.listen
        if raw.listen is not None:
            listen = self.listen(raw.listen, "admin.listen")
        lame_duck = default.lame_duck
        if raw.lame_duck is not None:
            lame_duck = raw.lame_duck
            if not (math.isfinite(lame_duck) and lame_duck >= 0):
                self.fail("admin.lame_duck", "must be a finite number of seconds >= 0", lame_duck)
        return AdminConfig(listen, lame_duck)

    def watches(
        self, items: Sequence[_Watch | dict[str, Any]], path: Callable[[int, str], str]
    ) -> tuple[WatchConfig, ...]:
        """``path(i, key)`` names watch ``i``'s ``key``: ``watch[1].eds_file``, or a flag."""
        seen: dict[tuple[str, str], int] = {}
        files: dict[str, str] = {}
        watches: list[WatchConfig] = []
        for i, item in enumerate(items):
            raw = item if isinstance(item, _Watch) else _Watch(**item)
            watch = self.watch(raw, functools.partial(path, i))
            # The sidecar keeps one watch per name and type, whatever its case or final dot.
            key = (absolute_name(watch.name, "name"), watch.type)
            if key in seen:
                message = f"{watch.name} {watch.type} is watched by {path(seen[key], 'name')} too"
                self.fail(path(i, "name"), message, raw.name)
            seen[key] = i
            for kind in ("json_file", "eds_file"):
                target = getattr(watch, kind)
                if target is None:
                    continue
                normal = os.path.normpath(os.path.abspath(target))
                if normal in files:
                    self.fail(path(i, kind), f"{files[normal]} writes this file too", target)
                files[normal] = path(i, kind)
            watches.append(watch)
        return tuple(watches)

    def watch(self, raw: _Watch, path: Callable[[str], str]) -> WatchConfig:
        try:
            absolute_name(raw.name, "name")
        except ValueError as exc:
            self.fail(path("name"), str(exc).removeprefix(f"name {raw.name!r} is "), raw.name)
        rdtype = raw.type.upper()
        if rdtype not in _WATCH_TYPES:
            self.fail(path("type"), "must be SRV, A or AAAA", raw.type)
        for kind in ("json_file", "eds_file"):
            target = getattr(raw, kind)
            if target is None:
                continue
            if not target.strip() or target.strip() != target or "\0" in target:
                self.fail(path(kind), "not a usable file path", target)
            if target.endswith(("/", os.sep)) or os.path.isdir(target):
                self.fail(path(kind), "names a directory, not a file", target)
        if raw.cluster is not None:
            if raw.eds_file is None:
                self.fail(path("cluster"), "only means something with eds_file", raw.cluster)
            if not raw.cluster.strip():
                self.fail(path("cluster"), "must not be empty", raw.cluster)
        if raw.port is not None:
            if rdtype == "SRV":
                self.fail(
                    path("port"),
                    "only for A and AAAA watches (SRV records carry their own ports)",
                    raw.port,
                )
            if not 1 <= raw.port <= 65_535:
                self.fail(path("port"), "must be 1-65535", raw.port)
        elif rdtype != "SRV" and raw.eds_file is not None:
            self.fail(
                path("port"),
                f"required for an {rdtype} watch with eds_file: Envoy endpoints need a port",
            )
        return WatchConfig(raw.name, rdtype, raw.json_file, raw.eds_file, raw.cluster, raw.port)

    def config(self, raw: _File, digest: str) -> Config:
        upstreams = None
        if raw.upstreams is not None:
            upstreams = self.upstreams(raw.upstreams, lambda i: "upstreams" + _index(i))
        stub = self.stub(raw.stub)
        admin = self.admin(raw.admin)
        self.no_overlap(stub.listen, admin.listen, lambda i: f"stub.listen[{i}]", "admin.listen")
        if upstreams is not None:
            self.not_itself(upstreams, stub.listen, lambda i: f"upstreams[{i}]", "stub.listen")
        return Config(
            upstreams=upstreams,
            policy=self.policy(raw.policy, stub.cache_size),
            stub=stub,
            admin=admin,
            watch=self.watches(raw.watch, lambda i, key: f"watch[{i}].{key}"),
            source=self.source,
            digest=digest,
        )


def _index(i: int | None) -> str:
    return "" if i is None else f"[{i}]"
