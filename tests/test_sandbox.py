"""The sandbox is a real platform: a current Kubernetes whose agent runs what real charts need as a
kubelet, kube-proxy, cluster DNS, a load balancer and a storage provisioner would. Plain manifests for
each capability; then helm 3 and 4 with hooks, and a chart that runs JupyterHub, KubeSpawner and CHP.
Also the sandbox's registry, buildah and sops."""

from __future__ import annotations

import base64
import json
import secrets
import shlex
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from hubploy.errors import CommandError
from hubploy.processes import proc_start_time, read_pid
from hubploy_sandbox.agent.envvars import parse_quantity
from hubploy_sandbox.builds import build_kubernetes
from hubploy_sandbox.versions import KUBERNETES_VERSION

pytest_plugins = ["fixtures.sandbox"]  # harmless when tests/conftest.py loads it too

pytestmark = pytest.mark.sandbox

CHARTS = Path(__file__).resolve().parent / "charts"
HOST_IMAGE = "localhost:5000/base/busybox:latest"  # an image the sandbox does not know: host programs


def http_get(
    url: str,
    timeout: float = 3.0,
    auth: tuple[str, str] | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int | None, bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    req.add_header(
        "Accept",
        "application/vnd.oci.image.manifest.v1+json, "
        "application/vnd.docker.distribution.manifest.v2+json, application/json",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return None, b""


def pod(sandbox, namespace: str, name: str) -> dict:
    return sandbox.get("pod", name, namespace=namespace)


def condition(obj: dict, kind: str) -> str | None:
    return next(
        (c["status"] for c in obj.get("status", {}).get("conditions") or [] if c["type"] == kind), None
    )


def wait_ready(sandbox, namespace: str, name: str, timeout: float = 60) -> dict:
    return sandbox.wait_for(
        f"pod {name} Ready",
        lambda: (p := pod(sandbox, namespace, name)) and condition(p, "Ready") == "True" and p,
        timeout,
    )


def wait_phase(sandbox, namespace: str, name: str, phase: str, timeout: float = 60) -> dict:
    return sandbox.wait_for(
        f"pod {name} {phase}",
        lambda: (p := pod(sandbox, namespace, name)) and p["status"].get("phase") == phase and p,
        timeout,
    )


def logs(sandbox, namespace: str, name: str, *args: str) -> str:
    return sandbox.kubectl("logs", "-n", namespace, name, *args).stdout


def events(sandbox, namespace: str, name: str) -> list[dict]:
    return sandbox.get("events", "--field-selector", f"involvedObject.name={name}", namespace=namespace)[
        "items"
    ]


def pod_manifest(name: str, command: str, **spec: object) -> str:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "containers": [{"name": "main", "image": HOST_IMAGE, "command": ["/bin/sh", "-c", command]}],
            **spec,
        },
    }
    return yaml.safe_dump(body)


# --- the node ---------------------------------------------------------------------------------------


