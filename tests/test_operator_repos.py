"""Real operators' repositories (issue 20, point 7): compatibility fixtures, written in our own words from
the shapes datahub, hubploy-template and pangeo-cloud-federation use, each judged by what hubploy itself
reads and accepts. `hubploy validate` and `hubploy render` accept every valid shape; what hubploy would
refuse, or what resolves outside the repository, is refused in one line, as are undecryptable secrets
(`validate --no-decrypt` checks them without a key) and chart repositories that cannot be reached.

Chart dependencies on remote repositories are served by a chart repository of our own on loopback (the
jupyterhub chart, and a pangeo-style chart that wraps it), with helm's cache in a temp dir.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT_ROOT
from fixtures.sandbox import Sandbox
from helpers.cli import run_cli
from helpers.gitrepo import init_repo

pytestmark = pytest.mark.sandbox

AGE_RECIPIENT = next(
    line.split(": ", 1)[1]
    for line in (PROJECT_ROOT / "example-age.key").read_text().splitlines()
    if line.startswith("# public key: ")
)
JUPYTERHUB_CHART = PROJECT_ROOT / "sandbox" / "charts" / "jupyterhub"
SANDBOX_IMAGES = yaml.safe_load((PROJECT_ROOT / "hub" / "values.yaml").read_text())["jupyterhub"]


# --- a chart repository on loopback --------------------------------------------------------------------


class ChartRepo:
    def __init__(self, directory: Path, url: str) -> None:
        self.directory, self.url = directory, url


@pytest.fixture(scope="module")
def chart_repo(tmp_path_factory: pytest.TempPathFactory, sandbox: Sandbox) -> Iterator[ChartRepo]:
    """The jupyterhub chart and a pangeo-style wrapper of it (values under pangeo.jupyterhub), packaged and
    indexed as a chart repository, served over HTTP."""
    directory = tmp_path_factory.mktemp("chart-repo")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    helm = [str(sandbox.helm_path("3"))]
    env = helm_env(tmp_path_factory.mktemp("helm-home"), sandbox)
    subprocess.run(
        [*helm, "package", str(JUPYTERHUB_CHART), "-d", str(directory)],
        env=env,
        check=True,
        capture_output=True,
    )
    pangeo = tmp_path_factory.mktemp("pangeo-chart") / "pangeo"
    (pangeo / "charts").mkdir(parents=True)
    (pangeo / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "pangeo",
                "version": "21.1.0",
                "dependencies": [{"name": "jupyterhub", "version": "4.4.0", "repository": url}],
            }
        )
    )
    (pangeo / "values.yaml").write_text(
        yaml.safe_dump({"jupyterhub": {"singleuser": {"defaultUrl": "/lab"}}})
    )
    shutil.copy(directory / "jupyterhub-4.4.0.tgz", pangeo / "charts")
    subprocess.run(
        [*helm, "package", str(pangeo), "-d", str(directory)], env=env, check=True, capture_output=True
    )
    subprocess.run(
        [*helm, "repo", "index", str(directory), "--url", url], env=env, check=True, capture_output=True
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ChartRepo(directory, url)
    finally:
        server.shutdown()
        server.server_close()


def helm_env(home: Path, sandbox: Sandbox, **extra: str) -> dict[str, str]:
    """The sandbox env with helm's cache and config in ``home`` (not the user's)."""
    return {
        **sandbox.env,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        **extra,
    }


# --- writing repositories ------------------------------------------------------------------------------


def write(root: Path, files: dict[str, str | dict]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))


def encrypt(root: Path, rel: str, content: dict, sandbox: Sandbox) -> None:
    """Write ``content`` to ``rel`` encrypted with sops to the example key, as operators commit secrets."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = "json" if path.suffix == ".json" else "yaml"
    plain = json.dumps(content) if kind == "json" else yaml.safe_dump(content)
    done = subprocess.run(
        [
            str(sandbox.bin / "sops"),
            "--encrypt",
            "--age",
            AGE_RECIPIENT,
            "--input-type",
            kind,
            "--output-type",
            kind,
            "/dev/stdin",
        ],
        input=plain,
        capture_output=True,
        text=True,
        env=sandbox.env,
        cwd=root,
        check=True,
    )  # no .sops.yaml there: --age decides
    path.write_text(done.stdout)


