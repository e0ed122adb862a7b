"""The hub's jupyterhub_config.py of the jupyterhub stand-in chart, loaded by JupyterHub itself.

The chart is rendered with helm; its hub ConfigMap and Secret are laid out as the hub pod mounts them;
then JupyterHub's own traitlets loader loads the config in a venv of the hub image's packages, with the
environment the hub pod has, and KubeSpawner builds a user pod from the result. Two venvs: JupyterHub
5.5.0 + KubeSpawner 7.0.0 (Z2JH 4.4.0's hub image) and JupyterHub 4.1.6 + KubeSpawner 6.2.0 (3.3.8's).
They are created on first use under the hubploy cache (test-venvs/) with pip; without them the tests
fail, saying why.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from helpers.chart import PROJECT, RELEASE, find, helm_path, hub_files, render, secret_data, vendored_umbrella

from hubploy_sandbox.paths import SandboxPaths

HUB_VENVS = {
    "jupyterhub5": ("jupyterhub==5.5.0", "jupyterhub-kubespawner==7.0.0", "kubernetes-asyncio==36.1.0"),
    "jupyterhub4": ("jupyterhub==4.1.6", "jupyterhub-kubespawner==6.2.0", "kubernetes-asyncio==30.1.1"),
}
POD_NAMESPACE = "example-staging"

# Loads the config like `jupyterhub --config` does, then reports what JupyterHub, KubeSpawner and
# CryptKeeper made of it, and the user pod and PVC KubeSpawner would create.
LOADER = r"""
import asyncio, json, os, sys
from jupyterhub.app import JupyterHub
from jupyterhub.crypto import CryptKeeper
from kubernetes_asyncio.client import ApiClient
from kubespawner import KubeSpawner

HUB_TRAITS = ["spawner_class", "authenticator_class", "admin_access", "hub_bind_url", "hub_connect_url",
              "db_url", "base_url", "cleanup_servers", "concurrent_spawn_limit", "last_activity_interval",
              "tornado_settings", "services", "load_roles", "template_vars", "log_level"]
SPAWNER_TRAITS = ["namespace", "image", "cmd", "default_url", "mem_limit", "mem_guarantee", "cpu_limit",
                  "storage_pvc_ensure", "storage_class", "storage_capacity", "storage_access_modes",
                  "pvc_name", "scheduler_name", "common_labels", "node_affinity_preferred", "tolerations",
                  "volumes", "volume_mounts", "start_timeout", "uid", "fs_gid", "events_enabled",
                  "profile_list", "consecutive_failure_limit", "k8s_api_request_timeout",
                  "image_pull_secrets", "environment"]


async def report():  # KubeSpawner and the Kubernetes client want a running event loop, as in the hub
    app = JupyterHub()
    app.load_config_file(sys.argv[1])
    spawner = KubeSpawner(config=app.config, _mock=True)
    pod, pvc = await spawner.get_pod_manifest(), spawner.get_pvc_manifest()
    spawned = {name: getattr(spawner, name) for name in SPAWNER_TRAITS}
    if isinstance(spawned["volumes"], list):  # KubeSpawner before 7: a list, keyed by name here
        spawned["volumes"] = {v["name"]: v for v in spawned["volumes"]}
    api = ApiClient()
    return {
        "hub": {name: getattr(app, name) for name in HUB_TRAITS},
        "cookie_secret": app.cookie_secret.hex(),
        "proxy": dict(app.config.ConfigurableHTTPProxy),
        "crypt_keys": [len(key) for key in CryptKeeper(config=app.config).keys],
        "spawner": spawned,
        "pod": api.sanitize_for_serialization(pod),
        "pvc": api.sanitize_for_serialization(pvc),
        "environ": {name: os.environ.get(name) for name in ("PGPASSWORD", "MYSQL_PWD")},
    }

with open(sys.argv[2], "w") as f:
    json.dump(asyncio.run(report()), f, default=str)
