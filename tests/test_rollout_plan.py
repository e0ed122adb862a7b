"""Progressive delivery without a cluster: the rollout, approvals and notifications keys of hubploy-repo.yaml
(validated like every other key, with file, key path and line), wave planning, the report a stopped line
gives, the approval count, and `hubploy plan`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT
from helpers.cli import run_cli

from flows.approval import Approval, Decision
from flows.lifecycle import counted_approval
from hubploy.config.repo_settings import Notice, OnFailure, RolloutSettings, SmokeTest, duration_seconds
from hubploy.layout import load_repo
from hubploy.rollout import (
    HubOutcome,
    HubReport,
    RolloutReport,
    WavePlan,
    WaveReport,
    plan_waves,
    select_wave,
    untouched,
)
from hubploy.validate import validate_repo

HUBS = {
    f"deployments/{name}/hubploy.yaml": "environments: [staging, prod]\n"
    for name in ("physics", "chem", "course-a", "course-b", "bio")
}


def issues_of(root: Path) -> list[str]:
    return [issue.format(root) for issue in validate_repo(root)]


def rollout(text: str) -> RolloutSettings:
    import yaml

    return RolloutSettings.model_validate(yaml.safe_load(text))


# ------------------------------------------------------------------ the keys


def test_the_issue_example_loads_with_its_defaults(deployment_repo: Callable[..., Path]) -> None:
    root = deployment_repo(
        {
            **HUBS,
            "hubploy-repo.yaml": """
        rollout:
          waves:
            - name: canary
              hubs: [physics]
              soak: 2m
            - name: rest
              hubs: ["*"]
              max_parallel: 4
          smoke_test: spawn
        approvals: {prod: {required: 2}}
        notifications:
          - block: slack-webhook/hub-ops
            events: [wave_failed]
          - block: custom-webhook/pager
    """,
        }
    )
    assert issues_of(root) == []
    settings = load_repo(root).settings
    assert settings.rollout is not None
    canary, rest = settings.rollout.waves
    assert (canary.name, canary.hubs, canary.soak_seconds, canary.max_parallel) == (
        "canary",
        ["physics"],
        120,
        None,
    )
    assert (rest.soak_seconds, rest.max_parallel) == (0, 4)
    assert settings.rollout.smoke_test is SmokeTest.spawn
    assert settings.rollout.on_failure is OnFailure.rollback
    assert (settings.rollout.spawn.service, settings.rollout.spawn.user) == ("hubploy-smoke", "hubploy-smoke")
    assert settings.approvals.prod.required == 2
    assert settings.notice_blocks(Notice.wave_failed) == ["slack-webhook/hub-ops", "custom-webhook/pager"]
    assert settings.notice_blocks(Notice.approval_waiting) == ["custom-webhook/pager"]


def test_without_the_keys_nothing_changes(deployment_repo: Callable[..., Path]) -> None:
    settings = load_repo(deployment_repo(HUBS)).settings
    assert settings.rollout is None and settings.approvals.prod.required == 1 and settings.notifications == []


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("2m", 120), ("1.5h", 5400), ("0s", 0)])
def test_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds
    assert rollout(f"waves: [{{name: a, hubs: ['*'], soak: {text}}}]").waves[0].soak_seconds == seconds


def test_a_bare_number_of_seconds_is_a_duration() -> None:
    assert rollout("waves: [{name: a, hubs: ['*'], soak: 90}]").waves[0].soak == "90s"


def test_helm_timeout_is_a_duration_with_a_default(deployment_repo: Callable[..., Path]) -> None:
    assert load_repo(deployment_repo(HUBS)).settings.helm_timeout == "10m"
    seconds = deployment_repo({**HUBS, "hubploy-repo.yaml": "helm_timeout: 300\n"})
    assert load_repo(seconds).settings.helm_timeout == "300s"
    root = deployment_repo({**HUBS, "hubploy-repo.yaml": "helm_timeout: soon\n"})
    assert [i for i in issues_of(root) if "helm_timeout" in i] == [
        "hubploy-repo.yaml:1: helm_timeout: 'soon' is not a duration such as 30s, 2m or 1h"
    ]


BAD = """\
rollout:
  waves:
    - name: canary
      hubs: [physcs]
      soak: 2x
    - name: Rest
      hubs: ["*"]
      max_parallel: 0
    - name: empty
      hubs: []
  smoke_test: spwn
  on_failure: nope
  spawn: {user: "Bad User", timeout: 0}
approvals:
  prod: {required: 0}
  staging: {required: 2}
notifications:
  - block: Slack/ops
    events: [wave_failed, bogus]
