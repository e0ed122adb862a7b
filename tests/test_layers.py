"""The core library imports nothing from Prefect; the CLI's quick commands do not import Prefect either."""

from __future__ import annotations

import subprocess
import sys

from conftest import PROJECT_ROOT

PROBE = """
import importlib, pkgutil, sys
import hubploy
for mod in pkgutil.walk_packages(hubploy.__path__, "hubploy."):
    importlib.import_module(mod.name)
print(sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect.") or m.startswith("prefect_")))
"""


def test_core_library_imports_no_prefect() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_validate_does_not_import_prefect() -> None:
    code = ("import sys; from cli.main import main; code = main(['validate']); "
            "print(code, any(m.startswith('prefect') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 False", out.stdout + out.stderr
