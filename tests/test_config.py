"""The sidecar's config file: every form a user may write, parsed or refused with its key named."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srvwatch import Policy
from srvwatch.address import ListenAddress
from srvwatch.cli import _parser
from srvwatch.server.config import (
    AdminConfig,
    Config,
    ConfigError,
    StubConfig,
    WatchConfig,
    load_config,
    parse_config,
)
from srvwatch.server.stub import DEFAULT_ALLOW

SRC = Path(__file__).resolve().parents[1] / "src"
DOCS = Path(__file__).resolve().parents[1] / "docs"

DESIGN_EXAMPLE = b"""\
upstreams = ["10.96.0.10:53"]        # default: nameservers of /etc/resolv.conf
[policy]                             # the fields of srvwatch.Policy
min_ttl = 5.0
[stub]
listen = ["127.0.0.1:5353"]          # UDP and TCP on each
allow = ["127.0.0.0/8", "::1/128"]   # clients outside get REFUSED: never an open resolver
cache_size = 10000
[admin]
listen = "127.0.0.1:8181"
lame_duck = 5.0                      # seconds /ready says 503 before listeners close on SIGTERM
[[watch]]
name = "_http._tcp.api.svc.cluster.local"
type = "SRV"                         # SRV, A or AAAA
json_file = "/run/srvwatch/api.json" # optional, rewritten atomically on every change
eds_file = "/etc/envoy/eds/api.json" # optional, Envoy ClusterLoadAssignment
cluster = "api"                      # EDS cluster_name; default: the name
"""

GOOD_LISTEN = [
    (":8181", ListenAddress("", 8181)),
    ("[::1]:8181", ListenAddress("::1", 8181)),
    ("127.0.0.1:8181", ListenAddress("127.0.0.1", 8181)),
    ("localhost:8181", ListenAddress("localhost", 8181)),
    ("0.0.0.0:53", ListenAddress("0.0.0.0", 53)),
    ("[::]:53", ListenAddress("::", 53)),
    ("10.1.2.3:65535", ListenAddress("10.1.2.3", 65535)),
]

# (what the user wrote, what the error must say after "KEY: ")
BAD_LISTEN = [
    ("8181", "missing host: write ':8181' for every interface or '127.0.0.1:8181' for loopback"),
    ("127.0.0.1", "missing port (use HOST:PORT, [V6]:PORT, :PORT or localhost:PORT)"),
    ("127.0.0.1:99999", "port must be 1-65535, got 99999"),
    ("[::1]8181", "expected ':port' after ']'"),
    ("[::1]", "missing port"),
    ("localhost", "missing port"),
    ("127.0.0.1:0", "port must be 1-65535, got 0"),
    ("127.0.0.1:", "port must be ASCII digits 1-65535, got ''"),
    (":", "port must be ASCII digits"),
    ("::1:8181", "an IPv6 address needs brackets"),
    ("[127.0.0.1]:53", "brackets are only for IPv6 addresses"),
    ("example.com:53", "'example.com' is not an IP address or localhost"),
    ("my-host:53", "'my-host' is not an IP address or localhost"),
    ("256.0.0.1:53", "'256.0.0.1' is not an IP address or localhost"),
    ("", "not an address"),
    (" ", "not an address"),
    (" 127.0.0.1:53", "not an address"),
    ("127.0.0.1:53 ", "not an address"),
    ("http://127.0.0.1:53", "'http://127.0.0.1' is not an IP address or localhost"),
]

BAD_LISTEN_TYPES = [
    ("8181", "expected a string, got an integer (8181)"),
    ("true", "expected a string, got a boolean (True)"),
    ("8181.0", "expected a string, got a number (8181.0)"),
    ('["127.0.0.1:53"]', "expected a string, got a list"),
    ('{host = "127.0.0.1"}', "expected a string, got a table"),
    ("1979-05-27", "expected a string, got a date"),
]


def toml_string(text: str) -> str:
    """A TOML basic string holding ``text`` exactly."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t") + '"'


def error_of(document: str | bytes, source: str = "srvwatch.toml") -> ConfigError:
    data = document.encode() if isinstance(document, str) else document
    with pytest.raises(ConfigError) as info:
        parse_config(data, source)
    return info.value


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "srvwatch.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


