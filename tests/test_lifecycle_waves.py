"""The lifecycle with progressive delivery, on the sandbox and a real worker: staging goes in named waves
(shown in the approval form), a promotion needs two distinct approvers, and the people named in
hubploy-repo.yaml are told, through a Prefect notification block, that an approval waits. Then
`hubploy rollout --remote` runs the rollout deployment on the worker."""

from __future__ import annotations

import secrets
from uuid import UUID

import pytest
import test_lifecycle as lc
from conftest import PROJECT_ROOT
from fixtures.prefect_worker import Worker, wait_for_state
from helpers.cli import run_cli
from helpers.receiver import http_receiver

pytestmark = [pytest.mark.sandbox, pytest.mark.prefect]

deploy_repo = lc.deploy_repo  # one fresh hub, staging and prod at the same commit, a bare origin


def waiting_for(key: str):  # type: ignore[no-untyped-def]
    """A predicate: the run waits for the approval ``key``."""
    return lambda run: lc.paused(run) and run.state.state_details.pause_key == key


def approve(run_id: UUID, approver: str) -> None:
    done = run_cli(
        "approve", str(run_id), "--reason", f"fine by {approver}", "--as", approver, cwd=PROJECT_ROOT
    )
    assert done.returncode == 0, done.stderr


def test_staging_waves_in_the_form_two_approvers_and_a_notice(
    deploy_repo: lc.DeployRepo, hubploy_worker: Worker
) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    repo = deploy_repo
    block = f"ops-{secrets.token_hex(3)}"
    settings = (
        (repo.work.root / "hubploy-repo.yaml").read_text()
        + f"""
rollout:
  waves:
    - {{name: canary, hubs: [{repo.hub}], soak: 2s}}
approvals:
  prod: {{required: 2}}
notifications:
  - block: custom-webhook/{block}
    events: [approval_waiting]
"""
    )
    with http_receiver() as receiver:
        CustomWebhookNotificationBlock(
            name=block, url=f"{receiver.url}/ops", json_data={"text": "{{subject}}: {{body}}"}
        ).save(block)
        sha = repo.push({"hubploy-repo.yaml": settings}, "waves, two approvers, notices")
        run_id = repo.start(sha)
        wait_for_state(run_id, waiting_for("approval-1"), worker=hubploy_worker)
        form = lc.description(run_id)
        assert "### Staging waves" in form
        assert f"| canary | {repo.hub} | deployed | none -> 1 | 1 |" in form, form
        assert "Soak: canary: soaked 2 s." in form
        assert "hubploy: approval waiting" in receiver.wait_for(f"{sha[:12]} waits for approval").body
        assert "verified by hubploy" in repo.revisions("staging")[-1]["description"]

        approve(run_id, "alice")
        wait_for_state(run_id, waiting_for("approval-2"), worker=hubploy_worker)
        assert "1 of 2 approvals (by alice); waiting for another approver" in lc.description(run_id)
        approve(run_id, "alice")
        wait_for_state(run_id, waiting_for("approval-3"), worker=hubploy_worker)
        assert "alice already approved; another approver is needed" in lc.description(run_id)
        assert repo.revisions("prod") == []
        approve(run_id, "bob")
        run = wait_for_state(run_id, lc.final, worker=hubploy_worker)
    assert run.state.is_completed(), run.state.message
    assert repo.prod_parents()[1] == sha
    assert "Approved by alice, bob: fine by bob" in repo.origin_git("log", "-1", "--format=%B", "prod")
    assert "verified by hubploy" in repo.revisions("prod")[-1]["description"]

    # the same fleet from the prod branch head, on the worker: nothing to change, every hub checked
    remote = run_cli(
        "rollout", "prod", "--remote", "--repo-url", repo.url, cwd=repo.work.root, env={"COLUMNS": "200"}
    )
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert "started rollout-prod" in remote.stdout
    assert f"wave 1. canary: {repo.hub}: verify completed" in remote.stdout
    assert "Completed: prod: 1 unchanged" in remote.stdout
    assert len(repo.revisions("prod")) == 1