def umbrella(
    repo_url: str,
    name: str = "hub",
    dependency: str = "jupyterhub",
    version: str = "4.4.0",
    key: str = "jupyterhub",
) -> dict[str, str | dict]:
    """A datahub-style umbrella chart: a remote dependency, values under its key, an extra template."""
    return {
        f"{name}/Chart.yaml": {
            "apiVersion": "v2",
            "name": name,
            "version": "0.1.0",
            "dependencies": [{"name": dependency, "version": version, "repository": repo_url}],
        },
        f"{name}/values.yaml": {key: {"jupyterhub": SANDBOX_IMAGES} if key == "pangeo" else SANDBOX_IMAGES},
        f"{name}/templates/nfs-pvc.yaml": (
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n"
            "  name: home-nfs\nspec:\n  accessModes: [ReadWriteMany]\n"
            "  resources: {requests: {storage: 1Mi}}\n"
        ),
    }


def datahub(root: Path, chart_repo: ChartRepo, sandbox: Sandbox) -> Path:
    """datahub's shape: images.images[] lists, a GKE cluster block with a key in secrets/, sops secrets per
    hub, a second hub that builds from the first hub's image dir and shares its key by a symlink, a third
    with a pinned v1 image and keyless GKE access, a cookiecutter template dir that is no hub, a leftover
    block of another provider, a file in config/ hubploy does not read."""
    gke = {
        "provider": "gcloud",
        "gcloud": {
            "project": "ucb-datahub-2018",
            "cluster": "fall-2019",
            "zone": "us-central1",
            "service_key": "gke-key.json",
        },
    }
    write(
        root,
        {
            **umbrella(chart_repo.url),
            "hubploy-repo.yaml": {"chart": "hub", "secrets": {"age_key_file": "example-age.key"}},
            "deployments/datahub/hubploy.yaml": {
                "images": {
                    "images": [
                        {
                            "name": "us-central1-docker.pkg.dev/ucb-datahub-2018/user-images/datahub",
                            "path": "images/default",
                        }
                    ]
                },
                "cluster": {**gke, "aws": {"zone": "us-west-2"}},
            },  # another provider's leftover: never read
            "deployments/datahub/images/default/Dockerfile": "FROM jupyter/scipy-notebook:2024-10-07\n",
            "deployments/datahub/config/common.yaml": {
                "jupyterhub": {
                    "singleuser": {"memory": {"limit": "2G"}},
                    "hub": {"config": {"JupyterHub": {"authenticator_class": "dummy"}}},
                }
            },
            "deployments/datahub/config/staging.yaml": {
                "jupyterhub": {"ingress": {"enabled": True, "hosts": ["staging.datahub.org"]}}
            },
            "deployments/datahub/config/prod.yaml": {
                "jupyterhub": {"ingress": {"enabled": True, "hosts": ["datahub.org"]}}
            },
            "deployments/datahub/config/filestore/squash-flags.json": '{"not": "read by hubploy"}\n',
            "deployments/data100/hubploy.yaml": {
                "images": {
                    "images": [
                        {
                            "name": "us-central1-docker.pkg.dev/ucb-datahub-2018/user-images/data100",
                            "path": "../datahub/images/default",
                        }
                    ]
                },
                "cluster": gke,
            },
            "deployments/data100/config/common.yaml": {"jupyterhub": {"singleuser": {"defaultUrl": "/tree"}}},
            "deployments/data8/hubploy.yaml": {  # the v1 form: the tag pinned by the image repository's bot
                "images": {
                    "images": [
                        {"name": "us-central1-docker.pkg.dev/ucb-datahub-2018/user-images/data8:511c4637d7"}
                    ]
                },
                "cluster": {
                    "provider": "gcloud",
                    "gcloud": {k: v for k, v in gke["gcloud"].items() if k != "service_key"},
                },
                "environments": ["staging", "prod"],
            },
            "deployments/template/{{cookiecutter.hub_name}}/config/common.yaml": (
                "jupyterhub: {{ cookiecutter.x }}\n"
            ),
            "deployments/template/cookiecutter.json": '{"hub_name": "newhub"}\n',
        },
    )
    for hub in ("datahub", "data100", "data8"):
        for env_name in ("staging", "prod"):
            encrypt(
                root,
                f"deployments/{hub}/secrets/{env_name}.yaml",
                {"jupyterhub": {"proxy": {"secretToken": f"{hub}-{env_name}-" + "0" * 40}}},
                sandbox,
            )
    encrypt(
        root,
        "deployments/datahub/secrets/gke-key.json",
        {"type": "service_account", "private_key": "k"},
        sandbox,
    )
    (root / "deployments/data100/secrets/gke-key.json").symlink_to("../../datahub/secrets/gke-key.json")
    shutil.copy(PROJECT_ROOT / "example-age.key", root)
    return root


