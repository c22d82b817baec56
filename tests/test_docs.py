"""The documentation site tells the truth: every example runs, every reference matches the code.

- Every ```python block under docs/ runs as a program (``-W error``) against a
  real Knot serving tests/zones.py (plus HTTP backends for the adapter
  examples); ``127.0.0.1:5300`` in it stands for that Knot. A ```text block
  right after it is the exact output.
- Every ``$ srvwatch ...`` line of a ```console block runs, and the lines
  shown under it must be in its output. Install and test-suite commands are
  listed in NOT_RUN, each with the reason; a command in neither fails.
- The sidecar does not exist yet, so its examples (TOML, Kubernetes and
  Envoy YAML, the EDS JSON) are checked against its documented contract and
  against the code that exists: every TOML passes the sidecar's config parser,
  and its policy and upstreams build a ``srvwatch.Resolver``.
- The configuration reference lists every ``srvwatch.Policy`` field with its
  default, the metrics reference every key of ``Resolver.stats()``, the API
  page every public name.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import srvwatch
import srvwatch.contrib
import srvwatch.contrib.aiohttp
import srvwatch.contrib.httpx
import srvwatch.prometheus
import srvwatch.testing
from srvwatch.server.config import parse_config
from tests import zones
from tests.contrib_http import Backend
from tests.dns_servers import KnotFactory, KnotServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PLACEHOLDER = "127.0.0.1:5300"
"""The nameserver the examples name; the tests put a live Knot's address in its place."""

WEB_SRV = "_http._tcp.web.svc.test."
"""The SRV name of the adapter examples: HTTP backends started by the ``site`` fixture."""

NOT_RUN = {
    "pip install . && srvwatch demo": "installs into the environment; the demo itself "
    "is run by tests/test_cli.py",
    "bash tests/run.sh": "the test suite itself",
    "pip install 'srvwatch[aiohttp]'     # or 'srvwatch[httpx]'": "installs into the "
    "environment; test_adapter_extras_exist checks the extras",
}
BENCHMARK_COMMANDS = re.compile(
    r"^(sudo )?(SRVWATCH_BENCH_(QUICK=1|BASE=\S+) )?python3? (-m pytest )?(-m )?benchmarks[./]"
)
"""benchmarks.md's commands are the benchmarks, minutes each: .ci/run runs the resolver and
watch ones in their quick form; bench_adapters needs root and is run by hand."""


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    text: str
    output: str | None = None  # the ```text block right after a ```python block

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """Fenced blocks of one page, each python block paired with its output block."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = previous_end = 0
    while i < len(lines):
        match = re.match(r"^```(\S*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        start, lang = i + 1, match.group(1)
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{path.name}:{start}: unclosed code block")
        i += 1
        text = "\n".join(body) + "\n"
        previous = blocks[-1] if blocks else None
        between = lines[previous_end : start - 1] if previous else []
        if (
            lang == "text"
            and previous
            and previous.lang == "python"
            and not "".join(between).strip()
        ):
            blocks[-1] = dataclasses.replace(blocks[-1], output=text)
        else:
            blocks.append(Block(path.name, start, lang, text))
        previous_end = i
    return blocks


PAGES = sorted(p for p in DOCS.glob("*.md"))
OURS = [p for p in PAGES if p.name != "benchmarks.md"]
ALL_BLOCKS = [b for p in PAGES for b in parse_blocks(p)]


def blocks_of(lang: str, page: str | None = None) -> list[Block]:
    return [b for b in ALL_BLOCKS if b.lang == lang and (page is None or b.page == page)]


def section(page: str, heading: str) -> str:
    """The text of ``page`` from ``heading`` to the next heading of the same level."""
    text = (DOCS / page).read_text()
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    end = text.find(f"\n{level} ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def table(text: str) -> list[list[str]]:
    """Rows of the first markdown table in ``text``, header and rule dropped."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len(rows) > 2, "no table found"
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# -- the live site: Knot with the test zones, and HTTP backends for the adapters -------


@pytest.fixture(scope="module")
def site(knot_factory: KnotFactory) -> Iterator[KnotServer]:
    knot = knot_factory()
    backends = [Backend.start(f"web-{i}", f"127.0.0.7{i}") for i in (1, 2)]
    try:
        for backend in backends:
            knot.set_records(f"{backend.name}.svc.test.", "A", 30, [backend.address])
        knot.set_records(
            WEB_SRV,
            "SRV",
            30,
            [f"10 50 {b.port} {b.name}.svc.test." for b in backends],
        )
        yield knot
    finally:
        for backend in backends:
            backend.kill()
        knot.stop()


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, check=False
    )


