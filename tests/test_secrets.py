"""hubploy.secrets with the real sops binary and age keys generated in the test."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from hubploy.errors import SecretsError
from hubploy.runner import child_env, redact, run
from hubploy.secrets import (
    GIT_CRYPT_HEADER,
    check_secret_file,
    decrypt_to_mapping,
    decrypted,
    in_secrets_dir,
    is_encrypted,
    sops_format,
    with_age_key,
)
from hubploy.workspace import private_run_dir

VENV_BIN = str(Path(sys.executable).parent)


def _env(**extra: str) -> dict[str, str]:
    base = child_env()
    return child_env(
        {"PATH": f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}", **extra},
        drop=("SOPS_AGE_KEY", "SOPS_AGE_KEY_CMD", "SOPS_AGE_KEY_FILE"),
    )


def _keygen(path: Path) -> str:
    """Generate an age key file; return its public key."""
    run(["age-keygen", "-o", str(path)], env=_env())
    return next(
        line.split(":", 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.startswith("# public key:")
    )


@pytest.fixture(scope="module")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    key = tmp_path_factory.mktemp("age") / "key.txt"
    return key, _keygen(key)


@pytest.fixture
def env(age_key: tuple[Path, str], tmp_path: Path) -> dict[str, str]:
    # HOME points at an empty dir so no key from the real home directory is found by accident.
    return _env(SOPS_AGE_KEY_FILE=str(age_key[0]), HOME=str(tmp_path / "home"))


@pytest.fixture
def encrypt(age_key: tuple[Path, str], env: dict[str, str]) -> Callable[[Path, str], Path]:
    def write_encrypted(path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        run(["sops", "--encrypt", "--age", age_key[1], "--in-place", str(path)], env=env, cwd=path.parent)
        return path

    return write_encrypted


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("staging.yaml", "jupyterhub:\n  hub:\n    token: s3cret-yaml\n", "s3cret-yaml"),
        ("creds.yml", "a: s3cret-yml\n", "s3cret-yml"),
        ("sa.json", '{"private_key": "s3cret-json"}', "s3cret-json"),
        ("app.env", "TOKEN=s3cret-env\n", "TOKEN=s3cret-env"),
        ("aws.ini", "[default]\naws_secret_access_key = s3cret-ini\n", "s3cret-ini"),
        ("credentials.cfg", "opaque s3cret-binary\n", "opaque s3cret-binary"),
    ],
)
def test_encrypt_detect_decrypt_roundtrip(
    tmp_path: Path, encrypt, env, name: str, text: str, expected: str
) -> None:
    secret = encrypt(tmp_path / "secrets" / name, text)
    assert expected not in secret.read_text()
    assert is_encrypted(secret)
    assert check_secret_file(secret, allow_plaintext=False) is None
    with decrypted([secret], env=env) as files:
        plain = files[secret]
        assert plain != secret and plain.name.endswith(name)
        assert expected in plain.read_text()
        assert stat.S_IMODE(plain.stat().st_mode) == 0o600
        assert stat.S_IMODE(plain.parent.stat().st_mode) == 0o700
    assert not plain.exists() and not plain.parent.exists()


def test_decrypted_yaml_is_the_original(tmp_path: Path, encrypt, env) -> None:
    text = "jupyterhub:\n  hub:\n    cookieSecret: abc\n    replicas: 2\n"
    secret = encrypt(tmp_path / "deployments/hub/secrets/prod.yaml", text)
    with decrypted([secret], env=env) as files:
        assert yaml.safe_load(files[secret].read_text()) == yaml.safe_load(text)  # sops re-indents


def test_temp_files_removed_on_exception(tmp_path: Path, encrypt, env) -> None:
    secret = encrypt(tmp_path / "secrets" / "prod.yaml", "a: b\n")
    with pytest.raises(RuntimeError), decrypted([secret], env=env) as files:
        plain = files[secret]
        assert plain.exists()
        raise RuntimeError("deploy failed")
    assert not plain.exists() and not plain.parent.exists()


def test_temp_files_removed_when_a_later_file_fails(tmp_path: Path, encrypt, env, age_key) -> None:
    good = encrypt(tmp_path / "a" / "secrets" / "prod.yaml", "a: b\n")
    other_key = tmp_path / "other.txt"
    other = write(tmp_path / "b" / "secrets" / "prod.yaml", "c: d\n")
    run(["sops", "--encrypt", "--age", _keygen(other_key), "--in-place", str(other)], env=env, cwd=tmp_path)
    before = set(private_run_dir().glob("hubploy-secrets-*"))
    with pytest.raises(SecretsError), decrypted([good, other], env=env):
        pytest.fail("must not be reached")
    assert set(private_run_dir().glob("hubploy-secrets-*")) == before


def test_same_basename_in_two_places(tmp_path: Path, encrypt, env) -> None:
    own = encrypt(tmp_path / "deployments/hub/secrets/prod.yaml", "a: own\n")
    sub = encrypt(tmp_path / "secrets/deployments/hub/secrets/prod.yaml", "a: submodule\n")
    with decrypted([own, sub, own], env=env) as files:
        assert set(files) == {own, sub}
        assert yaml.safe_load(files[own].read_text()) == {"a": "own"}
        assert yaml.safe_load(files[sub].read_text()) == {"a": "submodule"}


def test_wrong_key_is_a_clear_error(tmp_path: Path, encrypt, env) -> None:
    secret = encrypt(tmp_path / "secrets" / "prod.yaml", "a: b\n")
    wrong = tmp_path / "wrong.txt"
    _keygen(wrong)
    with (
        pytest.raises(SecretsError) as err,
        decrypted([secret], env={**env, "SOPS_AGE_KEY_FILE": str(wrong)}),
    ):
        pass
    assert str(secret) in err.value.message and "cannot decrypt" in err.value.message
    assert "data key" in err.value.message  # the sops stderr tail
    assert "SOPS_AGE_KEY_FILE" in (err.value.hint or "")


def test_no_key_at_all(tmp_path: Path, encrypt, env) -> None:
    secret = encrypt(tmp_path / "secrets" / "prod.json", '{"a": "b"}')
    no_key = {k: v for k, v in env.items() if k != "SOPS_AGE_KEY_FILE"}
    with pytest.raises(SecretsError, match="cannot decrypt"):
        decrypt_to_mapping(secret, env=no_key)


def test_git_crypt_locked_file(tmp_path: Path, env) -> None:
    locked = write(tmp_path / "secrets" / "prod.yaml", GIT_CRYPT_HEADER + os.urandom(64))
    assert not is_encrypted(locked)
    problem = check_secret_file(locked, allow_plaintext=True)
    assert problem is not None and "git-crypt unlock" in problem
    with (
        pytest.raises(SecretsError, match="git-crypt unlock") as err,
        decrypted([locked], env=env, allow_plaintext=True),
    ):
        pass
    assert str(locked) in err.value.message


def test_plaintext_under_secrets_is_refused(tmp_path: Path, env) -> None:
    plain = write(tmp_path / "deployments/hub/secrets/prod.yaml", "password: hunter2\n")
    problem = check_secret_file(plain, allow_plaintext=False)
    assert problem is not None and "sops --encrypt --in-place prod.yaml" in problem
    assert "allow_plaintext" in problem
    with pytest.raises(SecretsError) as err, decrypted([plain], env=env):
        pass
    assert str(plain) in err.value.message and "plaintext" in err.value.message
    assert "sops --encrypt --in-place prod.yaml" in (err.value.hint or "")
    with pytest.raises(SecretsError, match="plaintext"):
        decrypt_to_mapping(plain, env=env)


def test_plaintext_allowed_with_the_flag(tmp_path: Path, env) -> None:
    plain = write(tmp_path / "deployments/hub/secrets/prod.yaml", "password: hunter2-allowed\n")
    assert check_secret_file(plain, allow_plaintext=True) is None
    with decrypted([plain], env=env, allow_plaintext=True) as files:
        assert files == {plain: plain}
    assert plain.exists()
    assert decrypt_to_mapping(plain, env=env, allow_plaintext=True) == {"password": "hunter2-allowed"}


def test_plaintext_outside_secrets_maps_to_itself(tmp_path: Path, encrypt, env) -> None:
    config = write(tmp_path / "deployments/hub/config/common.yaml", "a: 1\n")
    secret = encrypt(tmp_path / "deployments/hub/secrets/common.yaml", "b: 2\n")
    with decrypted([config, secret], env=env) as files:
        assert files[config] == config and files[secret] != secret


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("prod.yaml", "a: b\nsopsy: 1\n"),
        ("prod.yaml", "- sops\n"),
        ("prod.yaml", "a: [unclosed\n"),
        ("prod.json", '{"a": {"sops": 1}}'),
        ("prod.json", "not json"),
        ("app.env", "SOPS=1\n# sops_version=1\n"),
        ("app.ini", "[default]\nsops = 1\n"),
        ("blob.cfg", '{"sops": {}}'),
        ("blob.bin", b"\xff\xfe\x00binary"),
    ],
)
def test_plaintext_detection(tmp_path: Path, name: str, content: str | bytes) -> None:
    path = write(tmp_path / name, content)
    assert not is_encrypted(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("prod.yaml", "a: b\nsops: {version: 3.11.0}\n"),
        ("prod.json", '{"a": 1, "sops": {"version": "3"}}'),
        ("app.env", "A=x\nsops_version=3.11.0\n"),
        ("app.env", "sops_mac=ENC[x]\n"),
        ("app.ini", "[x]\na = 1\n\n[sops]\nversion = 3\n"),
        ("blob.cfg", '{"data": "ENC[x]", "sops": {}}'),
    ],
)
def test_metadata_detection_per_format(tmp_path: Path, name: str, content: str) -> None:
    assert is_encrypted(write(tmp_path / name, content))


def test_sops_format_follows_the_extension() -> None:
    assert [
        sops_format(Path(n)) for n in ("a.yaml", "a.YML", "a.json", "a.env", "a.ini", "a.cfg", "key")
    ] == ["yaml", "yaml", "json", "dotenv", "ini", "binary", "binary"]


def test_missing_file(tmp_path: Path, env) -> None:
    missing = tmp_path / "secrets" / "prod.yaml"
    assert check_secret_file(missing, allow_plaintext=True) == "secret file does not exist"
    with pytest.raises(SecretsError, match="does not exist"), decrypted([missing], env=env):
        pass


def test_in_secrets_dir() -> None:
    assert in_secrets_dir(Path("repo/deployments/hub/secrets/prod.yaml"))
    assert in_secrets_dir(Path("secrets/deployments/hub/secrets/prod.yaml"))
    assert not in_secrets_dir(Path("repo/deployments/hub/config/secrets.yaml"))


def test_decrypt_to_mapping_yaml_registers_secrets(tmp_path: Path, encrypt, env) -> None:
    key = encrypt(
        tmp_path / "secrets" / "aws.yaml",
        "creds:\n  aws_access_key_id: AKIAEXAMPLEID1\n  aws_secret_access_key: wJalrEXAMPLEKEY\n"
        "  region: us-west-2\n",
    )
    data = decrypt_to_mapping(key, env=env)
    assert data == {
        "creds": {
            "aws_access_key_id": "AKIAEXAMPLEID1",
            "aws_secret_access_key": "wJalrEXAMPLEKEY",
            "region": "us-west-2",
        }
    }
    assert (
        redact("id AKIAEXAMPLEID1 key wJalrEXAMPLEKEY in us-west-2")
        == "id ******** key ******** in us-west-2"
    )


def test_decrypt_to_mapping_json_auth_file(tmp_path: Path, encrypt, env) -> None:
    auth = encrypt(
        tmp_path / "secrets" / "azure.json",
        json.dumps({"appId": "app-1234", "tenant": "tenant-1", "password": "az-pw-secret"}),
    )
    assert decrypt_to_mapping(auth, env=env) == {
        "appId": "app-1234",
        "tenant": "tenant-1",
        "password": "az-pw-secret",
    }
    assert "az-pw-secret" not in redact("login az-pw-secret")


def test_decrypt_to_mapping_other_formats(tmp_path: Path, encrypt, env) -> None:
    dotenv = encrypt(tmp_path / "secrets" / "a.env", "TOKEN=env-token-1\nNAME=x\n")
    assert decrypt_to_mapping(dotenv, env=env) == {"TOKEN": "env-token-1", "NAME": "x"}
    ini = encrypt(tmp_path / "secrets" / "a.ini", "[default]\naws_access_key_id = ini-key-1\n")
    assert decrypt_to_mapping(ini, env=env) == {"default": {"aws_access_key_id": "ini-key-1"}}
    cfg = encrypt(tmp_path / "secrets" / "credentials.cfg", "[default]\naws_access_key_id = cfg-key-1\n")
    assert decrypt_to_mapping(cfg, env=env) == {"default": {"aws_access_key_id": "cfg-key-1"}}
    yaml_cfg = encrypt(tmp_path / "secrets" / "key.cfg", "creds:\n  password: cfg-pw-1\n")
    assert decrypt_to_mapping(yaml_cfg, env=env) == {"creds": {"password": "cfg-pw-1"}}


def test_decrypt_to_mapping_not_a_mapping(tmp_path: Path, encrypt, env) -> None:
    odd = encrypt(tmp_path / "secrets" / "list.json", '{"a": 1}')
    with pytest.raises(SecretsError, match="non-empty mapping"):
        decrypt_to_mapping(write(tmp_path / "config" / "list.yaml", "- a\n"), env=env)
    assert decrypt_to_mapping(odd, env=env) == {"a": 1}


@pytest.mark.parametrize(
    ("name", "content", "detail"),
    [
        (
            "staging.yaml",
            "jupyterhub: {proxy: {secretToken: x}\nsops: {version: 3.11.0}\n",
            "cannot be parsed as YAML (line 2: ",
        ),  # the parser's words: libyaml's or PyYAML's
        (
            "staging.yaml",
            "a: b: c\nsops: {}\n",
            "cannot be parsed as YAML (line 1: mapping values are not allowed",
        ),
        (
            "staging.yaml",
            b"a: caf\xe9\nsops: {}\n",
            "cannot be parsed as YAML (line 1: byte 0xe9 is not UTF-8)",
        ),
        (
            "key.json",
            '{"sops": {"version": "3"},\n "data": }',
            "cannot be parsed as JSON (line 2: Expecting value)",
        ),
    ],
)
def test_a_secret_file_that_does_not_parse_is_told_so_not_called_plaintext(
    tmp_path: Path, name: str, content: str | bytes, detail: str
) -> None:
    path = write(tmp_path / "secrets" / name, content)
    # git-crypt users' repositories too: such a file is no secret hubploy can use
    for allow_plaintext in (False, True):
        problem = check_secret_file(path, allow_plaintext)
        assert problem is not None and problem.startswith(detail), problem
        assert "plaintext" not in problem
    with pytest.raises(SecretsError, match=r"cannot be parsed as"), decrypted([path], env=_env()):
        pass


def test_the_repositorys_age_key_and_the_users_are_both_used(
    tmp_path: Path, encrypt, env, age_key: tuple[Path, str]
) -> None:
    """A file for the user's key and one for the repository's key decrypt in one run; the combined key
    file is private (0600 in a 0700 dir) and holds both keys."""
    repo_key = tmp_path / "repo-age.key"
    repo_public = _keygen(repo_key)
    users_file = encrypt(tmp_path / "a" / "users.yaml", "token: for-the-users-key\n")
    repos_file = write(tmp_path / "b" / "repos.yaml", "token: for-the-repos-key\n")
    run(
        ["sops", "--encrypt", "--age", repo_public, "--in-place", str(repos_file)],
        env=env,
        cwd=repos_file.parent,
    )
    sops_env = with_age_key(env, repo_key)
    combined = Path(sops_env["SOPS_AGE_KEY_FILE"])
    assert combined not in (repo_key, age_key[0])
    assert (
        stat.S_IMODE(combined.stat().st_mode) == 0o600
        and stat.S_IMODE(combined.parent.stat().st_mode) == 0o700
    )
    assert (
        repo_key.read_text().strip() in combined.read_text()
        and age_key[0].read_text().strip() in combined.read_text()
    )
    with decrypted([users_file, repos_file], env=sops_env) as files:
        assert yaml.safe_load(files[users_file].read_text()) == {"token": "for-the-users-key"}
        assert yaml.safe_load(files[repos_file].read_text()) == {"token": "for-the-repos-key"}
    # only one of them: each alone cannot decrypt the other's file
    with pytest.raises(SecretsError, match="sops cannot decrypt it"), decrypted([repos_file], env=env):
        pass
    # no user's key
    assert with_age_key(_env(HOME=env["HOME"]), repo_key)["SOPS_AGE_KEY_FILE"] == str(repo_key)
    assert with_age_key(env, None) == env  # no repository key: the user's as it is
