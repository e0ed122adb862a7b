"""Values layering: exact file order and set-args, as classic hubploy builds them."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.gitrepo import init_repo

from hubploy.errors import ConfigError, GitError, HubployError, SecretsError
from hubploy.git import shortest_alpha_prefix
from hubploy.layout import ImageSpec
from hubploy.values import ImageValue, ValuesPlan, image_values, layered_values, merged_values

HUB = "myhub"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "deployments" / HUB).mkdir(parents=True)
    return tmp_path


def hub_dir(repo: Path) -> Path:
    return repo / "deployments" / HUB


def touch(path: Path, text: str = "{}\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def plan(repo: Path, env: str = "staging", **kwargs) -> ValuesPlan:
    return layered_values(hub_dir(repo), repo, HUB, env, **kwargs)


def test_nothing_exists(repo: Path) -> None:
    p = plan(repo)
    assert p == ValuesPlan([], [], [], [])
    assert p.helm_args({}) == []


def test_common_only(repo: Path) -> None:
    common = touch(hub_dir(repo) / "config" / "common.yaml")
    touch(hub_dir(repo) / "config" / "prod.yaml")  # another env's file is not used
    p = plan(repo)
    assert p.values_files == [common]
    assert p.helm_args({}) == ["-f", str(common)]


def test_common_then_env(repo: Path) -> None:
    env_file = touch(hub_dir(repo) / "config" / "staging.yaml")
    common = touch(hub_dir(repo) / "config" / "common.yaml")
    assert plan(repo).helm_args({}) == ["-f", str(common), "-f", str(env_file)]


def test_env_without_common(repo: Path) -> None:
    env_file = touch(hub_dir(repo) / "config" / "prod.yaml")
    assert plan(repo, "prod").helm_args({}) == ["-f", str(env_file)]


def test_secrets_in_hub_dir(repo: Path, tmp_path: Path) -> None:
    common = touch(hub_dir(repo) / "config" / "common.yaml")
    secret = touch(hub_dir(repo) / "secrets" / "staging.yaml")
    touch(hub_dir(repo) / "secrets" / "prod.yaml")
    p = plan(repo)
    assert p.values_files == [common] and p.secret_files == [secret]
    decrypted = tmp_path / "tmp" / "0-staging.yaml"
    assert p.helm_args({secret: decrypted}) == ["-f", str(common), "-f", str(decrypted)]


def test_secrets_in_submodule(repo: Path) -> None:
    secret = touch(repo / "secrets" / "deployments" / HUB / "secrets" / "staging.yaml")
    touch(repo / "secrets" / "deployments" / "otherhub" / "secrets" / "staging.yaml")
    p = plan(repo)
    assert p.secret_files == [secret]
    assert p.helm_args({secret: secret}) == ["-f", str(secret)]


def test_secrets_in_both_places_hub_first(repo: Path) -> None:
    sub = touch(repo / "secrets" / "deployments" / HUB / "secrets" / "prod.yaml")
    own = touch(hub_dir(repo) / "secrets" / "prod.yaml")
    env_file = touch(hub_dir(repo) / "config" / "prod.yaml")
    p = plan(repo, "prod")
    assert p.secret_files == [own, sub]
    assert p.helm_args({own: Path("/d/own"), sub: Path("/d/sub")}) == [
        "-f",
        str(env_file),
        "-f",
        "/d/own",
        "-f",
        "/d/sub",
    ]


def test_undecrypted_secret_is_refused(repo: Path) -> None:
    touch(hub_dir(repo) / "secrets" / "staging.yaml")
    with pytest.raises(SecretsError, match="not decrypted"):
        plan(repo).helm_args({})


def test_set_then_set_string_in_user_order(repo: Path) -> None:
    p = plan(repo, set_values=["b=2", "a=1"], set_string_values=["z=x", "y=007"])
    assert p.set_args == ["b=2", "a=1"] and p.set_string_args == ["z=x", "y=007"]
    assert p.helm_args({}) == ["--set", "b=2", "--set", "a=1", "--set-string", "z=x", "--set-string", "y=007"]


def test_image_injection_after_user_set_string(repo: Path) -> None:
    common = touch(hub_dir(repo) / "config" / "common.yaml")
    secret = touch(hub_dir(repo) / "secrets" / "staging.yaml")
    images = [
        ImageValue("jupyterhub.singleuser.image", "localhost:5000/hubploy/minimal-user", "abc1234"),
        ("pangeo.jupyterhub.singleuser.image", "gcr.io/p/img", "1234567f"),
    ]
    p = plan(
        repo,
        images=images,
        set_values=["jupyterhub.hub.replicas=1"],
        set_string_values=["jupyterhub.singleuser.image.tag=user-tag"],
    )
    assert p.helm_args({secret: Path("/dec/staging.yaml")}) == [
        "-f",
        str(common),
        "-f",
        "/dec/staging.yaml",
        "--set",
        "jupyterhub.hub.replicas=1",
        "--set-string",
        "jupyterhub.singleuser.image.tag=user-tag",
        "--set-string",
        "jupyterhub.singleuser.image.tag=abc1234",
        "--set-string",
        "jupyterhub.singleuser.image.name=localhost:5000/hubploy/minimal-user",
        "--set-string",
        "pangeo.jupyterhub.singleuser.image.tag=1234567f",
        "--set-string",
        "pangeo.jupyterhub.singleuser.image.name=gcr.io/p/img",
    ]


def test_missing_files_skipped_and_dirs_ignored(repo: Path) -> None:
    (hub_dir(repo) / "config" / "common.yaml").mkdir(parents=True)  # a directory is not a values file
    (repo / "secrets").mkdir()  # an empty (uninitialised) submodule
    assert plan(repo) == ValuesPlan([], [], [], [])


# --- merged_values ------------------------------------------------------------------------------------


def test_merged_values_precedence(repo: Path) -> None:
    touch(
        hub_dir(repo) / "config" / "common.yaml",
        "jupyterhub:\n  hub: {replicas: 1, extra: common}\n  singleuser:\n    image: {name: a, tag: '1'}\n"
        "list: [1, 2]\nremoved: x\n",
    )
    touch(hub_dir(repo) / "config" / "staging.yaml", "jupyterhub:\n  hub: {replicas: 2}\nlist: [3]\n")
    secret = touch(hub_dir(repo) / "secrets" / "staging.yaml", "jupyterhub:\n  hub: {token: s3cret}\n")
    chart = {
        "jupyterhub": {"hub": {"replicas": 0, "chart_only": True}, "proxy": {"port": 80}},
        "removed": "chart",
        "dropped": "chart",
    }
    p = plan(
        repo,
        images=[("jupyterhub.singleuser.image", "reg:5000/img", "0123456a")],
        set_values=[
            "jupyterhub.hub.count=10,flag=true,nothing=null,zero=0,octal=007,float=1.5",
            "dropped=null",
        ],
        set_string_values=["jupyterhub.hub.count2=10,jupyterhub.singleuser.image.tag=ignored"],
    )
    assert merged_values(p, {secret: secret}, chart) == {
        "jupyterhub": {
            "hub": {
                "replicas": 2,
                "extra": "common",
                "token": "s3cret",
                "chart_only": True,
                "count": 10,
                "count2": "10",
            },
            "proxy": {"port": 80},
            "singleuser": {"image": {"name": "reg:5000/img", "tag": "0123456a"}},
        },
        "list": [3],
        "removed": "x",
        "flag": True,
        "nothing": None,
        "zero": 0,
        "octal": "007",
        "float": "1.5",
    }


def test_merged_values_set_replaces_a_scalar_with_a_map(repo: Path) -> None:
    touch(hub_dir(repo) / "config" / "common.yaml", "a: 1\n")
    assert merged_values(plan(repo, set_values=["a.b=x"]), {}) == {"a": {"b": "x"}}


def test_merged_values_null_in_file_deletes_chart_key(repo: Path) -> None:
    touch(hub_dir(repo) / "config" / "common.yaml", "a: {b: null}\n")
    assert merged_values(plan(repo), {}, {"a": {"b": 1, "c": 2}}) == {"a": {"c": 2}}


@pytest.mark.parametrize("arg", ["a[0]=x", "a\\.b=x", "a={x,y}", "a=x,y", "novalue", "a..b=1", "a=x\\,y"])
def test_merged_values_rejects_unsupported_set_syntax(repo: Path, arg: str) -> None:
    with pytest.raises(HubployError, match="--set"):
        merged_values(plan(repo, set_values=[arg]), {})


@pytest.mark.parametrize("text", ["- a\n- b\n", "a: [\n", "just a string\n"])
def test_merged_values_bad_file(repo: Path, text: str) -> None:
    path = touch(hub_dir(repo) / "config" / "common.yaml", text)
    with pytest.raises(ConfigError) as err:
        merged_values(plan(repo), {})
    assert err.value.issues[0].file == path


def test_merged_values_empty_file(repo: Path) -> None:
    touch(hub_dir(repo) / "config" / "common.yaml", "")
    assert merged_values(plan(repo), {}, {"a": 1}) == {"a": 1}


def test_image_values_pinned_or_from_git(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    sha = repo.commit({"deployments/hub/image/Dockerfile": "FROM scratch\n"}, "image")
    repo.commit({"deployments/hub/config/common.yaml": "{}\n"}, "config")
    built = ImageSpec(
        "localhost:5000/hub/user", None, repo.root / "deployments/hub/image", "jupyterhub.singleuser.image"
    )
    pinned = ImageSpec("quay.io/jupyter/base", "2024-01-01", None, "jupyterhub.hub.image")
    values = image_values(repo.root, [built, pinned], env=repo.env)
    assert values == [
        ImageValue("jupyterhub.singleuser.image", "localhost:5000/hub/user", shortest_alpha_prefix(sha)),
        ImageValue("jupyterhub.hub.image", "quay.io/jupyter/base", "2024-01-01"),
    ]
    repo.write({"deployments/hub/image/Dockerfile": "FROM busybox\n"})
    with pytest.raises(GitError, match="uncommitted"):
        image_values(repo.root, [built], env=repo.env)
    assert image_values(repo.root, [built], allow_dirty=True, env=repo.env) == values[:1]
    with pytest.raises(GitError, match="neither"):
        image_values(repo.root, [ImageSpec("x/y", None, None, "a.b")], env=repo.env)
