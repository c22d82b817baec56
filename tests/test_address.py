"""Nameserver and listen addresses: every accepted form, an error naming the entry for the rest."""

from __future__ import annotations

import pytest

from srvwatch import transport
from srvwatch.address import (
    ListenAddress,
    Nameserver,
    format_hostport,
    parse_listen,
    parse_nameserver,
    parse_nameservers,
)

ARABIC_INDIC_53 = "\u0665\u0663"  # int() reads these as 53


def test_transport_still_exports_the_nameserver_names() -> None:
    assert transport.Nameserver is Nameserver
    assert transport.parse_nameserver is parse_nameserver


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [
        ("1.2.3.4", 53, "1.2.3.4:53"),
        ("::1", 53, "[::1]:53"),
        ("fe80::1%eth0", 5353, "[fe80::1%eth0]:5353"),
        ("localhost", 8181, "localhost:8181"),
        ("", 8181, ":8181"),
    ],
)
def test_format_hostport(host: str, port: int, text: str) -> None:
    assert format_hostport(host, port) == text


def test_nameserver_str_brackets_ipv6() -> None:
    assert str(Nameserver("::1", 5300)) == "[::1]:5300"
    assert str(Nameserver("10.0.0.1")) == "10.0.0.1:53"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2001:db8::", Nameserver("2001:db8::", 53)),
        ("2001:DB8:0::1", Nameserver("2001:db8::1", 53)),
        ("[2001:db8::]:5300", Nameserver("2001:db8::", 5300)),
        ("127.0.0.1:00053", Nameserver("127.0.0.1", 53)),
        ("127.0.0.1:65535", Nameserver("127.0.0.1", 65535)),
    ],
)
def test_nameserver_forms(text: str, expected: Nameserver) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:\u00b2",  # superscript two: isdigit() but not a port
        f"127.0.0.1:{ARABIC_INDIC_53}",
        f"[::1]:{ARABIC_INDIC_53}",
        # past int()'s string limit, whose error names nothing
        pytest.param("127.0.0.1:" + "9" * 5000, id="5000-digits"),
        "127.0.0.1:+53",
        "127.0.0.1: 53",
        "127.0.0.1:0",
        "[::1]:",
        "[::1]:0",
        "[2001:db8::]53",
    ],
)
def test_bad_nameserver_port_is_a_value_error_naming_the_entry(text: str) -> None:
    with pytest.raises(ValueError, match="nameserver") as info:
        parse_nameserver(text)
    assert repr(text) in str(info.value)


def test_nameserver_errors_name_the_caller_s_key() -> None:
    with pytest.raises(ValueError, match=r"^upstreams\[1\] '10\.0\.0\.1:x': port"):
        parse_nameservers(["10.0.0.2", "10.0.0.1:x"], "upstreams")


def test_nameserver_lists() -> None:
    assert parse_nameservers(["10.0.0.1", "10.0.0.1:53", "::1", "[::1]:53", "10.0.0.2"]) == (
        Nameserver("10.0.0.1"),
        Nameserver("::1"),
        Nameserver("10.0.0.2"),
    )
    assert parse_nameservers(iter(["10.0.0.1"])) == (Nameserver("10.0.0.1"),)


@pytest.mark.parametrize("value", ["127.0.0.1", b"127.0.0.1", 5, None, []])
def test_nameserver_list_must_be_a_non_empty_list(value: object) -> None:
    with pytest.raises(ValueError, match=r"^nameservers must"):
        parse_nameservers(value)


def test_nameserver_list_items_must_be_strings() -> None:
    with pytest.raises(ValueError, match=r"nameservers\[0\] must be a string"):
        parse_nameservers([5])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":8181", ListenAddress("", 8181)),
        ("127.0.0.1:8181", ListenAddress("127.0.0.1", 8181)),
        ("0.0.0.0:53", ListenAddress("0.0.0.0", 53)),
        ("[::1]:8181", ListenAddress("::1", 8181)),
        ("[::]:53", ListenAddress("::", 53)),
        ("[0:0::1]:53", ListenAddress("::1", 53)),
        ("localhost:53", ListenAddress("localhost", 53)),
        ("LocalHost:53", ListenAddress("localhost", 53)),
        ("127.0.0.1:65535", ListenAddress("127.0.0.1", 65535)),
    ],
)
def test_listen_forms(text: str, expected: ListenAddress) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "bind_host"),
    [
        (":8181", "0.0.0.0"),
        ("127.0.0.1:53", "127.0.0.1"),
        ("[::1]:53", "::1"),
        ("localhost:53", "127.0.0.1"),
    ],
)
def test_listen_str_round_trips(text: str, bind_host: str) -> None:
    address = parse_listen(text)
    assert str(address) == text
    assert parse_listen(str(address)) == address
    assert address.bind_host == bind_host


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("8181", "missing host: write ':8181'"),
        ("127.0.0.1", "missing port"),
        ("localhost", "missing port"),
        ("[::1]", "missing port"),
        ("127.0.0.1:", "port"),
        (":", "port"),
        ("127.0.0.1:99999", "port"),
        ("127.0.0.1:65536", "port"),
        ("127.0.0.1:0", "port"),
        (":0", "port"),
        ("[::1]8181", "expected ':port'"),
        ("[::1:8181", "missing ']'"),
        ("::1:8181", "needs brackets"),
        ("[127.0.0.1]:53", "only for IPv6"),
        ("[localhost]:53", "not an IPv6 address"),
        ("example.com:53", "not an IP address or localhost"),
        ("1.2.3:53", "not an IP address or localhost"),
        ("127.0.0.1:\u00b2", "port"),
        (f"127.0.0.1:{ARABIC_INDIC_53}", "port"),
        (f"[::1]:{ARABIC_INDIC_53}", "port"),
        ("127.0.0.1:-1", "port"),
        ("", "not an address"),
        (" ", "not an address"),
        (" 127.0.0.1:53", "not an address"),
        ("127.0.0.1:53\n", "not an address"),
        ("127.0.0.1:53:53", "not an IP address"),
        ("http://127.0.0.1:53", "not an IP address"),
    ],
)
def test_bad_listen_address_is_a_value_error_naming_the_key(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=r"^stub\.listen\[0\] ") as info:
        parse_listen(text, "stub.listen[0]")
    assert repr(text) in str(info.value)
    assert reason in str(info.value)


@pytest.mark.parametrize("value", [8181, None, b":8181", ("127.0.0.1", 53)])
def test_listen_address_must_be_a_string(value: object) -> None:
    with pytest.raises(ValueError, match=r"^admin.listen must be a string"):
        parse_listen(value, "admin.listen")  # type: ignore[arg-type]


def test_listen_port_zero_only_when_asked_for() -> None:
    assert parse_listen("127.0.0.1:0", ephemeral=True) == ListenAddress("127.0.0.1", 0)
    assert parse_listen(":0", ephemeral=True) == ListenAddress("", 0)
    with pytest.raises(ValueError, match="port must be 0-65535"):
        parse_listen("127.0.0.1:65536", ephemeral=True)


def test_nameserver_errors_quote_the_entry_as_given() -> None:
    with pytest.raises(ValueError, match=r"^nameserver ' \[::1\]x ': expected ':port'"):
        parse_nameserver(" [::1]x ")