def test_the_node_is_ready_and_keeps_its_lease(sandbox) -> None:
    node = sandbox.get("node", "sandbox-node")
    assert condition(node, "Ready") == "True"
    assert parse_quantity(node["status"]["capacity"]["pods"]) == 1000
    assert node["status"]["nodeInfo"]["kubeletVersion"] == KUBERNETES_VERSION
    version = json.loads(sandbox.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    assert version == KUBERNETES_VERSION
    lease = sandbox.get("lease", "sandbox-node", namespace="kube-node-lease")
    renewed = lease["spec"]["renewTime"]
    sandbox.wait_for(
        "a renewed node lease",
        lambda: (
            sandbox.get("lease", "sandbox-node", namespace="kube-node-lease")["spec"]["renewTime"] != renewed
        ),
        timeout=25,
    )
    taints = sandbox.get("node", "sandbox-node")["spec"].get("taints") or []
    assert not taints, taints  # the node lifecycle controller runs and finds nothing to taint


def test_the_cached_build_is_recognised_so_setup_does_not_rebuild(sandbox) -> None:
    say: list[str] = []
    assert build_kubernetes(sandbox.paths, say=say.append) is False
    assert say == [f"kubernetes {KUBERNETES_VERSION}: cached in {sandbox.paths.k8s_bin}"]


# --- pods -------------------------------------------------------------------------------------------


def test_a_pod_runs_its_command_with_the_pods_env_and_volumes(sandbox, sandbox_namespace) -> None:
    ns = sandbox_namespace
    sandbox.apply(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "cfg"},
                    "data": {"greeting": "hello", "app.conf": "setting = 1\n"},
                },
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "sec"},
                    "stringData": {"password": "s3cr3t"},
                },
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "proxy-api"},
                    "spec": {
                        "selector": {"app": "none"},
                        "ports": [{"name": "api", "port": 8001, "protocol": "TCP"}],
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "home"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                },
            ]
        ),
        ns,
    )
    script = "; ".join(
        [
            "echo ID=$(id -u):$(id -g)",
            "echo HOST=$(hostname)",
            "echo GREETING=$GREETING",
            "echo PASSWORD=$PASSWORD",
            "echo NS=$MY_NS",
            "echo PROXY=$PROXY_API_SERVICE_HOST:$PROXY_API_SERVICE_PORT",
            "echo K8S=$KUBERNETES_SERVICE_HOST",
            "echo CONF=$(cat /etc/app/app.conf)",
            "echo SUBPATH=$(cat /srv/greeting)",
            "echo SECRET=$(cat /secret/password)",
            "echo TOKEN=$(wc -c < /var/run/secrets/kubernetes.io/serviceaccount/token)",
            "echo SANS=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)",
            "echo CA=$(head -c 27 /var/run/secrets/kubernetes.io/serviceaccount/ca.crt)",
            "echo hi > /scratch/x && echo SCRATCH=$(cat /scratch/x)",
            "date > /home/jovyan/written",
            "echo HOSTS=$(getent hosts proxy-api | cut -d' ' -f1)",
            "echo IPS=$(ip -4 -o addr show eth0 | awk '{print $4}')",
            "echo done; sleep 3600",
        ]
    )
    manifest = yaml.safe_load(
        pod_manifest(
            "envpod",
            script,
            securityContext={"runAsUser": 1000, "fsGroup": 1000},
            volumes=[
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "sec", "secret": {"secretName": "sec"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "home", "persistentVolumeClaim": {"claimName": "home"}},
            ],
        )
    )
    manifest["spec"]["containers"][0].update(
        env=[
            {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
            {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        volumeMounts=[
            {"name": "cfg", "mountPath": "/etc/app"},
            {"name": "cfg", "mountPath": "/srv/greeting", "subPath": "greeting"},
            {"name": "sec", "mountPath": "/secret", "readOnly": True},
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "home", "mountPath": "/home/jovyan"},
        ],
    )
    sandbox.apply(yaml.safe_dump(manifest), ns)
    running = wait_ready(sandbox, ns, "envpod")
    out = sandbox.wait_for(
        "the pod's output", lambda: "done" in (text := logs(sandbox, ns, "envpod")) and text
    )
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    proxy_api = sandbox.get("service", "proxy-api", namespace=ns)["spec"]["clusterIP"]
    kubernetes = sandbox.get("service", "kubernetes", namespace="default")["spec"]["clusterIP"]
    assert values["ID"] == "1000:0" and values["HOST"] == "envpod"
    assert (values["GREETING"], values["PASSWORD"], values["NS"]) == ("hello", "s3cr3t", ns)
    assert values["PROXY"] == f"{proxy_api}:8001" and values["K8S"] == kubernetes
    assert values["CONF"] == "setting = 1" and values["SUBPATH"] == "hello" and values["SECRET"] == "s3cr3t"
    assert (
        int(values["TOKEN"]) > 100 and values["SANS"] == ns and values["CA"] == "-----BEGIN CERTIFICATE-----"
    )
    assert values["SCRATCH"] == "hi" and values["HOSTS"] == proxy_api  # its own namespace's Service
    assert values["IPS"] == running["status"]["podIP"] + "/21"
    claim = sandbox.get("pvc", "home", namespace=ns)
    volume = sandbox.get("pv", claim["spec"]["volumeName"])
    assert claim["status"]["phase"] == "Bound" and claim["spec"]["storageClassName"] == "standard"
    assert (Path(volume["spec"]["hostPath"]["path"]) / "written").is_file()  # the claim is a host directory
    assert not Path("/home/jovyan/written").exists()  # and nothing leaked to the host's own paths


def test_pods_get_unique_addresses_and_reach_services_by_name(sandbox, sandbox_namespace) -> None:
    ns = sandbox_namespace
    server = (
        "mkdir -p /srv/www && echo served-by-$(hostname) > /srv/www/who && sleep 2 && "
        "exec python3 -m http.server 8080 --directory /srv/www"
    )
    for name in ("web-a", "web-b"):
        manifest = yaml.safe_load(pod_manifest(name, server))
        manifest["metadata"]["labels"] = {"app": "web"}
        manifest["spec"]["containers"][0].update(
            ports=[{"name": "http", "containerPort": 8080}],
            readinessProbe={"httpGet": {"path": "/who", "port": "http"}, "periodSeconds": 5},
        )
        sandbox.apply(yaml.safe_dump(manifest), ns)
    sandbox.apply(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "web"},
                    "spec": {
                        "selector": {"app": "web"},
                        "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}],
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "web-public"},
                    "spec": {
                        "type": "LoadBalancer",
                        "selector": {"app": "web"},
                        "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}],
                    },
                },
            ]
        ),
        ns,
    )
    first = pod(sandbox, ns, "web-a")
    assert condition(first, "Ready") != "True"  # the readiness probe gates it while the server sleeps
    cluster_ip = sandbox.get("service", "web", namespace=ns)["spec"]["clusterIP"]
    with pytest.raises(ConnectionRefusedError):  # no ready endpoint: refused, as kube-proxy rejects
        socket.create_connection((cluster_ip, 80), timeout=3).close()
    ips = {wait_ready(sandbox, ns, name)["status"]["podIP"] for name in ("web-a", "web-b")}
    assert len(ips) == 2
    client = (
        'python3 -c "import urllib.request as u; '
        "[print(u.urlopen('http://web.' + __import__('os').environ['NS'] "
        "+ '.svc.cluster.local/who')"
        '.read().decode().strip()) for _ in range(4)]"; sleep 3600'
    )
    manifest = yaml.safe_load(pod_manifest("client", client))
    manifest["spec"]["containers"][0]["env"] = [{"name": "NS", "value": ns}]
    sandbox.apply(yaml.safe_dump(manifest), ns)
    out = sandbox.wait_for(
        "the client's answers", lambda: (text := logs(sandbox, ns, "client")).count("served-by") == 4 and text
    )
    assert set(out.split()) == {"served-by-web-a", "served-by-web-b"}  # round robin over both endpoints
    public = sandbox.service_address("web-public", ns)
    assert http_get(public + "/who")[0] == 200
    assert http_get(f"http://{cluster_ip}/who")[1].startswith(b"served-by-web-")


