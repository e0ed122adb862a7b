"""`hubploy sandbox install | up | down | status | env`: the local platform (see hubploy_sandbox)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _paths():
    from hubploy_sandbox.paths import SandboxPaths

    return SandboxPaths.from_env()


def _say(line: str) -> None:
    print(line, flush=True)


def cmd_install(args: argparse.Namespace) -> int:
    from hubploy_sandbox.install import install

    start = time.monotonic()
    install(_paths(), say=_say)
    _say(f"sandbox install: done in {time.monotonic() - start:.1f} s")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from hubploy_sandbox.lifecycle import up

    up(_paths(), clusters=args.clusters, use_kubeconfig=args.use_kubeconfig, say=_say)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from hubploy_sandbox.lifecycle import down

    down(_paths(), say=_say)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from hubploy_sandbox.lifecycle import status
    from hubploy_sandbox.versions import ETCD_VERSION, KUBERNETES_VERSION

    rows = status(_paths())
    print(f"{'kubernetes':<28} {KUBERNETES_VERSION} (etcd {ETCD_VERSION})")
    for row in rows:
        state = "running" if row.running else "stopped"
        extra = "".join(
            [
                f" pid {row.pid}" if row.pid else "",
                f" on {row.where}" if row.where else "",
                f" ({row.detail})" if row.detail else "",
            ]
        )
        print(f"{row.name:<28} {state}{extra}")
    return 0 if all(r.running for r in rows) else 1


def cmd_env(args: argparse.Namespace) -> int:
    from hubploy_sandbox.env import sandbox_env, shell_exports

    sys.stdout.write(shell_exports(sandbox_env()))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="a real local platform: Kubernetes API, helm, registry, buildah, sops",
        description=__doc__.splitlines()[0],
    )
    sub = parser.add_subparsers(dest="sandbox_command", metavar="ACTION", required=True)
    sub.add_parser(
        "install",
        help="install what is missing (apt, pip, helm, Kubernetes and etcd builds, image environments)",
    ).set_defaults(func=cmd_install)
    up = sub.add_parser("up", help="start everything on this host and wait until it is ready")
    up.add_argument(
        "--clusters",
        type=int,
        default=1,
        metavar="N",
        help="run N Kubernetes clusters (contexts sandbox, sandbox-2, ...; default 1)",
    )
    up.add_argument(
        "--use-kubeconfig",
        type=Path,
        metavar="PATH",
        help="use this existing cluster instead of starting Kubernetes (also: HUBPLOY_SANDBOX_KUBECONFIG)",
    )
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop what `up` started and remove its data").set_defaults(func=cmd_down)
    sub.add_parser("status", help="say what runs").set_defaults(func=cmd_status)
    sub.add_parser("env", help='print shell exports: eval "$(hubploy sandbox env)"').set_defaults(
        func=cmd_env
    )