# -- the file as DESIGN.md writes it -----------------------------------------------------


def test_the_design_example_parses() -> None:
    config = parse_config(DESIGN_EXAMPLE, "srvwatch.toml")
    assert config.upstreams == ("10.96.0.10:53",)
    assert config.policy == Policy(min_ttl=5.0)
    assert config.stub == StubConfig(
        (ListenAddress("127.0.0.1", 5353),), ("127.0.0.0/8", "::1/128"), 10_000
    )
    assert config.admin == AdminConfig(ListenAddress("127.0.0.1", 8181), 5.0)
    assert config.watch == (
        WatchConfig(
            "_http._tcp.api.svc.cluster.local",
            "SRV",
            "/run/srvwatch/api.json",
            "/etc/envoy/eds/api.json",
            "api",
        ),
    )
    assert config.source == "srvwatch.toml"
    assert config.digest == hashlib.sha256(DESIGN_EXAMPLE).hexdigest()


def test_an_empty_file_is_the_documented_defaults() -> None:
    config = parse_config(b"", "empty.toml")
    assert dataclasses.replace(config, source=None) == Config()
    assert config.upstreams is None
    assert config.stub.listen == (ListenAddress("127.0.0.1", 5353),)
    assert config.stub.allow == DEFAULT_ALLOW
    assert config.stub.cache_size == 10_000 == config.policy.cache_size
    assert config.admin == AdminConfig(ListenAddress("127.0.0.1", 8181), 5.0)
    assert config.watch == ()
    assert config.digest == hashlib.sha256(b"").hexdigest()


def test_the_digest_is_of_the_bytes() -> None:
    plain = parse_config(b'upstreams = ["10.0.0.1"]\n', "a.toml")
    commented = parse_config(b'upstreams = ["10.0.0.1"]  # same config\n', "a.toml")
    assert plain.upstreams == commented.upstreams == ("10.0.0.1:53",)
    assert plain.digest != commented.digest
    assert parse_config(b'upstreams = ["10.0.0.1"]\n', "b.toml").digest == plain.digest


def test_a_utf8_byte_order_mark_is_accepted() -> None:
    config = parse_config(b"\xef\xbb\xbf[admin]\nlame_duck = 1\n", "bom.toml")
    assert config.admin.lame_duck == 1.0


def test_every_policy_field_but_rng_is_a_key() -> None:
    """The [policy] table follows Policy: a field added there is a key here without an edit."""
    defaults = Policy()
    lines = ["[policy]"]
    for f in dataclasses.fields(Policy):
        if f.name in ("rng", "cache_size"):
            continue
        value = getattr(defaults, f.name)
        lines.append(f"{f.name} = {value * 2 if f.name != 'jitter' else 0.5!r}")
    config = parse_config("\n".join(lines).encode(), "p.toml")
    for f in dataclasses.fields(Policy):
        if f.name in ("rng", "cache_size"):
            continue
        expected = getattr(defaults, f.name) * 2 if f.name != "jitter" else 0.5
        assert getattr(config.policy, f.name) == expected, f.name


def test_integers_are_accepted_for_seconds() -> None:
    config = parse_config(b"[policy]\nmin_ttl = 10\nmax_ttl = 600\n[admin]\nlame_duck = 0\n", "x")
    assert config.policy.min_ttl == 10.0
    assert config.policy.max_ttl == 600.0
    assert config.admin.lame_duck == 0.0


def test_stub_cache_size_is_the_policy_cache_size() -> None:
    config = parse_config(b"[stub]\ncache_size = 42\n", "x")
    assert config.stub.cache_size == config.policy.cache_size == 42


# -- listen addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), GOOD_LISTEN)
def test_good_listen_forms(text: str, expected: ListenAddress) -> None:
    admin = parse_config(f"admin.listen = {toml_string(text)}\n".encode(), "x")
    assert admin.admin.listen == expected
    stub = parse_config(
        f'stub.listen = [{toml_string(text)}]\nadmin.listen = "127.0.0.2:1"\n'.encode(), "x"
    )
    assert stub.stub.listen == (expected,)


