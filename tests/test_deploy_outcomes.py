"""The deploy sequence and ``rollback_hub`` against a stand-in cluster (tests/helpers/fake_cluster.py as
helm and kubectl), a stand-in registry and a stand-in health check: every Outcome, what each step leaves
behind, and where the cluster slot is held. The same sequence against the real sandbox is in
tests/test_deploy_sandbox.py."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import hubploy.deploy
from hubploy.cli.main import main
from hubploy.deploy import DeployOptions, DeployResult, Outcome, deploy, rollback_hub
from hubploy.deploy import health_gate as deploy_health
from hubploy.deploy import images as deploy_images
from hubploy.deploy.release import at_least
from hubploy.errors import DeployError, HealthCheckError
from hubploy.helm import UpgradeFlags
from hubploy.layout import REPOS, load_repo
from hubploy.runner import register_secret

FAKE_CLUSTER = Path(__file__).parent / "helpers" / "fake_cluster.py"
HUB_IMAGE = "registry.example.org/hub"
OPTIONS = DeployOptions(flags=UpgradeFlags(timeout="60s", atomic=True), health_timeout=5)
CHANGED = DeployOptions(
    set_string_values=("jupyterhub.hub.extraEnv.COLOUR=blue",), flags=OPTIONS.flags, health_timeout=5
)


@dataclass
class Cluster:
    """The stand-in cluster's state file, and the env that points helm and kubectl at it."""

    state_file: Path
    env: dict[str, str]
    events: list[str] = field(default_factory=list)  # slot and health-check events, in order

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())

    def set(self, **changes: Any) -> None:
        self.state_file.write_text(json.dumps({**self.state(), **changes}))

    def verbs(self) -> list[str]:
        """Every helm and kubectl call so far, as `tool verb` (each kubectl call names the context)."""
        verbs = []
        for tool, *args in self.state()["calls"]:
            if tool == "kubectl":
                assert args[:2] == ["--context", "fake-h-staging"], args
                args = args[2:]
            verbs.append(f"{tool} {args[0]}")
        return verbs

    def statuses(self, release: str = "h-staging") -> list[str]:
        return [r["status"] for r in self.state()["releases"].get(release, [])]

    @contextlib.contextmanager
    def cluster_access(self, hub: Any, env_name: str) -> Iterator[SimpleNamespace]:
        """The cluster's credentials (``hubploy.deploy.Credentials``): its env, no login for registries."""
        yield SimpleNamespace(
            kubeconfig=self.state_file.parent / "kubeconfig", env=self.env, context="fake-{namespace}"
        )

    def registry(self, hub: Any, host: str) -> None:
        return None

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        self.events.append(f"slot entered after {len(self.state()['calls'])} calls")
        yield
        self.events.append(f"slot left after {len(self.state()['calls'])} calls")


