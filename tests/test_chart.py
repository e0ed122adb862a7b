"""The jupyterhub stand-in chart (sandbox/charts/jupyterhub, shaped like Zero to JupyterHub 4.4.0) and
the example umbrella chart hub/ that depends on it: lint, dependency build, the rendered objects, hooks,
generated secrets, kubeVersion, the strict values schema and the example hubs' values (helm 3 and 4)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from helpers.chart import (
    NAMESPACE,
    PROJECT,
    RELEASE,
    SUBCHART,
    UMBRELLA,
    find,
    helm_path,
    render,
    secret_data,
    vendored_umbrella,
)

from hubploy import values
from hubploy.deploy import image_references
from hubploy.errors import CommandError
from hubploy.layout import load_repo
from hubploy.runner import child_env, run
from hubploy.secrets import decrypted
from hubploy_sandbox.paths import HELM_VERSIONS

# Z2JH 4.4.0's default render, hooks last (kind, name).
DEFAULT_OBJECTS = {
    ("NetworkPolicy", "hub"),
    ("NetworkPolicy", "proxy"),
    ("NetworkPolicy", "singleuser"),
    ("PodDisruptionBudget", "user-placeholder"),
    ("PodDisruptionBudget", "user-scheduler"),
    ("ServiceAccount", "hub"),
    ("ServiceAccount", "continuous-image-puller"),
    ("ServiceAccount", "user-scheduler"),
    ("Secret", "hub"),
    ("ConfigMap", "hub"),
    ("ConfigMap", "user-scheduler"),
    ("PersistentVolumeClaim", "hub-db-dir"),
    ("ClusterRole", f"{RELEASE}-user-scheduler"),
    ("ClusterRoleBinding", f"{RELEASE}-user-scheduler"),
    ("Role", "hub"),
    ("RoleBinding", "hub"),
    ("Service", "hub"),
    ("Service", "proxy-api"),
    ("Service", "proxy-public"),
    ("DaemonSet", "continuous-image-puller"),
    ("Deployment", "hub"),
    ("Deployment", "proxy"),
    ("Deployment", "user-scheduler"),
    ("StatefulSet", "user-placeholder"),
    ("ServiceAccount", "hook-image-puller"),
    ("ServiceAccount", "hook-image-awaiter"),
    ("Role", "hook-image-awaiter"),
    ("RoleBinding", "hook-image-awaiter"),
    ("DaemonSet", "hook-image-puller"),
    ("Job", "hook-image-awaiter"),
}
# The chart's default images (Z2JH 4.4.0's), by values path.
DEFAULT_IMAGES = {
    "hub.image": "quay.io/jupyterhub/k8s-hub:4.4.0",
    "proxy.chp.image": "quay.io/jupyterhub/configurable-http-proxy:5.2.0",
    "proxy.traefik.image": "traefik:v3.6.12",
    "singleuser.image": "quay.io/jupyterhub/k8s-singleuser-sample:4.4.0",
    "singleuser.networkTools.image": "quay.io/jupyterhub/k8s-network-tools:4.4.0",
    "prePuller.pause.image": "registry.k8s.io/pause:3.10.1",
    "prePuller.hook.image": "quay.io/jupyterhub/k8s-image-awaiter:4.4.0",
    "scheduling.userScheduler.image": "registry.k8s.io/kube-scheduler:v1.30.14",
    "scheduling.userPlaceholder.image": "registry.k8s.io/pause:3.10.1",
}
# What the umbrella chart points them at: the sandbox registry's copies.
SANDBOX_IMAGES = {
    "jupyterhub.hub.image": "localhost:5000/jupyterhub/k8s-hub:4.4.0",
    "jupyterhub.proxy.chp.image": "localhost:5000/jupyterhub/configurable-http-proxy:5.2.0",
    "jupyterhub.singleuser.image": "localhost:5000/jupyterhub/k8s-singleuser-sample:4.4.0",
    "jupyterhub.prePuller.hook.image": "localhost:5000/jupyterhub/k8s-image-awaiter:4.4.0",
    "jupyterhub.prePuller.pause.image": "localhost:5000/pause:3.10.1",
    "jupyterhub.scheduling.userScheduler.image": "localhost:5000/kube-scheduler:v1.30.14",
    "jupyterhub.scheduling.userPlaceholder.image": "localhost:5000/pause:3.10.1",
}
HOOK = "pre-install,pre-upgrade"
HOOK_DELETE = "before-hook-creation,hook-succeeded"
CONFIG_DIR = "/usr/local/etc/jupyterhub"


@pytest.fixture(params=sorted(HELM_VERSIONS), ids=lambda v: f"helm{v}")
def helm(request: pytest.FixtureRequest) -> str:
    return helm_path(request.param)


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The umbrella chart with the work tree's jupyterhub chart as its dependency."""
    return vendored_umbrella(tmp_path_factory.mktemp("umbrella"))


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def container(doc: dict, name: str) -> dict:
    return next(c for c in pod_spec(doc)["containers"] if c["name"] == name)


