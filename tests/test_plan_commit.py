"""The lifecycle's plan_commit task body on a real git repo (no Prefect server): it reads the hubploy.yaml
of only the hubs the change touches, so a broken hub elsewhere does not stop another hub's plan; the
validate step still reports that hub whenever a change selects it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.gitrepo import Repo, init_repo
from prefect.logging import disable_run_logger

from flows.tasks.lifecycle import plan_commit
from hubploy.layout import DeploymentRepo
from hubploy.planner import Plan
from hubploy.validate import validate_repo

HUB = "images:\n  image_name: registry.example.org/{name}-user\n"
BROKEN = "images: [this is not\n"  # not even YAML


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repo = init_repo(tmp_path / "repo")
    repo.commit(
        {
            "hub/Chart.yaml": "apiVersion: v2\nname: hub\nversion: 0.1.0\n",
            "deployments/alpha/hubploy.yaml": HUB.format(name="alpha"),
            "deployments/alpha/image/Dockerfile": "FROM scratch\n",
            "deployments/beta/hubploy.yaml": HUB.format(name="beta"),
            "deployments/beta/image/Dockerfile": "FROM scratch\n",
            "deployments/broken/hubploy.yaml": BROKEN,
        },
        "three hubs, one broken",
    )
    return repo


def plan(repo: Repo, base: str) -> Plan:
    with disable_run_logger():
        return plan_commit.fn(str(repo.root), repo.head(), base).plan


def test_only_the_touched_hubs_are_loaded_and_a_broken_untouched_hub_is_no_obstacle(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = repo.head()
    repo.commit(
        {
            "deployments/alpha/image/Dockerfile": "FROM scratch\nRUN true\n",
            "secrets/deployments/beta/secrets/prod.yaml": "x: 1\n",
        },
        "alpha's image, beta's secrets",
    )
    loaded: list[str] = []
    real = DeploymentRepo.try_load_hub
    monkeypatch.setattr(
        DeploymentRepo, "try_load_hub", lambda self, name: loaded.append(name) or real(self, name)
    )

    result = plan(repo, base)

    assert [(h.hub, h.images_changed) for h in result.hubs] == [("alpha", ("image",)), ("beta", ())]
    assert loaded == ["alpha"]  # beta's change is in the secrets submodule, outside its image dirs


def test_a_shared_change_plans_every_hub_and_validation_reports_the_broken_one(repo: Repo) -> None:
    base = repo.head()
    repo.commit({"hub/values.yaml": "jupyterhub: {}\n"}, "chart values")

    result = plan(repo, base)

    assert result.hub_names == ["alpha", "beta", "broken"]
    assert all(h.images_changed == () for h in result.hubs)
    issues = validate_repo(repo.root, result.hub_names)
    assert {issue.file.parent.name for issue in issues} == {"broken"}