def _tool(bin_dir: Path, name: str) -> Path:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{FAKE_CLUSTER}' {name} \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state_file = tmp_path / "cluster.json"
    state_file.write_text(json.dumps({"releases": {}, "namespaces": [], "calls": []}))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "FAKE_CLUSTER_STATE": str(state_file),
        "HELM_EXECUTABLE": str(_tool(bin_dir, "helm")),
        "KUBECTL_EXECUTABLE": str(_tool(bin_dir, "kubectl")),
    }
    return Cluster(state_file, env)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The images the stand-in registry has: reference -> digest."""
    images = {f"{HUB_IMAGE}:1": "sha256:1"}
    monkeypatch.setattr(
        deploy_images, "manifest_digest", lambda name, tag, creds, **kwargs: images.get(f"{name}:{tag}")
    )
    return images


@pytest.fixture
def health(monkeypatch: pytest.MonkeyPatch, cluster: Cluster) -> list[bool]:
    """Whether the next health checks pass (the last answer repeats); each check is a cluster event."""
    answers = [True]

    def check_health(hub: Any, env_name: str, *, kube_context: str | None = None, **kwargs: Any) -> str:
        cluster.events.append(f"health checked in {kube_context}")
        healthy = answers.pop(0) if len(answers) > 1 else answers[0]
        if not healthy:
            raise HealthCheckError("the hub did not answer as JupyterHub within 5 s")
        return "5.3.0"

    monkeypatch.setattr(deploy_health, "check_health", check_health)
    return answers


@pytest.fixture
def run_deploy(
    deployment_repo: Callable[..., Path], cluster: Cluster, registry: dict[str, str], health: list[bool]
) -> Callable[..., DeployResult]:
    """Deploy hub ``h`` to staging; every result handed to on_result is kept in ``run_deploy.results``."""
    image = f"{{name: {HUB_IMAGE}, tag: '1'}}"
    root = deployment_repo(
        {
            "deployments/h/hubploy.yaml": "environments: [staging]\n",
            "deployments/h/config/common.yaml": f"jupyterhub: {{hub: {{image: {image}}}}}\n",
        }
    )
    results: list[DeployResult] = []

    def run(options: DeployOptions = OPTIONS) -> DeployResult:
        return deploy(
            load_repo(root),
            "h",
            "staging",
            options=options,
            base_env=cluster.env,
            credentials=cluster,
            cluster_slot=cluster.slot,
            on_result=results.append,
        )

    run.results = results  # type: ignore[attr-defined]
    run.root = root  # type: ignore[attr-defined]
    return run


def test_first_install_then_unchanged_then_redeploy(
    run_deploy: Callable[..., DeployResult], cluster: Cluster
) -> None:
    first = run_deploy()
    assert (first.outcome, first.revision_before, first.revision_after, first.message) == (
        Outcome.deployed,
        None,
        1,
        "",
    )
    assert first.summary()["result"] is Outcome.deployed and "outcome" not in first.summary()
    assert run_deploy.results == [first]  # type: ignore[attr-defined]
    assert [i.digest for i in first.images] == ["sha256:1"] and first.hub_version == "5.3.0"
    assert cluster.state()["namespaces"] == ["h-staging"]

    again = run_deploy()
    assert (again.outcome, again.revision_before, again.revision_after) == (Outcome.unchanged, 1, 1)
    assert "nothing to upgrade" in again.message and cluster.statuses() == ["deployed"]
    assert cluster.events[-1] == "health checked in fake-h-staging"

    forced = run_deploy(DeployOptions(flags=OPTIONS.flags, skip_unchanged=False))
    assert (forced.outcome, forced.revision_before, forced.revision_after) == (Outcome.deployed, 1, 2)


def test_the_cluster_slot_is_left_before_the_health_check(
    run_deploy: Callable[..., DeployResult], cluster: Cluster
) -> None:
    run_deploy()
    calls = len(cluster.state()["calls"])
    assert cluster.events == [
        "slot entered after 1 calls",
        f"slot left after {calls} calls",
        "health checked in fake-h-staging",
    ]
    assert cluster.verbs()[:1] == ["helm version"]  # the only call outside the slot


def test_a_missing_image_is_refused_before_the_cluster_changes(
    run_deploy: Callable[..., DeployResult], cluster: Cluster, registry: dict[str, str]
) -> None:
    registry.clear()
    with pytest.raises(DeployError, match=rf"refusing to deploy: {HUB_IMAGE}:1 \(at jupyterhub.hub.image\)"):
        run_deploy()
    [refused] = run_deploy.results  # type: ignore[attr-defined]
    assert refused.outcome is Outcome.refused and "refusing to deploy" in refused.message
    assert cluster.verbs() == ["helm version", "helm history"] and cluster.state()["namespaces"] == []


def test_an_image_left_out_by_image_check_is_not_looked_up(
    run_deploy: Callable[..., DeployResult], registry: dict[str, str]
) -> None:
    registry.clear()  # the image is not there: only a lookup would refuse the deploy
    hub_file = run_deploy.root / "deployments" / "h" / "hubploy.yaml"  # type: ignore[attr-defined]
    hub_file.write_text(hub_file.read_text() + "image_check: {skip: [registry.example.org]}\n")
    done = run_deploy()
    assert done.outcome is Outcome.deployed
    assert [(i.reference, i.digest, i.checked) for i in done.images] == [(f"{HUB_IMAGE}:1", None, False)]


def test_a_history_error_is_raised_before_an_image_refusal(
    run_deploy: Callable[..., DeployResult], cluster: Cluster, registry: dict[str, str]
) -> None:
    """The deploy is still refused (nothing changed), but the error reported is the cluster's."""
    registry.clear()
    cluster.set(api="unreachable")
    with pytest.raises(DeployError, match="cannot read the history of release h-staging: .*refused"):
        run_deploy()
    assert run_deploy.results[-1].outcome is Outcome.refused  # type: ignore[attr-defined]
    assert cluster.verbs() == ["helm version", "helm history"]