def hubploy_template(root: Path, chart_repo: ChartRepo, sandbox: Sandbox) -> Path:
    """hubploy-template's shape: the legacy single-image form with a gcloud registry, a helm 2 era chart
    (apiVersion v1, requirements.yaml) and plaintext secrets protected by git-crypt."""
    chart = umbrella(chart_repo.url)
    requirements = chart["hub/Chart.yaml"]
    assert isinstance(requirements, dict)
    chart["hub/requirements.yaml"] = {"dependencies": requirements.pop("dependencies")}
    requirements["apiVersion"] = "v1"
    write(
        root,
        {
            **chart,
            "hubploy-repo.yaml": {"secrets": {"allow_plaintext": True}},
            "deployments/myhub/hubploy.yaml": {
                "images": {
                    "image_name": "gcr.io/my-project/myhub-user",
                    "registry": {
                        "provider": "gcloud",
                        "gcloud": {"project": "my-project", "service_key": "registry-key.json"},
                    },
                },
                "cluster": {
                    "provider": "gcloud",
                    "gcloud": {
                        "project": "my-project",
                        "cluster": "myhub-cluster",
                        "zone": "us-central1-b",
                        "service_key": "deployer.json",
                    },
                },
            },
            "deployments/myhub/image/environment.yml": "dependencies: [python=3.11, numpy]\n",
            "deployments/myhub/image/Dockerfile": "FROM jupyter/base-notebook\n",
            "deployments/myhub/config/common.yaml": {"jupyterhub": {"singleuser": {"defaultUrl": "/lab"}}},
            "deployments/myhub/secrets/staging.yaml": {"jupyterhub": {"proxy": {"secretToken": "a" * 64}}},
            "deployments/myhub/secrets/prod.yaml": {"jupyterhub": {"proxy": {"secretToken": "b" * 64}}},
            "deployments/myhub/secrets/registry-key.json": '{"type": "service_account"}\n',
            "deployments/myhub/secrets/deployer.json": '{"type": "service_account"}\n',
            ".gitattributes": "deployments/*/secrets/** filter=git-crypt diff=git-crypt\n",
        },
    )
    return root