@pytest.mark.parametrize(("text", "reason"), BAD_LISTEN)
def test_bad_listen_forms_name_the_key_and_value(text: str, reason: str) -> None:
    for key, document in [
        ("admin.listen", f"[admin]\nlisten = {toml_string(text)}\n"),
        ("stub.listen[1]", f'[stub]\nlisten = ["127.0.0.1:53", {toml_string(text)}]\n'),
    ]:
        error = error_of(document)
        assert error.file == "srvwatch.toml"
        assert error.path == key
        assert error.value == text
        assert str(error).startswith(f"srvwatch.toml: {key}: {reason}")
        assert str(error).endswith(repr(text) + ")")
        assert "\n" not in str(error)


@pytest.mark.parametrize(("literal", "message"), BAD_LISTEN_TYPES)
def test_listen_of_the_wrong_type_names_the_key(literal: str, message: str) -> None:
    error = error_of(f"admin.listen = {literal}\n")
    assert error.path == "admin.listen"
    assert str(error).startswith(f"srvwatch.toml: admin.listen: {message}")
    error = error_of(f"stub.listen = [{literal}]\n")
    assert error.path == "stub.listen[0]"
    assert str(error).startswith(f"srvwatch.toml: stub.listen[0]: {message}")


def test_the_issues_six_listen_forms_exactly() -> None:
    """The messages quoted in the report, so a change to them is a visible change."""
    messages = {}
    for text in [":8181", "[::1]:8181", "8181", "127.0.0.1", "127.0.0.1:99999", "[::1]8181"]:
        try:
            config = parse_config(f"[admin]\nlisten = {toml_string(text)}\n".encode(), "s.toml")
        except ConfigError as exc:
            messages[text] = str(exc)
        else:
            messages[text] = f"ok {config.admin.listen}"
    forms = "(use HOST:PORT, [V6]:PORT, :PORT or localhost:PORT)"
    assert messages == {
        ":8181": "ok :8181",
        "[::1]:8181": "ok [::1]:8181",
        "8181": "s.toml: admin.listen: missing host: write ':8181' for every interface "
        "or '127.0.0.1:8181' for loopback only ('8181')",
        "127.0.0.1": f"s.toml: admin.listen: missing port {forms} ('127.0.0.1')",
        "127.0.0.1:99999": "s.toml: admin.listen: port must be 1-65535, got 99999 "
        "('127.0.0.1:99999')",
        "[::1]8181": "s.toml: admin.listen: expected ':port' after ']' ('[::1]8181')",
    }


def test_an_empty_listen_list_is_refused() -> None:
    assert str(error_of("stub.listen = []\n")) == (
        "srvwatch.toml: stub.listen: must list at least one address ([])"
    )


@pytest.mark.parametrize(
    ("listen", "admin", "path", "reason"),
    [
        ([":53", "127.0.0.1:53"], None, "stub.listen[1]", "overlaps stub.listen[0] ':53'"),
        (["127.0.0.1:53", "127.0.0.1:53"], None, "stub.listen[1]", "overlaps stub.listen[0]"),
        (["localhost:53", "127.0.0.1:53"], None, "stub.listen[1]", "overlaps stub.listen[0]"),
        (["[::]:53", "[::1]:53"], None, "stub.listen[1]", "overlaps stub.listen[0] '[::]:53'"),
        (["127.0.0.1:5353"], "localhost:5353", "admin.listen", "overlaps stub.listen[0]"),
        (["0.0.0.0:8181"], None, "admin.listen", "overlaps stub.listen[0] '0.0.0.0:8181'"),
    ],
)
def test_listeners_that_would_fight_over_a_port_are_refused(
    listen: list[str], admin: str | None, path: str, reason: str
) -> None:
    document = "[stub]\nlisten = [" + ", ".join(map(toml_string, listen)) + "]\n"
    if admin:
        document += f"[admin]\nlisten = {toml_string(admin)}\n"
    error = error_of(document)
    assert error.path == path
    assert reason in str(error)


def test_listeners_on_different_ports_or_families_are_fine() -> None:
    config = parse_config(
        b'[stub]\nlisten = [":53", "[::1]:53", "127.0.0.1:54"]\n[admin]\nlisten = ":8181"\n', "x"
    )
    assert [str(a) for a in config.stub.listen] == [":53", "[::1]:53", "127.0.0.1:54"]