def test_a_chart_that_does_not_render_is_refused_and_its_new_namespace_removed(
    run_deploy: Callable[..., DeployResult], cluster: Cluster
) -> None:
    cluster.set(upgrade="render-error")
    with pytest.raises(DeployError, match="nothing was changed: the chart does not render.*broken.yaml"):
        run_deploy()
    assert run_deploy.results[-1].outcome is Outcome.refused  # type: ignore[attr-defined]
    assert "kubectl create" in cluster.verbs() and cluster.verbs()[-1] == "kubectl delete"
    assert cluster.state()["namespaces"] == [] and "h-staging" not in cluster.state()["releases"]


NOT_READY = [
    {
        "kind": "Pod",
        "metadata": {"name": "hub-1", "labels": {"release": "h-staging", "component": "hub"}},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {
                    "name": "hub",
                    "ready": False,
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }
            ],
        },
    },
    {
        "kind": "Pod",
        "metadata": {"name": "jupyter-ann", "labels": {"component": "singleuser-server"}},
        "status": {"phase": "Pending"},
    },
    {"kind": "PersistentVolumeClaim", "metadata": {"name": "hub-db-dir"}, "status": {"phase": "Pending"}},
    {"kind": "Service", "metadata": {"name": "proxy-public"}, "spec": {"type": "LoadBalancer"}, "status": {}},
    {
        "kind": "Pod",
        "metadata": {"name": "other-1"},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "app",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 2, "reason": "Error"}},
                }
            ],
        },
    },
    {
        "kind": "Pod",
        "metadata": {"name": "proxy-1", "labels": {"release": "h-staging"}},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    },
]
PROVISIONING = {
    "type": "Warning",
    "reason": "ProvisioningFailed",
    "lastTimestamp": "2026-01-01T00:00:00Z",
    "message": 'storageclass.storage.k8s.io "nope" not found',
    "involvedObject": {"kind": "PersistentVolumeClaim", "name": "hub-db-dir"},
}


def test_an_upgrade_that_times_out_is_told_as_a_timeout_and_rolled_back(
    run_deploy: Callable[..., DeployResult], cluster: Cluster
) -> None:
    run_deploy()
    cluster.set(
        upgrade="not-ready",
        objects=NOT_READY,
        events=[PROVISIONING],
        logs={
            "hub-1": "Traceback (most recent call last):\n    ValueError: boom from extraConfig\n",
            "other-1": "connecting with token s3cret-hub-token-1234",
        },
    )
    register_secret("s3cret-hub-token-1234")  # what a deploy registers from its decrypted secrets
    with pytest.raises(DeployError) as failed:
        run_deploy(CHANGED)
    message = failed.value.message
    assert message.startswith(
        "helm upgrade of h-staging timed out after 60s waiting for the release "
        "to be ready (rolled back to revision 1's configuration as revision 3, which "
        "is serving): not ready: "
    ), message
    assert (
        "PersistentVolumeClaim hub-db-dir is Pending (ProvisioningFailed: storageclass.storage.k8s.io "
        '"nope" not found)'
    ) in message
    assert (
        "Pod hub-1 (container hub: CrashLoopBackOff, exit code 1, 4 restarts, last log line: "
        "ValueError: boom from extraConfig)"
    ) in message
    assert "Service proxy-public has no external address" in message
    assert "jupyter-ann" not in message and "proxy-1" not in message  # a user pod, a ready pod
    assert (
        "other-1 (container app: Error, exit code 2, last log line: connecting with token ********)"
        in message
    )
    assert "does not render" not in message
    rolled = run_deploy.results[-1]  # type: ignore[attr-defined]
    assert (rolled.outcome, rolled.revision_before, rolled.revision_after) == (Outcome.rolled_back, 1, 3)
    assert cluster.statuses() == ["superseded", "failed", "deployed"]
    assert cluster.state()["namespaces"] == ["h-staging"]
    verbs = cluster.verbs()  # what was not ready is read before the rollback replaces it
    assert verbs.index("kubectl get") < verbs.index("kubectl logs") < verbs.index("helm rollback")
    upgrade_argv = next(c for c in cluster.state()["calls"] if c[:2] == ["helm", "upgrade"])
    assert "--atomic" not in upgrade_argv  # hubploy rolls back itself, after reading what was not ready
    rollback_argv = next(c for c in cluster.state()["calls"] if c[:2] == ["helm", "rollback"])
    assert rollback_argv[rollback_argv.index("--timeout") + 1] == "5m"  # not the failed upgrade's 60s


