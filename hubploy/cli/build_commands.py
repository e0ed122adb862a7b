"""`hubploy build <hub>`: classic hubploy's build command (decision rules, tags, flags), daemonless.

Credentials: HUBPLOY_REGISTRY_USERNAME/PASSWORD when HUBPLOY_REGISTRY is the image's registry host,
else the hub's ``images.registry`` (key files decrypted with sops, or a credentials block).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from blocks.resolve import credentials
from hubploy import git
from hubploy.build import CACHE_DEPTH, BuildBackend, build_image
from hubploy.commitrange import detect_commit_range
from hubploy.images import ImagePlan, plan_hub, select_images
from hubploy.layout import Hub, load_repo
from hubploy.registry import AuthFiles, RegistryCredentials, auth_files, manifest_digest, split_repository
from hubploy.registry_login import credentials_from_env
from hubploy.runner import child_env


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build (and push) the hub's images that need it")
    p.add_argument("hub", help="hub directory name under deployments/")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--check-registry", action="store_true", help="build an image when name:tag is not in the registry"
    )
    mode.add_argument(
        "--commit-range",
        metavar="RANGE",
        help="build an image when files under its path changed in RANGE (e.g. A...B)",
    )
    p.add_argument("--push", action="store_true", help="push after building")
    p.add_argument("--no-cache", action="store_true", help="don't pull earlier images to use as build cache")
    p.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="NAME",
        help="only the image with this fully qualified name (no tag); repeatable",
    )
    p.set_defaults(func=cmd_build)


def registry_credentials(hub: Hub, hosts: list[str], environ: Mapping[str, str]) -> list[RegistryCredentials]:
    """Credentials for each host that has some: the env first, then the hub's registry config."""
    source = credentials(hub.repo, child_env())
    found = [credentials_from_env(host, environ) or source.registry(hub, host) for host in hosts]
    return [c for c in found if c is not None]


def cmd_build(args: argparse.Namespace) -> int:
    repo = load_repo(Path.cwd())
    hub = repo.load_hub(args.hub)
    commit_range = args.commit_range
    if not args.check_registry and not commit_range:
        commit_range = detect_commit_range(repo.root, os.environ)
        print(f"commit range from the GitHub event: {commit_range}", flush=True)
    hosts = sorted({split_repository(s.name)[0] for s in select_images(hub.images, args.image)})
    if args.push or args.check_registry:
        credentials = registry_credentials(hub, hosts, os.environ)
    else:  # as classic hubploy, no registry login for a local build; env credentials still help pull bases
        credentials = [c for c in (credentials_from_env(h, os.environ) for h in hosts) if c is not None]
    by_host = {c.host: c for c in credentials}

    def exists(name: str, tag: str) -> bool:
        return manifest_digest(name, tag, by_host.get(split_repository(name)[0])) is not None

    plans = plan_hub(
        hub, check_registry=args.check_registry, commit_range=commit_range, exists=exists, images=args.image
    )
    from flows.tasks.docker_backend import select_backend

    backend = select_backend(on_line=lambda line: print(f"    {line}", flush=True))
    with auth_files(credentials) as auth:
        for plan in plans:
            _build_one(plan, hub, backend, auth, push=args.push, no_cache=args.no_cache)
    built = sum(p.build for p in plans)
    print(f"{hub.name}: {built} built, {len(plans) - built} skipped", flush=True)
    return 0


def _build_one(
    plan: ImagePlan, hub: Hub, backend: BuildBackend, auth: AuthFiles, *, push: bool, no_cache: bool
) -> None:
    if not plan.build:
        print(f"skip {plan.reference}: {plan.reason}", flush=True)
        return
    assert plan.spec.path is not None
    print(f"build {plan.reference}: {plan.reason} (backend {backend.name})", flush=True)
    older = [] if no_cache else git.candidate_tags(hub.repo.root, plan.spec.path, n=CACHE_DEPTH + 1)
    result = build_image(
        backend, plan.name, plan.tag, plan.spec.path, older_tags=older, no_cache=no_cache, auth=auth
    )
    print(
        f"built {plan.reference} in {result.seconds:.1f} s (cache from {result.cache_from or 'none'})",
        flush=True,
    )
    if push:
        digest = backend.push(plan.reference, auth)
        print(f"pushed {plan.reference} {digest}", flush=True)
