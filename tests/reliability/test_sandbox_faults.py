"""Faults injected into the platform (issue 8), never into the shared sandbox:

* the registry stopped in the middle of a push (a private registry, killed by a proxy in front of it
  the moment the first blob upload starts): the build fails clearly after its retries, nothing is
  tagged, and once the registry is back the next build pushes the image;
* the Kubernetes API server stopped in the middle of a deploy, then restarted (a PRIVATE sandbox
  instance with its own API server, HUBPLOY_SANDBOX_DIR + HUBPLOY_SANDBOX_PORT_OFFSET): the deploy
  fails clearly, and the following deploy recovers the release (stuck pending -> rolled back) and
  succeeds, with the hub answering.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fixtures.sandbox import Sandbox, free_port_offset
from helpers.cli import VENV_BIN, run_cli
from helpers.example_repo import copy_example_repo
from test_build_sandbox import _repo, _save_block, _task_runs, own_registry, sandbox_path  # noqa: F401 (own_registry, sandbox_path: fixtures)
from test_deploy_sandbox import BROKEN_HUB, HubRepo, base_image

from hubploy.errors import HubployError
from hubploy.processes import stop
from hubploy.registry import manifest_digest
from hubploy.runner import child_env
from hubploy_sandbox import lifecycle
from hubploy_sandbox.components import cluster_components
from hubploy_sandbox.env import sandbox_env
from hubploy_sandbox.paths import SandboxPaths

pytestmark = [pytest.mark.reliability, pytest.mark.sandbox, pytest.mark.prefect]


# ------------------------------------------------------------------ the registry dies during a push


class KillOnUpload:
    """A TCP proxy in front of a registry that SIGKILLs the registry when a blob upload starts."""

    def __init__(self, upstream_port: int, victim: subprocess.Popen) -> None:
        self.upstream_port, self.victim = upstream_port, victim
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.killed = threading.Event()
        self.armed = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, True)

    def _pipe(self, src: socket.socket, dst: socket.socket, inspect: bool) -> None:
        try:
            while data := src.recv(65536):
                if inspect and self.armed and b"/blobs/uploads/" in data:
                    self.armed = False
                    os.killpg(self.victim.pid, signal.SIGKILL)  # the registry dies mid-push
                    self.victim.wait()
                    self.killed.set()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.listener.close()


def test_registry_stopped_during_a_push_then_back(
    sandbox_path,
    prefect_api,
    tmp_path: Path,  # type: ignore[no-untyped-def]  # noqa: F811
    own_registry,
) -> None:  # noqa: F811
    import flows.build_images as module

    host, creds, proc = own_registry
    upstream_port = int(host.rsplit(":", 1)[1])
    proxy = KillOnUpload(upstream_port, proc)
    try:
        via = f"127.0.0.1:{proxy.port}"
        name = f"rel{secrets.token_hex(3)}"
        _save_block(f"own-{name}", via, creds.username, creds.password)
        image = f"{via}/{name}/user"
        repo = _repo(tmp_path, [image], f"own-{name}", "FROM scratch")
        state = module.build_images(hubs=["h"], repo_path=str(repo.root), return_state=True)
        assert proxy.killed.is_set(), "the registry was never killed: no blob upload went through the proxy"
        assert state.is_failed()
        with pytest.raises(HubployError, match=r"cannot reach registry 127\.0\.0\.1:\d+"):
            state.result()
        push = next(t for t in _task_runs(state.state_details.flow_run_id) if t.name.startswith("push-image"))
        assert push.state.is_failed() and push.run_count == 4, "a refused connection is retried, then fails"

        # the registry comes back on the same storage: nothing half-pushed is visible, the next build pushes
        config = tmp_path / "registry" / "config.yml"
        back = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"http://{host}/v2/", timeout=1).status_code == 401:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline and back.poll() is None, "the registry did not come back"
                time.sleep(0.1)
            tags = httpx.get(f"http://{host}/v2/{name}/user/tags/list", auth=(creds.username, creds.password))
            assert tags.status_code == 404 or not tags.json().get("tags"), (
                f"a tag after a failed push: {tags.text}"
            )
            rows = module.build_images(hubs=["h"], repo_path=str(repo.root))
            assert [(r["image"], r["result"]) for r in rows] == [(image, "built")]
            assert rows[0]["digest"] == manifest_digest(
                image, rows[0]["tag"], creds.__class__(via, creds.username, creds.password)
            )
        finally:
            os.killpg(back.pid, signal.SIGKILL)
            back.wait()
    finally:
        proxy.close()


# ------------------------------------------------------------------ the API server dies during a deploy


@pytest.fixture(scope="module")
def private_sandbox(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A second sandbox of our own (etcd, API server, registry, agent...), stopped afterwards. The
    shared one must exist first: its cache (binaries) is reused."""
    root = tmp_path_factory.mktemp("private-sandbox")
    environ = {
        **os.environ,
        "HUBPLOY_SANDBOX_DIR": str(root / "sbx"),
        "HUBPLOY_SANDBOX_PORT_OFFSET": str(free_port_offset(start=2300)),
    }
    paths = SandboxPaths.from_env(environ)
    lines: list[str] = []
    try:
        lifecycle.up(paths, say=lines.append)
        yield Sandbox(paths, child_env(sandbox_env(paths, environ)), True)
    finally:
        lifecycle.down(paths, say=lines.append)


