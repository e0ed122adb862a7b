"""Build step of the hubploy-sandbox wheel (everything else is in pyproject.toml): it carries the
jupyterhub chart (charts/, the Z2JH stand-in the example hubs depend on), copied into hubploy_sandbox/charts
at build time. Not in editable installs: hubploy finds the chart next to the package there."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CHARTS = Path(__file__).resolve().parent / "charts"


class BuildWithCharts(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "hubploy_sandbox" / "charts"
            shutil.rmtree(target, ignore_errors=True)  # a previous build's copy may hold removed files
            shutil.copytree(CHARTS, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithCharts})