# -- check-config, as a user runs it -------------------------------------------------------


@pytest.mark.parametrize(("text", "reason"), [(t, r) for t, r in BAD_LISTEN if t.strip()])
def test_check_config_refuses_bad_listen_forms(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "srvwatch.toml"
    path.write_text(f"[stub]\nlisten = [{toml_string(text)}]\n")
    result = check_config(path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"srvwatch: {path}: stub.listen[0]: {reason}")
    assert result.stderr.rstrip("\n").endswith(f"({text!r})")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("text", "expected"), GOOD_LISTEN)
def test_check_config_accepts_good_listen_forms(
    tmp_path: Path, text: str, expected: ListenAddress
) -> None:
    path = tmp_path / "srvwatch.toml"
    data = f'[stub]\nlisten = [{toml_string(text)}]\n[admin]\nlisten = "127.0.0.2:1"\n'.encode()
    path.write_bytes(data)
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == (
        f"{path}: ok: stub {expected}; admin 127.0.0.2:1; upstreams /etc/resolv.conf; "
        f"0 watches; sha256 {hashlib.sha256(data).hexdigest()}\n"
    )


def test_check_config_summary_of_the_design_example(tmp_path: Path) -> None:
    path = tmp_path / "srvwatch.toml"
    path.write_bytes(DESIGN_EXAMPLE)
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(DESIGN_EXAMPLE).hexdigest()
    assert result.stdout == (
        f"{path}: ok: stub 127.0.0.1:5353; admin 127.0.0.1:8181; upstreams 10.96.0.10:53; "
        f"1 watch; sha256 {digest}\n"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.toml", "cannot read the file: No such file or directory"),
        (lambda d: d, "not a regular file (a directory)"),
        (lambda d: _write(d / "latin1.toml", b'name = "caf\xe9"\n'), "not UTF-8 text: byte 0xe9"),
        (lambda d: _write(d / "bad.toml", b"[stub\n"), "not valid TOML: Expected ']'"),
        (lambda d: _write(d / "big.toml", b"#" * (2 << 20)), "larger than 1048576 bytes"),
    ],
)
def test_check_config_refuses_unreadable_files(tmp_path: Path, make: object, message: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    result = check_config(path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"srvwatch: {path}: {message}")
    assert "Traceback" not in result.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_check_config_usage_error_is_exit_2() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-m", "srvwatch.cli", "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 2
    assert "FILE" in result.stderr


def test_serve_takes_config_and_admin_flags() -> None:
    args = _parser().parse_args(["serve", "--config", "s.toml", "--admin", ":9000"])
    assert args.config == "s.toml"
    assert args.admin == ":9000"
    assert _parser().parse_args(["serve"]).config is None


# -- files and TOML --------------------------------------------------------------------------


def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "srvwatch.toml"
    path.write_bytes(DESIGN_EXAMPLE)
    assert load_config(path) == parse_config(DESIGN_EXAMPLE, str(path))


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == str(path)
    assert info.value.path == ""
    assert str(info.value) == f"{path}: cannot read the file: No such file or directory"


def test_bad_toml_gives_line_and_column() -> None:
    error = error_of(b'[stub]\nlisten = ["127.0.0.1:53"\ncache_size = 5\n')
    assert error.path == ""
    assert re.fullmatch(r"srvwatch\.toml: not valid TOML: .*\(at line 3, column \d+\)", str(error))


def test_duplicate_keys_are_bad_toml() -> None:
    error = error_of(b'[admin]\nlisten = ":1"\nlisten = ":2"\n')
    assert "not valid TOML" in str(error)
    assert "line 3" in str(error)


def test_deep_nesting_is_a_config_error() -> None:
    error = error_of(b"x = " + b"[" * 100_000 + b"]" * 100_000)
    assert error.path == ""


def test_parse_config_wants_bytes() -> None:
    with pytest.raises(TypeError, match="parse_config: data must be bytes, got str"):
        parse_config("[stub]", "x")  # type: ignore[arg-type]


def test_bad_utf8_names_the_offset() -> None:
    assert str(error_of(b"# ok\n\xff\n", "f.toml")) == (
        "f.toml: not UTF-8 text: byte 0xff at offset 5"
    )


# -- unknown keys and wrong types ------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "path", "hint"),
    [
        ("upstream = []", "upstream", "the top level takes upstreams, policy, stub, admin, watch"),
        ("[stub]\nlisen = []", "stub.lisen", "[stub] takes listen, allow, cache_size"),
        ("[admin]\nlame-duck = 1", "admin.lame-duck", "[admin] takes listen, lame_duck"),
        ("[policy]\nmin_tll = 5", "policy.min_tll", "[policy] takes min_ttl, max_ttl, jitter"),
        ("[policy]\nrng = 5", "policy.rng", "the policy's random source is not configurable"),
        (
            '[[watch]]\nname = "a"\n[[watch]]\nname = "b"\nfile = "x"',
            "watch[1].file",
            "[[watch]] takes name, type, json_file, eds_file, cluster, port",
        ),
        ('[[watch]]\nname = "a"\n[watch.eds]\nfile = "x"', "watch[0].eds", "[[watch]] takes"),
        ("[stub.extra]\nx = 1", "stub.extra", "[stub] takes"),
        ('"two words" = 1', '"two words"', "the top level takes"),
        ('"line\\nbreak" = 1', '"line\\nbreak"', "the top level takes"),
    ],
)
def test_unknown_keys_are_refused_at_every_level(document: str, path: str, hint: str) -> None:
    error = error_of(document + "\n")
    assert error.path == path
    assert str(error).startswith(f"srvwatch.toml: {path}: unknown key; {hint}")
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        ('upstreams = "10.0.0.1"', "upstreams", "expected a list, got a string ('10.0.0.1')"),
        ("upstreams = [53]", "upstreams[0]", "expected a string, got an integer (53)"),
        ("policy = 5", "policy", "expected a table, got an integer (5)"),
        ('[policy]\nmin_ttl = "5s"', "policy.min_ttl", "expected a number, got a string ('5s')"),
        ("[policy]\njitter = true", "policy.jitter", "expected a number, got a boolean (True)"),
        ("[policy]\ncache_size = 1.5", "policy.cache_size", "expected an integer, got a number"),
        ("[[stub]]", "stub", "expected a table, got a list ([{}])"),
        ("[stub]\ncache_size = 1e4", "stub.cache_size", "expected an integer, got a number"),
        ('[stub]\nallow = "127.0.0.0/8"', "stub.allow", "expected a list, got a string"),
        ('[admin]\nlame_duck = "5"', "admin.lame_duck", "expected a number, got a string ('5')"),
        ('watch = {name = "a"}', "watch", "expected a list, got a table"),
        ("watch = [1]", "watch[0]", "expected a table, got an integer (1)"),
        ("[[watch]]\nname = 5", "watch[0].name", "expected a string, got an integer (5)"),
        ('[[watch]]\nname = "a"\nport = "80"', "watch[0].port", "expected an integer, got a"),
        ('[[watch]]\ntype = "A"', "watch[0].name", "missing, and required"),
    ],
)
def test_wrong_types_name_the_key(document: str, path: str, message: str) -> None:
    error = error_of(document + "\n")
    assert error.path == path
    assert str(error).startswith(f"srvwatch.toml: {path}: {message}")


