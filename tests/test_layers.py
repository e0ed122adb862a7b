"""The core library imports nothing from Prefect; the CLI's quick commands do not import Prefect either;
importing Prefect builds no IRI grammar."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import PROJECT_ROOT

from hubploy.runner import child_env, run

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


CREDENTIALS_PROBE = """
import sys
from blocks.resolve import credentials
from hubploy.layout import load_repo
repo = load_repo(".")
hub = repo.load_hub("h")
source = credentials(repo, {"KUBECONFIG": "kubeconfig"})
with source.cluster_access(hub, "staging") as access:
    print(access.kubeconfig.name, source.registry(hub, "quay.io"))
print(sorted(m for m in sys.modules if m == "prefect" or m.startswith(("prefect.", "prefect_"))))
"""


def test_credentials_of_a_hub_without_blocks_import_no_prefect(deployment_repo: Callable[..., Path]) -> None:
    """`hubploy deploy` and `hubploy build` of a classic repository resolve their credentials through
    blocks.resolve without loading Prefect (only a hub that names a block does)."""
    root = deployment_repo({"deployments/h/hubploy.yaml": "environments: [staging]\n",
                            "kubeconfig": "apiVersion: v1\nkind: Config\n"})
    env = {**child_env(), "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), *sys.path])}
    out = run([sys.executable, "-c", CREDENTIALS_PROBE], env=env, cwd=root).stdout.splitlines()
    assert out == ["kubeconfig None", "[]"]


def test_the_project_venv_has_no_jupyterhub() -> None:
    """JupyterHub runs from a virtualenv of its own: in this one, jupyter-events pulls in rfc3987-syntax,
    whose Lark grammar jsonschema (imported by Prefect) builds at import, about a second per process."""
    code = ("import importlib.util, sys, jsonschema; "
            "print(sorted({m.partition('.')[0] for m in sys.modules} & {'rfc3987_syntax', 'lark'}), "
            "[n for n in ('jupyterhub', 'jupyter_events') if importlib.util.find_spec(n)])")
    out = run([sys.executable, "-c", code], env=child_env(), cwd=PROJECT_ROOT).stdout.strip()
    assert out == "[] []", (f"{out}: run `{sys.executable} -m pip uninstall jupyterhub jupyter-events rfc3987-syntax`"
                            " (`hubploy sandbox install` gives JupyterHub a virtualenv of its own)")
