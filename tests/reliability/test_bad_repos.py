"""Bad repos (issue 8): malformed configs and repo layouts, each through the real CLI — `hubploy
validate` and `hubploy deploy h hub staging` — giving a one-line error that names the file and the key,
exit 1, no traceback, and no cluster call (recording helm/kubectl shims, a kubeconfig at a closed port).

These go beyond the 21 cases of tests/test_config.py: repo settings, the chart dir, deep keys, secrets
(plaintext, git-crypt locked, wrong sops key, tampered), junk bytes, huge files, symlinks.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.cli import VENV_BIN, run_cli
from helpers.gitrepo import init_repo
from rel_support import GOOD_HUB, PROJECT_ROOT, Shims, copy_good_repo

pytestmark = [pytest.mark.reliability, pytest.mark.sandbox]

H = f"deployments/{GOOD_HUB}"
SETTINGS = "hubploy-repo.yaml"
GOOD_SETTINGS = (
    "chart: hub\nstaging_branch: staging\nprod_branch: prod\n"
    "secrets:\n  age_key_file: example-age.key\nhealth_check_timeout: 30\n"
)
HUB_YAML = f"{H}/hubploy.yaml"
MINIMAL_HUB = "images:\n  image_name: localhost:5000/hubploy/minimal-user\n"


@dataclass(frozen=True)
class Symlink:
    target: str  # relative to the link's dir, or absolute


@dataclass(frozen=True)
class Bad:
    """Files to write (str, bytes, Symlink, or None to delete), and what the error line must name."""

    files: dict[str, str | bytes | Symlink | None]
    file: str  # the file named in the error (relative to the repo root)
    key: str = ""  # the key named in the error ("" when the whole file is the problem)
    words: tuple[str, ...] = ()  # further words the validate line must contain
    validate: bool = True  # False: only a deploy can find it (needs the key / a render)
    setup: str | None = None  # a named extra step (see _setup)


def settings(extra: str) -> dict[str, str]:
    return {SETTINGS: GOOD_SETTINGS + extra}


def hub(text: str) -> dict[str, str]:
    return {HUB_YAML: text}


PLAINTEXT_SECRET = "jupyterhub:\n  proxy:\n    secretToken: plain-text-token-0123456789\n"
CHART = (PROJECT_ROOT / "hub" / "Chart.yaml").read_text()
HUGE = 100 * 2**20


def alias_bomb(key: str) -> str:
    """Nine levels of nine aliases each: 9**9 (387 million) values from 90 written ones."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join(lines) + f"\n{key}: *a8\n"


