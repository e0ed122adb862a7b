"""`hubploy init DIR` and `hubploy new-hub NAME [--from HUB]` (issue 21, points 1 and 2).

Unit tier: every file init writes, its refusal to overwrite (and --force), each provider's cluster section
and key file, the new age key (mode, place, and that it decrypts the secrets), `hubploy validate` on the
result as a subprocess, the pull-request workflow's hub list, and new-hub with and without --from. One
sandbox test: an init'd repository with the project's jupyterhub chart, built and deployed, answers.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.sandbox import Sandbox

from hubploy.age_keys import bech32_decode, bech32_encode, is_recipient, key_from_identity, read_key_file
from hubploy.cli.main import main
from hubploy.config.models import HubConfig, RepoSettings
from hubploy.errors import ConfigError, HubployError
from hubploy.layout import REPOS
from hubploy.scaffold.clusters import ClusterInput
from hubploy.scaffold.new_hub import DROP, edited_yaml, new_hub, renamed_image
from hubploy.scaffold.repository import DEFAULT_CHART_REPOSITORY, InitOptions, InitResult, init_repository
from hubploy.scaffold.texts import CHANGED_HUBS_STEP, WORKFLOW_FILE
from hubploy.secrets import decrypt_to_mapping, is_encrypted
from hubploy.validate import validate_repo
from hubploy_sandbox.images import BASE_REPOSITORY, BASE_TAG, ensure_base_image

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHART = PROJECT_ROOT / "sandbox" / "charts" / "jupyterhub"
EXAMPLE_KEY = PROJECT_ROOT / "example-age.key"
EXAMPLE_RECIPIENT = "age1hx4hg685s4l7wc3hndml824kpnmy20hhfseu2x2595nd5vmwapgqq0vp97"
REGISTRY = "localhost:5000/hubploy/physics-user"
VENV_BIN = Path(sys.executable).parent
REPO_FILES = {
    ".gitignore",
    ".sops.yaml",
    "README.md",
    WORKFLOW_FILE,
    "hubploy-repo.yaml",
    "hub/Chart.yaml",
    "hub/values.yaml",
    "hub/values.schema.json",
}


def hub_files(hub: str, *, image: bool = False, key: str | None = None) -> set[str]:
    names = (
        "hubploy.yaml",
        "config/common.yaml",
        "config/staging.yaml",
        "config/prod.yaml",
        "secrets/staging.yaml",
        "secrets/prod.yaml",
    )
    files = {f"deployments/{hub}/{name}" for name in names}
    files |= {f"deployments/{hub}/image/Dockerfile"} if image else set()
    return files | ({f"deployments/{hub}/secrets/{key}"} if key else set())


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A HOME of the test's own (where new keys go; no git identity), no ambient key or kubeconfig; this
    checkout's code and the venv's sops first."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY", "KUBECONFIG", "SOPS_AGE_RECIPIENTS"):
        monkeypatch.delenv(name, raising=False)
    REPOS.clear()
    return {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{PROJECT_ROOT / 'sandbox'}",
        "SOPS_DISABLE_VERSION_CHECK": "1",
    }


def hubploy(*args: str, cwd: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """This checkout's `hubploy` (python -m: the venv's console script may belong to another checkout)."""
    return subprocess.run(
        [sys.executable, "-m", "hubploy.cli.main", *args],
        cwd=cwd,
        env=dict(env),
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def with_key(env: Mapping[str, str], key: Path) -> dict[str, str]:
    return {**env, "SOPS_AGE_KEY_FILE": str(key)}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def write_kubeconfig(directory: Path, *, exec_user: bool = False) -> Path:
    """A kubeconfig with two contexts, whose CA is a file next to it (relative path)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    user = {"exec": {"command": "gke-gcloud-auth-plugin"}} if exec_user else {"token": "token-of-the-admin"}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "lab",
        "clusters": [
            {
                "name": "lab",
                "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority": "ca.crt"},
            },
            {"name": "other", "cluster": {"server": "https://10.9.9.9:6443"}},
        ],
        "users": [{"name": "admin", "user": user}, {"name": "other", "user": {"token": "other-token"}}],
        "contexts": [
            {"name": "lab", "context": {"cluster": "lab", "user": "admin"}},
            {"name": "other", "context": {"cluster": "other", "user": "other"}},
        ],
    }
    path = directory / "config"
    path.write_text(yaml.safe_dump(config))
    return path


