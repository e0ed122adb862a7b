"""What stands in for a container image: images are not pulled here, so the agent runs a container's
command on the host, in the environment of the image it names.

An image is matched by its repository's last path element and its tag, whatever registry it names
(``quay.io/jupyterhub/k8s-hub:4.4.0`` and ``localhost:5000/jupyterhub/k8s-hub:4.4.0`` are the same).
Each :class:`ImageEnv` is what the image would provide: programs first on PATH (a virtualenv built with
Debian's python3, so any user can run it, or an npm prefix), the image's ENTRYPOINT, CMD, WORKDIR and
user, and programs placed into the container's filesystem: small stand-ins (``/pause``, ``/image-awaiter``)
and the sandbox's own kube-scheduler (for Z2JH's user-scheduler).
The runner image of hubploy itself (repository ``hubploy``, for the Kubernetes work pool's Jobs) stands for
the environment the sandbox runs in: hubploy's own virtualenv, whose ``prefect flow-run execute`` runs a flow
run in a Job's pod. An image nothing matches runs with the host's programs, plus the single-user environment
(user images are built on such an image).

``install`` (run by `hubploy sandbox install`) builds every environment into the cache once.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hubploy.runner import child_env, run
from hubploy_sandbox.versions import HELM_VERSIONS, KUBERNETES_VERSION

STANDINS = Path(__file__).resolve().parent / "standins"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: readable by the containers' users, unlike a python under /root
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Say = Callable[[str], None]


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    name: str
    home: str


ROOT = User(0, 0, "root", "/root")
JOVYAN = User(1000, 1000, "jovyan", "/home/jovyan")
NOBODY = User(65534, 65534, "nobody", "/nonexistent")


@dataclass(frozen=True)
class ImageEnv:
    name: str  # the cache directory: <cache>/images/<name>
    repository: str  # the repository's last path element it stands in for
    tags: str = "*"  # fnmatch pattern of the tags
    pip: tuple[str, ...] = ()  # a virtualenv with these packages
    npm: tuple[str, ...] = ()  # an npm prefix with these packages
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    workdir: str = "/"
    user: User = ROOT
    # path in the container -> a stand-in program in standins/, "kubernetes/<command>" of the sandbox's build,
    # or "cache/<path>": a file of the sandbox's cache (helm)
    files: dict[str, str] = field(default_factory=dict)
    own_venv: bool = False  # the virtualenv the sandbox runs in (hubploy's), not one of its own

    def matches(self, repository: str, tag: str) -> bool:
        return repository == self.repository and fnmatch.fnmatchcase(tag, self.tags)

    def bin_dirs(self, cache: Path) -> list[str]:
        if self.own_venv:
            return [str(Path(sys.prefix) / "bin")]
        root = cache / "images" / self.name
        if self.pip:
            return [str(root / "bin")]
        if self.npm:
            return [str(root / "node_modules" / ".bin")]
        return []

    def path(self, cache: Path) -> str:
        return ":".join([*self.bin_dirs(cache), HOST_PATH])

    def file_sources(self, cache: Path) -> dict[str, Path]:
        """Each file of ``files`` (path in the container -> where it is on the host)."""

        def source_path(source: str) -> Path:
            if source.startswith("kubernetes/"):
                return cache / f"kubernetes-{KUBERNETES_VERSION}" / source.removeprefix("kubernetes/")
            if source.startswith("cache/"):
                return cache / source.removeprefix("cache/")
            return STANDINS / source

        return {target: source_path(source) for target, source in self.files.items()}


HUB_IMAGE_4 = ImageEnv(
    "k8s-hub-4.4.0",
    "k8s-hub",
    "4.*",
    pip=(
        "jupyterhub==5.5.0",
        "jupyterhub-kubespawner==7.0.0",
        "kubernetes-asyncio==36.1.0",
        "oauthenticator==17.4.0",
        "jupyterhub-idle-culler==1.4.0",
        "jupyterhub-nativeauthenticator==1.3.0",
        "jupyterhub-tmpauthenticator==1.0.0",
        "pyyaml==6.0.3",
        "ruamel-yaml==0.19.1",
        "pymysql==1.2.0",
    ),
    entrypoint=("tini", "--"),
    cmd=("jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py"),
    workdir="/srv/jupyterhub",
    user=JOVYAN,
)
HUB_IMAGE_3 = ImageEnv(
    "k8s-hub-3.3.8",
    "k8s-hub",
    "3.*",
    pip=(
        "jupyterhub==4.1.6",
        "jupyterhub-kubespawner==6.2.0",
        "kubernetes-asyncio==30.1.1",
        "oauthenticator==16.3.1",
        "jupyterhub-idle-culler==1.3.1",
        "jupyterhub-nativeauthenticator==1.2.0",
        "jupyterhub-tmpauthenticator==1.0.0",
        "pyyaml==6.0.1",
        "ruamel-yaml==0.18.6",
        "pymysql==1.1.1",
    ),
    entrypoint=HUB_IMAGE_4.entrypoint,
    cmd=HUB_IMAGE_4.cmd,
    workdir="/srv/jupyterhub",
    user=JOVYAN,
)
PROXY_IMAGE_5 = ImageEnv(
    "configurable-http-proxy-5.2.0",
    "configurable-http-proxy",
    "5.*",
    npm=("configurable-http-proxy@5.2.0",),
    entrypoint=("configurable-http-proxy",),
    workdir="/srv/configurable-http-proxy",
    user=NOBODY,
)
PROXY_IMAGE_4 = ImageEnv(
    "configurable-http-proxy-4.6.1",
    "configurable-http-proxy",
    "4.*",
    npm=("configurable-http-proxy@4.6.1",),
    entrypoint=("configurable-http-proxy",),
    workdir="/srv/configurable-http-proxy",
    user=NOBODY,
)
SINGLEUSER_IMAGE = ImageEnv(
    "k8s-singleuser-sample-4.4.0",
    "k8s-singleuser-sample",
    pip=("jupyterhub==5.5.0", "jupyter-server==2.19.0", "jupyterlab==4.5.8"),
    entrypoint=("tini", "-g", "--"),
    cmd=("jupyterhub-singleuser",),
    workdir="/home/jovyan",
    user=JOVYAN,
)
PAUSE_IMAGE = ImageEnv("pause", "pause", files={"/pause": "pause"}, entrypoint=("/pause",), user=NOBODY)
IMAGE_AWAITER_IMAGE = ImageEnv(
    "k8s-image-awaiter",
    "k8s-image-awaiter",
    files={"/image-awaiter": "image-awaiter"},
    entrypoint=("/image-awaiter",),
)
# Z2JH's user-scheduler: the sandbox's own kube-scheduler (its release, whatever the tag asks for).
KUBE_SCHEDULER_IMAGE = ImageEnv(
    "kube-scheduler",
    "kube-scheduler",
    files={"/usr/local/bin/kube-scheduler": "kubernetes/kube-scheduler"},
    entrypoint=("/usr/local/bin/kube-scheduler",),
)

# hubploy's runner image (any tag): the Kubernetes work pool's Jobs run `prefect flow-run execute` with it;
# it has the tools a deploy runs (sops comes with hubploy's virtualenv).
RUNNER_IMAGE = ImageEnv(
    "hubploy",
    "hubploy",
    own_venv=True,
    workdir="/",
    files={
        "/usr/local/bin/kubectl": "kubernetes/kubectl",
        "/usr/local/bin/helm": f"cache/helm-v{HELM_VERSIONS['3']}/helm",
    },
)

CATALOG = (
    HUB_IMAGE_4,
    HUB_IMAGE_3,
    PROXY_IMAGE_5,
    PROXY_IMAGE_4,
    SINGLEUSER_IMAGE,
    PAUSE_IMAGE,
    IMAGE_AWAITER_IMAGE,
    KUBE_SCHEDULER_IMAGE,
    RUNNER_IMAGE,
)
# An image the catalog does not know: a user image, built on the single-user image, or a tool image.
OTHER_IMAGE = ImageEnv("other", "*")


def split_image(image: str) -> tuple[str, str]:
    """(repository's last path element, tag) of an image reference (digest references give the tag
    ``latest`` unless they also name one)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    repository, _, tag = last.partition(":")
    return repository, tag or "latest"