def annotations(doc: dict) -> dict:
    return doc["metadata"].get("annotations") or {}


# --- chart structure ---------------------------------------------------------------------------------


def test_lint_strict_passes(helm: str, chart: Path) -> None:
    for path in (chart, SUBCHART):
        result = run([helm, "lint", str(path), "--strict"], env=child_env(), check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_chart_metadata() -> None:
    meta = yaml.safe_load((SUBCHART / "Chart.yaml").read_text())
    assert (meta["apiVersion"], meta["name"], meta["version"], meta["appVersion"]) == (
        "v2",
        "jupyterhub",
        "4.4.0",
        "5.5.0",
    )
    assert meta["kubeVersion"] == ">=1.28.0-0"
    umbrella = yaml.safe_load((UMBRELLA / "Chart.yaml").read_text())
    assert umbrella["dependencies"] == [
        {"name": "jupyterhub", "version": "4.4.0", "repository": "file://../sandbox/charts/jupyterhub"}
    ]
    lock = yaml.safe_load((UMBRELLA / "Chart.lock").read_text())
    assert lock["dependencies"] == umbrella["dependencies"]


def test_schema_json_is_the_yaml_source() -> None:
    source = yaml.safe_load((SUBCHART / "values.schema.yaml").read_text())
    assert json.loads((SUBCHART / "values.schema.json").read_text()) == source, (
        "values.schema.json is stale: regenerate it as values.schema.yaml's header says"
    )


def test_dependency_build_and_update_work_offline(helm: str, tmp_path: Path) -> None:
    """Both helm versions build the file:// dependency from the committed Chart.lock without any chart
    repository (none configured, no network), and `update` leaves the lock as committed."""
    shutil.copytree(UMBRELLA, tmp_path / "hub", ignore=shutil.ignore_patterns("charts"))
    shutil.copytree(SUBCHART, tmp_path / "sandbox" / "charts" / "jupyterhub")
    home = tmp_path / "helm-home"
    env = {
        **child_env(),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }  # no network
    lock = (UMBRELLA / "Chart.lock").read_text()
    for command in ("build", "update"):
        shutil.rmtree(tmp_path / "hub" / "charts", ignore_errors=True)
        run([helm, "dependency", command, str(tmp_path / "hub")], env=env)
        assert [p.name for p in (tmp_path / "hub" / "charts").iterdir()] == ["jupyterhub-4.4.0.tgz"]
        assert (tmp_path / "hub" / "Chart.lock").read_text() == lock
    docs = render(helm, tmp_path / "hub")
    assert find(docs, "Deployment", "hub")


def test_default_render_is_z2jh_440s_object_list(helm: str, chart: Path) -> None:
    for path in (chart, SUBCHART):
        docs = render(helm, path)
        assert {(d["kind"], d["metadata"]["name"]) for d in docs} == DEFAULT_OBJECTS
        assert len(docs) == len(DEFAULT_OBJECTS)


def test_labels_like_z2jh(helm: str, chart: Path) -> None:
    docs = render(helm, chart)
    common = {
        "app": "jupyterhub",
        "release": RELEASE,
        "chart": "jupyterhub-4.4.0",
        "heritage": "Helm",
        "app.kubernetes.io/name": "jupyterhub",
        "app.kubernetes.io/instance": RELEASE,
        "helm.sh/chart": "jupyterhub-4.4.0",
        "app.kubernetes.io/managed-by": "Helm",
    }
    components = {}
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert common.items() <= labels.items(), (doc["kind"], doc["metadata"]["name"], labels)
        assert labels["component"] == labels["app.kubernetes.io/component"]
        components[(doc["kind"], doc["metadata"]["name"])] = labels["component"]
        if "template" in doc.get("spec", {}):
            component = labels["component"]
            selector = {"component": component, "app": "jupyterhub", "release": RELEASE}
            if doc["kind"] != "Job":
                assert doc["spec"]["selector"]["matchLabels"] == selector
            pod_labels = doc["spec"]["template"]["metadata"]["labels"]
            assert {
                **selector,
                "app.kubernetes.io/component": component,
                "app.kubernetes.io/name": "jupyterhub",
                "app.kubernetes.io/instance": RELEASE,
            }.items() <= pod_labels.items()
    assert components[("Deployment", "hub")] == "hub"
    assert components[("Service", "proxy-api")] == "proxy-api"
    assert components[("Service", "proxy-public")] == "proxy-public"
    assert components[("DaemonSet", "hook-image-puller")] == "hook-image-puller"
    assert components[("DaemonSet", "continuous-image-puller")] == "continuous-image-puller"
    assert components[("Job", "hook-image-awaiter")] == "image-puller"
    assert components[("StatefulSet", "user-placeholder")] == "user-placeholder"
    hub_pod = find(docs, "Deployment", "hub")["spec"]["template"]["metadata"]["labels"]
    assert hub_pod["hub.jupyter.org/network-access-proxy-api"] == "true"


# --- the hub ---------------------------------------------------------------------------------------------


def test_hub_deployment(helm: str, chart: Path) -> None:
    docs = render(helm, chart)
    hub = find(docs, "Deployment", "hub")
    assert hub["spec"]["replicas"] == 1 and hub["spec"]["strategy"] == {"type": "Recreate"}
    spec = pod_spec(hub)
    assert spec["serviceAccountName"] == "hub"
    assert spec["securityContext"]["fsGroup"] == 1000
    c = container(hub, "hub")
    assert c["image"] == "localhost:5000/jupyterhub/k8s-hub:4.4.0"
    assert "command" not in c  # the image's entrypoint (tini --) runs the args
    assert c["args"] == ["jupyterhub", "--config", f"{CONFIG_DIR}/jupyterhub_config.py", "--upgrade-db"]
    assert c["ports"] == [{"name": "http", "containerPort": 8081, "protocol": "TCP"}]
    assert (c["securityContext"]["runAsUser"], c["securityContext"]["runAsGroup"]) == (1000, 1000)
    for probe, timings in (("readinessProbe", (0, 2, 1, 1000)), ("livenessProbe", (300, 10, 3, 30))):
        p = c[probe]
        assert p["httpGet"] == {"path": "/hub/health", "port": "http"}
        assert (
            p["initialDelaySeconds"],
            p["periodSeconds"],
            p["timeoutSeconds"],
            p["failureThreshold"],
        ) == timings
    env = {e["name"]: e for e in c["env"]}
    assert list(env) == ["PYTHONUNBUFFERED", "HELM_RELEASE_NAME", "POD_NAMESPACE", "CONFIGPROXY_AUTH_TOKEN"]
    assert env["HELM_RELEASE_NAME"]["value"] == RELEASE
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["CONFIGPROXY_AUTH_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "hub", "key": "hub.config.ConfigurableHTTPProxy.auth_token"}
    }
    mounts = {(m["mountPath"], m["name"], m.get("subPath")) for m in c["volumeMounts"]}
    assert mounts == {
        (f"{CONFIG_DIR}/jupyterhub_config.py", "config", "jupyterhub_config.py"),
        (f"{CONFIG_DIR}/z2jh.py", "config", "z2jh.py"),
        (f"{CONFIG_DIR}/config/", "config", None),
        (f"{CONFIG_DIR}/secret/", "secret", None),
        ("/srv/jupyterhub", "pvc", None),
    }
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["config"]["configMap"] == {"name": "hub"}
    assert volumes["secret"]["secret"] == {"secretName": "hub"}
    assert volumes["pvc"]["persistentVolumeClaim"] == {"claimName": "hub-db-dir"}
    assert {"checksum/config-map", "checksum/secret"} <= hub["spec"]["template"]["metadata"][
        "annotations"
    ].keys()

    configmap = find(docs, "ConfigMap", "hub")["data"]
    assert {"jupyterhub_config.py", "z2jh.py", "checksum_hook-image-puller"} <= configmap.keys()
    assert (configmap["hub"], configmap["proxy-api"], configmap["user-scheduler"]) == (
        "hub",
        "proxy-api",
        f"{RELEASE}-user-scheduler",
    )
    pvc = find(docs, "PersistentVolumeClaim", "hub-db-dir")
    assert "storageClassName" not in pvc["spec"]  # the cluster's default StorageClass
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_hub_secret_holds_the_values_the_config_reads(helm: str, chart: Path) -> None:
    docs = render(helm, chart, "--set", "jupyterhub.hub.config.JupyterHub.admin_access=false")
    data = secret_data(find(docs, "Secret", "hub"))
    assert {
        "values.yaml",
        "hub.config.ConfigurableHTTPProxy.auth_token",
        "hub.config.JupyterHub.cookie_secret",
        "hub.config.CryptKeeper.keys",
    } == data.keys()
    chart_values = yaml.safe_load(data["values.yaml"])
    assert "jupyterhub" not in chart_values  # the subchart's own view of its values
    assert chart_values["hub"]["config"]["JupyterHub"] == {
        "admin_access": False,
        "authenticator_class": "dummy",
    }
    assert chart_values["Chart"] == {"Name": "jupyterhub", "Version": "4.4.0", "AppVersion": "5.5.0"}
    assert chart_values["Release"] == {"Name": RELEASE, "Namespace": NAMESPACE, "Service": "Helm"}


def test_config_or_secret_changes_roll_the_hub_pod(helm: str, chart: Path) -> None:
    fixed = [
        "--set",
        "jupyterhub.proxy.secretToken=t0ken",
        "--set",
        "jupyterhub.hub.cookieSecret=ab12",
        "--set",
        "jupyterhub.hub.config.CryptKeeper.keys={k1}",
    ]

    def checksums(*args: str) -> dict[str, str]:
        hub = find(render(helm, chart, *fixed, *args), "Deployment", "hub")
        return hub["spec"]["template"]["metadata"]["annotations"]

    before = checksums()
    assert checksums() == before  # given secrets: a render is reproducible
    changed = checksums("--set", "jupyterhub.hub.config.JupyterHub.admin_access=false")
    assert changed["checksum/secret"] != before["checksum/secret"]
    assert changed["checksum/config-map"] == before["checksum/config-map"]


def test_hub_rbac_lets_kubespawner_manage_user_objects(helm: str, chart: Path) -> None:
    docs = render(helm, chart)
    rules = find(docs, "Role", "hub")["rules"]
    assert {"pods", "persistentvolumeclaims", "secrets", "services"} <= set(rules[0]["resources"])
    assert {"get", "watch", "list", "create", "delete"} == set(rules[0]["verbs"])
    assert rules[1]["resources"] == ["events"]
    binding = find(docs, "RoleBinding", "hub")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": NAMESPACE}]
    assert binding["roleRef"]["name"] == "hub"


@pytest.mark.parametrize("db_type", ["sqlite-memory", "postgres"])
def test_hub_without_sqlite_pvc(helm: str, chart: Path, db_type: str) -> None:
    docs = render(helm, chart, "--set", f"jupyterhub.hub.db.type={db_type}")
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    hub = find(docs, "Deployment", "hub")
    assert "--upgrade-db" not in container(hub, "hub")["args"]
    assert "/srv/jupyterhub" not in {m["mountPath"] for m in container(hub, "hub")["volumeMounts"]}


def test_disruption_budgets_and_network_policies(helm: str, chart: Path) -> None:
    docs = render(
        helm,
        chart,
        "--set",
        "jupyterhub.hub.pdb.enabled=true",
        "--set",
        "jupyterhub.proxy.chp.pdb.enabled=true",
    )
    for name in ("hub", "proxy", "user-scheduler"):
        pdb = find(docs, "PodDisruptionBudget", name)
        assert pdb["spec"]["selector"]["matchLabels"] == {
            "component": name,
            "app": "jupyterhub",
            "release": RELEASE,
        }
    assert find(docs, "PodDisruptionBudget", "hub")["spec"]["minAvailable"] == 1
    policies = {n: find(docs, "NetworkPolicy", n)["spec"] for n in ("hub", "proxy", "singleuser")}
    assert policies["singleuser"]["podSelector"]["matchLabels"]["component"] == "singleuser-server"
    hub_from = policies["hub"]["ingress"][0]
    assert hub_from["ports"] == [{"port": "http"}]
    assert hub_from["from"] == [
        {"podSelector": {"matchLabels": {"hub.jupyter.org/network-access-hub": "true"}}}
    ]
    proxy_ports = [rule["ports"] for rule in policies["proxy"]["ingress"]]
    assert proxy_ports[0] == [{"port": "http"}, {"port": "https"}]  # allowedIngressPorts: open to all
    assert [{"port": "api"}] in proxy_ports


# --- the proxy and the Services ------------------------------------------------------------------------


def test_proxy_runs_chp_like_z2jh(helm: str, chart: Path) -> None:
    proxy = find(render(helm, chart), "Deployment", "proxy")
    chp = container(proxy, "chp")
    assert chp["image"] == "localhost:5000/jupyterhub/configurable-http-proxy:5.2.0"
    assert chp["command"] == [
        "configurable-http-proxy",
        "--ip=",
        "--api-ip=",
        "--api-port=8001",
        "--default-target=http://hub:$(HUB_SERVICE_PORT)",
        "--error-target=http://hub:$(HUB_SERVICE_PORT)/hub/error",
        "--port=8000",
    ]
    assert "args" not in chp
    assert chp["env"] == [
        {
            "name": "CONFIGPROXY_AUTH_TOKEN",
            "valueFrom": {
                "secretKeyRef": {"name": "hub", "key": "hub.config.ConfigurableHTTPProxy.auth_token"}
            },
        }
    ]
    assert [(p["name"], p["containerPort"]) for p in chp["ports"]] == [("http", 8000), ("api", 8001)]
    for probe in ("readinessProbe", "livenessProbe"):
        assert chp[probe]["httpGet"] == {"path": "/_chp_healthz", "port": "http", "scheme": "HTTP"}
    assert chp["securityContext"]["runAsUser"] == 65534
    strategy = proxy["spec"]["strategy"]
    assert strategy["type"] == "Recreate" and strategy.get("rollingUpdate") is None


def test_services(helm: str, chart: Path) -> None:
    docs = render(helm, chart)
    hub = find(docs, "Service", "hub")["spec"]
    assert hub["type"] == "ClusterIP"
    assert hub["ports"] == [{"name": "hub", "port": 8081, "targetPort": "http", "protocol": "TCP"}]
    assert hub["selector"] == {"component": "hub", "app": "jupyterhub", "release": RELEASE}
    api = find(docs, "Service", "proxy-api")["spec"]
    assert api["ports"] == [{"port": 8001, "targetPort": "api", "protocol": "TCP"}]
    assert api["selector"]["component"] == "proxy"
    public = find(docs, "Service", "proxy-public")["spec"]
    assert public["type"] == "LoadBalancer"
    assert public["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


@pytest.mark.parametrize(
    "args",
    [
        [],
        [
            "--set",
            "jupyterhub.proxy.https.enabled=true",
            "--set",
            "jupyterhub.proxy.https.type=offload",
            "--set",
            "jupyterhub.proxy.service.type=NodePort",
            "--set",
            "jupyterhub.hub.service.type=NodePort",
        ],
        [
            "--set",
            "jupyterhub.proxy.https.enabled=true",
            "--set",
            "jupyterhub.proxy.https.type=manual",
            "--set",
            "jupyterhub.proxy.https.manual.cert=C",
            "--set",
            "jupyterhub.proxy.https.manual.key=K",
            "--set",
            "jupyterhub.ingress.enabled=true",
            "--set",
            "jupyterhub.ingress.hosts={hub.example.org}",
        ],
    ],
    ids=["defaults", "https-offload", "https-manual"],
)
def test_every_service_port_says_tcp(helm: str, chart: Path, args: list[str]) -> None:
    services = [d for d in render(helm, chart, *args) if d["kind"] == "Service"]
    assert len(services) == 3
    ports = [(svc["metadata"]["name"], port) for svc in services for port in svc["spec"]["ports"]]
    assert len(ports) >= 3 + bool(args)
    for name, port in ports:
        assert port.get("protocol") == "TCP", (name, port)


# --- image pullers, the user-scheduler --------------------------------------------------------------------


def test_pre_pull_hook(helm: str, chart: Path) -> None:
    docs = render(helm, chart)
    weights = {
        ("ServiceAccount", "hook-image-puller"): "-10",
        ("DaemonSet", "hook-image-puller"): "-10",
        ("ServiceAccount", "hook-image-awaiter"): "0",
        ("Role", "hook-image-awaiter"): "0",
        ("RoleBinding", "hook-image-awaiter"): "0",
        ("Job", "hook-image-awaiter"): "10",
    }
    for (kind, name), weight in weights.items():
        assert annotations(find(docs, kind, name)) == {
            "helm.sh/hook": HOOK,
            "helm.sh/hook-delete-policy": HOOK_DELETE,
            "helm.sh/hook-weight": weight,
        }
    hooked = {(d["kind"], d["metadata"]["name"]) for d in docs if "helm.sh/hook" in annotations(d)}
    assert hooked == set(weights)

    job = find(docs, "Job", "hook-image-awaiter")
    assert "backoffLimit" not in job["spec"]  # Kubernetes' default, as in Z2JH
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == "hook-image-awaiter"
    awaiter = container(job, "hook-image-awaiter")
    assert awaiter["image"] == "localhost:5000/jupyterhub/k8s-image-awaiter:4.4.0"
    assert awaiter["command"] == [
        "/image-awaiter",
        "-ca-path=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        "-auth-token-path=/var/run/secrets/kubernetes.io/serviceaccount/token",
        "-api-server-address=https://kubernetes.default.svc:$(KUBERNETES_SERVICE_PORT)",
        f"-namespace={NAMESPACE}",
        "-daemonset=hook-image-puller",
        "-pod-scheduling-wait-duration=10",
    ]
    role = find(docs, "Role", "hook-image-awaiter")
    assert role["rules"] == [{"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get"]}]


def test_image_pullers(helm: str, chart: Path) -> None:
    docs = render(
        helm,
        chart,
        "--set",
        "jupyterhub.prePuller.extraImages.extra.name=localhost:5000/extra",
        "--set-string",
        "jupyterhub.prePuller.extraImages.extra.tag=1",
    )
    for name in ("hook-image-puller", "continuous-image-puller"):
        spec = pod_spec(find(docs, "DaemonSet", name))
        assert spec["serviceAccountName"] == name and spec["automountServiceAccountToken"] is False
        inits = {c["name"]: c for c in spec["initContainers"]}
        assert {n: c["image"] for n, c in inits.items()} == {
            "image-pull-singleuser": "localhost:5000/jupyterhub/k8s-singleuser-sample:4.4.0",
            "image-pull-extra": "localhost:5000/extra:1",
        }
        for init in inits.values():
            assert init["command"] == ["/bin/sh", "-c", 'echo "Pulling complete"']
        assert spec["containers"] == [
            {
                "name": "pause",
                "image": "localhost:5000/pause:3.10.1",
                "command": ["/pause"],
                "securityContext": spec["containers"][0]["securityContext"],
            }
        ]
    metadata_block = render(
        helm, chart, "--set", "jupyterhub.singleuser.cloudMetadata.blockWithIptables=true"
    )
    inits = pod_spec(find(metadata_block, "DaemonSet", "continuous-image-puller"))["initContainers"]
    assert inits[0]["name"] == "image-pull-metadata-block"
    assert inits[0]["image"] == "quay.io/jupyterhub/k8s-network-tools:4.4.0"


def test_pre_pull_hook_can_be_disabled(helm: str, chart: Path) -> None:
    docs = render(helm, chart, "--set", "jupyterhub.prePuller.hook.enabled=false")
    assert not [d for d in docs if "helm.sh/hook" in annotations(d)]
    assert find(docs, "DaemonSet", "continuous-image-puller")


def test_user_scheduler(helm: str, chart: Path) -> None:
    docs = render(helm, chart)
    deployment = find(docs, "Deployment", "user-scheduler")
    assert deployment["spec"]["replicas"] == 2
    scheduler = container(deployment, "kube-scheduler")
    assert scheduler["image"] == "localhost:5000/kube-scheduler:v1.30.14"
    assert scheduler["command"][:2] == [
        "/usr/local/bin/kube-scheduler",
        "--config=/etc/user-scheduler/config.yaml",
    ]
    config = yaml.safe_load(find(docs, "ConfigMap", "user-scheduler")["data"]["config.yaml"])
    assert config["kind"] == "KubeSchedulerConfiguration"
    assert config["profiles"][0]["schedulerName"] == f"{RELEASE}-user-scheduler"
    assert config["leaderElection"]["resourceName"] == "user-scheduler-lock"
    binding = find(docs, "ClusterRoleBinding", f"{RELEASE}-user-scheduler")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "user-scheduler", "namespace": NAMESPACE}
    ]
    placeholder = find(docs, "StatefulSet", "user-placeholder")
    assert placeholder["spec"]["replicas"] == 0
    assert pod_spec(placeholder)["schedulerName"] == f"{RELEASE}-user-scheduler"
    disabled = render(helm, chart, "--set", "jupyterhub.scheduling.userScheduler.enabled=false")
    assert not [d for d in disabled if "user-scheduler" in d["metadata"]["name"]]


