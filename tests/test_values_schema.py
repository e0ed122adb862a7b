"""Chart values validated before deploy (issue 20, point 6): `hubploy validate` checks each hub's merged
values in each environment against the chart's values.schema.json and its dependencies' schemas under
their keys, and reports every error in the layered file that set the key, with its line. These charts are
small and local (file:// dependencies are read from their directories: no helm, no network); the example
repository with the Z2JH-shaped chart is checked in tests/test_operator_repos.py and
tests/reliability/test_bad_repos.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT_ROOT
from helpers.cli import run_cli

from hubploy.validate import validate_repo

STRICT_IMAGE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "tag": {"type": "string"}},
}
SUB_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "enabled": {"type": "boolean"},
        "global": {"type": "object"},
        "hub": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"image": STRICT_IMAGE, "replicas": {"type": "integer", "minimum": 1}},
        },
        "singleuser": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "image": STRICT_IMAGE,
                "defaultUrl": {"type": "string"},
                "cpu": {"enum": ["small", "large"]},
            },
        },
    },
}


def chart_files(condition: str | None = None, alias: str | None = None) -> dict[str, str]:
    dependency = {"name": "jupyterhub", "version": "4.4.0", "repository": "file://../charts/jupyterhub"}
    dependency.update({"condition": condition} if condition else {})
    dependency.update({"alias": alias} if alias else {})
    key = alias or "jupyterhub"
    return {
        "hub/Chart.yaml": yaml.safe_dump(
            {"apiVersion": "v2", "name": "hub", "version": "0.1.0", "dependencies": [dependency]}
        ),
        "hub/values.yaml": f"{key}:\n  hub:\n    replicas: 1\n",
        "hub/values.schema.json": json.dumps(
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {key: {"type": "object"}, "global": {"type": "object"}},
            }
        ),
        "charts/jupyterhub/Chart.yaml": "apiVersion: v2\nname: jupyterhub\nversion: 4.4.0\n",
        "charts/jupyterhub/values.yaml": "hub: {replicas: 1}\nsingleuser: {defaultUrl: /lab}\n",
        "charts/jupyterhub/values.schema.json": json.dumps(SUB_SCHEMA),
    }


@pytest.fixture
def repo(tmp_path: Path, write_files):  # type: ignore[no-untyped-def]
    def make(files: dict[str, str], **chart: str) -> Path:
        return write_files(tmp_path / "repo", {**chart_files(**chart), **files})

    return make


def issues(root: Path, **kwargs: object) -> list[str]:
    return [i.format(root) for i in validate_repo(root, **kwargs)]  # type: ignore[arg-type]


def test_a_typo_under_the_dependency_key_is_reported_in_its_file_at_its_line(repo) -> None:  # type: ignore[no-untyped-def]
    root = repo(
        {
            "deployments/h/hubploy.yaml": "environments: [staging]\n",
            "deployments/h/config/common.yaml": "jupyterhub:\n  singleuser:\n    defaultUrl: /lab\n"
            "    imagee: {name: x, tag: '1'}\n",
        }
    )
    assert issues(root) == [
        (
            "deployments/h/config/common.yaml:4: jupyterhub.singleuser.imagee: unknown key: "
            "the jupyterhub chart's values schema allows no `imagee` here; did you mean "
            "`image`?"
        )
    ]


def test_each_error_is_in_the_layer_that_set_the_key(repo) -> None:  # type: ignore[no-untyped-def]
    root = repo(
        {
            "deployments/h/hubploy.yaml": "environments: [staging, prod]\n",
            "deployments/h/config/common.yaml": "jupyterhub:\n  hub:\n    replicas: 2\n"
            "  singleuser: {cpu: small}\n",
            "deployments/h/config/staging.yaml": "jupyterhub:\n  hub:\n    replicas: 0\n",
            "deployments/h/config/prod.yaml": "jupyterhub:\n  singleuser:\n    cpu: huge\n"
            "    defaultUrl: 4.4\n",
        }
    )
    assert sorted(issues(root)) == [
        (
            'deployments/h/config/prod.yaml:3: jupyterhub.singleuser.cpu: must be one of "small", "large", '
            'not "huge"'
        ),
        (
            "deployments/h/config/prod.yaml:4: jupyterhub.singleuser.defaultUrl: must be string, "
            "not number 4.4 "
            "(YAML read it as a number: quote it)"
        ),
        "deployments/h/config/staging.yaml:3: jupyterhub.hub.replicas: 0 is less than the minimum of 1",
    ]
    only_staging = issues(root, envs=["staging"])
    assert only_staging == [
        ("deployments/h/config/staging.yaml:3: jupyterhub.hub.replicas: 0 is less than the minimum of 1")
    ]


def test_a_misspelt_dependency_key_is_caught_by_the_umbrella_schema(repo) -> None:  # type: ignore[no-untyped-def]
    root = repo(
        {
            "deployments/h/hubploy.yaml": "environments: [staging]\n",
            "deployments/h/config/common.yaml": "jupyterhb:\n  hub: {}\n",
        }
    )
    assert issues(root) == [
        (
            "deployments/h/config/common.yaml:1: jupyterhb: unknown key: the hub chart's "
            "values schema allows no `jupyterhb` here; did you mean `jupyterhub`?"
        )
    ]


def test_an_injected_image_is_reported_at_its_hubploy_yaml_entry(repo) -> None:  # type: ignore[no-untyped-def]
    root = repo(
        {
            "deployments/h/hubploy.yaml": "images:\n  images:\n    - name: registry.example.org/hub:v1\n"
            "      helm_substitution_path: jupyterhub.hub.imagee\n"
        }
    )
    assert issues(root) == [
        (
            "deployments/h/hubploy.yaml:3: jupyterhub.hub.imagee: unknown key: the "
            "jupyterhub chart's values schema allows no `imagee` here; did you mean "
            "`image`?"
        )
    ]


@pytest.mark.parametrize(
    "condition,values,checked",
    [
        ("jupyterhub.enabled", "jupyterhub: {enabled: false, nosuch: 1}\n", False),
        ("jupyterhub.enabled", "jupyterhub: {enabled: true, nosuch: 1}\n", True),
        (None, "jupyterhub: {nosuch: 1}\n", True),
    ],
)
def test_a_disabled_dependency_is_not_checked(
    repo,
    condition: str | None,  # type: ignore[no-untyped-def]
    values: str,
    checked: bool,
) -> None:
    root = repo(
        {
            "deployments/h/hubploy.yaml": "environments: [staging]\n",
            "deployments/h/config/common.yaml": values,
        },
        condition=condition,
    )
    assert bool(issues(root)) is checked


def test_an_aliased_dependency_is_checked_under_its_alias(repo) -> None:  # type: ignore[no-untyped-def]
    root = repo(
        {
            "deployments/h/hubploy.yaml": "environments: [staging]\n",
            "deployments/h/config/common.yaml": "datahub:\n  singleuser: {cpu: huge}\n",
        },
        alias="datahub",
    )
    assert issues(root) == [
        (
            "deployments/h/config/common.yaml:2: datahub.singleuser.cpu: must be one of "
            '"small", "large", not "huge"'
        )
    ]


def test_the_cli_reports_schema_errors_of_the_example_repo_copy_without_any_cluster(tmp_path: Path) -> None:
    """The example repository is valid as it is (its chart's dependency is read from its directory)."""
    result = run_cli("validate", cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