"""


def hub_venv(name: str, requirements: tuple[str, ...]) -> Path:
    """The python of a venv with ``requirements``, created once (under a lock) in the hubploy cache."""
    root = SandboxPaths.from_env().cache / "test-venvs"
    key = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:12]
    venv = root / f"{name}-{key}"
    python, done = venv / "bin" / "python", venv / ".complete"
    if done.is_file():
        return python
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        steps = (
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
        )
        for argv in steps:
            try:
                subprocess.run(argv, check=True, capture_output=True, text=True, timeout=900)
            except (OSError, subprocess.SubprocessError) as exc:
                shutil.rmtree(venv, ignore_errors=True)
                output = (getattr(exc, "stderr", None) or getattr(exc, "stdout", None) or str(exc)).strip()
                pytest.fail(
                    f"cannot create the hub venv {venv} with {' '.join(requirements)} (PyPI needed):"
                    f" `{' '.join(argv[:4])} ...` failed: {output[-2000:]}",
                    pytrace=False,
                )
        done.write_text("\n".join(requirements) + "\n")
    return python


@pytest.fixture(scope="session", params=sorted(HUB_VENVS))
def hub_python(request: pytest.FixtureRequest) -> Path:
    return hub_venv(request.param, HUB_VENVS[request.param])


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return vendored_umbrella(tmp_path_factory.mktemp("umbrella"))


class HubConfig:
    """What JupyterHub made of the rendered config (see LOADER), and what the config printed."""

    def __init__(self, report: dict, stdout: str, secret: dict[str, str]):
        self.hub, self.spawner, self.proxy = report["hub"], report["spawner"], report["proxy"]
        self.report, self.stdout, self.secret = report, stdout, secret


def load_hub_config(
    python: Path,
    chart: Path,
    tmp_path: Path,
    *helm_args: str,
    extra_files: Mapping[str, str] = {},
    env: dict[str, str] | None = None,
) -> HubConfig:
    docs = render(helm_path("4"), chart, *helm_args)
    config_dir = hub_files(docs, tmp_path / "etc-jupyterhub")
    for rel, text in extra_files.items():
        (config_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (config_dir / rel).write_text(text)
    secret = secret_data(find(docs, "Secret", "hub"))
    workdir = tmp_path / "srv-jupyterhub"  # the hub image's WORKDIR, where the sqlite PVC is mounted
    workdir.mkdir()
    pod_env = {
        "PATH": os.environ["PATH"],
        "PYTHONUNBUFFERED": "1",
        "HELM_RELEASE_NAME": RELEASE,
        "POD_NAMESPACE": POD_NAMESPACE,
        "HUB_SERVICE_HOST": "10.0.0.10",
        "HUB_SERVICE_PORT": "8081",
        "PROXY_API_SERVICE_HOST": "10.0.0.11",
        "PROXY_API_SERVICE_PORT": "8001",
        "PROXY_PUBLIC_SERVICE_HOST": "10.0.0.12",
        "PROXY_PUBLIC_SERVICE_PORT": "80",
        "CONFIGPROXY_AUTH_TOKEN": secret["hub.config.ConfigurableHTTPProxy.auth_token"],
    }
    # KubeSpawner (before 7) loads a client config even for a mock spawner; in the pod it is the
    # in-cluster one, here a kubeconfig naming an address nothing is asked at.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "test", "user": {"token": "test"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            }
        )
    )
    pod_env["KUBECONFIG"] = str(kubeconfig)
    out = tmp_path / "report.json"
    done = subprocess.run(
        [str(python), "-c", LOADER, str(config_dir / "jupyterhub_config.py"), str(out)],
        cwd=workdir,
        env=env if env is not None else pod_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"loading the hub config failed:\n{done.stdout}\n{done.stderr}"
    return HubConfig(json.loads(out.read_text()), done.stdout, secret)


def test_defaults(hub_python: Path, chart: Path, tmp_path: Path) -> None:
    got = load_hub_config(hub_python, chart, tmp_path)
    hub, spawner = got.hub, got.spawner
    assert "kubespawner" in hub["spawner_class"].lower()
    assert "dummy" in hub["authenticator_class"].lower() and hub["admin_access"] is True
    assert (hub["hub_bind_url"], hub["hub_connect_url"]) == ("http://:8081", "http://hub:8081")
    assert hub["db_url"] == "sqlite:///jupyterhub.sqlite"
    assert hub["cleanup_servers"] is False and hub["concurrent_spawn_limit"] == 64
    assert got.proxy == {
        "should_start": False,
        "api_url": "http://proxy-api:8001",
        "auth_token": got.secret["hub.config.ConfigurableHTTPProxy.auth_token"],
    }
    assert got.report["cookie_secret"] == got.secret["hub.config.JupyterHub.cookie_secret"]
    assert got.report["crypt_keys"] == [32]
    # the idle culler is not installed in these venvs: no service, and the config says so
    assert hub["services"] == [] and hub["load_roles"] == []
    assert "jupyterhub_idle_culler is not installed" in got.stdout

    assert spawner["namespace"] == POD_NAMESPACE
    assert spawner["image"] == "localhost:5000/jupyterhub/k8s-singleuser-sample:4.4.0"
    assert spawner["cmd"] == ["jupyterhub-singleuser"]
    assert spawner["mem_guarantee"] == 1024**3 and spawner["mem_limit"] is None
    assert spawner["storage_pvc_ensure"] is True and spawner["storage_class"] is None  # the default class
    assert spawner["storage_capacity"] == "10Gi" and spawner["storage_access_modes"] == ["ReadWriteOnce"]
    assert spawner["scheduler_name"] == f"{RELEASE}-user-scheduler"
    assert spawner["common_labels"] == {
        "app": "jupyterhub",
        "app.kubernetes.io/name": "jupyterhub",
        "release": RELEASE,
        "app.kubernetes.io/instance": RELEASE,
        "chart": "jupyterhub-4.4.0",
        "helm.sh/chart": "jupyterhub-4.4.0",
        "app.kubernetes.io/managed-by": "kubespawner",
    }
    assert spawner["node_affinity_preferred"][0]["preference"]["matchExpressions"][0]["values"] == ["user"]
    assert [t["value"] for t in spawner["tolerations"]] == ["user", "user"]
    assert (spawner["uid"], spawner["fs_gid"], spawner["start_timeout"]) == (1000, 100, 300)

    pod, pvc = got.report["pod"], got.report["pvc"]
    assert pod["spec"]["schedulerName"] == f"{RELEASE}-user-scheduler"
    notebook = pod["spec"]["containers"][0]
    assert notebook["image"] == spawner["image"] and notebook["args"][0] == "jupyterhub-singleuser"
    assert int(notebook["resources"]["requests"]["memory"]) == 1024**3
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [pvc["metadata"]["name"]]
    assert {"mountPath": "/home/jovyan"}.items() <= next(
        m for m in notebook["volumeMounts"] if m["name"].startswith("volume-")
    ).items()
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in pvc["spec"] or pvc["spec"]["storageClassName"] is None
    assert pod["metadata"]["labels"]["component"] == "singleuser-server"  # what the singleuser netpol selects


def test_example_physics_prod(hub_python: Path, chart: Path, tmp_path: Path) -> None:
    config = PROJECT / "deployments" / "physics" / "config"
    got = load_hub_config(
        hub_python, chart, tmp_path, "-f", str(config / "common.yaml"), "-f", str(config / "prod.yaml")
    )
    assert got.hub["template_vars"] == {"course": "Physics 101"}  # from hub.extraConfig.00-physics
    assert got.spawner["mem_limit"] == 4 * 1024**3
    assert int(got.report["pod"]["spec"]["containers"][0]["resources"]["limits"]["memory"]) == 4 * 1024**3
    assert "Loading hub.extraConfig.00-physics" in got.stdout


def test_values_reach_jupyterhub_and_kubespawner(hub_python: Path, chart: Path, tmp_path: Path) -> None:
    values = {
        "jupyterhub": {
            "hub": {
                "baseUrl": "/jh/",
                "db": {"type": "postgres", "url": "postgresql://hub@db/hub", "password": "pg-secret"},
                "config": {
                    "JupyterHub": {"admin_access": False},
                    "KubeSpawner": {"k8s_api_request_timeout": 7},
                },
                "services": {"grader": {"url": "http://grader:8000"}},
                "loadRoles": {"graders": {"scopes": ["list:users"], "services": ["grader"]}},
                # applied in name order, each after hub.config
                "extraConfig": {
                    "20-second": "c.JupyterHub.template_vars['order'] += ['second']\n",
                    "10-first": "c.JupyterHub.template_vars = "
                    "{'order': ['first'], 'admin': c.JupyterHub.admin_access}\n",
                },
            },
            "singleuser": {
                "cmd": ["jupyter", "lab"],
                "defaultUrl": "/lab",
                "memory": {"limit": "2G", "guarantee": "512M"},
                "cpu": {"limit": 2},
                "storage": {
                    "capacity": "5Gi",
                    "dynamic": {"storageClass": "fast", "pvcNameTemplate": "home-{username}"},
                },
                "extraFiles": {"motd": {"mountPath": "/etc/motd", "stringData": "hello"}},
                "extraEnv": {"COURSE": "physics"},
                "profileList": [{"display_name": "small", "default": True}],
            },
            "scheduling": {"userScheduler": {"enabled": False}},
            "cull": {"enabled": True, "users": True, "timeout": 1800},
        }
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    # an importable culler beside the config (the config directory is on sys.path) stands in for the package
    got = load_hub_config(
        hub_python,
        chart,
        tmp_path,
        "-f",
        str(values_file),
        extra_files={"jupyterhub_idle_culler/__init__.py": ""},
    )
    hub, spawner = got.hub, got.spawner
    assert hub["base_url"] == "/jh/"
    assert hub["db_url"] == "postgresql://hub@db/hub" and got.report["environ"]["PGPASSWORD"] == "pg-secret"
    assert hub["admin_access"] is False and spawner["k8s_api_request_timeout"] == 7
    assert hub["template_vars"] == {"order": ["first", "second"], "admin": False}
    services = {s["name"]: s for s in hub["services"]}
    assert services["grader"] == {
        "name": "grader",
        "url": "http://grader:8000",
        "api_token": got.secret["hub.services.grader.apiToken"],
    }
    cull = services["jupyterhub-idle-culler"]["command"]
    assert cull[1:] == [
        "-m",
        "jupyterhub_idle_culler",
        "--url=http://localhost:8081/jh/hub/api",
        "--timeout=1800",
        "--cull-every=600",
        "--concurrency=10",
        "--cull-users",
    ]
    roles = {r["name"]: r for r in hub["load_roles"]}
    assert roles["graders"] == {"name": "graders", "scopes": ["list:users"], "services": ["grader"]}
    assert "admin:users" in roles["jupyterhub-idle-culler"]["scopes"]

    assert spawner["cmd"] == ["jupyter", "lab"] and spawner["default_url"] == "/lab"
    assert (spawner["mem_limit"], spawner["mem_guarantee"], spawner["cpu_limit"]) == (
        2 * 1024**3,
        512 * 1024**2,
        2.0,
    )
    assert spawner["storage_class"] == "fast" and spawner["storage_capacity"] == "5Gi"
    assert spawner["pvc_name"].startswith("home-mock")  # the mock user's escaped name follows
    assert spawner["scheduler_name"] is None
    assert spawner["environment"] == {"COURSE": "physics"}
    assert spawner["profile_list"] == [{"display_name": "small", "default": True}]
    assert spawner["volumes"]["files"]["secret"] == {
        "secretName": "singleuser",
        "items": [{"key": "motd", "path": "motd"}],
    }
    assert got.report["pvc"]["spec"]["storageClassName"] == "fast"
    pod = got.report["pod"]
    assert "schedulerName" not in pod["spec"] or pod["spec"]["schedulerName"] is None
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/etc/motd"]["subPath"] == "motd"


def test_sqlite_memory_and_existing_secret(hub_python: Path, chart: Path, tmp_path: Path) -> None:
    """hub.existingSecret's keys win over the chart's Secret, and its values.yaml is merged over the
    values."""
    existing = {
        "existing-secret/values.yaml": "custom:\n  site: from-existing-secret\n",
        "existing-secret/hub.config.JupyterHub.cookie_secret": "00ff" * 16,
    }
    got = load_hub_config(
        hub_python,
        chart,
        tmp_path,
        "--set",
        "jupyterhub.hub.db.type=sqlite-memory",
        "--set",
        "jupyterhub.hub.existingSecret=my-secret",
        "--set",
        "jupyterhub.custom.site=from-values",
        "--set",
        "jupyterhub.hub.extraConfig.site=c.JupyterHub.template_vars = "
        "{'site': z2jh.get_config('custom.site')}",
        "--set",
        "jupyterhub.hub.extraConfig.00-import=import z2jh",
        extra_files=existing,
    )
    assert got.hub["db_url"] == "sqlite://"
    assert got.report["cookie_secret"] == "00ff" * 16
    assert got.hub["template_vars"] == {"site": "from-existing-secret"}


def test_a_missing_service_variable_is_named(hub_python: Path, chart: Path, tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "POD_NAMESPACE": POD_NAMESPACE, "HUB_SERVICE_PORT": "8081"}
    with pytest.raises(AssertionError, match="PROXY_API_SERVICE_PORT is not set"):
        load_hub_config(hub_python, chart, tmp_path, env=env)