# --- generated secrets -------------------------------------------------------------------------------------

GENERATED = (
    "hub.config.ConfigurableHTTPProxy.auth_token",
    "hub.config.JupyterHub.cookie_secret",
    "hub.config.CryptKeeper.keys",
)


def test_generated_secrets_differ_without_a_cluster(helm: str, chart: Path) -> None:
    """Without a cluster `lookup` finds no earlier Secret, so every render generates anew (as Z2JH)."""
    first, second = (secret_data(find(render(helm, chart), "Secret", "hub")) for _ in range(2))
    for key in GENERATED:
        assert first[key] != second[key], key
    assert re.fullmatch(r"[A-Za-z0-9]{64}", first["hub.config.ConfigurableHTTPProxy.auth_token"])
    assert re.fullmatch(r"[0-9a-f]{64}", first["hub.config.JupyterHub.cookie_secret"])
    assert len(base64.b64decode(first["hub.config.CryptKeeper.keys"])) == 32


def test_given_secrets_are_used_as_they_are(helm: str, chart: Path) -> None:
    docs = render(
        helm,
        chart,
        "--set",
        "jupyterhub.proxy.secretToken=my-proxy-token",
        "--set",
        "jupyterhub.hub.cookieSecret=0123abcd",
        "--set",
        "jupyterhub.hub.config.CryptKeeper.keys={key-one,key-two}",
        "--set",
        "jupyterhub.hub.services.grader.url=http://grader",
    )
    data = secret_data(find(docs, "Secret", "hub"))
    assert data["hub.config.ConfigurableHTTPProxy.auth_token"] == "my-proxy-token"
    assert data["hub.config.JupyterHub.cookie_secret"] == "0123abcd"
    assert data["hub.config.CryptKeeper.keys"] == "key-one;key-two"
    assert re.fullmatch(r"[0-9a-f]{64}", data["hub.services.grader.apiToken"])
    proxy = find(docs, "Deployment", "proxy")["spec"]["template"]["metadata"]["annotations"]
    assert proxy["checksum/auth-token"] == hashlib.sha256(b"my-proxy-token").hexdigest()[:4]
    # hub.config's own trait wins over the short key, as in Z2JH
    both = render(
        helm,
        chart,
        "--set",
        "jupyterhub.proxy.secretToken=short",
        "--set",
        "jupyterhub.hub.config.ConfigurableHTTPProxy.auth_token=long",
    )
    assert secret_data(find(both, "Secret", "hub"))["hub.config.ConfigurableHTTPProxy.auth_token"] == "long"


