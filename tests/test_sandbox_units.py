"""Unit tests of the sandbox's parts that need no running platform: versions, builds, the address plan,
and the agent's kubelet logic (environment, commands, users, probes, hosts, volumes' paths)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubploy.processes import command_line, proc_start_time, read_pid, runs, stop
from hubploy_sandbox import builds, image_envs, versions
from hubploy_sandbox.agent import containers, envvars, podfiles, probes
from hubploy_sandbox.agent.volumes import Mount, VolumeNotReady, _safe_join
from hubploy_sandbox.env import sandbox_env, shell_exports
from hubploy_sandbox.errors import SandboxError
from hubploy_sandbox.network import RANGE, ClusterNetwork
from hubploy_sandbox.paths import Ports, SandboxPaths

# --- versions and builds ------------------------------------------------------------------------------


def test_the_kubernetes_version_is_set_once_by_the_build_module() -> None:
    go_mod = (versions.GOBUILD / "kubernetes" / "go.mod").read_text()
    assert f"require k8s.io/kubernetes {versions.KUBERNETES_VERSION}\n" in go_mod
    assert versions.minor(versions.KUBERNETES_VERSION) >= (1, 34)  # a release in upstream support
    # every staging module is replaced by the published release of the same version
    published = "v0." + versions.KUBERNETES_VERSION.lstrip("v").split(".", 1)[1]
    replaces = [line.split() for line in go_mod.splitlines() if "=>" in line]
    assert len(replaces) >= 30
    assert all(r[0] == r[2] and r[3] == published for r in replaces), replaces


def test_staging_replacements_map_every_staging_module() -> None:
    upstream = (
        "replace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n"
        "\tk8s.io/kubectl => ./staging/src/k8s.io/kubectl\n)\n"
    )
    assert builds.staging_replacements(upstream, "v1.36.3") == [
        "\tk8s.io/api => k8s.io/api v0.36.3",
        "\tk8s.io/kubectl => k8s.io/kubectl v0.36.3",
    ]
    with pytest.raises(SandboxError):
        builds.staging_replacements("module k8s.io/kubernetes\n", "v1.36.3")


def test_version_stamps_make_the_api_server_report_its_release() -> None:
    flags = builds.kubernetes_ldflags("v1.36.3")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.36.3" in flags
        assert f"-X {package}.gitMinor=36" in flags


def test_an_old_go_is_refused_with_the_version_it_needs(tmp_path: Path) -> None:
    fake = tmp_path / "go"
    fake.write_text("#!/bin/sh\necho go1.19.8\n")
    fake.chmod(0o755)
    with pytest.raises(SandboxError, match=r"Go 1\.19\.8 is too old .* needs Go 1\.26"):
        builds.require_go(versions.GOBUILD / "kubernetes", {"PATH": str(tmp_path)})
    with pytest.raises(SandboxError, match="Go is not installed"):
        builds.require_go(versions.GOBUILD / "kubernetes", {"PATH": str(tmp_path / "nothing")})


# --- network ----------------------------------------------------------------------------------------


def test_each_cluster_gets_its_own_block_of_the_benchmark_range() -> None:
    first, second = ClusterNetwork(0), ClusterNetwork(1)
    assert str(first.pod_cidr) == "198.18.0.0/21" and first.node_ip == "198.18.0.1"
    assert str(first.service_cidr) == "198.18.8.0/22" and str(first.load_balancer_cidr) == "198.18.12.0/24"
    assert str(second.pod_cidr) == "198.18.16.0/21"
    assert all(n.pod_cidr.subnet_of(RANGE) for n in (first, second, ClusterNetwork(31)))
    assert not first.pod_cidr.overlaps(second.pod_cidr)
    assert first.node_ip not in first.pod_ips() and len(first.pod_ips()) == 2045
    assert first.service_cidr.subnet_of(first.local_cidr) and first.load_balancer_cidr.subnet_of(
        first.local_cidr
    )


def test_port_offset_moves_the_registry() -> None:
    assert Ports.from_env({"HUBPLOY_SANDBOX_PORT_OFFSET": "300"}).registry == 5300


# --- image environments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "env"),
    [
        ("quay.io/jupyterhub/k8s-hub:4.4.0", image_envs.HUB_IMAGE_4),
        ("localhost:5000/jupyterhub/k8s-hub:4.2.0", image_envs.HUB_IMAGE_4),
        ("quay.io/jupyterhub/k8s-hub:3.3.8", image_envs.HUB_IMAGE_3),
        ("quay.io/jupyterhub/configurable-http-proxy:5.2.0", image_envs.PROXY_IMAGE_5),
        ("quay.io/jupyterhub/configurable-http-proxy:4.6.1", image_envs.PROXY_IMAGE_4),
        ("registry.k8s.io/pause:3.10.1", image_envs.PAUSE_IMAGE),
        ("registry.k8s.io/kube-scheduler:v1.30.14", image_envs.KUBE_SCHEDULER_IMAGE),
        ("quay.io/jupyterhub/k8s-image-awaiter:4.4.0@sha256:abc", image_envs.IMAGE_AWAITER_IMAGE),
        ("localhost:5000/hubploy/physics-user:0a1b2c3d", image_envs.OTHER_IMAGE),
    ],
)
def test_images_are_matched_by_repository_and_tag_whatever_the_registry(image: str, env: object) -> None:
    assert image_envs.env_for(image) is env


def test_an_unknown_image_runs_host_programs_then_the_single_user_environment() -> None:
    path = image_envs.path_for("localhost:5000/someone/user:v1", Path("/cache")).split(":")
    assert path[0] == "/usr/local/sbin" and path[-1] == "/cache/images/k8s-singleuser-sample-4.4.0/bin"
    hub = image_envs.path_for("quay.io/jupyterhub/k8s-hub:4.4.0", Path("/cache")).split(":")
    assert hub[0] == "/cache/images/k8s-hub-4.4.0/bin"


# --- the agent's kubelet logic ------------------------------------------------------------------------


def test_dollar_references_expand_as_kubernetes_does() -> None:
    env = {"HUB_SERVICE_PORT": "8081", "EMPTY": ""}
    assert envvars.expand("http://hub:$(HUB_SERVICE_PORT)/x", env.get) == "http://hub:8081/x"
    assert (
        envvars.expand("$(MISSING) $$(HUB_SERVICE_PORT) $(EMPTY)|", env.get)
        == "$(MISSING) $(HUB_SERVICE_PORT) |"
    )
    assert envvars.expand("a$", env.get) == "a$" and envvars.expand("$(unclosed", env.get) == "$(unclosed"


def test_service_variables_follow_the_kubelet_naming() -> None:
    env = envvars.service_env(
        [
            envvars.ServiceInfo("proxy-api", "198.18.8.7", (("http", 8001, "TCP"),)),
            envvars.ServiceInfo("headless", "None", (("", 80, "TCP"),)),
        ]
    )
    assert env["PROXY_API_SERVICE_HOST"] == "198.18.8.7" and env["PROXY_API_SERVICE_PORT"] == "8001"
    assert env["PROXY_API_SERVICE_PORT_HTTP"] == "8001"
    assert env["PROXY_API_PORT"] == "tcp://198.18.8.7:8001"
    assert env["PROXY_API_PORT_8001_TCP_ADDR"] == "198.18.8.7"
    assert not any(k.startswith("HEADLESS") for k in env)


class FakeSources:
    namespace = "ns"

    def __init__(self, data: dict[tuple[str, str], dict[str, str]]) -> None:
        self._data = data

    def data(self, kind: str, name: str) -> dict[str, str] | None:
        return self._data.get((kind, name))

    def key(self, kind: str, ref: dict) -> str | None:
        return envvars.Sources.key(self, kind, ref)  # type: ignore[arg-type]


POD = {
    "metadata": {"name": "hub-0", "namespace": "ns", "uid": "u1", "labels": {"app": "jupyterhub"}},
    "spec": {"nodeName": "sandbox-node", "serviceAccountName": "hub"},
}


def test_container_environment_resolves_value_from_and_orders_sources() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "URL", "value": "http://hub:$(HUB_SERVICE_PORT)/$(NS)"},
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        ],
        "resources": {"limits": {"memory": "2Gi"}},
    }
    sources = FakeSources(
        {("configMap", "cm"): {"a": "1", "bad key": "x"}, ("secret", "hub"): {"token": "t0k"}}
    )
    env = envvars.container_env(
        POD,
        container,
        sources=sources,
        services={"HUB_SERVICE_PORT": "8081"},
        pod_ip="198.18.0.5",
        host_ip="198.18.0.1",
        allocatable={},
    )
    assert env == {
        "HUB_SERVICE_PORT": "8081",
        "CM_a": "1",
        "TOKEN": "t0k",
        "NS": "ns",
        "APP": "jupyterhub",
        "IP": "198.18.0.5",
        "URL": "http://hub:8081/ns",
        "MEM": "2048",
    }
    missing = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "nokey"}}}]}
    with pytest.raises(envvars.ConfigMissing, match="key 'nokey' not found in secret ns/hub"):
        envvars.container_env(
            POD, missing, sources=sources, services={}, pod_ip="", host_ip="", allocatable={}
        )


def test_command_and_args_against_the_images_entrypoint_and_cmd() -> None:
    hub = image_envs.HUB_IMAGE_4
    env = {"PORT": "8081"}
    assert containers.command({}, hub, env) == [
        "tini",
        "--",
        "jupyterhub",
        "--config",
        "/usr/local/etc/jupyterhub/jupyterhub_config.py",
    ]
    assert containers.command({"args": ["jupyterhub", "--port=$(PORT)"]}, hub, env) == [
        "tini",
        "--",
        "jupyterhub",
        "--port=8081",
    ]
    assert containers.command({"command": ["sh"]}, hub, env) == ["sh"]
    assert containers.command({"command": ["sh"], "args": ["-c", "x"]}, hub, env) == ["sh", "-c", "x"]
    assert containers.command({}, image_envs.OTHER_IMAGE, env) == []


def test_users_come_from_the_container_then_the_pod_then_the_image() -> None:
    pod = {"spec": {"securityContext": {"fsGroup": 1000, "runAsUser": 2000, "supplementalGroups": [5]}}}
    assert containers.identity(pod, {}, image_envs.HUB_IMAGE_4) == containers.Identity(2000, 0, (0, 1000, 5))
    assert containers.identity(
        pod, {"securityContext": {"runAsUser": 1000, "runAsGroup": 1000}}, image_envs.HUB_IMAGE_4
    ) == containers.Identity(1000, 1000, (1000, 5))
    assert containers.identity({"spec": {}}, {}, image_envs.SINGLEUSER_IMAGE) == containers.Identity(
        1000, 1000, (1000,)
    )
    assert containers.identity({"spec": {}}, {}, image_envs.OTHER_IMAGE) == containers.Identity(0, 0, (0,))


def test_programs_are_found_through_the_containers_mounts(tmp_path: Path) -> None:
    script = tmp_path / "volume" / "run.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    mounts = [Mount(str(script.parent), "/scripts")]
    assert containers.find_program("/scripts/run.sh", "", mounts) == "/scripts/run.sh"
    assert containers.find_program("run.sh", "/usr/bin:/scripts", mounts) == "/scripts/run.sh"
    assert containers.find_program("sh", "/bin", []) == "/bin/sh"
    assert containers.find_program("no-such-program", "/usr/bin:/bin", mounts) is None
    assert (
        containers.find_program(
            "/image-awaiter",
            "/bin",
            containers.image_file_mounts(image_envs.IMAGE_AWAITER_IMAGE, Path("/cache")),
        )
        == "/image-awaiter"
    )
    scheduler = containers.image_file_mounts(image_envs.KUBE_SCHEDULER_IMAGE, Path("/cache"))
    assert scheduler == [
        Mount(
            f"/cache/kubernetes-{versions.KUBERNETES_VERSION}/kube-scheduler",
            "/usr/local/bin/kube-scheduler",
            readonly=True,
        )
    ]


def test_volume_item_paths_stay_inside_their_volume(tmp_path: Path) -> None:
    assert _safe_join(tmp_path, "a/b.txt") == tmp_path / "a" / "b.txt"
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(VolumeNotReady):
            _safe_join(tmp_path, bad)


def test_hosts_resolve_services_by_qualified_names_and_own_namespace_short_names() -> None:
    text = podfiles.hosts(
        pod_ip="198.18.0.9",
        hostname="hub-0",
        namespace="a",
        services=[("a", "hub", "198.18.8.3"), ("b", "hub", "198.18.8.4"), ("a", "hl", "None")],
    )
    assert "198.18.0.9\thub-0" in text
    assert "198.18.8.3\thub.a.svc.cluster.local hub.a.svc hub.a hub\n" in text
    assert "198.18.8.4\thub.b.svc.cluster.local hub.b.svc hub.b\n" in text
    assert "hl" not in text


def test_container_users_get_passwd_entries_the_host_lacks() -> None:
    image_user = image_envs.User(4242, 4243, "tester", "/home/tester")
    passwd, group = podfiles.passwd_and_group(image_user, 4242, 4243)
    assert passwd.endswith("tester:x:4242:4243::/home/tester:/bin/sh\n") and group.endswith(
        "tester:x:4243:\n"
    )
    assert podfiles.home_of(passwd, 4242) == "/home/tester"
    other, _ = podfiles.passwd_and_group(image_user, 4300, 0)
    assert other.endswith("user4300:x:4300:0::/:/bin/sh\n")  # gid 0 exists on the host: no group entry
    assert podfiles.home_of(passwd, 0) == "/root"


def test_probe_thresholds_and_the_eager_first_success() -> None:
    state = probes.ProbeState({"periodSeconds": 10, "failureThreshold": 2}, started=100.0)
    assert state.due(100.0)
    state.record(False, "refused", 100.0)
    assert not state.passed and not state.failed and state.next_at == 101.0  # eager until the first success
    state.record(True, "", 101.0)
    assert state.passed and state.next_at == 111.0  # then every period
    state.record(False, "500", 111.0)
    assert state.passed  # one failure is below the threshold
    state.record(False, "500", 121.0)
    assert not state.passed and state.failed


def test_probes_check_http_and_tcp_against_the_pod_address() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..."
        port = int(line.split(" port ")[1].split()[0])
        container = {"ports": [{"name": "http", "containerPort": port}]}
        assert probes.check({"httpGet": {"path": "/", "port": "http"}}, container, "127.0.0.1", None)[0]
        ok, why = probes.check({"httpGet": {"path": "/missing", "port": port}}, container, "127.0.0.1", None)
        assert not ok and "404" in why
        assert probes.check({"tcpSocket": {"port": port}}, container, "127.0.0.1", None)[0]
    finally:
        server.terminate()
        server.wait()
    assert not probes.check({"tcpSocket": {"port": port}}, container, "127.0.0.1", None)[0]
    assert not probes.check({"exec": {"command": ["true"]}}, container, "127.0.0.1", None)[0]


# --- processes, env -----------------------------------------------------------------------------------


def test_shell_exports_are_quoted() -> None:
    assert shell_exports({"PATH": "/a b", "KUBECONFIG": "k"}) == "export KUBECONFIG=k\nexport PATH='/a b'\n"


def test_env_of_a_sandbox_that_is_not_up_is_an_error(tmp_path: Path) -> None:
    paths = SandboxPaths(tmp_path / "cache", tmp_path / "runtime", Ports())
    with pytest.raises(SandboxError, match="no sandbox is running"):
        sandbox_env(paths)


def test_pid_files_guard_against_pid_reuse(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    pid_file.write_text(f"{os.getpid()} 1\n")  # a start time that is not this process's
    assert read_pid(pid_file) is None
    proc = subprocess.Popen(["/bin/sleep", "30"], start_new_session=True)
    pid_file.write_text(f"{proc.pid} {proc_start_time(proc.pid)}\n")
    assert read_pid(pid_file) == proc.pid
    deadline = time.monotonic() + 10
    while not command_line(proc.pid) and time.monotonic() < deadline:  # the child between fork and exec
        time.sleep(0.05)
    assert runs(proc.pid, ["/usr/bin/sleep", "30"]) and not runs(proc.pid, ["/usr/bin/sleep", "31"])
    assert stop(pid_file)
    proc.wait(timeout=10)
    assert read_pid(pid_file) is None