def test_a_ready_pod_marked_not_ready_by_the_node_controller_is_reported_ready_again(
    sandbox, sandbox_namespace
) -> None:
    """After the API server was away for longer than the node's lease, the node lifecycle controller marks
    the node's pods not ready; the kubelet (here the agent) reports what it knows again, so a chart's
    Deployments become available again without a restart."""
    ns = sandbox_namespace
    sandbox.apply(pod_manifest("steady", "sleep 3600"), ns)
    wait_ready(sandbox, ns, "steady")
    marked = [
        {"type": kind, "status": "False", "reason": "NodeNotReady"} for kind in ("Ready", "ContainersReady")
    ]
    sandbox.kubectl(
        "patch",
        "pod",
        "steady",
        "-n",
        ns,
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps({"status": {"conditions": marked}}),
    )
    sandbox.wait_for(
        "the agent to report the pod ready again",
        lambda: condition(pod(sandbox, ns, "steady"), "Ready") == "True",
        timeout=20,
    )


def test_restarts_back_off_and_logs_keep_the_previous_run(sandbox, sandbox_namespace) -> None:
    ns = sandbox_namespace
    sandbox.apply(pod_manifest("crasher", "echo run-$(date +%s%N); exit 3"), ns)
    crashed = sandbox.wait_for(
        "two restarts",
        lambda: (
            (p := pod(sandbox, ns, "crasher"))["status"].get("containerStatuses")
            and p["status"]["containerStatuses"][0]["restartCount"] >= 2
            and p
        ),
        timeout=60,
    )
    status = crashed["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 3 and condition(crashed, "Ready") == "False"
    assert logs(sandbox, ns, "crasher", "--previous").startswith("run-")
    assert any(e["reason"] == "BackOff" for e in events(sandbox, ns, "crasher"))


def test_deleting_a_pod_stops_its_process(sandbox, sandbox_namespace) -> None:
    ns = sandbox_namespace
    sandbox.apply(pod_manifest("sleeper", "trap 'echo got TERM; exit 0' TERM; while :; do sleep 1; done"), ns)
    running = wait_ready(sandbox, ns, "sleeper")
    pid_file = next(
        sandbox.paths.cluster(1).agent_state.glob(f"pod-pids/{running['metadata']['uid']}_main.pid")
    )
    pid = read_pid(pid_file)
    assert pid is not None
    sandbox.kubectl("delete", "pod", "sleeper", "-n", ns, "--wait=true", "--timeout=60s")
    assert proc_start_time(pid) is None
    assert sandbox.kubectl("get", "pod", "sleeper", "-n", ns, check=False).returncode != 0


def test_a_program_the_host_lacks_is_simulated_with_an_event(sandbox, sandbox_namespace) -> None:
    ns = sandbox_namespace
    manifest = yaml.safe_load(pod_manifest("scheduler", ""))
    manifest["spec"]["containers"][0] = {
        "name": "main",
        "image": "quay.io/example/vendor-tool:1.0",
        "command": ["/opt/vendor/bin/tool", "--serve"],
    }
    sandbox.apply(yaml.safe_dump(manifest), ns)
    wait_ready(sandbox, ns, "scheduler")
    simulated = [e for e in events(sandbox, ns, "scheduler") if e["reason"] == "Simulated"]
    assert simulated and "'/opt/vendor/bin/tool' does not exist" in simulated[0]["message"]


def test_init_containers_run_first_and_jobs_complete_or_fail(sandbox, sandbox_namespace) -> None:
    ns = sandbox_namespace
    manifest = yaml.safe_load(
        pod_manifest(
            "ordered",
            "cat /work/init; echo main-ran",
            restartPolicy="Never",
            volumes=[{"name": "work", "emptyDir": {}}],
        )
    )
    manifest["spec"]["initContainers"] = [
        {
            "name": "init",
            "image": HOST_IMAGE,
            "command": ["/bin/sh", "-c", "echo init-ran > /work/init"],
            "volumeMounts": [{"name": "work", "mountPath": "/work"}],
        }
    ]
    manifest["spec"]["containers"][0]["volumeMounts"] = [{"name": "work", "mountPath": "/work"}]
    sandbox.apply(yaml.safe_dump(manifest), ns)
    wait_phase(sandbox, ns, "ordered", "Succeeded")
    assert logs(sandbox, ns, "ordered").split() == ["init-ran", "main-ran"]

    def job(name: str, code: int) -> dict:
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 1,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "main",
                                "image": HOST_IMAGE,
                                "command": ["/bin/sh", "-c", f"echo job; exit {code}"],
                            }
                        ],
                    }
                },
            },
        }

    sandbox.apply(yaml.safe_dump_all([job("good", 0), job("bad", 1)]), ns)

    def finished(name: str) -> str | None:
        conditions = sandbox.get("job", name, namespace=ns).get("status", {}).get("conditions") or []
        return next(
            (c["type"] for c in conditions if c["type"] in ("Complete", "Failed") and c["status"] == "True"),
            None,
        )

    assert sandbox.wait_for("job good done", lambda: finished("good")) == "Complete"
    assert sandbox.wait_for("job bad done", lambda: finished("bad"), timeout=90) == "Failed"
    bad = sandbox.get("job", "bad", namespace=ns)
    assert bad["status"]["failed"] == 2  # the first run and one retry (backoffLimit 1)


