"""`hubploy up`: everything on one machine — a local Prefect server (SQLite, loopback, HTTP basic
auth), the sandbox, the blocks, the deployments of prefect.yaml with a process worker, and the
GitHub webhook receiver. Each piece is a detached process with a PID file under HUBPLOY_HOME
(default ~/.hubploy), so `up` is idempotent and `down` stops exactly what `up` started.

Why basic auth: the open-source API hands every stored credential to any client that asks
(`include_secrets=true`), so the server only listens on 127.0.0.1 and requires the auth string kept
in HUBPLOY_HOME/prefect-auth (0600). Only the webhook receiver is meant to face the outside.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from hubploy.errors import HubployError
from hubploy.runner import child_env, run
from hubploy_sandbox import lifecycle as sandbox
from hubploy_sandbox.env import sandbox_env
from hubploy_sandbox.paths import SandboxPaths
from hubploy_sandbox.procs import read_pid, spawn, stop

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_FILES = ("hub", "sandbox/charts/jupyterhub", "deployments", "hubploy-repo.yaml", ".sops.yaml", "example-age.key")
POOL = "hubploy-process"
BLOCK_MODULES = ("blocks.gcp", "blocks.aws", "blocks.azure", "blocks.kubeconfig")
Say = Callable[[str], None]


@dataclass(frozen=True)
class StackPaths:
    home: Path

    @classmethod
    def from_env(cls) -> StackPaths:
        return cls(Path(os.environ.get("HUBPLOY_HOME", Path.home() / ".hubploy")))

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def auth_file(self) -> Path:
        return self.home / "prefect-auth"

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    def pid(self, name: str) -> Path:
        return self.home / "pids" / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    @property
    def demo_origin(self) -> Path:
        return self.home / "demo" / "origin.git"

    @property
    def demo_work(self) -> Path:
        return self.home / "demo" / "work"


@dataclass(frozen=True)
class Stack:
    paths: StackPaths
    api_url: str
    ui_url: str
    webhook_url: str
    webhook_secret: str
    repo_url: str
    env: dict[str, str]     # what a client of this stack needs (Prefect URL and auth, sandbox tools)
    started: tuple[str, ...] = ()   # what this call of `up` started ("sandbox" included), for `down(only=)`


def auth_string(paths: StackPaths) -> str:
    """`user:password` for the server's basic auth, generated once and kept 0600."""
    if paths.auth_file.is_file():
        return paths.auth_file.read_text().strip()
    paths.home.mkdir(parents=True, exist_ok=True)
    value = f"hubploy:{secrets.token_urlsafe(24)}"
    fd = os.open(paths.auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def server_healthy(api_url: str, auth: str) -> bool:
    user, _, password = auth.partition(":")
    try:
        return httpx.get(f"{api_url}/health", auth=(user, password), timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_until(ready: Callable[[], bool], timeout: float, what: str, log: Path,
                pid_file: Path | None = None) -> None:
    """Wait for ``ready``; fail at once when the process of ``pid_file`` has exited."""
    deadline = time.monotonic() + timeout
    while not ready():
        if pid_file is not None and read_pid(pid_file) is None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
            raise HubployError(f"{what} exited: {tail[0] if tail else 'no output'}", hint=f"see {log}")
        if time.monotonic() > deadline:
            raise HubployError(f"{what} did not become ready in {timeout:.0f} s", hint=f"see {log}")
        time.sleep(0.5)


def _prefect(env: Mapping[str, str], *args: str) -> None:
    run([str(Path(sys.executable).parent / "prefect"), "--no-prompt", *args], env=env, cwd=PROJECT_ROOT,
        timeout=600)


def _start(paths: StackPaths, name: str, argv: list[str], env: Mapping[str, str], say: Say,
           started: list[str]) -> None:
    if read_pid(paths.pid(name)) is not None:
        say(f"{name}: already running")
        return
    pid = spawn(argv, pid_file=paths.pid(name), log=paths.log(name), env=env, cwd=PROJECT_ROOT)
    started.append(name)
    say(f"{name}: started (pid {pid}, log {paths.log(name)})")


def ensure_demo_repo(paths: StackPaths, env: Mapping[str, str]) -> str:
    """A deployment repository for the demo: the project's example hubs in a bare origin with
    staging and prod branches, plus a work clone to push changes from. Created once."""
    if (paths.demo_origin / "HEAD").is_file():
        return str(paths.demo_origin)
    work = paths.demo_work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for item in DEMO_FILES:
        src = PROJECT_ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / item)
    shutil.rmtree(work / "hub" / "charts", ignore_errors=True)
    git_env = {**env, "GIT_AUTHOR_NAME": "hubploy demo", "GIT_AUTHOR_EMAIL": "demo@hubploy.invalid",
               "GIT_COMMITTER_NAME": "hubploy demo", "GIT_COMMITTER_EMAIL": "demo@hubploy.invalid"}
    for args in (["init", "-q", "-b", "staging"], ["add", "-A"], ["commit", "-q", "-m", "Example hubs"],
                 ["branch", "prod"], ["init", "-q", "--bare", str(paths.demo_origin)],
                 ["remote", "add", "origin", str(paths.demo_origin)], ["push", "-q", "origin", "staging", "prod"]):
        run(["git", *args], env=git_env, cwd=work)
    return str(paths.demo_origin)


def up(*, port: int = 4200, webhook_port: int = 8787, repo_url: str | None = None, with_sandbox: bool = True,
       say: Say = print, started: list[str] | None = None) -> Stack:
    """Start whatever is not running yet and return how to reach it. ``started`` (if given) receives
    the name of each part as soon as this call starts it, so that an interrupted start can be undone."""
    started = [] if started is None else started
    paths = StackPaths.from_env()
    auth = auth_string(paths)
    api_url = f"http://127.0.0.1:{port}/api"
    state = json.loads(paths.state_file.read_text()) if paths.state_file.is_file() else {}
    base = {**child_env(), "PREFECT_API_URL": api_url, "PREFECT_API_AUTH_STRING": auth,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_EXTRA_LOGGERS": "hubploy"}
    server_env = {**base, "PREFECT_HOME": str(paths.prefect_home), "PREFECT_SERVER_API_HOST": "127.0.0.1",
                  "PREFECT_SERVER_API_PORT": str(port), "PREFECT_SERVER_API_AUTH_STRING": auth}
    start = time.monotonic()
    _start(paths, "prefect-server", [str(Path(sys.executable).parent / "prefect"), "server", "start"],
           server_env, say, started)
    if with_sandbox:
        sandbox_paths = SandboxPaths.from_env()
        if not sandbox.healthy(sandbox_paths):
            started.append("sandbox")
            state["sandbox_started"] = True
            paths.state_file.write_text(json.dumps(state))
            sandbox.up(sandbox_paths, say=lambda line: say(f"sandbox: {line}"))
        base.update(sandbox_env(sandbox_paths))
    _wait_until(lambda: server_healthy(api_url, auth), 180, "the Prefect server", paths.log("prefect-server"),
                paths.pid("prefect-server"))
    say(f"prefect server: healthy at {api_url} ({time.monotonic() - start:.1f} s)")
    repo_url = repo_url or state.get("repo_url") or ensure_demo_repo(paths, base)
    env = {**base, "HUBPLOY_REPO_URL": repo_url}
    for module in BLOCK_MODULES:
        _prefect(env, "block", "register", "-m", module)
    secret = _save_blocks(env, with_sandbox)
    say("blocks: registered (GCP, AWS, Azure, kubeconfig credentials; sandbox registry; webhook secret)")
    _prefect(env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    _prefect(env, "deploy", "--all")
    say("deployments: lifecycle, approval-timeout, pr-validation, prod-deploy, rebuild-images, drift-check")
    _start(paths, "worker", [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", POOL],
           {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}, say, started)
    _start(paths, "webhook", [str(Path(sys.executable).parent / "hubploy"), "webhook", "serve",
                              "--port", str(webhook_port)], env, say, started)
    _wait_until(lambda: _answers(f"http://127.0.0.1:{webhook_port}/health"), 60, "the webhook receiver",
                paths.log("webhook"), paths.pid("webhook"))
    state.update(repo_url=repo_url, port=port, webhook_port=webhook_port)
    paths.state_file.write_text(json.dumps(state))
    return Stack(paths, api_url, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{webhook_port}/webhook", secret,
                 repo_url, env, tuple(started))


def _save_blocks(env: Mapping[str, str], with_sandbox: bool) -> str:
    """Save the sandbox registry block and return the webhook secret, through this stack's server."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from blocks.sandbox import save_sandbox_blocks
    from triggers.webhook import ensure_webhook_secret

    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"],
                                     PREFECT_API_AUTH_STRING: env["PREFECT_API_AUTH_STRING"]}):
        if with_sandbox:
            save_sandbox_blocks(env)
        return ensure_webhook_secret()


def down(*, say: Say = print, only: tuple[str, ...] | list[str] | None = None) -> None:
    """Stop the worker, the webhook receiver and the server, and the sandbox if `up` started it;
    with ``only``, just those of them (what one call of `up` started: Stack.started)."""
    paths = StackPaths.from_env()
    for name in ("worker", "webhook", "prefect-server"):
        if (only is None or name in only) and stop(paths.pid(name), timeout=10, children=name == "worker"):
            say(f"{name}: stopped")
    state = json.loads(paths.state_file.read_text()) if paths.state_file.is_file() else {}
    if (only is None or "sandbox" in only) and state.pop("sandbox_started", False):
        sandbox.down(SandboxPaths.from_env(), say=lambda line: say(f"sandbox: {line}"))
    if paths.state_file.parent.is_dir():
        paths.state_file.write_text(json.dumps(state))


def client_settings() -> dict[str, str] | None:
    """PREFECT_API_URL and PREFECT_API_AUTH_STRING of the server `hubploy up` runs, if it runs."""
    paths = StackPaths.from_env()
    if read_pid(paths.pid("prefect-server")) is None or not paths.state_file.is_file():
        return None
    port = json.loads(paths.state_file.read_text()).get("port")
    if not port or not paths.auth_file.is_file():
        return None
    return {"PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_API_AUTH_STRING": auth_string(paths)}
