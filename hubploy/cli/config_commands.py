"""`hubploy validate`, `hubploy schema` and `hubploy render`: config checks that touch no cluster."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hubploy.config.models import HubConfig, RepoSettings
from hubploy.errors import ConfigError
from hubploy.validate import validate_repo


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check every hub's config (or the named hubs) and report all errors")
    p.add_argument(
        "hubs", nargs="*", metavar="HUB", help="hub directory names under deployments/ (default: all)"
    )
    p.add_argument(
        "--no-decrypt",
        dest="decrypt",
        action="store_false",
        help="check the secret values files' keys and types without decrypting them (no sops key needed)",
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "render",
        help="print what a deploy of HUB to ENV would apply (helm template; secrets "
        "redacted, values the chart generates at random masked); touches no "
        "cluster",
    )
    p.add_argument("hub", metavar="HUB", help="hub directory name under deployments/")
    p.add_argument(
        "environment",
        metavar="ENV",
        choices=["develop", "staging", "prod"],
        help="environment whose values are layered",
    )
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("schema", help="print the JSON Schema of hubploy.yaml (or of hubploy-repo.yaml)")
    p.add_argument("--repo", action="store_true", help="print the schema of hubploy-repo.yaml instead")
    p.set_defaults(func=cmd_schema)


def cmd_validate(args: argparse.Namespace) -> int:
    root = Path.cwd()
    issues = validate_repo(root, args.hubs, decrypt=args.decrypt)
    if issues:
        raise ConfigError(issues)
    from hubploy.layout import load_repo

    checked = args.hubs or load_repo(root).hub_names()
    print(f"ok: {len(checked)} hub(s) valid: {', '.join(checked)}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from hubploy.layout import load_repo
    from hubploy.render import prepared_values, render, shown
    from hubploy.runner import child_env

    repo = load_repo(Path.cwd())
    env = child_env()
    with prepared_values(repo, repo.load_hub(args.hub), args.environment, base_env=env) as prepared:
        sys.stdout.write(shown(render(prepared, env=env), prepared.secret_strings))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    model = RepoSettings if args.repo else HubConfig
    json.dump(model.model_json_schema(), sys.stdout, indent=2)
    print()
    return 0