def init(tmp_path: Path, env: Mapping[str, str], **options: Any) -> tuple[Path, InitResult]:
    """init_repository of hub physics into tmp_path/repo (or ``target``), with the project's chart."""
    settings: dict[str, Any] = {"target": tmp_path / "repo", "hub": "physics", "chart_path": CHART, **options}
    return settings["target"], init_repository(InitOptions(**settings), env)


# --- hubploy init ----------------------------------------------------------------------------------------


def test_init_writes_a_repository_with_one_hub(tmp_path: Path, env: dict[str, str]) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kube")
    root, result = init(
        tmp_path,
        env,
        registry=REGISTRY,
        base_image="localhost:5000/base/busybox:latest",
        cluster=ClusterInput(kubeconfig=kubeconfig),
        pip_spec="hubploy-prefect==9.9",
    )
    written = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}
    chart_files = {
        str(p.relative_to(PROJECT_ROOT / "sandbox"))
        for p in CHART.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert written == REPO_FILES | hub_files("physics", image=True, key="kubeconfig.yaml") | chart_files
    assert all((root / f).read_bytes() == (PROJECT_ROOT / "sandbox" / f).read_bytes() for f in chart_files)

    chart = load(root / "hub/Chart.yaml")
    assert chart["dependencies"] == [
        {"name": "jupyterhub", "version": "4.4.0", "repository": "file://../charts/jupyterhub"}
    ]
    assert chart["kubeVersion"] == load(CHART / "Chart.yaml")["kubeVersion"]
    assert load(root / "hub/values.yaml")["jupyterhub"]["proxy"]["service"]["type"] == "LoadBalancer"
    assert json.loads((root / "hub/values.schema.json").read_text())["required"] == ["jupyterhub"]
    settings = RepoSettings.model_validate(load(root / "hubploy-repo.yaml"))
    assert (settings.chart, settings.staging_branch, settings.prod_branch, settings.shared_paths) == (
        "hub",
        "staging",
        "prod",
        ["charts/jupyterhub/*"],
    )
    recipient = read_key_file(result.key_file).recipient
    assert load(root / ".sops.yaml")["creation_rules"][0]["age"] == recipient
    assert {"hub/charts/", "*.key"} <= set((root / ".gitignore").read_text().splitlines())

    hub = HubConfig.model_validate(load(root / "deployments/physics/hubploy.yaml"))
    assert [(i.name, i.path) for i in hub.image_entries()] == [(REGISTRY, "image")]
    assert hub.images.registry is None  # type: ignore[union-attr]  # localhost: HUBPLOY_REGISTRY_* logins
    assert (hub.cluster.provider, hub.cluster.settings.key_files()) == (  # type: ignore[union-attr]
        "kubeconfig",
        {"filename": "kubeconfig.yaml"},
    )
    assert list(hub.environments) == ["staging", "prod"]
    common = load(root / "deployments/physics/config/common.yaml")
    assert common["jupyterhub"]["hub"]["config"]["JupyterHub"]["authenticator_class"] == "dummy"
    assert load(root / "deployments/physics/config/prod.yaml") == {"jupyterhub": {}}
    assert (root / "deployments/physics/image/Dockerfile").read_text().splitlines()[1] == (
        "FROM localhost:5000/base/busybox:latest"
    )
    assert all(is_encrypted(p) for p in (root / "deployments/physics/secrets").iterdir())

    readme = (root / "README.md").read_text()
    for command in (
        "hubploy validate",
        "hubploy build physics --check-registry --push",
        "hubploy deploy physics hub staging",
        "git push -u origin staging prod",
        "SOPS_AGE_KEY",
        recipient,
        "deployments/physics/secrets/kubeconfig.yaml",
    ):
        assert command in readme, command
    workflow = load(root / WORKFLOW_FILE)
    assert workflow[True]["pull_request"]["branches"] == ["staging", "prod"]  # YAML 1.1 reads `on` as True
    runs = "\n".join(step.get("run", "") for step in workflow["jobs"]["validate"]["steps"])
    assert 'pip install "hubploy-prefect==9.9"' in runs and "hubploy validate --no-decrypt" in runs
    assert 'hubploy render "$hub" "$env"' in runs

    assert git(root, "branch", "--format=%(refname:short)").split() == ["prod", "staging"]
    assert git(root, "rev-parse", "staging") == git(root, "rev-parse", "prod") == result.commit
    assert git(root, "rev-list", "--count", "HEAD") == "1" and git(root, "status", "--porcelain") == ""
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo.hubploy-")]


def test_init_defaults_to_the_z2jh_chart_repository_and_the_callers_kubeconfig(
    tmp_path: Path, env: dict[str, str]
) -> None:
    root, _ = init(tmp_path, env, chart_path=None, git=False)
    written = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert written == REPO_FILES | hub_files("physics")  # no image, no key file, no chart copy, no .git
    assert load(root / "hub/Chart.yaml")["dependencies"] == [
        {"name": "jupyterhub", "version": "4.4.0", "repository": DEFAULT_CHART_REPOSITORY}
    ]
    assert "shared_paths" not in load(root / "hubploy-repo.yaml")
    hub = HubConfig.model_validate(load(root / "deployments/physics/hubploy.yaml"))
    assert hub.cluster is None and hub.images is None
    assert "Deploys use your own `KUBECONFIG`" in (root / "README.md").read_text()
    assert "hubploy build physics" not in (root / "README.md").read_text()


def test_init_result_passes_hubploy_validate(tmp_path: Path, env: dict[str, str]) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kube")
    done = hubploy(
        "init",
        "repo",
        "--hub",
        "physics",
        "--chart-path",
        str(CHART),
        "--registry",
        REGISTRY,
        "--kubeconfig",
        str(kubeconfig),
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    key = Path(env["HOME"]) / ".config/hubploy/age/repo.key"
    assert f"export SOPS_AGE_KEY_FILE={key}" in done.stdout
    valid = hubploy("validate", cwd=tmp_path / "repo", env=with_key(env, key))
    assert (valid.returncode, valid.stdout.strip()) == (0, "ok: 1 hub(s) valid: physics"), valid.stderr
    no_key = hubploy("validate", "--no-decrypt", cwd=tmp_path / "repo", env=env)
    assert no_key.returncode == 0, no_key.stderr
    refused = hubploy("validate", cwd=tmp_path / "repo", env=env)  # the secrets really need the key
    assert refused.returncode == 1 and "sops cannot decrypt" in refused.stderr


def test_new_age_key_is_0600_outside_the_repository_and_decrypts_the_secrets(
    tmp_path: Path, env: dict[str, str]
) -> None:
    root, result = init(tmp_path, env)
    key = Path(env["HOME"]) / ".config/hubploy/age/repo.key"
    assert result.key_file == key and result.key_created
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    lines = key.read_text().splitlines()
    assert lines[0].startswith("# created: ") and lines[2].startswith("AGE-SECRET-KEY-1")
    assert lines[1] == f"# public key: {key_from_identity(lines[2]).recipient}"
    tokens = []
    for env_name in ("staging", "prod"):
        clear = decrypt_to_mapping(
            root / f"deployments/physics/secrets/{env_name}.yaml", env=with_key(env, key)
        )
        tokens.append(clear["jupyterhub"]["proxy"]["secretToken"])
        assert len(clear["jupyterhub"]["hub"]["config"]["DummyAuthenticator"]["password"]) >= 20
    assert all(len(t) == 64 and int(t, 16) for t in tokens) and tokens[0] != tokens[1]
    with pytest.raises(HubployError, match="sops cannot decrypt"):
        decrypt_to_mapping(root / "deployments/physics/secrets/staging.yaml", env=env)

    # another repository with the same key file reuses the key, never replaces it
    before = key.read_bytes()
    _, again = init(tmp_path / "second", env, age_key_file=key, target=tmp_path / "second" / "repo")
    assert (again.key_file, again.key_created, key.read_bytes()) == (key, False, before)


def test_age_recipient_given_writes_no_key(tmp_path: Path, env: dict[str, str]) -> None:
    root, result = init(tmp_path, env, age_recipient=EXAMPLE_RECIPIENT)
    assert result.key_file is None and not (Path(env["HOME"]) / ".config").exists()
    clear = decrypt_to_mapping(root / "deployments/physics/secrets/prod.yaml", env=with_key(env, EXAMPLE_KEY))
    assert clear["jupyterhub"]["proxy"]["secretToken"]
    with pytest.raises(HubployError, match="not an age recipient"):
        init(tmp_path / "bad", env, age_recipient=EXAMPLE_RECIPIENT[:-1] + "x", target=tmp_path / "bad")
    with pytest.raises(HubployError, match="inside the new repository"):
        init(tmp_path, env, age_key_file=tmp_path / "other" / "my.key", target=tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_age_keys_are_bech32_x25519_as_age_writes_them() -> None:
    identity = EXAMPLE_KEY.read_text().splitlines()[-1]
    assert identity.startswith("AGE-SECRET-KEY-1")
    assert key_from_identity(identity).recipient == EXAMPLE_RECIPIENT  # the example key's own public key line
    data = bytes(range(32))
    assert bech32_decode("age", bech32_encode("age", data)) == data
    assert is_recipient(EXAMPLE_RECIPIENT) and not is_recipient(EXAMPLE_RECIPIENT[:-1] + "q")
    with pytest.raises(HubployError, match="not an age identity"):
        key_from_identity(identity[:-1] + ("Q" if identity[-1] != "Q" else "P"))


def test_init_refuses_existing_files_naming_them_and_force_replaces_them(
    tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "repo"
    (root / "deployments/physics").mkdir(parents=True)
    (root / "README.md").write_text("my own readme\n")
    (root / "deployments/physics/hubploy.yaml").write_text("{}\n")
    (root / "LICENSE").write_text("mine\n")
    with pytest.raises(HubployError) as refused:
        init(tmp_path, env, git=False)
    assert "README.md" in str(refused.value) and "deployments/physics/hubploy.yaml" in str(refused.value)
    assert "nothing was written" in str(refused.value) and "--force" in str(refused.value)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "LICENSE",
        "README.md",
        "deployments/physics/hubploy.yaml",
    ]
    assert not (Path(env["HOME"]) / ".config").exists()  # no key made for a refused init
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "repo"]  # no staging dir left

    _, result = init(tmp_path, env, git=False, force=True)
    assert result.replaced == ["README.md", "deployments/physics/hubploy.yaml"]
    assert (root / "README.md").read_text().startswith("# JupyterHub deployments")
    assert (root / "LICENSE").read_text() == "mine\n"

    (root / ".git").mkdir()
    with pytest.raises(HubployError, match="already a git repository"):
        init(tmp_path, env, force=True)


def test_init_on_the_cli_refuses_in_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / ".gitignore").write_text("x\n")
    done = hubploy("init", "repo", "--no-git", cwd=tmp_path, env=env)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: {tmp_path / 'repo'} already has .gitignore; nothing was written")
    missing = hubploy("init", "cloud", "--provider", "gcloud", "--project", "p", cwd=tmp_path, env=env)
    assert (missing.returncode, missing.stderr.count("\n")) == (1, 1)
    assert "error: --provider gcloud needs --cluster, --zone" in missing.stderr
    assert not (tmp_path / "cloud").exists()
    unread = hubploy("init", "cloud", "--project", "p", cwd=tmp_path, env=env)
    assert "error: --project not read with --provider kubeconfig" in unread.stderr
    with pytest.raises(HubployError, match="--context picks the context of --kubeconfig"):
        init(tmp_path, env, cluster=ClusterInput(context="lab"), target=tmp_path / "cloud")
    bad = hubploy("init", "cloud", "--registry", "localhost:5000/Upper:tag", cwd=tmp_path, env=env)
    assert bad.returncode == 1 and "--registry localhost:5000/Upper:tag" in bad.stderr


def test_init_asks_on_a_terminal_for_what_the_provider_needs(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["my-project", "my-cluster", "us-central1"])
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert (
        main(["init", str(tmp_path / "repo"), "--provider", "gcloud", "--chart-path", str(CHART), "--no-git"])
        == 0
    )
    hub = HubConfig.model_validate(load(tmp_path / "repo/deployments/hub/hubploy.yaml"))
    assert hub.cluster is not None and (hub.cluster.provider, hub.cluster.settings.names()) == (
        "gcloud",
        ["my-project", "my-cluster"],
    )


def _service_account(path: Path) -> Path:
    pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    path.write_text(
        json.dumps(
            {"type": "service_account", "client_email": "d@p.iam.gserviceaccount.com", "private_key": pem}
        )
    )
    return path


def _aws_credentials(path: Path) -> Path:
    path.write_text("[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = s3cr3t-value\n")
    return path


def _azure_principal(path: Path) -> Path:
    path.write_text(json.dumps({"appId": "app-1", "tenant": "tenant-1", "password": "p4ssword-value"}))
    return path


@dataclass(frozen=True)
class ProviderCase:
    flags: dict[str, Any]  # ClusterInput's; a callable makes the credentials file
    section: dict[str, str]  # the provider's settings in the cluster section
    registry: str | None = None  # --registry
    registry_section: dict[str, Any] | None = None
    key_field: str | None = None  # a key the decrypted key file has


ROLE = "arn:aws:iam::123456789012:role/deployer"
ECR = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
PROVIDER_CASES = {
    "gcloud-adc": ProviderCase(
        {"provider": "gcloud", "project": "proj", "cluster": "gke1", "region": "us-central1"},
        {"project": "proj", "cluster": "gke1", "zone": "us-central1"},
        "us-central1-docker.pkg.dev/proj/hubs/user",
        {"provider": "gcloud", "gcloud": {"host": "us-central1-docker.pkg.dev", "project": "proj"}},
    ),
    "gcloud-key": ProviderCase(
        {
            "provider": "gcloud",
            "project": "proj",
            "cluster": "gke1",
            "zone": "us-central1-b",
            "credentials_file": _service_account,
        },
        {
            "project": "proj",
            "cluster": "gke1",
            "zone": "us-central1-b",
            "service_key": "gcloud-service-key.json",
        },
        key_field="client_email",
    ),
    "aws-role": ProviderCase(
        {"provider": "aws", "cluster": "eks1", "region": "eu-west-1", "role_arn": ROLE},
        {"cluster": "eks1", "region": "eu-west-1", "role_arn": ROLE},
        f"{ECR}/user",
        {"provider": "aws", "aws": {"account_id": "123456789012", "region": "eu-west-1", "role_arn": ROLE}},
    ),
    "aws-keys": ProviderCase(
        {"provider": "aws", "cluster": "eks1", "region": "eu-west-1", "credentials_file": _aws_credentials},
        {"cluster": "eks1", "region": "eu-west-1", "service_key": "aws-credentials.yaml"},
        key_field="creds",
    ),
    "azure": ProviderCase(
        {
            "provider": "azure",
            "resource_group": "rg1",
            "cluster": "aks1",
            "credentials_file": _azure_principal,
        },
        {"resource_group": "rg1", "cluster": "aks1", "auth_file": "azure-service-principal.yaml"},
        "hubsacr.azurecr.io/user",
        {
            "provider": "azure",
            "azure": {
                "resource_group": "rg1",
                "registry": "hubsacr",
                "auth_file": "azure-service-principal.yaml",
            },
        },
        key_field="appId",
    ),
    "kubeconfig-block": ProviderCase(
        {"credentials_block": "lab-cluster"}, {"credentials_block": "lab-cluster"}
    ),
}


@pytest.mark.parametrize("name", PROVIDER_CASES)
def test_each_provider_writes_its_cluster_section_and_key_file(
    name: str, tmp_path: Path, env: dict[str, str]
) -> None:
    case = PROVIDER_CASES[name]
    given = {k: (v(tmp_path / f"cred-{k}") if callable(v) else v) for k, v in case.flags.items()}
    root, result = init(tmp_path, env, cluster=ClusterInput(**given), registry=case.registry, git=False)
    raw = load(root / "deployments/physics/hubploy.yaml")
    provider = given.get("provider", "kubeconfig")
    assert raw["cluster"] == {"provider": provider, provider: case.section}
    assert raw.get("images", {}).get("registry") == case.registry_section
    key_name = case.section.get("service_key") or case.section.get("auth_file")
    secrets_dir = root / "deployments/physics/secrets"
    assert sorted(p.name for p in secrets_dir.iterdir()) == sorted(
        ["staging.yaml", "prod.yaml", *([key_name] if key_name else [])]
    )
    if key_name:
        assert is_encrypted(secrets_dir / key_name)
        clear = decrypt_to_mapping(secrets_dir / key_name, env=with_key(env, result.key_file))
        assert case.key_field in clear
    assert validate_repo(root, decrypt=False, env=env) == []


def test_kubeconfig_is_encrypted_as_one_self_contained_context(tmp_path: Path, env: dict[str, str]) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kube")
    root, result = init(tmp_path, env, cluster=ClusterInput(kubeconfig=kubeconfig, context="lab"), git=False)
    clear = decrypt_to_mapping(
        root / "deployments/physics/secrets/kubeconfig.yaml", env=with_key(env, result.key_file)
    )
    assert clear["current-context"] == "lab" and [c["name"] for c in clear["clusters"]] == ["lab"]
    cluster = clear["clusters"][0]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"]) == (tmp_path / "kube/ca.crt").read_bytes()
    assert clear["users"][0]["user"] == {"token": "token-of-the-admin"}  # the other context's is left out
    assert "token-of-the-admin" not in (root / "deployments/physics/secrets/kubeconfig.yaml").read_text()
    with pytest.raises(HubployError, match="authenticates with exec"):
        gke = write_kubeconfig(tmp_path / "gke", exec_user=True)
        init(tmp_path / "x", env, cluster=ClusterInput(kubeconfig=gke), target=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_workflow_lists_the_hubs_and_environments_a_change_touches(
    tmp_path: Path, env: dict[str, str]
) -> None:
    root, _ = init(tmp_path, env, age_recipient=EXAMPLE_RECIPIENT)
    new_hub(root, "chem", source="physics", env=env)
    (root / "deployments/physics/config/prod.yaml").write_text(
        "jupyterhub:\n  singleuser:\n    defaultUrl: /tree\n"
    )
    git(root, "checkout", "-q", "-b", "change")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "chem; physics in prod")
    step = next(
        s
        for s in load(root / WORKFLOW_FILE)["jobs"]["validate"]["steps"]
        if s.get("name") == CHANGED_HUBS_STEP
    )
    done = subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=root,
        env={**env, "BASE": "staging"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (root / "changed-hubs.txt").read_text().splitlines() == [
        "chem staging",
        "chem prod",
        "physics staging",
        "physics prod",
    ]
    (root / "hub/values.yaml").write_text((root / "hub/values.yaml").read_text() + "# a chart change\n")
    git(root, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qam", "chart")
    git(root, "branch", "-f", "staging", "HEAD~1")
    subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=root,
        env={**env, "BASE": "staging"},
        check=True,
        capture_output=True,
    )
    assert len((root / "changed-hubs.txt").read_text().splitlines()) == 4  # the chart touches every hub


# --- hubploy new-hub --------------------------------------------------------------------------------------


@pytest.fixture
def physics_repo(tmp_path: Path, env: dict[str, str]) -> Path:
    """An init'd repository whose hub physics has an image, a kubeconfig key file, urls and a release that
    name it (or not), a rebuild record, and comments."""
    kubeconfig = write_kubeconfig(tmp_path / "kube")
    root, _ = init(
        tmp_path,
        env,
        registry=REGISTRY,
        cluster=ClusterInput(kubeconfig=kubeconfig),
        age_recipient=EXAMPLE_RECIPIENT,
    )
    config = root / "deployments/physics/hubploy.yaml"
    text = config.read_text().replace(
        "  staging: {}\n  prod: {}\n",
        (
            "  staging:\n    url: https://staging.physics.example.org  # the staging address\n"
            "  prod:\n    url: https://hub.example.org\n    release: main-hub\n"
        ),
    )
    config.write_text(text)
    (root / "deployments/physics/image-tags.yaml").write_text("images: {}\n")
    return root


def test_new_hub_from_another_copies_its_config_but_not_its_secrets(
    physics_repo: Path, env: dict[str, str]
) -> None:
    root = physics_repo
    result = new_hub(root, "chem", source="physics", env=env)
    chem = root / "deployments/chem"
    assert sorted(str(p.relative_to(chem)) for p in chem.rglob("*") if p.is_file()) == [
        "config/common.yaml",
        "config/prod.yaml",
        "config/staging.yaml",
        "hubploy.yaml",
        "image/Dockerfile",
        "secrets/prod.yaml",
        "secrets/staging.yaml",
    ]  # no kubeconfig.yaml, no image-tags.yaml
    common = (root / "deployments/physics/config/common.yaml").read_text()
    assert (chem / "config/common.yaml").read_text() == common
    text = (chem / "hubploy.yaml").read_text()
    assert "# the staging address" in text and result.comments_kept
    hub = HubConfig.model_validate(yaml.safe_load(text))
    assert [i.name for i in hub.image_entries()] == ["localhost:5000/hubploy/chem-user"]
    assert hub.cluster is not None and hub.cluster.settings.key_files() == {
        "filename": "../../physics/secrets/kubeconfig.yaml"
    }
    assert (hub.environments["staging"].url, hub.environments["prod"].url) == (
        "https://staging.chem.example.org",
        None,
    )  # a url not naming physics is dropped, as is its release
    assert hub.environments["prod"].release is None
    assert result.images == [(REGISTRY, "localhost:5000/hubploy/chem-user")]
    secret = {
        hub_name: decrypt_to_mapping(
            root / f"deployments/{hub_name}/secrets/staging.yaml", env=with_key(env, EXAMPLE_KEY)
        )["jupyterhub"]["proxy"]
        for hub_name in ("physics", "chem")
    }
    assert secret["physics"] != secret["chem"]
    valid = hubploy("validate", cwd=root, env=with_key(env, EXAMPLE_KEY))
    assert (valid.returncode, valid.stdout.strip()) == (0, "ok: 2 hub(s) valid: chem, physics"), valid.stderr


def test_new_hub_without_from_gets_init_files_and_validates(physics_repo: Path, env: dict[str, str]) -> None:
    done = hubploy("new-hub", "bio", cwd=physics_repo, env=env)
    assert done.returncode == 0, done.stderr
    assert "added hub bio" in done.stdout and "validate bio --no-decrypt passes" in done.stdout
    bio = physics_repo / "deployments/bio"
    assert sorted(str(p.relative_to(bio)) for p in bio.rglob("*") if p.is_file()) == [
        "config/common.yaml",
        "config/prod.yaml",
        "config/staging.yaml",
        "hubploy.yaml",
        "secrets/prod.yaml",
        "secrets/staging.yaml",
    ]
    assert HubConfig.model_validate(load(bio / "hubploy.yaml")).cluster is None
    valid = hubploy("validate", "bio", cwd=physics_repo, env=with_key(env, EXAMPLE_KEY))
    assert (valid.returncode, valid.stdout.strip()) == (0, "ok: 1 hub(s) valid: bio"), valid.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad_Name"], "error: hub name 'Bad_Name' must be lowercase letters"),
        (["x" * 46], "at most 45 characters"),
        (["physics"], "error: hub 'physics' already exists"),
        (["chem", "--from", "physic"], "error: --from physic: no such hub (hint: did you mean physics?)"),
    ],
)
def test_new_hub_refuses_in_one_line(
    args: list[str], message: str, physics_repo: Path, env: dict[str, str]
) -> None:
    before = sorted(p.name for p in (physics_repo / "deployments").iterdir())
    done = hubploy("new-hub", *args, cwd=physics_repo, env=env)
    assert (done.returncode, done.stderr.count("\n")) == (1, 1) and message in done.stderr, done.stderr
    assert sorted(p.name for p in (physics_repo / "deployments").iterdir()) == before


