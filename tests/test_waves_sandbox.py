"""Progressive delivery on the sandbox, with the Z2JH-shaped chart and a real Prefect server: a fleet of four
hubs in three waves (canary: a1; middle: b1, b2; remaining: c1), checked with the spawn smoke test (the hub
spawns with KubeSpawner, the sandbox's agent runs jupyterhub-singleuser as the user pod, CHP routes to it).

A change that breaks b2 stops the line in wave 2: wave 1 upgraded and verified, b2 rolled back, c1 never
touched, the run ``WaveFailed``, a notice sent. Once with a hub config that makes JupyterHub exit, once with
a user server that cannot start (the hub healthy, the spawn failing) after a direct deploy left b2 on an
unverified revision: the rollout returns b2 to its last verified release.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.sandbox import Sandbox
from helpers.cli import run_cli
from helpers.example_repo import copy_example_repo
from helpers.receiver import Receiver, http_receiver
from test_deploy_sandbox import GIT, base_image

from hubploy_sandbox.images import ensure_base_image

pytestmark = [pytest.mark.sandbox, pytest.mark.prefect]

WAVES = {"a1": "canary", "b1": "middle", "b2": "middle", "c1": "remaining"}
SMOKE = {
    "services": {"smoke": {}},
    "loadRoles": {
        "smoke": {"services": ["smoke"], "scopes": ["admin:users", "admin:servers", "access:servers"]}
    },
}
BROKEN_HUB = {"extraConfig": {"99-broken": "raise SystemExit('broken on purpose')"}}


@dataclass
class Fleet:
    root: Path
    prefix: str
    sandbox: Sandbox
    receiver: Receiver

    def hub(self, short: str) -> str:
        return f"{self.prefix}{short}"

    def release(self, short: str) -> str:
        return f"{self.hub(short)}-staging"

    def common(self, short: str) -> Path:
        return self.root / "deployments" / self.hub(short) / "config/common.yaml"

    def set_values(
        self,
        short: str,
        hub: dict[str, Any] | None = None,
        singleuser: dict[str, Any] | None = None,
        colour: str | None = None,
    ) -> None:
        """Replace the hub's common.yaml: the smoke service, plus ``hub`` and ``singleuser`` values."""
        # a loaded test machine can take JupyterHub's default 30 s to start a user server
        config = {"JupyterHub": {"authenticator_class": "dummy"}, "Spawner": {"http_timeout": 120}}
        extra_env = {"extraEnv": {"COLOUR": colour}} if colour else {}
        values = {
            "jupyterhub": {
                "hub": {"config": config, **SMOKE, **extra_env, **(hub or {})},
                **({"singleuser": singleuser} if singleuser else {}),
            }
        }
        self.common(short).write_text(yaml.safe_dump(values))

    def commit(self, message: str) -> None:
        subprocess.run([*GIT, "add", "-A"], cwd=self.root, check=True)
        subprocess.run([*GIT, "commit", "-qm", message], cwd=self.root, check=True)

    def history(self, short: str) -> list[dict[str, Any]]:
        out = self.sandbox.run(
            [
                self.sandbox.env["HELM_EXECUTABLE"],
                "history",
                self.release(short),
                "-n",
                self.release(short),
                "-o",
                "json",
            ],
            check=False,
        )
        return json.loads(out.stdout) if out.returncode == 0 else []

    def statuses(self, short: str) -> list[tuple[int, str]]:
        return [(r["revision"], r["status"]) for r in self.history(short)]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=self.root, env={**self.sandbox.env, "COLUMNS": "200"})

    def rollout(self, **options: Any) -> Any:
        from flows.rollout import rollout

        return rollout("staging", repo_path=str(self.root), timeout="60s", return_state=True, **options)


def wave_runs(state: Any) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    return sorted(run.name for run in runs)


