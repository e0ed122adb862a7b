"""Unit tests of the image rules: tags, decisions, commit ranges, rebuild tags, build/login argv."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
from helpers.gitrepo import Repo, init_repo

from hubploy import git
from hubploy.build import (
    CACHE_DEPTH,
    BuildahBackend,
    BuildRequest,
    build_image,
    dockerfile_for,
    registry_error,
)
from hubploy.commitrange import detect_commit_range, range_from_event
from hubploy.errors import BuildError, CommandError, GitError, HubployError, RegistryError
from hubploy.images import (
    effective_tag,
    plan_hub,
    read_rebuild_tags,
    rebuild_tag,
    select_images,
    write_rebuild_tags,
)
from hubploy.layout import load_repo
from hubploy.registry import AuthFiles, RegistryCredentials, auth_files, credentials_from_docker_config
from hubploy.registry_login import (
    ACR_USERNAME,
    AwsKeys,
    aws_login,
    azure_login,
    ecr_host,
    fetch_credentials,
    gcloud_login,
)
from hubploy.workspace import private_run_dir

HUB_YAML = """\
images:
  images:
    - name: registry.example.org/physics/user
      path: images/user
    - name: registry.example.org/physics/hub
      path: images/hub
    - name: registry.example.org/upstream/notebook:2024.01.01