def test_a_daemonset_rolls_out_on_the_node(sandbox, sandbox_namespace) -> None:
    ns = sandbox_namespace
    sandbox.apply(
        yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "puller"},
                "spec": {
                    "selector": {"matchLabels": {"app": "puller"}},
                    "template": {
                        "metadata": {"labels": {"app": "puller"}},
                        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10.1"}]},
                    },
                },
            }
        ),
        ns,
    )
    sandbox.kubectl("rollout", "status", "daemonset/puller", "-n", ns, "--timeout=60s")
    status = sandbox.get("daemonset", "puller", namespace=ns)["status"]
    assert status["desiredNumberScheduled"] == status["numberReady"] == 1


# --- helm and real charts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("helm", ["3", "4"], ids=["helm3", "helm4"])
def test_helm_waits_for_hooks_daemonsets_claims_and_load_balancers(sandbox, sandbox_namespace, helm) -> None:
    ns = sandbox_namespace

    def upgrade(*values: str, timeout: str = "90s"):
        return sandbox.run(
            [
                str(sandbox.helm_path(helm)),
                "upgrade",
                "--install",
                "check",
                str(CHARTS / "platform-check"),
                "-n",
                ns,
                "--wait",
                "--timeout",
                timeout,
                *values,
            ],
            env=sandbox.env_for(helm),
            timeout=240,
        )

    upgrade()
    public = sandbox.service_address("web", ns)
    assert http_get(public + "/index.html")[1] == b"revision 1\n"
    with pytest.raises(CommandError) as failed:
        upgrade("--set", "hookExit=1", "--set", "revision=2", timeout="60s")
    message = failed.value.stderr_tail
    reason = (
        "job check-hook failed: BackoffLimitExceeded"
        if helm == "3"
        else "status: Failed, message: Job Failed"
    )
    assert "pre-upgrade hooks failed" in message and reason in message, message
    assert http_get(public + "/index.html")[1] == b"revision 1\n"  # the previous release still serves
    upgrade("--set", "revision=3")
    sandbox.wait_for(
        "the new revision served", lambda: http_get(public + "/index.html")[1] == b"revision 3\n"
    )