@pytest.fixture(scope="module")
def fleet(sandbox: Sandbox, prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Four hubs in three waves, rolled out once (all healthy and verified), spawn smoke test on, notices to
    a receiver on loopback."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    ensure_base_image(sandbox.paths, sandbox.env)
    prefix = f"w{secrets.token_hex(2)}"
    root = copy_example_repo(
        tmp_path_factory.mktemp("fleet") / "repo",
        dict.fromkeys((f"{prefix}{short}" for short in WAVES), "minimal"),
        settings_extra=f"""health_check_timeout: 30
rollout:
  waves:
    - {{name: canary, hubs: ["{prefix}a*"], soak: 2s}}
    - {{name: middle, hubs: ["{prefix}b*"], soak: 2s}}
  smoke_test: spawn
  spawn: {{service: smoke, timeout: 120}}
notifications:
  - block: custom-webhook/{prefix}-ops
    events: [wave_failed]
""",
    )
    with http_receiver() as receiver, pytest.MonkeyPatch.context() as patch:
        CustomWebhookNotificationBlock(
            name="ops", url=f"{receiver.url}/ops", json_data={"text": "{{subject}}: {{body}}"}
        ).save(f"{prefix}-ops")
        for key, value in sandbox.env.items():
            patch.setenv(key, value)  # the tasks take their child env from the process, as a worker would
        subprocess.run(["git", "init", "-q", "-b", "staging", str(root)], check=True)
        fleet = Fleet(root, prefix, sandbox, receiver)
        for short in WAVES:
            hub_dir = root / "deployments" / fleet.hub(short)
            (hub_dir / "hubploy.yaml").write_text(
                yaml.safe_dump(
                    {"images": {"images": [{"name": base_image(sandbox)}]}, "environments": ["staging"]}
                )
            )
            fleet.set_values(short)
        fleet.commit("four hubs")
        try:
            first = fleet.rollout()
            assert first.is_completed(), first.message
            assert first.message == "staging: 4 deployed"
            for short in WAVES:
                assert "verified by hubploy" in fleet.history(short)[-1]["description"], short
            yield fleet
        finally:
            for short in WAVES:
                sandbox.run(
                    [
                        sandbox.env["HELM_EXECUTABLE"],
                        "uninstall",
                        fleet.release(short),
                        "-n",
                        fleet.release(short),
                    ],
                    check=False,
                )
                sandbox.kubectl(
                    "delete",
                    "namespace",
                    fleet.release(short),
                    "--wait=false",
                    "--ignore-not-found",
                    check=False,
                )
            shutil.rmtree(root, ignore_errors=True)


def test_a_hub_config_that_stops_jupyterhub_in_wave_two_stops_the_line(fleet: Fleet) -> None:
    before = {short: len(fleet.history(short)) for short in WAVES}
    for short in WAVES:
        fleet.set_values(short, colour="blue", hub=BROKEN_HUB if short == "b2" else None)
    fleet.commit("blue everywhere; b2's hub config raises")
    plan = fleet.cli("plan", "--since", "HEAD~1")
    rows = [
        [cell.strip() for cell in line.split("│")[1:3]]
        for line in plan.stdout.splitlines()
        if fleet.prefix in line
    ]
    assert rows == [
        ["1. canary", fleet.hub("a1")],
        ["2. middle", fleet.hub("b1")],
        ["", fleet.hub("b2")],
        ["3. remaining", fleet.hub("c1")],
    ], plan.stdout

    # helm waits this long for b2's hub, which never gets ready; the others' get ready in it on a busy machine
    done = fleet.cli("rollout", "staging", "--timeout", "90s")
    assert done.returncode == 1, done.stdout + done.stderr
    progress = done.stdout
    assert f"rolled-back: {fleet.hub('b1')}" not in done.stderr, done.stdout + done.stderr
    assert f"wave 1. canary: {fleet.hub('a1')}: verify completed" in progress
    assert f"wave 2. middle: {fleet.hub('b2')}: deploy failed" in progress
    assert "wave 3" not in progress
    assert (
        "WaveFailed: wave middle (2 of 3) stopped the staging rollout. rolled-back: "
        f"{fleet.hub('b2')} (helm upgrade of {fleet.release('b2')} timed out after 90s"
    ) in done.stderr
    assert f"never deployed: {fleet.hub('c1')} (remaining)" in done.stderr

    a1 = fleet.history("a1")
    assert len(a1) == before["a1"] + 1 and a1[-1]["status"] == "deployed"
    assert "verified by hubploy" in a1[-1]["description"] and "(wave canary)" in a1[-1]["description"]
    b1 = fleet.history("b1")
    assert len(b1) == before["b1"] + 1 and b1[-1]["status"] == "deployed"
    assert "verified" not in b1[-1]["description"]  # its wave stopped the line: never soaked nor verified
    b2 = fleet.history("b2")[before["b2"] :]
    assert [r["status"] for r in b2] == ["failed", "deployed"]
    assert b2[-1]["description"] == f"Rollback to {before['b2']}"
    assert len(fleet.history("c1")) == before["c1"]
    assert fleet.sandbox.hub_version(fleet.release("b2"))  # users reach the rolled-back hub
    assert "wave stopped the line" in fleet.receiver.wait_for(f"rolled-back: {fleet.hub('b2')}").body

    untouched = fleet.cli("diff", fleet.hub("c1"), "staging")
    assert untouched.returncode == 0, untouched.stderr
    assert re.search(r"│ Deployment/hub\s+│ changed", untouched.stdout), untouched.stdout
    assert re.search(r"^\+\s+value: blue$", untouched.stdout, re.MULTILINE), untouched.stdout


def test_a_hub_whose_users_cannot_start_servers_returns_to_its_last_verified_release(fleet: Fleet) -> None:
    verified = max(r["revision"] for r in fleet.history("b2") if "verified by hubploy" in r["description"])
    fleet.set_values("b2", colour="green")
    fleet.commit("b2 fixed and green")
    direct = fleet.cli("deploy", fleet.hub("b2"), "hub", "staging", "--timeout", "60s")
    assert direct.returncode == 0, direct.stderr
    assert "spawn smoke test of" in direct.stderr
    assert "passed: server of hubploy-smoke started in" in direct.stderr
    unverified = fleet.history("b2")[-1]["revision"]

    # KubeSpawner gives up on the pod after singleuser.startTimeout, and the hub reports the spawn failed
    fleet.set_values("b2", colour="green", singleuser={"cmd": "no-such-program", "startTimeout": 20})
    fleet.commit("b2's user servers run a program that does not exist")
    others = {short: len(fleet.history(short)) for short in ("a1", "b1", "c1")}
    state = fleet.rollout(wave="middle")
    assert state.name == "WaveFailed", state.message
    assert wave_runs(state) == ["wave-2-middle-staging"]
    assert f"rolled-back: {fleet.hub('b2')} (" in state.message
    assert "spawn smoke test: the server of hubploy-smoke failed to start: Spawn failed:" in state.message
    assert f"{fleet.hub('b2')}: returned to its last verified revision {verified}" in state.message

    history = fleet.history("b2")
    descriptions = [r["description"] for r in history if r["revision"] > unverified]
    assert descriptions[0].startswith("hubploy config sha256:") and "verified" not in descriptions[0]
    assert descriptions[1:] == [f"Rollback to {unverified}", f"Rollback to {verified}"]
    assert history[-1]["status"] == "deployed"
    # b1 unchanged, the others not in the wave
    assert {short: len(fleet.history(short)) for short in others} == others

    again = fleet.cli("rollback", fleet.hub("b2"), "staging", "--to-verified")
    assert again.returncode == 0, again.stderr
    assert (
        f"{fleet.release('b2')} already runs its last verified release (revision {verified})" in again.stdout
    )
    back = fleet.cli(
        "rollback", fleet.hub("b2"), "staging", "--revision", str(unverified), "--timeout", "60s"
    )
    assert back.returncode == 0, back.stderr
    assert f"{fleet.release('b2')}: rolled-back (revision {history[-1]['revision']} -> " in back.stdout
    assert fleet.history("b2")[-1]["description"] == f"Rollback to {unverified}"
