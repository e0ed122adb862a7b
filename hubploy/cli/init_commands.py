"""`hubploy init DIR` and `hubploy new-hub NAME [--from HUB]`: a new deployment repository, a new hub.

Both are non-interactive: every value is a flag. Only on a terminal does init ask for what the chosen
provider still needs; anywhere else a missing value is an error naming the flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from hubploy.runner import child_env
from hubploy.scaffold.clusters import PROVIDERS, ClusterInput, missing_values
from hubploy.scaffold.new_hub import NewHubResult, new_hub
from hubploy.scaffold.repository import (
    DEFAULT_CHART_REPOSITORY,
    DEFAULT_CHART_VERSION,
    InitOptions,
    InitResult,
    init_repository,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="write a new deployment repository with one hub",
        description="Write a deployment repository: an umbrella chart depending on Zero to "
        "JupyterHub, one hub, sops-encrypted secrets, a README and a pull-request "
        "workflow. Existing files are refused unless --force.",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="the repository's directory (created when missing)")
    p.add_argument("--hub", default="hub", help="the hub's name (default: hub)")
    p.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="kubeconfig",
        help="how hubploy reaches the cluster (default: kubeconfig)",
    )
    cluster = p.add_argument_group("cluster")
    cluster.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="PATH",
        help="kubeconfig whose context is encrypted into the hub's secrets (without it: the "
        "caller's KUBECONFIG at deploy time)",
    )
    cluster.add_argument("--context", help="the kubeconfig's context to use (default: its current context)")
    cluster.add_argument("--project", metavar="ID", help="GCP project (gcloud)")
    cluster.add_argument("--cluster", metavar="NAME", help="cluster name (gcloud, aws, azure)")
    cluster.add_argument("--zone", help="GKE zone (gcloud)")
    cluster.add_argument("--region", help="GKE region (gcloud) or AWS region (aws)")
    cluster.add_argument("--resource-group", metavar="RG", help="Azure resource group (azure)")
    cluster.add_argument("--role-arn", metavar="ARN", help="IAM role hubploy assumes (aws)")
    cluster.add_argument(
        "--credentials-file",
        type=Path,
        metavar="PATH",
        help="credentials encrypted into the hub's secrets: a GCP service-account key, an "
        "AWS credentials file, an Azure service principal (`az ad sp "
        "create-for-rbac` output)",
    )
    cluster.add_argument(
        "--credentials-block", metavar="NAME", help="a Prefect credentials block to use instead of a key file"
    )
    image = p.add_argument_group("user image")
    image.add_argument(
        "--registry",
        metavar="HOST/PATH",
        help="the user image's repository (an image built from the hub's image/ directory); "
        "without it users get the chart's default image",
    )
    image.add_argument(
        "--base-image",
        metavar="IMAGE",
        help="the image's Dockerfile's FROM (default: the chart's k8s-singleuser-sample)",
    )
    keys = p.add_argument_group("secrets")
    keys.add_argument("--age-recipient", metavar="AGE1...", help="encrypt the secrets to this age recipient")
    keys.add_argument(
        "--age-key-file",
        type=Path,
        metavar="PATH",
        help="without --age-recipient: the age key (reused when it exists, else made 0600); "
        "default ~/.config/hubploy/age/<DIR name>.key",
    )
    chart = p.add_argument_group("chart")
    chart.add_argument(
        "--chart-version",
        metavar="VERSION",
        help=f"the jupyterhub chart's version (default {DEFAULT_CHART_VERSION}, or --chart-path's)",
    )
    chart.add_argument(
        "--chart-repository",
        metavar="URL",
        default=DEFAULT_CHART_REPOSITORY,
        help=f"where helm gets the chart (default {DEFAULT_CHART_REPOSITORY}; a mirror, oci://)",
    )
    chart.add_argument(
        "--chart-path",
        type=Path,
        metavar="DIR",
        help="a jupyterhub chart on this machine, copied into the repository "
        "(charts/jupyterhub) as a file:// dependency",
    )
    p.add_argument(
        "--git",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="git init with the branches staging and prod at one commit (default: --git)",
    )
    p.add_argument(
        "--pip-spec",
        metavar="SPEC",
        help="what the pull-request workflow installs with pip (default: this hubploy's version)",
    )
    p.add_argument("--force", action="store_true", help="replace files DIR already has")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("new-hub", help="add a hub to the deployment repository, validated at once")
    p.add_argument("name", metavar="NAME", help="the new hub's name (its directory under deployments/)")
    p.add_argument(
        "--from",
        dest="source",
        metavar="HUB",
        help="copy this hub's configuration (its hubploy.yaml, config/ and image dirs, not its secrets)",
    )
    p.add_argument(
        "--repo", type=Path, default=Path("."), metavar="DIR", help="the deployment repository (default: .)"
    )
    p.set_defaults(func=cmd_new_hub)


def _cluster_input(args: argparse.Namespace) -> ClusterInput:
    cluster = ClusterInput(
        provider=args.provider,
        kubeconfig=args.kubeconfig,
        context=args.context,
        project=args.project,
        cluster=args.cluster,
        zone=args.zone,
        region=args.region,
        resource_group=args.resource_group,
        role_arn=args.role_arn,
        credentials_file=args.credentials_file,
        credentials_block=args.credentials_block,
    )
    if not sys.stdin.isatty():
        return cluster
    answers: dict[str, Any] = {}
    for missing in missing_values(cluster, args.registry):
        answer = input(f"{missing.question} ({missing.flag}): ").strip()
        if answer:
            is_path = missing.field == "credentials_file"
            answers[missing.field] = Path(answer).expanduser() if is_path else answer
    return dataclasses.replace(cluster, **answers)


def cmd_init(args: argparse.Namespace) -> int:
    options = InitOptions(
        target=args.dir,
        hub=args.hub,
        cluster=_cluster_input(args),
        registry=args.registry,
        base_image=args.base_image,
        age_recipient=args.age_recipient,
        age_key_file=args.age_key_file,
        chart_version=args.chart_version,
        chart_repository=args.chart_repository,
        chart_path=args.chart_path,
        git=args.git,
        force=args.force,
        pip_spec=args.pip_spec,
    )
    _print_init(init_repository(options, child_env()), has_images=bool(args.registry))
    return 0


def _print_init(result: InitResult, *, has_images: bool) -> None:
    print(f"wrote {result.root}: {len(result.files)} files, hub {result.hub}")
    if result.replaced:
        print(f"replaced: {', '.join(result.replaced)}")
    if result.key_file is None:
        print(f"secrets encrypted to {result.recipient}")
    else:
        made = "new age key" if result.key_created else "existing age key"
        print(
            f"secrets encrypted to {result.recipient}, with the {made} {result.key_file} (0600; keep it "
            "safe: it decrypts every secret; never commit it)"
        )
    if result.commit:
        print(f"git: branches staging and prod at {result.commit[:12]}")
    print("next:")
    print(f"  cd {result.root}")
    if result.key_file is not None:
        print(f"  export SOPS_AGE_KEY_FILE={result.key_file}")
    print("  hubploy validate")
    if has_images:
        print(f"  hubploy build {result.hub} --check-registry --push")
    print(f"  hubploy deploy {result.hub} hub staging")
    print("  git remote add origin <URL> && git push -u origin staging prod   (see README.md)")


def cmd_new_hub(args: argparse.Namespace) -> int:
    result = new_hub(args.repo, args.name, source=args.source, env=child_env())
    _print_new_hub(result)
    return 0


def _print_new_hub(result: NewHubResult) -> None:
    copied = f", copied from {result.source} without its secrets" if result.source else ""
    print(f"added hub {result.hub} in {result.dir}{copied}; new secrets for {', '.join(result.environments)}")
    for old, new in result.images:
        print(f"image {old} -> {new} (build it: hubploy build {result.hub} --push)")
    for key in result.key_files:
        print(f"key file shared with {result.source}: secrets/{key}")
    for change in result.changed:
        print(change)
    if not result.comments_kept:
        print("hubploy.yaml was written anew: the comments of the copied one are not in it")
    print(
        f"ok: hubploy validate {result.hub} --no-decrypt passes; review deployments/{result.hub}/config/, "
        "then commit"
    )
