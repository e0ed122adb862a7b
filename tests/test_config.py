"""The hubploy.yaml model and `hubploy validate`: every classic key read as hubploy reads it, and
every bad input reported with file, key path and line, exit 1, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT
from helpers.cli import run_cli

from hubploy.config.models import HubConfig, split_image_reference
from hubploy.errors import ConfigError
from hubploy.layout import load_repo
from hubploy.validate import validate_repo

GOOD_HUB = {
    "deployments/alpha/hubploy.yaml": """
        images:
          images:
            - name: localhost:5000/org/alpha-user
              path: image
    """,
    "deployments/alpha/image/Dockerfile": "FROM scratch\n",
    "deployments/alpha/config/common.yaml": "jupyterhub: {}\n",
}


def issues_of(root: Path, *hubs: str) -> list[str]:
    return [i.format(root) for i in validate_repo(root, hubs)]


# ------------------------------------------------------------------ the model reads classic keys


def test_legacy_single_image_form() -> None:
    config = HubConfig.model_validate(
        {"images": {"image_name": "gcr.io/p/user", "image_config_path": "a.b.image"}}
    )
    [entry] = config.image_entries()
    assert (entry.name, entry.path, entry.helm_substitution_path) == ("gcr.io/p/user", "image", "a.b.image")


def test_image_list_defaults_and_repo2docker() -> None:
    config = HubConfig.model_validate(
        {
            "images": {
                "images": [
                    {"name": "r/a", "path": "images/a"},
                    {
                        "name": "r/b",
                        "path": "images/b",
                        "helm_substitution_path": "pangeo.jupyterhub.singleuser.image",
                        "repo2docker": {"base_image": "buildpack-deps:jammy"},
                    },
                ]
            }
        }
    )
    a, b = config.image_entries()
    assert a.helm_substitution_path == "jupyterhub.singleuser.image"
    assert b.helm_substitution_path == "pangeo.jupyterhub.singleuser.image"
    assert b.repo2docker is not None and b.repo2docker.base_image == "buildpack-deps:jammy"


@pytest.mark.parametrize("section", ["images.registry", "cluster"])
def test_legacy_aws_keys_are_renamed(section: str) -> None:
    aws = {
        "project": "123456789012",
        "zone": "us-west-2",
        "cluster": "eks1",
        "role_arn": "arn:aws:iam::1:role/x",
    }
    if section == "cluster":
        config = HubConfig.model_validate({"cluster": {"provider": "aws", "aws": aws}})
        settings = config.cluster.aws
    else:
        aws.pop("cluster")
        config = HubConfig.model_validate(
            {"images": {"image_name": "x/y", "registry": {"provider": "aws", "aws": aws}}}
        )
        settings = config.images.registry.aws
    assert (settings.account_id, settings.region) == ("123456789012", "us-west-2")


CLUSTERS = {
    "gcloud": (
        {"gcloud": {"project": "p", "cluster": "c", "zone": "z", "service_key": "k.json"}},
        "GcloudCluster",
        {"service_key": "k.json"},
        "gcloud-p-c",
    ),
    "aws": ({"aws": {"cluster": "eks", "region": "r", "role_arn": "arn"}}, "AwsCluster", {}, "aws-eks"),
    "azure": (
        {"azure": {"resource_group": "rg", "cluster": "aks", "auth_file": "sp.json"}},
        "AzureCluster",
        {"auth_file": "sp.json"},
        "azure-rg-aks",
    ),
    "kubeconfig": (
        {"kubeconfig": {"filename": "kube.yaml"}},
        "KubeconfigCluster",
        {"filename": "kube.yaml"},
        "kubeconfig-kube.yaml",
    ),
}


@pytest.mark.parametrize("provider", list(CLUSTERS))
def test_cluster_settings_are_one_typed_value_per_provider(provider: str) -> None:
    section, kind, key_files, key = CLUSTERS[provider]
    other = "gcloud" if provider != "gcloud" else "aws"  # another provider's section is read by no one
    cluster = HubConfig.model_validate(
        {"cluster": {"provider": provider, **section, **CLUSTERS[other][0]}}
    ).cluster
    assert type(cluster.settings).__name__ == kind and cluster.settings.provider == provider
    assert cluster.settings.key_files() == key_files and cluster.key() == key
    kubeconfig = {**section.get("kubeconfig", {}), "context": "ctx-{namespace}"}
    with_context = HubConfig.model_validate(
        {"cluster": {"provider": provider, **section, "kubeconfig": kubeconfig}}
    )
    assert with_context.cluster.key() == "ctx-"


def test_registry_settings_are_typed_and_gcloud_needs_no_section() -> None:
    registry = HubConfig.model_validate({"images": {"image_name": "x/y", "registry": {"provider": "gcloud"}}})
    assert registry.images.registry.settings is None
    docker = HubConfig.model_validate(
        {
            "images": {
                "image_name": "x/y",
                "registry": {
                    "provider": "dockerconfig",
                    "dockerconfig": {"filename": "docker.json", "credentials_block": "b"},
                },
            }
        }
    )
    settings = docker.images.registry.settings
    assert (settings.provider, settings.key_files(), settings.credentials_block) == (
        "dockerconfig",
        {"filename": "docker.json"},
        "b",
    )


@pytest.mark.parametrize(
    "reference,expected",
    [
        (
            "us-central1-docker.pkg.dev/p/r/user:511c4637d702",
            ("us-central1-docker.pkg.dev/p/r/user", "511c4637d702"),
        ),
        ("localhost:5000/hubploy/user:abc1234", ("localhost:5000/hubploy/user", "abc1234")),
        ("localhost:5000/hubploy/user", ("localhost:5000/hubploy/user", None)),
        ("registry.example.org:8443/a/b/c:v1.2", ("registry.example.org:8443/a/b/c", "v1.2")),
        ("jupyter/base-notebook", ("jupyter/base-notebook", None)),
    ],
)
def test_v1_name_with_tag_parses_registry_ports(reference: str, expected: tuple) -> None:
    assert split_image_reference(reference) == expected


def test_v1_pinned_image_needs_no_path(deployment_repo) -> None:
    root = deployment_repo(
        {
            "deployments/data100/hubploy.yaml": """
        images:
          images:
            - name: localhost:5000/org/data100-user:511c4637d702
    """
        }
    )
    [image] = load_repo(root).load_hub("data100").images
    assert (image.name, image.pinned_tag, image.path) == (
        "localhost:5000/org/data100-user",
        "511c4637d702",
        None,
    )


def test_cluster_providers_and_namespace_context(deployment_repo, write_files) -> None:
    root = deployment_repo(
        {
            "deployments/nrp/hubploy.yaml": """
            cluster:
              provider: kubeconfig
              kubeconfig:
                filename: kubeconfig.yaml
                context: nrp-{namespace}
        """,
            "deployments/nrp/secrets/kubeconfig.yaml": "sops: {version: 3}\napiVersion: v1\n",
            "deployments/gke/hubploy.yaml": """
            cluster:
              provider: gcloud
              gcloud: {project: p, cluster: c, zone: us-central1, credentials_block: gke-ci}
              kubeconfig: {context: "gke-{namespace}"}
        """,
            "deployments/aks/hubploy.yaml": """
            cluster:
              provider: azure
              azure: {resource_group: rg, cluster: aks, auth_file: sp.json}
        """,
            "deployments/aks/secrets/sp.json": '{"sops": {"version": "3"}, "appId": "x"}',
        }
    )
    repo = load_repo(root)
    assert repo.load_hub("nrp").config.cluster.context_template == "nrp-{namespace}"
    assert repo.load_hub("gke").config.cluster.context_template == "gke-{namespace}"
    assert repo.load_hub("aks").config.cluster.azure.auth_file == "sp.json"
    assert issues_of(root) == []


def test_environments_default_list_and_mapping(deployment_repo) -> None:
    root = deployment_repo(
        {
            "deployments/a/hubploy.yaml": "images: {image_name: x/a}\n",
            "deployments/a/image/Dockerfile": "",
            "deployments/b/hubploy.yaml": "environments: [develop, staging, prod]\n",
            "deployments/c/hubploy.yaml": "environments:\n  staging: {url: 'https://s.example.org', "
            "release: c-stg}\n",
        }
    )
    repo = load_repo(root)
    assert repo.load_hub("a").environments == ["staging", "prod"]
    assert repo.load_hub("b").environments == ["develop", "staging", "prod"]
    c = repo.load_hub("c")
    assert (c.release("staging"), c.namespace("staging"), c.url("staging")) == (
        "c-stg",
        "c-staging",
        "https://s.example.org",
    )
    with pytest.raises(ConfigError, match="no environment 'prod'"):
        c.release("prod")


def test_schema_command_prints_json_schema() -> None:
    result = run_cli("schema", cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    assert {"images", "cluster", "environments"} <= set(schema["properties"])
    registry = schema["$defs"]["Registry"]["properties"]["provider"]
    assert set(registry["enum"]) == {"gcloud", "aws", "azure", "dockerconfig"}
    assert all("description" in field for field in schema["$defs"]["ImageEntry"]["properties"].values())
    repo_schema = json.loads(run_cli("schema", "--repo", cwd=PROJECT_ROOT).stdout)
    assert "freeze_windows" in repo_schema["properties"]


# ------------------------------------------------------------------ validate: the example repo


def test_example_repository_is_valid() -> None:
    result = run_cli("validate", cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    assert "minimal" in result.stdout and "physics" in result.stdout


# ------------------------------------------------------------------ validate: bad inputs

BAD_CASES: dict[str, tuple[dict[str, str], list[str]]] = {
    "malformed yaml": (
        {"deployments/h/hubploy.yaml": "images:\n  image_name: [unclosed\n"},
        ["deployments/h/hubploy.yaml:3: malformed YAML"],
    ),
    "empty file": ({"deployments/h/hubploy.yaml": ""}, ["deployments/h/hubploy.yaml:1: file is empty"]),
    "top-level list": (
        {"deployments/h/hubploy.yaml": "- images\n"},
        ["deployments/h/hubploy.yaml:1: top level is a list"],
    ),
    "wrong type": (
        {"deployments/h/hubploy.yaml": "images:\n  images: not-a-list\n"},
        ["deployments/h/hubploy.yaml:2: images.images: Input should be a valid list"],
    ),
    "unknown provider": (
        {"deployments/h/hubploy.yaml": "cluster:\n  provider: digitalocean\n"},
        [
            (
                "deployments/h/hubploy.yaml:2: cluster.provider: Input should be 'gcloud', 'aws', "
                "'azure' or 'kubeconfig'"
            )
        ],
    ),
    "misspelt key": (
        {"deployments/h/hubploy.yaml": "images:\n  image_nmae: x/y\n"},
        [("deployments/h/hubploy.yaml:2: images.image_nmae: unknown key (hint: did you mean `image_name`?)")],
    ),
    "aws both keys": (
        {
            "deployments/h/hubploy.yaml": """
        cluster:
          provider: aws
          aws: {cluster: c, region: r, service_key: k.yaml, role_arn: arn}
    """,
            "deployments/h/secrets/k.yaml": "sops: {}\n",
        },
        [
            (
                "deployments/h/hubploy.yaml:4: cluster.aws: set only one of service_key, role_arn or "
                "credentials_block (found service_key, role_arn) (hint: an aws block takes either service_key"
            )
        ],
    ),
    "provider without section": (
        {"deployments/h/hubploy.yaml": "cluster:\n  provider: gcloud\n"},
        [("deployments/h/hubploy.yaml:1: cluster: provider is 'gcloud' but there is no `gcloud:` section")],
    ),
    "missing required key": (
        {"deployments/h/hubploy.yaml": "cluster:\n  provider: azure\n  azure: {cluster: c, auth_file: a}\n"},
        [("deployments/h/hubploy.yaml:3: cluster.azure.resource_group: required key is missing")],
    ),
    "missing key file": (
        {
            "deployments/h/hubploy.yaml": "cluster:\n  provider: kubeconfig\n"
            "  kubeconfig:\n    filename: kube.yaml\n"
        },
        [
            (
                "deployments/h/hubploy.yaml:4: cluster.kubeconfig.filename: key file "
                "secrets/kube.yaml does not exist"
            )
        ],
    ),
    "missing image dir": (
        {"deployments/h/hubploy.yaml": "images:\n  image_name: x/y\n"},
        [("deployments/h/hubploy.yaml:2: images.image_name: image directory image/ does not exist")],
    ),
    "image path escapes": (
        {
            "deployments/h/hubploy.yaml": "images:\n  images:\n    - name: x/y\n"
            "      path: ../../../outside\n",
            "../outside/Dockerfile": "",
        },
        [
            (
                "deployments/h/hubploy.yaml:4: images.images[0].path: image path "
                "'../../../outside' resolves outside the repository"
            )
        ],
    ),
    "key file escapes": (
        {
            "deployments/h/hubploy.yaml": "cluster:\n  provider: kubeconfig\n"
            "  kubeconfig: "
            "{filename: ../../../../etc/passwd}\n"
        },
        [
            (
                "deployments/h/hubploy.yaml:3: cluster.kubeconfig.filename: key file "
                "'../../../../etc/passwd' resolves outside the repository"
            )
        ],
    ),
    "bad hub name": (
        {"deployments/Bad_Hub/hubploy.yaml": "environments: [staging]\n"},
        ["deployments/Bad_Hub: hub name 'Bad_Hub' is not a valid DNS label"],
    ),
    "release too long": (
        {"deployments/" + "a" * 50 + "/hubploy.yaml": "environments: [staging]\n"},
        [
            "deployments/"
            + "a" * 50
            + "/hubploy.yaml:1: environments.staging: release name '"
            + "a" * 50
            + "-staging' is 58 characters; helm allows 53"
        ],
    ),
    "config not a mapping": (
        {
            "deployments/h/hubploy.yaml": "environments: [staging]\n",
            "deployments/h/config/common.yaml": "- a\n- b\n",
        },
        ["deployments/h/config/common.yaml:1: top level is a list"],
    ),
    "config malformed": (
        {
            "deployments/h/hubploy.yaml": "environments: [staging]\n",
            "deployments/h/config/staging.yaml": "a: b: c\n",
        },
        ["deployments/h/config/staging.yaml:1: malformed YAML"],
    ),
    "unknown environment": (
        {"deployments/h/hubploy.yaml": "environments: [staging, qa]\n"},
        [("deployments/h/hubploy.yaml:1: environments.qa: Input should be 'develop', 'staging' or 'prod'")],
    ),
    "duplicate environment": (
        {"deployments/h/hubploy.yaml": "environments: [staging, staging]\n"},
        [("deployments/h/hubploy.yaml:1: environments: environments lists a name twice")],
    ),
    "image without path": (
        {"deployments/h/hubploy.yaml": "images:\n  images:\n    - name: x/y\n"},
        ["deployments/h/hubploy.yaml:3: images.images[0]: an image needs `path`"],
    ),
    "plaintext secret": (
        {
            "deployments/h/hubploy.yaml": "environments: [staging]\n",
            "deployments/h/secrets/staging.yaml": "jupyterhub: {proxy: {secretToken: abc}}\n",
        },
        ["deployments/h/secrets/staging.yaml: plaintext file under secrets/"],
    ),
    "git-crypt locked": (
        {
            "deployments/h/hubploy.yaml": "environments: [staging, prod]\n",
            "deployments/h/secrets/prod.yaml": "\x00GITCRYPT\x00locked-bytes",
        },
        [("deployments/h/secrets/prod.yaml: file is still locked by git-crypt: run `git-crypt unlock`")],
    ),
    "uppercase image name": (
        {
            "deployments/h/hubploy.yaml": "images:\n  images:\n"
            "    - {name: Registry.Example.org/Hubs/Alpha, "
            "path: image}\n",
            "deployments/h/image/Dockerfile": "",
        },
        [
            (
                "deployments/h/hubploy.yaml:3: images.images[0].name: "
                "'Registry.Example.org/Hubs/Alpha' is not a valid image reference: repository "
                "path 'Hubs/Alpha' must be lowercase"
            )
        ],
    ),
    "uppercase legacy image name": (
        {"deployments/h/hubploy.yaml": "images: {image_name: quay.io/Org/User}\n"},
        [
            (
                "deployments/h/hubploy.yaml:1: images.image_name: 'quay.io/Org/User' "
                "is not a valid image reference"
            )
        ],
    ),
    "sops file that does not parse": (
        {
            "deployments/h/hubploy.yaml": "environments: [staging]\n",
            "deployments/h/secrets/staging.yaml": "a: b: c\nsops: {version: 3}\n",
        },
        [
            (
                "deployments/h/secrets/staging.yaml: cannot be parsed as YAML "
                "(line 1: mapping values are not allowed"
            )
        ],
    ),
    "repo settings typo": (
        {"hubploy-repo.yaml": "chrat: hub\n", "deployments/h/hubploy.yaml": "{}\n"},
        ["hubploy-repo.yaml:1: chrat: unknown key (hint: did you mean `chart`?)"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_config_is_reported_with_file_key_and_line(case: str, deployment_repo) -> None:
    files, expected = BAD_CASES[case]
    root = deployment_repo(files)
    found = issues_of(root)
    for prefix in expected:
        assert any(line.startswith(prefix) for line in found), f"{prefix!r} not in {found}"


def test_missing_chart_dir(tmp_path: Path, write_files) -> None:
    root = write_files(tmp_path, {"deployments/h/hubploy.yaml": "environments: [staging]\n"})
    assert any("chart directory hub/ with a Chart.yaml not found" in i for i in issues_of(root))


def test_all_errors_are_reported_at_once(deployment_repo) -> None:
    root = deployment_repo(
        {
            "deployments/one/hubploy.yaml": "images:\n  image_nmae: x\ncluster:\n  provider: nope\n",
            "deployments/two/hubploy.yaml": "",
            "deployments/two/config/common.yaml": "[1, 2]\n",
        }
    )
    found = issues_of(root)
    assert len(found) == 4, found
    result = run_cli("validate", cwd=root)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.count("error: ") == 4
    assert "deployments/one/hubploy.yaml:2: images.image_nmae: unknown key" in result.stderr


def test_validate_named_hubs_only(deployment_repo) -> None:
    root = deployment_repo({**GOOD_HUB, "deployments/broken/hubploy.yaml": ""})
    assert run_cli("validate", "alpha", cwd=root).returncode == 0
    assert run_cli("validate", cwd=root).returncode == 1
    unknown = run_cli("validate", "nosuch", cwd=root)
    assert unknown.returncode == 1 and "no hub named 'nosuch'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_validate_outside_a_deployment_repo(tmp_path: Path) -> None:
    result = run_cli("validate", cwd=tmp_path)
    assert result.returncode == 1
    assert "no deployments/ directory here" in result.stderr and "Traceback" not in result.stderr