# -- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        ("min_ttl = 0", "policy.min_ttl", "must be > 0, got 0.0"),
        ("min_ttl = -1", "policy.min_ttl", "must be a finite number >= 0, got -1.0"),
        ("jitter = 1", "policy.jitter", "must be in [0, 1), got 1.0"),
        ("jitter = nan", "policy.jitter", "must be a finite number >= 0, got nan"),
        ("max_ttl = inf", "policy.max_ttl", "must be a finite number >= 0, got inf"),
        ("max_ttl = 1", "policy.max_ttl", "max_ttl (1.0) must be >= min_ttl (5.0)"),
        # The file set min_ttl only: the error names it, not the default it broke.
        ("min_ttl = 600", "policy.min_ttl", "max_ttl (300.0) must be >= min_ttl (600.0)"),
        ("backoff_max = 0.5", "policy.backoff_max", "backoff_max (0.5) must be >= backoff_base"),
        ("max_srv_targets = 0", "policy.max_srv_targets", "must be an integer >= 1, got 0"),
        ("min_ttl = 3e9", "policy.min_ttl", "must be at most 2147483647"),
        ("cache_size = 5", "policy.cache_size", "set it as stub.cache_size (5)"),
    ],
)
def test_policy_errors_name_the_policy_key(document: str, path: str, message: str) -> None:
    error = error_of(f"[policy]\n{document}\n")
    assert error.path == path
    assert str(error).startswith(f"srvwatch.toml: {path}: {message}")
    assert "Policy." not in str(error)


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        ("upstreams = []", "upstreams", "must list at least one nameserver"),
        ('upstreams = ["dns.google"]', "upstreams[0]", "'dns.google' is not an IP address"),
        ('upstreams = ["10.0.0.1:0"]', "upstreams[0]", "port must be 1-65535, got 0"),
        ('upstreams = ["::1", "[::1]:53"]', "upstreams[1]", "the same server as upstreams[0]"),
        (
            'upstreams = ["127.0.0.1"]\nstub.listen = [":53"]',
            "upstreams[0]",
            "127.0.0.1:53 is the stub itself (stub.listen[0] ':53'): queries would loop",
        ),
        (
            'upstreams = ["10.0.0.1", "[::1]:5353"]\nstub.listen = ["127.0.0.1:53", "[::]:5353"]',
            "upstreams[1]",
            "[::1]:5353 is the stub itself (stub.listen[1] '[::]:5353')",
        ),
        ("stub.allow = []", "stub.allow", "must list at least one network"),
        ('stub.allow = ["10.0.0.0/33"]', "stub.allow[0]", "not an IP network"),
        ('stub.allow = ["everyone"]', "stub.allow[0]", "not an IP network"),
        ("stub.cache_size = 0", "stub.cache_size", "must be 1-10000000 (0)"),
        ("stub.cache_size = 10000001", "stub.cache_size", "must be 1-10000000"),
        ("admin.lame_duck = -1", "admin.lame_duck", "must be a finite number of seconds >= 0"),
        ("admin.lame_duck = inf", "admin.lame_duck", "must be a finite number of seconds >= 0"),
    ],
)
def test_bad_values_name_the_key(document: str, path: str, message: str) -> None:
    error = error_of(document + "\n")
    assert error.path == path
    assert str(error).startswith(f"srvwatch.toml: {path}: {message}")


