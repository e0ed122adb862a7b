"""Step 5, namespaces: helm 3 no longer creates a release's namespace; a deploy creates it when the
release has no history, and removes it again when nothing was deployed into it."""

from __future__ import annotations

import time

from hubploy.deploy.model import Logger, Target, log
from hubploy.deploy.release import last_line
from hubploy.errors import DeployError
from hubploy.health import kubectl_argv
from hubploy.runner import run


def ensure_namespace(target: Target, *, logger: Logger = log, terminating_timeout: float = 120.0) -> bool:
    """Create the target's namespace unless it exists; True if it was created.

    A namespace still being deleted is waited for, then created again.
    """
    namespace, env = target.namespace, target.env
    deadline = time.monotonic() + terminating_timeout
    while True:
        phase = ["get", "namespace", namespace, "-o", "jsonpath={.status.phase}"]
        got = run(kubectl_argv(env, target.context, *phase), env=env, check=False)
        if got.returncode != 0 and "NotFound" not in got.stderr:
            raise DeployError(f"cannot read namespace {namespace}: {last_line(got.stderr)}")
        if got.returncode == 0 and got.stdout.strip() != "Terminating":
            return False
        if got.returncode != 0:
            break
        if time.monotonic() > deadline:
            raise DeployError(
                f"namespace {namespace} is still being deleted after {terminating_timeout:.0f} s",
                hint=f"see `kubectl get namespace {namespace} -o yaml` for what blocks its deletion",
            )
        logger.info("namespace %s is being deleted; waiting to create it again", namespace)
        time.sleep(1.0)
    logger.info("creating namespace %s", namespace)
    made = run(kubectl_argv(env, target.context, "create", "namespace", namespace), env=env, check=False)
    if made.returncode != 0 and "AlreadyExists" not in made.stderr:
        raise DeployError(f"cannot create namespace {namespace}: {last_line(made.stderr)}")
    return made.returncode == 0


def remove_namespace(target: Target, *, logger: Logger = log) -> None:
    """Delete a namespace this deploy created when nothing was deployed into it (best effort)."""
    logger.info("removing namespace %s, created for this deploy: nothing was deployed", target.namespace)
    run(
        kubectl_argv(target.env, target.context, "delete", "namespace", target.namespace, "--wait=false"),
        env=target.env,
        check=False,
    )