# --- kubeVersion and the values schema ---------------------------------------------------------------------


def test_kube_version(helm: str, chart: Path) -> None:
    for path in (chart, SUBCHART):
        with pytest.raises(CommandError) as refused:
            render(helm, path, "--kube-version", "1.27.0")
        assert "chart requires kubeVersion: >=1.28.0-0 which is incompatible with Kubernetes v1.27.0" in (
            refused.value.stderr_tail
        )
        assert find(render(helm, path, "--kube-version", "1.36.0"), "Deployment", "hub")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "jupyterhub.singleuser.imagee.name=x"], ["singleuser", "imagee"]),
        (["--set", "jupyterhub.hub.confg.JupyterHub.admin_access=true"], ["hub", "confg"]),
        (["--set", "jupyterhub.proxy.service.tpye=NodePort"], ["service", "tpye"]),
        (["--set", "jupyterhub.hub.config.jupyterHub.admin_access=true"], ["config", "jupyterHub"]),
        (["--set", "jupyterhub.singleuser.memory.limt=1G"], ["memory", "limt"]),
        (["--set", "jupyterhub.prePuller.hook.enable=false"], ["hook", "enable"]),
        (["--set", "jupyterhubb.hub.baseUrl=/"], ["jupyterhubb"]),
        (["--set", "jupyterhub.singleuser.image.tag=3"], ["tag", "string"]),
        (["--set", "jupyterhub.proxy.service.type=Nope"], ["type"]),
        (["--set", "jupyterhub.hub.db.type=nosql"], ["db", "type"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_schema_rejects_typos_and_bad_values(
    helm: str, chart: Path, args: list[str], words: list[str]
) -> None:
    with pytest.raises(CommandError) as refused:
        render(helm, chart, *args)
    message = refused.value.stderr_tail
    assert "schema" in message, message
    for word in words:
        assert word in message, (word, message)


def test_chart_values_satisfy_their_schema() -> None:
    schema = json.loads((SUBCHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((SUBCHART / "values.yaml").read_text()), schema)


# --- images -------------------------------------------------------------------------------------------------


def test_default_images_are_z2jh_440s(helm: str) -> None:
    chart_values = yaml.safe_load((SUBCHART / "values.yaml").read_text())
    found = {path: f"{name}:{tag}" for path, name, tag in image_references(chart_values)}
    assert found == DEFAULT_IMAGES
    for path in DEFAULT_IMAGES:
        image = chart_values
        for part in path.split("."):
            image = image[part]
        assert image.keys() >= {"name", "tag", "pullPolicy", "pullSecrets"}, path
    used = {
        c["image"]
        for d in render(helm, SUBCHART)
        if "template" in d.get("spec", {})
        for c in pod_spec(d)["containers"] + pod_spec(d).get("initContainers", [])
    }
    assert used == set(DEFAULT_IMAGES.values()) - {"traefik:v3.6.12"}


def test_umbrella_points_every_image_at_the_sandbox_registry(helm: str, chart: Path) -> None:
    umbrella_values = yaml.safe_load((UMBRELLA / "values.yaml").read_text())
    assert {path: f"{name}:{tag}" for path, name, tag in image_references(umbrella_values)} == SANDBOX_IMAGES
    docs = render(helm, chart)
    used = {
        c["image"]
        for d in docs
        if "template" in d.get("spec", {})
        for c in pod_spec(d)["containers"] + pod_spec(d).get("initContainers", [])
    }
    assert used == set(SANDBOX_IMAGES.values())


def test_umbrella_values_reach_the_subchart(helm: str, chart: Path) -> None:
    docs = render(
        helm,
        chart,
        "--set",
        "jupyterhub.singleuser.image.name=localhost:5000/example/user",
        "--set-string",
        "jupyterhub.singleuser.image.tag=abc123",
        "--set",
        "jupyterhub.proxy.service.type=ClusterIP",
    )
    puller = pod_spec(find(docs, "DaemonSet", "continuous-image-puller"))
    assert puller["initContainers"][0]["image"] == "localhost:5000/example/user:abc123"
    assert find(docs, "Service", "proxy-public")["spec"]["type"] == "ClusterIP"
    chart_values = yaml.safe_load(secret_data(find(docs, "Secret", "hub"))["values.yaml"])
    assert chart_values["singleuser"]["image"]["tag"] == "abc123"


# --- the example hubs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_name", ["staging", "prod"])
@pytest.mark.parametrize("hub_name", ["minimal", "physics"])
def test_example_hubs_validate_and_render(helm: str, chart: Path, hub_name: str, env_name: str) -> None:
    """Each example hub's layered values (config, decrypted secrets, injected images), as hubploy deploys
    them, pass the strict schema and do what they say."""
    repo = load_repo(PROJECT)
    hub = repo.load_hub(hub_name)
    images = [values.ImageValue(spec.helm_substitution_path, spec.name, "abc1234") for spec in hub.images]
    plan = values.layered_values(hub.dir, repo.root, hub.name, env_name, images=images)
    assert len(plan.secret_files) == 1
    sops_env = {**os.environ, "SOPS_AGE_KEY_FILE": str(PROJECT / "example-age.key")}
    with decrypted(plan.secret_files, env=sops_env) as files:
        docs = render(
            helm,
            chart,
            *plan.helm_args(files),
            release=f"{hub_name}-{env_name}",
            namespace=f"{hub_name}-{env_name}",
        )
        merged = values.merged_values(plan, files, yaml.safe_load((UMBRELLA / "values.yaml").read_text()))
    # what hubploy checks in the registry: the sandbox copies and the hub's own images
    assert {name.split("/")[0] for _, name, _ in image_references(merged)} == {"localhost:5000"}
    data = secret_data(find(docs, "Secret", "hub"))
    chart_values = yaml.safe_load(data["values.yaml"])
    assert data["hub.config.ConfigurableHTTPProxy.auth_token"] == merged["jupyterhub"]["proxy"]["secretToken"]
    assert chart_values["hub"]["config"]["JupyterHub"]["authenticator_class"] == "dummy"
    user_image = pod_spec(find(docs, "DaemonSet", "continuous-image-puller"))["initContainers"][0]["image"]
    hub_image = container(find(docs, "Deployment", "hub"), "hub")["image"]
    if hub_name == "minimal":
        assert user_image == "localhost:5000/hubploy/minimal-user:abc1234"
        assert hub_image == "localhost:5000/jupyterhub/k8s-hub:4.4.0"
        assert chart_values["singleuser"]["defaultUrl"] == "/lab"
        assert chart_values["hub"]["config"]["JupyterHub"]["admin_access"] is (env_name == "staging")
    else:
        assert user_image == "localhost:5000/hubploy/physics-user:abc1234"
        assert hub_image == "localhost:5000/hubploy/physics-hub:abc1234"
        assert "00-physics" in chart_values["hub"]["extraConfig"]
        assert chart_values["singleuser"]["memory"]["limit"] == {"staging": "2G", "prod": "4G"}[env_name]
        ingress = find(docs, "Ingress", "jupyterhub")
        host = {"staging": "staging.physics.example.org", "prod": "physics.example.org"}[env_name]
        assert [rule["host"] for rule in ingress["spec"]["rules"]] == [host]
        assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {
            "name": "proxy-public",
            "port": {"name": "http"},
        }
