"""When a decision in the approval form counts (flows.approval.refusal): it names the commit the run
promotes, its approver is listed under `approvers:` when that is set, and an approval comes outside a
freeze window. The form's default is reject. `approvers:` is validated at load like every key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.approval import Approval, Decision, outcome, refusal, refusal_in
from hubploy.config.repo_settings import Approvers, FreezeWindow, RepoSettings
from hubploy.errors import ApprovalError, ConfigError
from hubploy.layout import REPOS, load_repo

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def approval(decision: Decision = Decision.approve, sha: str = SHA, approver: str = "alice") -> Approval:
    return Approval(decision=decision, sha=sha, reason="r", approver=approver)


def test_the_form_defaults_to_reject_and_carries_the_commit_it_shows() -> None:
    form = Approval.for_commit(SHA).with_initial_data(description="## Promote?")
    schema = form.model_json_schema()
    assert schema["properties"]["decision"]["default"] == "reject"
    assert schema["properties"]["sha"]["default"] == SHA
    assert "names another commit is refused" in schema["properties"]["sha"]["description"]
    assert all(schema["properties"][name]["description"] for name in ("decision", "reason", "approver"))
    assert Approval().decision is Decision.reject


def test_a_decision_naming_another_commit_is_refused() -> None:
    settings = RepoSettings()
    assert refusal(approval(), SHA, approvers=Approvers(), settings=settings) is None
    assert refusal(approval(sha=SHA.upper() + " "), SHA, approvers=Approvers(), settings=settings) is None
    for named in (OTHER, SHA[:12], ""):
        for decision in Decision:
            why = refusal(approval(decision, sha=named), SHA, approvers=Approvers(), settings=settings)
            assert why == f"it names commit {named[:12] or '(none)'}, but this run promotes {SHA[:12]}"


def test_listed_approvers_only_when_the_list_is_set() -> None:
    settings = RepoSettings()
    listed = Approvers(prod=["alice@example.org", "Bob"])
    assert refusal(approval(approver="anyone"), SHA, approvers=Approvers(), settings=settings) is None
    for name in ("alice@example.org", " ALICE@example.org ", "bob"):
        assert refusal(approval(approver=name), SHA, approvers=listed, settings=settings) is None
    assert refusal(approval(approver="mallory"), SHA, approvers=listed, settings=settings) == (
        "'mallory' may not decide prod: approvers.prod in hubploy-repo.yaml lists alice@example.org, Bob"
    )
    assert refusal(approval(Decision.reject, approver="  "), SHA, approvers=listed, settings=settings) == (
        "an approval without a name may not decide prod: approvers.prod in hubploy-repo.yaml lists "
        "alice@example.org, Bob"
    )
    with pytest.raises(ApprovalError, match="hint: give your name as listed"):
        listed.check("prod", "eve")
    listed.check("staging", "eve")  # no approval of staging, so no list


def test_a_freeze_refuses_approvals_but_not_rejections() -> None:
    now = datetime.now(UTC)
    window = FreezeWindow(start=f"{now.year - 1}-01-01", end=f"{now.year + 1}-01-01", reason="exams")
    settings = RepoSettings(freeze_windows=[window])
    why = refusal(approval(), SHA, approvers=Approvers(), settings=settings)
    assert why is not None and why.startswith("prod is frozen (exams) until")
    assert refusal(approval(Decision.reject), SHA, approvers=Approvers(), settings=settings) is None


def test_a_verdict_says_why_a_decision_was_refused() -> None:
    assert refusal_in(f"approve of {SHA[:12]} by alice: {outcome(None)}") is None
    why = "'mallory' may not decide prod: approvers.prod in hubploy-repo.yaml lists alice"
    assert refusal_in(f"approve of {SHA[:12]} by mallory: {outcome(why)}") == why


def test_the_recorded_approver_is_the_checked_one() -> None:
    assert approval(approver="  alice ").who == "alice"
    assert approval(approver="").who == "unknown"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("approvers:\n  staging: [alice]\n", ["approvers.staging: unknown key"]),
        ("approvers:\n  prod: []\n", ["approvers.prod: List should have at least 1 item"]),
        (
            "approvers:\n  prod: [alice, ' ']\n",
            ["approvers.prod[1]: String should have at least 1 character"],
        ),
        ("approvers:\n  prod: alice\n", ["approvers.prod: Input should be a valid list"]),
        (
            "approvers:\n  staging: [a]\n  prod: []\n",
            ["approvers.staging: unknown key", "approvers.prod: List should have at least 1 item"],
        ),
    ],
)
def test_bad_approvers_are_reported_with_file_key_and_line(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "Chart.yaml").write_text("apiVersion: v2\nname: hub\nversion: 0.1.0\n")
    (tmp_path / "deployments").mkdir()
    (tmp_path / "hubploy-repo.yaml").write_text("chart: hub\n" + text)
    REPOS.clear()
    with pytest.raises(ConfigError) as raised:
        load_repo(tmp_path)
    found = [issue.format(tmp_path) for issue in raised.value.issues]
    assert len(found) == len(expected), found
    for issue, message in zip(found, expected, strict=True):
        assert issue.startswith("hubploy-repo.yaml:") and message in issue, found
        assert int(issue.split(":")[1]) >= 2  # the line of the key


def test_good_approvers_load() -> None:
    settings = RepoSettings.model_validate({"approvers": {"prod": [" alice ", "bob"]}})
    assert settings.approvers.allowed("prod") == ["alice", "bob"]
    assert RepoSettings().approvers.allowed("prod") is None