"""


def test_every_error_with_file_key_and_line(deployment_repo: Callable[..., Path]) -> None:
    root = deployment_repo({**HUBS, "hubploy-repo.yaml": BAD})
    found = issues_of(root)
    expected = [
        "hubploy-repo.yaml:5: rollout.waves[0].soak: '2x' is not a duration such as 30s, 2m or 1h",
        "hubploy-repo.yaml:6: rollout.waves[1].name: wave name 'Rest' must be lowercase letters",
        "hubploy-repo.yaml:8: rollout.waves[1].max_parallel: Input should be greater than or equal to 1",
        "hubploy-repo.yaml:10: rollout.waves[2].hubs: List should have at least 1 item",
        "hubploy-repo.yaml:11: rollout.smoke_test: Input should be 'health' or 'spawn'",
        "hubploy-repo.yaml:12: rollout.on_failure: Input should be 'rollback' or 'keep'",
        "hubploy-repo.yaml:13: rollout.spawn.user: String should match pattern",
        "hubploy-repo.yaml:13: rollout.spawn.timeout: Input should be greater than 0",
        "hubploy-repo.yaml:15: approvals.prod.required: Input should be greater than or equal to 1",
        "hubploy-repo.yaml:16: approvals.staging: unknown key (hint: allowed keys: prod)",
        "hubploy-repo.yaml:18: notifications[0].block: 'Slack/ops' is not <block type slug>/<block name>",
        (
            "hubploy-repo.yaml:19: notifications[0].events[1]: Input should be 'approval_waiting', "
            "'run_failed' "
            "or 'wave_failed'"
        ),
    ]
    for prefix in expected:
        assert any(line.startswith(prefix) for line in found), f"{prefix!r} not in {found}"
    assert len(found) == len(expected), found


def test_problems_that_need_the_repository(deployment_repo: Callable[..., Path]) -> None:
    """A wave naming a hub that does not exist (a typo would deploy it in the last wave), and wave names
    given twice."""
    root = deployment_repo(
        {
            **HUBS,
            "hubploy-repo.yaml": "rollout:\n  waves:\n    - name: canary\n      hubs: [physcs, 'course-*']\n",
        }
    )
    assert issues_of(root) == [
        (
            "hubploy-repo.yaml:4: rollout.waves[0].hubs[0]: wave 'canary' names hub "
            "'physcs', which does not exist (hint: did you mean `physics`?)"
        )
    ]
    root.joinpath("hubploy-repo.yaml").write_text(
        "rollout:\n  waves:\n    - {name: a, hubs: [physics]}\n    - {name: a, hubs: ['*']}\n"
    )
    assert issues_of(root) == ["hubploy-repo.yaml:2: rollout.waves: wave names must be unique: a given twice"]


def test_the_json_schema_has_the_new_keys() -> None:
    result = run_cli("schema", "--repo", cwd=PROJECT_ROOT)
    schema = json.loads(result.stdout)
    assert {"rollout", "approvals", "notifications"} <= set(schema["properties"])
    wave = schema["$defs"]["Wave"]["properties"]
    assert wave["soak"]["anyOf"][1] == {"type": "number", "minimum": 0} and "type" not in wave["soak"]
    assert schema["$defs"]["RolloutSettings"]["properties"]["smoke_test"]["default"] == "health"
    assert all("description" in field for field in schema["$defs"]["RolloutSettings"]["properties"].values())


# ------------------------------------------------------------------ waves

WAVES = rollout("""
waves:
  - {name: canary, hubs: [physics], soak: 2m}
  - {name: courses, hubs: ["course-*", physics], max_parallel: 1}
  - {name: empty, hubs: [nothing-matches-*]}