def pangeo(root: Path, chart_repo: ChartRepo, sandbox: Sandbox) -> Path:
    """pangeo-cloud-federation's shape: a chart `pangeo-deploy` wrapping the pangeo chart, which wraps
    jupyterhub (values under pangeo.jupyterhub), the legacy aws keys (project, zone) with the account id a
    YAML number, image_config_path, and the secrets in a repository-level secrets submodule."""
    aws = {"project": 783380859522, "zone": "us-west-2"}
    write(
        root,
        {
            **umbrella(
                chart_repo.url, name="pangeo-deploy", dependency="pangeo", version="21.1.0", key="pangeo"
            ),
            "hubploy-repo.yaml": {"chart": "pangeo-deploy", "secrets": {"age_key_file": "example-age.key"}},
            "deployments/icesat2/hubploy.yaml": {
                "images": {
                    "image_name": "783380859522.dkr.ecr.us-west-2.amazonaws.com/pangeo",
                    "image_config_path": "pangeo.jupyterhub.singleuser.image",
                    "registry": {"provider": "aws", "aws": {**aws, "service_key": "aws-creds.yaml"}},
                },
                "cluster": {
                    "provider": "aws",
                    "aws": {**aws, "cluster": "pangeo", "service_key": "aws-creds.yaml"},
                },
            },
            "deployments/icesat2/image/Dockerfile": "FROM pangeo/pangeo-notebook:2020.10.26\n",
            "deployments/icesat2/config/common.yaml": {
                "pangeo": {"jupyterhub": {"singleuser": {"memory": {"limit": "8G"}}}}
            },
        },
    )
    encrypt(
        root,
        "deployments/icesat2/secrets/aws-creds.yaml",
        {"creds": {"aws_access_key_id": "AKIAEXAMPLE", "aws_secret_access_key": "example-secret-key"}},
        sandbox,
    )
    for env_name in ("staging", "prod"):  # the secrets submodule's layout
        encrypt(
            root,
            f"secrets/deployments/icesat2/secrets/{env_name}.yaml",
            {"pangeo": {"jupyterhub": {"proxy": {"secretToken": f"icesat2-{env_name}-" + "1" * 40}}}},
            sandbox,
        )
    shutil.copy(PROJECT_ROOT / "example-age.key", root)
    return root


SHAPES: dict[str, tuple[Callable[[Path, ChartRepo, Sandbox], Path], list[str]]] = {
    "datahub": (datahub, ["datahub", "data100", "data8"]),
    "hubploy-template": (hubploy_template, ["myhub"]),
    "pangeo-cloud-federation": (pangeo, ["icesat2"]),
}


@pytest.fixture
def make_repo(tmp_path: Path, chart_repo: ChartRepo, sandbox: Sandbox) -> Callable[[str], tuple[Path, dict]]:
    def make(shape: str) -> tuple[Path, dict[str, str]]:
        build, _ = SHAPES[shape]
        root = build(tmp_path / shape, chart_repo, sandbox)
        init_repo(root, branch="staging").commit(None, f"a {shape}-style repository")  # images tag from git
        env = helm_env(tmp_path / "helm-home", sandbox)
        env.pop("SOPS_AGE_KEY_FILE", None)  # only what the repository names
        return root, env

    return make


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1 and "Traceback" not in output and errors, output
    return "\n".join(errors)


# --- every valid shape is accepted -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", list(SHAPES))
def test_validate_and_render_accept_the_shape(shape: str, make_repo) -> None:  # type: ignore[no-untyped-def]
    root, env = make_repo(shape)
    validated = run_cli("validate", cwd=root, env=env)
    assert validated.returncode == 0, validated.stderr
    assert f"{len(SHAPES[shape][1])} hub(s) valid: {', '.join(sorted(SHAPES[shape][1]))}" in validated.stdout
    for hub in SHAPES[shape][1]:
        for env_name in ("staging", "prod"):
            rendered = run_cli("render", hub, env_name, cwd=root, env=env)
            assert rendered.returncode == 0, rendered.stderr
            docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
            assert any(d["kind"] == "Deployment" and d["metadata"]["name"] == "hub" for d in docs)
            assert "secretToken" not in rendered.stdout and "0" * 40 not in rendered.stdout