def test_new_hub_that_does_not_validate_is_removed(physics_repo: Path, env: dict[str, str]) -> None:
    common = physics_repo / "deployments/physics/config/common.yaml"
    common.write_text(common.read_text() + "  nosuchkey: 1\n")  # the chart's schema refuses it
    with pytest.raises(ConfigError, match="nosuchkey"):
        new_hub(physics_repo, "chem", source="physics", env=env)
    assert sorted(p.name for p in (physics_repo / "deployments").iterdir()) == ["physics"]


def test_hubploy_yaml_edits_keep_comments_or_write_it_anew() -> None:
    text = "environments:\n  staging:  # test\n    url: https://physics.org  # where\n    release: x\n"
    data = yaml.safe_load(text)
    lines = {("environments", "staging", "url"): 3, ("environments", "staging", "release"): 4}
    edits = {
        ("environments", "staging", "url"): "https://chem.org",
        ("environments", "staging", "release"): DROP,
    }
    edited, kept = edited_yaml(text, data, lines, edits)
    assert kept and edited == 'environments:\n  staging:  # test\n    url: "https://chem.org"  # where\n'
    flow = "environments: {staging: {url: https://physics.org}}\n"
    edited, kept = edited_yaml(
        flow,
        yaml.safe_load(flow),
        {("environments", "staging", "url"): 1},
        {("environments", "staging", "url"): "https://chem.org"},
    )
    assert not kept and yaml.safe_load(edited) == {"environments": {"staging": {"url": "https://chem.org"}}}
    assert renamed_image("quay.io/org/physics-user:v1", "physics", "chem") == "quay.io/org/chem-user:v1"
    assert renamed_image("localhost:5000/user-image", "physics", "chem") == "localhost:5000/user-image-chem"
    assert renamed_image("quay.io/org/astrophysics", "physics", "chem") == "quay.io/org/astrophysics-chem"


