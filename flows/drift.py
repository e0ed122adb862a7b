"""Drift check: does every release run what its branch head renders? Compares the deployed manifest
and values (helm get) of each hub's staging and prod release with a render of the staging and prod
branch heads. Reports the differences as a markdown artifact and fails when any release drifted."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State

from flows.tasks.lifecycle import checkout_commit, head_of
from flows.tasks.render import Drift, detect_drift
from hubploy.layout import load_repo


def _report(drifts: list[Drift]) -> str:
    lines = ["| release | state | values changed |", "|---|---|---|"]
    for d in drifts:
        state = (
            "not installed"
            if not d.installed
            else "drifted"
            if d.manifest_diff or d.values_changed
            else "in sync"
        )
        lines.append(f"| {d.release} | {state} | {', '.join(d.values_changed) or '–'} |")
    for d in drifts:
        if d.manifest_diff:
            lines += ["", f"### {d.release}", "", f"```diff\n{d.manifest_diff}\n```"]
    return "\n".join(lines)


@flow(name="hubploy-drift-check", log_prints=True)
def drift_check(
    repo_url: str, envs: list[str] | None = None, staging_branch: str = "staging", prod_branch: str = "prod"
) -> State:
    """Check the releases of ``envs`` (default staging and prod) against their branch heads."""
    branches = {"staging": staging_branch, "prod": prod_branch}
    drifts: list[Drift] = []
    for env_name in envs or list(branches):
        head = head_of(repo_url, branches.get(env_name, env_name))
        if head is None:
            continue
        tree = checkout_commit(repo_url, head)
        repo = load_repo(tree)
        for hub in repo.hub_names():
            if env_name in repo.load_hub(hub).environments:
                drifts.append(detect_drift(tree, hub, env_name))
    create_markdown_artifact(key="drift", markdown=_report(drifts), description="drift check")
    drifted = [d.release for d in drifts if d.manifest_diff or d.values_changed]
    if drifted:
        return Failed(
            name="Drifted", message=f"{len(drifted)} release(s) differ from the repo: {', '.join(drifted)}"
        )
    installed = [d for d in drifts if d.installed]
    missing = [d.release for d in drifts if not d.installed]
    return Completed(
        message=f"{len(installed)} release(s) match the repo"
        + (f"; not installed: {', '.join(missing)}" if missing else "")
    )
