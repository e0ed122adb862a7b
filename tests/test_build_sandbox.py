"""Builds on the sandbox: buildah builds, pushes to a real htpasswd registry, existence via the HTTP
API, skips with reasons, credential failures without retries, a registry dying mid-run, rebuild
tags, and the `hubploy build` CLI end to end."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers.cli import run_cli
from helpers.gitrepo import Repo, init_repo

from hubploy.build import BuildahBackend, BuildRequest
from hubploy.errors import HubployError
from hubploy.registry import AuthFiles, RegistryCredentials, manifest_digest

pytest_plugins = ["fixtures.sandbox"]
pytestmark = [pytest.mark.sandbox, pytest.mark.prefect]

PROJECT = Path(__file__).resolve().parent.parent


def _hub_yaml(names: list[str], block: str) -> str:
    images = "".join(f"    - name: {name}\n      path: images/{name.rsplit('/', 1)[1]}\n" for name in names)
    return (
        f"images:\n  images:\n{images}  registry:\n    provider: dockerconfig\n"
        f"    dockerconfig:\n      credentials_block: {block}\n"
    )


def _save_block(name: str, host: str, username: str, password: str) -> None:
    from prefect_docker.credentials import DockerRegistryCredentials

    DockerRegistryCredentials(username=username, password=password, registry_url=host).save(
        name, overwrite=True
    )


def _repo(tmp_path: Path, names: list[str], block: str, base: str) -> Repo:
    repo = init_repo(tmp_path / "deploy")
    files = {
        "hub/Chart.yaml": "apiVersion: v2\nname: hub\nversion: 0.1.0\n",
        "deployments/h/hubploy.yaml": _hub_yaml(names, block),
    }
    for name in names:
        short = name.rsplit("/", 1)[1]
        files[f"deployments/h/images/{short}/Dockerfile"] = f"{base}\nCOPY content.txt /srv/{short}.txt\n"
        files[f"deployments/h/images/{short}/content.txt"] = f"{short}\n"
    repo.commit(files, "hub h")
    return repo


def _task_runs(flow_run_id) -> list:  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def _artifact_rows(key: str) -> list[dict]:
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1, sort="CREATED_DESC"
        )
    data = artifacts[0].data
    return json.loads(data) if isinstance(data, str) else data


@pytest.fixture
def sandbox_path(sandbox, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Children (buildah) resolve from the sandbox bin dir, as after `eval $(hubploy sandbox env)`."""
    monkeypatch.setenv("PATH", sandbox.env["PATH"])


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def test_build_push_then_skip_with_reason(
    sandbox,
    sandbox_path,
    prefect_api,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    namespace: str,
) -> None:
    from flows.build_images import ARTIFACT_KEY, build_images

    host = sandbox.registry
    user, password = sandbox.registry_auth
    _save_block(f"reg-{namespace}", host, user, password)
    names = [f"{host}/{namespace}/user", f"{host}/{namespace}/hub"]
    repo = _repo(tmp_path, names, f"reg-{namespace}", f"FROM {host}/base/busybox:latest")
    creds = RegistryCredentials(host, user, password)

    start = time.monotonic()
    rows = build_images(hubs=["h"], repo_path=str(repo.root), max_concurrency=2)
    first = time.monotonic() - start
    assert [(r["image"], r["result"], r["reason"]) for r in rows] == [
        (names[0], "built", "not in the registry"),
        (names[1], "built", "not in the registry"),
    ]
    for row in rows:
        assert row["digest"] == manifest_digest(row["image"], row["tag"], creds)
        assert row["digest"].startswith("sha256:")
    assert _artifact_rows(ARTIFACT_KEY) == rows

    start = time.monotonic()
    again = build_images(hubs=["h"], repo_path=str(repo.root))
    second = time.monotonic() - start
    assert [(r["result"], r["reason"], r["digest"]) for r in again] == [
        ("skipped", "already in the registry", r["digest"]) for r in rows
    ]
    print(f"\ntiming: build+push of 2 images {first:.1f} s; second run (skip) {second:.1f} s")

    repo.commit({"deployments/h/images/user/content.txt": "user v2\n"}, "change the user image")
    third = build_images(hubs=["h"], repo_path=str(repo.root))
    assert third[0]["tag"] != rows[0]["tag"] and third[0]["result"] == "built"
    assert third[0]["reason"] == f"not in the registry; cache from {names[0]}:{rows[0]['tag']}"
    assert (third[1]["result"], third[1]["tag"]) == ("skipped", rows[1]["tag"])