def test_upstreams_are_normalized() -> None:
    config = parse_config(b'upstreams = ["10.0.0.1", "[::1]:5353", "2001:db8::1"]\n', "x")
    assert config.upstreams == ("10.0.0.1:53", "[::1]:5353", "[2001:db8::1]:53")


def test_allow_networks_are_normalized() -> None:
    config = parse_config(b'stub.allow = ["10.0.0.0/8", "::1", "10.0.0.0/8"]\n', "x")
    assert config.stub.allow == ("10.0.0.0/8", "::1/128")


# -- watches -----------------------------------------------------------------------------------


def test_watches_of_each_type() -> None:
    config = parse_config(
        b"""
[[watch]]
name = "_http._tcp.api.svc.test"
[[watch]]
name = "db.svc.test"
type = "a"
eds_file = "/etc/envoy/eds/db.json"
port = 5432
[[watch]]
name = "db.svc.test"
type = "AAAA"
json_file = "/run/srvwatch/db6.json"
""",
        "w.toml",
    )
    assert config.watch == (
        WatchConfig("_http._tcp.api.svc.test"),
        WatchConfig("db.svc.test", "A", eds_file="/etc/envoy/eds/db.json", port=5432),
        WatchConfig("db.svc.test", "AAAA", json_file="/run/srvwatch/db6.json"),
    )


