"""Zone texts served by the test Knot DNS server, and the names and addresses in them.

Tests import the constants rather than repeating literals, so a change to a zone shows up
as one edit here.
"""

from __future__ import annotations

DEFAULT_ORIGIN = "svc.test."
OTHER_ORIGIN = "other.test."

SOA_TTL = 5
SOA_MINIMUM = 5  # negative-caching TTL (RFC 2308)

# SRV names (absolute).
HTTP_SRV = "_http._tcp.api.svc.test."
ZERO_SRV = "_zero._tcp.api.svc.test."
EXT_SRV = "_ext._tcp.api.svc.test."
NONE_SRV = "_none._tcp.api.svc.test."
BIG_SRV = "_big._tcp.api.svc.test."
ONE_SRV = "_one._tcp.api.svc.test."

# _http: (priority, weight, port, target) with TTL 30; a.api also has an AAAA record.
HTTP_TTL = 30
HTTP_TARGETS: dict[str, tuple[int, int, int]] = {
    "a.api.svc.test.": (10, 60, 8080),
    "b.api.svc.test.": (10, 40, 8080),
    "c.api.svc.test.": (20, 0, 8080),
}
HTTP_A: dict[str, str] = {
    "a.api.svc.test.": "127.0.0.11",
    "b.api.svc.test.": "127.0.0.12",
    "c.api.svc.test.": "127.0.0.13",
}
HTTP_AAAA: dict[str, str] = {"a.api.svc.test.": "2001:db8::11"}

# _zero: everything has TTL 0.
ZERO_A: dict[str, str] = {"z1.api.svc.test.": "127.0.0.21", "z2.api.svc.test.": "127.0.0.22"}
ZERO_PORT = 9000

# _ext: the target lives in another zone (served by the same Knot), so no additional record.
EXT_TARGET = "web.other.test."
EXT_ADDRESS = "127.0.0.2"
EXT_PORT = 8443

# _one: TTL 1 everywhere.
ONE_TARGET = "one.api.svc.test."
ONE_ADDRESS = "127.0.0.31"
ONE_PORT = 7000

# CNAME chain alias -> alias2 -> real.
ALIAS = "alias.svc.test."
ALIAS2 = "alias2.svc.test."
REAL = "real.svc.test."
REAL_ADDRESS = "127.0.0.3"

# NODATA: the name exists with a TXT record only.
NODATA = "nodata.svc.test."
NODATA_TXT = "only a TXT record here"

MULTI = "multi.svc.test."
MULTI_A = ("127.0.0.41", "127.0.0.42")
MULTI_AAAA = ("2001:db8::41", "2001:db8::42")

NXDOMAIN = "does-not-exist.svc.test."

# _big: enough SRV records with long targets that the answer exceeds 1232 bytes (TC over UDP).
BIG_COUNT = 60
BIG_PORT = 8081
_BIG_LABEL = "a-deliberately-long-label-to-make-the-srv-rrset-large"


def big_target(i: int) -> str:
    """Absolute target name of the i-th `_big` SRV record."""
    return f"big{i:02d}-{_BIG_LABEL}.api.svc.test."


def big_address(i: int) -> str:
    return f"127.0.1.{i + 1}"


def _big_records() -> str:
    lines = []
    for i in range(BIG_COUNT):
        lines.append(f"_big._tcp.api 30 IN SRV 10 10 {BIG_PORT} {big_target(i)}")
        lines.append(f"{big_target(i)} 30 IN A {big_address(i)}")
    return "\n".join(lines)


DEFAULT_ZONE = f"""\
$ORIGIN svc.test.
$TTL 30
@               {SOA_TTL} IN SOA ns.svc.test. hostmaster.svc.test. 1 3600 600 86400 {SOA_MINIMUM}
@               30 IN NS    ns.svc.test.
ns              30 IN A     127.0.0.1

_http._tcp.api  30 IN SRV   10 60 8080 a.api.svc.test.
_http._tcp.api  30 IN SRV   10 40 8080 b.api.svc.test.
_http._tcp.api  30 IN SRV   20 0 8080 c.api.svc.test.
a.api           30 IN A     127.0.0.11
a.api           30 IN AAAA  2001:db8::11
b.api           30 IN A     127.0.0.12
c.api           30 IN A     127.0.0.13

_zero._tcp.api  0 IN SRV    10 50 {ZERO_PORT} z1.api.svc.test.
_zero._tcp.api  0 IN SRV    10 50 {ZERO_PORT} z2.api.svc.test.
z1.api          0 IN A      127.0.0.21
z2.api          0 IN A      127.0.0.22

_ext._tcp.api   30 IN SRV   10 100 {EXT_PORT} {EXT_TARGET}

_none._tcp.api  30 IN SRV   0 0 0 .

_one._tcp.api   1 IN SRV    10 100 {ONE_PORT} {ONE_TARGET}
one.api         1 IN A      {ONE_ADDRESS}

alias           30 IN CNAME alias2.svc.test.
alias2          30 IN CNAME real.svc.test.
real            30 IN A     {REAL_ADDRESS}

nodata          30 IN TXT   "{NODATA_TXT}"

multi           30 IN A     {MULTI_A[0]}
multi           30 IN A     {MULTI_A[1]}
multi           30 IN AAAA  {MULTI_AAAA[0]}
multi           30 IN AAAA  {MULTI_AAAA[1]}

{_big_records()}
"""

OTHER_ZONE = f"""\
$ORIGIN other.test.
$TTL 30
@   {SOA_TTL} IN SOA ns.other.test. hostmaster.other.test. 1 3600 600 86400 {SOA_MINIMUM}
@               30 IN NS    ns.other.test.
ns              30 IN A     127.0.0.1
web             30 IN A     {EXT_ADDRESS}
"""
