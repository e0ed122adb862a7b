"""Secrets (issue 8): after a full approved lifecycle, no known secret value — the decrypted values of
the hub's sops-encrypted secrets files (e.g. jupyterhub.proxy.secretToken), the registry password, the
webhook secret — appears anywhere the Prefect server keeps: logs, artifacts, flow and task run
parameters, names and state messages, and flow run inputs (the approval form and its answers). Read
back through the Prefect API, for every run of this test session (earlier reliability cases included).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from prefect.client.orchestration import get_client

from fixtures.prefect_worker import Worker, wait_for_state
from helpers.cli import run_cli
from test_lifecycle import DeployRepo, change_values, deploy_repo, final, paused  # noqa: F401

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


def decrypted_secret_values(repo: DeployRepo) -> set[str]:
    """Every string leaf of the hub's secrets/*.yaml, decrypted with sops and the repo's age key."""
    env = {**repo.sandbox.env, "SOPS_AGE_KEY_FILE": str(repo.work.root / "example-age.key")}
    values: set[str] = set()
    for path in sorted((repo.work.root / "deployments" / repo.hub / "secrets").glob("*.yaml")):
        out = subprocess.run([str(repo.sandbox.bin / "sops"), "--decrypt", str(path)], env=env, capture_output=True,
                             text=True, check=True)
        values |= {v for v in _strings(yaml.safe_load(out.stdout)) if len(v) >= 8}
    return values


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


def test_no_secret_value_in_prefect_after_a_full_lifecycle(deploy_repo: DeployRepo,  # noqa: F811
                                                           hubploy_worker: Worker, prefect_api: str) -> None:
    from triggers.webhook import ensure_webhook_secret

    repo = deploy_repo
    sha = change_values(repo, "# all the way to prod\n")
    run_id = repo.start(sha)
    wait_for_state(run_id, paused, worker=hubploy_worker)
    approved = run_cli("approve", str(run_id), "--reason", "secrets check", "--as", "rel", cwd=repo.work.root)
    assert approved.returncode == 0, approved.stderr
    run = wait_for_state(run_id, final, worker=hubploy_worker)
    assert run.state.is_completed(), run.state.message

    secrets = {"hub secret value": decrypted_secret_values(repo),
               "registry password": {repo.sandbox.env["HUBPLOY_REGISTRY_PASSWORD"]},
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