# -- every example runs ----------------------------------------------------------------


def test_every_block_is_of_a_kind_this_test_checks() -> None:
    kinds = {"python", "console", "toml", "yaml", "json", "text", "zone"}
    for block in ALL_BLOCKS:
        if block.page == "benchmarks.md":
            assert block.lang != "python", f"{block.id}: a python example this test does not run"
            continue
        assert block.lang in kinds, f"{block.id}: a ```{block.lang} block is not checked"


@pytest.mark.parametrize("block", blocks_of("python"), ids=lambda b: b.id)
def test_python_example_runs(block: Block, site: KnotServer) -> None:
    source = block.text.replace(PLACEHOLDER, site.address())
    result = run([sys.executable, "-W", "error", "-c", source])
    assert result.returncode == 0, f"{block.id} failed:\n{result.stderr}"
    if block.output is not None:
        assert result.stdout == block.output, f"{block.id}: output differs:\n{result.stdout}"


def console_commands() -> list[tuple[Block, str, list[str]]]:
    """(block, command, the output lines shown under it) for every ``$`` line of our pages."""
    found = []
    for block in blocks_of("console"):
        command: str | None = None
        shown: list[str] = []
        for line in [*block.text.splitlines(), "$ <end>"]:
            if line.startswith("$ "):
                if command is not None:
                    found.append((block, command, shown))
                command, shown = line[2:].strip(), []
            elif line.strip():
                shown.append(line.strip())
    return found


@pytest.mark.parametrize(
    ("block", "command", "shown"),
    [pytest.param(*found, id=f"{found[0].id}:{found[1]}") for found in console_commands()],
)
def test_console_example(block: Block, command: str, shown: list[str], site: KnotServer) -> None:
    if block.page == "benchmarks.md":
        assert BENCHMARK_COMMANDS.match(command), f"{block.id}: {command!r} is not a benchmark"
        return
    if command in NOT_RUN:
        return
    argv = shlex.split(command.replace(PLACEHOLDER, site.address()))
    assert argv[0] == "srvwatch", f"{block.id}: {command!r} is neither run nor in NOT_RUN"
    result = run([sys.executable, "-W", "error", "-m", "srvwatch.cli", *argv[1:]])
    assert result.returncode == 0, f"{block.id}: {command}\n{result.stderr}"
    got = [line.strip() for line in result.stdout.splitlines()]
    for line in shown:
        assert line in got, f"{block.id}: {command}: {line!r} not in\n{result.stdout}"


def test_every_not_run_command_is_on_the_site() -> None:
    commands = {command for _, command, _ in console_commands()}
    assert set(NOT_RUN) <= commands, set(NOT_RUN) - commands


def test_zone_listings_are_records_of_the_test_zone() -> None:
    served = {" ".join(line.split()) for line in zones.DEFAULT_ZONE.splitlines()}
    for block in blocks_of("zone"):
        for line in block.text.splitlines():
            assert " ".join(line.split()) in served, f"{block.id}: {line!r} is not served"


def test_adapter_extras_exist() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(dep.startswith("aiohttp") for dep in extras["aiohttp"])
    assert any(dep.startswith("httpx") for dep in extras["httpx"])
    assert any(dep.startswith("mkdocs-material") for dep in extras["docs"])


# -- the sidecar's examples against its contract ---------------------------------------

SIDECAR_KEYS_HEADING = "## The sidecar's config file"


def documented_config_keys() -> dict[str, str]:
    """Key path -> default cell, from the configuration reference's sidecar table."""
    keys_table = section("configuration.md", SIDECAR_KEYS_HEADING).split("```", 2)[2]
    rows = table(keys_table.split("\n### ")[0])
    return {code(row[0])[0]: row[1] for row in rows}


def config_key_paths(config: dict[str, Any]) -> set[str]:
    paths = set()
    for key, value in config.items():
        if key == "policy":
            paths.add("policy.*")
        elif isinstance(value, dict):
            paths |= {f"{key}.{sub}" for sub in value}
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            paths |= {f"{key}[].{sub}" for item in value for sub in item}
        else:
            paths.add(key)
    return paths


