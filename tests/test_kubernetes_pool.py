"""The Kubernetes work pool for real (issue 14): a pool of prefect-kubernetes and its worker run a
`deploy-hubs` flow run as a Kubernetes Job on the sandbox. The sandbox's agent runs the Job pod's command
(`prefect flow-run execute`, the image `…/hubploy:<tag>` standing for this project's virtualenv) as a
process with the pod's env; the flow run deploys a hub with the pod's ServiceAccount, bound as the docs'
RBAC block says (docs/howto/scale-out.md); the pod ends Succeeded, the Job Complete, the run Completed."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fixtures.prefect_worker import PREFECT, PROJECT_ROOT, _prefect, wait_for_state
from fixtures.sandbox import Sandbox
from helpers.fleet_repo import fleet_repo

from hubploy_sandbox import image_envs
from hubploy_sandbox.images import BASE_REPOSITORY, BASE_TAG, ensure_base_image

RUNNER_IMAGE = "registry.example.org/hubploy/hubploy:test"


def readme_runner_rbac(namespace: str) -> list[dict]:
    """The scale-out guide's hubploy-runner.yaml block, moved to ``namespace`` (its ClusterRoleBinding
    renamed after it, so that test sessions side by side do not share one)."""
    text = (PROJECT_ROOT / "docs" / "howto" / "scale-out.md").read_text()
    block = re.search(r"<!-- hubploy-runner\.yaml[^>]*-->\n```yaml\n(.*?)```", text, re.DOTALL)
    assert block, "docs/howto/scale-out.md has no hubploy-runner.yaml block"
    docs = [doc for doc in yaml.safe_load_all(block.group(1)) if doc]
    for doc in docs:
        if doc["kind"] == "ClusterRoleBinding":
            doc["metadata"]["name"] = f"hubploy-runner-{namespace}"
            for subject in doc["subjects"]:
                subject["namespace"] = namespace
        else:
            doc["metadata"]["namespace"] = namespace
    return docs


def test_the_runner_image_is_hubplys_own_environment(tmp_path: Path) -> None:
    env = image_envs.env_for(RUNNER_IMAGE)
    assert env is image_envs.RUNNER_IMAGE
    first = image_envs.path_for(RUNNER_IMAGE, tmp_path).split(":")[0]
    assert first == str(Path(sys.prefix) / "bin") and (Path(first) / "prefect").is_file()
    sources = env.file_sources(tmp_path)
    assert sources["/usr/local/bin/kubectl"].name == "kubectl"
    helm = sources["/usr/local/bin/helm"]
    assert helm.parent.parent == tmp_path and helm.name == "helm"


def test_readme_rbac_block_binds_the_runner_in_the_given_namespace() -> None:
    docs = readme_runner_rbac("hubs-ci")
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ClusterRoleBinding"}
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "hubploy-runner", "namespace": "hubs-ci"}
    ]


def _sandbox_job_template(repo: Path) -> dict:
    """prefect-kubernetes' default base job template, for the sandbox: the pod uses the host's network (the
    sandbox's registry and the test's Prefect server listen on the host's loopback), and sees the test's
    repository (under /tmp, which each pod gets fresh) at the same path."""
    from prefect_kubernetes.worker import KubernetesWorker

    template = KubernetesWorker.get_default_base_job_template()
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    pod["hostNetwork"] = True
    pod["volumes"] = [{"name": "repo", "hostPath": {"path": str(repo), "type": "Directory"}}]
    # writable: helm dependency update writes into the chart
    pod["containers"][0]["volumeMounts"] = [{"name": "repo", "mountPath": str(repo)}]
    return template


@pytest.fixture
def kubernetes_worker(sandbox: Sandbox, prefect_api: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A kubernetes pool named after the test with the sandbox's base job template, and its worker (the
    sandbox's kubeconfig); the pool's name and the repository its Jobs see."""
    pool = f"hubploy-kubernetes-{secrets.token_hex(3)}"
    repo = tmp_path / "repo"
    repo.mkdir()
    template = tmp_path / "base-job-template.json"
    template.write_text(json.dumps(_sandbox_job_template(repo)))
    env = {
        **sandbox.env,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    created = _prefect(
        [
            "work-pool",
            "create",
            pool,
            "--type",
            "kubernetes",
            "--base-job-template",
            str(template),
            "--overwrite",
        ],
        env,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", pool, "--type", "kubernetes"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield pool, repo
    finally:
        os.killpg(worker.pid, 9)
        worker.wait()
        print(log.read_text(errors="replace")[-5000:])


@pytest.mark.sandbox
@pytest.mark.prefect
def test_deploy_hubs_runs_as_a_kubernetes_job(
    sandbox: Sandbox, sandbox_namespace: str, kubernetes_worker: tuple[str, Path]
) -> None:
    from prefect.deployments import run_deployment

    from blocks.sandbox import save_sandbox_blocks
    from flows.deploy_hubs import deploy_hubs

    pool, repo = kubernetes_worker
    hub = f"k{secrets.token_hex(3)}"
    ensure_base_image(sandbox.paths, sandbox.env)
    # the registry's credentials: the block `hubploy up` saves, which the pod reads from the Prefect API
    fleet_repo(
        repo, [hub], f"{sandbox.registry}/{BASE_REPOSITORY}:{BASE_TAG}", registry_block="sandbox-registry"
    )
    save_sandbox_blocks(sandbox.env)
    docs = readme_runner_rbac(sandbox_namespace)
    sandbox.run(
        [str(sandbox.bin / "kubectl"), "apply", "-f", "-"], input=yaml.safe_dump_all(docs), timeout=60
    )
    binding = f"hubploy-runner-{sandbox_namespace}"
    try:
        # No KUBECONFIG and no registry credentials: the pod deploys with its ServiceAccount, and the image
        # (this project's virtualenv, helm, kubectl) is all it has; PYTHONPATH runs this checkout's code.
        source = deploy_hubs.from_source(
            source=str(PROJECT_ROOT), entrypoint="flows/deploy_hubs.py:deploy_hubs"
        )
        env = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "PREFECT_LOGGING_EXTRA_LOGGERS": "hubploy"}
        source.deploy(
            name=pool,
            work_pool_name=pool,
            image=RUNNER_IMAGE,
            build=False,
            push=False,
            print_next_steps=False,
            job_variables={
                "namespace": sandbox_namespace,
                "service_account_name": "hubploy-runner",
                "finished_job_ttl": 600,
                "env": env,
            },
        )
        flow_run = run_deployment(
            f"deploy-hubs/{pool}",
            timeout=0,
            parameters={
                "hubs": [hub],
                "env": "staging",
                "repo_path": str(repo),
                "trigger": "kubernetes",
                "timeout": "3m",
            },
        )

        def completed(run) -> bool:  # type: ignore[no-untyped-def]
            simulated = [
                e["message"]
                for e in sandbox.get("events", namespace=sandbox_namespace)["items"]
                if e.get("reason") == "Simulated"
            ]
            assert not simulated, f"{simulated}: the sandbox's agent predates the runner image (restart it)"
            return run.state is not None and run.state.is_completed()

        done = wait_for_state(flow_run.id, completed, timeout=600)
        assert done.state.is_completed()

        def finished_job() -> dict | None:  # the flow-run process exits just after the run is Completed
            (job,) = sandbox.get("jobs", namespace=sandbox_namespace)["items"]
            return job if job["status"].get("succeeded") or job["status"].get("failed") else None

        job = sandbox.wait_for("the Job to finish", finished_job, timeout=120)
        assert job["status"].get("succeeded") == 1, job["status"]
        assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])
        selector = f"job-name={job['metadata']['name']}"
        (pod,) = sandbox.get("pods", "-l", selector, namespace=sandbox_namespace)["items"]
        assert pod["status"]["phase"] == "Succeeded"
        assert pod["spec"]["serviceAccountName"] == "hubploy-runner"
        assert pod["spec"]["containers"][0]["image"] == RUNNER_IMAGE
        (status,) = pod["status"]["containerStatuses"]
        terminated = status["state"]["terminated"]
        assert terminated["exitCode"] == 0 and terminated.get("message") != "hubploy-sandbox/simulated"
        events = sandbox.get("events", namespace=sandbox_namespace)["items"]
        assert any(e.get("reason") == "Started" for e in events)
        # the pod ran the flow: its log is the flow run's, and the hub answers
        logs = sandbox.kubectl("logs", "-n", sandbox_namespace, pod["metadata"]["name"]).stdout
        assert "deploy-staging" in logs and "Finished in state Completed" in logs, logs[-3000:]
        history = json.loads(
            sandbox.run(
                [
                    sandbox.env["HELM_EXECUTABLE"],
                    "history",
                    f"{hub}-staging",
                    "-n",
                    f"{hub}-staging",
                    "-o",
                    "json",
                ]
            ).stdout
        )
        assert [h["status"] for h in history] == ["deployed"]
        assert sandbox.hub_version(f"{hub}-staging")
    finally:
        sandbox.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found", check=False)
        sandbox.run(
            [sandbox.env["HELM_EXECUTABLE"], "uninstall", f"{hub}-staging", "-n", f"{hub}-staging"],
            check=False,
        )
        sandbox.kubectl(
            "delete", "namespace", f"{hub}-staging", "--wait=false", "--ignore-not-found", check=False
        )