# --- on the sandbox ---------------------------------------------------------------------------------------


@pytest.mark.sandbox
def test_init_build_and_deploy_on_the_sandbox(tmp_path: Path, env: dict[str, str], sandbox: Sandbox) -> None:
    ensure_base_image(sandbox.paths, sandbox.env)
    name = f"i{secrets.token_hex(3)}"
    base = {**sandbox.env, **{k: env[k] for k in ("HOME", "PYTHONPATH")}, "CI": ""}
    done = hubploy(
        "init",
        "repo",
        "--hub",
        name,
        "--chart-path",
        str(CHART),
        "--registry",
        f"{sandbox.registry}/hubploy/{name}-user",
        "--base-image",
        f"{sandbox.registry}/{BASE_REPOSITORY}:{BASE_TAG}",
        "--kubeconfig",
        str(sandbox.kubeconfig),
        cwd=tmp_path,
        env=base,
    )
    assert done.returncode == 0, done.stderr
    root = tmp_path / "repo"
    deploy_env = {k: v for k, v in base.items() if k != "KUBECONFIG"}  # the hub's encrypted kubeconfig only
    deploy_env["SOPS_AGE_KEY_FILE"] = str(Path(env["HOME"]) / ".config/hubploy/age/repo.key")
    try:
        built = hubploy("build", name, "--check-registry", "--push", cwd=root, env=deploy_env)
        assert built.returncode == 0 and f"{name}: 1 built" in built.stdout, built.stdout + built.stderr
        deployed = hubploy("deploy", name, "hub", "staging", "--timeout", "120", cwd=root, env=deploy_env)
        assert deployed.returncode == 0, deployed.stderr
        assert f"{name}-staging: deployed (revision none -> 1" in deployed.stderr
        assert sandbox.hub_version(f"{name}-staging", timeout=30).startswith("5.")
    finally:
        sandbox.run(
            [sandbox.env["HELM_EXECUTABLE"], "uninstall", f"{name}-staging", "-n", f"{name}-staging"],
            check=False,
        )
        sandbox.kubectl(
            "delete", "namespace", f"{name}-staging", "--wait=false", "--ignore-not-found", check=False
        )
