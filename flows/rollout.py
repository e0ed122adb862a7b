"""Flow ``hubploy-rollout``: every hub of one environment (or the named ones) deployed wave after wave
(flows/waves.py), from a checkout of the environment's branch head (``repo_url``, as the Prefect
deployment ``rollout`` runs it) or from a local checkout (``repo_path``, as `hubploy rollout` runs it).

Final states: ``Completed``; ``WaveFailed`` (a wave stopped the line); ``RolloutFailed`` (without
``rollout`` in hubploy-repo.yaml, hubs failed); ``NothingToDeploy`` (no hub has the environment).
"""

from __future__ import annotations

from collections import Counter

from prefect import flow
from prefect.states import Completed, State

from flows.lifecycle import failure_state, notice_of_failure
from flows.tasks.lifecycle import checkout_commit, head_of, validate_hubs
from flows.waves import roll_out
from hubploy.errors import GitError
from hubploy.layout import load_repo


@flow(name="hubploy-rollout", flow_run_name="rollout-{env}", log_prints=True)
def rollout(
    env: str,
    repo_url: str | None = None,
    repo_path: str = ".",
    branch: str | None = None,
    sha: str | None = None,
    wave: str | None = None,
    hubs: list[str] | None = None,
    trigger: str = "manual",
    redeploy: bool = False,
    timeout: str | None = None,
) -> State:
    """Deploy ``hubs`` (default: every hub with ``env``) to ``env`` in waves (only ``wave`` when given).

    With ``repo_url``: a checkout of ``sha``, else of the head of ``branch`` (default: ``prod`` for prod,
    ``staging`` otherwise). ``redeploy`` upgrades releases that already run their configuration;
    ``timeout``: helm's wait for each hub (default: ``helm_timeout`` of hubploy-repo.yaml)."""
    if repo_url:
        wanted = branch or ("prod" if env == "prod" else "staging")
        sha = sha or head_of(repo_url, wanted)
        if sha is None:
            raise GitError(f"{repo_url} has no branch {wanted!r}", hint="give the branch or a sha")
        tree = checkout_commit(repo_url, sha)
    else:
        tree = str(load_repo(repo_path).root)
    repo = load_repo(tree)
    names = hubs or [name for name in repo.hub_names() if env in repo.load_hub(name).environments]
    if not names:
        return Completed(name="NothingToDeploy", message=f"no hub is deployed to {env}")
    validate_hubs(tree, names)
    report = roll_out(
        tree, names, env, trigger=f"rollout ({trigger})", wave=wave, redeploy=redeploy, timeout=timeout
    )
    failed = failure_state(report, "RolloutFailed", f"the {env} rollout failed")
    if failed:
        return notice_of_failure(repo.settings, failed)
    counts = Counter(h.outcome.value for h in report.hubs.values())
    return Completed(
        message=f"{env}: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    )
