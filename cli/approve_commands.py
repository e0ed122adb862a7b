"""`hubploy approve RUN [--reject] [--reason TEXT] [--as NAME]`: the approval form, from a terminal."""

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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("approve", help="approve (or reject) a lifecycle run waiting for approval")
    p.add_argument("run", metavar="RUN", help="flow run id or name, as shown in the Prefect UI")
    p.add_argument("--reject", action="store_true", help="reject: prod stays untouched")
    p.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    p.add_argument("--as", dest="approver", default=f"{getpass.getuser()}@{socket.gethostname()}",
                   help="who approves (default: user@host)")
    p.set_defaults(func=cmd_approve)


def cmd_approve(args: argparse.Namespace) -> int:
    """Talks to PREFECT_API_URL when it is set, else to the server `hubploy up` runs on this machine."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from triggers.stack import client_settings

    local = None if os.environ.get("PREFECT_API_URL") else client_settings()
    if local is None:
        return _approve(args)
    with temporary_settings(updates={PREFECT_API_URL: local["PREFECT_API_URL"],
                                     PREFECT_API_AUTH_STRING: local["PREFECT_API_AUTH_STRING"]}):
        return _approve(args)


def _approve(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.exceptions import ObjectNotFound

    from flows.approval import Decision

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(args.run))
        except (ValueError, ObjectNotFound):
            found = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[args.run])))
            if not found:
                raise ApprovalError(f"no flow run {args.run!r}", hint="copy the run id or name from the Prefect UI")
            run = found[0]
        state = run.state
        if state is None or not state.is_paused() or not state.state_details.run_input_keyset:
            raise ApprovalError(f"run {run.name} is not waiting for an approval (state: "
                                f"{state.name if state else 'none'})")
    if not args.reject:
        _check_freeze()
    decision = Decision.reject if args.reject else Decision.approve
    _resume(run.id, {"decision": decision.value, "reason": args.reason, "approver": args.approver})
    print(f"{decision.value}d run {run.name} ({run.id}) as {args.approver}")
    return 0


def _check_freeze() -> None:
    """Refuse here, with when the window ends, when run from a deployment repo that is frozen now."""
    from hubploy.layout import REPO_SETTINGS_FILE, load_repo

    if (Path.cwd() / REPO_SETTINGS_FILE).is_file():
        load_repo(Path.cwd()).settings.check_not_frozen()


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
