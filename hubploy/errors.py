"""The one exception hierarchy of hubploy.

Every error a user can cause or meet derives from :class:`HubployError`. The CLI reports it in one
place (``hubploy.cli.main``) as a one-line message plus an optional hint, with exit code 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class HubployError(Exception):
    """Base class: ``message`` says what went wrong, ``hint`` what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in one file: where it is and what is wrong."""

    file: Path
    key_path: str
    message: str
    line: int | None = None
    hint: str | None = None

    def format(self, root: Path | None = None) -> str:
        file = self.file
        if root is not None:
            with contextlib.suppress(ValueError):
                file = self.file.resolve().relative_to(root.resolve())
        where = f"{file}:{self.line}" if self.line else f"{file}"
        key = f" {self.key_path}:" if self.key_path else ""
        text = f"{where}:{key} {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class ConfigError(HubployError):
    """A deployment repository has one or more configuration problems; all are listed."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        first = self.issues[0].format() if self.issues else "invalid configuration"
        more = f" (and {len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        super().__init__(first + more, hint=None)


class HubNotFoundError(HubployError):
    """A named hub has no directory under ``deployments/``."""


class CommandError(HubployError):
    """An external program failed. ``argv`` is already redacted."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr_tail: str, *, hint: str | None = None):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        shown = " ".join(self.argv[:4]) + (" …" if len(self.argv) > 4 else "")
        lines = [line.strip() for line in stderr_tail.strip().splitlines() if line.strip()]
        # the program's own error line, not a trailing advice line (helm: "Use --debug flag to render ...")
        errors = [line for line in lines if line.lower().startswith(("error:", "fatal:"))]
        detail = (errors[-1] if errors else lines[-1]) if lines else "no output"
        super().__init__(f"`{shown}` failed with exit code {returncode}: {detail}", hint=hint)


class CommandNotFoundError(CommandError):
    """The program is not installed or not on PATH."""

    def __init__(self, program: str) -> None:
        super().__init__(
            [program], 127, f"{program}: command not found", hint="install it and put it on PATH"
        )


class CommandTimeoutError(CommandError):
    """The program ran longer than allowed and was killed."""


class SecretsError(HubployError):
    """A secret file cannot be used: not encrypted, still locked, or not decryptable."""


class GitError(HubployError):
    """A git repository is not in the state an operation needs."""


class RegistryError(HubployError):
    """A container registry answered with an error. ``status`` is the HTTP status, if any."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status

    @property
    def transient(self) -> bool:
        """True for errors worth retrying: no answer at all, or a 5xx/429."""
        return self.status is None or self.status >= 500 or self.status == 429


class BuildError(HubployError):
    """An image cannot be built."""


class CredentialsError(HubployError):
    """Cluster or registry credentials are missing or rejected."""


class DeployError(HubployError):
    """A helm deploy failed (after any rollback was attempted)."""


class UpgradeError(DeployError):
    """A helm upgrade that changed the release failed. ``reason`` is helm's own error (the message adds
    what was not ready, read from the cluster); ``timed_out``: helm gave up waiting."""

    def __init__(self, message: str, *, reason: str, timed_out: bool, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason
        self.timed_out = timed_out


class HealthCheckError(DeployError):
    """A deployed hub did not answer as a healthy JupyterHub does."""


class ApprovalError(HubployError):
    """An approval cannot be given: wrong run, wrong state, or a freeze window."""