def check_config(text: str, where: str) -> dict[str, Any]:
    """A sidecar config: documented keys only, and accepted by the sidecar's config parser."""
    config = tomllib.loads(text)
    unknown = config_key_paths(config) - set(documented_config_keys())
    assert not unknown, f"{where}: keys not in the configuration reference: {unknown}"
    parsed = parse_config(text.encode(), where)
    srvwatch.Resolver(list(parsed.upstreams or ["127.0.0.1"]), policy=parsed.policy)
    return config


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_config_reference_example_uses_every_documented_key() -> None:
    (block,) = blocks_of("toml", "configuration.md")
    config = check_config(block.text, block.id)
    assert config_key_paths(config) == set(documented_config_keys())


def test_kubernetes_example_matches_the_contract() -> None:
    synopsis = "".join(b.text for b in blocks_of("text", "sidecar.md"))
    flags = set(re.findall(r"--[a-z-]+", synopsis))
    manifests = [doc for b in blocks_of("yaml", "sidecar.md") for doc in yaml.safe_load_all(b.text)]
    (config_map,) = [m for m in manifests if m.get("kind") == "ConfigMap"]
    (pod,) = [m for m in manifests if m.get("kind") == "Pod"]
    config = check_config(config_map["data"]["srvwatch.toml"], "ConfigMap srvwatch.toml")
    containers = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
    (sidecar,) = [c for c in containers if c["name"] == "srvwatch"]
    if sidecar in pod["spec"].get("initContainers", []):
        assert sidecar["restartPolicy"] == "Always"  # a native sidecar, not a one-shot init
    args = sidecar["args"]
    assert args[0] == "serve"
    assert {a for a in args if a.startswith("--")} <= flags
    config_path = Path(args[args.index("--config") + 1])
    mounts = {m["mountPath"] for m in sidecar["volumeMounts"]}
    assert str(config_path.parent) in mounts
    admin = parse_config(config_map["data"]["srvwatch.toml"].encode(), "srvwatch.toml").admin
    # The kubelet probes the pod IP: an admin server on loopback would never be ready.
    assert admin.listen.host in ("", "0.0.0.0", "::")
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        assert sidecar[probe]["httpGet"]["port"] == admin.listen.port
        assert sidecar[probe]["httpGet"]["path"] == path
        assert "host" not in sidecar[probe]["httpGet"]  # the node's loopback, not the pod's
    for watch in config["watch"]:
        assert str(Path(watch["eds_file"]).parent) in mounts
    assert pod["spec"]["terminationGracePeriodSeconds"] > config["admin"]["lame_duck"]


def test_envoy_examples_match_the_contract() -> None:
    docs = [doc for b in blocks_of("yaml", "sidecar.md") for doc in yaml.safe_load_all(b.text)]
    clusters = [c for doc in docs if "clusters" in doc for c in doc["clusters"]]
    config = tomllib.loads(blocks_of("toml", "configuration.md")[0].text)
    eds_files = {w["eds_file"] for w in config["watch"]}
    stub_ports = {port_of(a) for a in config["stub"]["listen"]}
    by_type = {c["type"]: c for c in clusters}
    eds_path = by_type["EDS"]["eds_cluster_config"]["eds_config"]["path_config_source"]["path"]
    assert eds_path in eds_files
    resolvers = by_type["STRICT_DNS"]["typed_dns_resolver_config"]["typed_config"]["resolvers"]
    assert {r["socket_address"]["port_value"] for r in resolvers} <= stub_ports
    (eds,) = [b for b in blocks_of("json", "sidecar.md") if '"resources"' in b.text]
    response = json.loads(eds.text)
    (assignment,) = response["resources"]
    assert assignment["@type"] == (
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    )
    assert assignment["cluster_name"] in {w.get("cluster", w["name"]) for w in config["watch"]}
    priorities = [group["priority"] for group in assignment["endpoints"]]
    assert priorities == list(range(len(priorities)))  # dense from 0
    for group in assignment["endpoints"]:
        for lb in group["lb_endpoints"]:
            assert lb["load_balancing_weight"] >= 1
            socket_address = lb["endpoint"]["address"]["socket_address"]
            assert 0 < socket_address["port_value"] < 65536


