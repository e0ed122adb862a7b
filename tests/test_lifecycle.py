"""The change lifecycle end to end, on the sandbox and a real Prefect server with a real process
worker running the deployments of prefect.yaml: staging → approval → prod, and every way out."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from conftest import PROJECT_ROOT
from fixtures.prefect_worker import Worker, wait_for_state
from helpers.browser import CHROMIUM_ARGS, submit_resume_form
from helpers.cli import run_cli
from helpers.example_repo import copy_example_repo
from helpers.gitrepo import Repo, init_repo
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterTextSearch,
)
from prefect.deployments import run_deployment
from prefect.exceptions import NotPausedError
from prefect.flow_runs import resume_flow_run

pytestmark = [pytest.mark.sandbox, pytest.mark.prefect]

LIFECYCLE = "hubploy-lifecycle/lifecycle"
HOT_WINDOW_ENV = "HUBPLOY_APPROVAL_HOT_WINDOW_SECONDS"
WAITING_IN = re.compile(r"waiting for approval in flow-run process (\d+)")
CONTINUING_IN = re.compile(r"continuing in flow-run process (\d+)")


@dataclass
class DeployRepo:
    work: Repo
    origin: Path
    hub: str
    sandbox: Any

    @property
    def url(self) -> str:
        return str(self.origin)

    def push(self, files: dict[str, str], message: str) -> str:
        sha = self.work.commit(files, message)
        self.work.git("push", "--quiet", self.url, "staging")
        return sha

    def config(self, name: str) -> str:
        return f"deployments/{self.hub}/config/{name}"

    def origin_git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", self.url, *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    def prod_parents(self) -> list[str]:
        return self.origin_git("rev-list", "--parents", "-n", "1", "prod").split()[1:]

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = self.sandbox.env
        return subprocess.run(
            [env["HELM_EXECUTABLE"], *args], env=env, capture_output=True, text=True, check=check
        )

    def revisions(self, env: str) -> list[dict[str, Any]]:
        out = self.helm("history", f"{self.hub}-{env}", "-n", f"{self.hub}-{env}", "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else []

    def start(self, sha: str, job_variables: dict[str, Any] | None = None, **params: Any) -> UUID:
        run = run_deployment(
            LIFECYCLE,
            parameters={"sha": sha, "repo_url": self.url, **params},
            timeout=0,
            job_variables=job_variables,
        )
        return run.id


@pytest.fixture
def deploy_repo(tmp_path: Path, sandbox, hubploy_worker: Worker) -> DeployRepo:  # type: ignore[no-untyped-def]
    """A deployment repo with one fresh hub (a copy of the minimal example), staging and prod
    branches at the same commit, pushed to a bare origin."""
    hub = f"lc{secrets.token_hex(3)}"
    work = init_repo(tmp_path / "work", branch="staging")
    # a broken hub fails its health check in 30 s
    copy_example_repo(work.root, {hub: "minimal"}, settings_extra="health_check_timeout: 30\n")
    work.commit(None, f"add hub {hub}")
    origin = tmp_path / "origin.git"
    work.git("init", "--bare", "--quiet", str(origin))
    work.git("branch", "prod")
    work.git("push", "--quiet", str(origin), "staging", "prod")
    repo = DeployRepo(work, origin, hub, sandbox)
    yield repo
    for env in ("staging", "prod"):
        repo.helm("uninstall", f"{hub}-{env}", "-n", f"{hub}-{env}", check=False)


def paused(run) -> bool:  # type: ignore[no-untyped-def]
    return run.state is not None and run.state.is_paused()


def final(run) -> bool:  # type: ignore[no-untyped-def]
    return run.state is not None and run.state.is_final()


def description(run_id: UUID) -> str:
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        keyset = run.state.state_details.run_input_keyset
        return client.read_flow_run_input(run_id, keyset["description"])


def run_log_lines(run_id: UUID, phrase: str) -> list[str]:
    """The run's log messages that contain ``phrase``."""
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[run_id]), text=LogFilterTextSearch(query=f'"{phrase}"')
            )
        )
    return [log.message for log in logs if phrase in log.message]


