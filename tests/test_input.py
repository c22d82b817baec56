"""Bad input gets a ValueError naming it; odd but valid input (DNS-SD names, resolv.conf) works.

Issue 8, "Failure is never emptiness": the input half. The functions are
reached through the ``names`` module, not imported by name, so that each test
fails on its own against code that lacks them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

import srvwatch
from srvwatch import names
from srvwatch.testing import ZoneServer

# -- search list -----------------------------------------------------------------------


def test_a_search_string_is_one_domain() -> None:
    assert names.search_list("svc.test") == ("svc.test.",)
    assert names.search_list("Svc.Test.") == ("svc.test.",)


def test_search_lists_are_canonical_and_deduplicated() -> None:
    assert names.search_list(["b.test", "a.test", "B.test.", "."]) == ("b.test.", "a.test.", ".")
    assert names.search_list(iter(["a.test"])) == ("a.test.",)
    assert names.search_list(None) == ()
    assert names.search_list([]) == ()


@pytest.mark.parametrize("value", [5, 1.5, b"svc.test", object()])
def test_search_must_be_a_domain_or_a_list_of_domains(value: object) -> None:
    with pytest.raises(ValueError, match=r"^search must be a domain or a list of domains"):
        names.search_list(value)


def test_search_list_items_must_be_strings() -> None:
    with pytest.raises(ValueError, match=r"^search\[1\] must be a string, got 5"):
        names.search_list(["a.test", 5])


def test_bad_search_domain_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"search domain 'a\.\.b'"):
        names.search_list(["a..b"])


def test_root_search_domain_does_not_try_the_name_twice() -> None:
    assert names.search_candidates("api", (".",), 1) == ("api.",)
    assert names.search_candidates("api.svc", (".", "svc.test."), 1) == (
        "api.svc.",
        "api.svc.svc.test.",
    )
    assert names.search_candidates("api", ("svc.test.", "."), 1) == ("api.svc.test.", "api.")


def test_search_keeps_a_search_domain_ending_in_an_escaped_dot() -> None:
    # "x\.." is the one-label domain "x.": gluing by text and stripping dots broke it.
    assert names.search_candidates("api", ("x\\..",), 1) == ("api.x\\..", "api.")


def test_escaped_dots_do_not_count_towards_ndots() -> None:
    # One label ("a.b"), no dots between labels: the search list comes first.
    assert names.search_candidates("a\\.b", ("svc.test.",), 1) == ("a\\.b.svc.test.", "a\\.b.")


# -- record types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "rdtype",
    ["OPT", "opt", "TYPE0", 0, "AXFR", "IXFR", "TSIG", "TKEY", "MAILA", "MAILB", "ANY", 41, 255],
)
def test_meta_types_are_not_query_types(rdtype: str | int) -> None:
    with pytest.raises(ValueError, match="meta type") as info:
        names.type_code(rdtype)
    assert repr(rdtype) in str(info.value)


@pytest.mark.parametrize("rdtype", [128, 200, "TYPE130"])
def test_the_whole_meta_type_range_is_rejected(rdtype: str | int) -> None:
    with pytest.raises(ValueError, match="meta type"):
        names.type_code(rdtype)


@pytest.mark.parametrize(
    ("rdtype", "code"), [("SRV", 33), (" aaaa ", 28), ("TYPE65280", 65280), (257, 257)]
)
def test_data_types_are_query_types(rdtype: str | int, code: int) -> None:
    assert names.type_code(rdtype) == code


@pytest.mark.parametrize("rdtype", ["TYPE\u0663\u0663", "NOPE", -1, 65536, True, 33.0, None])
def test_unknown_types_name_the_input(rdtype: object) -> None:
    with pytest.raises(ValueError, match="record type") as info:
        names.type_code(rdtype)  # type: ignore[arg-type]
    assert repr(rdtype) in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("rdtype", ["OPT", "AXFR", "TYPE0", "ANY"])
async def test_resolve_rejects_meta_types_before_asking(rdtype: str) -> None:
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address]) as r:
        with pytest.raises(ValueError, match="meta type"):
            await r.resolve("host.svc.test.", rdtype)
        assert server.query_count() == 0


# -- integer options -------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "3", 1.5, 3.0, True, False, [3]])
def test_check_int_refuses_what_is_not_an_int(value: object) -> None:
    with pytest.raises(ValueError, match=r"^max_socket_uses must be an integer") as info:
        names.check_int(value, "max_socket_uses", 1)
    assert repr(value) in str(info.value)


def test_check_int_bounds() -> None:
    assert names.check_int(3, "ndots", 0) == 3
    assert names.check_int(0, "ndots", 0) == 0
    assert names.check_int(10**400, "max_in_flight", 1) == 10**400
    assert names.check_int(15, "ndots", 0, 15) == 15
    with pytest.raises(ValueError, match=r"^max_in_flight must be an integer >= 1, got 0"):
        names.check_int(0, "max_in_flight", 1)
    with pytest.raises(ValueError, match=r"^ndots must be an integer in 0\.\.15, got 16"):
        names.check_int(16, "ndots", 0, 15)


# -- resolv.conf -----------------------------------------------------------------------


def resolv_conf(tmp_path: Path, text: str) -> str:
    path = tmp_path / "resolv.conf"
    path.write_text(text)
    return str(path)


def test_resolv_conf_forms(tmp_path: Path) -> None:
    path = resolv_conf(
        tmp_path,
        "# comment\n"
        "; comment\n"
        "\n"
        "nameserver 10.0.0.1\n"
        "nameserver   2001:db8::1  \n"
        "nameserver fe80::1%eth0\n"
        "search Svc.Test cluster.local.\n"
        "options rotate ndots:5 timeout:2\n"
        "sortlist 10.0.0.0/255.0.0.0\n",
    )
    assert names.system_config(path) == (
        ["10.0.0.1:53", "[2001:db8::1]:53", "[fe80::1%eth0]:53"],
        ["svc.test.", "cluster.local."],
        5,
    )


def test_resolv_conf_defaults(tmp_path: Path) -> None:
    assert names.system_config(resolv_conf(tmp_path, "nameserver 10.0.0.1")) == (
        ["10.0.0.1:53"],
        [],
        1,
    )


def test_resolv_conf_last_search_or_domain_line_wins(tmp_path: Path) -> None:
    path = resolv_conf(tmp_path, "nameserver 10.0.0.1\nsearch a.test b.test\ndomain c.test\n")
    assert names.system_config(path)[1] == ["c.test."]
    path = resolv_conf(tmp_path, "nameserver 10.0.0.1\ndomain c.test\nsearch a.test b.test\n")
    assert names.system_config(path)[1] == ["a.test.", "b.test."]


@pytest.mark.parametrize(
    ("option", "ndots"), [("ndots:0", 0), ("ndots:00007", 7), ("ndots:99", 15)]
)
def test_resolv_conf_ndots_is_capped_as_glibc_does(tmp_path: Path, option: str, ndots: int) -> None:
    path = resolv_conf(tmp_path, f"nameserver 10.0.0.1\noptions {option}\n")
    assert names.system_config(path)[2] == ndots


def test_resolv_conf_duplicate_nameservers_are_dropped(tmp_path: Path) -> None:
    path = resolv_conf(
        tmp_path,
        "nameserver 10.0.0.2\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n"
        "nameserver ::1\nnameserver 0:0::1\n",
    )
    assert names.system_config(path)[0] == ["10.0.0.2:53", "10.0.0.1:53", "[::1]:53"]


def test_resolv_conf_bad_search_domain_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = resolv_conf(tmp_path, "nameserver 10.0.0.1\nsearch a..b svc.test\n")
    with caplog.at_level(logging.WARNING, logger="srvwatch.names"):
        servers, search, _ndots = names.system_config(path)
    assert (servers, search) == (["10.0.0.1:53"], ["svc.test."])
    assert f"{path} line 2" in caplog.text
    assert "'a..b'" in caplog.text


@pytest.mark.parametrize(
    "line",
    [
        "nameserver 10.0.0.300",
        "nameserver dns.example.com",
        "nameserver 10.0.0.1:53",
        "nameserver [::1]",
        "nameserver",
        "nameserver \u0661.\u0662.\u0663.\u0664",
    ],
)
def test_resolv_conf_bad_nameserver_line_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, line: str
) -> None:
    path = resolv_conf(tmp_path, f"nameserver 10.0.0.1\n{line}\nnameserver 10.0.0.2\n")
    with caplog.at_level(logging.WARNING, logger="srvwatch.names"):
        servers, _search, _ndots = names.system_config(path)
    assert servers == ["10.0.0.1:53", "10.0.0.2:53"]
    assert f"{path} line 2" in caplog.text
    assert repr(line) in caplog.text


def test_resolv_conf_bad_ndots_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = resolv_conf(tmp_path, "nameserver 10.0.0.1\noptions ndots:\u0665 ndots:x\n")
    with caplog.at_level(logging.WARNING, logger="srvwatch.names"):
        assert names.system_config(path)[2] == 1
    assert f"{path} line 2" in caplog.text


@pytest.mark.parametrize("text", ["", "# nothing\n", "nameserver bad\n", "search svc.test\n"])
def test_resolv_conf_without_a_usable_nameserver_is_an_error_naming_it(
    tmp_path: Path, text: str
) -> None:
    path = resolv_conf(tmp_path, text)
    with pytest.raises(ValueError, match="no usable nameserver") as info:
        names.system_config(path)
    assert path in str(info.value)


def test_missing_resolv_conf_is_an_error_naming_it(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.conf")
    with pytest.raises(ValueError, match="cannot be read") as info:
        names.system_config(path)
    assert path in str(info.value)


def test_undecodable_resolv_conf_bytes_only_spoil_their_line(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_bytes(b"nameserver 10.0.0.1\nsearch \xff\xfe.test ok.test\n")
    assert names.system_config(str(path))[:2] == (["10.0.0.1:53"], ["ok.test."])


# -- DNS-SD instance names -------------------------------------------------------------

ZONE = """\
$TTL 30
@                          SOA  ns hostmaster 1 3600 600 86400 5
@                          NS   ns
ns                         A    127.0.0.1
printer\\032v2\\.._ipp._tcp  SRV  0 0 631 p
p                          A    10.0.0.7
host                       A    10.0.0.9
"""
INSTANCE = "Printer v2\\.._ipp._tcp.svc.test."
CANONICAL = "printer\\032v2\\.._ipp._tcp.svc.test."
FAST = srvwatch.Policy(
    min_ttl=0.1, max_ttl=0.1, negative_min_ttl=0.1, timeout=0.1, lifetime=0.3, backoff_base=0.05
)


async def first_update(updates: srvwatch.Updates) -> srvwatch.Update:
    with anyio.fail_after(2):
        return await updates.__anext__()


@pytest.mark.anyio
async def test_dns_sd_instance_name_resolves_and_is_watched() -> None:
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address], policy=FAST) as r:
        eps = await r.resolve_srv(INSTANCE)
        assert eps.name == CANONICAL
        assert [(e.target, e.port, e.addresses) for e in eps] == [
            ("p.svc.test.", 631, ("10.0.0.7",))
        ]
        async with r.watch(INSTANCE) as updates:
            update = await first_update(updates)
            assert update.endpoints.name == CANONICAL
            assert update.endpoints == eps
            server.delete(INSTANCE)
            with anyio.fail_after(2):
                async for update in updates:
                    if not update.endpoints:
                        break
            assert update.endpoints.name == CANONICAL
            assert not update.stale


@pytest.mark.anyio
async def test_missing_dns_sd_instance_is_an_empty_set_and_ends_nothing_else() -> None:
    # The empty set for an NXDOMAIN was rejected by EndpointSet, which killed the
    # resolver's task group and every other watch with it.
    async with ZoneServer(ZONE) as server, srvwatch.Resolver([server.address], policy=FAST) as r:
        async with (
            r.watch(INSTANCE.replace("v2", "v3")) as missing,
            r.watch("host.svc.test.", "A") as host,
        ):
            update = await first_update(missing)
            assert not update.endpoints
            assert update.endpoints.name == CANONICAL.replace("v2", "v3")
            assert [e.addresses for e in (await first_update(host)).endpoints] == [("10.0.0.9",)]
        assert (await r.resolve_addresses("host.svc.test.")) == ("10.0.0.9",)


# -- Resolver arguments ------------------------------------------------------------------


def test_resolver_search_string_is_one_domain() -> None:
    assert srvwatch.Resolver(["127.0.0.1"], search="svc.test").search == ("svc.test.",)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nameservers": 5},
        {"max_in_flight": None},
        {"max_socket_uses": "3"},
        {"max_socket_uses": 1.5},
        {"search": 5},
    ],
)
def test_resolver_arguments_are_value_errors_naming_them(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        srvwatch.Resolver(**{"nameservers": ["127.0.0.1"], **kwargs})  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_resolve_srv_of_a_list_is_a_value_error() -> None:
    async with srvwatch.Resolver(["127.0.0.1:1"]) as r:
        with pytest.raises(ValueError, match="name"):
            await r.resolve_srv(["x"])  # type: ignore[arg-type]
