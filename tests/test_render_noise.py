"""No noise from what the chart generates (issue 20, point 4): Z2JH-style charts generate the proxy token,
cookie secret and crypt keys at random on a client-side render and keep them in the cluster by
`lookup`, and `helm dependency update` packages a `file://` dependency anew each time. Every
render-based comparison must still say "no change" for an unchanged hub, and show a real change."""

from __future__ import annotations

import difflib
import secrets
import shutil
import time
from pathlib import Path

import pytest
from helpers.cli import run_cli
from helpers.example_repo import copy_example_repo
from helpers.gitrepo import init_repo

from hubploy.charts import DEPS_STAMP
from hubploy.deploy.prepare import config_digest, prepared_values
from hubploy.layout import load_repo
from hubploy.manifest_diff import GENERATED, manifest_diff
from hubploy.render import render

pytestmark = pytest.mark.sandbox
COMMON = "deployments/minimal/config/common.yaml"


@pytest.fixture
def repo_root(tmp_path: Path) -> Path:
    root = copy_example_repo(tmp_path / "repo")
    init_repo(root, branch="staging").commit(None, "the example hub")  # images are tagged from git
    return root


def _diff(a: str, b: str) -> str:
    return "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(), "first", "second", lineterm=""))


def _render_twice(root: Path, env: dict[str, str]):  # type: ignore[no-untyped-def]
    repo = load_repo(root)
    hub = repo.load_hub("minimal")
    renders = []
    for _ in range(2):
        with prepared_values(repo, hub, "staging", base_env=env) as prepared:
            renders.append(render(prepared, env=env))
    return renders


def test_render_prints_the_same_twice_and_shows_a_real_change(repo_root: Path, sandbox) -> None:  # type: ignore[no-untyped-def]
    first = run_cli("render", "minimal", "staging", cwd=repo_root, env=sandbox.env)
    second = run_cli("render", "minimal", "staging", cwd=repo_root, env=sandbox.env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout, _diff(first.stdout, second.stdout)
    assert f'checksum/secret: "{GENERATED}"' in first.stdout  # the hub Secret's checksum: generated values
    # a change outside the hub Secret (whose data render redacts) shows
    (repo_root / COMMON).write_text(
        (repo_root / COMMON)
        .read_text()
        .replace("  hub:\n", "  hub:\n    extraEnv: {COURSE: physics-101}\n", 1)
    )
    changed = run_cli("render", "minimal", "staging", cwd=repo_root, env=sandbox.env)
    assert changed.returncode == 0, changed.stderr
    assert "physics-101" in _diff(first.stdout, changed.stdout)


def test_manifest_diff_of_an_unchanged_hub_is_empty_and_a_change_shows(repo_root: Path, sandbox) -> None:  # type: ignore[no-untyped-def]
    running, again = _render_twice(repo_root, sandbox.env)
    assert running.manifest != again.manifest, (
        "the chart no longer generates values: this test proves nothing"
    )
    # without masking, the generated values are noise; with it, nothing
    assert manifest_diff(running.manifest, again.manifest) != ""
    assert manifest_diff(running.manifest, again.manifest, generated=again.generated) == ""
    (repo_root / COMMON).write_text((repo_root / COMMON).read_text().replace("/lab", "/tree"))
    [changed, _] = _render_twice(repo_root, sandbox.env)
    diff = manifest_diff(running.manifest, changed.manifest, generated=changed.generated)
    assert "+" in diff and "-" in diff and "values.yaml: sha256:" in diff  # the hub Secret's values changed
    assert "checksum/secret" not in diff  # generated on both sides, so not a change


def test_unchanged_release_digest_survives_repackaging_and_follows_the_dependency(
    repo_root: Path, sandbox
) -> None:  # type: ignore[no-untyped-def]
    repo = load_repo(repo_root)
    hub = repo.load_hub("minimal")
    package = repo_root / "hub" / "charts" / "jupyterhub-4.4.0.tgz"

    def digest() -> tuple[str, bytes]:
        with prepared_values(repo, hub, "staging", base_env=sandbox.env) as prepared:
            return config_digest(prepared, "minimal-staging", "minimal-staging", None), package.read_bytes()

    first, first_bytes = digest()
    time.sleep(1.1)  # helm stamps the package's files with the time it packs them, to the second
    (repo_root / "hub" / "charts" / DEPS_STAMP).unlink()  # the next prepare packages the dependency again
    again, again_bytes = digest()
    assert again_bytes != first_bytes, "helm packaged the same bytes: this test proves nothing"
    assert again == first
    notes = repo_root / "sandbox" / "charts" / "jupyterhub" / "templates" / "NOTES.txt"
    notes.write_text(notes.read_text() + "\nEdited in the dependency.\n")
    edited, edited_bytes = digest()  # the edit reaches charts/ without deleting anything by hand
    assert edited != first and edited_bytes != again_bytes


def test_a_repository_without_charts_dir_renders_the_same_as_one_with_it(repo_root: Path, sandbox) -> None:  # type: ignore[no-untyped-def]
    first = run_cli("render", "minimal", "prod", cwd=repo_root, env=sandbox.env)
    shutil.rmtree(repo_root / "hub" / "charts")
    second = run_cli("render", "minimal", "prod", cwd=repo_root, env=sandbox.env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout, _diff(first.stdout, second.stdout)


def test_approval_diff_and_drift_of_a_deployed_hub_are_empty_until_it_changes(  # type: ignore[no-untyped-def]
    tmp_path: Path, sandbox
) -> None:
    """Against a release deployed by hubploy (its secrets kept by lookup in the cluster), the approval
    form's diff and the drift check compare with a fresh render: no change, then a real one."""
    from flows.tasks.render import detect_drift, prod_diffs

    hub = f"n{secrets.token_hex(3)}"
    root = copy_example_repo(tmp_path / "repo", {hub: "minimal"})
    init_repo(root, branch="staging").commit(None, "one hub")
    env = {**sandbox.env, "SOPS_AGE_KEY_FILE": ""}
    release = f"{hub}-staging"
    try:
        built = run_cli("build", hub, "--check-registry", "--push", cwd=root, env=env)
        assert built.returncode == 0, built.stderr
        deployed = run_cli("deploy", hub, "hub", "staging", cwd=root, env=env)
        assert deployed.returncode == 0, deployed.stderr
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            assert prod_diffs.fn(str(root), [hub], "staging") == {hub: ""}
            drift = detect_drift.fn(str(root), hub, "staging")
            assert (drift.installed, drift.manifest_diff, drift.values_changed) == (True, "", [])
            common = root / "deployments" / hub / "config" / "common.yaml"
            common.write_text(
                common.read_text().replace("  hub:\n", "  hub:\n    extraEnv: {COURSE: p101}\n", 1)
            )
            diff = prod_diffs.fn(str(root), [hub], "staging")[hub]
            assert "+" in diff and "COURSE" in diff and "checksum/secret" not in diff
    finally:
        sandbox.run([env["HELM_EXECUTABLE"], "uninstall", release, "-n", release], env=env, check=False)
        sandbox.kubectl("delete", "namespace", release, "--wait=false", "--ignore-not-found", check=False)