""")


def test_a_hub_belongs_to_the_first_wave_that_matches_and_the_rest_form_a_last_wave() -> None:
    waves = plan_waves(["physics", "course-b", "course-a", "bio", "chem"], WAVES)
    assert [(w.number, w.name, w.hubs, w.soak_seconds, w.max_parallel) for w in waves] == [
        (1, "canary", ("physics",), 120, None),
        (2, "courses", ("course-a", "course-b"), 0, 1),
        (3, "remaining", ("bio", "chem"), 0, None),
    ]


def test_without_rollout_every_hub_is_in_one_wave() -> None:
    assert [(w.name, w.hubs) for w in plan_waves(["b", "a"], None)] == [("all", ("a", "b"))]
    assert plan_waves([], None) == []


def test_only_one_wave() -> None:
    waves = plan_waves(["physics", "course-a"], WAVES)
    assert [w.name for w in select_wave(waves, "courses")] == ["courses"]
    with pytest.raises(ValueError, match="no wave 'nope' in this rollout; its waves: canary, courses"):
        select_wave(waves, "nope")


def test_a_stopped_line_says_which_hubs_rolled_back_and_which_were_never_deployed() -> None:
    waves = plan_waves(["physics", "course-a", "course-b", "bio"], WAVES)
    first = WaveReport(
        waves[0],
        (
            HubReport(
                "physics", HubOutcome.deployed, revision_before=3, revision_after=4, verified_revision=4
            ),
        ),
    )
    second = WaveReport(
        waves[1],
        (
            HubReport("course-a", HubOutcome.deployed),
            HubReport("course-b", HubOutcome.rolled_back, "hub did not answer"),
        ),
    )
    report = RolloutReport(
        "staging",
        (first, second),
        untouched(waves[2:]),
        staged=True,
        notes=("course-b: already runs its last verified revision 7",),
    )
    assert report.stopped_at is second
    assert report.failure_message() == (
        "wave courses (2 of 3) stopped the staging rollout. rolled-back: course-b (hub did not answer). "
        "never deployed: bio (remaining). course-b: already runs its last verified revision 7"
    )
    assert report.hubs["bio"].outcome is HubOutcome.not_deployed
    rows = report.table()
    assert [(r["wave"], r["hub"], r["result"], r["revision"], r["verified"]) for r in rows] == [
        ("canary", "physics", "deployed", "3 -> 4", "4"),
        ("courses", "course-a", "deployed", "", ""),
        ("courses", "course-b", "rolled-back", "", ""),
        ("remaining", "bio", "not-deployed", "", ""),
    ]
    assert RolloutReport("staging", (first,)).failure_message() == ""


def test_a_wave_of_held_hubs_is_no_failure() -> None:
    wave = WaveReport(WavePlan(1, "all", ("a",)), (HubReport("a", HubOutcome.held, "held by x"),))
    assert wave.failed == [] and not HubOutcome.held.ok


# ------------------------------------------------------------------ approvals


def approve(name: str) -> Approval:
    return Approval(decision=Decision.approve, approver=name)


def test_two_distinct_approvers_are_needed() -> None:
    approvers, note = counted_approval([], approve("alice"), 2)
    assert approvers == ["alice"] and note == "1 of 2 approvals (by alice); waiting for another approver"
    approvers, note = counted_approval(approvers, approve("alice"), 2)
    assert approvers == ["alice"] and note == "alice already approved; another approver is needed"
    approvers, note = counted_approval(approvers, approve(" "), 2)
    assert approvers == ["alice"] and "without a name does not count" in note
    assert counted_approval(approvers, approve("bob"), 2) == (["alice", "bob"], "")


def test_one_approval_is_enough_by_default_even_without_a_name() -> None:
    assert counted_approval([], approve(""), 1) == (["unknown"], "")


# ------------------------------------------------------------------ hubploy plan


def test_plan_shows_the_hubs_a_change_touches_in_their_waves(deployment_repo: Callable[..., Path]) -> None:
    root = deployment_repo(
        {
            **HUBS,
            "hubploy-repo.yaml": "rollout:\n  waves:\n"
            "    - {name: canary, hubs: [physics], soak: 30s}\n"
            "    - {name: courses, hubs: ['course-*']}\n",
        }
    )
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=root, check=True)
    (root / "deployments/course-b/config").mkdir()
    (root / "deployments/course-b/config/common.yaml").write_text("a: 1\n")
    (root / "deployments/physics/hubploy.yaml").write_text("environments: [staging]\n")  # uncommitted: counts
    subprocess.run([*git, "add", "deployments/course-b"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "course-b"], cwd=root, check=True)

    changed = run_cli("plan", "--since", "HEAD~1", cwd=root, env={"COLUMNS": "160"})
    assert changed.returncode == 0, changed.stderr
    lines = [line for line in changed.stdout.splitlines() if "│" in line]
    assert [cells(line)[:3] for line in lines] == [
        ["1. canary", "physics", "deployments/physics/hubploy.yaml"],
        ["2. courses", "course-b", "deployments/course-b/config/common.yaml"],
    ]
    assert "30 s" in lines[0]

    everything = run_cli("plan", cwd=root, env={"COLUMNS": "160"})
    rows = [cells(line)[:2] for line in everything.stdout.splitlines() if "│" in line]
    assert rows == [
        ["1. canary", "physics"],
        ["2. courses", "course-a"],
        ["", "course-b"],
        ["3. remaining", "bio"],
        ["", "chem"],
    ]
    bad = run_cli("plan", "--since", "no-such-ref", cwd=root)
    assert bad.returncode == 1 and bad.stderr.startswith("error: `git diff --name-only no-such-ref`")


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("│").split("│")]


def test_hubploy_diff_shows_each_changed_resource_without_generated_values_or_secrets() -> None:
    from hubploy.cli.fleet_commands import resource_changes
    from hubploy.manifest_diff import generated_fields

    def manifest(token: str, random: str, setting: str) -> str:
        return (
            f"apiVersion: v1\nkind: Secret\nmetadata: {{name: hub}}\nstringData: {{token: {token}}}\n"
            "---\n"
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg}}\n"
            f"data: {{random: {random}, setting: '{setting}'}}\n"
        )

    generated = generated_fields(manifest("t", "r1", "1"), manifest("t", "r2", "1"))  # two renders
    changes = resource_changes(manifest("old-token", "r0", "1"), manifest("new-token", "r3", "2"), generated)
    assert [(c.resource, c.kind) for c in changes] == [
        ("ConfigMap/cfg", "changed"),
        ("Secret/hub", "changed"),
    ]
    config, secret = changes[0].diff, changes[1].diff
    assert "-  setting: '1'" in config and "+  setting: '2'" in config
    assert "random: <generated by the chart>" in config and "r0" not in config and "r3" not in config
    assert "token: sha256:" in secret and "old-token" not in secret and "new-token" not in secret