"""


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repo = init_repo(tmp_path / "repo")
    repo.commit(
        {
            "hub/Chart.yaml": "apiVersion: v2\nname: hub\nversion: 0.1.0\n",
            "deployments/physics/hubploy.yaml": HUB_YAML,
            "deployments/physics/images/user/Dockerfile": "FROM scratch\n",
            "deployments/physics/images/hub/Dockerfile": "FROM scratch\n",
        },
        "initial",
    )
    return repo


def _hub(repo: Repo):  # type: ignore[no-untyped-def]
    return load_repo(repo.root).load_hub("physics")


# ------------------------------------------------------------------ tags and decisions


def test_tags_are_git_derived_per_image_dir_or_pinned(repo: Repo) -> None:
    first = repo.head()
    user_sha = repo.commit({"deployments/physics/images/user/extra.txt": "x\n"}, "user only")
    hub = _hub(repo)
    user, hub_image, pinned = hub.images
    assert effective_tag(hub, user) == git.shortest_alpha_prefix(user_sha)
    assert effective_tag(hub, hub_image) == git.shortest_alpha_prefix(first)
    assert effective_tag(hub, pinned) == "2024.01.01"


def test_check_registry_builds_exactly_what_the_registry_lacks(repo: Repo) -> None:
    hub = _hub(repo)
    tag = git.shortest_alpha_prefix(repo.head())
    asked: list[tuple[str, str]] = []

    def exists(name: str, t: str) -> bool:
        asked.append((name, t))
        return name.endswith("/hub")

    plans = plan_hub(hub, check_registry=True, exists=exists)
    assert [(p.name, p.tag, p.build) for p in plans] == [
        ("registry.example.org/physics/user", tag, True),
        ("registry.example.org/physics/hub", tag, False),
        ("registry.example.org/upstream/notebook", "2024.01.01", False),
    ]
    assert plans[0].reason == f"registry.example.org/physics/user:{tag} not in the registry"
    assert plans[1].reason == f"registry.example.org/physics/hub:{tag} already in the registry"
    assert plans[2].reason == "pinned to 2024.01.01 with no build dir"
    assert ("registry.example.org/upstream/notebook", "2024.01.01") not in asked


def test_commit_range_builds_images_whose_dir_changed(repo: Repo) -> None:
    base = repo.head()
    repo.commit({"deployments/physics/images/hub/Dockerfile": "FROM scratch\nENV A=1\n"}, "hub image change")
    repo.commit({"deployments/physics/config/common.yaml": "a: 1\n"}, "config change")
    plans = plan_hub(_hub(repo), commit_range=f"{base}...HEAD")
    assert [p.build for p in plans] == [False, True, False]
    assert plans[1].reason == f"deployments/physics/images/hub changed in {base}...HEAD"
    assert plans[0].reason == f"deployments/physics/images/user unchanged in {base}...HEAD"


def test_modes_are_exclusive_and_one_is_required(repo: Repo) -> None:
    hub = _hub(repo)
    with pytest.raises(HubployError, match="mutually exclusive"):
        plan_hub(hub, check_registry=True, commit_range="a...b", exists=lambda n, t: False)
    with pytest.raises(HubployError, match="no build mode"):
        plan_hub(hub)


def test_image_selection_by_full_name_without_tag(repo: Repo) -> None:
    hub = _hub(repo)
    assert [s.name for s in select_images(hub.images, ["registry.example.org/physics/hub"])] == [
        "registry.example.org/physics/hub"
    ]
    assert len(select_images(hub.images, [])) == 3
    with pytest.raises(HubployError, match="no image named physics/hub"):
        select_images(hub.images, ["physics/hub"])


def test_recorded_rebuild_tag_applies_only_to_its_source_tag(repo: Repo) -> None:
    hub = _hub(repo)
    user = hub.images[0]
    tag = effective_tag(hub, user)
    write_rebuild_tags(hub.dir, {user.name: {"source_tag": tag, "tag": f"{tag}-r20261127"}})
    assert effective_tag(hub, user) == f"{tag}-r20261127"
    assert effective_tag(hub, hub.images[1]) == tag  # no record for the hub image
    assert read_rebuild_tags(hub.dir)[user.name]["source_tag"] == tag
    repo.commit(
        {"deployments/physics/images/user/Dockerfile": "FROM scratch\nENV B=2\n"}, "change user image"
    )
    new_tag = git.shortest_alpha_prefix(repo.head())
    assert effective_tag(_hub(repo), user) == new_tag  # the record is stale now


def test_rebuild_tag_never_reuses_an_existing_tag() -> None:
    day = dt.date(2026, 11, 27)
    assert rebuild_tag("1a2b3c4", lambda t: False, day) == "1a2b3c4-r20261127"
    existing = {"1a2b3c4-r20261127", "1a2b3c4-r20261127.2"}
    assert rebuild_tag("1a2b3c4", existing.__contains__, day) == "1a2b3c4-r20261127.3"
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    assert rebuild_tag("abc1234", lambda t: False) == f"abc1234-r{today}"


# ------------------------------------------------------------------ commit range detection


def _event(tmp_path: Path, event: dict) -> dict[str, str]:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    return {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_PATH": str(path)}


def test_push_event_gives_before_range(repo: Repo, tmp_path: Path) -> None:
    before = repo.head()
    repo.commit({"a.txt": "a\n"}, "next")
    env = _event(tmp_path, {"before": before, "after": repo.head(), "ref": "refs/heads/staging"})
    assert detect_commit_range(repo.root, env) == f"{before}...HEAD"


def test_pull_request_event_gives_base_range(repo: Repo, tmp_path: Path) -> None:
    env = _event(
        tmp_path,
        {"pull_request": {"base": {"sha": "f" * 40}, "head": {"sha": repo.head()}}, "before": "ignored"},
    )
    assert detect_commit_range(repo.root, env) == f"{'f' * 40}...HEAD"


def test_force_push_is_a_clear_error(repo: Repo, tmp_path: Path) -> None:
    gone = repo.commit({"b.txt": "b\n"}, "will be force-pushed away")
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.git("reflog", "expire", "--expire=now", "--all")
    repo.git("gc", "-q", "--prune=now")
    env = _event(tmp_path, {"before": gone, "after": repo.head()})
    with pytest.raises(GitError, match="force-pushed") as info:
        detect_commit_range(repo.root, env)
    assert "--check-registry" in str(info.value)


def test_no_mode_is_a_clear_error(repo: Repo, tmp_path: Path) -> None:
    with pytest.raises(HubployError, match="GITHUB_ACTIONS is not set") as info:
        detect_commit_range(repo.root, {})
    assert "--check-registry" in str(info.value) and "--commit-range" in str(info.value)
    with pytest.raises(HubployError, match="created the branch"):
        range_from_event(repo.root, {"before": "0" * 40})
    with pytest.raises(HubployError, match="neither a push nor a pull_request"):
        range_from_event(repo.root, {"action": "opened"})
    with pytest.raises(HubployError, match="cannot read the GitHub event file"):
        detect_commit_range(
            repo.root, {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_PATH": str(tmp_path / "nope")}
        )


# ------------------------------------------------------------------ build argv and rules


def test_buildah_build_argv(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("cert")
    auth = AuthFiles(tmp_path / "auth.json", {})
    request = BuildRequest(
        "localhost:5000/hub/user",
        "1a2b3c4",
        tmp_path,
        tmp_path / "Dockerfile",
        cache_from="localhost:5000/hub/user:0f0f0f0",
        build_args={"A": "1"},
    )
    assert BuildahBackend(ca_bundle=ca).build_argv(request, auth) == [
        "buildah",
        "--storage-driver",
        "vfs",
        "bud",
        "--isolation",
        "chroot",
        "--layers",
        "-t",
        "localhost:5000/hub/user:1a2b3c4",
        "--authfile",
        str(tmp_path / "auth.json"),
        "--tls-verify=false",
        "--cache-from",
        "localhost:5000/hub/user",
        "--build-arg",
        "A=1",
        "-v",
        f"{ca}:/etc/ssl/certs/ca-certificates.crt:ro",
        "-f",
        str(tmp_path / "Dockerfile"),
        str(tmp_path),
    ]
    no_cache = BuildRequest("gcr.io/p/user", "abc1234", tmp_path, tmp_path / "Dockerfile", no_cache=True)
    assert BuildahBackend(ca_bundle=tmp_path / "missing").build_argv(no_cache, None) == [
        "buildah",
        "--storage-driver",
        "vfs",
        "bud",
        "--isolation",
        "chroot",
        "--layers",
        "-t",
        "gcr.io/p/user:abc1234",
        "--no-cache",
        "-f",
        str(tmp_path / "Dockerfile"),
        str(tmp_path),
    ]


def test_buildah_push_and_pull_argv(tmp_path: Path) -> None:
    auth = AuthFiles(tmp_path / "auth.json", {})
    backend = BuildahBackend()
    assert backend.push_argv("localhost:5000/hub/user:1a2b3c4", auth, tmp_path / "digest") == [
        "buildah",
        "--storage-driver",
        "vfs",
        "push",
        "--retry",
        "0",
        "--authfile",
        str(tmp_path / "auth.json"),
        "--tls-verify=false",
        "--digestfile",
        str(tmp_path / "digest"),
        "localhost:5000/hub/user:1a2b3c4",
        "docker://localhost:5000/hub/user:1a2b3c4",
    ]
    assert backend.push_argv("us-docker.pkg.dev/p/r/user:1a2b3c4", auth, tmp_path / "d") == [
        "buildah",
        "--storage-driver",
        "vfs",
        "push",
        "--retry",
        "0",
        "--authfile",
        str(tmp_path / "auth.json"),
        "--digestfile",
        str(tmp_path / "d"),
        "us-docker.pkg.dev/p/r/user:1a2b3c4",
        "docker://us-docker.pkg.dev/p/r/user:1a2b3c4",
    ]
    assert backend.pull_argv("127.0.0.1:5000/u:t", None) == [
        "buildah",
        "--storage-driver",
        "vfs",
        "pull",
        "--quiet",
        "--retry",
        "0",
        "--tls-verify=false",
        "docker://127.0.0.1:5000/u:t",
    ]


def test_repo2docker_only_dir_is_refused_not_pretended(tmp_path: Path) -> None:
    (tmp_path / "environment.yml").write_text("dependencies: [numpy]\n")
    (tmp_path / "postBuild").write_text("#!/bin/sh\n")
    with pytest.raises(BuildError) as info:
        dockerfile_for(tmp_path)
    message = str(info.value)
    assert "repo2docker cannot run here" in message and "Docker engine" in message
    assert "environment.yml, postBuild" in message and "Dockerfile" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BuildError, match="has no Dockerfile"):
        dockerfile_for(empty)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert dockerfile_for(tmp_path) == tmp_path / "Dockerfile"


class FakeBackend:
    name = "fake"

    def __init__(self, pullable: set[str]) -> None:
        self.pullable = pullable
        self.pulls: list[str] = []
        self.builds: list[BuildRequest] = []

    def pull(self, reference: str, auth: AuthFiles | None) -> bool:
        self.pulls.append(reference)
        return reference in self.pullable

    def build(self, request: BuildRequest, auth: AuthFiles | None) -> None:
        self.builds.append(request)

    def push(self, reference: str, auth: AuthFiles | None) -> str:
        return "sha256:0"


def test_cache_source_is_first_older_tag_that_pulls_within_15(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    older = [f"t{i:06d}a" for i in range(20)]
    backend = FakeBackend({"r/x:t000003a", "r/x:t000005a"})
    result = build_image(backend, "r/x", "new1234", tmp_path, older_tags=older)
    assert backend.pulls == [f"r/x:t{i:06d}a" for i in range(4)]
    assert result.cache_from == "r/x:t000003a" and backend.builds[0].cache_from == "r/x:t000003a"
    nothing = FakeBackend(set())
    build_image(nothing, "r/x", "new1234", tmp_path, older_tags=older)
    assert len(nothing.pulls) == CACHE_DEPTH == 15
    no_cache = FakeBackend({"r/x:t000000a"})
    assert build_image(no_cache, "r/x", "n", tmp_path, older_tags=older, no_cache=True).cache_from is None
    assert no_cache.pulls == [] and no_cache.builds[0].no_cache


def test_buildah_failures_map_to_registry_errors() -> None:
    def err(text: str) -> RegistryError | None:
        return registry_error(CommandError(["buildah", "push"], 125, text), "localhost:5000/a:b")

    unauthorized = err(
        "Error: pushing image ... exists in localhost:5000/a: unauthorized: authentication required"
    )
    assert unauthorized is not None and unauthorized.status == 401 and not unauthorized.transient
    assert str(unauthorized).startswith(
        "registry localhost:5000 refused localhost:5000/a:b (HTTP 401): unauthorized: authentication required"
    )
    refused = err(
        'pinging container registry localhost:5999: Get "http://localhost:5999/v2/": dial tcp '
        "127.0.0.1:5999: connect: connection refused"
    )
    assert refused is not None and refused.status is None and refused.transient
    assert str(refused).startswith(
        "cannot reach registry localhost:5000 for localhost:5000/a:b: connect: connection refused"
    )
    unavailable = err("writing blob: received unexpected HTTP status: 503 Service Unavailable")
    assert unavailable is not None and unavailable.status == 503 and unavailable.transient
    assert err("STEP 2/3: RUN false\nerror building at STEP: exit status 1") is None


# ------------------------------------------------------------------ registry logins


def _no_home_paths(env: dict[str, str]) -> None:
    home = os.path.expanduser("~")
    for key, value in env.items():
        assert not value.startswith(home + os.sep) and value != home, (key, value)


def test_gcloud_login_argv_and_env(tmp_path: Path) -> None:
    cmd = gcloud_login(tmp_path / "gcloud", tmp_path / "key.json")
    assert cmd.argv == ["gcloud", "auth", "print-access-token"]
    assert cmd.env == {
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE": str(tmp_path / "key.json"),
    }
    assert cmd.username == "oauth2accesstoken"
    assert cmd.parse_password("ya29.token\n") == "ya29.token"
    _no_home_paths(cmd.env)


def test_aws_login_argv_and_env(tmp_path: Path) -> None:
    cmd = aws_login(
        tmp_path / "aws", "123456789012", "us-west-2", AwsKeys("AKIAEXAMPLE", "s3cr3tkey", "tok3n")
    )
    assert cmd.argv == ["aws", "ecr", "get-login-password", "--region", "us-west-2"]
    assert cmd.env == {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws" / "credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "aws" / "config"),
        "AWS_PAGER": "",
        "AWS_REGION": "us-west-2",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "s3cr3tkey",
        "AWS_SESSION_TOKEN": "tok3n",
    }
    assert (
        cmd.username == "AWS"
        and cmd.host
        == ecr_host("123456789012", "us-west-2")
        == "123456789012.dkr.ecr.us-west-2.amazonaws.com"
    )
    assert set(cmd.secrets) == {"s3cr3tkey", "tok3n"}
    _no_home_paths(cmd.env)


def test_azure_login_argv_and_env(tmp_path: Path) -> None:
    env = {"AZURE_CONFIG_DIR": str(tmp_path / "az"), "PATH": "/usr/bin"}
    cmd = azure_login("myacr", env)
    assert cmd.argv == ["az", "acr", "login", "--name", "myacr", "--expose-token", "--output", "json"]
    assert cmd.env == env and cmd.host == "myacr.azurecr.io" and cmd.username == ACR_USERNAME
    assert cmd.parse_password('{"accessToken": "eyJ.tok", "loginServer": "myacr.azurecr.io"}') == "eyJ.tok"
    _no_home_paths(cmd.env)
    with pytest.raises(HubployError, match="AZURE_CONFIG_DIR"):
        azure_login("myacr", {"PATH": "/usr/bin"})


def test_fetch_credentials_runs_the_login_with_its_own_env(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/sh\n[ "$*" = "auth print-access-token" ] || exit 3\n'
        'echo "$CLOUDSDK_CONFIG" > "$CLOUDSDK_CONFIG/seen"\necho ya29.faketoken\n'
    )
    fake.chmod(0o755)
    config = tmp_path / "cfg"
    config.mkdir()
    base = {"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    creds = fetch_credentials(gcloud_login(config), "us-docker.pkg.dev", base_env=base)
    assert creds == RegistryCredentials("us-docker.pkg.dev", "oauth2accesstoken", "ya29.faketoken")
    assert (config / "seen").read_text().strip() == str(config)
    assert "CLOUDSDK_CONFIG" not in os.environ or os.environ["CLOUDSDK_CONFIG"] != str(config)


# ------------------------------------------------------------------ auth files


def test_auth_file_is_private_temporary_and_in_docker_format() -> None:
    creds = [RegistryCredentials("localhost:5000", "ci", "cipass-1234")]
    with auth_files(creds) as auth:
        assert stat.S_IMODE(auth.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(auth.path.parent.stat().st_mode) == 0o700
        assert auth.env == {"DOCKER_CONFIG": str(auth.path.parent), "REGISTRY_AUTH_FILE": str(auth.path)}
        config = json.loads(auth.path.read_text())
        assert credentials_from_docker_config(config, "localhost:5000") == creds[0]
        assert "DOCKER_CONFIG" not in os.environ or os.environ["DOCKER_CONFIG"] != str(auth.path.parent)
    assert not auth.path.parent.exists()
    assert "cipass-1234" not in repr(creds[0])


# ------------------------------------------------------------------ retry policy and backend selection


def test_only_transient_failures_are_retried() -> None:
    from prefect.states import Failed

    from flows.tasks.images import is_transient, retry_transient

    assert not is_transient(RegistryError("refused", status=401))
    assert not is_transient(RegistryError("forbidden", status=403))
    assert is_transient(RegistryError("down", status=503)) and is_transient(RegistryError("no answer"))
    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert is_transient(
        CommandError(["buildah"], 125, "dial tcp 127.0.0.1:5000: connect: connection refused")
    )
    assert is_transient(CommandError(["buildah"], 125, "received unexpected HTTP status: 502 Bad Gateway"))
    assert not is_transient(CommandError(["buildah"], 125, "unauthorized: authentication required"))
    assert not is_transient(BuildError("RUN false failed"))
    assert retry_transient(None, None, Failed(data=RegistryError("x", status=500)))
    assert not retry_transient(None, None, Failed(data=RegistryError("x", status=401)))


class FakeImages:
    def __init__(self, push_lines: list[dict]) -> None:
        self.push_lines = push_lines
        self.calls: list[tuple] = []

    def build(self, **kwargs: object) -> None:
        self.calls.append(("build", kwargs))

    def push(self, name: str, **kwargs: object) -> list[dict]:
        self.calls.append(("push", name, kwargs))
        return self.push_lines


def test_docker_backend_push_digest_auth_and_errors(tmp_path: Path) -> None:
    from flows.tasks.docker_backend import DockerBackend

    creds = [RegistryCredentials("localhost:5000", "ci", "cipass-9876")]
    images = FakeImages([{"status": "Pushing"}, {"aux": {"Tag": "t", "Digest": "sha256:feed"}}])
    client = type("Client", (), {"images": images})()
    with auth_files(creds) as auth:
        assert DockerBackend(client).push("localhost:5000/a/b:t", auth) == "sha256:feed"
        assert images.calls[-1] == (
            "push",
            "localhost:5000/a/b",
            {
                "tag": "t",
                "auth_config": {"username": "ci", "password": "cipass-9876"},
                "stream": True,
                "decode": True,
            },
        )
        images.push_lines = [{"error": "unauthorized: authentication required"}]
        with pytest.raises(RegistryError) as info:
            DockerBackend(client).push("localhost:5000/a/b:t", auth)
        assert info.value.status == 401
    request = BuildRequest("r/x", "t1", tmp_path, tmp_path / "Dockerfile", cache_from="r/x:t0")
    DockerBackend(client).build(request, None)
    assert images.calls[-1] == (
        "build",
        {
            "path": str(tmp_path),
            "dockerfile": str(tmp_path / "Dockerfile"),
            "tag": "r/x:t1",
            "nocache": False,
            "rm": True,
            "cache_from": ["r/x:t0"],
            "buildargs": None,
        },
    )


def test_buildah_is_selected_when_no_docker_daemon_answers(tmp_path: Path) -> None:
    from flows.tasks.docker_backend import select_backend

    assert isinstance(select_backend({"DOCKER_HOST": f"unix://{tmp_path / 'docker.sock'}"}), BuildahBackend)
    assert isinstance(select_backend({"DOCKER_HOST": "tcp://127.0.0.1:1"}), BuildahBackend)
    import socket

    with socket.socket(socket.AF_UNIX) as silent:  # a socket file whose daemon does not answer
        silent.bind(str(tmp_path / "silent.sock"))
        assert isinstance(
            select_backend({"DOCKER_HOST": f"unix://{tmp_path / 'silent.sock'}"}), BuildahBackend
        )


@pytest.mark.prefect
def test_flow_builds_concurrently_up_to_the_limit(
    prefect_api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    import flows.build_images as module

    names = [f"registry.example.org/team/img{i}" for i in range(5)]
    images = "".join(f"    - name: {n}\n      path: images/{n[-4:]}\n" for n in names)
    repo = init_repo(tmp_path / "repo")
    repo.commit(
        {
            "hub/Chart.yaml": "apiVersion: v2\nname: hub\nversion: 0.1.0\n",
            "deployments/h/hubploy.yaml": f"images:\n  images:\n{images}",
            **{f"deployments/h/images/{n[-4:]}/Dockerfile": "FROM scratch\n" for n in names},
        },
        "hub",
    )
    lock, running, peak = threading.Lock(), [0], [0]

    class SlowBackend(FakeBackend):
        def build(self, request: BuildRequest, auth: AuthFiles | None) -> None:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.6)
            with lock:
                running[0] -= 1
            super().build(request, auth)

    backend = SlowBackend(set())
    monkeypatch.setattr(module, "select_backend", lambda: backend)
    rows = module.build_images(
        hubs=["h"], repo_path=str(repo.root), push=False, check_registry=False, max_concurrency=2
    )
    assert peak[0] == 2
    assert sorted(r.reference for r in backend.builds) == sorted(f"{n}:{rows[0]['tag']}" for n in names)
    assert {r["result"] for r in rows} == {"built"}
    assert rows[0]["reason"] == "registry check off: built unconditionally (not pushed)"


def test_registry_credentials_from_env_and_key_files(tmp_path: Path) -> None:
    import base64

    from hubploy.registry_login import aws_keys, credentials_from_env, credentials_from_key_files

    env = {
        "HUBPLOY_REGISTRY": "localhost:5000",
        "HUBPLOY_REGISTRY_USERNAME": "u",
        "HUBPLOY_REGISTRY_PASSWORD": "pw-12345",
    }
    assert credentials_from_env("localhost:5000", env) == RegistryCredentials(
        "localhost:5000", "u", "pw-12345"
    )
    assert credentials_from_env("gcr.io", env) is None
    token = base64.b64encode(b"robot:robot-pass").decode()
    repo = init_repo(tmp_path / "repo")
    repo.commit(
        {
            "hub/Chart.yaml": "apiVersion: v2\nname: hub\nversion: 0.1.0\n",
            "hubploy-repo.yaml": "secrets:\n  allow_plaintext: true\n",
            "deployments/h/hubploy.yaml": "images:\n  image_name: quay.io/org/user\n  registry:\n"
            "    provider: dockerconfig\n    dockerconfig:\n"
            "      filename: docker-config.json\n",
            "deployments/h/image/Dockerfile": "FROM scratch\n",
            "deployments/h/secrets/docker-config.json": json.dumps(
                {"auths": {"https://quay.io": {"auth": token}}}
            ),
        },
        "hub",
    )
    hub = load_repo(repo.root).load_hub("h")
    assert credentials_from_key_files(hub, "quay.io", os.environ) == RegistryCredentials(
        "quay.io", "robot", "robot-pass"
    )
    with pytest.raises(HubployError, match="no credentials for ghcr.io"):
        credentials_from_key_files(hub, "ghcr.io", os.environ)
    assert aws_keys({"creds": {"aws_access_key_id": "AKIA1", "aws_secret_access_key": "sk"}}) == AwsKeys(
        "AKIA1", "sk"
    )
    assert (
        aws_keys({"default": {"aws_access_key_id": "AKIA2", "aws_secret_access_key": "sk2"}}).access_key_id
        == "AKIA2"
    )


@pytest.mark.prefect
def test_flow_reports_a_failed_build_in_the_artifact_and_fails(
    prefect_api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.build_images as module

    repo = init_repo(tmp_path / "repo")
    repo.commit(
        {
            "hub/Chart.yaml": "apiVersion: v2\nname: hub\nversion: 0.1.0\n",
            "deployments/h/hubploy.yaml": "images:\n  images:\n"
            "    - {name: registry.example.org/t/r2d, path: images/r2d}\n"
            "    - {name: registry.example.org/t/ok, path: images/ok}\n",
            "deployments/h/images/r2d/requirements.txt": "numpy\n",
            "deployments/h/images/ok/Dockerfile": "FROM scratch\n",
        },
        "hub",
    )
    backend = FakeBackend(set())
    monkeypatch.setattr(module, "select_backend", lambda: backend)
    state = module.build_images(
        hubs=["h"], repo_path=str(repo.root), push=True, check_registry=False, return_state=True
    )
    assert state.is_failed()
    with pytest.raises(HubployError, match="1 image.s. failed: registry.example.org/t/r2d"):
        state.result()
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["image-builds"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    rows = {
        row["image"]: row
        for row in (json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data)
    }
    assert artifact.key == "image-builds"
    assert rows["registry.example.org/t/r2d"]["result"] == "failed"
    assert (
        rows["registry.example.org/t/r2d"]["reason"].startswith("BuildError: ")
        and "repo2docker cannot run here" in rows["registry.example.org/t/r2d"]["reason"]
    )
    assert (rows["registry.example.org/t/ok"]["result"], rows["registry.example.org/t/ok"]["digest"]) == (
        "built",
        "sha256:0",
    )
    assert [r.name for r in backend.builds] == ["registry.example.org/t/ok"]


FAKE_CLOUD_CLI = """#!/bin/sh
echo "$(basename "$0") $*|CLOUDSDK_CONFIG=$CLOUDSDK_CONFIG\
|AWS_SHARED_CREDENTIALS_FILE=$AWS_SHARED_CREDENTIALS_FILE\
|AZURE_CONFIG_DIR=$AZURE_CONFIG_DIR" >> "$FAKE_CLOUD_LOG"
case "$(basename "$0") $1 $2" in
  "gcloud auth print-access-token") echo ya29.fake-token ;;
  "aws ecr get-login-password") echo ecr-fake-password ;;
  "az acr login") echo '{"accessToken": "acr-fake-token", "loginServer": "myacr.azurecr.io"}' ;;