@pytest.mark.parametrize(
    "duration,floor,longer",
    [
        ("15s", "5m", "5m"),
        ("30m", "5m", "30m"),
        ("1h5m", "5m", "1h5m"),
        ("290s", "5m", "5m"),
        ("not-a-duration", "5m", "not-a-duration"),
    ],
)
def test_a_rollback_waits_at_least_its_floor(duration: str, floor: str, longer: str) -> None:
    assert at_least(duration, floor) == longer


def test_a_failed_first_install_without_rollback_fails(
    run_deploy: Callable[..., DeployResult], cluster: Cluster
) -> None:
    cluster.set(upgrade="not-ready")
    with pytest.raises(DeployError, match="no rollback was requested"):
        run_deploy(DeployOptions(flags=UpgradeFlags(timeout="10s", atomic=False), health_check=False))
    assert run_deploy.results[-1].outcome is Outcome.failed  # type: ignore[attr-defined]
    assert cluster.statuses() == ["failed"] and cluster.state()["namespaces"] == ["h-staging"]


def test_a_failed_health_check_is_rolled_back(
    run_deploy: Callable[..., DeployResult], cluster: Cluster, health: list[bool]
) -> None:
    run_deploy()
    health[:] = [False]
    with pytest.raises(HealthCheckError, match="health check failed, rolled back to revision 1"):
        run_deploy(CHANGED)
    rolled = run_deploy.results[-1]  # type: ignore[attr-defined]
    assert (rolled.outcome, rolled.revision_before, rolled.revision_after) == (Outcome.rolled_back, 1, 3)
    assert cluster.verbs()[-2:] == ["helm rollback", "helm history"]
    assert cluster.statuses() == ["superseded", "superseded", "deployed"]


def test_a_failed_health_check_after_a_first_install_removes_it(
    run_deploy: Callable[..., DeployResult], cluster: Cluster, health: list[bool]
) -> None:
    health[:] = [False]
    with pytest.raises(HealthCheckError, match="on the first install, which was removed"):
        run_deploy()
    failed = run_deploy.results[-1]  # type: ignore[attr-defined]
    assert (failed.outcome, failed.revision_after) == (Outcome.failed, None)
    assert "h-staging" not in cluster.state()["releases"]


def test_a_rollback_that_fails_too_fails_the_deploy(
    run_deploy: Callable[..., DeployResult], cluster: Cluster, health: list[bool]
) -> None:
    run_deploy()
    health[:] = [False]
    cluster.set(rollback="fail")
    with pytest.raises(DeployError, match="the rollback to revision 1 failed too") as raised:
        run_deploy(CHANGED)
    assert raised.value.hint == "roll back by hand: helm rollback h-staging 1 -n h-staging"
    assert run_deploy.results[-1].outcome is Outcome.failed  # type: ignore[attr-defined]


def test_an_unhealthy_unchanged_release_fails_and_is_left_alone(
    run_deploy: Callable[..., DeployResult], cluster: Cluster, health: list[bool]
) -> None:
    run_deploy()
    health[:] = [False]
    with pytest.raises(HealthCheckError, match="nothing was changed or rolled back"):
        run_deploy()
    assert run_deploy.results[-1].outcome is Outcome.failed  # type: ignore[attr-defined]
    assert cluster.statuses() == ["deployed"] and "helm rollback" not in cluster.verbs()


def test_a_dry_run_changes_nothing_and_shows_no_secret(
    run_deploy: Callable[..., DeployResult], cluster: Cluster
) -> None:
    dry = run_deploy(DeployOptions(flags=UpgradeFlags(dry_run=True)))
    assert dry.outcome is Outcome.dry_run and dry.rendered is not None
    assert "kind: Secret" in dry.rendered and "c2VjcmV0" not in dry.rendered
    assert cluster.verbs() == ["helm version", "helm upgrade"] and cluster.state()["releases"] == {}
    assert cluster.events == []  # neither a cluster slot nor a health check


def test_rollback_hub_holds_the_cluster_slot_only_around_helm(
    run_deploy: Callable[..., DeployResult], cluster: Cluster
) -> None:
    run_deploy()
    run_deploy(CHANGED)
    cluster.events.clear()
    before = len(cluster.state()["calls"])
    results: list[DeployResult] = []
    repo = load_repo(run_deploy.root)  # type: ignore[attr-defined]
    rolled = rollback_hub(
        repo,
        "h",
        "staging",
        base_env=cluster.env,
        credentials=cluster,
        cluster_slot=cluster.slot,
        on_result=results.append,
    )
    assert results == [rolled]
    assert (rolled.outcome, rolled.revision_before, rolled.revision_after, rolled.hub_version) == (
        Outcome.rolled_back,
        2,
        3,
        "5.3.0",
    )
    assert rolled.message == "rolled back to the configuration of revision 1"
    assert cluster.verbs()[before:] == ["helm history", "helm rollback", "helm history"]
    assert cluster.events == [
        f"slot entered after {before} calls",
        f"slot left after {before + 3} calls",
        "health checked in fake-h-staging",
    ]


