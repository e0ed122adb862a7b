"""Proof that the sandbox is a real platform: helm installs with --wait (and fails when it should),
the agent's real JupyterHub answers, buildah builds and pushes to the authenticated registry, and sops
encrypts with the generated age key."""

from __future__ import annotations

import base64
import json
import secrets
import shlex
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from hubploy.errors import CommandError
from hubploy_sandbox.install import jupyterhub_version
from hubploy_sandbox.procs import command_line, read_pid

pytest_plugins = ["fixtures.sandbox"]  # harmless when tests/conftest.py loads it too

pytestmark = pytest.mark.sandbox


def http_get(
    url: str, timeout: float = 2.0, auth: tuple[str, str] | None = None, method: str = "GET"
) -> tuple[int | None, bytes]:
    req = urllib.request.Request(url, method=method)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    req.add_header(
        "Accept",
        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError):
        return None, b""


def wait_hub_api(url: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = http_get(url + "/hub/api")
        if status == 200:
            return json.loads(body)
        time.sleep(0.5)
    raise AssertionError(f"{url}/hub/api did not answer within {timeout} s")


def layered_values(tmp_path: Path, *extra: dict) -> list[str]:
    """An example hub's layered values files (common, then staging, then any extra), as -f arguments."""
    common = {
        "jupyterhub": {
            "hub": {"config": {"JupyterHub": {"authenticator_class": "dummy", "admin_access": True}}},
            "singleuser": {"image": {"name": "localhost:5000/example/user", "tag": "v1"}},
        }
    }
    staging = {
        "jupyterhub": {
            "hub": {"extraConfig": {"10-staging": "c.JupyterHub.shutdown_on_logout = True\n"}},
            "proxy": {"secretToken": secrets.token_hex(16)},
        }
    }
    args: list[str] = []
    for i, values in enumerate([common, staging, *extra]):
        path = tmp_path / f"values-{i}.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
    return args


def helm_install(sandbox, helm: str, namespace: str, values: list[str], timeout: str = "60s"):
    return sandbox.run(
        [
            str(sandbox.helm_path(helm)),
            "upgrade",
            "--install",
            namespace,
            str(sandbox.chart),
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            timeout,
            *values,
        ],
        env=sandbox.env_for(helm),
        timeout=180,
    )


@pytest.mark.parametrize("helm", ["3", "4"], ids=["helm3", "helm4"])
def test_install_with_wait_and_the_hub_answers(sandbox, sandbox_namespace, tmp_path, helm) -> None:
    helm_install(sandbox, helm, sandbox_namespace, layered_values(tmp_path))
    deploy = json.loads(
        sandbox.kubectl("get", "deployment", "hub", "-n", sandbox_namespace, "-o", "json").stdout
    )
    assert deploy["status"]["readyReplicas"] == 1
    lb = json.loads(
        sandbox.kubectl("get", "service", "proxy-public", "-n", sandbox_namespace, "-o", "json").stdout
    )
    assert lb["status"]["loadBalancer"]["ingress"] == [{"ip": "127.0.0.1"}]
    info = wait_hub_api(sandbox.hub_url(sandbox_namespace))
    assert "version" in info


def test_hubs_run_from_jupyterhubs_own_virtualenv(sandbox, sandbox_namespace, tmp_path) -> None:
    helm_install(sandbox, "4", sandbox_namespace, layered_values(tmp_path))
    info = wait_hub_api(sandbox.hub_url(sandbox_namespace))
    pid = read_pid(sandbox.paths.pids / "hubs" / f"{sandbox_namespace}.pid")
    assert pid is not None
    assert command_line(pid)[:3] == [str(sandbox.paths.hub_python), "-m", "jupyterhub"]
    assert info["version"] == jupyterhub_version(sandbox.paths)


def test_example_hub_layered_values_install(sandbox, sandbox_namespace, tmp_path) -> None:
    """deployments/physics: common + staging config and the sops-encrypted staging secrets."""
    repo = Path(__file__).resolve().parent.parent
    hub = repo / "deployments" / "physics"
    secrets_file = tmp_path / "secrets-staging.yaml"
    decrypted = sandbox.run(
        [str(sandbox.bin / "sops"), "--decrypt", str(hub / "secrets" / "staging.yaml")],
        env={**sandbox.env, "SOPS_AGE_KEY_FILE": str(repo / "example-age.key")},
    ).stdout
    secrets_file.write_text(decrypted)
    values = [
        "-f",
        str(hub / "config" / "common.yaml"),
        "-f",
        str(hub / "config" / "staging.yaml"),
        "-f",
        str(secrets_file),
    ]
    helm_install(sandbox, "4", sandbox_namespace, values)
    rollout = sandbox.kubectl("rollout", "status", "deployment/hub", "-n", sandbox_namespace, "--timeout=30s")
    assert "successfully rolled out" in rollout.stdout
    assert "version" in wait_hub_api(sandbox.hub_url(sandbox_namespace))


def test_hub_follows_its_pod_config_change_and_uninstall(sandbox, sandbox_namespace, tmp_path) -> None:
    helm_install(sandbox, "3", sandbox_namespace, layered_values(tmp_path))
    first = sandbox.hub_url(sandbox_namespace)
    wait_hub_api(first)
    change = {"jupyterhub": {"hub": {"config": {"JupyterHub": {"admin_access": False}}}}}
    helm_install(sandbox, "3", sandbox_namespace, layered_values(tmp_path, change))  # rolls the hub pod
    deadline = time.monotonic() + 30
    while sandbox.hub_urls().get(sandbox_namespace) in (None, first) and time.monotonic() < deadline:
        time.sleep(0.3)
    second = sandbox.hub_url(sandbox_namespace)
    assert second != first
    wait_hub_api(second)
    assert http_get(first + "/hub/api")[0] is None
    sandbox.run(
        [str(sandbox.helm_path("3")), "uninstall", sandbox_namespace, "-n", sandbox_namespace, "--wait"],
        timeout=120,
    )
    deadline = time.monotonic() + 30
    while sandbox_namespace in sandbox.hub_urls() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert sandbox_namespace not in sandbox.hub_urls()
    assert http_get(second + "/hub/api")[0] is None


def test_rollout_that_never_gets_ready_fails_wait(sandbox, sandbox_namespace, tmp_path) -> None:
    helm_install(sandbox, "3", sandbox_namespace, layered_values(tmp_path))
    bad = {
        "jupyterhub": {"singleuser": {"image": {"name": "localhost:5000/example/never-ready", "tag": "v2"}}}
    }
    for helm in ("3", "4"):
        with pytest.raises(CommandError) as exc:
            helm_install(sandbox, helm, sandbox_namespace, layered_values(tmp_path, bad), timeout="15s")
        assert "deadline" in exc.value.stderr_tail or "timed out" in exc.value.stderr_tail.lower()


@pytest.mark.parametrize(
    "broken",
    [
        {"config": {"JupyterHub": {"authenticator_class": "no-such-authenticator"}}},
        {"extraConfig": {"99-broken": "raise RuntimeError('broken hub config')\n"}},
    ],
    ids=["bad-authenticator", "raising-extraConfig"],
)
def test_broken_hub_config_really_fails(sandbox, sandbox_namespace, tmp_path, broken) -> None:
    helm_install(sandbox, "4", sandbox_namespace, layered_values(tmp_path, {"jupyterhub": {"hub": broken}}))
    pod = json.loads(
        sandbox.kubectl("get", "pods", "-n", sandbox_namespace, "-l", "component=hub", "-o", "json").stdout
    )["items"][0]
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    url = sandbox.hub_url(sandbox_namespace)
    pid_file = sandbox.paths.pids / "hubs" / f"{sandbox_namespace}.pid"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and read_pid(pid_file) is not None:
        assert http_get(url + "/hub/api")[0] != 200
        time.sleep(0.5)
    assert read_pid(pid_file) is None, "JupyterHub should have exited on its broken configuration"
    assert http_get(url + "/hub/api")[0] is None


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
    out = sandbox.run([sys.executable, "-m", "cli.main", "sandbox", "env"]).stdout
    env = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.splitlines())
    assert set(env) == {
        "KUBECONFIG",
        "HELM_EXECUTABLE",
        "HUBPLOY_REGISTRY",
        "HUBPLOY_REGISTRY_USERNAME",
        "HUBPLOY_REGISTRY_PASSWORD",
        "SOPS_AGE_KEY_FILE",
        "HUBPLOY_HUB_URLS",
        "PATH",
    }
    status = sandbox.run([sys.executable, "-m", "cli.main", "sandbox", "status"]).stdout
    assert "stopped" not in status and "kube-apiserver" in status
    assert env["PATH"].split(":")[0] == str(sandbox.bin)
    for tool in ("helm", "kubectl", "sops", "buildah"):
        assert (sandbox.bin / tool).exists()
    assert env["HUBPLOY_REGISTRY"] == "localhost:5000" or env["HUBPLOY_REGISTRY"].startswith("localhost:")
    assert Path(env["KUBECONFIG"]).is_file()
    kubeconfig = yaml.safe_load(Path(env["KUBECONFIG"]).read_text())
    cluster = kubeconfig["clusters"][0]["cluster"]
    assert "insecure-skip-tls-verify" not in cluster and Path(cluster["certificate-authority"]).is_file()
    nodes = json.loads(sandbox.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    node = next(n for n in nodes if n["metadata"]["name"] == "sandbox-node")
    assert not [t for t in node["spec"].get("taints") or [] if "not-ready" in t["key"]]
