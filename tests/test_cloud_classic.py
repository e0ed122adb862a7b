"""hubploy.cloud.cluster_access: the classic hubploy.yaml key files, sops-encrypted with a real sops and
an age key generated here; cloud CLIs replaced by the recorder."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from helpers.cloud import (  # noqa: F401
    Recorder,
    assert_home_untouched,
    assert_no_secret_on_argv,
    base_env,
    exec_user,
    recorder,
    write_kubeconfig,
)

from hubploy import cloud
from hubploy.errors import CredentialsError, SecretsError
from hubploy.layout import Hub, load_repo
from hubploy.runner import run as real_run

VENV_BIN = str(Path(sys.executable).parent)
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nclassic-gcloud-private-key\n-----END PRIVATE KEY-----\n"
GCP_KEY = {
    "type": "service_account",
    "private_key": PRIVATE_KEY,
    "client_email": "d@p.iam.gserviceaccount.com",
}
AWS_SECRET = "classic/aws/secret/access/key/EXAMPLE"
SP_PASSWORD = "classic~azure~sp~password"
TOKEN = "classic-kubeconfig-token-abcdef"


@pytest.fixture(scope="module")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    key = tmp_path_factory.mktemp("age") / "key.txt"
    real_run(["age-keygen", "-o", str(key)], env={"PATH": os.environ["PATH"]})
    public = next(
        line.split(":", 1)[1].strip()
        for line in key.read_text().splitlines()
        if line.startswith("# public key:")
    )
    return key, public


@pytest.fixture
def env(base_env: dict[str, str], age_key: tuple[Path, str]) -> dict[str, str]:
    return {
        **base_env,
        "PATH": f"{VENV_BIN}{os.pathsep}{base_env['PATH']}",
        "SOPS_AGE_KEY_FILE": str(age_key[0]),
    }


@pytest.fixture
def make_hub(deployment_repo, age_key: tuple[Path, str], env: dict[str, str]) -> Callable[..., Hub]:
    """A hub `h` with the given hubploy.yaml and secrets/ files, sops-encrypted unless plaintext."""

    def make(
        config: str,
        secrets: dict[str, str] | None = None,
        *,
        encrypt: bool = True,
        repo_settings: str | None = None,
    ) -> Hub:
        files = {"deployments/h/hubploy.yaml": config}
        if repo_settings:
            files["hubploy-repo.yaml"] = repo_settings
        root = deployment_repo(files)
        for name, text in (secrets or {}).items():
            path = root / "deployments/h/secrets" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if encrypt:
                real_run(
                    ["sops", "--encrypt", "--age", age_key[1], "--in-place", str(path)],
                    env=env,
                    cwd=path.parent,
                )
        return load_repo(root).load_hub("h")

    return make


def test_gcloud_sops_key_and_context_template(recorder: Recorder, make_hub, env: dict[str, str]) -> None:
    hub = make_hub(
        """
        cluster:
          provider: gcloud
          gcloud: {project: p, cluster: hubs, zone: us-central1-b, service_key: gke.json}
          kubeconfig: {context: "gke-{namespace}"}
    """,
        {"gke.json": json.dumps(GCP_KEY)},
    )
    seen: list[dict] = []
    recorder.on("gcloud", "auth", effect=lambda argv, e: seen.append(json.loads(Path(argv[4]).read_text())))
    with cloud.cluster_access(hub, "staging", base_env=env) as access:
        assert access.context == "gke-h-staging"
        assert recorder.argvs[1] == [
            "gcloud",
            "container",
            "clusters",
            "get-credentials",
            "hubs",
            "--zone",
            "us-central1-b",
            "--project",
            "p",
            "--quiet",
        ]
    assert seen == [GCP_KEY]
    assert_no_secret_on_argv(recorder, PRIVATE_KEY, "classic-gcloud-private-key")
    assert_home_untouched(env)


def test_aws_sops_yaml_creds(recorder: Recorder, make_hub, env: dict[str, str]) -> None:
    hub = make_hub(
        """
        cluster:
          provider: aws
          aws: {project: "123456789012", zone: us-east-1, cluster: eks, service_key: aws.yaml}
    """,
        {
            "aws.yaml": yaml.safe_dump(
                {"creds": {"aws_access_key_id": "AKIACLASSIC00000000", "aws_secret_access_key": AWS_SECRET}}
            )
        },
    )
    seen: list[str] = []
    recorder.on(
        "aws",
        effect=lambda argv, e: (
            seen.append(Path(e["AWS_SHARED_CREDENTIALS_FILE"]).read_text()),
            write_kubeconfig(Path(argv[-1]), exec_user("aws")),
        ),
    )
    with cloud.cluster_access(hub, "prod", base_env=env) as access:
        assert recorder.argvs == [
            [
                "aws",
                "eks",
                "update-kubeconfig",
                "--name",
                "eks",
                "--region",
                "us-east-1",
                "--kubeconfig",
                str(access.kubeconfig),
            ]
        ]
    assert f"aws_secret_access_key = {AWS_SECRET}" in seen[0]
    assert_no_secret_on_argv(recorder, AWS_SECRET)


def test_aws_role_arn(recorder: Recorder, make_hub, env: dict[str, str]) -> None:
    hub = make_hub("""
        cluster:
          provider: aws
          aws: {region: us-east-1, cluster: eks, role_arn: "arn:aws:iam::1:role/deploy"}
    """)
    seen: list[str] = []
    recorder.on(
        "aws",
        effect=lambda argv, e: (
            seen.append(Path(e["AWS_CONFIG_FILE"]).read_text()),
            write_kubeconfig(Path(argv[-1]), exec_user("aws")),
        ),
    )
    with cloud.cluster_access(hub, "prod", base_env=env):
        pass
    assert "role_arn = arn:aws:iam::1:role/deploy" in seen[0]
    assert "role_session_name = hubploy-cluster-auth" in seen[0]


def test_azure_auth_file_is_sops_decrypted(recorder: Recorder, make_hub, env: dict[str, str]) -> None:
    """Classic hubploy never decrypted the azure auth_file; here a sops-encrypted one works."""
    hub = make_hub(
        """
        cluster:
          provider: azure
          azure: {resource_group: rg, cluster: aks, auth_file: sp.json}
    """,
        {"sp.json": json.dumps({"appId": "app-1", "tenant": "t-1", "password": SP_PASSWORD})},
    )
    seen: list[str] = []
    recorder.on("az", "login", effect=lambda argv, e: seen.append(Path(argv[8][1:]).read_text()))
    recorder.on(
        "az",
        "aks",
        effect=lambda argv, e: write_kubeconfig(Path(argv[argv.index("--file") + 1]), {"token": "x"}),
    )
    with cloud.cluster_access(hub, "staging", base_env=env):
        pass
    assert recorder.argvs[0][:8] == [
        "az",
        "login",
        "--service-principal",
        "--username",
        "app-1",
        "--tenant",
        "t-1",
        "--password",
    ]
    assert seen == [SP_PASSWORD]
    assert_no_secret_on_argv(recorder, SP_PASSWORD)


def test_plaintext_auth_file_needs_the_repo_flag(recorder: Recorder, make_hub, env: dict[str, str]) -> None:
    config = """
        cluster:
          provider: azure
          azure: {resource_group: rg, cluster: aks, auth_file: sp.yaml}
    """
    sp = {"sp.yaml": yaml.safe_dump({"appId": "app-1", "tenant": "t-1", "password": SP_PASSWORD})}
    with (
        pytest.raises(SecretsError, match="plaintext file under secrets/"),
        cloud.cluster_access(make_hub(config, sp, encrypt=False), "staging", base_env=env),
    ):
        pass
    assert recorder.calls == []


def test_kubeconfig_file(recorder: Recorder, make_hub, env: dict[str, str]) -> None:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://k8s.example.org"}}],
        "users": [{"name": "x", "user": {"token": TOKEN}}],
        "contexts": [{"name": "nrp-h-prod", "context": {"cluster": "x", "user": "x"}}],
    }
    hub = make_hub(
        """
        cluster:
          provider: kubeconfig
          kubeconfig: {filename: kubeconfig.yaml, context: "nrp-{namespace}"}
    """,
        {"kubeconfig.yaml": yaml.safe_dump(kubeconfig)},
    )
    with cloud.cluster_access(hub, "prod", base_env=env) as access:
        assert access.context == "nrp-h-prod"
        assert yaml.safe_load(access.kubeconfig.read_text()) == kubeconfig
        assert access.env == {**env, "KUBECONFIG": str(access.kubeconfig)}
    assert not access.kubeconfig.parent.exists()
    assert recorder.calls == []


def test_no_cluster_section_uses_the_ambient_kubeconfig(
    make_hub, env: dict[str, str], tmp_path: Path
) -> None:
    hub = make_hub("environments: [staging]\n")
    path = tmp_path / "ambient"
    write_kubeconfig(path, {"token": "x"})
    with cloud.cluster_access(hub, "staging", base_env={**env, "KUBECONFIG": str(path)}) as access:
        assert (access.kubeconfig, access.context) == (path, None)
    assert path.exists()


def test_a_named_block_is_not_resolved_here(make_hub, env: dict[str, str]) -> None:
    hub = make_hub("""
        cluster:
          provider: kubeconfig
          kubeconfig: {credentials_block: nrp}
    """)
    with (
        pytest.raises(CredentialsError, match="names credentials block 'nrp'"),
        cloud.cluster_access(hub, "staging", base_env=env),
    ):
        pass
