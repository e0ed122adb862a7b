"""`hubploy rollout <env>`, `hubploy rollback <hub> <env>`, `hubploy hold` and `hubploy unhold`.

`rollout` runs the fleet deploy with waves (flows/rollout.py) from this checkout, or, with `--remote`,
starts the Prefect deployment `hubploy-rollout/rollout`, which deploys the environment's branch head on
a worker; either way it shows the progress per wave and hub, then how each hub ended. It needs a
Prefect server (`hubploy up`, or PREFECT_API_URL): the deploy locks and the holds live there.
`rollback` runs here, like `hubploy deploy`. `hold`/`unhold` keep a hub out of fleet deploys.
"""

from __future__ import annotations

import argparse
import contextvars
import getpass
import json
import logging
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hubploy.cli.deploy_commands import helm_timeout
from hubploy.cli.prefect_server import prefect_server
from hubploy.config.models import ALLOWED_ENVIRONMENTS
from hubploy.errors import DeployError, HubployError
from hubploy.layout import load_repo

console = Console()
ROLLOUT_DEPLOYMENT = "hubploy-rollout/rollout"
WHO = f"{getpass.getuser()}@{socket.gethostname()}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollout", help="deploy every hub of ENV wave after wave, showing progress per wave and hub"
    )
    p.add_argument(
        "environment", metavar="ENV", choices=ALLOWED_ENVIRONMENTS, help="environment to deploy to"
    )
    p.add_argument("--wave", metavar="NAME", help="only this wave (`hubploy plan` lists them)")
    p.add_argument(
        "--hub",
        dest="hubs",
        action="append",
        default=[],
        metavar="HUB",
        help="only these hubs (repeatable; default: every hub with ENV)",
    )
    p.add_argument(
        "--remote",
        action="store_true",
        help="start the Prefect deployment hubploy-rollout/rollout (the branch head of ENV, on a worker)",
    )
    p.add_argument(
        "--repo-url",
        metavar="URL",
        help="with --remote: the deployment repository to check out (default: the deployment's)",
    )
    p.add_argument(
        "--redeploy", action="store_true", help="upgrade releases that already run their configuration"
    )
    p.add_argument(
        "--timeout",
        type=helm_timeout,
        help="helm's wait for each hub: a duration such as 5m, or seconds (default: helm_timeout "
        "of hubploy-repo.yaml, 10m)",
    )
    p.set_defaults(func=cmd_rollout)

    p = sub.add_parser(
        "rollback", help="roll a hub back: to the previous revision, a given one, or the last verified one"
    )
    p.add_argument("hub", metavar="HUB", help="hub directory name under deployments/")
    p.add_argument(
        "environment",
        metavar="ENV",
        choices=ALLOWED_ENVIRONMENTS,
        help="environment whose release is rolled back",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--to-verified",
        action="store_true",
        help="the last revision that passed its checks and soak in a rollout",
    )
    target.add_argument("--revision", type=int, metavar="N", help="helm revision N")
    p.add_argument(
        "--timeout",
        type=helm_timeout,
        help="helm's wait for the rollback (default: helm_timeout of hubploy-repo.yaml, 10m)",
    )
    p.add_argument(
        "--no-health-check", dest="health_check", action="store_false", help="do not check the hub afterwards"
    )
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("hold", help="keep HUB in ENV out of fleet deploys (no HUB: list the holds)")
    p.add_argument("hub", metavar="HUB", nargs="?", help="hub directory name under deployments/")
    p.add_argument(
        "environment",
        metavar="ENV",
        nargs="?",
        choices=ALLOWED_ENVIRONMENTS,
        help="environment in which the hub is held",
    )
    p.add_argument("--reason", default="", help="why (shown wherever the hold is, recorded in the audit)")
    p.add_argument("--as", dest="by", default=WHO, help="who holds it (default: user@host)")
    p.set_defaults(func=cmd_hold)

    p = sub.add_parser("unhold", help="let fleet deploys reach HUB in ENV again")
    p.add_argument("hub", metavar="HUB", help="hub directory name under deployments/")
    p.add_argument(
        "environment", metavar="ENV", choices=ALLOWED_ENVIRONMENTS, help="environment in which the hold ends"
    )
    p.add_argument("--as", dest="by", default=WHO, help="who releases it (default: user@host)")
    p.set_defaults(func=cmd_unhold)


# --- rollout ---------------------------------------------------------------------------------------------


def cmd_rollout(args: argparse.Namespace) -> int:
    repo = load_repo(Path.cwd())
    with prefect_server():
        run_id = _start_remote(args, repo) if args.remote else _start_here(args, repo.root)
        return _report(run_id, args.environment)


def _start_remote(args: argparse.Namespace, repo: Any) -> Any:
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    branch = repo.settings.prod_branch if args.environment == "prod" else repo.settings.staging_branch
    parameters = {
        "env": args.environment,
        "branch": branch,
        "wave": args.wave,
        "hubs": args.hubs or None,
        **({"repo_url": args.repo_url} if args.repo_url else {}),
        "trigger": f"hubploy rollout --remote by {WHO}",
        "redeploy": args.redeploy,
        "timeout": args.timeout,
    }
    try:
        run = run_deployment(
            ROLLOUT_DEPLOYMENT,
            parameters=parameters,
            timeout=0,
            flow_run_name=f"rollout-{args.environment}-{secrets.token_hex(3)}",
        )
        assert isinstance(run, FlowRun)  # the sync client's answer
    except ObjectNotFound:
        raise HubployError(
            f"no Prefect deployment {ROLLOUT_DEPLOYMENT}",
            hint="register prefect.yaml's deployments (`hubploy up`, or `prefect deploy --all`)",
        ) from None
    console.print(f"started {run.name} ({run.id}) of {ROLLOUT_DEPLOYMENT}", highlight=False)
    return run.id


