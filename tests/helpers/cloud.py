"""Test seam for hubploy.cloud: a recorder that replaces ``hubploy.runner.run`` (the one point every
provider module calls), with optional side effects that stand in for the cloud CLIs."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from hubploy import runner
from hubploy.runner import CommandResult

Effect = Callable[[list[str], dict[str, str]], None]


@dataclass
class Call:
    argv: list[str]
    env: dict[str, str]


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)
    effects: list[tuple[tuple[str, ...], Effect]] = field(default_factory=list)

    def on(self, *prefix: str, effect: Effect) -> None:
        """Run ``effect(argv, env)`` for calls whose argv starts with ``prefix``."""
        self.effects.append((prefix, effect))

    def __call__(
        self, argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str], **kwargs: Any
    ) -> CommandResult:
        args = [os.fspath(a) for a in argv]
        self.calls.append(Call(args, dict(env)))
        for prefix, effect in self.effects:
            if tuple(args[: len(prefix)]) == prefix:
                effect(args, dict(env))
        return CommandResult(args, 0, "", "", 0.0)

    @property
    def argvs(self) -> list[list[str]]:
        return [c.argv for c in self.calls]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(runner, "run", rec)
    return rec


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """A caller env with an empty fake HOME and ambient cloud settings that must not leak through."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "CLOUDSDK_CONFIG": str(home / ".config" / "gcloud"),
        "CLOUDSDK_CORE_ACCOUNT": "someone@example.org",
        "AZURE_CONFIG_DIR": str(home / ".azure"),
        "AWS_PROFILE": "personal",
        "AWS_CONFIG_FILE": str(home / ".aws" / "config"),
    }


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_no_secret_on_argv(rec: Recorder, *secrets: str) -> None:
    for call in rec.calls:
        for arg in call.argv:
            for secret in secrets:
                assert secret not in arg, f"secret on the command line: {call.argv}"


def assert_home_untouched(base_env: Mapping[str, str]) -> None:
    assert list(Path(base_env["HOME"]).rglob("*")) == []


def write_kubeconfig(path: Path, user: dict[str, Any], name: str = "ctx") -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": name,
                "clusters": [{"name": name, "cluster": {"server": "https://203.0.113.1"}}],
                "users": [{"name": name, "user": user}],
                "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            }
        )
    )


def exec_user(command: str, *args: str) -> dict[str, Any]:
    return {
        "exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": command, "args": list(args)}
    }