@pytest.mark.parametrize(
    ("hub_tag", "proxy_tag", "version"),
    [("4.4.0", "5.2.0", "5.5.0"), ("3.3.8", "4.6.1", "4.1.6")],
    ids=["z2jh-4.4.0-images", "z2jh-3.3.8-images"],
)
def test_a_chart_runs_jupyterhub_kubespawner_and_chp_for_real(
    sandbox, sandbox_namespace, hub_tag, proxy_tag, version
) -> None:
    ns = sandbox_namespace
    token = secrets.token_hex(16)
    sandbox.run(
        [
            str(sandbox.helm_path("4")),
            "upgrade",
            "--install",
            "hub",
            str(CHARTS / "tiny-hub"),
            "-n",
            ns,
            "--wait",
            "--timeout",
            "120s",
            "--set",
            f"hubImage.tag={hub_tag}",
            "--set",
            f"proxyImage.tag={proxy_tag}",
            "--set",
            f"smokeToken={token}",
        ],
        env=sandbox.env_for("4"),
        timeout=240,
    )
    public = sandbox.service_address("proxy-public", ns)
    status, body = http_get(public + "/hub/api")
    assert status == 200 and json.loads(body)["version"] == version  # through CHP to the hub pod
    if hub_tag.startswith("3."):
        return
    # KubeSpawner creates the user's pod through the API with the hub's service-account token; the agent
    # runs jupyterhub-singleuser in it; CHP routes the user's URL to it.
    auth = {"Authorization": f"token {token}"}
    assert http_get(public + "/hub/api/users/smoke-user", method="POST", headers=auth)[0] in (201, 409)
    started = http_get(public + "/hub/api/users/smoke-user/server", method="POST", headers=auth, timeout=30)
    assert started[0] in (201, 202), started
    user = sandbox.wait_for(
        "the user's server ready",
        lambda: (
            json.loads(http_get(public + "/hub/api/users/smoke-user", headers=auth)[1] or b"{}")
            .get("servers", {})
            .get("", {})
            .get("ready")
        ),
        timeout=120,
    )
    assert user
    status, body = http_get(public + "/user/smoke-user/api", headers=auth)
    assert status == 200 and "version" in json.loads(body)
    user_pod = pod(sandbox, ns, "jupyter-smoke-user")
    assert condition(user_pod, "Ready") == "True"
    stopped = http_get(public + "/hub/api/users/smoke-user/server", method="DELETE", headers=auth, timeout=30)
    assert stopped[0] in (202, 204), stopped
    sandbox.wait_for(
        "the user's pod gone",
        lambda: sandbox.kubectl("get", "pod", "jupyter-smoke-user", "-n", ns, check=False).returncode != 0,
        timeout=60,
    )


# --- registry, buildah, sops, env -----------------------------------------------------------------------


