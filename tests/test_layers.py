"""The core library (``hubploy`` without its ``cli`` and ``triggers`` packages) imports nothing from Prefect
or the sandbox and names no sandbox command; the CLI's quick commands do not import Prefect either;
importing Prefect builds no IRI grammar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import PROJECT_ROOT

from hubploy.runner import child_env, run

NOT_CORE = ("hubploy.cli", "hubploy.triggers")  # the outer layers, shipped in the same package
PROBE = f"""
import importlib, json, pkgutil, sys
import hubploy
# walk_packages imports each package's __init__ (docstrings only for the outer two) to find its modules
core = [m.name for m in pkgutil.walk_packages(hubploy.__path__, "hubploy.")
        if not m.name.startswith({NOT_CORE!r})]
for name in core:
    importlib.import_module(name)
outside = sorted(m for m in sys.modules
                 if m.split(".")[0] in ("prefect", "hubploy_sandbox", "flows", "blocks")
                 or m.startswith(("prefect_",) + tuple(n + "." for n in {NOT_CORE!r})))
print(json.dumps([len(core), outside]))
"""


def test_core_library_imports_no_prefect_and_no_sandbox() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    modules, outside = json.loads(out.stdout)
    assert modules > 40 and outside == [], out.stdout


def test_core_library_names_no_sandbox_command() -> None:
    """Its errors and hints are for any cluster: only the CLI adds a sandbox hint, when it is installed."""
    core = [
        p
        for p in (PROJECT_ROOT / "hubploy").rglob("*.py")
        if not p.relative_to(PROJECT_ROOT).as_posix().startswith(("hubploy/cli/", "hubploy/triggers/"))
    ]
    named = [
        f"{p.relative_to(PROJECT_ROOT)}:{n}"
        for p in core
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if "hubploy sandbox" in line or "hubploy_sandbox" in line
    ]
    assert len(core) > 40 and named == []


def test_a_missing_program_gets_the_sandbox_hint_from_the_cli_only(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "deployments/h/config").mkdir(parents=True)
    (repo / "deployments/h/hubploy.yaml").write_text("environments: [staging]\n")
    (repo / "hub").mkdir()
    (repo / "hub/Chart.yaml").write_text("apiVersion: v2\nname: hub\nversion: 0.1.0\n")
    env = {**child_env(), "PATH": "/nonexistent"}  # no helm
    out = subprocess.run(
        [sys.executable, "-m", "hubploy.cli.main", "render", "h", "staging"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    first, hint = out.stderr.strip().splitlines()[-2:]
    assert first.startswith("error: ") and "command not found (hint: install it and put it on PATH)" in first
    assert hint == "hint: `hubploy sandbox install` installs the tools the sandbox uses"


def test_validate_does_not_import_prefect() -> None:
    code = (
        "import sys; from hubploy.cli.main import main; code = main(['validate']); "
        "print(code, any(m.startswith('prefect') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
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
    root = deployment_repo(
        {
            "deployments/h/hubploy.yaml": "environments: [staging]\n",
            "kubeconfig": "apiVersion: v1\nkind: Config\n",
        }
    )
    env = {**child_env(), "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), *sys.path])}
    out = run([sys.executable, "-c", CREDENTIALS_PROBE], env=env, cwd=root).stdout.splitlines()
    assert out == ["kubeconfig None", "[]"]


def test_the_project_venv_has_no_jupyterhub() -> None:
    """JupyterHub runs from a virtualenv of its own: in this one, jupyter-events pulls in rfc3987-syntax,
    whose Lark grammar jsonschema (imported by Prefect) builds at import, about a second per process."""
    code = (
        "import importlib.util, sys, jsonschema; "
        "print(sorted({m.partition('.')[0] for m in sys.modules} & {'rfc3987_syntax', 'lark'}), "
        "[n for n in ('jupyterhub', 'jupyter_events') if importlib.util.find_spec(n)])"
    )
    out = run([sys.executable, "-c", code], env=child_env(), cwd=PROJECT_ROOT).stdout.strip()
    assert out == "[] []", (
        f"{out}: run `{sys.executable} "
        "-m pip uninstall jupyterhub jupyter-events rfc3987-syntax`"
        " (`hubploy sandbox install` gives JupyterHub a virtualenv of its own)"
    )