def test_output_file_examples_are_what_the_code_writes() -> None:
    """The JSON-file example is update_document's shape, the EDS example eds_document's output."""
    from srvwatch.server.outputs import eds_document, update_document

    (shown,) = [b for b in blocks_of("json", "sidecar.md") if '"no_service"' in b.text]
    (eds,) = [b for b in blocks_of("json", "sidecar.md") if '"resources"' in b.text]
    document = json.loads(shown.text)
    endpoints = srvwatch.EndpointSet(
        document["name"],
        [
            srvwatch.Endpoint(e["target"], e["port"], e["priority"], e["weight"], e["addresses"])
            for e in document["endpoints"]
        ],
        ttl=document["ttl"],
    )
    update = srvwatch.Update.between(None, endpoints, version=document["version"])
    assert update_document(update) == document
    cluster = json.loads(eds.text)["resources"][0]["cluster_name"]
    assert eds_document(update, cluster) == json.loads(eds.text)


# -- the references in step with the code ----------------------------------------------


def test_configuration_reference_lists_every_policy_field_with_its_default() -> None:
    rows = table(section("configuration.md", "## The library: `srvwatch.Policy`"))
    documented = {code(row[0])[0]: ast.literal_eval(code(row[1])[0]) for row in rows}
    fields = {f.name: f.default for f in dataclasses.fields(srvwatch.Policy)}
    assert list(documented) == list(fields), "fields missing, extra or out of order"
    for name, default in fields.items():
        assert documented[name] == default, f"Policy.{name}: documented {documented[name]!r}"
        assert type(documented[name]) is type(default), name


def test_metrics_reference_lists_exactly_the_stats_counters() -> None:
    rows = table(section("metrics.md", "## `Resolver.stats()`").split("```text", 1)[1])
    documented = [code(row[0])[0] for row in rows]
    stats = srvwatch.Resolver(["127.0.0.1"]).stats()
    assert documented == list(stats), "counters missing, extra or out of order"


def test_prometheus_reference_lists_exactly_what_the_collector_yields() -> None:
    from srvwatch.prometheus import ResolverCollector, SidecarInfo

    rows = table(section("metrics.md", "## Prometheus metrics"))
    resolver = srvwatch.Resolver(["127.0.0.1"])
    info = SidecarInfo(watch_updates={"_http._tcp.api.svc.test.": 1})
    families = {
        family.name + ("_total" if family.type == "counter" else ""): family
        for family in ResolverCollector(resolver, lambda: info).collect()
    }
    documented = [code(row[0])[0] for row in rows]
    assert len(documented) == len(set(documented))
    assert set(documented) == set(families), "families missing or extra"
    stats = resolver.stats()
    sources = {"srvwatch.__version__", "Resolver.upstreams()", "Resolver.stub_responses()"}
    for row in rows:
        name, kind, labels, source = code(row[0])[0], row[1], code(row[2]), row[3]
        family = families[name]
        assert kind.split(" ")[0] == family.type, name
        yielded = {label for sample in family.samples for label in sample.labels}
        assert set(labels) == yielded or not family.samples, f"{name}: labels {yielded}"
        for counter in code(source):
            if counter.startswith("SidecarInfo."):
                assert hasattr(info, counter.split(".", 1)[1]), f"{name}: no {counter}"
            else:
                assert counter in stats or counter in sources, f"{name}: no source {counter!r}"
    assert srvwatch.__version__


def test_api_reference_covers_the_public_api() -> None:
    text = (DOCS / "api.md").read_text()
    entries = set(re.findall(r"^::: (\S+)$", text, re.MULTILINE))
    modules = [srvwatch, srvwatch.prometheus, srvwatch.testing, srvwatch.contrib]
    expected = {f"{m.__name__}.{name}" for m in modules for name in m.__all__}
    expected |= {"srvwatch.contrib.aiohttp.Resolver", "srvwatch.contrib.httpx.AsyncTransport"}
    assert expected <= entries, expected - entries


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav: Any) -> Iterator[str]:
        if isinstance(nav, str):
            yield nav
        elif isinstance(nav, list):
            for item in nav:
                yield from pages(item)
        elif isinstance(nav, dict):
            for value in nav.values():
                yield from pages(value)

    assert sorted(pages(config["nav"])) == sorted(p.name for p in PAGES)
    assert OURS