def _start_here(args: argparse.Namespace, root: Path) -> Any:
    """Run the rollout flow in a thread of this process; its flow run id once the server knows it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from flows.rollout import rollout

    name = f"rollout-{args.environment}-{secrets.token_hex(3)}"
    flow = rollout.with_options(flow_run_name=name)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            flow(
                args.environment,
                repo_path=str(root),
                wave=args.wave,
                hubs=args.hubs or None,
                trigger=f"hubploy rollout by {WHO}",
                redeploy=args.redeploy,
                timeout=args.timeout,
                return_state=True,
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)

    # the progress table says what the run's log lines would (a failed hub's task logs an error)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for runs in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(runs).setLevel(logging.CRITICAL)
    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), name="rollout", daemon=True)
    thread.start()
    with get_client(sync_client=True) as client:
        while True:
            found = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
            if found:
                return found[0].id
            if not thread.is_alive():
                raise failure[0] if failure else HubployError("the rollout ended before it started")
            time.sleep(0.2)


def _report(run_id: Any, env: str) -> int:
    """Follow the run, then show how each hub ended (its table artifact) and the final state."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from hubploy.cli.rollout_progress import follow

    run = follow(run_id, env, console=console)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    data = next((a.data for a in artifacts if a.key == f"rollout-{env}"), None)
    rows: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else []
    if rows:
        result = Table(*rows[0].keys(), title=f"rollout of {env}")
        for row in rows:
            result.add_row(*(_short(str(value)) for value in row.values()))
        console.print(result)
    state = run.state
    line = f"{run.name}: {state.name}" + (f": {state.message}" if state and state.message else "")
    if state is not None and state.is_completed():
        console.print(line, highlight=False)
        return 0
    print(f"error: {line}", file=sys.stderr)
    return 1


def _short(text: str, limit: int = 90) -> str:
    """A table cell: the first line, cut at ``limit`` characters (the state message has it all)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --- rollback --------------------------------------------------------------------------------------------


def cmd_rollback(args: argparse.Namespace) -> int:
    from blocks.resolve import credentials
    from hubploy import helm
    from hubploy.deploy import rollback_hub
    from hubploy.deploy.model import Target
    from hubploy.runner import child_env
    from hubploy.verified import verification

    repo = load_repo(Path.cwd())
    hub = repo.load_hub(args.hub)
    env = child_env()
    source = credentials(repo, env)
    revision = args.revision
    if args.to_verified:
        with source.cluster_access(hub, args.environment) as access:
            found = verification(
                Target.of(
                    helm.helm_executable(env),
                    hub.release(args.environment),
                    hub.namespace(args.environment),
                    access,
                )
            )
        if found.verified is None:
            raise DeployError(
                f"{found.release} has no verified revision",
                hint="a revision is verified when it passes its checks and soak in a rollout "
                "(`hubploy rollout`); roll back with --revision N instead",
            )
        if found.serves_verified:
            console.print(found.why_not_return(), highlight=False)
            return 0
        revision = found.verified.revision
    for name in ("hubploy.deploy", "hubploy.health"):
        logging.getLogger(name).setLevel(logging.INFO)
    result = rollback_hub(
        repo,
        args.hub,
        args.environment,
        revision=revision,
        credentials=source,
        base_env=env,
        health_check=args.health_check,
        timeout=args.timeout or repo.settings.helm_timeout,
    )
    console.print(
        f"{result.release}: {result.outcome} (revision {result.revision_before or 'none'} -> "
        f"{result.revision_after or 'none'}, {result.duration:.1f} s): {result.message}",
        highlight=False,
    )
    return 0


# --- hold, unhold ----------------------------------------------------------------------------------------


def cmd_hold(args: argparse.Namespace) -> int:
    from flows.tasks import holds

    if args.hub is None:
        with prefect_server():
            found = holds.holds()
        view = Table("hub", "env", "release", "held by", "since", "reason", title=f"{len(found)} hold(s)")
        for held in sorted(found.values(), key=lambda h: h.release):
            view.add_row(held.hub, held.env, held.release, held.by, held.since, held.reason)
        console.print(view)
        return 0
    if args.environment is None:
        raise HubployError("hold needs a hub and an environment", hint="hubploy hold HUB ENV --reason TEXT")
    if not args.reason.strip():
        raise HubployError("a hold needs a reason", hint="--reason 'final exams until Friday'")
    release = load_repo(Path.cwd()).load_hub(args.hub).release(args.environment)
    with prefect_server():
        held = holds.hold(args.hub, args.environment, release, reason=args.reason.strip(), by=args.by)
    console.print(
        f"{release}: {held.describe()}; fleet deploys skip it until `hubploy unhold {args.hub} "
        f"{args.environment}`",
        highlight=False,
    )
    return 0


def cmd_unhold(args: argparse.Namespace) -> int:
    from flows.tasks import holds

    release = load_repo(Path.cwd()).load_hub(args.hub).release(args.environment)
    with prefect_server():
        held = holds.unhold(release, by=args.by)
    console.print(
        f"{release}: " + (f"hold released ({held.describe()})" if held else "was not held"), highlight=False
    )
    return 0
