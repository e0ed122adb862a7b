"""Secrets (issue 8): after a full approved lifecycle, no known secret value — the decrypted values of
the hub's sops-encrypted secrets files (e.g. jupyterhub.proxy.secretToken), the registry password, the
webhook secret — appears anywhere the Prefect server keeps: logs, artifacts, flow and task run
parameters, names and state messages, and flow run inputs (the approval form and its answers). Read
back through the Prefect API, for every run of this test session (earlier reliability cases included).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.prefect_worker import Worker, wait_for_state
from helpers.cli import run_cli
from prefect.client.orchestration import get_client
from rel_support import PROJECT_ROOT
from test_lifecycle import change_values, final, paused

pytestmark = [pytest.mark.reliability, pytest.mark.sandbox, pytest.mark.prefect]

PAGE = 200


def _strings(data: Any) -> Iterator[str]:
    if isinstance(data, dict):
        for value in data.values():
            yield from _strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from _strings(value)
    elif isinstance(data, str):
        yield data


def decrypted_secret_values(sandbox) -> set[str]:  # type: ignore[no-untyped-def]
    """Every string leaf of the example hub's secrets/*.yaml (each test hub is a copy of it),
    decrypted with sops and the example age key."""
    env = {**sandbox.env, "SOPS_AGE_KEY_FILE": str(PROJECT_ROOT / "example-age.key")}
    values: set[str] = set()
    for path in sorted((PROJECT_ROOT / "deployments" / "minimal" / "secrets").glob("*.yaml")):
        out = subprocess.run([str(sandbox.bin / "sops"), "--decrypt", str(path)], env=env, capture_output=True,
                             text=True, check=True)
        values |= {v for v in _strings(yaml.safe_load(out.stdout)) if len(v) >= 8}
    return values


def approved_lifecycle_ran() -> bool:
    """A lifecycle run on this server went all the way: approved, promoted, prod deployed."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["lifecycle"])),
                                     limit=200)
    return any(r.state is not None and r.state.type.value == "COMPLETED" and r.state.name == "Completed"
               and "prod runs" in (r.state.message or "") for r in runs)


def _paged(read) -> list:  # type: ignore[no-untyped-def]
    found: list = []
    while True:
        page = read(offset=len(found), limit=PAGE)
        found.extend(page)
        if len(page) < PAGE:
            return found


def everything_prefect_keeps() -> dict[str, str]:
    """Where -> text, for every log, artifact, flow run, task run and flow run input on the server."""
    texts: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for log in _paged(lambda **kw: client.read_logs(**kw)):
            texts[f"log {log.id}"] = f"{log.name} {log.message}"
        for artifact in _paged(lambda **kw: client.read_artifacts(**kw)):
            texts[f"artifact {artifact.key} {artifact.id}"] = json.dumps(
                [artifact.data, artifact.description, artifact.metadata_], default=str)
        runs = _paged(lambda **kw: client.read_flow_runs(**kw))
        for run in runs:
            texts[f"flow run {run.name}"] = json.dumps(
                [run.name, run.parameters, run.state.name if run.state else None,
                 run.state.message if run.state else None, run.idempotency_key, run.tags], default=str)
            for state in client.read_flow_run_states(run.id):
                texts[f"flow run {run.name} state {state.id}"] = f"{state.name} {state.message}"
            for item in client.filter_flow_run_input(run.id, key_prefix="", limit=1000, exclude_keys=set()):
                texts[f"flow run {run.name} input {item.key}"] = item.value
        for task_run in _paged(lambda **kw: client.read_task_runs(**kw)):
            texts[f"task run {task_run.name}"] = json.dumps(
                [task_run.name, task_run.task_inputs, task_run.state.name if task_run.state else None,
                 task_run.state.message if task_run.state else None], default=str)
    return texts


def test_no_secret_value_in_prefect_after_a_full_lifecycle(deploy_repos, hubploy_worker: Worker,  # type: ignore[no-untyped-def]
                                                           prefect_api: str, sandbox) -> None:
    """Scans everything on the server: after the other reliability cases (in a full run the worker
    restart and the racing pushes each took a change all the way to prod), or after a full approved
    lifecycle of its own when run alone."""
    from triggers.webhook import ensure_webhook_secret

    if not approved_lifecycle_ran():
        repo = deploy_repos()
        sha = change_values(repo, "# all the way to prod\n")
        run_id = repo.start(sha)
        wait_for_state(run_id, paused, worker=hubploy_worker)
        approved = run_cli("approve", str(run_id), "--reason", "secrets check", "--as", "rel", cwd=repo.work.root)
        assert approved.returncode == 0, approved.stderr
        run = wait_for_state(run_id, final, worker=hubploy_worker)
        assert run.state.is_completed(), run.state.message
    assert approved_lifecycle_ran()

    secrets = {"hub secret value": decrypted_secret_values(sandbox),
               "registry password": {sandbox.env["HUBPLOY_REGISTRY_PASSWORD"]},
               "webhook secret": {ensure_webhook_secret()}}
    assert secrets["hub secret value"], "the hub's secrets files hold no value to look for"
    texts = everything_prefect_keeps()
    for kind in ("log ", "artifact ", "flow run ", "task run "):
        assert any(where.startswith(kind) for where in texts), f"nothing read back of kind {kind!r}"
    assert any(" input " in where for where in texts), "no flow run input was read back"
    leaks = [(what, where) for what, values in secrets.items() for value in values
             for where, text in texts.items() if value in text]
    assert leaks == [], f"secret values found in Prefect: {leaks[:10]}"
    worker_logs = "\n".join(p.read_text(errors="replace") for p in Path(hubploy_worker.log_dir).glob("worker-*.log"))
    assert not [what for what, values in secrets.items() for v in values if v in worker_logs]