def test_rollback_to_a_revision_that_does_not_exist_fails(
    run_deploy: Callable[..., DeployResult], cluster: Cluster
) -> None:
    run_deploy()
    results: list[DeployResult] = []
    with pytest.raises(DeployError, match="release h-staging has no revision 9 to roll back to"):
        rollback_hub(
            load_repo(run_deploy.root),
            "h",
            "staging",
            revision=9,  # type: ignore[attr-defined]
            base_env=cluster.env,
            credentials=cluster,
            on_result=results.append,
        )
    assert [r.outcome for r in results] == [Outcome.failed]
    assert "helm rollback" not in cluster.verbs()


def test_the_outcome_is_set_in_one_place() -> None:
    """Only ``settle`` assigns a result's outcome; the steps return an Ending."""
    package = Path(hubploy.deploy.__file__).parent
    assigned = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AugAssign | ast.AnnAssign)
                else []
            )
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Attribute) and leaf.attr == "outcome":
                        assigned.append(f"{path.name}:{node.lineno}")
    assert len(assigned) == 1 and assigned[0].startswith("model.py:"), assigned


@pytest.fixture
def cluster_env(monkeypatch: pytest.MonkeyPatch, cluster: Cluster, tmp_path: Path) -> None:
    """This process's environment points at the stand-in cluster, as a worker's or a shell's would."""
    for key, value in cluster.env.items():
        monkeypatch.setenv(key, value)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))  # the ambient kubeconfig of a hub without `cluster:`


def test_a_cli_deploy_validates_each_file_once(
    run_deploy: Callable[..., DeployResult],
    cluster_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root: Path = run_deploy.root  # type: ignore[attr-defined]
    (root / "hubploy-repo.yaml").write_text("health_check_timeout: 5\n")
    monkeypatch.chdir(root)
    assert main(["deploy", "h", "hub", "staging"]) == 0
    assert "h-staging: deployed (revision none -> 1" in capsys.readouterr().err
    validated = [REPOS.loads[root / "hubploy-repo.yaml"], REPOS.loads[root / "deployments/h/hubploy.yaml"]]
    assert validated == [1, 1]


@pytest.mark.prefect
def test_a_fleet_deploy_validates_each_hubploy_yaml_once(
    prefect_api: str, cluster_env: None, run_deploy: Callable[..., DeployResult]
) -> None:
    from flows.deploy_hubs import deploy_hubs

    root: Path = run_deploy.root  # type: ignore[attr-defined]
    shutil.copytree(root / "deployments" / "h", root / "deployments" / "g")
    records = deploy_hubs(["h", "g"], "staging", str(root), trigger="test")
    assert {hub: (r["result"], r["revision_after"]) for hub, r in records.items()} == {
        "h": (Outcome.deployed, 1),
        "g": (Outcome.deployed, 1),
    }
    assert [REPOS.loads[root / "deployments" / hub / "hubploy.yaml"] for hub in ("h", "g")] == [1, 1]


@pytest.mark.prefect
def test_the_rollback_task_holds_the_cluster_slot_only_around_helm(
    prefect_api: str,
    run_deploy: Callable[..., DeployResult],
    cluster: Cluster,
    cluster_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.tasks import locks
    from flows.tasks.deploy import rollback_hub as rollback_task

    real_slot = locks.cluster_slot

    @contextlib.contextmanager
    def recorded_slot(*args: Any) -> Iterator[None]:
        with real_slot(*args), cluster.slot():
            yield

    monkeypatch.setattr(locks, "cluster_slot", recorded_slot)
    run_deploy()
    run_deploy(CHANGED)
    cluster.events.clear()
    before = len(cluster.state()["calls"])
    record = rollback_task("h", "staging", str(run_deploy.root), trigger="test")  # type: ignore[attr-defined]
    assert (record["result"], record["revision_before"], record["revision_after"]) == (
        Outcome.rolled_back,
        2,
        3,
    )
    assert cluster.events == [
        f"slot entered after {before} calls",
        f"slot left after {before + 3} calls",
        "health checked in None",
    ]