def _private_hub_repo(tmp_path: Path, sandbox: Sandbox) -> HubRepo:
    """As tests/test_deploy_sandbox.py's hub_repo, on the private sandbox."""
    name = f"a{secrets.token_hex(3)}"
    root = copy_example_repo(
        tmp_path / "repo", {name: "minimal"}, settings_extra="health_check_timeout: 30\n"
    )
    # the chart's images: the copies in this sandbox's own registry
    chart_values = root / "hub" / "values.yaml"
    chart_values.write_text(chart_values.read_text().replace("localhost:5000/", f"{sandbox.registry}/"))
    subprocess.run(["git", "init", "-q", "-b", "staging", str(root)], check=True)
    repo = HubRepo(root, name, sandbox, sandbox.env_for("3"))
    repo.set_user_image(base_image(sandbox))
    return repo


def _cli_deploy(repo: HubRepo, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_cli("deploy", repo.name, "hub", "staging", *args, cwd=repo.root, env=repo.env, timeout=timeout)


def test_api_server_stopped_mid_deploy_then_restarted(private_sandbox: Sandbox, tmp_path: Path) -> None:
    sbx = private_sandbox
    repo = _private_hub_repo(tmp_path, sbx)
    first = _cli_deploy(repo)
    assert first.returncode == 0, first.stderr
    version = repo.hub_version()
    assert [r["status"] for r in repo.history()] == ["deployed"]

    # an upgrade that takes its time (its hub never gets ready), killed under by the API server dying
    deploy = subprocess.Popen(
        [
            str(VENV_BIN / "hubploy"),
            "deploy",
            repo.name,
            "hub",
            "staging",
            "--timeout",
            "30s",
            "--set-string",
            BROKEN_HUB,
        ],
        cwd=repo.root,
        env={**os.environ, **repo.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not any(r["status"].startswith("pending") for r in repo.history()):
            assert deploy.poll() is None, f"the deploy ended before the fault: {deploy.communicate()}"
            assert time.monotonic() < deadline, "the upgrade never started"
            time.sleep(0.3)
        apiserver = cluster_components(sbx.paths, sbx.paths.cluster(1)).apiserver
        assert stop(apiserver.pid_file)  # the API server goes away mid-deploy
        stopped_at = time.monotonic()
        out, err = deploy.communicate(timeout=300)
    finally:
        if deploy.poll() is None:
            deploy.kill()
            deploy.wait()
    # it fails clearly (or, had the API come back in time, would have succeeded): here it is down for good
    assert deploy.returncode == 1, out + err
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err  # one clear line
    assert time.monotonic() - stopped_at < 240, "the deploy hung on a dead API server"

    lifecycle.up(sbx.paths, say=lambda line: None)  # the API server is started again
    history = repo.history()
    assert history[0]["status"] in ("deployed", "superseded") and len(history) == 2, history
    assert history[-1]["status"] in ("pending-upgrade", "failed", "deployed"), history

    recovered = _cli_deploy(repo)
    assert recovered.returncode == 0, recovered.stderr
    revisions = repo.history()
    statuses = [r["status"] for r in revisions]
    assert statuses[-1] == "deployed" and statuses.count("deployed") == 1, statuses
    # only the upgrade the fault interrupted may keep its pending row (helm never rewrites it); it is
    # history, not a live operation: a later revision is deployed
    assert [r["revision"] for r in revisions if r["status"].startswith("pending")] in ([], [2]), statuses
    print(f"\nAPI server fault: deploy said {errors[0]!r}; recovery: {recovered.stderr.strip().splitlines()}")
    if history[-1]["status"] == "pending-upgrade":
        assert "stuck in pending-upgrade" in recovered.stderr, recovered.stderr
    assert repo.hub_version() == version
