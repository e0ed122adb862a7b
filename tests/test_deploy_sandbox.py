"""The deploy sequence against the real sandbox: helm 3 and 4, a current Kubernetes, the Z2JH-shaped chart
whose hub (JupyterHub with KubeSpawner) and proxy (CHP) really run.

Each test deploys its own hub (unique name, so release and namespace ``<hub>-staging``) from a copy of
the example repo; its user image is a copy of the sandbox's base image, so no build is needed. A change
that breaks a hub is a real one: a hub config that makes JupyterHub exit, so its pod never gets ready.
"""

from __future__ import annotations

import contextvars
import json
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fixtures.sandbox import Sandbox
from helpers.cli import run_cli
from helpers.example_repo import copy_example_repo

from hubploy.deploy import CONFIG_STAMP_PREFIX, DeployOptions, DeployResult, Outcome, deploy
from hubploy.errors import DeployError, HealthCheckError
from hubploy.helm import UpgradeFlags
from hubploy.layout import load_repo
from hubploy.registry import RegistryCredentials, auth_files
from hubploy_sandbox.images import BASE_REPOSITORY, BASE_TAG, ensure_base_image

pytest_plugins = ["fixtures.sandbox"]
pytestmark = pytest.mark.sandbox

GIT = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t"]
# helm's wait for a good hub: 150 s, as several test modules run at once (scripts/test) and a hub whose
# proxy is not up yet restarts with a backoff, as on a real cluster
FAST = DeployOptions(flags=UpgradeFlags(timeout="150s", atomic=True), health_timeout=60)
# A hub config that makes JupyterHub exit at start: the hub pod crash-loops and never gets ready.
BROKEN_HUB = "jupyterhub.hub.extraConfig.99-broken=raise SystemExit('broken on purpose')"
CHART_IMAGES = {
    "jupyterhub.hub.image",
    "jupyterhub.proxy.chp.image",
    "jupyterhub.singleuser.image",
    "jupyterhub.prePuller.hook.image",
    "jupyterhub.prePuller.pause.image",
    "jupyterhub.scheduling.userPlaceholder.image",
    "jupyterhub.scheduling.userScheduler.image",
}


class HubRepo:
    """A git repo holding one hub ``name`` deployable to staging on the sandbox."""

    def __init__(self, root: Path, name: str, sandbox: Sandbox, env: dict[str, str]) -> None:
        self.root, self.name, self.sandbox, self.env = root, name, sandbox, env
        self.release = self.namespace = f"{name}-staging"

    @property
    def hub_dir(self) -> Path:
        return self.root / "deployments" / self.name

    def set_user_image(self, reference: str) -> None:
        (self.hub_dir / "hubploy.yaml").write_text(
            yaml.safe_dump({"images": {"images": [{"name": reference}]}})
        )
        self.commit("user image " + reference)

    def commit(self, message: str) -> None:
        subprocess.run([*GIT, "add", "-A"], cwd=self.root, check=True)
        subprocess.run([*GIT, "commit", "-qm", message], cwd=self.root, check=True)

    def deploy(self, options: DeployOptions = FAST) -> DeployResult:
        return deploy(load_repo(self.root), self.name, "staging", options=options, base_env=self.env)

    def history(self) -> list[dict]:
        out = self.sandbox.run(
            [self.env["HELM_EXECUTABLE"], "history", self.release, "-n", self.namespace, "-o", "json"],
            env=self.env,
            check=False,
        )
        return json.loads(out.stdout) if out.returncode == 0 else []

    def hub_version(self, timeout: float = 60) -> str:
        return self.sandbox.hub_version(self.namespace, timeout)


def base_image(sandbox: Sandbox) -> str:
    return f"{sandbox.registry}/{BASE_REPOSITORY}:{BASE_TAG}"


def push_copy(sandbox: Sandbox, target: str) -> str:
    """Copy the base image to ``target`` (repository:tag) in the sandbox registry; its reference."""
    creds = RegistryCredentials(sandbox.registry, *sandbox.registry_auth)
    with auth_files([creds]) as files:
        sandbox.run(
            [
                str(sandbox.bin / "skopeo"),
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"docker://{base_image(sandbox)}",
                f"docker://{sandbox.registry}/{target}",
            ],
            env={**sandbox.env, **files.env},
            timeout=120,
        )
    return f"{sandbox.registry}/{target}"


