"""`hubploy webhook serve`: run the GitHub webhook receiver in the foreground."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from hubploy.errors import ConfigError
from hubploy.layout import REPO_SETTINGS_FILE, load_repo, try_load_repo
from hubploy.triggers.routing import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_SECRET_BLOCK, Routes


def register(sub: argparse._SubParsersAction) -> None:
    webhook = sub.add_parser("webhook", help="the GitHub webhook receiver")
    actions = webhook.add_subparsers(dest="webhook_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "serve", help="receive GitHub push/pull_request/ping deliveries and start deployments"
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to bind (default {DEFAULT_PORT})")
    p.add_argument(
        "--secret-block",
        default=DEFAULT_SECRET_BLOCK,
        metavar="NAME",
        help=f"Prefect Secret block holding the webhook secret (default {DEFAULT_SECRET_BLOCK})",
    )
    p.add_argument(
        "--repo",
        type=Path,
        metavar="DIR",
        help="deployment repo whose hubploy-repo.yaml names the staging/prod branches "
        "(default: the current directory if it is one, else branches staging and prod)",
    )
    defaults = Routes()
    for flag, field in (
        ("--lifecycle-deployment", "lifecycle_deployment"),
        ("--prod-deployment", "prod_deployment"),
        ("--pr-validation-deployment", "pr_validation_deployment"),
    ):
        p.add_argument(
            flag,
            dest=field,
            default=getattr(defaults, field),
            metavar="FLOW/DEPLOYMENT",
            help=f"Prefect deployment to start (default {getattr(defaults, field)})",
        )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from hubploy.triggers.webhook import WebhookConfig, serve_webhook

    routes = dataclasses.replace(
        _routes(args.repo),
        lifecycle_deployment=args.lifecycle_deployment,
        prod_deployment=args.prod_deployment,
        pr_validation_deployment=args.pr_validation_deployment,
    )
    print(
        f"webhook receiver: http://{args.host}:{args.port}/webhook "
        f"(staging branch {routes.staging_branch!r}, prod branch {routes.prod_branch!r})",
        flush=True,
    )
    serve_webhook(args.host, args.port, secret_block=args.secret_block, config=WebhookConfig(routes=routes))
    return 0


def _routes(repo_dir: Path | None) -> Routes:
    if repo_dir is not None:
        return Routes.from_repo_settings(load_repo(repo_dir).settings)
    repo, issues = try_load_repo(Path.cwd())
    if repo is None and (Path.cwd() / REPO_SETTINGS_FILE).exists():
        raise ConfigError(issues)
    return Routes.from_repo_settings(repo.settings) if repo else Routes()