def test_wrong_credentials_fail_clearly_without_retries(
    sandbox,
    sandbox_path,
    prefect_api,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    namespace: str,
) -> None:
    from flows.build_images import build_images

    host = sandbox.registry
    _save_block(f"bad-{namespace}", host, sandbox.registry_auth[0], "definitely-wrong-password")
    repo = _repo(tmp_path, [f"{host}/{namespace}/user"], f"bad-{namespace}", "FROM scratch")
    start = time.monotonic()
    state = build_images(hubs=["h"], repo_path=str(repo.root), check_registry=False, return_state=True)
    elapsed = time.monotonic() - start
    assert state.is_failed()
    with pytest.raises(HubployError) as info:
        state.result()
    assert "401" in str(info.value) and "credentials" in str(info.value)
    push = [t for t in _task_runs(state.state_details.flow_run_id) if t.name.startswith("push-image")]
    assert len(push) == 1 and push[0].state.is_failed() and push[0].run_count == 1
    assert elapsed < 30, "no backoff wait: a 401 is not retried"


@pytest.fixture
def own_registry(tmp_path: Path, sandbox) -> Iterator[tuple[str, RegistryCredentials, subprocess.Popen]]:  # type: ignore[no-untyped-def]
    """A private docker-registry with its own htpasswd on a free port (never the shared one)."""
    password = secrets.token_urlsafe(12)
    root = tmp_path / "registry"
    (root / "data").mkdir(parents=True)
    htpasswd = subprocess.run(
        ["htpasswd", "-Bbn", "ci", password], capture_output=True, text=True, check=True
    )
    (root / "htpasswd").write_text(htpasswd.stdout)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (root / "config.yml").write_text(
        f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\nauth: {{htpasswd: {{realm: own, path: {root / 'htpasswd'}}}}}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    host = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://{host}/v2/", timeout=1).status_code == 401:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "private registry did not start"
        time.sleep(0.1)
    try:
        yield host, RegistryCredentials(host, "ci", password), proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_registry_stopped_mid_run_retries_then_fails_clearly(
    sandbox_path,
    prefect_api,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    own_registry,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flows.build_images as module

    host, creds, proc = own_registry
    _save_block(f"own-{namespace}", host, creds.username, creds.password)
    repo = _repo(tmp_path, [f"{host}/{namespace}/user"], f"own-{namespace}", "FROM scratch")

    class StopRegistryAfterBuild(BuildahBackend):
        def build(self, request: BuildRequest, auth: AuthFiles | None) -> None:
            super().build(request, auth)
            os.killpg(proc.pid, signal.SIGKILL)  # the registry dies between build and push
            proc.wait()

    monkeypatch.setattr(module, "select_backend", lambda: StopRegistryAfterBuild())
    start = time.monotonic()
    state = module.build_images(hubs=["h"], repo_path=str(repo.root), return_state=True)
    elapsed = time.monotonic() - start
    assert state.is_failed()
    with pytest.raises(HubployError, match=r"cannot reach registry 127\.0\.0\.1:\d+"):
        state.result()
    exists, build, push = (
        next(t for t in _task_runs(state.state_details.flow_run_id) if t.name.startswith(n))
        for n in ("image-exists", "build-image", "push-image")
    )
    assert exists.state.is_completed() and build.state.is_completed()
    assert push.state.is_failed() and push.run_count == 4  # 1 try + 3 retries
    assert elapsed >= 2 + 4 + 8, "exponential backoff between the retries"
    print(f"\ntiming: registry-down run with 3 retries {elapsed:.1f} s")


def test_rebuild_makes_a_new_tag_and_keeps_the_old(
    sandbox,
    sandbox_path,
    prefect_api,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    namespace: str,
) -> None:
    from flows.build_images import build_images
    from flows.rebuild_images import rebuild_images

    host = sandbox.registry
    user, password = sandbox.registry_auth
    creds = RegistryCredentials(host, user, password)
    _save_block(f"reb-{namespace}", host, user, password)
    name = f"{host}/{namespace}/user"
    repo = _repo(tmp_path, [name], f"reb-{namespace}", f"FROM {host}/base/busybox:latest")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    repo.git("remote", "add", "origin", str(remote))
    repo.git("push", "-q", "origin", "main")
    repo.checkout("staging", create=True)
    [original] = build_images(hubs=["h"], repo_path=str(repo.root))
    old_tag, old_digest = original["tag"], original["digest"]

    start = time.monotonic()
    result = rebuild_images(hubs=["h"], repo_path=str(repo.root))
    elapsed = time.monotonic() - start
    [row] = result["images"]
    assert re.fullmatch(rf"{old_tag}-r\d{{8}}", row["tag"]) and row["source_tag"] == old_tag
    assert manifest_digest(name, row["tag"], creds) == row["digest"]
    assert manifest_digest(name, old_tag, creds) == old_digest, "the old tag is untouched"
    assert result["commit"] == repo.git("rev-parse", "staging")
    assert repo.git("--git-dir", str(remote), "rev-parse", "staging") == result["commit"]
    assert (
        f"{name}:\n    source_tag: {old_tag}\n    tag: {row['tag']}"
        in (repo.root / "deployments/h/image-tags.yaml").read_text()
    )
    [after] = build_images(hubs=["h"], repo_path=str(repo.root))
    assert (after["tag"], after["result"]) == (row["tag"], "skipped"), (
        "build and deploy now use the rebuild tag"
    )

    repo.commit({"deployments/h/config/common.yaml": "a: 1\n"}, "staging moved on meanwhile")
    repo.git("push", "-q", "origin", "staging")
    again = rebuild_images(repo_url=str(remote), hubs=["h"])  # as the scheduled deployment runs it
    [second] = again["images"]
    assert second["tag"] == f"{row['tag']}.2" and second["source_tag"] == old_tag
    assert manifest_digest(name, row["tag"], creds) == row["digest"]
    assert repo.git("--git-dir", str(remote), "rev-parse", "staging") == again["commit"]
    assert repo.git("--git-dir", str(remote), "log", "-1", "--format=%an %s", "staging") == (
        f"hubploy image rebuild Rebuild images without cache: {name}:{second['tag']}"
    )
    assert repo.git("--git-dir", str(remote), "show", "staging:deployments/h/image-tags.yaml").endswith(
        f"tag: {second['tag']}"
    )
    assert "staging moved on meanwhile" in repo.git("--git-dir", str(remote), "log", "--format=%s", "staging")
    print(f"\ntiming: rebuild flow (no cache, push, commit) {elapsed:.1f} s")


def test_cli_build_check_registry_push_end_to_end(sandbox, tmp_path: Path, namespace: str) -> None:  # type: ignore[no-untyped-def]
    repo = init_repo(tmp_path / "deploy")
    shutil.copytree(PROJECT / "hub", repo.root / "hub")
    shutil.copytree(PROJECT / "deployments" / "minimal", repo.root / "deployments" / "minimal")
    config = repo.root / "deployments/minimal/hubploy.yaml"
    name = f"{sandbox.registry}/{namespace}/minimal-user"
    config.write_text(config.read_text().replace("localhost:5000/hubploy/minimal-user", name))
    repo.commit(message="example repo copy")
    env = {**sandbox.env}
    env.pop("GITHUB_ACTIONS", None)

    start = time.monotonic()
    first = run_cli("build", "minimal", "--check-registry", "--push", cwd=repo.root, env=env)
    elapsed = time.monotonic() - start
    assert first.returncode == 0, first.stderr
    tag = re.search(rf"build {re.escape(name)}:(\w+): ", first.stdout).group(1)  # type: ignore[union-attr]
    assert f"build {name}:{tag}: {name}:{tag} not in the registry (backend buildah)" in first.stdout
    pushed = re.search(rf"pushed {re.escape(name)}:{tag} (sha256:\w+)", first.stdout).group(1)  # type: ignore[union-attr]
    creds = RegistryCredentials(sandbox.registry, *sandbox.registry_auth)
    assert manifest_digest(name, tag, creds) == pushed
    assert sandbox.registry_auth[1] not in first.stdout + first.stderr

    second = run_cli("build", "minimal", "--check-registry", "--push", cwd=repo.root, env=env)
    assert second.returncode == 0, second.stderr
    assert f"skip {name}:{tag}: {name}:{tag} already in the registry" in second.stdout
    assert "minimal: 0 built, 1 skipped" in second.stdout

    no_mode = run_cli("build", "minimal", cwd=repo.root, env=env)
    assert (
        no_mode.returncode == 1 and "--check-registry" in no_mode.stderr and "Traceback" not in no_mode.stderr
    )
    both = run_cli("build", "minimal", "--check-registry", "--commit-range", "a...b", cwd=repo.root, env=env)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    print(f"\ntiming: `hubploy build minimal --check-registry --push` {elapsed:.1f} s")

    before = repo.head()
    repo.commit({"deployments/minimal/config/common.yaml": "# touched\n"}, "config only")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"before": before, "after": repo.head()}))
    actions = {**env, "GITHUB_ACTIONS": "true", "GITHUB_EVENT_PATH": str(event)}
    unchanged = run_cli("build", "minimal", cwd=repo.root, env=actions)
    assert unchanged.returncode == 0, unchanged.stderr
    assert f"commit range from the GitHub event: {before}...HEAD" in unchanged.stdout
    assert f"skip {name}:{tag}: deployments/minimal/image unchanged in {before}...HEAD" in unchanged.stdout
    before = repo.head()
    repo.commit({"deployments/minimal/image/hello.txt": "changed\n"}, "image change")
    event.write_text(json.dumps({"before": before, "after": repo.head()}))
    changed = run_cli("build", "minimal", "--image", name, cwd=repo.root, env=actions)
    assert changed.returncode == 0, changed.stderr
    assert f"deployments/minimal/image changed in {before}...HEAD (backend buildah)" in changed.stdout
    assert "minimal: 1 built, 0 skipped" in changed.stdout