def test_buildah_build_push_and_registry_api(sandbox, tmp_path) -> None:
    ctx = tmp_path / "image"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {sandbox.registry}/base/busybox:latest\n"
        "RUN echo built-by-buildah > /hello\nCOPY app.txt /app.txt\n"
        "RUN test -s /etc/ssl/certs/ca-certificates.crt\n"
    )
    (ctx / "app.txt").write_text("hello\n")
    repo = f"test/app-{secrets.token_hex(4)}"
    image = f"{sandbox.registry}/{repo}:v1"
    buildah = str(sandbox.bin / "buildah")
    ca = "/etc/ssl/certs/ca-certificates.crt"  # the host CA bundle, for builds that need TLS
    sandbox.run(
        [buildah, "bud", "--isolation", "chroot", "-v", f"{ca}:{ca}:ro", "-t", image, str(ctx)], timeout=300
    )
    user, password = sandbox.registry_auth
    sandbox.run(
        [buildah, "push", "--tls-verify=false", "--creds", f"{user}:{password}", image],
        secrets=[password],
        timeout=300,
    )
    base = f"http://{sandbox.registry}/v2/{repo}"
    assert http_get(f"{base}/manifests/v1", auth=sandbox.registry_auth, method="HEAD")[0] == 200
    assert http_get(f"{base}/manifests/nope", auth=sandbox.registry_auth, method="HEAD")[0] == 404
    assert http_get(f"{base}/manifests/v1", method="HEAD")[0] == 401
    status, body = http_get(f"{base}/tags/list", auth=sandbox.registry_auth)
    assert status == 200 and json.loads(body)["tags"] == ["v1"]


def test_sops_round_trip_with_the_age_key(sandbox, tmp_path) -> None:
    key = Path(sandbox.env["SOPS_AGE_KEY_FILE"])
    public = next(
        line.split(":", 1)[1].strip()
        for line in key.read_text().splitlines()
        if line.startswith("# public key:")
    )
    (tmp_path / ".sops.yaml").write_text(
        yaml.safe_dump(
            {
                "creation_rules": [
                    {"path_regex": r".*secret.*\.yaml$", "encrypted_regex": "^(jupyterhub)$", "age": public}
                ]
            }
        )
    )
    plain = {"jupyterhub": {"proxy": {"secretToken": "s3cret-token-value"}}}
    (tmp_path / "secret.yaml").write_text(yaml.safe_dump(plain))
    sops = str(sandbox.bin / "sops")
    encrypted = sandbox.run([sops, "--encrypt", "secret.yaml"], cwd=tmp_path).stdout
    assert "s3cret-token-value" not in encrypted and "ENC[" in encrypted
    (tmp_path / "secret.enc.yaml").write_text(encrypted)
    decrypted = sandbox.run([sops, "--decrypt", "secret.enc.yaml"], cwd=tmp_path).stdout
    assert yaml.safe_load(decrypted) == plain
    no_key = {k: v for k, v in sandbox.env.items() if not k.startswith("SOPS_AGE")}
    assert (
        sandbox.run([sops, "--decrypt", "secret.enc.yaml"], cwd=tmp_path, env=no_key, check=False).returncode
        != 0
    )


def test_env_exports_exactly_the_documented_names(sandbox) -> None:
    out = sandbox.run([sys.executable, "-m", "hubploy.cli.main", "sandbox", "env"]).stdout
    env = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.splitlines())
    assert set(env) == {
        "KUBECONFIG",
        "HELM_EXECUTABLE",
        "HUBPLOY_REGISTRY",
        "HUBPLOY_REGISTRY_USERNAME",
        "HUBPLOY_REGISTRY_PASSWORD",
        "SOPS_AGE_KEY_FILE",
        "PATH",
    }
    status = sandbox.run([sys.executable, "-m", "hubploy.cli.main", "sandbox", "status"]).stdout
    assert "stopped" not in status and "kube-apiserver" in status and KUBERNETES_VERSION in status
    assert env["PATH"].split(":")[0] == str(sandbox.bin)
    for tool in ("helm", "kubectl", "sops", "buildah"):
        assert (sandbox.bin / tool).exists()
    client = json.loads(sandbox.kubectl("version", "--client", "-o", "json").stdout)["clientVersion"]
    assert client["gitVersion"] == KUBERNETES_VERSION  # kubectl of the clusters' own release
    kubeconfig = yaml.safe_load(Path(env["KUBECONFIG"]).read_text())
    cluster = kubeconfig["clusters"][0]["cluster"]
    assert "insecure-skip-tls-verify" not in cluster and Path(cluster["certificate-authority"]).is_file()
