"""The files `hubploy up` needs besides the code: ``prefect.yaml`` (its entrypoints are ``flows/<file>.py``,
relative to the directory `prefect deploy --all` runs in) and the example deployment repository of the demo.

They come from the source checkout when hubploy runs from one, else from the copies the wheels carry:
``setup.py`` copies ``PACKAGED`` into ``hubploy/_project`` and ``sandbox/setup.py`` the jupyterhub chart into
``hubploy_sandbox/charts``. Standard library only: ``setup.py`` imports this module at build time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hubploy.errors import HubployError

PREFECT_YAML = "prefect.yaml"
# The example deployment repository, as in this project: the umbrella chart, the hubs, the repository
# settings, sops rules and the public example key the hubs' secrets are encrypted to.
EXAMPLE_REPO = ("hub", "deployments", "hubploy-repo.yaml", ".sops.yaml", "example-age.key")
PACKAGED = (PREFECT_YAML, *EXAMPLE_REPO)
PACKAGED_DIR = "_project"  # hubploy/_project in a wheel
# Where hub/Chart.yaml's dependency (file://../sandbox/charts/jupyterhub) finds the chart, in the checkout and
# in the demo repository alike.
EXAMPLE_CHART = Path("sandbox", "charts", "jupyterhub")
_HUBPLOY = Path(__file__).resolve().parents[1]  # the hubploy package (a checkout's or an installed one)


@dataclass(frozen=True)
class ProjectFiles:
    """Where this installation's project files are."""

    root: Path  # holds PACKAGED: the source checkout, or hubploy/_project of an installed wheel
    flows: Path  # the installed `flows` package, which prefect.yaml's entrypoints name
    chart: Path | None  # the jupyterhub chart of hubploy-sandbox (None: that distribution is not installed)


def copy_items(src: Path, dest: Path, items: tuple[str, ...]) -> None:
    """Copy ``items`` (files or directories, relative paths) from ``src`` to ``dest``; leaves out what helm
    (``hub/charts``) and Python (``__pycache__``) generate next to them."""
    for item in items:
        source, target = src / item, dest / item
        if not source.exists():
            raise HubployError(f"{source} is missing", hint="build hubploy from a complete source checkout")
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            ignored = ("__pycache__", "*.pyc", "charts") if item == "hub" else ("__pycache__", "*.pyc")
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(*ignored))
        else:
            shutil.copy2(source, target)


def find_project_files(hubploy_package: Path = _HUBPLOY) -> ProjectFiles:
    """The one place that decides where the project files come from: the source checkout that holds
    ``hubploy_package`` (next to its ``prefect.yaml`` and ``pyproject.toml``), else the copy in the package
    (a wheel). ``flows`` is installed next to ``hubploy`` either way."""
    checkout = hubploy_package.parent
    in_checkout = (checkout / PREFECT_YAML).is_file() and (checkout / "pyproject.toml").is_file()
    root = checkout if in_checkout else hubploy_package / PACKAGED_DIR
    if not (root / PREFECT_YAML).is_file():
        raise HubployError(
            f"this installation of hubploy ({hubploy_package}) has no {PREFECT_YAML}",
            hint="install a wheel built from the repository (pip wheel .), or run from a checkout",
        )
    flows = checkout / "flows"
    if not (flows / "__init__.py").is_file():
        raise HubployError(
            f"the flows package is not installed next to hubploy ({flows})",
            hint="reinstall hubploy-prefect: its wheel holds hubploy, flows and blocks",
        )
    in_tree_chart = checkout / EXAMPLE_CHART
    chart = in_tree_chart if in_checkout and (in_tree_chart / "Chart.yaml").is_file() else _sandbox_chart()
    return ProjectFiles(root, flows, chart)


def _sandbox_chart() -> Path | None:
    """The jupyterhub chart of the installed hubploy-sandbox: in its wheel (hubploy_sandbox/charts), or in its
    source tree (charts/ next to the package)."""
    spec = importlib.util.find_spec("hubploy_sandbox")
    packages = [Path(p) for p in spec.submodule_search_locations or []] if spec else []
    for package in packages:
        for charts in (package / "charts", package.parent / "charts"):
            chart = charts / EXAMPLE_CHART.name
            if (chart / "Chart.yaml").is_file():
                return chart
    return None


def prepare_project_dir(project_dir: Path, files: ProjectFiles) -> Path:
    """``project_dir`` with ``prefect.yaml`` and a ``flows`` symlink to the installed package: the working
    directory of `prefect deploy --all` (recorded as its default pull step, so flow runs load
    ``flows/<file>.py`` from there) and of the processes `hubploy up` starts. Refreshed on every call, so an
    upgraded installation takes over; each file is replaced whole."""
    project_dir.mkdir(parents=True, exist_ok=True)
    staged = project_dir / f".{PREFECT_YAML}.new"
    shutil.copyfile(files.root / PREFECT_YAML, staged)
    os.replace(staged, project_dir / PREFECT_YAML)
    link = project_dir / "flows"
    if link.exists() and not link.is_symlink():
        raise HubployError(
            f"{link} is not the symlink hubploy keeps there",
            hint=f"remove it; `hubploy up` links it to the installed flows package ({files.flows})",
        )
    staged_link = project_dir / ".flows.new"
    staged_link.unlink(missing_ok=True)
    staged_link.symlink_to(files.flows, target_is_directory=True)
    os.replace(staged_link, link)
    return project_dir


def copy_example_repo(files: ProjectFiles, dest: Path) -> None:
    """The example deployment repository in ``dest``: the hubs and their chart, with the jupyterhub chart
    where ``hub/Chart.yaml`` expects it."""
    if files.chart is None:
        raise HubployError(
            "the example repository needs the jupyterhub chart of hubploy-sandbox, which is not installed",
            hint="pip install hubploy-sandbox, or give your repository with --repo",
        )
    copy_items(files.root, dest, EXAMPLE_REPO)
    copy_items(files.chart.parent, dest / EXAMPLE_CHART.parent, (EXAMPLE_CHART.name,))