def write_huge(path: Path) -> None:
    """A 100 MB YAML file of comments, written in chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = b"# " + b"x" * 1021 + b"\n"
    with path.open("wb") as handle:
        handle.write(b"jupyterhub: {}\n")
        for _ in range(HUGE // len(line) + 1):
            handle.write(line)


CASES: dict[str, Bad] = {
    # --- hubploy-repo.yaml: wrong types, bad values, deep unknown keys, lists for mappings
    "settings chart is a list": Bad(settings("chart: [hub]\n"), SETTINGS, "chart"),
    "settings health timeout not a number": Bad(
        settings("health_check_timeout: soon\n"), SETTINGS, "health_check_timeout"
    ),
    "settings health timeout negative": Bad(
        settings("health_check_timeout: -5\n"), SETTINGS, "health_check_timeout"
    ),
    "settings approval timeout a word": Bad(
        settings("approval_timeout_hours: forever\n"), SETTINGS, "approval_timeout_hours"
    ),
    "settings concurrency zero": Bad(settings("cluster_concurrency: 0\n"), SETTINGS, "cluster_concurrency"),
    "settings secrets is a list": Bad(
        {SETTINGS: "chart: hub\nsecrets: [example-age.key]\n"}, SETTINGS, "secrets"
    ),
    "settings allow_plaintext a word": Bad(
        {SETTINGS: "secrets: {allow_plaintext: perhaps}\n"}, SETTINGS, "secrets.allow_plaintext"
    ),
    "settings unknown nested key": Bad(
        {SETTINGS: "secrets: {age_key_fiel: example-age.key}\n"},
        SETTINGS,
        "secrets.age_key_fiel",
        ("unknown key",),
    ),
    "settings top level is a string": Bad({SETTINGS: "just a sentence\n"}, SETTINGS),
    "settings shared_paths a mapping": Bad(settings("shared_paths: {a: b}\n"), SETTINGS, "shared_paths"),
    "freeze date not a date": Bad(
        settings("freeze_windows:\n  - {start: next-tuesday, end: 2099-01-01}\n"),
        SETTINGS,
        "freeze_windows[0].start",
        ("ISO 8601",),
    ),
    "freeze month 13": Bad(
        settings("freeze_windows:\n  - {start: '2026-13-01', end: '2027-01-01'}\n"),
        SETTINGS,
        "freeze_windows[0].start",
    ),
    "freeze ends before it starts": Bad(
        settings("freeze_windows:\n  - {start: 2026-12-20, end: 2026-12-01}\n"),
        SETTINGS,
        "freeze_windows[0]",
        ("end after it starts",),
    ),
    "freeze end missing": Bad(
        settings("freeze_windows:\n  - {start: 2026-12-20}\n"), SETTINGS, "freeze_windows[0].end"
    ),
    "freeze windows a mapping": Bad(
        settings("freeze_windows: {start: 2026-12-20, end: 2026-12-21}\n"), SETTINGS, "freeze_windows"
    ),
    "freeze window a string": Bad(settings("freeze_windows: [exam weeks]\n"), SETTINGS, "freeze_windows[0]"),
    "settings binary junk": Bad({SETTINGS: b"\x00\x01\xfe\xff\x89PNG\r\n\x1a\n\x00\x00junk"}, SETTINGS),
    # --- the chart dir
    "chart dir missing": Bad({"hub": None}, "hub", "chart"),
    "Chart.yaml missing": Bad({"hub/Chart.yaml": None}, "hub", "chart"),
    "chart setting names a file": Bad(
        {SETTINGS: GOOD_SETTINGS.replace("chart: hub", "chart: .sops.yaml")},
        SETTINGS,
        "chart",
        (".sops.yaml",),
    ),
    "chart setting escapes the repo": Bad(
        {SETTINGS: GOOD_SETTINGS.replace("chart: hub", "chart: ../../../../etc")}, SETTINGS, "chart", ("etc",)
    ),
    "settings duplicate key": Bad(settings("chart: hub\n"), SETTINGS, "chart", ("duplicate key",)),
    # --- hubploy.yaml: a list or scalar where a mapping is expected, at each level
    "hub top level scalar": Bad(hub("images\n"), HUB_YAML),
    "images is a list": Bad(hub("images: [localhost:5000/x/y]\n"), HUB_YAML, "images"),
    "images.registry is a list": Bad(
        hub(MINIMAL_HUB + "  registry: [dockerconfig]\n"), HUB_YAML, "images.registry"
    ),
    "images.images[0] is a string": Bad(
        hub("images:\n  images: [localhost:5000/x/y]\n"), HUB_YAML, "images.images[0]"
    ),
    "registry settings a list": Bad(
        hub(MINIMAL_HUB + "  registry:\n    provider: dockerconfig\n    dockerconfig: [a, b]\n"),
        HUB_YAML,
        "images.registry.dockerconfig",
    ),
    "cluster is a list": Bad(hub("cluster: [kubeconfig]\n"), HUB_YAML, "cluster"),
    "cluster.kubeconfig is a list": Bad(
        hub("cluster:\n  provider: kubeconfig\n  kubeconfig: [a]\n"), HUB_YAML, "cluster.kubeconfig"
    ),
    "environments is a string": Bad(hub(MINIMAL_HUB + "environments: staging\n"), HUB_YAML, "environments"),
    "environments.staging is a list": Bad(
        hub(MINIMAL_HUB + "environments:\n  staging: [a]\n"), HUB_YAML, "environments.staging"
    ),
    # --- wrong types and unknown keys deep inside
    "image name a number": Bad(
        hub("images:\n  images:\n    - name: 42\n      path: image\n"), HUB_YAML, "images.images[0].name"
    ),
    "unknown key in repo2docker": Bad(
        hub(
            "images:\n  images:\n    - name: localhost:5000/x/y\n"
            "      path: image\n"
            "      repo2docker: {base_imgae: buildpack-deps:jammy}\n"
        ),
        HUB_YAML,
        "images.images[0].repo2docker.base_imgae",
        ("unknown key",),
    ),
    "unknown key in cluster.gcloud": Bad(
        hub("cluster:\n  provider: gcloud\n  gcloud: {project: p, cluster: c, zone: z, projcet: q}\n"),
        HUB_YAML,
        "cluster.gcloud.projcet",
        ("unknown key",),
    ),
    "unknown key in an environment": Bad(
        hub(MINIMAL_HUB + "environments:\n  staging: {url: 'https://s', relase: x}\n"),
        HUB_YAML,
        "environments.staging.relase",
        ("unknown key",),
    ),
    "unknown registry provider": Bad(
        hub(MINIMAL_HUB + "  registry: {provider: quay}\n"), HUB_YAML, "images.registry.provider"
    ),
    # --- names
    "release override too long": Bad(
        hub(MINIMAL_HUB + "environments:\n  staging: {release: " + "r" * 60 + "}\n"),
        HUB_YAML,
        "environments.staging",
        ("helm allows 53",),
    ),
    "namespace override invalid": Bad(
        hub(MINIMAL_HUB + "environments:\n  staging: {namespace: Bad_NS}\n"),
        HUB_YAML,
        "environments.staging",
        ("not a valid DNS label",),
    ),
    "duplicate environment key": Bad(
        hub(MINIMAL_HUB + "environments:\n  staging: {}\n  staging: {url: x}\n"),
        HUB_YAML,
        "environments.staging",
        ("duplicate",),
    ),
    "duplicate top-level key": Bad(
        hub(MINIMAL_HUB + "images:\n  image_name: localhost:5000/x/z\n"), HUB_YAML, "images", ("duplicate",)
    ),
    # --- image layout
    "image path is a file": Bad(
        hub("images:\n  images:\n    - name: localhost:5000/x/y\n      path: image/Dockerfile\n"),
        HUB_YAML,
        "images.images[0].path",
    ),
    "image dir symlink escapes the repo": Bad(
        {
            f"{H}/image": None,
            f"{H}/image-link": Symlink("../../../outside"),
            "../outside/Dockerfile": "FROM scratch\n",
            HUB_YAML: "images:\n  images:\n    - name: localhost:5000/x/y\n      path: image-link\n",
        },
        HUB_YAML,
        "images.images[0].path",
        ("outside",),
    ),
    # --- junk in hubploy.yaml and in values files
    "hub binary junk": Bad({HUB_YAML: os.urandom(64) + b"\x00\x00"}, HUB_YAML),
    "hub invalid utf-8": Bad({HUB_YAML: "images:\n  image_name: caf\xe9\n".encode("latin-1")}, HUB_YAML),
    "hub zero-width key": Bad(
        hub("imag\u200bes:\n  image_name: localhost:5000/x/y\n"), HUB_YAML, "imag\u200bes", ("unknown key",)
    ),
    "hub right-to-left junk": Bad(
        hub("images:\n  image_name: \u202elocalhost:5000/x/y\n  \u2028: 1\n"), HUB_YAML
    ),
    "hub huge file": Bad(
        {
            HUB_YAML: "images:\n  image_name: localhost:5000/x/y\n"
            + ("#" + "y" * 200 + "\n") * 60000
            + "images: [unclosed\n"
        },
        HUB_YAML,
        "",
        ("malformed YAML",),
    ),
    "hubploy.yaml is a directory": Bad(
        {HUB_YAML: None, f"{HUB_YAML}/x": "a: b\n"}, "deployments", "", ("no hubs found",)
    ),
    "hubploy.yaml dangling symlink": Bad(
        {HUB_YAML: Symlink("nowhere.yaml")}, "deployments", "", ("no hubs found",)
    ),
    "hubploy.yaml symlink escapes": Bad(
        {HUB_YAML: Symlink("../../../outside.yaml"), "../outside.yaml": MINIMAL_HUB},
        HUB_YAML,
        "",
        ("outside the repository",),
    ),
    "config value file binary": Bad(
        {f"{H}/config/common.yaml": b"\x7fELF\x02\x01\x01\x00" + os.urandom(64)}, f"{H}/config/common.yaml"
    ),
    "config value file tabs": Bad(
        {f"{H}/config/staging.yaml": "jupyterhub:\n\thub: {}\n"},
        f"{H}/config/staging.yaml",
        "",
        ("malformed YAML",),
    ),
    "config value file a string": Bad({f"{H}/config/common.yaml": "jupyterhub\n"}, f"{H}/config/common.yaml"),
    "config dir is a file": Bad(
        {f"{H}/config": None}, f"{H}/config", "", ("not a directory",), setup="config-file"
    ),
    "config value symlink escapes": Bad(
        {f"{H}/config/common.yaml": Symlink("/etc/hostname")},
        f"{H}/config/common.yaml",
        "",
        ("outside the repository",),
    ),
    "config value huge": Bad(
        {
            f"{H}/config/common.yaml": "jupyterhub:\n  hub: {}\n"
            + ("#" + "z" * 200 + "\n") * 60000
            + "jupyterhub: [\n"
        },
        f"{H}/config/common.yaml",
        "",
        ("malformed YAML",),
    ),
    # --- secrets
    "secret values in plaintext": Bad(
        {f"{H}/secrets/staging.yaml": PLAINTEXT_SECRET}, f"{H}/secrets/staging.yaml", "", ("plaintext",)
    ),
    "git-crypt locked secret": Bad(
        {f"{H}/secrets/staging.yaml": b"\x00GITCRYPT\x00" + os.urandom(48)},
        f"{H}/secrets/staging.yaml",
        "",
        ("git-crypt",),
    ),
    "secret file symlink escapes": Bad(
        {f"{H}/secrets/staging.yaml": Symlink("/etc/hostname")},
        f"{H}/secrets/staging.yaml",
        "",
        ("outside the repository",),
    ),
    "secrets dir is a file": Bad(
        {f"{H}/secrets": None}, f"{H}/secrets", "", ("not a directory",), setup="secrets-file"
    ),
    "plaintext cluster key file": Bad(
        {
            HUB_YAML: MINIMAL_HUB + "cluster:\n  provider: kubeconfig\n  kubeconfig: {filename: kube.yaml}\n",
            f"{H}/secrets/kube.yaml": "apiVersion: v1\nkind: Config\n",
        },
        f"{H}/secrets/kube.yaml",
        "",
        ("plaintext",),
    ),
    "wrong sops key": Bad(
        {SETTINGS: GOOD_SETTINGS.replace("example-age.key", "other-age.key")},
        f"{H}/secrets/staging.yaml",
        "",
        ("decrypt",),
        validate=False,
        setup="other-age-key",
    ),
    "missing age key file": Bad(
        {SETTINGS: GOOD_SETTINGS.replace("example-age.key", "no-such.key")},
        SETTINGS,
        "secrets.age_key_file",
        ("does not exist",),
    ),
    "tampered sops file": Bad(
        {}, f"{H}/secrets/staging.yaml", "", ("decrypt",), validate=False, setup="tamper"
    ),
    # --- hub dirs
    "hub dir is a file": Bad({H: None}, "deployments", "", ("no hubs found",), setup="hub-file"),
    # --- chart values against the chart's values.schema.json (issue 20): before any cluster call
    "typo under jupyterhub": Bad(
        {f"{H}/config/common.yaml": "jupyterhub:\n  singleuser:\n    imagee: {name: x}\n"},
        f"{H}/config/common.yaml",
        "jupyterhub.singleuser.imagee",
        ("unknown key", ":3:"),
    ),
    "number where the chart wants a string": Bad(
        {f"{H}/config/staging.yaml": "jupyterhub:\n  hub:\n    image: {tag: 4.4}\n"},
        f"{H}/config/staging.yaml",
        "jupyterhub.hub.image.tag",
        ("quote it",),
    ),
    # --- hostile repos (issue 15): paths with '..' and symlinks leading out of the repository
    "image path escapes the repo": Bad(
        hub("images:\n  images:\n    - name: localhost:5000/x/y\n      path: ../../../outside\n"),
        HUB_YAML,
        "images.images[0].path",
        ("outside the repository",),
        setup="outside-dir",
    ),
    "key file escapes the repo": Bad(
        hub(
            MINIMAL_HUB + "cluster:\n  provider: kubeconfig\n"
            "  kubeconfig: "
            "{filename: ../../../../etc/hostname}\n"
        ),
        HUB_YAML,
        "cluster.kubeconfig.filename",
        ("outside the repository",),
    ),
    "hub dir is a symlink out of the repo": Bad({}, H, "", ("outside the repository",), setup="hub-outside"),
    "deployments/ is a symlink out of the repo": Bad(
        {}, "deployments", "", ("outside the repository",), setup="deployments-outside"
    ),
    "chart dependency escapes the repo": Bad(
        {"hub/Chart.yaml": CHART.replace("../sandbox/charts/jupyterhub", "../../../outside-chart")},
        "hub/Chart.yaml",
        "dependencies",
        ("outside the repository",),
    ),
    # --- YAML alias bombs ("billion laughs") and recursive aliases, wherever YAML is read
    "alias bomb in hubploy.yaml": Bad(hub(alias_bomb("environments")), HUB_YAML, "", ("alias bomb",)),
    "alias bomb in a values file": Bad(
        {f"{H}/config/common.yaml": alias_bomb("jupyterhub")}, f"{H}/config/common.yaml", "", ("alias bomb",)
    ),
    "alias bomb in the chart's values": Bad(
        {"hub/values.yaml": alias_bomb("jupyterhub")}, "hub/values.yaml", "", ("alias bomb",)
    ),
    "alias bomb in a secret file": Bad(
        {f"{H}/secrets/staging.yaml": alias_bomb("jupyterhub")},
        f"{H}/secrets/staging.yaml",
        "",
        ("alias bomb",),
    ),
    "alias bomb in hubploy-repo.yaml": Bad(
        {SETTINGS: alias_bomb("shared_paths")}, SETTINGS, "", ("alias bomb",)
    ),
    "recursive alias in a values file": Bad(
        {f"{H}/config/common.yaml": "jupyterhub: &a {hub: *a}\n"},
        f"{H}/config/common.yaml",
        "",
        ("recursive alias",),
    ),
    # --- 100 MB files: refused unread
    "100 MB values file": Bad(
        {}, f"{H}/config/common.yaml", "", ("MiB",), setup=f"huge:{H}/config/common.yaml"
    ),
    "100 MB hubploy.yaml": Bad({}, HUB_YAML, "", ("MiB",), setup=f"huge:{HUB_YAML}"),
    "100 MB secret file": Bad(
        {}, f"{H}/secrets/staging.yaml", "", ("MiB",), setup=f"huge:{H}/secrets/staging.yaml"
    ),
    "100 MB chart values": Bad({}, "hub/values.yaml", "", ("MiB",), setup="huge:hub/values.yaml"),
    # --- bytes that are not UTF-8, named with their line
    "values file not UTF-8": Bad(
        {f"{H}/config/common.yaml": "jupyterhub:\n  hub: {caf\xe9: 1}\n".encode("latin-1")},
        f"{H}/config/common.yaml",
        "",
        ("UTF-8", ":2:"),
    ),
    "secret file not UTF-8": Bad(
        {f"{H}/secrets/staging.yaml": "a: 1\nb: caf\xe9\n".encode("latin-1")},
        f"{H}/secrets/staging.yaml",
        "",
        ("UTF-8", "line 2"),
    ),
    "Chart.yaml not UTF-8": Bad(
        {"hub/Chart.yaml": CHART.replace("The example", "L\xe9 example").encode("latin-1")},
        "hub/Chart.yaml",
        "",
        ("UTF-8",),
    ),
    "settings not UTF-8": Bad(
        {SETTINGS: (GOOD_SETTINGS + "# r\xe9sum\xe9\n").encode("latin-1")}, SETTINGS, "", ("UTF-8",)
    ),
    # --- duplicate keys
    "duplicate key in a values file": Bad(
        {f"{H}/config/common.yaml": "jupyterhub:\n  hub: {}\n  hub: {}\n"},
        f"{H}/config/common.yaml",
        "jupyterhub.hub",
        ("duplicate key",),
    ),
    "duplicate key in the chart's values": Bad(
        {"hub/values.yaml": "jupyterhub: {}\njupyterhub: {}\n"},
        "hub/values.yaml",
        "jupyterhub",
        ("duplicate key",),
    ),
    "duplicate key in Chart.yaml": Bad(
        {"hub/Chart.yaml": CHART + "version: 0.2.0\n"}, "hub/Chart.yaml", "version", ("duplicate key",)
    ),
}

HOSTILE_NAMES = ["..", "../h", "../../etc", "h/../h", "/etc", "."]


def _apply(root: Path, case: Bad) -> None:
    for rel, content in case.files.items():
        path = root / rel
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            subprocess.run(["rm", "-rf", str(path)], check=True)
        if content is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Symlink):
            path.symlink_to(content.target)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if case.setup == "config-file":
        (root / H / "config").write_text("jupyterhub: {}\n")
    elif case.setup == "secrets-file":
        (root / H / "secrets").write_text("not a dir\n")
    elif case.setup == "hub-file":
        (root / H).write_text("hubploy.yaml: {}\n")
    elif case.setup == "other-age-key":
        subprocess.run(["age-keygen", "-o", str(root / "other-age.key")], check=True, capture_output=True)
    elif case.setup == "outside-dir":
        (root.parent / "outside").mkdir(exist_ok=True)
    elif case.setup == "hub-outside":
        outside = root.parent / "outside-hub"
        (root / H).rename(outside)
        (root / H).symlink_to(outside)
    elif case.setup == "deployments-outside":
        outside = root.parent / "outside-deployments"
        (root / "deployments").rename(outside)
        (root / "deployments").symlink_to(outside)
    elif case.setup and case.setup.startswith("huge:"):
        write_huge(root / case.setup.removeprefix("huge:"))
    elif case.setup == "tamper":
        path = root / H / "secrets" / "staging.yaml"
        text = path.read_text()
        start = text.index("data:") + 5
        flipped = "A" if text[start] != "A" else "B"
        path.write_text(text[:start] + flipped + text[start + 1 :])


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error: ")]


def _check_output(
    name: str, what: str, result: subprocess.CompletedProcess[str], case: Bad, words: tuple[str, ...]
) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, f"{name}: {what} exit {result.returncode}\n{output}"
    assert "Traceback" not in output, f"{name}: {what} printed a traceback\n{output}"
    lines = _error_lines(result.stderr)
    assert lines, f"{name}: {what} printed no error line\n{output}"
    wanted = [case.file.strip(), case.key, *words]
    assert any(all(w in line for w in wanted if w) for line in lines), (
        f"{name}: {what}: no error line names {wanted}\n{output}"
    )


@pytest.fixture(scope="module")
def good_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_good_repo(tmp_path_factory.mktemp("good") / "repo")
    init_repo(root, branch="staging").commit(None, "a good hub")  # the deploy tags images from git
    return root


def _fresh_repo(template: Path, where: Path) -> Path:
    subprocess.run(["cp", "-a", str(template), str(where / "repo")], check=True)
    return where / "repo"


def test_the_good_repo_validates_and_its_deploy_reaches_for_the_cluster(
    good_template: Path, tmp_path: Path, shims: Shims
) -> None:
    """The baseline: the unbroken repo passes validate, and its deploy gets as far as a cluster call
    (which the shims log and which fails against the closed port) — so an empty log below means
    the bad input stopped the deploy first."""
    root = _fresh_repo(good_template, tmp_path)
    assert run_cli("validate", cwd=root, env=shims.env).returncode == 0
    # --ignore-hold: the Prefect server is a closed port too, and a hold that cannot be read refuses the
    # deploy; here only the repository may stop it
    result = run_cli(
        "deploy", GOOD_HUB, "hub", "staging", "--ignore-hold", cwd=root, env=shims.env, timeout=120
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert shims.cluster_calls(), f"the shims logged no cluster call: {shims.calls()}\n{result.stderr}"


def test_there_are_at_least_40_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_bad_repo_is_refused_clearly_without_a_cluster_call(
    name: str, good_template: Path, tmp_path: Path, shims: Shims
) -> None:
    case = CASES[name]
    root = _fresh_repo(good_template, tmp_path)
    _apply(root, case)
    started = time.monotonic()
    validated = run_cli("validate", cwd=root, env=shims.env, timeout=60)
    if case.validate:
        _check_output(name, "validate", validated, case, case.words)
    else:  # needs the key or a render: validate cannot know, but must not crash
        assert validated.returncode in (0, 1) and "Traceback" not in validated.stderr, validated.stderr
    deployed = run_cli(
        "deploy", GOOD_HUB, "hub", "staging", "--ignore-hold", cwd=root, env=shims.env, timeout=120
    )
    _check_output(name, "deploy", deployed, case, ())
    assert shims.cluster_calls() == [], f"{name}: cluster calls {shims.cluster_calls()}\n{deployed.stderr}"
    assert time.monotonic() - started < 60, f"{name}: took {time.monotonic() - started:.0f} s"


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hub_names_that_are_paths_are_refused_without_a_cluster_call(
    name: str, good_template: Path, tmp_path: Path, shims: Shims
) -> None:
    root = _fresh_repo(good_template, tmp_path)
    for argv in (
        ["validate", name],
        ["render", name, "staging"],
        ["deploy", name, "hub", "staging", "--ignore-hold"],
    ):
        result = run_cli(*argv, cwd=root, env=shims.env, timeout=60)
        output = result.stdout + result.stderr
        assert result.returncode == 1 and "Traceback" not in output, f"{argv}: {output}"
        lines = _error_lines(result.stderr)
        assert len(lines) == 1 and repr(name) in lines[0], f"{argv}: {output}"
    assert shims.cluster_calls() == [], shims.cluster_calls()


@dataclass(frozen=True)
class Cost:
    seconds: float
    peak_mb: float
    stderr: str


def _validate_cost(root: Path, env: dict[str, str]) -> Cost:
    """Wall time and peak resident memory of one `hubploy validate` process, as GNU time reads them."""
    full_env = {**os.environ, **env, "PATH": f"{VENV_BIN}{os.pathsep}{env['PATH']}"}
    done = subprocess.run(
        ["/usr/bin/time", "-f", "cost %e %M", str(VENV_BIN / "hubploy"), "validate"],
        cwd=root,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    *rest, cost = done.stderr.rstrip("\n").rsplit("\n", 1)
    _, seconds, peak_kb = cost.split()
    return Cost(float(seconds), int(peak_kb) / 1024, "\n".join(rest))


def test_alias_bomb_and_100_mb_file_cost_bounded_time_and_memory(
    good_template: Path, tmp_path: Path, shims: Shims
) -> None:
    """Measured, printed, and bounded generously: a hostile file costs at most 5 s and 200 MB more than
    validating the good repository."""
    (tmp_path / "base").mkdir()
    base = _validate_cost(_fresh_repo(good_template, tmp_path / "base"), shims.env)
    hostile = {
        name: CASES[name]
        for name in (
            "alias bomb in a values file",
            "alias bomb in hubploy.yaml",
            "100 MB values file",
            "100 MB secret file",
        )
    }
    print(f"\nvalidate, good repository: {base.seconds:.2f} s, peak {base.peak_mb:.0f} MB")
    for name, case in hostile.items():
        where = tmp_path / name.replace(" ", "-")
        where.mkdir()
        root = _fresh_repo(good_template, where)
        _apply(root, case)
        cost = _validate_cost(root, shims.env)
        print(
            f"validate, {name}: {cost.seconds:.2f} s (+{cost.seconds - base.seconds:.2f}), "
            f"peak {cost.peak_mb:.0f} MB (+{cost.peak_mb - base.peak_mb:.0f})"
        )
        assert "error: " in cost.stderr and "Traceback" not in cost.stderr, cost.stderr
        assert cost.seconds - base.seconds < 5, f"{name}: {cost.seconds:.1f} s"
        assert cost.peak_mb - base.peak_mb < 200, f"{name}: {cost.peak_mb:.0f} MB"
