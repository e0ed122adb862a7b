"""Build step of the wheel (everything else is in pyproject.toml): it carries the project files that
`hubploy up` needs outside a source checkout (prefect.yaml and the example deployment repository), copied
from this repository into hubploy/_project at build time (hubploy/triggers/project_files.py). Not in
editable installs: they use the checkout itself."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithProjectFiles(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        sys.path.insert(0, str(HERE))  # this tree's module, which needs only the standard library
        from hubploy.triggers.project_files import PACKAGED, PACKAGED_DIR, copy_items

        target = Path(self.build_lib) / "hubploy" / PACKAGED_DIR
        shutil.rmtree(target, ignore_errors=True)  # a previous build's copy may hold removed files
        copy_items(HERE, target, PACKAGED)


setup(cmdclass={"build_py": BuildWithProjectFiles})
