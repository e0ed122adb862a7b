"""Exact helm argv (classic order, helm 3 vs 4 flags) and the pure helpers of the deploy core."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hubploy import helm
from hubploy.deploy import check_images, image_references, is_transient, redact_rendered, values_digest
from hubploy.deploy import images as deploy_images
from hubploy.errors import (
    CommandError,
    CommandTimeoutError,
    DeployError,
    HealthCheckError,
    RegistryError,
    UpgradeError,
)
from hubploy.registry import RegistryCredentials
from hubploy.runner import REDACTED

VALUES = ["-f", "config/common.yaml", "-f", "/tmp/s/0-staging.yaml", "--set", "a=1", "--set-string", "b=2"]
ALL_FLAGS = helm.UpgradeFlags(
    version="1.2.3", timeout="30m", force=True, atomic=True, cleanup_on_fail=True, dry_run=True, debug=True
)


def test_upgrade_argv_minimal_is_classic() -> None:
    argv = helm.upgrade_argv("helm", 3, "data8-staging", "hub", "data8-staging", VALUES)
    assert argv == [
        "helm",
        "upgrade",
        "--wait",
        "--install",
        "--namespace",
        "data8-staging",
        "data8-staging",
        "hub",
        *VALUES,
    ]


def test_upgrade_argv_all_flags_helm3_in_classic_order() -> None:
    argv = helm.upgrade_argv("helm", 3, "r", "hub", "ns", VALUES, ALL_FLAGS, kube_context="ctx-ns")
    assert argv == [
        "helm",
        "upgrade",
        "--wait",
        "--install",
        "--namespace",
        "ns",
        "r",
        "hub",
        "--version",
        "1.2.3",
        "--timeout",
        "30m",
        "--force",
        "--atomic",
        "--cleanup-on-fail",
        "--dry-run",
        "--debug",
        "--kube-context",
        "ctx-ns",
        *VALUES,
    ]


def test_upgrade_argv_helm4_uses_renamed_flags() -> None:
    argv = helm.upgrade_argv("helm4", 4, "r", "hub", "ns", VALUES, ALL_FLAGS)
    assert argv == [
        "helm4",
        "upgrade",
        "--wait",
        "--install",
        "--namespace",
        "ns",
        "r",
        "hub",
        "--version",
        "1.2.3",
        "--timeout",
        "30m",
        "--force-replace",
        "--rollback-on-failure",
        "--cleanup-on-fail",
        "--dry-run=client",
        "--debug",
        *VALUES,
    ]
    assert "--atomic" not in argv and "--force" not in argv


def test_template_uses_exactly_the_upgrade_values() -> None:
    argv = helm.template_argv("helm", "r", "hub", "ns", VALUES, version="1.0.0")
    assert argv == ["helm", "template", "r", "hub", "--namespace", "ns", "--version", "1.0.0", *VALUES]
    assert argv[-len(VALUES) :] == helm.upgrade_argv("helm", 3, "r", "hub", "ns", VALUES)[-len(VALUES) :]


def test_query_and_lifecycle_argv() -> None:
    assert helm.dependency_update_argv("helm", "/repo/hub") == ["helm", "dependency", "update", "/repo/hub"]
    assert helm.status_argv("helm", "r", "ns") == [
        "helm",
        "status",
        "r",
        "--namespace",
        "ns",
        "--output",
        "json",
    ]
    assert helm.history_argv("helm", "r", "ns", kube_context="c") == [
        "helm",
        "history",
        "r",
        "--namespace",
        "ns",
        "--output",
        "json",
        "--kube-context",
        "c",
    ]
    assert helm.get_values_argv("helm", "r", "ns", revision=3, all_values=True) == [
        "helm",
        "get",
        "values",
        "r",
        "--namespace",
        "ns",
        "--output",
        "json",
        "--revision",
        "3",
        "--all",
    ]
    assert helm.get_manifest_argv("helm", "r", "ns") == ["helm", "get", "manifest", "r", "--namespace", "ns"]
    assert helm.rollback_argv("helm", "r", "ns", 4, timeout="5m") == [
        "helm",
        "rollback",
        "r",
        "4",
        "--namespace",
        "ns",
        "--wait",
        "--timeout",
        "5m",
    ]
    assert helm.uninstall_argv("helm", "r", "ns") == ["helm", "uninstall", "r", "--namespace", "ns", "--wait"]


def _fake_helm(tmp_path: Path, version: str) -> Path:
    calls = tmp_path / "calls"
    script = tmp_path / f"helm-{version}"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho {version}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.mark.parametrize("version, major", [("v3.17.2+gcc0bbbd", 3), ("v4.1.4+g05fa379", 4)])
def test_helm_major_version_is_asked_once_per_executable(tmp_path: Path, version: str, major: int) -> None:
    script = _fake_helm(tmp_path, version)
    env = dict(os.environ)
    assert helm.helm_major_version(str(script), env) == major
    assert helm.helm_major_version(str(script), env) == major
    assert (tmp_path / "calls").read_text().splitlines() == ["version --short"]


def test_helm_2_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="needs helm 3 or 4"):
        helm.helm_major_version(str(_fake_helm(tmp_path, "v2.17.0")), dict(os.environ))


def test_helm_executable_from_env() -> None:
    assert helm.helm_executable({"HELM_EXECUTABLE": "/opt/helm4"}) == "/opt/helm4"
    assert helm.helm_executable({}) == "helm"


def test_history_parsing_and_last_deployed() -> None:
    out = json.dumps(
        [
            {
                "revision": 2,
                "status": "superseded",
                "chart": "hub-0.1.0",
                "app_version": "5",
                "updated": "t2",
                "description": "Upgrade complete",
            },
            {
                "revision": 1,
                "status": "superseded",
                "chart": "hub-0.1.0",
                "app_version": "5",
                "updated": "t1",
                "description": "Install complete",
            },
            {
                "revision": 3,
                "status": "pending-upgrade",
                "chart": "hub-0.1.0",
                "app_version": "5",
                "updated": "t3",
                "description": "Preparing upgrade",
            },
        ]
    )
    history = helm.parse_history(out)
    assert [r.revision for r in history] == [1, 2, 3]
    assert helm.last_deployed(history).revision == 2
    assert history[-1].status in helm.PENDING_STATUSES
    assert helm.last_deployed(helm.parse_history('[{"revision": 1, "status": "failed"}]')) is None
    assert helm.is_release_not_found("Error: release: not found")


def test_image_references_walk_every_name_tag_mapping() -> None:
    merged = {
        "jupyterhub": {
            "hub": {"image": {"name": "r/hub", "tag": "1"}},
            "singleuser": {
                "image": {"name": "r/user", "tag": "abc1234"},
                "profileList": [{"kubespawner_override": {"image": {"name": "r/gpu", "tag": None}}}],
            },
            "proxy": {"service": {"name": "not-an-image"}},
        }
    }
    assert image_references(merged) == [
        ("jupyterhub.hub.image", "r/hub", "1"),
        ("jupyterhub.singleuser.image", "r/user", "abc1234"),
        ("jupyterhub.singleuser.profileList[0].kubespawner_override.image", "r/gpu", ""),
    ]


def test_values_digest_excludes_secret_values(tmp_path: Path) -> None:
    secret = tmp_path / "staging.yaml"
    secret.write_text("jupyterhub: {proxy: {secretToken: one}}\n")
    merged = {"jupyterhub": {"proxy": {"secretToken": "one"}, "hub": {"x": 1}}}
    first = values_digest(merged, [secret], {secret: secret})
    merged["jupyterhub"]["proxy"]["secretToken"] = "two"
    assert values_digest(merged, [secret], {secret: secret}) == first
    merged["jupyterhub"]["hub"]["x"] = 2
    assert values_digest(merged, [secret], {secret: secret}) != first


def test_redact_rendered_hides_secret_data_and_secret_strings() -> None:
    text = (
        "---\nkind: ConfigMap\ndata:\n  token: s3cr3t-token-value\n  other: fine\n"
        '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: hub\ndata:\n  values.yaml: "aGVsbG8="\n'
        '  # a comment\n  tok: "eHl6"\ntype: Opaque\n'
    )
    out = redact_rendered(text, ["s3cr3t-token-value"])
    assert "s3cr3t-token-value" not in out and "aGVsbG8=" not in out and "eHl6" not in out
    assert f'  values.yaml: "{REDACTED}"' in out and "  other: fine" in out and "type: Opaque" in out


def test_only_transient_errors_are_retried() -> None:
    assert is_transient(
        CommandError(["helm"], 1, "Error: dial tcp 127.0.0.1:6443: connect: connection refused")
    )
    assert is_transient(
        CommandError(
            ["helm"], 1, "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress"
        )
    )
    assert is_transient(RegistryError("503", status=503))
    assert not is_transient(RegistryError("denied", status=401))
    assert not is_transient(CommandError(["helm"], 1, "Error: template: hub/templates/x.yaml: bad"))
    assert not is_transient(CommandTimeoutError(["helm"], -9, "connection refused"))
    assert not is_transient(HealthCheckError("hub down: connection refused"))
    assert not is_transient(ValueError("connection refused"))
    logged = "not ready: Pod hub-1 (container hub: Error, last log line: connection refused)"
    assert not is_transient(
        UpgradeError(f"timed out ...: {logged}", reason="Error: context deadline exceeded", timed_out=True)
    )
    assert not is_transient(
        UpgradeError(
            f"failed: hook; {logged}", reason="Error: job failed: BackoffLimitExceeded", timed_out=False
        )
    )
    assert is_transient(
        UpgradeError("failed", reason="Error: UPGRADE FAILED: etcdserver: request timed out", timed_out=False)
    )


def test_image_lookup_logs_in_once_per_host_only_when_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str | None]] = []

    def fake_digest(name: str, tag: str, creds: RegistryCredentials | None) -> str | None:
        calls.append((name, creds.username if creds else None))
        if name.startswith("private.example.org/") and creds is None:
            raise RegistryError("refused", status=401)
        return "sha256:1"

    monkeypatch.setattr(deploy_images, "manifest_digest", fake_digest)
    asked: list[str] = []

    def login(host: str) -> RegistryCredentials:
        asked.append(host)
        return RegistryCredentials(host, "robot", "pw-123456")

    env = {
        "HUBPLOY_REGISTRY": "localhost:5000",
        "HUBPLOY_REGISTRY_USERNAME": "hubploy",
        "HUBPLOY_REGISTRY_PASSWORD": "sandbox-pw",
    }
    lookup = deploy_images.registry_image_digest(env, login)
    assert lookup("private.example.org/a/user", "v1") == "sha256:1"
    assert lookup("private.example.org/a/hub", "v1") == "sha256:1"
    assert lookup("localhost:5000/base/busybox", "latest") == "sha256:1"
    assert lookup("quay.io/jupyterhub/k8s-hub", "4.2.0") == "sha256:1"
    assert asked == ["private.example.org"]
    assert calls == [
        ("private.example.org/a/user", None),
        ("private.example.org/a/user", "robot"),
        ("private.example.org/a/hub", "robot"),
        ("localhost:5000/base/busybox", "hubploy"),
        ("quay.io/jupyterhub/k8s-hub", None),
    ]
    with pytest.raises(RegistryError, match="configures no credentials"):
        deploy_images.registry_image_digest(env, lambda host: None)("private.example.org/x", "1")


def test_missing_images_are_all_named() -> None:
    merged = {
        "hub": {"image": {"name": "r/hub", "tag": "1"}},
        "user": {"image": {"name": "r/user", "tag": "2"}},
    }
    with pytest.raises(DeployError, match=r"r/hub:1 \(at hub.image\); r/user:2 \(at user.image\)"):
        check_images(merged, lambda name, tag: None)
    refs = check_images(merged, lambda name, tag: f"sha256:{name}")
    assert [(r.reference, r.digest) for r in refs] == [
        ("r/hub:1", "sha256:r/hub"),
        ("r/user:2", "sha256:r/user"),
    ]
