"""Where `hubploy up` finds prefect.yaml and the example repository (hubploy/triggers/project_files.py): in
the source checkout when it runs from one, else in the copies the wheels carry; the project directory it
registers deployments from and runs flows in. The wheels themselves are built and run in
tests/test_wheel.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT_ROOT

from hubploy.errors import HubployError
from hubploy.triggers.project_files import (
    EXAMPLE_CHART,
    EXAMPLE_REPO,
    PACKAGED,
    ProjectFiles,
    copy_example_repo,
    copy_items,
    find_project_files,
    prepare_project_dir,
)
from hubploy.triggers.stack import deployment_names


def _touch(root: Path, *paths: str) -> Path:
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"{rel}\n")
    return root


def _sandbox_at(monkeypatch: pytest.MonkeyPatch, package: Path | None) -> None:
    """hubploy_sandbox as if installed at ``package`` (None: not installed)."""
    spec = package and importlib.util.spec_from_file_location(
        "hubploy_sandbox", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: spec if name == "hubploy_sandbox" else real(name, *a)
    )


def test_this_checkout_provides_the_project_files_without_a_build() -> None:
    files = find_project_files()
    assert files == ProjectFiles(PROJECT_ROOT, PROJECT_ROOT / "flows", PROJECT_ROOT / EXAMPLE_CHART)
    assert not (PROJECT_ROOT / "hubploy" / "_project").exists()  # nothing generated in the checkout


def test_an_installed_wheel_provides_its_packaged_copy_and_the_sandbox_wheel_the_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _touch(
        tmp_path / "site",
        "hubploy/__init__.py",
        "hubploy/_project/prefect.yaml",
        "flows/__init__.py",
        "hubploy_sandbox/__init__.py",
        "hubploy_sandbox/charts/jupyterhub/Chart.yaml",
    )
    _sandbox_at(monkeypatch, site / "hubploy_sandbox")
    files = find_project_files(site / "hubploy")
    assert files == ProjectFiles(
        site / "hubploy/_project", site / "flows", site / "hubploy_sandbox/charts/jupyterhub"
    )


def test_a_sandbox_from_a_checkout_has_its_chart_next_to_its_package_and_none_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _touch(tmp_path / "site", "hubploy/_project/prefect.yaml", "flows/__init__.py")
    sandbox = _touch(tmp_path / "src/sandbox", "hubploy_sandbox/__init__.py", "charts/jupyterhub/Chart.yaml")
    _sandbox_at(monkeypatch, sandbox / "hubploy_sandbox")
    assert find_project_files(site / "hubploy").chart == sandbox / "charts/jupyterhub"
    _sandbox_at(monkeypatch, None)
    assert find_project_files(site / "hubploy").chart is None


def test_an_installation_without_prefect_yaml_or_flows_is_an_error_that_says_what_to_do(
    tmp_path: Path,
) -> None:
    site = _touch(tmp_path / "site", "hubploy/__init__.py", "flows/__init__.py")
    with pytest.raises(HubployError, match=r"has no prefect\.yaml") as missing:
        find_project_files(site / "hubploy")
    assert "pip wheel" in (missing.value.hint or "")
    _touch(site, "hubploy/_project/prefect.yaml")
    (site / "flows/__init__.py").unlink()
    with pytest.raises(HubployError, match="the flows package is not installed next to hubploy"):
        find_project_files(site / "hubploy")


def test_the_project_dir_holds_prefect_yaml_and_links_the_installed_flows(tmp_path: Path) -> None:
    old = ProjectFiles(_touch(tmp_path / "old", "prefect.yaml"), tmp_path / "old-flows", None)
    new = ProjectFiles(_touch(tmp_path / "new", "prefect.yaml"), tmp_path / "new-flows", None)
    (new.root / "prefect.yaml").write_text("name: upgraded\n")
    project = tmp_path / "home/project"
    assert prepare_project_dir(project, old) == project
    assert (project / "prefect.yaml").read_text() == "prefect.yaml\n"
    assert (project / "flows").readlink() == old.flows
    prepare_project_dir(project, new)  # an upgraded installation takes over
    assert (project / "prefect.yaml").read_text() == "name: upgraded\n"
    assert (project / "flows").readlink() == new.flows
    assert sorted(p.name for p in project.iterdir()) == ["flows", "prefect.yaml"]  # no staged leftovers


def test_a_directory_in_place_of_the_flows_link_is_reported_and_kept(tmp_path: Path) -> None:
    project = _touch(tmp_path / "project", "flows/mine.py")
    files = ProjectFiles(_touch(tmp_path / "src", "prefect.yaml"), tmp_path / "flows", None)
    with pytest.raises(HubployError, match="is not the symlink hubploy keeps there"):
        prepare_project_dir(project, files)
    assert (project / "flows/mine.py").is_file()


def test_the_example_repo_has_the_hubs_and_the_chart_where_hub_chart_yaml_names_it(tmp_path: Path) -> None:
    source = tmp_path / "source"
    copy_items(PROJECT_ROOT, source, PACKAGED)  # what setup.py puts in hubploy/_project
    assert {p.name for p in source.iterdir()} == {"prefect.yaml", *EXAMPLE_REPO}
    _touch(source, "hub/charts/jupyterhub-4.4.0.tgz", "deployments/minimal/__pycache__/x.pyc")  # never copied
    dest = tmp_path / "repo"
    copy_example_repo(ProjectFiles(source, PROJECT_ROOT / "flows", PROJECT_ROOT / EXAMPLE_CHART), dest)
    assert (dest / "hub/Chart.yaml").read_text() == (PROJECT_ROOT / "hub/Chart.yaml").read_text()
    dependency = yaml.safe_load((dest / "hub/Chart.yaml").read_text())["dependencies"][0]["repository"]
    assert (dest / "hub" / dependency.removeprefix("file://") / "Chart.yaml").is_file()
    assert (dest / EXAMPLE_CHART / "values.schema.json").is_file()
    assert {p.name for p in (dest / "deployments").iterdir()} == {"minimal", "physics"}
    assert {p.name for p in dest.iterdir()} == {*EXAMPLE_REPO, "sandbox"}  # no prefect.yaml
    assert not (dest / "hub/charts").exists() and not list(dest.rglob("__pycache__"))


def test_the_example_repo_without_the_sandbox_chart_is_an_error(tmp_path: Path) -> None:
    files = ProjectFiles(PROJECT_ROOT, PROJECT_ROOT / "flows", None)
    with pytest.raises(HubployError, match="needs the jupyterhub chart of hubploy-sandbox") as missing:
        copy_example_repo(files, tmp_path / "repo")
    assert "--repo" in (missing.value.hint or "")
    assert not (tmp_path / "repo").exists()


def test_copy_items_names_a_missing_item(tmp_path: Path) -> None:
    with pytest.raises(HubployError, match=r"missing"):
        copy_items(PROJECT_ROOT, tmp_path, ("no-such-file.yaml",))


def test_up_lists_every_deployment_of_prefect_yaml(tmp_path: Path) -> None:
    declared = [d["name"] for d in yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())["deployments"]]
    assert deployment_names(PROJECT_ROOT) == declared
    assert {"lifecycle", "rollout", "deploy-hubs", "drift-check"} <= set(declared)
