"""The Kubernetes manifests in deploy/: valid against the API schemas, and wired together.

A schema checker catches a misspelt field; it cannot see that a probe asks a port
the admin server does not listen on, or that the pod's resolver points somewhere
the stub is not. Those are checked here, field by field, against the ConfigMap's
own TOML parsed by the sidecar's config parser.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from srvwatch.address import ListenAddress
from srvwatch.server.config import Config, parse_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))
OLDEST_KUBERNETES = "1.29.0"
"""Native sidecars (init containers with restartPolicy Always) are on by default from 1.29."""
WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet", "Job")
WILDCARDS = ("", "0.0.0.0", "::")

Doc = dict[str, Any]


def project_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match
    return match[1]


def load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def all_docs() -> Iterator[tuple[Path, Doc]]:
    for path in MANIFESTS:
        for doc in load(path):
            yield path, doc


def pod_specs(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield doc, doc["spec"]["template"]["spec"]


def containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def is_srvwatch(container: Doc) -> bool:
    return bool(re.search(r"/srvwatch:", container["image"]))


class Srvwatch:
    """One srvwatch container in its pod, with the config it will run."""

    def __init__(self, docs: list[Doc], workload: Doc, pod: Doc, container: Doc) -> None:
        self.workload, self.pod, self.container = workload, pod, container
        args = container.get("args", []) + container.get("command", [])
        config_path = args[args.index("--config") + 1]
        mount = next(
            m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/")
        )
        self.config_mount = mount
        self.config_path = config_path
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        config_map = next(
            d
            for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
        )
        key = config_path.removeprefix(mount["mountPath"] + "/")
        self.config_text: str = config_map["data"][key]
        self.config: Config = parse_config(self.config_text.encode(), key)

    def port(self, probe_port: int | str) -> int:
        """A probe's port: a number, or the name of one of the container's ports."""
        if isinstance(probe_port, int):
            return probe_port
        return next(p["containerPort"] for p in self.container["ports"] if p["name"] == probe_port)


def srvwatch_containers(path: Path) -> list[Srvwatch]:
    docs = load(path)
    found = [
        Srvwatch(docs, workload, pod, container)
        for workload, pod in pod_specs(docs)
        for container in containers(pod)
        if is_srvwatch(container)
    ]
    assert found, f"{path.name}: no srvwatch container"
    return found


def can_bind(port: int, pod: Doc, container: Doc) -> bool:
    """Whether the container's process may bind ``port`` (below 1024 needs a way in)."""
    if port >= 1024:
        return True
    sysctls = {
        s["name"]: int(s["value"]) for s in pod.get("securityContext", {}).get("sysctls", [])
    }
    if (
        not pod.get("hostNetwork")
        and sysctls.get("net.ipv4.ip_unprivileged_port_start", 1024) <= port
    ):
        return True
    # Without ambient capabilities (Kubernetes sets none), only uid 0 keeps a capability
    # across the exec of the server.
    security = container.get("securityContext", {})
    uid = security.get("runAsUser", pod.get("securityContext", {}).get("runAsUser"))
    return uid == 0 and "NET_BIND_SERVICE" in security.get("capabilities", {}).get("add", [])