def wait_for_log(run_id: UUID, phrase: str, timeout: float = 90) -> str:
    """The first log message of the run that contains ``phrase`` (logs reach the server in batches)."""
    deadline = time.monotonic() + timeout
    while not (lines := run_log_lines(run_id, phrase)):
        assert time.monotonic() < deadline, f"no log line with {phrase!r} for run {run_id}"
        time.sleep(0.5)
    return lines[0]


def approval_records(run_id: UUID) -> list[str]:
    """The run's approval audit records (markdown), oldest first."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["approval"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])
            )
        )
    return [a.data for a in sorted(artifacts, key=lambda a: a.created)]


def wait_for_artifact(run_id: UUID, phrase: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while not (found := [r for r in approval_records(run_id) if phrase in r]):
        assert time.monotonic() < deadline, f"no approval record with {phrase!r} for run {run_id}"
        time.sleep(0.5)
    return found[0]


def process_log_pids(run_id: UUID, pattern: re.Pattern[str]) -> list[int]:
    """The flow-run process ids named by the run's hot-window log lines that match ``pattern``."""
    return [
        int(m.group(1))
        for message in run_log_lines(run_id, "flow-run process")
        if (m := pattern.search(message))
    ]


def wait_for_process_log(run_id: UUID, pattern: re.Pattern[str], timeout: float = 60) -> int:
    """The process id of the first log line matching ``pattern`` (logs reach the server in batches)."""
    deadline = time.monotonic() + timeout
    while not (pids := process_log_pids(run_id, pattern)):
        assert time.monotonic() < deadline, f"no log line {pattern.pattern!r} for run {run_id}"
        time.sleep(0.5)
    return pids[0]


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not; Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for_process_exit(pid: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        assert time.monotonic() < deadline, f"flow-run process {pid} still runs"
        time.sleep(0.2)


def states_after_resume(run_id: UUID) -> list[Any]:
    """The run's states from its last resume ("Resuming") on, oldest first."""
    with get_client(sync_client=True) as client:
        history = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
    last = max(i for i, s in enumerate(history) if s.name == "Resuming")
    return history[last:]


def artifact_keys() -> set[str]:
    with get_client(sync_client=True) as client:
        return {a.key for a in client.read_artifacts() if a.key}


def decide(run_id: UUID, decision: str, sha: str, reason: str = "", approver: str = "t") -> None:
    """Submit the approval form of a waiting run, as the UI does: the decision names commit ``sha``."""
    resume_flow_run(
        run_id, run_input={"decision": decision, "sha": sha, "reason": reason, "approver": approver}
    )


def change_values(repo: DeployRepo, text: str) -> str:
    return repo.push(
        {repo.config("common.yaml"): (repo.work.root / repo.config("common.yaml")).read_text() + text},
        f"change {secrets.token_hex(2)}",
    )


def approve_until_prod(
    repo: DeployRepo, run_id: UUID, sha: str, worker: Worker, reason: str, approver: str
) -> None:
    """`hubploy approve` the waiting run, which then completes with ``sha`` merged into prod and deployed."""
    approved = run_cli("approve", str(run_id), "--reason", reason, "--as", approver, cwd=PROJECT_ROOT)
    assert approved.returncode == 0, approved.stderr
    run = wait_for_state(run_id, final, worker=worker)
    assert run.state.is_completed(), run.state.message
    assert repo.prod_parents()[1] == sha
    assert repo.revisions("prod")[-1]["status"] == "deployed"


def test_approved_change_reaches_prod_at_the_approved_sha(
    deploy_repo: DeployRepo, hubploy_worker: Worker
) -> None:
    repo = deploy_repo
    sha = change_values(repo, "# a comment-only change still counts\n")
    run_id = repo.start(sha)
    wait_for_state(run_id, paused, worker=hubploy_worker)
    text = description(run_id)
    assert f"Promote `{sha[:12]}` to prod?" in text and repo.hub in text
    assert "| deployed |" in text and "localhost:5000/hubploy/minimal-user:" in text
    assert "What prod will change" in text and "```diff" in text and "+kind: " in text  # nothing on prod yet
    assert repo.revisions("prod") == []  # nothing touched prod before the approval
    approve_until_prod(repo, run_id, sha, hubploy_worker, "looks good", "alice")
    assert repo.revisions("staging")[-1]["status"] == "deployed"
    keys = artifact_keys()
    assert {f"audit-{repo.hub}-staging", f"audit-{repo.hub}-prod", "approval"} <= keys
    assert "alice" in repo.origin_git("log", "-1", "--format=%B", "prod")


def test_rejection_leaves_prod_untouched(deploy_repo: DeployRepo, hubploy_worker: Worker) -> None:
    repo = deploy_repo
    prod_before = repo.origin_git("rev-parse", "prod")
    run_id = repo.start(change_values(repo, "# reject me\n"))
    wait_for_state(run_id, paused, worker=hubploy_worker)
    assert (
        run_cli("approve", str(run_id), "--reject", "--reason", "not now", cwd=PROJECT_ROOT).returncode == 0
    )
    run = wait_for_state(run_id, final, worker=hubploy_worker)
    assert (run.state.type.value, run.state.name) == ("CANCELLED", "Rejected")
    assert "not now" in run.state.message and "prod untouched" in run.state.message
    assert repo.origin_git("rev-parse", "prod") == prod_before
    assert repo.revisions("prod") == []


def test_approval_timeout_leaves_prod_untouched(deploy_repo: DeployRepo, hubploy_worker: Worker) -> None:
    repo = deploy_repo
    run_id = repo.start(change_values(repo, "# time out\n"), approval_timeout_hours=0.004)  # about 15 s
    wait_for_state(run_id, paused, worker=hubploy_worker)
    run = wait_for_state(run_id, final, timeout=240, worker=hubploy_worker)
    assert (run.state.type.value, run.state.name) == ("CANCELLED", "ApprovalTimedOut"), run.state.message
    assert "prod untouched" in run.state.message
    assert repo.revisions("prod") == []
    with pytest.raises(NotPausedError, match="isn't paused"):  # a late approval cannot revive it
        resume_flow_run(run_id, run_input={"decision": "approve", "sha": run.parameters["sha"]})


def test_staging_health_failure_rolls_back_and_asks_no_approval(
    deploy_repo: DeployRepo, hubploy_worker: Worker
) -> None:
    repo = deploy_repo
    built = run_cli("build", repo.hub, "--check-registry", "--push", cwd=repo.work.root, env=repo.sandbox.env)
    assert built.returncode == 0, built.stderr
    first = run_cli("deploy", repo.hub, "hub", "staging", cwd=repo.work.root, env=repo.sandbox.env)
    assert first.returncode == 0, first.stderr
    good_revision = repo.revisions("staging")[-1]["revision"]
    broken = yaml.safe_load((repo.work.root / repo.config("common.yaml")).read_text())
    broken["jupyterhub"]["hub"]["config"]["JupyterHub"]["authenticator_class"] = "no-such-authenticator"
    sha = repo.push({repo.config("common.yaml"): yaml.safe_dump(broken)}, "break the hub config")
    run_id = repo.start(sha)
    run = wait_for_state(run_id, lambda r: paused(r) or final(r), worker=hubploy_worker)
    assert (run.state.type.value, run.state.name) == ("FAILED", "StagingFailed"), run.state.message
    # the hub never gets ready: helm gives up after the repo's helm_timeout, and the diagnosis names why
    assert f"{repo.hub}: helm upgrade of {repo.hub}-staging timed out after 2m" in run.state.message
    assert "not ready: " in run.state.message
    history = repo.revisions("staging")
    assert (
        history[-1]["status"] == "deployed" and f"Rollback to {good_revision}" in history[-1]["description"]
    )
    assert repo.revisions("prod") == []


def test_staging_moving_on_during_the_wait_promotes_the_approved_sha(
    deploy_repo: DeployRepo, hubploy_worker: Worker
) -> None:
    repo = deploy_repo
    approved = change_values(repo, "# approved\n")
    run_id = repo.start(approved)
    wait_for_state(run_id, paused, worker=hubploy_worker)
    newer = change_values(repo, "# pushed after the approval was asked\n")
    decide(run_id, "approve", approved, "ok", "bob")
    run = wait_for_state(run_id, final, worker=hubploy_worker)
    assert run.state.is_completed(), run.state.message
    assert repo.prod_parents()[1] == approved
    assert (
        subprocess.run(["git", "-C", repo.url, "merge-base", "--is-ancestor", newer, "prod"]).returncode == 1
    )


def test_approval_survives_a_worker_restart(deploy_repo: DeployRepo, hubploy_worker: Worker) -> None:
    repo = deploy_repo
    sha = change_values(repo, "# survive a restart\n")
    run_id = repo.start(sha)
    wait_for_state(run_id, paused, worker=hubploy_worker)
    waiting = wait_for_process_log(run_id, WAITING_IN)  # in its hot window
    hubploy_worker.restart()  # SIGKILL of the worker and any flow process, then a fresh worker
    wait_for_process_exit(waiting)
    decide(run_id, "approve", sha, "after restart", "carol")
    run = wait_for_state(run_id, final, worker=hubploy_worker)
    assert run.state.is_completed(), run.state.message
    assert repo.prod_parents()[1] == sha


def helm_time(text: str) -> datetime:
    """A time as `helm history -o json` prints it (nanoseconds, maybe a trailing Z)."""
    head, _, rest = text.replace("Z", "+00:00").partition(".")
    digits = re.match(r"\d*", rest).group()  # type: ignore[union-attr]
    return datetime.fromisoformat(f"{head}.{digits[:6]}{rest[len(digits) :]}" if digits else head + rest)


def report_approval_latency(run_id: UUID, repo: DeployRepo) -> None:
    """Print resume → Running again, → prod deploy task, → prod helm release (server and helm clocks)."""
    resumed, *later = states_after_resume(run_id)
    running = next(s.timestamp for s in later if s.is_running())
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    prod_task = min(
        t.start_time for t in tasks if t.name.startswith(f"deploy-{repo.hub}-prod") and t.start_time
    )
    helm = helm_time(repo.revisions("prod")[-1]["updated"])
    print(
        f"\napproval latency: resume → Running {(running - resumed.timestamp).total_seconds():.2f} s, "
        f"→ prod deploy task {(prod_task - resumed.timestamp).total_seconds():.2f} s, "
        f"→ prod helm release {(helm - resumed.timestamp).total_seconds():.2f} s"
    )


def test_approval_in_the_hot_window_continues_in_the_same_process(
    deploy_repo: DeployRepo, hubploy_worker: Worker
) -> None:
    repo = deploy_repo
    sha = change_values(repo, "# approved while the flow-run process waits\n")
    run_id = repo.start(sha)
    run = wait_for_state(run_id, paused, worker=hubploy_worker)
    assert run.state.name == "Suspended" and run.state.state_details.pause_reschedule  # as a plain suspend
    waiting = wait_for_process_log(run_id, WAITING_IN)
    assert process_alive(waiting)
    approve_until_prod(repo, run_id, sha, hubploy_worker, "quick", "hot")
    assert wait_for_process_log(run_id, CONTINUING_IN) == waiting
    # this process claimed the resumed run (Pending, Running): the worker started no second one
    assert [s.name for s in states_after_resume(run_id)] == ["Resuming", "Pending", "Running", "Completed"]
    report_approval_latency(run_id, repo)


def test_after_the_hot_window_the_process_exits_and_a_resume_goes_through_the_worker(
    deploy_repo: DeployRepo, hubploy_worker: Worker
) -> None:
    repo = deploy_repo
    sha = change_values(repo, "# approved after the hot window\n")
    run_id = repo.start(sha, job_variables={"env": {HOT_WINDOW_ENV: "2"}})
    suspended = wait_for_state(run_id, paused, worker=hubploy_worker).state
    wait_for_process_exit(wait_for_process_log(run_id, WAITING_IN))  # at the end of its 2 s hot window
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run_id).state.id == suspended.id  # left exactly as it was: Suspended
    decide(run_id, "approve", sha, "later", "cold")
    run = wait_for_state(run_id, final, worker=hubploy_worker)
    assert run.state.is_completed(), run.state.message
    assert repo.prod_parents()[1] == sha
    assert repo.revisions("prod")[-1]["status"] == "deployed"
    assert process_log_pids(run_id, CONTINUING_IN) == []
    assert "Submitting" in [s.name for s in states_after_resume(run_id)]  # a new process, from the worker


