"""Shared fixtures of the reliability suite (issue 8): recording shims for the cluster tools with a
kubeconfig that points at a closed port. Helpers live in rel_support.py.

Every test module here sets ``pytestmark`` with ``pytest.mark.reliability`` (plus ``sandbox`` /
``prefect`` where it uses them); the suite runs with ``pytest tests/reliability`` or ``-m reliability``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from rel_support import PROJECT_ROOT, Shims, _write_shim, closed_port  # noqa: F401

# Test modules import helpers of tests/test_lifecycle.py, which does `from conftest import PROJECT_ROOT`;
# with this directory's conftest loaded as `conftest`, that name must be here as well.


@pytest.fixture
def shims(tmp_path: Path, sandbox) -> Shims:  # type: ignore[no-untyped-def]
    """Recording shims first on PATH, HELM_EXECUTABLE/KUBECTL_EXECUTABLE at them, KUBECONFIG at a
    closed port and PREFECT_API_URL at another closed port: nothing can reach a cluster or server."""
    shim_dir = tmp_path / "shims"
    shim_dir.mkdir()
    log = tmp_path / "shim-calls.log"
    _write_shim(shim_dir / "helm", "helm", str(sandbox.helm_path("3")), log)
    _write_shim(shim_dir / "kubectl", "kubectl", str(sandbox.bin / "kubectl"), log)
    kubeconfig = tmp_path / "kubeconfig-closed"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "closed",
                "clusters": [
                    {
                        "name": "closed",
                        "cluster": {
                            "server": f"https://127.0.0.1:{closed_port()}",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "closed", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "closed", "context": {"cluster": "closed", "user": "closed"}}],
            }
        )
    )
    env = {
        **sandbox.env,
        "PATH": f"{shim_dir}{os.pathsep}{sandbox.env['PATH']}",
        "HELM_EXECUTABLE": str(shim_dir / "helm"),
        "KUBECTL_EXECUTABLE": str(shim_dir / "kubectl"),
        "KUBECONFIG": str(kubeconfig),
        "PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}/api",
        "HUBPLOY_HELM_VERSION": "3",
        "CI": "",
    }
    return Shims(shim_dir, log, kubeconfig, env)


@pytest.fixture
def deploy_repos(tmp_path: Path, sandbox, hubploy_worker):  # type: ignore[no-untyped-def]
    """A factory of tests/test_lifecycle.py's `deploy_repo` (a fresh hub each, helm releases removed
    afterwards), for cases that run several lifecycles side by side."""
    from test_lifecycle import deploy_repo

    made = []

    def make():  # type: ignore[no-untyped-def]
        gen = deploy_repo.__wrapped__(tmp_path / f"repo{len(made)}", sandbox, hubploy_worker)
        made.append(gen)
        return next(gen)

    yield make
    for gen in made:
        next(gen, None)