def env_for(image: str) -> ImageEnv:
    repository, tag = split_image(image)
    return next((e for e in CATALOG if e.matches(repository, tag)), OTHER_IMAGE)


def path_for(image: str, cache: Path) -> str:
    """PATH inside a container of ``image``: its environment's programs, then the host's (an image the
    catalog does not know also gets the single-user environment, last)."""
    found = env_for(image)
    if found is OTHER_IMAGE:
        return ":".join([HOST_PATH, *SINGLEUSER_IMAGE.bin_dirs(cache)])
    return found.path(cache)


# --- install ------------------------------------------------------------------------------------------


def _stamp(env: ImageEnv) -> str:
    return json.dumps({"pip": env.pip, "npm": env.npm})


def installed(env: ImageEnv, cache: Path) -> bool:
    stamp = cache / "images" / env.name / ".hubploy-image-env"
    try:
        return stamp.read_text() == _stamp(env)
    except OSError:
        return False


def install_env(env: ImageEnv, cache: Path, say: Say) -> bool:
    """Build ``env`` into ``<cache>/images/<name>`` unless it is there; True when it was built. The stamp
    file is written last, so an interrupted install is redone (a venv records its own path, so it is
    built in place)."""
    if not (env.pip or env.npm) or installed(env, cache):
        return False
    root = cache / "images" / env.name
    shutil.rmtree(root, ignore_errors=True)
    start = time.monotonic()
    proc_env = child_env({"PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if env.pip:
        say(f"image {env.name}: pip install {' '.join(env.pip)}")
        run([SYSTEM_PYTHON, "-m", "venv", root], env=proc_env, timeout=300)
        run([root / "bin" / "python", "-m", "pip", "install", "-q", *env.pip], env=proc_env, timeout=1800)
    if env.npm:
        say(f"image {env.name}: npm install {' '.join(env.npm)}")
        root.mkdir(parents=True)
        run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(root), *env.npm],
            env=proc_env,
            timeout=900,
        )
    for path in [root.parent, root, *root.rglob("*")]:  # readable by every container user
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
    (root / ".hubploy-image-env").write_text(_stamp(env))
    say(f"image {env.name}: ready in {time.monotonic() - start:.0f} s")
    return True


def install(cache: Path, say: Say = print) -> None:
    for env in CATALOG:
        install_env(env, cache, say)
