"""The credential blocks: validation, registration and secret obfuscation on a real Prefect server, and
blocks.resolve.cluster_access_for (a hub's named block, or its classic key files)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from helpers.cloud import Recorder, base_env, exec_user, recorder, write_kubeconfig  # noqa: F401
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr, ValidationError

from blocks.aws import AwsClusterCredentials
from blocks.azure import AzureClusterCredentials
from blocks.gcp import GcpClusterCredentials
from blocks.kubeconfig import KubeconfigCredentials
from blocks.resolve import cluster_access_for
from hubploy.cloud import verify_access
from hubploy.errors import CredentialsError
from hubploy.layout import load_repo
from hubploy.runner import child_env, run

pytest_plugins = ["fixtures.sandbox"]

PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nblock-test-private-key\n-----END PRIVATE KEY-----\n"
GCP_KEY = {
    "type": "service_account",
    "private_key": PRIVATE_KEY,
    "client_email": "d@p.iam.gserviceaccount.com",
}
TOKEN = "block-test-token-0123456789abcdef"


def _name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- validation


def test_aws_needs_a_key_pair_or_a_role() -> None:
    with pytest.raises(ValidationError, match="set an access key pair, a role_arn, or both"):
        AwsClusterCredentials(cluster="c", region="r")
    with pytest.raises(ValidationError, match="set both aws_access_key_id and aws_secret_access_key"):
        AwsClusterCredentials(cluster="c", region="r", aws_access_key_id="AKIA")
    role = AwsClusterCredentials(cluster="c", region="r", role_arn="arn:aws:iam::1:role/x")
    assert role.role_session_name == "hubploy-cluster-auth"


def test_gcp_key_must_be_a_service_account_key() -> None:
    with pytest.raises(ValidationError, match="not a service-account JSON key"):
        GcpClusterCredentials(
            project="p", cluster="c", location="l", service_account_info={"type": "authorized_user"}
        )
    assert GcpClusterCredentials(project="p", cluster="c", location="l").service_account_info is None


def test_secrets_stay_out_of_reprs() -> None:
    blocks = [
        GcpClusterCredentials(project="p", cluster="c", location="l", service_account_info=GCP_KEY),
        AzureClusterCredentials(
            client_id="a", tenant_id="t", client_secret=SecretStr(TOKEN), resource_group="rg", cluster="c"
        ),
        AwsClusterCredentials(
            cluster="c", region="r", aws_access_key_id="AKIA", aws_secret_access_key=SecretStr(TOKEN)
        ),
    ]
    for block in blocks:
        assert TOKEN not in repr(block) and "block-test-private-key" not in repr(block)


# ---------------------------------------------------------------- a real Prefect server


@pytest.mark.prefect
@pytest.mark.parametrize("module", ["blocks.gcp", "blocks.aws", "blocks.azure", "blocks.kubeconfig"])
def test_prefect_block_register(prefect_api: str, module: str) -> None:
    prefect = str(Path(sys.executable).parent / "prefect")
    out = run(
        [prefect, "block", "register", "-m", module],
        env=child_env({"PREFECT_API_URL": prefect_api}),
        timeout=120,
    )
    assert "Successfully registered 1 block" in out.stdout


@pytest.mark.prefect
@pytest.mark.parametrize(
    ("block", "secret_fields", "secret_values"),
    [
        (
            GcpClusterCredentials(
                project="p", cluster="c", location="us-central1", service_account_info=GCP_KEY
            ),
            ["service_account_info"],
            [PRIVATE_KEY],
        ),
        (
            AwsClusterCredentials(
                cluster="c", region="r", aws_access_key_id="AKIA", aws_secret_access_key=SecretStr(TOKEN)
            ),
            ["aws_secret_access_key"],
            [TOKEN],
        ),
        (
            AzureClusterCredentials(
                client_id="a", tenant_id="t", client_secret=SecretStr(TOKEN), resource_group="rg", cluster="c"
            ),
            ["client_secret"],
            [TOKEN],
        ),
        (
            KubeconfigCredentials(
                server="https://k",
                token=SecretStr(TOKEN),
                client_key_data=SecretStr("a2V5LWtleQ=="),
                client_certificate_data="Y2VydA==",
            ),
            ["token", "client_key_data"],
            [TOKEN, "a2V5LWtleQ=="],
        ),
    ],
    ids=["gcp", "aws", "azure", "kubeconfig"],
)
def test_api_returns_secret_fields_obfuscated(
    prefect_api: str, block, secret_fields: list[str], secret_values: list[str]
) -> None:
    name = _name()
    document_id = block.save(name, overwrite=True)
    response = httpx.get(f"{prefect_api}/block_documents/{document_id}", timeout=10)
    response.raise_for_status()
    data = response.json()["data"]
    for value in secret_values:
        assert value not in response.text
    for field in secret_fields:
        assert "*" in str(data[field])
    loaded = type(block).load(name)
    assert loaded == block  # secrets come back intact through Block.load


# ---------------------------------------------------------------- resolve


def _hub(deployment_repo, cluster: str):
    root = deployment_repo({"deployments/h/hubploy.yaml": cluster})
    return load_repo(root).load_hub("h")


@pytest.mark.prefect
def test_resolve_a_gcp_block(prefect_api: str, deployment_repo, recorder: Recorder, base_env: dict) -> None:
    name = _name()
    GcpClusterCredentials(
        project="bp", cluster="bc", location="europe-west4", service_account_info=GCP_KEY
    ).save(name)
    hub = _hub(
        deployment_repo,
        f"""
        cluster:
          provider: gcloud
          gcloud: {{project: p, cluster: c, zone: z, credentials_block: {name}}}
          kubeconfig: {{context: "gke-{{namespace}}"}}
    """,
    )
    recorder.on(
        "gcloud",
        "container",
        effect=lambda argv, env: write_kubeconfig(
            Path(env["KUBECONFIG"]), exec_user("gke-gcloud-auth-plugin")
        ),
    )
    with cluster_access_for(hub, "staging", base_env=base_env) as access:
        assert access.context == "gke-h-staging"
    assert recorder.argvs[1] == [
        "gcloud",
        "container",
        "clusters",
        "get-credentials",
        "bc",
        "--region",
        "europe-west4",
        "--project",
        "bp",
        "--quiet",
    ]
    assert all(PRIVATE_KEY not in arg for argv in recorder.argvs for arg in argv)


@pytest.mark.prefect
def test_resolve_a_missing_block(prefect_api: str, deployment_repo, base_env: dict) -> None:
    hub = _hub(
        deployment_repo,
        """
        cluster:
          provider: azure
          azure: {resource_group: rg, cluster: c, credentials_block: no-such-block-here}
    """,
    )
    with (
        pytest.raises(
            CredentialsError, match="cannot load Azure Cluster Credentials block 'no-such-block-here'"
        ),
        cluster_access_for(hub, "staging", base_env=base_env),
    ):
        pass


def test_resolve_falls_back_to_key_files(deployment_repo, tmp_path: Path, base_env: dict) -> None:
    hub = _hub(deployment_repo, "environments: [staging]\n")
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, {"token": "x"})
    with cluster_access_for(hub, "staging", base_env={**base_env, "KUBECONFIG": str(path)}) as access:
        assert access.kubeconfig == path


@pytest.mark.prefect
@pytest.mark.sandbox
def test_resolve_a_kubeconfig_block_against_the_sandbox(
    prefect_api: str, sandbox, sandbox_namespace: str, deployment_repo
) -> None:
    """End to end: a block saved on the server from the sandbox kubeconfig, named in hubploy.yaml,
    whose context template comes from hubploy.yaml; kubectl runs with the yielded env."""
    name = _name()
    KubeconfigCredentials.from_kubeconfig(sandbox.kubeconfig).save(name)
    hub = _hub(
        deployment_repo,
        f"""
        cluster:
          provider: kubeconfig
          kubeconfig: {{credentials_block: {name}, context: "sb-{{namespace}}"}}
        environments:
          staging: {{namespace: {sandbox_namespace}}}
    """,
    )
    base = {k: v for k, v in sandbox.env.items() if k != "KUBECONFIG"}
    with cluster_access_for(hub, "staging", base_env=base) as access:
        assert access.context == f"sb-{sandbox_namespace}"
        assert yaml.safe_load(access.kubeconfig.read_text())["current-context"] == access.context
        verify_access(access)
        out = run(
            ["kubectl", *access.kubectl_args(), "get", "ns", sandbox_namespace, "-o", "name"],
            env=access.env,
            timeout=60,
        )
        assert out.stdout.strip() == f"namespace/{sandbox_namespace}"
    assert not access.kubeconfig.exists()


# ---------------------------------------------------------------- Prefect's block standards


class TestBlockStandards(BlockStandardTestSuite):
    test_has_a_valid_image = None  # type: ignore[assignment]  # no logos; that check downloads them

    @pytest.fixture(
        params=[GcpClusterCredentials, AwsClusterCredentials, AzureClusterCredentials, KubeconfigCredentials],
        ids=lambda b: b.__name__,
    )
    def block(self, request: pytest.FixtureRequest) -> type[Block]:
        return request.param

    def test_code_example_compiles(self, block: type[Block]) -> None:
        code = block.get_code_example()
        assert code is not None
        compile(code.strip().removeprefix("```python").removesuffix("```"), block.__name__, "exec")