@pytest.mark.parametrize(
    ("watches", "path", "message"),
    [
        ('name = "a..b"', "watch[0].name", "not a valid DNS name"),
        ('name = ""', "watch[0].name", "not a valid DNS name"),
        ('name = " a"', "watch[0].name", "not a valid DNS name"),
        ('name = "a"\ntype = "MX"', "watch[0].type", "must be SRV, A or AAAA ('MX')"),
        ('name = "a"\ntype = "A"\neds_file = "/e/a.json"', "watch[0].port", "required for an A"),
        ('name = "a"\nport = 80', "watch[0].port", "only for A and AAAA watches"),
        ('name = "a"\ntype = "A"\nport = 0', "watch[0].port", "must be 1-65535 (0)"),
        ('name = "a"\ntype = "A"\nport = 65536', "watch[0].port", "must be 1-65535"),
        ('name = "a"\ncluster = "api"', "watch[0].cluster", "only means something with eds_file"),
        ('name = "a"\neds_file = "/e/a.json"\ncluster = ""', "watch[0].cluster", "must not be"),
        ('name = "a"\njson_file = ""', "watch[0].json_file", "not a usable file path"),
        ('name = "a"\njson_file = "/run/"', "watch[0].json_file", "names a directory"),
        ('name = "a"\njson_file = "/r/a"\neds_file = "/r/./a"', "watch[0].eds_file", "too"),
        (
            'name = "a"\n[[watch]]\nname = "A"',
            "watch[1].name",
            "A SRV is watched by watch[0].name too",
        ),
        (
            'name = "a"\njson_file = "/r/x.json"\n[[watch]]\nname = "b"\neds_file = "/r/x.json"',
            "watch[1].eds_file",
            "watch[0].json_file writes this file too ('/r/x.json')",
        ),
    ],
)
def test_bad_watches_name_the_key(watches: str, path: str, message: str) -> None:
    error = error_of(f"[[watch]]\n{watches}\n")
    assert error.path == path
    assert message in str(error)
    assert str(error).startswith(f"srvwatch.toml: {path}: ")


def test_the_same_name_may_be_watched_for_each_type() -> None:
    config = parse_config(
        b'[[watch]]\nname = "a.test"\ntype = "A"\n[[watch]]\nname = "a.test"\ntype = "AAAA"\n', "x"
    )
    assert [w.type for w in config.watch] == ["A", "AAAA"]


# -- command-line overrides --------------------------------------------------------------------


def test_overrides_replace_what_they_name() -> None:
    base = parse_config(DESIGN_EXAMPLE, "srvwatch.toml")
    config = base.with_overrides(
        listen=["127.0.0.1:53", "[::1]:53"],
        admin=":9090",
        upstreams=["10.0.0.53"],
        allow=["10.0.0.0/8"],
        watch=["_dns._udp.example.test"],
        min_ttl=10,
    )
    assert config.stub == StubConfig(
        (ListenAddress("127.0.0.1", 53), ListenAddress("::1", 53)), ("10.0.0.0/8",), 10_000
    )
    assert config.admin == AdminConfig(ListenAddress("", 9090), 5.0)
    assert config.upstreams == ("10.0.0.53:53",)
    assert config.watch == (WatchConfig("_dns._udp.example.test"),)
    assert config.policy == Policy(min_ttl=10)
    assert (config.source, config.digest) == (base.source, base.digest)


def test_no_overrides_is_the_same_config() -> None:
    base = parse_config(DESIGN_EXAMPLE, "srvwatch.toml")
    assert base.with_overrides() == base


