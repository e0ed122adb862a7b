"""Holds and notices on a real Prefect server: a hold is a Variable the UI shows and the audit records,
fleets skip a held hub and `hubploy deploy` refuses it; notices reach Prefect notification blocks (a
custom webhook, and an Apprise-based Slack block) over real HTTP on loopback. The fleet runs against the
stand-in cluster of test_deploy_outcomes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import test_deploy_outcomes as outcomes
from helpers.receiver import http_receiver
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from test_deploy_outcomes import Cluster

from hubploy.cli.main import main
from hubploy.config.repo_settings import Notice, RepoSettings
from hubploy.deploy import DeployResult, Outcome

pytestmark = pytest.mark.prefect

# the stand-in cluster of test_deploy_outcomes, its registry and health check, and a deploy of hub h there
cluster, cluster_env, registry = outcomes.cluster, outcomes.cluster_env, outcomes.registry
health, run_deploy = outcomes.health, outcomes.run_deploy


def audit_texts(release: str) -> list[str]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"audit-{release}"]))
        )
    return [str(a.data) for a in found]


def test_a_hold_is_a_variable_on_the_server_and_is_audited(prefect_api: str) -> None:
    from flows.tasks import holds

    release = "heldhub-staging"
    held = holds.hold("heldhub", "staging", release, reason="final exams", by="alice")
    try:
        assert holds.holds([release]) == {release: held}
        with get_client(sync_client=True) as client:
            variable = client.read_variable_by_name("hubploy-hold-heldhub-staging")
        assert variable is not None and variable.value["reason"] == "final exams"
        assert "hubploy-hold" in variable.tags
        assert any("held by alice since" in text and "final exams" in text for text in audit_texts(release))
    finally:
        assert holds.unhold(release, by="bob") == held
    assert holds.holds([release]) == {}
    assert holds.unhold(release, by="bob") is None
    assert any("hold released" in text and "by bob" in text for text in audit_texts(release))


def test_a_fleet_skips_a_held_hub_and_a_direct_deploy_refuses_it(
    prefect_api: str,
    cluster_env: None,
    run_deploy: Callable[..., DeployResult],
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.deploy_hubs import deploy_hubs

    root: Path = run_deploy.root  # type: ignore[attr-defined]
    shutil.copytree(root / "deployments" / "h", root / "deployments" / "g")
    monkeypatch.chdir(root)
    assert main(["hold", "g", "staging", "--reason", "exams this week", "--as", "alice"]) == 0
    try:
        assert "g-staging: held by alice since" in capsys.readouterr().out
        records = deploy_hubs(["h", "g"], "staging", str(root), trigger="test")
        assert records["h"]["result"] == Outcome.deployed and records["g"] == {}
        assert cluster.statuses("g-staging") == [] and cluster.statuses("h-staging") == ["deployed"]

        assert main(["deploy", "g", "hub", "staging"]) == 1
        err = capsys.readouterr().err
        assert "error: g-staging is held by alice since" in err and "exams this week" in err
        assert "`hubploy unhold g staging`, or pass --ignore-hold" in err
        assert cluster.statuses("g-staging") == []

        assert main(["hold"]) == 0
        listed = capsys.readouterr().out
        assert "g-staging" in listed and "exams this week" in listed
        assert main(["deploy", "g", "hub", "staging", "--ignore-hold"]) == 0
        assert cluster.statuses("g-staging") == ["deployed"]
    finally:
        assert main(["unhold", "g", "staging", "--as", "bob"]) == 0
    assert "g-staging: hold released" in capsys.readouterr().out
    assert main(["deploy", "g", "hub", "staging", "--redeploy"]) == 0


def test_hold_needs_a_reason(
    prefect_api: str,
    run_deploy: Callable[..., DeployResult],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(run_deploy.root)  # type: ignore[attr-defined]
    assert main(["hold", "h", "staging"]) == 1
    assert "error: a hold needs a reason" in capsys.readouterr().err


def test_notices_reach_notification_blocks_over_http(prefect_api: str) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook

    from flows.notify import notify

    with http_receiver() as receiver:
        CustomWebhookNotificationBlock(
            name="pager", url=f"{receiver.url}/hook", json_data={"text": "{{subject}}: {{body}}"}
        ).save("hubploy-test-pager", overwrite=True)
        # an Apprise-based block (Slack's type) delivering to loopback through Apprise's json:// scheme
        SlackWebhook(url=receiver.url.replace("http://", "json://") + "/slack").save(
            "hubploy-test-slack", overwrite=True
        )
        settings = RepoSettings.model_validate(
            {
                "notifications": [
                    {"block": "custom-webhook/hubploy-test-pager"},
                    {"block": "slack-webhook/hubploy-test-slack", "events": ["wave_failed"]},
                    {"block": "custom-webhook/no-such-block"},
                ]
            }
        )

        sent = notify(settings, Notice.wave_failed, "wave middle (2 of 3) stopped the staging rollout")
        assert sent == ["custom-webhook/hubploy-test-pager", "slack-webhook/hubploy-test-slack"]
        pager = receiver.wait_for("stopped the staging rollout")
        assert pager.path == "/hook"
        assert json.loads(pager.body)["text"].startswith(
            "hubploy: wave stopped the line: wave middle (2 of 3) stopped the staging rollout"
        )
        slack = next(r for r in receiver.requests if r.path == "/slack")
        assert json.loads(slack.body)["title"] == "hubploy: wave stopped the line"
        assert "stopped the staging rollout" in json.loads(slack.body)["message"]

        sent = notify(settings, Notice.approval_waiting, "abc123 waits")
        assert sent == ["custom-webhook/hubploy-test-pager"]
        text = json.loads(receiver.wait_for("abc123 waits").body)["text"]
        assert text.startswith("hubploy: approval waiting")
        assert len(receiver.requests) == 3
