"""Timeouts told as timeouts, on the sandbox (issue 20, point 2): when helm gives up waiting, the deploy says
it timed out and names what was not ready and why, read from the API before the rollback (JupyterHub's own
error from a hub config that raises, a claim of a storage class that does not exist); a pre-upgrade hook
Job that fails fails the deploy with helm's reason and leaves the previous release serving."""

from __future__ import annotations

import secrets

import pytest
import test_deploy_sandbox
from fixtures.sandbox import Sandbox
from helpers.cli import run_cli
from test_deploy_sandbox import HubRepo

from hubploy.deploy import DeployOptions, DeployResult, Outcome, deploy
from hubploy.errors import DeployError
from hubploy.helm import UpgradeFlags
from hubploy.layout import load_repo

pytestmark = pytest.mark.sandbox
hub_repo = test_deploy_sandbox.hub_repo  # a hub of its own per test, deployable to staging

RAISING_HUB = "jupyterhub.hub.extraConfig.99-broken=raise ValueError('boom from extraConfig')"
HOOK = """{{- if dig "hubployTestHook" false (.Values.global | default dict) }}
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate-users
  annotations:
    helm.sh/hook: pre-upgrade
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: localhost:5000/base/busybox:latest
          command: [sh, -c, "echo 'migration failed: no such table users' >&2; exit 3"]
{{- end }}
"""


def _deploy(repo: HubRepo, options: DeployOptions) -> tuple[DeployResult, DeployError]:
    results: list[DeployResult] = []
    with pytest.raises(DeployError) as failed:
        deploy(
            load_repo(repo.root),
            repo.name,
            "staging",
            options=options,
            base_env=repo.env,
            on_result=results.append,
        )
    return results[-1], failed.value


@pytest.mark.parametrize("hub_repo", ["3", "4"], indirect=True)
def test_a_hub_config_that_raises_times_out_naming_jupyterhubs_error(hub_repo: HubRepo) -> None:
    assert hub_repo.deploy().outcome is Outcome.deployed
    broken = DeployOptions(
        set_string_values=(RAISING_HUB,), flags=UpgradeFlags(timeout="40s", atomic=True), health_timeout=60
    )
    result, error = _deploy(hub_repo, broken)
    print(error.message)
    assert error.message.startswith(
        f"helm upgrade of {hub_repo.release} timed out after 40s waiting for the "
        "release to be ready (rolled back to revision 1's "
        "configuration"
    ), error.message
    assert (
        "not ready: " in error.message and "Pod hub-" in error.message and "container hub: " in error.message
    )
    assert "last log line: ValueError: boom from extraConfig" in error.message
    assert "does not render" not in error.message
    assert result.outcome is Outcome.rolled_back and result.revision_after == 3
    assert [r["status"] for r in hub_repo.history()] == ["superseded", "failed", "deployed"]
    assert hub_repo.hub_version(), "the previous configuration serves again"


@pytest.mark.parametrize("hub_repo", ["4"], indirect=True)
def test_a_claim_of_a_missing_storage_class_times_out_naming_the_claim(hub_repo: HubRepo) -> None:
    missing = f"no-such-class-{secrets.token_hex(3)}"
    options = DeployOptions(
        set_string_values=(f"jupyterhub.hub.db.pvc.storageClassName={missing}",),
        flags=UpgradeFlags(timeout="30s", atomic=True),
        health_timeout=30,
    )
    result, error = _deploy(hub_repo, options)
    print(error.message)
    assert (
        "timed out after 30s waiting for the release to be ready (the first install was removed)"
        in error.message
    )
    assert (
        "PersistentVolumeClaim hub-db-dir is Pending (ProvisioningFailed: storageclass.storage.k8s.io "
        f'"{missing}" not found)'
    ) in error.message
    assert "Unschedulable" in error.message  # the hub pod waits for its claim
    assert result.outcome is Outcome.failed and hub_repo.history() == []


@pytest.mark.parametrize("hub_repo", ["3"], indirect=True)
def test_a_failing_pre_upgrade_hook_fails_with_helms_reason_and_the_hub_keeps_serving(
    hub_repo: HubRepo, sandbox: Sandbox
) -> None:
    (hub_repo.root / "hub" / "templates" / "migrate-hook.yaml").write_text(HOOK)
    hub_repo.commit("a database migration hook, off until asked for")
    assert hub_repo.deploy().outcome is Outcome.deployed
    version = hub_repo.hub_version()
    failed = run_cli(
        "deploy",
        hub_repo.name,
        "hub",
        "staging",
        "--timeout",
        "60s",
        "--set",
        "global.hubployTestHook=true",
        cwd=hub_repo.root,
        env=hub_repo.env,
        timeout=600,
    )
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert failed.returncode == 1 and "Traceback" not in failed.stderr and len(errors) == 1, failed.stderr
    [line] = errors
    assert "pre-upgrade hooks failed" in line and "job migrate-users failed: BackoffLimitExceeded" in line, (
        line
    )
    assert "timed out" not in line and "(rolled back to revision 1's configuration" in line
    assert "hook Job migrate-users not complete (BackoffLimitExceeded" in line
    assert (
        "container migrate: Error, exit code 3, last log line: migration failed: no such table users" in line
    )
    assert [r["status"] for r in hub_repo.history()] == ["superseded", "failed", "deployed"]
    assert hub_repo.hub_version() == version
