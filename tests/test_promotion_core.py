"""Worktrees per SHA, promotion by merge commit, redacted manifest diffs and freeze windows — on
real git repositories."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.gitrepo import Repo, git_env, init_repo

from hubploy.config.models import FreezeWindow, RepoSettings
from hubploy.errors import ApprovalError, GitError
from hubploy.manifest_diff import manifest_diff
from hubploy.promote import promote
from hubploy.workspace import checkout


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Repo, str]:
    """A work repo with staging and prod branches, pushed to a bare origin; returns (work, origin url)."""
    bare = tmp_path / "origin.git"
    work = init_repo(tmp_path / "work", branch="staging")
    work.commit({"deployments/a/hubploy.yaml": "{}\n"}, "first")
    work.git("init", "--bare", "--quiet", str(bare))
    work.git("branch", "prod")
    work.git("push", "--quiet", str(bare), "staging", "prod")
    return work, str(bare)


def test_checkout_gives_worktree_at_exact_sha(origin, tmp_path: Path) -> None:
    work, url = origin
    first = work.head()
    second = work.commit({"deployments/a/config/common.yaml": "x: 1\n"}, "second")
    work.git("push", "--quiet", url, "staging")
    tree = checkout(url, first, cache_dir=tmp_path / "cache", env=git_env())
    assert not (tree / "deployments/a/config/common.yaml").exists()
    assert checkout(url, second[:12], cache_dir=tmp_path / "cache", env=git_env()) != tree
    with pytest.raises(GitError, match="not a commit SHA"):
        checkout(url, "--upload-pack=evil", cache_dir=tmp_path / "cache", env=git_env())
    with pytest.raises(GitError, match="not in the repository"):
        checkout(url, "0" * 40, cache_dir=tmp_path / "cache", env=git_env())


def test_promote_merges_exactly_the_approved_sha(origin, tmp_path: Path) -> None:
    work, url = origin
    approved = work.commit({"deployments/a/config/prod.yaml": "y: 2\n"}, "approved change")
    work.git("push", "--quiet", url, "staging")
    newer = work.commit({"deployments/a/config/prod.yaml": "y: 3\n"}, "staging moved on")
    work.git("push", "--quiet", url, "staging")
    result = promote(url, approved, message="Promote approved", cache_dir=tmp_path / "cache", env=git_env())
    assert result.approved_sha == approved
    work.git("fetch", "--quiet", url, "prod:refs/remotes/o/prod")
    parents = work.git("rev-list", "--parents", "-n", "1", "refs/remotes/o/prod").split()
    assert parents[0] == result.prod_after and parents[2] == approved  # a merge commit of the approved SHA
    contains_newer = work.git("branch", "-r", "--contains", newer, "--list", "o/prod")
    assert contains_newer == ""
    assert work.git("show", "refs/remotes/o/prod:deployments/a/config/prod.yaml") == "y: 2"
    # promoting the same SHA again changes nothing
    again = promote(url, approved, message="again", cache_dir=tmp_path / "cache", env=git_env())
    assert again.prod_after == result.prod_after


def test_promote_refuses_sha_not_on_staging_and_prod_only_commits(origin, tmp_path: Path) -> None:
    work, url = origin
    work.checkout("side", create=True)
    side = work.commit({"x": "1"}, "not on staging")
    work.git("push", "--quiet", url, "side")
    with pytest.raises(GitError, match="not on the staging branch"):
        promote(url, side, message="m", cache_dir=tmp_path / "cache", env=git_env())
    work.checkout("prod")
    work.commit({"hotfix": "1"}, "hotfix straight on prod")
    work.git("push", "--quiet", url, "prod")
    work.checkout("staging")
    sha = work.commit({"y": "1"}, "staging change")
    work.git("push", "--quiet", url, "staging")
    with pytest.raises(GitError, match="non-merge commit"):
        promote(url, sha, message="m", cache_dir=tmp_path / "cache", env=git_env())


def _secret(token: str) -> str:
    return (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: hub, namespace: n}\n"
        f"data:\n  values.yaml: {base64.b64encode(token.encode()).decode()}\n"
    )


def test_manifest_diff_hides_secret_values_but_shows_the_change() -> None:
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: n}\ndata: {a: '1'}\n"
    old = cm + "---\n" + _secret("old-token-value")
    new = _secret("new-token-value") + "---\n" + cm.replace("'1'", "'2'")
    diff = manifest_diff(old, new)
    assert "-  a: '1'" in diff and "+  a: '2'" in diff
    assert "values.yaml: sha256:" in diff
    for secret in ("old-token-value", "new-token-value", base64.b64encode(b"new-token-value").decode()):
        assert secret not in diff
    assert manifest_diff(old, cm + "---\n" + _secret("old-token-value")) == ""


def test_freeze_windows() -> None:
    windows = [FreezeWindow(start="2026-12-07", end="2026-12-19", reason="final exams")]
    settings = RepoSettings(freeze_windows=windows)
    assert settings.active_freeze(datetime(2026, 12, 10, tzinfo=UTC)) is windows[0]
    assert settings.active_freeze(datetime(2026, 12, 19, tzinfo=UTC)) is None
    with pytest.raises(ApprovalError, match=r"frozen \(final exams\) until 2026-12-19T00:00:00\+00:00"):
        settings.check_not_frozen(datetime(2026, 12, 18, 23, tzinfo=UTC))
    with pytest.raises(ValueError, match="must end after it starts"):
        RepoSettings.model_validate({"freeze_windows": [{"start": "2026-12-19", "end": "2026-12-07"}]})
    with pytest.raises(ValueError, match="not an ISO 8601 date"):
        RepoSettings.model_validate({"freeze_windows": [{"start": "next week", "end": "2026-12-07"}]})
