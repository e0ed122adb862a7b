"""`hubploy plan [--since REF]` and `hubploy diff <hub> <env>`: what a rollout would touch, as tables.

`plan` reads only the checkout (no cluster, no Prefect): which hubs a change touches, why, which of
their images it changes, and the wave each hub is deployed in. `diff` compares what a hub's release
runs now with what the checkout renders for it, resource by resource (helm hooks aside), with Secret
contents replaced by digests.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from hubploy.config.models import ALLOWED_ENVIRONMENTS
from hubploy.git import changed_files
from hubploy.layout import load_repo
from hubploy.manifest_diff import HOOK_ANNOTATION, FieldPath
from hubploy.planner import HubPlan, Plan, plan_repo
from hubploy.rollout import plan_waves

console = Console()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="which hubs a change touches, and the waves a rollout deploys them in")
    p.add_argument(
        "--since",
        metavar="REF",
        help="only the hubs that the changes since REF touch (commits and uncommitted edits); "
        "default: every hub",
    )
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("diff", help="what a deploy of HUB to ENV would change in its running release")
    p.add_argument("hub", metavar="HUB", help="hub directory name under deployments/")
    p.add_argument(
        "environment",
        metavar="ENV",
        choices=ALLOWED_ENVIRONMENTS,
        help="environment whose release is compared",
    )
    p.set_defaults(func=cmd_diff)


def cmd_plan(args: argparse.Namespace) -> int:
    repo = load_repo(Path.cwd())
    if args.since:
        plan = plan_repo(repo, changed_files(repo.root, args.since))
        title = f"changes since {args.since}: {plan.summary()}"
    else:
        why = "a full rollout"
        plan = Plan(tuple(HubPlan(hub, (why,), ()) for hub in repo.hub_names()), why)
        title = f"a rollout of all {len(plan.hubs)} hub(s)"
    table = plan_table(plan, repo.settings.rollout)
    table.title = title
    console.print(table)
    if plan.ignored:
        console.print(f"[dim]not deploying anything: {', '.join(plan.ignored)}[/]")
    return 0


def plan_table(plan: Plan, rollout: Any) -> Table:
    """One row per hub, in rollout order: its wave, why it is in the plan, which images changed."""
    table = Table("wave", "hub", "why", "images changed", "soak", "max parallel")
    reasons = {h.hub: h for h in plan.hubs}
    for wave in plan_waves(plan.hub_names, rollout):
        for index, hub in enumerate(wave.hubs):
            first, why = index == 0, reasons[hub].reasons
            table.add_row(
                f"{wave.number}. {wave.name}" if first else "",
                hub,
                ", ".join(why[:3]) + (" …" if len(why) > 3 else ""),
                ", ".join(reasons[hub].images_changed) or "–",
                f"{wave.soak_seconds:g} s" if first and wave.soak_seconds else "",
                str(wave.max_parallel or "") if first else "",
                end_section=index == len(wave.hubs) - 1,
            )
    return table


def cmd_diff(args: argparse.Namespace) -> int:
    from blocks.resolve import credentials
    from hubploy import helm
    from hubploy.render import deployed_manifest, render_manifest
    from hubploy.runner import child_env

    repo = load_repo(Path.cwd())
    hub = repo.load_hub(args.hub)
    env = child_env()
    release, namespace = hub.release(args.environment), hub.namespace(args.environment)
    with credentials(repo, env).cluster_access(hub, args.environment) as access:
        cluster_env = {**access.env, "KUBECONFIG": str(access.kubeconfig)}
        running = deployed_manifest(
            helm.helm_executable(cluster_env),
            release,
            namespace,
            env=cluster_env,
            kube_context=access.context,
        )
    rendered = render_manifest(repo, args.hub, args.environment, base_env=env)
    changes = resource_changes(running or "", rendered.manifest, rendered.generated)
    table = Table(
        "resource",
        "change",
        title=f"{release} in {namespace}: "
        + ("not installed" if running is None else f"{len(changes)} resource(s) would change")
        + " (helm hooks not compared)",
    )
    for change in changes:
        table.add_row(change.resource, change.kind)
    console.print(table)
    if not changes:
        console.print("no change: the release runs what this checkout renders")
    for change in changes:
        console.rule(f"{change.resource} ({change.kind})")
        console.print(Syntax(change.diff, "diff", theme="ansi_dark", word_wrap=True))
    return 0


@dataclass(frozen=True)
class ResourceChange:
    resource: str  # kind/name
    kind: str  # added | removed | changed
    diff: str  # as manifest_diff shows it (Secret contents as digests)


def resource_changes(
    old: str, new: str, generated: frozenset[FieldPath] = frozenset()
) -> list[ResourceChange]:
    """Each resource that differs between two manifests, with its own diff; ``generated``: the fields the
    chart generates at random (masked on both sides, as in the approval form's diff)."""
    from hubploy.manifest_diff import manifest_diff

    before, after = _resources(old), _resources(new)
    changes = []
    for key in sorted(before.keys() | after.keys()):
        diff = manifest_diff(
            before.get(key, ""),
            after.get(key, ""),
            old_label=f"{key} running",
            new_label=f"{key} this checkout",
            generated=generated,
        )
        if diff:
            kind = "added" if key not in before else "removed" if key not in after else "changed"
            changes.append(ResourceChange(key, kind, diff))
    return changes


def _resources(manifest: str) -> dict[str, str]:
    """{kind/name: YAML} of a manifest's resources. Helm hooks are left out: a release's manifest has none
    (helm keeps them apart, and deletes them once they succeed), a render has all."""
    found = {}
    for doc in yaml.safe_load_all(manifest):
        if isinstance(doc, dict):
            meta = doc.get("metadata") or {}
            if HOOK_ANNOTATION not in (meta.get("annotations") or {}):
                found[f"{doc.get('kind', '?')}/{meta.get('name', '?')}"] = yaml.safe_dump(doc)
    return found
