"""Tasks comparing what the repo renders with what a release runs: the approval form's prod diff, the
drift check and the pull request comment's diffs. Secret values never leave: manifests are normalized
with Secret data digested."""

from __future__ import annotations

import json
from dataclasses import dataclass

from prefect import get_run_logger, task

from blocks.resolve import credentials
from hubploy import helm
from hubploy.deploy.prepare import secret_strings_at
from hubploy.errors import HubployError
from hubploy.layout import DeploymentRepo, Hub, load_repo
from hubploy.manifest_diff import manifest_diff
from hubploy.pr_comment import ReleaseReview, ReleaseState, review_release
from hubploy.render import deployed_manifest, prepared_values, render
from hubploy.runner import child_env, redact, run


@dataclass(frozen=True)
class Drift:
    hub: str
    env: str
    release: str
    manifest_diff: str  # running vs rendered, secrets digested; "" when equal
    values_changed: list[str]  # top-level value paths whose user-supplied value differs
    installed: bool


def _running(hub_name: str, env_name: str, tree: str) -> tuple[str | None, dict | None]:
    """(manifest, user-supplied values) of the release now, or (None, None) when not installed."""
    repo = load_repo(tree)
    hub = repo.load_hub(hub_name)
    with credentials(repo, child_env()).cluster_access(hub, env_name) as access:
        env = {**access.env, "KUBECONFIG": str(access.kubeconfig)}
        executable = helm.helm_executable(env)
        manifest = deployed_manifest(
            executable, hub.release(env_name), hub.namespace(env_name), env=env, kube_context=access.context
        )
        if manifest is None:
            return None, None
        out = run(
            helm.get_values_argv(
                executable, hub.release(env_name), hub.namespace(env_name), kube_context=access.context
            ),
            env=env,
        ).stdout
        return manifest, json.loads(out or "{}") or {}


@task(retries=2, retry_delay_seconds=[2, 10])
def prod_diffs(tree: str, hubs: list[str], env_name: str = "prod") -> dict[str, str]:
    """Per hub: diff between what the release runs now and what this commit renders for it, every secret
    string redacted (this commit's and the running release's); manifest_diff bounds its length."""
    repo = load_repo(tree)
    env = child_env()
    diffs = {}
    for name in hubs:
        with prepared_values(repo, repo.load_hub(name), env_name, base_env=env) as prepared:
            rendered, secret_strings, secret_paths = (
                render(prepared, env=env),
                prepared.secret_strings,
                prepared.secret_paths,
            )
        running, running_values = _running(name, env_name, tree)
        diff = manifest_diff(
            running or "",
            rendered.manifest,
            generated=rendered.generated,
            old_label=f"{name}-{env_name} running" if running else "not installed",
            new_label="this commit",
        )
        diffs[name] = redact(diff, [*secret_strings, *secret_strings_at(running_values or {}, secret_paths)])
    return diffs


def _changed_paths(running: dict, wanted: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(running) | set(wanted))
    changed = []
    for key in keys:
        path = f"{prefix}.{key}" if prefix else str(key)
        a, b = running.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_paths(a, b, path)
        elif a != b:
            changed.append(path)
    return changed


@task(retries=2, retry_delay_seconds=[2, 10])
def detect_drift(tree: str, hub_name: str, env_name: str) -> Drift:
    """Compare the release's deployed manifest and values (helm get) with what ``tree`` renders."""
    repo = load_repo(tree)
    hub = repo.load_hub(hub_name)
    running_manifest, running_values = _running(hub_name, env_name, tree)
    if running_manifest is None:
        return Drift(hub_name, env_name, hub.release(env_name), "", [], installed=False)
    env = child_env()
    with prepared_values(repo, hub, env_name, base_env=env) as prepared:
        rendered = render(prepared, env=env)
        changed = [
            redact(p, prepared.secret_strings)
            for p in _changed_paths(running_values or {}, prepared.user_values)
        ]
    diff = manifest_diff(
        running_manifest,
        rendered.manifest,
        generated=rendered.generated,
        old_label="running",
        new_label="repo",
    )
    if diff or changed:
        get_run_logger().warning(
            "drift in %s: %d manifest diff lines, values %s",
            hub.release(env_name),
            len(diff.splitlines()),
            changed or "unchanged",
        )
    return Drift(hub_name, env_name, hub.release(env_name), diff, changed, installed=True)


@task
def review_releases(tree: str, hubs: list[str]) -> list[ReleaseReview]:
    """Per hub and each of its environments: what ``tree`` (a pull request head) would change in the
    release running there now. A release that does not render, or that cannot be read, says why."""
    repo = load_repo(tree)
    reviews = []
    for name in hubs:
        hub = repo.load_hub(name)
        for env_name in hub.environments:
            review = _review_release(repo, hub, env_name)
            get_run_logger().info("%s: %s %s", review.release, review.state.value, review.message)
            reviews.append(review)
    return reviews


def _review_release(repo: DeploymentRepo, hub: Hub, env_name: str) -> ReleaseReview:
    release, env = hub.release(env_name), child_env()
    try:
        with prepared_values(repo, hub, env_name, base_env=env) as prepared:
            rendered, secret_strings, secret_paths = (
                render(prepared, env=env),
                prepared.secret_strings,
                prepared.secret_paths,
            )
    except HubployError as exc:
        return ReleaseReview(hub.name, env_name, release, ReleaseState.not_rendered, message=str(exc))
    try:
        running, running_values = _running(hub.name, env_name, str(repo.root))
    except HubployError as exc:
        return ReleaseReview(hub.name, env_name, release, ReleaseState.unreadable, message=str(exc))
    running_secrets = secret_strings_at(running_values or {}, secret_paths)
    return review_release(hub.name, env_name, release, running, rendered, [*secret_strings, *running_secrets])
