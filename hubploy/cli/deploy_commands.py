"""`hubploy deploy <hub> <chart> <env>`: classic hubploy's deploy, run directly (no Prefect server).

Same arguments as hubploy; what is added: images are checked before helm runs, a stuck release is
recovered, the hub's health is checked after the upgrade and a failed check is rolled back. Rollback
on a failed upgrade (`--atomic`) is on by default here; `--no-atomic` turns it off. A release that
already runs exactly this chart and these values is left alone (`--redeploy` or `--force` upgrades it).
A hub held with `hubploy hold` (on the Prefect server, when one is configured) is refused unless
`--ignore-hold` (helm's `--force` keeps its classic meaning).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from blocks.resolve import credentials
from hubploy.config.models import ALLOWED_ENVIRONMENTS
from hubploy.deploy import DeployOptions, deploy
from hubploy.errors import ConfigError, HubployError
from hubploy.helm import UpgradeFlags
from hubploy.layout import load_repo
from hubploy.runner import child_env
from hubploy.validate import validate_repo


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy", help="deploy a hub with helm: image check, upgrade, health check", description=__doc__
    )
    p.add_argument("hub", help="hub directory name under deployments/")
    p.add_argument("chart", help="path of the local umbrella chart, e.g. hub")
    p.add_argument("environment", choices=ALLOWED_ENVIRONMENTS, help="environment to deploy to")
    p.add_argument("--namespace", help="namespace (default: <hub>-<environment>, or hubploy.yaml's)")
    p.add_argument(
        "--set",
        dest="set_values",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to helm as --set (repeatable)",
    )
    p.add_argument(
        "--set-string",
        dest="set_string_values",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to helm as --set-string (repeatable)",
    )
    p.add_argument("--version", help="chart version (only for charts from a repository)")
    p.add_argument(
        "--timeout",
        type=helm_timeout,
        help="helm timeout: a duration such as 30m, or a number of seconds (default: helm_timeout "
        "of hubploy-repo.yaml, 10m)",
    )
    p.add_argument("--force", action="store_true", help="helm --force (helm 4: --force-replace)")
    p.add_argument(
        "--atomic",
        dest="atomic",
        action="store_true",
        default=True,
        help="roll back a failed upgrade (the default; helm 4: --rollback-on-failure)",
    )
    p.add_argument("--no-atomic", dest="atomic", action="store_false", help="leave a failed upgrade in place")
    p.add_argument("--cleanup-on-fail", action="store_true", help="helm --cleanup-on-fail")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="render and validate with helm --dry-run; prints manifests with secrets redacted",
    )
    p.add_argument(
        "--no-health-check",
        dest="health_check",
        action="store_false",
        help="skip the post-deploy health check (and its rollback)",
    )
    p.add_argument(
        "--redeploy",
        action="store_true",
        help="upgrade even when the release already runs exactly this chart and these values",
    )
    p.add_argument(
        "--ignore-hold",
        action="store_true",
        help="deploy even though the hub is held (`hubploy hold`), or its hold cannot be read",
    )
    p.set_defaults(func=cmd_deploy)


def helm_timeout(value: str) -> str:
    """hubploy's help said seconds but helm wants a duration: a bare number means seconds."""
    return f"{value}s" if re.fullmatch(r"\d+", value) else value


def _refuse_debug_in_ci(args: argparse.Namespace, env: dict[str, str]) -> None:
    """Like modern hubploy: helm debug output and dry runs print values, so not in CI logs."""
    wanted = [
        flag
        for flag, on in (("--helm-debug", getattr(args, "helm_debug", False)), ("--dry-run", args.dry_run))
        if on
    ]
    if wanted and env.get("CI") and not env.get("HUBPLOY_LOCAL_DEBUG"):
        raise HubployError(
            f"{' and '.join(wanted)} refused in CI (CI is set): they can print configuration",
            hint="set HUBPLOY_LOCAL_DEBUG=1 if this is really a local run",
        )


def cmd_deploy(args: argparse.Namespace) -> int:
    env = child_env()
    _refuse_debug_in_ci(args, env)
    repo = load_repo(Path.cwd())
    # every check that needs no cluster (the chart's values schema too) for this environment, before any
    # cluster call; the repo's default chart dir only matters when hubploy-repo.yaml names it (classic
    # repos pass their chart as an argument)
    issues = [
        i
        for i in validate_repo(repo.root, [args.hub], envs=[args.environment], env=env)
        if i.key_path != "chart" or "chart" in repo.settings.model_fields_set
    ]
    if issues:
        raise ConfigError(issues)
    chart = Path(args.chart).resolve()
    if not (chart / "Chart.yaml").is_file():
        raise HubployError(
            f"{args.chart} is not a chart directory (no Chart.yaml)",
            hint=f"this repository's chart is {repo.settings.chart}/",
        )
    flags = UpgradeFlags(
        version=args.version,
        timeout=args.timeout or repo.settings.helm_timeout,
        force=args.force,
        atomic=args.atomic,
        cleanup_on_fail=args.cleanup_on_fail,
        dry_run=args.dry_run,
        debug=getattr(args, "helm_debug", False),
    )
    options = DeployOptions(
        namespace=args.namespace,
        chart=chart,
        set_values=tuple(args.set_values),
        set_string_values=tuple(args.set_string_values),
        flags=flags,
        health_check=args.health_check,
        skip_unchanged=not (args.redeploy or args.force),
    )
    if not (args.ignore_hold or args.dry_run):
        refuse_if_held(args.hub, args.environment, repo.load_hub(args.hub).release(args.environment))
    for name in ("hubploy.deploy", "hubploy.health"):  # progress lines, even without --verbose
        logging.getLogger(name).setLevel(logging.DEBUG if getattr(args, "debug", False) else logging.INFO)
    result = deploy(
        repo, args.hub, args.environment, options=options, base_env=env, credentials=credentials(repo, env)
    )
    if result.rendered is not None:
        sys.stdout.write(result.rendered)
    print(
        f"{result.release}: {result.outcome} (revision {result.revision_before or 'none'} -> "
        f"{result.revision_after or 'none'}, {result.duration:.1f} s)",
        file=sys.stderr,
    )
    return 0


def refuse_if_held(hub: str, env: str, release: str) -> None:
    """Refuse a deploy of a held release. Holds live on the Prefect server: without a configured server
    there are none; a configured server that cannot be read refuses too (the hold is unknown)."""
    from hubploy.cli.prefect_server import prefect_server

    with prefect_server(required=False) as reachable:
        if not reachable:
            return
        from flows.tasks.holds import holds

        try:
            held = holds([release]).get(release)
        except Exception as exc:  # noqa: BLE001 - the client raises plain HTTP and OS errors
            raise HubployError(
                f"cannot read the holds from the Prefect server: {type(exc).__name__}: {exc}",
                hint="retry, or pass --ignore-hold to deploy without checking",
            ) from None
    if held is not None:
        raise HubployError(
            f"{release} is {held.describe()}",
            hint=f"`hubploy unhold {hub} {env}`, or pass --ignore-hold to deploy it anyway",
        )
