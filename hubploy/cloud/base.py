"""What every provider shares: the per-run access record, private files (in the run's private
directory, hubploy.workspace.private_dir), contexts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hubploy import runner
from hubploy.errors import CommandError, CommandNotFoundError, CredentialsError


@dataclass(frozen=True)
class ClusterAccess:
    """Access to one cluster for one run; valid only inside the context that yielded it."""

    kubeconfig: Path  # temp kubeconfig for this one run (the caller's own without a cluster section)
    env: dict[str, str]  # full env for child processes (helm/kubectl): base env, KUBECONFIG, cloud vars
    context: str | None  # kube context to pass as --kube-context (placeholder filled), or None

    def kube_args(self) -> list[str]:
        """``--kubeconfig`` (and ``--kube-context``) for helm."""
        args = ["--kubeconfig", str(self.kubeconfig)]
        return args + ["--kube-context", self.context] if self.context else args

    def kubectl_args(self) -> list[str]:
        """``--kubeconfig`` (and ``--context``) for kubectl."""
        args = ["--kubeconfig", str(self.kubeconfig)]
        return args + ["--context", self.context] if self.context else args


def fill_context(template: str | None, namespace: str) -> str | None:
    """A kube context name with ``{namespace}`` replaced (hubploy PR #121)."""
    return template.replace("{namespace}", namespace) if template else None


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to a new 0600 file (never through a world-readable moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def kube_env(
    base_env: Mapping[str, str],
    kubeconfig: Path,
    extra: Mapping[str, str] | None = None,
    drop: tuple[str, ...] = (),
) -> dict[str, str]:
    """``base_env`` without ``drop``, plus ``extra`` and KUBECONFIG."""
    env = {k: v for k, v in base_env.items() if k not in drop}
    env.update(extra or {})
    env["KUBECONFIG"] = str(kubeconfig)
    return env


def load_kubeconfig(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CredentialsError(f"{path}: not a readable kubeconfig: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{path}: not a kubeconfig (expected a mapping)")
    return data


def credentials_failed(what: str, exc: CommandError) -> CredentialsError | CommandError:
    """A failed cloud CLI call as a CredentialsError (a missing program stays as it is)."""
    if isinstance(exc, CommandNotFoundError):
        return exc
    return CredentialsError(f"{what} failed: {_detail(exc)}", hint=exc.hint)


def _detail(exc: CommandError) -> str:
    """The telling line of a CLI's stderr: its first ERROR line (gcloud, az print advice after it)."""
    lines = [line.strip() for line in exc.stderr_tail.splitlines() if line.strip()]
    if not lines:
        return f"exit code {exc.returncode}"
    errors = [line for line in lines if line.upper().startswith("ERROR")]
    return (errors[0] if errors else lines[-1])[:400]


def verify_access(access: ClusterAccess, *, kubectl: str = "kubectl") -> None:
    """Check that the API server accepts the credentials (GET /version with them).

    Raises CredentialsError when the server rejects them (401) or cannot be reached.
    """
    try:
        runner.run([kubectl, *access.kubectl_args(), "get", "--raw", "/version"], env=access.env, timeout=60)
    except CommandNotFoundError:
        raise
    except CommandError as exc:
        rejected = any(s in exc.stderr_tail for s in ("Unauthorized", "must be logged in", "401"))
        what = "rejected the credentials" if rejected else "cannot be reached with these credentials"
        raise CredentialsError(
            f"the Kubernetes API server {what}: {_detail(exc)}",
            hint="check the token or certificate of the cluster credentials"
            if rejected
            else "check the server address and CA of the cluster credentials",
        ) from None