def test_newer_push_supersedes_a_waiting_run(deploy_repo: DeployRepo, hubploy_worker: Worker) -> None:
    repo = deploy_repo
    older = repo.start(change_values(repo, "# older\n"))
    wait_for_state(older, paused, worker=hubploy_worker)
    newer_sha = change_values(repo, "# newer\n")
    newer = repo.start(newer_sha)
    wait_for_state(newer, paused, worker=hubploy_worker)
    run = wait_for_state(older, final, timeout=30, worker=hubploy_worker)
    assert (run.state.type.value, run.state.name) == ("CANCELLED", "Superseded")
    assert str(newer) in run.state.message
    # an approval arriving after the supersession is refused, saying why
    late = run_cli("approve", str(older), "--reason", "too late", cwd=PROJECT_ROOT)
    assert late.returncode == 1 and "Traceback" not in late.stderr
    assert "not waiting for an approval (state: Superseded: superseded by newer lifecycle run" in late.stderr
    decide(newer, "reject", newer_sha, "cleanup")
    wait_for_state(newer, final, worker=hubploy_worker)
    assert repo.revisions("prod") == []


def test_an_approval_racing_a_supersession_is_refused(
    deploy_repo: DeployRepo, hubploy_worker: Worker
) -> None:
    """The cancellation of a supersession lands after the resume (a newer run read this run as waiting,
    then the approval came): the run must not promote. The test holds the repository's promotion lock,
    as the superseding run does while it cancels, so the cancellation lands at that exact point."""
    from prefect.concurrency.sync import concurrency
    from prefect.states import Cancelled

    from flows.tasks.lifecycle import repo_key

    repo = deploy_repo
    prod_before = repo.origin_git("rev-parse", "prod")
    sha = change_values(repo, "# approved while a newer run supersedes it\n")
    run_id = repo.start(sha)
    wait_for_state(run_id, paused, worker=hubploy_worker)
    with concurrency(f"promote-{repo_key(repo.url)}", occupy=1):
        decide(run_id, "approve", sha, "racing", "erin")
        wait_for_state(run_id, lambda r: r.state is not None and r.state.is_running(), worker=hubploy_worker)
        wait_for_artifact(run_id, "accepted")  # the decision counted; the run now waits for the lock
        with get_client(sync_client=True) as client:
            note = "superseded by newer lifecycle run test-newer for 0123456789ab"
            client.set_flow_run_state(run_id, Cancelled(name="Superseded", message=note), force=True)
    # the run's own check, under the lock, refuses the approval before anything touches prod
    refusal = wait_for_log(run_id, "arrived after this run was superseded")
    assert f"({note}): refused; prod untouched" in refusal
    run = wait_for_state(run_id, final, worker=hubploy_worker)
    assert (run.state.type.value, run.state.name) == ("CANCELLED", "Superseded"), run.state.message
    assert repo.origin_git("rev-parse", "prod") == prod_before
    assert repo.revisions("prod") == []