def test_min_ttl_above_max_ttl_raises_max_ttl() -> None:
    config = Config().with_overrides(min_ttl=600)
    assert (config.policy.min_ttl, config.policy.max_ttl) == (600, 600)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"listen": ["8181"]}, "--listen: missing host: write ':8181'"),
        ({"listen": []}, "--listen: must list at least one address"),
        ({"admin": "127.0.0.1"}, "--admin: missing port"),
        ({"admin": "localhost:5353"}, "--admin: 'localhost:5353' overlaps stub.listen[0]"),
        ({"listen": [":8181"]}, "admin.listen: '127.0.0.1:8181' overlaps --listen ':8181'"),
        ({"upstreams": ["resolver"]}, "--upstream: 'resolver' is not an IP address"),
        ({"allow": ["lan"]}, "--allow: not an IP network"),
        ({"upstreams": ["127.0.0.1:5353"]}, "--upstream: 127.0.0.1:5353 is the stub itself"),
        ({"watch": ["a..b"]}, "--watch: not a valid DNS name"),
        ({"min_ttl": 0}, "--min-ttl: min_ttl must be > 0, got 0"),
        ({"min_ttl": float("nan")}, "--min-ttl: min_ttl must be a finite number >= 0, got nan"),
    ],
)
def test_override_errors_name_the_flag(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config().with_overrides(**overrides)  # type: ignore[arg-type]
    assert info.value.file is None
    assert str(info.value).startswith(message)


def test_an_admin_flag_that_clashes_with_the_files_stub_is_refused() -> None:
    base = parse_config(b'stub.listen = [":53"]\n', "s.toml")
    with pytest.raises(
        ConfigError, match=r"^--admin: '127\.0\.0\.1:53' overlaps stub\.listen\[0\]"
    ):
        base.with_overrides(admin="127.0.0.1:53")


# -- nothing but ConfigError, whatever the bytes ---------------------------------------------

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_KEYS = [
    "upstreams", "policy", "stub", "admin", "watch", "listen", "allow", "cache_size",
    "lame_duck", "name", "type", "json_file", "eds_file", "cluster", "port", "min_ttl",
    "max_ttl", "jitter", "rng", "x",
]  # fmt: skip
_VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True).map(lambda f: repr(f).replace("inf", "inf")),
    st.sampled_from(["true", "false", "inf", "-inf", "nan", "1979-05-27", "07:32:00", "{}", "[]"]),
    st.text(max_size=30).map(toml_string),
    st.lists(st.text(max_size=20).map(toml_string), max_size=3).map(
        lambda items: "[" + ", ".join(items) + "]"
    ),
    st.sampled_from(
        ['":8181"', '"8181"', '"[::1]8181"', '"127.0.0.1:99999"', '"SRV"', '"A"', '"/tmp/x"']
    ),
)
_LINES = st.one_of(
    st.sampled_from(["[policy]", "[stub]", "[admin]", "[[watch]]", "[x]", "[stub.x]"]),
    st.tuples(st.sampled_from(_KEYS), _VALUES).map(lambda kv: f"{kv[0]} = {kv[1]}"),
)


def parse_or_error(data: bytes) -> Config | ConfigError:
    try:
        return parse_config(data, "fuzz.toml")
    except ConfigError as exc:
        return exc


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_raise_nothing_but_config_error(data: bytes) -> None:
    outcome = parse_or_error(data)
    if isinstance(outcome, ConfigError):
        assert str(outcome).startswith("fuzz.toml: ")
        assert "\n" not in str(outcome)


@FUZZ
@given(st.lists(_LINES, max_size=12))
def test_toml_like_documents_raise_nothing_but_config_error(lines: list[str]) -> None:
    outcome = parse_or_error("\n".join(lines).encode())
    if isinstance(outcome, ConfigError):
        assert str(outcome).startswith("fuzz.toml: ")
        assert outcome.file == "fuzz.toml"
        assert "\n" not in str(outcome)
    else:
        assert outcome.stub.listen
        assert outcome.policy.cache_size == outcome.stub.cache_size


# -- the documentation quotes the real messages --------------------------------------------


def test_the_documented_listen_errors_are_the_real_ones() -> None:
    text = (DOCS / "configuration.md").read_text()
    section = text[text.index("| written | error |") :].split("\n\n")[0]
    rows = [line.split(" | ") for line in section.splitlines()[2:]]
    assert len(rows) >= 8
    for written_cell, error_cell in rows:
        message = re.fullmatch(r"`(.*)` \|", error_cell)
        assert message, error_cell
        (written,) = re.findall(r"`([^`]*)`", written_cell)
        literal = written if "TOML integer" in written_cell else toml_string(written.strip('"'))
        assert str(error_of(f"admin.listen = {literal}\n")) == message[1]


def test_allow_networks_with_host_bits_set_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"stub.allow\[0\]: has host bits set: write 10.0.0.0/8"):
        parse_config(b'[stub]\nallow = ["10.0.0.1/8"]\n', "x")
    assert parse_config(b'[stub]\nallow = ["10.0.0.0/8", "10.0.0.1"]\n', "x").stub.allow == (
        "10.0.0.0/8",
        "10.0.0.1/32",
    )


def test_an_output_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    text = f'[[watch]]\nname = "_a._tcp.x.test"\njson_file = "{tmp_path}"\n'
    with pytest.raises(ConfigError, match=r"watch\[0\].json_file: names a directory"):
        parse_config(text.encode(), "x")
