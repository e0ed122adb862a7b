"""A stand-in for helm and kubectl against one imaginary cluster, for unit tests of the deploy sequence.

Run as ``python fake_cluster.py helm|kubectl ARGS...``; the cluster is the JSON file named by
``FAKE_CLUSTER_STATE``: ``{"releases": {name: [revision, ...]}, "namespaces": [...], "calls": [...],
"upgrade": "ok" | "render-error" | "not-ready", "rollback": "ok" | "fail", "api": "ok" | "unreachable",
"objects": [...], "events": [...], "logs": {pod: text}}`` (the last three: what ``kubectl get`` and
``kubectl logs`` answer).
Every call is logged in ``calls``. It answers the argv that hubploy.helm builds, with helm 3's
output and exit codes.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from typing import Any

State = dict[str, Any]


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def supersede(revisions: list[dict[str, Any]]) -> None:
    for revision in revisions:
        if revision["status"] == "deployed":
            revision["status"] = "superseded"


def append(revisions: list[dict[str, Any]], status: str, description: str) -> int:
    number = revisions[-1]["revision"] + 1 if revisions else 1
    revisions.append(
        {
            "revision": number,
            "status": status,
            "chart": "hub-0.1.0",
            "app_version": "5",
            "updated": "now",
            "description": description,
        }
    )
    return number


def fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def helm_upgrade(state: State, args: list[str]) -> int:
    name = args[args.index("--namespace") + 2]
    if "--dry-run" in args:
        print("---\nkind: Secret\ndata:\n  token: c2VjcmV0\n")
        return 0
    revisions = state["releases"].setdefault(name, [])
    mode = state.get("upgrade", "ok")
    if mode == "render-error":
        if not revisions:
            del state["releases"][name]
        return fail("Error: template: hub/templates/broken.yaml:3: nil pointer evaluating .no.such")
    if mode == "not-ready":
        deployed = [r for r in revisions if r["status"] in ("deployed", "superseded")]
        append(revisions, "failed", "Upgrade failed: context deadline exceeded")
        if "--atomic" in args and deployed:
            supersede(revisions)
            append(revisions, "deployed", f"Rollback to {deployed[-1]['revision']}")
        elif "--atomic" in args:  # helm 3 uninstalls a failed first install, history and all
            del state["releases"][name]
        return fail("Error: UPGRADE FAILED: context deadline exceeded")
    supersede(revisions)
    number = append(revisions, "deployed", option(args, "--description") or "Upgrade complete")
    print(f'Release "{name}" has been upgraded.\nSTATUS: deployed\nREVISION: {number}')
    print("NOTES:\nREVISION: 99")  # the chart's notes: not helm's revision
    return 0


def helm(state: State, args: list[str]) -> int:
    verb = args[0]
    if verb == "version":
        print("v3.17.2+gfake")
        return 0
    if verb == "dependency":
        return 0
    if verb == "upgrade":
        return helm_upgrade(state, args)
    name = args[1]
    if state.get("api") == "unreachable":
        return fail("Error: Kubernetes cluster unreachable: dial tcp 127.0.0.1:6443: connection refused")
    if name not in state["releases"]:
        return fail("Error: release: not found")
    revisions = state["releases"][name]
    if verb == "history":
        print(json.dumps(revisions))
        return 0
    if verb == "rollback":
        if state.get("rollback") == "fail":
            return fail("Error: release has no deployed revision to roll back to: timed out waiting")
        supersede(revisions)
        append(revisions, "deployed", f"Rollback to {args[2]}")
        return 0
    if verb == "uninstall":
        del state["releases"][name]
        return 0
    return fail(f"Error: the fake helm has no {verb}")


def kubectl(state: State, args: list[str]) -> int:
    if args[0] == "--context":
        args = args[2:]
    if args[0] == "logs":  # logs -n NS POD -c CONTAINER ...: the pod's canned log
        print(state.get("logs", {}).get(args[3], ""))
        return 0
    if args[0] == "get" and args[1] != "namespace":  # the objects (and events) a diagnosis reads
        print(json.dumps({"items": state.get("events" if args[1] == "events" else "objects", [])}))
        return 0
    verb, kind, namespace = args[0], args[1], args[2]
    assert kind == "namespace", args
    if verb == "get":
        if namespace not in state["namespaces"]:
            return fail(f'Error from server (NotFound): namespaces "{namespace}" not found')
        print("Active", end="")
    elif verb == "create":
        state["namespaces"].append(namespace)
    elif verb == "delete":
        state["namespaces"].remove(namespace)
    return 0


def main() -> int:
    tool, args = sys.argv[1], sys.argv[2:]
    with open(os.environ["FAKE_CLUSTER_STATE"], "r+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)  # one call at a time, as the API server orders writes
        state = json.load(file)
        state["calls"].append([tool, *args])
        code = helm(state, args) if tool == "helm" else kubectl(state, args)
        file.seek(0)
        file.truncate()
        json.dump(state, file)
    return code


if __name__ == "__main__":
    sys.exit(main())
