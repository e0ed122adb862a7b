"""Long operations show progress: on the terminal (`hubploy sandbox up`, `hubploy build`, `hubploy
deploy`), and in the Prefect logs of a deployment run by the real worker, including the lines of the
`hubploy.*` loggers (PREFECT_LOGGING_EXTRA_LOGGERS=hubploy, as `hubploy up` sets it)."""

from __future__ import annotations

import re
import secrets
import time

import pytest
import test_lifecycle as lc
from conftest import PROJECT_ROOT
from fixtures.prefect_worker import Worker, wait_for_state
from helpers.cli import run_cli
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import LogSort
from prefect.deployments import run_deployment
from test_prefect_yaml import _push_to_prod

deploy_repo = lc.deploy_repo


@pytest.mark.sandbox
def test_sandbox_up_says_what_each_part_does_and_the_total_time(sandbox) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("sandbox", "up", cwd=PROJECT_ROOT, env=sandbox.env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for part in ("etcd", "kube-apiserver", "registry"):
        assert any(
            re.match(rf"{part}: (already running \(pid \d+\)|ready in \d+\.\d s)", line) for line in lines
        ), part
    assert re.search(r"^sandbox ready in \d+\.\d s", result.stdout, re.MULTILINE)
    # a fresh start's per-part "ready in N s" lines:
    # tests/test_sandbox_cli.py::test_up_is_idempotent_and_down_stops_everything


@pytest.mark.sandbox
@pytest.mark.prefect
def test_build_and_deploy_print_progress_lines(deploy_repo: lc.DeployRepo) -> None:
    repo = deploy_repo
    repo.push({f"deployments/{repo.hub}/image/hello.txt": f"progress {secrets.token_hex(4)}\n"}, "new image")
    built = run_cli("build", repo.hub, "--check-registry", "--push", cwd=repo.work.root, env=repo.sandbox.env)
    assert built.returncode == 0, built.stderr
    out = built.stdout
    assert re.search(r"^build \S+minimal-user:\S+: ", out, re.MULTILINE), out
    # the builder's own lines
    assert re.search(r"^    .*STEP", out, re.MULTILINE) or re.search(r"^    \S", out, re.MULTILINE), out
    assert re.search(r"^built \S+ in \d+\.\d s", out, re.MULTILINE), out
    assert re.search(r"^pushed \S+ sha256:", out, re.MULTILINE), out
    assert f"{repo.hub}: 1 built, 0 skipped" in out

    deployed = run_cli("deploy", repo.hub, "hub", "staging", cwd=repo.work.root, env=repo.sandbox.env)
    assert deployed.returncode == 0, deployed.stderr
    text = deployed.stdout + deployed.stderr
    release = f"{repo.hub}-staging"
    for line in (
        "images present:",
        f"helm upgrade {release} in {release}",
        f"health check of {release} passed",
        f"deployed {release} revision 1",
    ):
        assert line in text, text


def _all_logs(flow_run_id):  # type: ignore[no-untyped-def]
    """Every log of a flow run, page by page (the API answers at most 200 at a time)."""
    logs: list = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                sort=LogSort.TIMESTAMP_ASC,
                limit=200,
                offset=len(logs),
            )
            logs += page
            if len(page) < 200:
                return logs


@pytest.mark.sandbox
@pytest.mark.prefect
def test_a_deploy_run_streams_its_progress_into_prefect_logs(
    deploy_repo: lc.DeployRepo, hubploy_worker: Worker
) -> None:
    repo = deploy_repo
    built = run_cli("build", repo.hub, "--check-registry", "--push", cwd=repo.work.root, env=repo.sandbox.env)
    assert built.returncode == 0, built.stderr
    common = repo.work.root / repo.config("common.yaml")
    before, sha = _push_to_prod(repo, {repo.config("common.yaml"): common.read_text() + "# logs\n"}, "logs")
    run = run_deployment(
        "hubploy-prod-deploy/prod-deploy",
        timeout=0,
        parameters={"sha": sha, "before": before, "repo_url": repo.url},
    )
    run = wait_for_state(run.id, lambda r: r.state is not None and r.state.is_final(), worker=hubploy_worker)
    assert run.state.is_completed(), run.state.message
    release = f"{repo.hub}-prod"
    wanted = (
        "images present:",
        f"helm upgrade {release} in {release}",
        f"health check of {release} passed",
        f"deployed {release} revision 1",
    )
    deadline = time.monotonic() + 30  # the API log handler ships in batches, after the state may be final
    while True:
        logs = _all_logs(run.id)
        task_logs = [log for log in logs if log.task_run_id is not None]
        messages = "\n".join(log.message for log in task_logs)
        if all(line in messages for line in wanted) or time.monotonic() > deadline:
            break
        time.sleep(1)
    for line in wanted:
        assert line in messages, messages
    # the hubploy.* library loggers reach Prefect too, attached to the deploy task run
    commands = [log for log in task_logs if log.name == "hubploy.run"]
    assert any(
        log.message.startswith("$ ") and " upgrade " in log.message and release in log.message
        for log in commands
    ), [(log.name, log.message) for log in task_logs]
