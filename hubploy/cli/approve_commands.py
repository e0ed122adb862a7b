"""`hubploy approve RUN [--reject] [--reason TEXT] [--as NAME] [--sha SHA]`: the approval form, from a
terminal. The decision names the commit the run promotes, as the form does, and the command waits for
the run's verdict on it (refused: another commit, an approver not listed in `approvers:`, a freeze
window), as recorded in the run's audit."""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import time
from pathlib import Path
from uuid import UUID

from hubploy.errors import ApprovalError, HubployError

RESUME_ATTEMPTS = 5  # the SQLite server sometimes answers "database is locked"
VERDICT_SECONDS = 180  # a run outside its hot window first has to be started again by the worker


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("approve", help="approve (or reject) a lifecycle run waiting for approval")
    p.add_argument("run", metavar="RUN", help="flow run id or name, as shown in the Prefect UI")
    p.add_argument("--reject", action="store_true", help="reject: prod stays untouched")
    p.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    p.add_argument(
        "--as",
        dest="approver",
        default=f"{getpass.getuser()}@{socket.gethostname()}",
        help="who approves (default: user@host); with `approvers:` in hubploy-repo.yaml, a name listed there",
    )
    p.add_argument("--sha", help="decide only if the run promotes this commit (full or abbreviated SHA)")
    p.set_defaults(func=cmd_approve)


def cmd_approve(args: argparse.Namespace) -> int:
    """Talks to PREFECT_API_URL when it is set, else to the server `hubploy up` runs on this machine."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from hubploy.triggers.stack import client_settings

    local = None if os.environ.get("PREFECT_API_URL") else client_settings()
    if local is None:
        return _approve(args)
    with temporary_settings(
        updates={
            PREFECT_API_URL: local["PREFECT_API_URL"],
            PREFECT_API_AUTH_STRING: local["PREFECT_API_AUTH_STRING"],
        }
    ):
        return _approve(args)


def _approve(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.exceptions import ObjectNotFound

    from flows.approval import Decision, recorded_verdicts, refusal_in

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(args.run))
        except (ValueError, ObjectNotFound):
            found = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[args.run]))
            )
            if not found:
                raise ApprovalError(
                    f"no flow run {args.run!r}", hint="copy the run id or name from the Prefect UI"
                ) from None
            run = found[0]
        state = run.state
        if state is None or not state.is_paused() or not state.state_details.run_input_keyset:
            detail = f": {state.message}" if state and state.message else ""
            raise ApprovalError(
                f"run {run.name} is not waiting for an approval (state: "
                f"{state.name if state else 'none'}{detail})"
            )
    sha = str(run.parameters.get("sha") or "")
    if args.sha and not (len(args.sha) >= 7 and sha.lower().startswith(args.sha.lower())):
        raise ApprovalError(
            f"run {run.name} promotes commit {sha[:12] or '(none)'}, not {args.sha}",
            hint="check the run id; the decision is for the commit the run shows",
        )
    decision = Decision.reject if args.reject else Decision.approve
    if decision is Decision.approve:
        _check_freeze()
    before = len(recorded_verdicts(run.id))
    _resume(
        run.id, {"decision": decision.value, "sha": sha, "reason": args.reason, "approver": args.approver}
    )
    verdict = _await_verdict(run.id, before)
    if verdict is None:
        print(
            f"submitted the {decision.value} of run {run.name} ({run.id}), commit {sha[:12]}, as "
            f"{args.approver}; the run had not judged it after {VERDICT_SECONDS} s: see its page"
        )
        return 0
    why = refusal_in(verdict)
    if why is not None:
        raise ApprovalError(
            f"run {run.name} refused the {decision.noun.lower()}: {why}",
            hint="the run asks again; see its page",
        )
    print(f"{decision.past} run {run.name} ({run.id}), commit {sha[:12]}, as {args.approver}")
    return 0


def _check_freeze() -> None:
    """Refuse here, with when the window ends, when run from a deployment repo that is frozen now."""
    from hubploy.layout import REPO_SETTINGS_FILE, load_repo

    if (Path.cwd() / REPO_SETTINGS_FILE).is_file():
        load_repo(Path.cwd()).settings.check_not_frozen()


def _await_verdict(run_id: UUID, before: int) -> str | None:
    """The run's verdict on the decision just submitted (its audit record after the ``before`` earlier
    ones), or None when it has none within VERDICT_SECONDS."""
    from flows.approval import recorded_verdicts

    deadline = time.monotonic() + VERDICT_SECONDS
    while time.monotonic() < deadline:
        verdicts = recorded_verdicts(run_id)
        if len(verdicts) > before:
            return verdicts[before]
        time.sleep(1)
    return None


def _resume(run_id: UUID, run_input: dict[str, str]) -> None:
    from prefect.flow_runs import resume_flow_run

    for attempt in range(1, RESUME_ATTEMPTS + 1):
        try:
            resume_flow_run(run_id, run_input=run_input)
            return
        except Exception as exc:  # noqa: BLE001 — the client raises plain HTTP errors on server hiccups
            if attempt == RESUME_ATTEMPTS or "locked" not in str(exc) and "500" not in str(exc):
                raise HubployError(f"could not resume run {run_id}: {exc}") from None
            time.sleep(attempt)
