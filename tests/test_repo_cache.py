"""``load_repo`` validates hubploy-repo.yaml and each hubploy.yaml once per content of the file, and loads
an edited file again (hubploy.layout.RepoCache). A whole deploy validating each file once is in
tests/test_deploy_outcomes.py."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from hubploy.errors import ConfigError
from hubploy.layout import REPOS, RepoCache, load_repo
from hubploy.validate import validate_repo

HUB = "deployments/h/hubploy.yaml"
SETTINGS = "hubploy-repo.yaml"


@pytest.fixture
def root(deployment_repo: Callable[..., Path]) -> Path:
    return deployment_repo({HUB: "environments: [staging]\n", SETTINGS: "cluster_concurrency: 2\n"})


def test_a_repository_and_its_hubs_are_validated_once(root: Path) -> None:
    repo = load_repo(root)
    hub = repo.load_hub("h")
    assert load_repo(str(root)) is repo and load_repo(root / "deployments" / "..").load_hub("h") is hub
    assert validate_repo(root, ["h"]) == [] and repo.load_hub("h") is hub
    assert (REPOS.loads[root / SETTINGS], REPOS.loads[root / HUB]) == (1, 1)


def test_an_edited_hubploy_yaml_is_validated_again(root: Path) -> None:
    hub = load_repo(root).load_hub("h")
    (root / HUB).write_text("environments: [develop]\n")  # the same size: the content is what counts
    edited = load_repo(root).load_hub("h")
    assert (hub.environments, edited.environments) == (["staging"], ["develop"])
    assert REPOS.loads[root / HUB] == 2 and REPOS.loads[root / SETTINGS] == 1
    (root / HUB).write_text("environments: [staging]\n")  # back to a content seen before: loaded again
    assert load_repo(root).load_hub("h").environments == ["staging"] and REPOS.loads[root / HUB] == 3


def test_an_edited_hubploy_repo_yaml_gives_a_new_repository_and_new_hubs(root: Path) -> None:
    repo = load_repo(root)
    hub = repo.load_hub("h")
    (root / SETTINGS).write_text("cluster_concurrency: 3\n")
    edited = load_repo(root)
    assert (repo.settings.cluster_concurrency, edited.settings.cluster_concurrency) == (2, 3)
    assert edited.load_hub("h").repo is edited and hub.repo is repo
    assert REPOS.loads[root / SETTINGS] == 2 and REPOS.loads[root / HUB] == 2
    (root / SETTINGS).unlink()
    assert load_repo(root).settings.cluster_concurrency == 4  # the default again


def test_a_broken_file_is_reported_once_per_content_and_fixed_when_it_is(root: Path) -> None:
    (root / HUB).write_text("images: {image_nmae: x}\n")
    for _ in range(3):
        with pytest.raises(ConfigError, match="unknown key"):
            load_repo(root).load_hub("h")
    assert REPOS.loads[root / HUB] == 1
    (root / HUB).write_text("images: {image_name: x}\n")
    assert load_repo(root).load_hub("h").config.images.image_name == "x"
    (root / SETTINGS).write_text("chrat: hub\n")
    with pytest.raises(ConfigError, match="did you mean `chart`"):
        load_repo(root)


def test_threads_loading_one_hub_validate_it_once(root: Path) -> None:
    cache = RepoCache()
    hubs = []

    def load() -> None:
        repo, _ = cache.load(root)
        assert repo is not None
        hubs.append(repo.load_hub("h"))

    threads = [threading.Thread(target=load) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(hubs) == 16 and all(h is hubs[0] for h in hubs)
    assert (cache.loads[root / SETTINGS], cache.loads[root / HUB]) == (1, 1)


def test_the_cache_keeps_the_repositories_used_last_and_can_be_cleared(
    tmp_path: Path, write_files: Callable[..., Path]
) -> None:
    cache = RepoCache(size=2)
    roots = [write_files(tmp_path / name, {HUB: "{}\n"}) for name in ("a", "b", "c")]
    first = [cache.load(r)[0] for r in roots]
    assert cache.load(roots[2])[0] is first[2] and cache.load(roots[1])[0] is first[1]
    assert cache.load(roots[0])[0] is not first[0]  # the least recently used one was dropped
    cache.clear()
    assert cache.load(roots[1])[0] is not first[1]