def test_a_typo_under_the_wrapped_jupyterhub_is_caught_with_file_and_line(make_repo) -> None:  # type: ignore[no-untyped-def]
    root, env = make_repo("pangeo-cloud-federation")
    common = root / "deployments/icesat2/config/common.yaml"
    common.write_text("pangeo:\n  jupyterhub:\n    singleuser:\n      memroy: {limit: 8G}\n")
    line = _one_error(run_cli("validate", cwd=root, env=env))
    assert (
        "deployments/icesat2/config/common.yaml:4: pangeo.jupyterhub.singleuser.memroy: unknown key: the "
        "jupyterhub chart's values schema allows no `memroy` here; did you mean `memory`?"
    ) in line


# --- what resolves outside the repository is refused --------------------------------------------------


def test_a_key_symlinked_out_of_the_repository_is_refused(make_repo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, env = make_repo("datahub")
    outside = tmp_path / "outside-key.json"
    outside.write_text((root / "deployments/datahub/secrets/gke-key.json").read_text())
    link = root / "deployments/data100/secrets/gke-key.json"
    link.unlink()
    link.symlink_to(outside)
    errors = _one_error(run_cli("validate", "data100", cwd=root, env=env))
    assert "deployments/data100/secrets/gke-key.json: symlink points outside the repository" in errors
    assert "cluster.gcloud.service_key: key file 'gke-key.json' resolves outside the repository" in errors


def test_an_image_dir_outside_the_repository_is_refused(make_repo) -> None:  # type: ignore[no-untyped-def]
    root, env = make_repo("datahub")
    hub_file = root / "deployments/data100/hubploy.yaml"
    hub_file.write_text(hub_file.read_text().replace("../datahub/images/default", "../../../images/default"))
    errors = _one_error(run_cli("validate", "data100", cwd=root, env=env))
    assert (
        "images.images[0].path: image path '../../../images/default' resolves outside the repository"
    ) in errors


# --- secrets that cannot be decrypted, chart repositories that cannot be reached ------------------------


def test_undecryptable_secrets_are_one_line_and_no_decrypt_checks_the_rest(
    make_repo,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    sandbox: Sandbox,
) -> None:
    root, env = make_repo("datahub")
    (root / "hubploy-repo.yaml").write_text("chart: hub\n")  # no key at all
    env = {**env, "HOME": str(tmp_path / "home")}  # nor sops's default key file
    errors = _one_error(run_cli("validate", cwd=root, env=env))
    assert "deployments/datahub/secrets/staging.yaml: sops cannot decrypt it" in errors
    assert "hubploy validate --no-decrypt" in errors
    assert run_cli("validate", "--no-decrypt", cwd=root, env=env).returncode == 0
    secret = root / "deployments/datahub/secrets/staging.yaml"
    encrypt(
        root,
        "deployments/datahub/secrets/staging.yaml",
        {"jupyterhub": {"proxy": {"secretTokn": "x" * 64}}},
        sandbox,
    )
    errors = _one_error(run_cli("validate", "--no-decrypt", cwd=root, env=env))
    assert "deployments/datahub/secrets/staging.yaml:3: jupyterhub.proxy.secretTokn: unknown key" in errors
    assert "x" * 64 not in errors and secret.is_file()
    rendered = run_cli("render", "datahub", "staging", cwd=root, env=env)
    assert "sops cannot decrypt it" in _one_error(rendered)


def test_a_chart_repository_that_cannot_be_reached_is_named_with_the_cause(make_repo) -> None:  # type: ignore[no-untyped-def]
    root, env = make_repo("datahub")
    chart_file = root / "hub/Chart.yaml"
    unreachable = "http://127.0.0.1:9/helm-chart/"
    chart = yaml.safe_load(chart_file.read_text())
    chart["dependencies"][0]["repository"] = unreachable
    chart_file.write_text(yaml.safe_dump(chart, sort_keys=False))
    for argv in (["validate"], ["render", "datahub", "staging"]):
        errors = _one_error(run_cli(*argv, cwd=root, env=env))
        assert (
            f"dependencies[0].repository: cannot fetch jupyterhub 4.4.0 from chart repository {unreachable}: "
        ) in errors, errors
        assert "connection refused" in errors, errors