esac
"""


@pytest.mark.prefect
def test_cloud_registry_logins_through_the_cloud_credential_blocks(
    prefect_api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blocks.aws import AwsClusterCredentials
    from blocks.azure import AzureClusterCredentials
    from blocks.gcp import GcpClusterCredentials
    from blocks.resolve import hub_registry_credentials

    bin_dir, home, log = tmp_path / "bin", tmp_path / "home", tmp_path / "calls.log"
    bin_dir.mkdir()
    home.mkdir()
    for tool in ("gcloud", "aws", "az"):
        (bin_dir / tool).write_text(FAKE_CLOUD_CLI)
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FAKE_CLOUD_LOG", str(log))
    suffix = os.urandom(4).hex()
    GcpClusterCredentials(
        service_account_info={
            "type": "service_account",
            "client_email": "ci@p.iam",
            "private_key": "-----BEGIN PRIVATE KEY-----x",
        },
        project="p",
        cluster="c",
        location="us-central1",
    ).save(f"g-{suffix}", overwrite=True)
    AwsClusterCredentials(
        aws_access_key_id="AKIAFAKE", aws_secret_access_key="aws-secret-fake", cluster="c", region="us-west-2"
    ).save(f"a-{suffix}", overwrite=True)
    AzureClusterCredentials(
        client_id="app", tenant_id="tenant", client_secret="az-secret-fake", resource_group="rg", cluster="c"
    ).save(f"z-{suffix}", overwrite=True)
    registries = {
        "g": (
            "us-docker.pkg.dev/p/r/user",
            f"provider: gcloud\n    gcloud:\n      credentials_block: g-{suffix}\n",
        ),
        "a": (
            "123456789012.dkr.ecr.us-west-2.amazonaws.com/user",
            (
                f"provider: aws\n    aws:\n      account_id: '123456789012'\n      region: us-west-2\n"
                f"      credentials_block: a-{suffix}\n"
            ),
        ),
        "z": (
            "myacr.azurecr.io/user",
            (
                f"provider: azure\n    azure:\n      resource_group: rg\n      registry: myacr\n"
                f"      credentials_block: z-{suffix}\n"
            ),
        ),
    }
    repo = init_repo(tmp_path / "repo")
    files = {"hub/Chart.yaml": "apiVersion: v2\nname: hub\nversion: 0.1.0\n"}
    for hub, (image, registry) in registries.items():
        files[f"deployments/{hub}/hubploy.yaml"] = (
            f"images:\n  image_name: {image}\n  registry:\n    {registry}"
        )
        files[f"deployments/{hub}/image/Dockerfile"] = "FROM scratch\n"
    repo.commit(files, "hubs")
    deployment = load_repo(repo.root)

    def login(hub: str) -> RegistryCredentials | None:
        return hub_registry_credentials(
            deployment.load_hub(hub), registries[hub][0].split("/")[0], dict(os.environ)
        )

    assert login("g") == RegistryCredentials("us-docker.pkg.dev", "oauth2accesstoken", "ya29.fake-token")
    assert login("a") == RegistryCredentials(
        "123456789012.dkr.ecr.us-west-2.amazonaws.com", "AWS", "ecr-fake-password"
    )
    assert login("z") == RegistryCredentials("myacr.azurecr.io", ACR_USERNAME, "acr-fake-token")
    calls = log.read_text().splitlines()
    commands = [c.split("|")[0] for c in calls]
    assert "gcloud auth print-access-token" in commands
    assert "aws ecr get-login-password --region us-west-2" in commands
    assert "az acr login --name myacr --expose-token --output json" in commands
    for call in calls:
        for setting in call.split("|")[1:]:
            value = setting.split("=", 1)[1]
            assert not value.startswith(str(home)), call
    token_call = next(c for c in calls if c.startswith("gcloud auth print-access-token"))
    assert token_call.split("|")[1].startswith(f"CLOUDSDK_CONFIG={private_run_dir()}/hubploy-gcloud-")
    assert list(home.rglob("*")) == []
    assert not any("aws-secret-fake" in c or "az-secret-fake" in c for c in calls), "no secret on an argv"