def test_a_decision_counts_only_for_the_commit_shown_and_from_a_listed_approver(
    deploy_repo: DeployRepo, hubploy_worker: Worker
) -> None:
    """`approvers:` on prod (the branch the approval guards) is the list in force: the change under
    approval adds a name to it, which gains nothing. Every refused decision is logged and recorded, and
    the run asks again; the approver recorded is the one that was checked."""
    repo = deploy_repo
    settings = repo.work.root / "hubploy-repo.yaml"
    settings.write_text(settings.read_text() + "approvers:\n  prod: [alice@example.org, bob]\n")
    repo.push({}, "only alice and bob approve prod")
    repo.work.git("push", "--quiet", "--force", repo.url, "staging:prod")  # prod lists them (same commit)
    listed = yaml.safe_load(settings.read_text())
    listed["approvers"]["prod"].append("mallory")
    sha = repo.push(
        {
            "hubploy-repo.yaml": yaml.safe_dump(listed),
            repo.config("common.yaml"): (repo.work.root / repo.config("common.yaml")).read_text()
            + "# mallory's change\n",
        },
        "mallory adds herself to the approvers",
    )
    run_id = repo.start(sha)
    wait_for_state(run_id, paused, worker=hubploy_worker)
    assert "**reject** (the default)" in description(run_id)

    other = repo.origin_git("rev-parse", "prod")
    decide(run_id, "approve", other, "a stale form", "alice@example.org")  # names another commit
    wait_for_state(
        run_id, lambda r: paused(r) and r.state.state_details.pause_key == "approval-2", worker=hubploy_worker
    )
    assert f"it names commit {other[:12]}, but this run promotes {sha[:12]}" in description(run_id)
    # not on prod's list, though on the list of the change (the checkout the command runs in)
    refused = run_cli(
        "approve", str(run_id), "--as", "mallory", "--reason", "looks fine to me", cwd=repo.work.root
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert (
        "refused the approval: 'mallory' may not decide prod: approvers.prod in hubploy-repo.yaml lists "
        "alice@example.org, bob"
    ) in refused.stderr
    run = wait_for_state(
        run_id, lambda r: paused(r) and r.state.state_details.pause_key == "approval-3", worker=hubploy_worker
    )
    assert "Approval by mallory refused: 'mallory' may not decide prod" in description(run_id)
    wrong = run_cli("approve", str(run_id), "--sha", other[:10], "--as", "bob", cwd=PROJECT_ROOT)  # refused
    assert wrong.returncode == 1 and f"promotes commit {sha[:12]}, not {other[:10]}" in wrong.stderr
    assert repo.revisions("prod") == [] and repo.origin_git("rev-parse", "prod") == other

    approved = run_cli(
        "approve",
        str(run_id),
        "--sha",
        sha[:10],
        "--as",
        "Alice@Example.org",
        "--reason",
        "ok",
        cwd=PROJECT_ROOT,
    )
    assert approved.returncode == 0, approved.stderr
    assert f"commit {sha[:12]}" in approved.stdout
    run = wait_for_state(run_id, final, worker=hubploy_worker)
    assert run.state.is_completed(), run.state.message
    assert repo.prod_parents()[1] == sha
    assert "Approved by Alice@Example.org: ok" in repo.origin_git("log", "-1", "--format=%B", "prod")
    records = approval_records(run_id)
    assert len(records) == 3, records
    assert "by alice@example.org (round 1): refused: it names commit" in records[0]
    assert "by mallory (round 2): refused: 'mallory' may not decide prod" in records[1]
    assert "**approve** of" in records[2] and "by Alice@Example.org (round 3): accepted" in records[2]
    assert "| approve | `" + sha + "` | Alice@Example.org | ok | accepted |" in records[2]
    warnings = run_log_lines(run_id, "refused")
    assert any("Approval by mallory refused" in w for w in warnings), warnings


def test_freeze_window_refuses_approval_until_it_ends(
    deploy_repo: DeployRepo, hubploy_worker: Worker
) -> None:
    repo = deploy_repo
    settings = yaml.safe_load((repo.work.root / "hubploy-repo.yaml").read_text())
    settings["freeze_windows"] = [{"start": "2020-01-01", "end": "2099-01-01", "reason": "exam weeks"}]
    sha = repo.push({"hubploy-repo.yaml": yaml.safe_dump(settings)}, "freeze prod for exams")
    run_id = repo.start(sha)
    wait_for_state(run_id, paused, worker=hubploy_worker)
    refused = run_cli("approve", str(run_id), cwd=repo.work.root)
    assert refused.returncode == 1
    assert "frozen (exam weeks) until 2099-01-01" in refused.stderr and "Traceback" not in refused.stderr
    decide(run_id, "approve", sha, "try anyway", "dave")
    run = wait_for_state(
        run_id, lambda r: paused(r) and r.state.state_details.pause_key == "approval-2", worker=hubploy_worker
    )
    assert "Approval by dave refused: prod is frozen (exam weeks)" in description(run.id)
    assert repo.revisions("prod") == []
    decide(run_id, "reject", sha, "wait for the window", "dave")
    assert wait_for_state(run_id, final, worker=hubploy_worker).state.name == "Rejected"


def test_nothing_to_deploy(deploy_repo: DeployRepo, hubploy_worker: Worker) -> None:
    repo = deploy_repo
    run_id = repo.start(repo.push({"README.md": "docs only\n"}, "docs"))
    run = wait_for_state(run_id, final, worker=hubploy_worker)
    assert (run.state.type.value, run.state.name) == ("COMPLETED", "NothingToDeploy")
    assert repo.revisions("staging") == []


@pytest.mark.browser
def test_approve_in_the_prefect_ui_then_prod_is_deployed(
    deploy_repo: DeployRepo, hubploy_worker: Worker, prefect_api: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    repo = deploy_repo
    sha = change_values(repo, "# approved in the browser\n")
    run_id = repo.start(sha)
    wait_for_state(run_id, paused, worker=hubploy_worker)
    ui = prefect_api.removesuffix("/api")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)  # a busy 2-core machine renders the run page slowly
        page.goto(f"{ui}/runs/flow-run/{run_id}")
        page.get_by_role("button", name="Resume").click()
        dialog = page.get_by_role("dialog")
        # the form (and its description) comes once the UI has read the run's input schema
        dialog.get_by_text(f"Promote {sha[:12]} to prod?").wait_for(timeout=60_000)
        assert f"Promote {sha[:12]} to prod?" in dialog.inner_text()  # the markdown description is shown
        assert repo.hub in dialog.inner_text()
        decision = dialog.locator(".p-select-button__control")
        decision.click()
        for _ in range(4):  # the select is keyboard driven: step until it shows "approve"
            if decision.inner_text().strip() == "approve":
                break
            page.keyboard.press("ArrowDown")
            page.keyboard.press("Enter")
        assert decision.inner_text().strip() == "approve"
        assert dialog.locator("textarea").nth(0).input_value() == sha  # the commit the form is for
        dialog.locator("textarea").nth(1).fill("checked staging in the browser")
        dialog.locator("textarea").nth(2).fill("erin@example.org")
        page.screenshot(path=str(tmp_path / "approval-form.png"))
        submit_resume_form(page, dialog)
        browser.close()
    run = wait_for_state(run_id, final, worker=hubploy_worker)
    assert run.state.is_completed(), run.state.message
    assert repo.prod_parents()[1] == sha
    assert repo.revisions("prod")[-1]["status"] == "deployed"
    assert "erin@example.org" in repo.origin_git("log", "-1", "--format=%B", "prod")