@pytest.fixture
def hub_repo(tmp_path: Path, sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[HubRepo]:
    ensure_base_image(sandbox.paths, sandbox.env)
    helm_version = getattr(request, "param", "3")
    env = sandbox.env_for(helm_version)
    name = f"d{secrets.token_hex(3)}"
    root = copy_example_repo(tmp_path / "repo", {name: "minimal"})
    subprocess.run(["git", "init", "-q", "-b", "staging", str(root)], check=True)
    repo = HubRepo(root, name, sandbox, env)
    repo.set_user_image(base_image(sandbox))
    yield repo
    sandbox.run(
        [env["HELM_EXECUTABLE"], "uninstall", repo.release, "-n", repo.namespace], env=env, check=False
    )
    sandbox.kubectl("delete", "namespace", repo.namespace, "--wait=false", "--ignore-not-found", check=False)


def test_first_install_upgrade_unchanged_and_redeploy(hub_repo: HubRepo) -> None:
    first = hub_repo.deploy()
    assert (first.outcome, first.revision_before, first.revision_after) == (Outcome.deployed, None, 1)
    assert first.hub_version == hub_repo.hub_version()
    assert {i.path for i in first.images} == CHART_IMAGES
    assert all(i.digest and i.digest.startswith("sha256:") for i in first.images)
    assert first.git_sha and first.values_digest.startswith("sha256:")
    assert hub_repo.history()[-1]["description"].startswith(CONFIG_STAMP_PREFIX)

    colour = ("jupyterhub.hub.extraEnv.COLOUR=blue",)
    second = hub_repo.deploy(DeployOptions(set_string_values=colour, flags=FAST.flags, health_timeout=60))
    assert (second.outcome, second.revision_before, second.revision_after) == (Outcome.deployed, 1, 2)
    assert second.values_digest != first.values_digest

    # The same chart and values again, after a comment-only commit: nothing to upgrade, the hub is probed.
    common = hub_repo.hub_dir / "config" / "common.yaml"
    common.write_text("# a comment changes no value\n" + common.read_text())
    hub_repo.commit("a comment")
    unchanged = hub_repo.deploy(DeployOptions(set_string_values=colour, flags=FAST.flags, health_timeout=60))
    assert (unchanged.outcome, unchanged.revision_before, unchanged.revision_after) == (
        Outcome.unchanged,
        2,
        2,
    )
    assert unchanged.hub_version == hub_repo.hub_version() and "nothing to upgrade" in unchanged.message
    assert unchanged.values_digest == second.values_digest
    assert len(hub_repo.history()) == 2

    redeploy = hub_repo.deploy(
        DeployOptions(set_string_values=colour, flags=FAST.flags, health_timeout=60, skip_unchanged=False)
    )
    assert (redeploy.outcome, redeploy.revision_before, redeploy.revision_after) == (Outcome.deployed, 2, 3)

    # A chart file change is a change even when every value is the same.
    (hub_repo.root / "hub" / "templates" / "extra.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  a: b\n"
    )
    hub_repo.commit("a chart change")
    changed = hub_repo.deploy(DeployOptions(set_string_values=colour, flags=FAST.flags, health_timeout=60))
    assert (changed.outcome, changed.revision_before, changed.revision_after) == (Outcome.deployed, 3, 4)
    assert [r["status"] for r in hub_repo.history()] == ["superseded"] * 3 + ["deployed"]


def test_unchanged_release_that_is_unhealthy_fails_without_a_rollback(
    hub_repo: HubRepo, sandbox: Sandbox
) -> None:
    assert hub_repo.deploy().outcome is Outcome.deployed
    # users can't reach it
    sandbox.kubectl("scale", "deployment/proxy", "--replicas=0", "-n", hub_repo.namespace)
    with pytest.raises(HealthCheckError, match="nothing was changed or rolled back"):
        hub_repo.deploy(DeployOptions(flags=FAST.flags, health_timeout=3))
    assert [r["status"] for r in hub_repo.history()] == ["deployed"]


@pytest.mark.parametrize("hub_repo", ["4"], indirect=True)
def test_helm4_install_and_upgrade(hub_repo: HubRepo) -> None:
    assert hub_repo.deploy().revision_after == 1
    result = hub_repo.deploy(
        DeployOptions(
            set_string_values=("jupyterhub.hub.extraEnv.HELM=4",), flags=FAST.flags, health_timeout=60
        )
    )
    assert (result.outcome, result.revision_before, result.revision_after) == (Outcome.deployed, 1, 2)
    assert hub_repo.hub_version()


@pytest.mark.parametrize("hub_repo", ["3", "4"], indirect=True)
def test_upgrade_that_never_becomes_ready_is_rolled_back(hub_repo: HubRepo, sandbox: Sandbox) -> None:
    hub_repo.deploy()
    options = DeployOptions(
        set_string_values=(BROKEN_HUB,), flags=UpgradeFlags(timeout="15s", atomic=True), health_timeout=30
    )
    with pytest.raises(
        DeployError,
        match=r"timed out after 15s waiting for the release "
        r"to be ready \(rolled back "
        r"to revision 1's configuration as revision 3, which is serving\): "
        r"not ready: Pod hub-",
    ):
        hub_repo.deploy(options)
    history = hub_repo.history()
    assert [(r["revision"], r["status"]) for r in history] == [
        (1, "superseded"),
        (2, "failed"),
        (3, "deployed"),
    ]
    assert hub_repo.hub_version()


def test_failed_health_check_is_rolled_back(hub_repo: HubRepo) -> None:
    """Every pod gets ready, but users no longer reach the hub where they did (it moved to another base
    URL)."""
    hub_repo.deploy()
    broken = DeployOptions(
        set_string_values=("jupyterhub.hub.baseUrl=/elsewhere/",), flags=FAST.flags, health_timeout=20
    )
    results: list[DeployResult] = []
    with pytest.raises(HealthCheckError, match="rolled back to revision 1"):
        deploy(
            load_repo(hub_repo.root),
            hub_repo.name,
            "staging",
            options=broken,
            base_env=hub_repo.env,
            on_result=results.append,
        )
    assert results[0].outcome is Outcome.rolled_back and results[0].revision_after == 3
    assert [r["status"] for r in hub_repo.history()] == ["superseded", "superseded", "deployed"]
    assert hub_repo.hub_version()


@pytest.mark.parametrize("hub_repo", ["3", "4"], indirect=True)
def test_stuck_pending_upgrade_is_recovered(hub_repo: HubRepo, sandbox: Sandbox) -> None:
    hub_repo.deploy()
    helm = subprocess.Popen(
        [
            hub_repo.env["HELM_EXECUTABLE"],
            "upgrade",
            "--wait",
            "--timeout",
            "5m",
            hub_repo.release,
            str(hub_repo.root / "hub"),
            "-n",
            hub_repo.namespace,
            "--reuse-values",
            "--set-string",
            BROKEN_HUB,
        ],
        env=hub_repo.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(r["status"] == "pending-upgrade" for r in hub_repo.history()):
            assert time.monotonic() < deadline, "helm never reached pending-upgrade"
            time.sleep(0.3)
    finally:
        helm.send_signal(signal.SIGKILL)
        helm.wait()
    assert hub_repo.history()[-1]["status"] == "pending-upgrade"

    result = hub_repo.deploy()
    assert result.outcome is Outcome.deployed
    assert len(result.recovered) == 1 and "stuck in pending-upgrade" in result.recovered[0]
    assert "rolling back to revision 1" in result.recovered[0]
    assert result.revision_before == 3 and result.revision_after == 4
    assert hub_repo.hub_version()


def test_failed_first_install_is_cleaned_up_and_retried(hub_repo: HubRepo, sandbox: Sandbox) -> None:
    with pytest.raises(DeployError, match="no rollback was requested"):
        hub_repo.deploy(
            DeployOptions(
                set_string_values=(BROKEN_HUB,),
                flags=UpgradeFlags(timeout="10s", atomic=False),
                health_check=False,
            )
        )
    assert [r["status"] for r in hub_repo.history()] == ["failed"]
    result = hub_repo.deploy()
    assert result.outcome is Outcome.deployed and "only failed revisions" in result.recovered[0]
    assert [r["status"] for r in hub_repo.history()] == ["deployed"]


def test_missing_image_is_refused_before_helm_runs(hub_repo: HubRepo, sandbox: Sandbox) -> None:
    good = base_image(sandbox)
    missing = f"{sandbox.registry}/{hub_repo.name}/no-such-image:v9"
    hub_repo.set_user_image(missing)
    results: list[DeployResult] = []
    with pytest.raises(DeployError, match=f"{missing} \\(at jupyterhub.singleuser.image\\)"):
        deploy(
            load_repo(hub_repo.root),
            hub_repo.name,
            "staging",
            options=FAST,
            base_env=hub_repo.env,
            on_result=results.append,
        )
    assert results[0].outcome is Outcome.refused and hub_repo.history() == []
    gone = sandbox.kubectl(
        "get", "namespace", hub_repo.namespace, "-o", "jsonpath={.status.phase}", check=False
    )
    assert gone.returncode != 0 or gone.stdout == "Terminating", (
        "the namespace created for it was left behind"
    )

    hub_repo.set_user_image(good)
    hub_repo.deploy()
    hub_repo.set_user_image(missing)
    with pytest.raises(DeployError, match="refusing to deploy"):
        hub_repo.deploy()
    assert len(hub_repo.history()) == 1


def test_chart_that_does_not_render_changes_nothing(hub_repo: HubRepo, sandbox: Sandbox) -> None:
    broken = hub_repo.root / "hub" / "templates" / "broken.yaml"
    broken.write_text("kind: ConfigMap\ndata:\n  x: {{ .Values.no.such.key }}\n")
    hub_repo.commit("a template that cannot render")
    results: list[DeployResult] = []
    with pytest.raises(DeployError, match="nothing was changed: the chart does not render.*broken.yaml"):
        deploy(
            load_repo(hub_repo.root),
            hub_repo.name,
            "staging",
            options=FAST,
            base_env=hub_repo.env,
            on_result=results.append,
        )
    assert results[0].outcome is Outcome.refused and hub_repo.history() == []
    gone = sandbox.kubectl(
        "get", "namespace", hub_repo.namespace, "-o", "jsonpath={.status.phase}", check=False
    )
    assert gone.returncode != 0 or gone.stdout == "Terminating", (
        "the namespace created for it was left behind"
    )

    broken.unlink()
    hub_repo.commit("fixed")
    assert hub_repo.deploy().revision_after == 1
    broken.write_text("kind: ConfigMap\ndata:\n  x: {{ .Values.no.such.key }}\n")
    hub_repo.commit("broken again")
    with pytest.raises(DeployError, match="nothing was changed"):
        hub_repo.deploy()
    assert [r["status"] for r in hub_repo.history()] == ["deployed"]


def test_cli_deploy_and_dry_run_never_prints_secrets(hub_repo: HubRepo) -> None:
    env = {**hub_repo.env, "CI": ""}
    done = run_cli("deploy", hub_repo.name, "hub", "staging", "--timeout", "150", cwd=hub_repo.root, env=env)
    assert done.returncode == 0, done.stderr
    assert f"{hub_repo.release}: deployed (revision none -> 1" in done.stderr
    token = subprocess.run(
        [
            str(hub_repo.sandbox.bin / "sops"),
            "--decrypt",
            "--extract",
            '["jupyterhub"]["proxy"]["secretToken"]',
            str(hub_repo.hub_dir / "secrets/staging.yaml"),
        ],
        env={**env, "SOPS_AGE_KEY_FILE": str(hub_repo.root / "example-age.key")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert len(token) > 8
    dry = run_cli("-D", "deploy", hub_repo.name, "hub", "staging", "--dry-run", cwd=hub_repo.root, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "kind: Secret" in dry.stdout and "USER-SUPPLIED VALUES" in dry.stdout
    assert token not in dry.stdout + dry.stderr
    assert [r["revision"] for r in hub_repo.history()] == [1]
    refused = run_cli(
        "deploy", hub_repo.name, "hub", "staging", "--dry-run", cwd=hub_repo.root, env={**env, "CI": "true"}
    )
    assert refused.returncode == 1 and "refused in CI" in refused.stderr

    again = run_cli("deploy", hub_repo.name, "hub", "staging", "--timeout", "150", cwd=hub_repo.root, env=env)
    assert again.returncode == 0 and f"{hub_repo.release}: unchanged (revision 1 -> 1" in again.stderr, (
        again.stderr
    )
    forced = run_cli("deploy", hub_repo.name, "hub", "staging", "--redeploy", cwd=hub_repo.root, env=env)
    assert forced.returncode == 0 and f"{hub_repo.release}: deployed (revision 1 -> 2" in forced.stderr, (
        forced.stderr
    )


@pytest.mark.prefect
def test_concurrent_deploys_of_one_release_are_serialized(
    hub_repo: HubRepo, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.tasks.deploy import deploy_hub

    for key, value in hub_repo.env.items():
        monkeypatch.setenv(key, value)  # the task takes its child env from the process, as a worker would
    records: list[dict] = []
    errors: list[BaseException] = []

    def one(colour: str) -> None:
        try:
            records.append(
                deploy_hub(
                    hub_repo.name,
                    "staging",
                    str(hub_repo.root),
                    timeout="150s",
                    set_string_values=[f"jupyterhub.hub.extraEnv.COLOUR={colour}"],
                    trigger=f"test-{colour}",
                )
            )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    # each thread gets this context, whose Prefect settings name the test server
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(one, c)) for c in ("red", "green")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    first, second = sorted(records, key=lambda r: r["started"])
    assert first["finished"] <= second["started"], "the two deploys of one release overlapped"
    assert {first["revision_after"], second["revision_after"]} == {1, 2}
    assert second["revision_before"] == first["revision_after"]

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(f"deploy-{hub_repo.release}")
        cluster_limit = client.read_global_concurrency_limit_by_name("cluster-default")
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"audit-{hub_repo.release}"]))
        )
    assert limit.limit == 1
    assert cluster_limit.limit == load_repo(hub_repo.root).settings.cluster_concurrency
    assert len(artifacts) == 2
    text = artifacts[0].data
    for field in (
        "git SHA",
        "values digest (secrets excluded)",
        "helm revision before",
        "helm revision after",
        "duration",
        "trigger",
        "jupyterhub.singleuser.image",
        "sha256:",
    ):
        assert field in text


@pytest.mark.prefect
def test_fleet_flow_deploys_hubs_concurrently_and_reports_each(
    hub_repo: HubRepo, sandbox: Sandbox, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.deploy_hubs import deploy_hubs

    for key, value in hub_repo.env.items():
        monkeypatch.setenv(key, value)
    other = HubRepo(hub_repo.root, f"{hub_repo.name}b", sandbox, hub_repo.env)
    broken = HubRepo(hub_repo.root, f"{hub_repo.name}x", sandbox, hub_repo.env)
    shutil.copytree(hub_repo.hub_dir, other.hub_dir)
    shutil.copytree(hub_repo.hub_dir, broken.hub_dir)
    broken.set_user_image(f"{sandbox.registry}/{broken.name}/absent:v1")
    try:
        with pytest.raises(
            DeployError, match=f"1 of 3 hub\\(s\\) failed to deploy to staging: {broken.name}"
        ):
            deploy_hubs(
                [hub_repo.name, other.name, broken.name], "staging", str(hub_repo.root), timeout="60s"
            )
        assert hub_repo.history()[-1]["status"] == "deployed"
        assert other.history()[-1]["status"] == "deployed"
        assert broken.history() == []
    finally:
        sandbox.run(
            [other.env["HELM_EXECUTABLE"], "uninstall", other.release, "-n", other.namespace],
            env=other.env,
            check=False,
        )
        for ns in (other.namespace, broken.namespace):
            sandbox.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


@pytest.mark.prefect
def test_rollback_task_restores_the_previous_configuration(
    hub_repo: HubRepo, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.tasks.deploy import rollback_hub

    for key, value in hub_repo.env.items():
        monkeypatch.setenv(key, value)
    hub_repo.deploy()
    hub_repo.deploy(
        DeployOptions(
            set_string_values=("jupyterhub.hub.extraEnv.COLOUR=blue",), flags=FAST.flags, health_timeout=60
        )
    )
    record = rollback_hub(hub_repo.name, "staging", str(hub_repo.root), timeout="150s", trigger="test")
    assert (record["result"], record["revision_before"], record["revision_after"]) == (
        Outcome.rolled_back,
        2,
        3,
    )
    assert record["hub_version"] == hub_repo.hub_version()
    values = hub_repo.sandbox.run(
        [
            hub_repo.env["HELM_EXECUTABLE"],
            "get",
            "values",
            hub_repo.release,
            "-n",
            hub_repo.namespace,
            "-o",
            "json",
        ],
        env=hub_repo.env,
    ).stdout
    assert "COLOUR" not in values
    with pytest.raises(DeployError, match="no revision 9"):
        rollback_hub(hub_repo.name, "staging", str(hub_repo.root), revision=9)