def test_there_are_manifests() -> None:
    assert {p.name for p in MANIFESTS} >= {"sidecar.yaml", "node-local.yaml"}


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.latest_version()])
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_match_the_kubernetes_schemas(path: Path, version: str) -> None:
    docs = load(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_can_fail() -> None:
    """A misspelt field and a sidecar on a Kubernetes without native sidecars are both caught."""
    sidecar = next(d for d in load(DEPLOY / "sidecar.yaml") if d["kind"] == "Deployment")
    init = sidecar["spec"]["template"]["spec"]["initContainers"][0]
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolicy"):
        kubernetes_validate.validate(sidecar, "1.27.0", strict=True)
    init["readinesProbe"] = init.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(sidecar, OLDEST_KUBERNETES, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_config_maps_parse_and_name_their_upstreams(path: Path) -> None:
    for srv in srvwatch_containers(path):
        # The pod's resolver points at the stub (or srvwatch runs on the node), so
        # resolv.conf is no source of upstreams: they must be written out.
        assert srv.config.upstreams, f"{path.name}: upstreams must be set"
        for upstream in srv.config.upstreams:
            host = upstream.rsplit(":", 1)[0].strip("[]")
            assert not ipaddress.ip_address(host).is_loopback


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_probes_reach_the_admin_server(path: Path) -> None:
    for srv in srvwatch_containers(path):
        admin = srv.config.admin.listen
        # The kubelet probes the pod IP (the node IP with hostNetwork): loopback is unreachable.
        assert admin.host in WILDCARDS, f"admin.listen {admin} is not reachable by the kubelet"
        expected = {"readinessProbe": "/ready", "livenessProbe": "/health"}
        if "startupProbe" in srv.container:
            expected["startupProbe"] = "/ready"
        for probe, endpoint in expected.items():
            get = srv.container[probe]["httpGet"]
            assert get["path"] == endpoint, probe
            assert srv.port(get["port"]) == admin.port, probe
        assert admin.port in {p["containerPort"] for p in srv.container["ports"]}
        annotations = srv.workload["spec"]["template"]["metadata"].get("annotations", {})
        if "prometheus.io/port" in annotations:
            assert int(annotations["prometheus.io/port"]) == admin.port
            assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_config_file_is_mounted_where_serve_reads_it(path: Path) -> None:
    for srv in srvwatch_containers(path):
        assert srv.container["args"][:1] == ["serve"]
        assert srv.config_mount.get("readOnly") is True
        # subPath mounts never see a ConfigMap edit: reload would never happen.
        assert "subPath" not in srv.config_mount


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_srvwatch_runs_locked_down_and_can_bind_its_ports(path: Path) -> None:
    for srv in srvwatch_containers(path):
        security = srv.container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert set(security["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}
        pod_security = srv.pod.get("securityContext", {})
        assert pod_security.get("seccompProfile") == {"type": "RuntimeDefault"}
        if not srv.pod.get("hostNetwork"):
            assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
            assert pod_security["runAsUser"] != 0
        for address in (*srv.config.stub.listen, srv.config.admin.listen):
            assert can_bind(address.port, srv.pod, srv.container), f"{path.name}: {address}"
        resources = srv.container["resources"]
        assert resources["requests"]["cpu"]
        assert resources["requests"]["memory"]
        assert resources["limits"]["memory"]
        grace = srv.pod.get("terminationGracePeriodSeconds", 30)
        assert grace > srv.config.admin.lame_duck + 10


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_output_files_land_on_writable_volumes(path: Path) -> None:
    """The root filesystem is read-only: json_file and eds_file need a volume of their own."""
    for srv in srvwatch_containers(path):
        writable = [
            m["mountPath"] for m in srv.container["volumeMounts"] if not m.get("readOnly", False)
        ]
        for watch in srv.config.watch:
            for target in (watch.json_file, watch.eds_file):
                if target is not None:
                    assert any(target.startswith(p + "/") for p in writable), target


def test_the_sidecar_is_native_and_the_pod_resolves_through_it() -> None:
    (srv,) = srvwatch_containers(DEPLOY / "sidecar.yaml")
    assert srv.container in srv.pod["initContainers"]
    assert srv.container["restartPolicy"] == "Always"
    assert srv.pod["containers"], "the sidecar has an app beside it"
    assert srv.pod["dnsPolicy"] == "None"
    nameservers = srv.pod["dnsConfig"]["nameservers"]
    # resolv.conf has no port: the stub must answer on 53 at the first nameserver.
    assert ListenAddress(nameservers[0], 53) in srv.config.stub.listen
    assert nameservers == ["127.0.0.1"]
    # Only the pod itself asks a sidecar: never an open resolver.
    assert all(ipaddress.ip_network(n).is_loopback for n in srv.config.stub.allow)
    for watch in srv.config.watch:
        if watch.json_file:
            app_mounts = [
                m["mountPath"] for c in srv.pod["containers"] for m in c.get("volumeMounts", [])
            ]
            assert any(watch.json_file.startswith(p + "/") for p in app_mounts)


def test_the_node_local_daemonset_serves_the_link_local_address() -> None:
    docs = load(DEPLOY / "node-local.yaml")
    (srv,) = srvwatch_containers(DEPLOY / "node-local.yaml")
    assert srv.workload["kind"] == "DaemonSet"
    assert srv.pod["hostNetwork"] is True
    (stub,) = srv.config.stub.listen
    assert ipaddress.ip_address(stub.host).is_link_local
    assert stub.port == 53
    # The init container puts exactly that address on the node.
    (init,) = srv.pod["initContainers"]
    script = " ".join(init["command"])
    assert f"ip addr add {stub.host}/32" in script
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    # Clients of it resolve through it first, and it lets them in.
    clients = [pod for workload, pod in pod_specs(docs) if workload["kind"] != "DaemonSet"]
    assert clients
    for pod in clients:
        assert pod["dnsPolicy"] == "None"
        assert pod["dnsConfig"]["nameservers"][0] == stub.host
    assert any(not ipaddress.ip_network(n).is_loopback for n in srv.config.stub.allow)


@pytest.mark.parametrize(("path", "doc"), list(all_docs()), ids=lambda x: getattr(x, "name", ""))
def test_images_are_pinned(path: Path, doc: Doc) -> None:
    if doc["kind"] not in WORKLOADS:
        return
    for container in containers(doc["spec"]["template"]["spec"]):
        name, _, tag = container["image"].rpartition(":")
        assert name, f"{path.name}: {container['image']} has no tag"
        assert "/" not in tag, f"{path.name}: {container['image']} has no tag"
        assert tag != "latest"
        if is_srvwatch(container):
            assert tag == project_version()


def test_the_dockerfile_matches_the_manifests() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for base in re.findall(r"^FROM (\S+)", dockerfile, re.M):
        assert ":" in base, base
        assert not base.endswith(":latest"), base
    (srv, *_) = srvwatch_containers(DEPLOY / "sidecar.yaml")
    user = re.search(r"^USER (\d+):(\d+)", dockerfile, re.M)
    assert user
    assert int(user[1]) == srv.pod["securityContext"]["runAsUser"]
    cmd = re.search(r"^CMD (\[.*\])", dockerfile, re.M)
    assert cmd
    assert yaml.safe_load(cmd[1]) == srv.container["args"]
    assert re.search(r"^ENTRYPOINT \[\"srvwatch\"\]", dockerfile, re.M)
    assert f"srvwatch:{project_version()}" in dockerfile
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extras in re.findall(r'"(?:\.|srvwatch)\[([\w,]+)\]"', dockerfile):
        for extra in extras.split(","):
            assert re.search(rf"^{extra} = \[", pyproject, re.M), extra
    exposed = set(re.findall(r"(\d+)/tcp", dockerfile))
    assert str(srv.config.admin.listen.port) in exposed


def test_the_readme_documents_the_placeholder_image() -> None:
    readme = (DEPLOY / "README.md").read_text()
    assert f"ghcr.io/example/srvwatch:{project_version()}" in readme
    assert "docker build -f deploy/Dockerfile" in readme
    for name in ("sidecar.yaml", "node-local.yaml"):
        assert name in readme
