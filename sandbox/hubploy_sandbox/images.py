"""The tiny base image: FROM scratch with a static busybox, pushed to the sandbox registry, and
copies of it under the names of Zero to JupyterHub's images (4.4.0 and 3.3.8), so that hubploy's check
that every image of a release exists in its registry passes for charts pointed at the sandbox registry.
The real images cannot be pulled here; what runs for them is :mod:`hubploy_sandbox.image_envs`."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from hubploy.runner import run
from hubploy_sandbox import registry
from hubploy_sandbox.errors import SandboxError
from hubploy_sandbox.paths import SandboxPaths

BASE_REPOSITORY = "base/busybox"
BASE_TAG = "latest"
STAND_IN_IMAGES = (
    ("jupyterhub/k8s-hub", "4.4.0"),
    ("jupyterhub/k8s-hub", "3.3.8"),
    ("jupyterhub/configurable-http-proxy", "5.2.0"),
    ("jupyterhub/configurable-http-proxy", "4.6.1"),
    ("jupyterhub/k8s-singleuser-sample", "4.4.0"),
    ("jupyterhub/k8s-singleuser-sample", "3.3.8"),
    ("jupyterhub/k8s-image-awaiter", "4.4.0"),
    ("jupyterhub/k8s-image-awaiter", "3.3.8"),
    ("pause", "3.10.1"),
    ("pause", "3.10"),
    ("kube-scheduler", "v1.30.14"),
    ("traefik", "v3.6.12"),
)
DOCKERFILE = 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD ["/bin/sh"]\n'


def base_image(paths: SandboxPaths) -> str:
    return f"{paths.registry_host}/{BASE_REPOSITORY}:{BASE_TAG}"


def base_image_present(paths: SandboxPaths) -> bool:
    return registry.manifest_status(paths, BASE_REPOSITORY, BASE_TAG) == 200


def _context(paths: SandboxPaths, env: Mapping[str, str]) -> Path:
    busybox = shutil.which("busybox", path="/bin:/usr/bin")
    if busybox is None:
        raise SandboxError("busybox is not installed", hint="run `hubploy sandbox install` (busybox-static)")
    ctx = paths.runtime / "base-image"
    shutil.rmtree(ctx, ignore_errors=True)
    root = ctx / "rootfs"
    for d in ("bin", "etc", "tmp", "root"):
        (root / d).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = run([busybox, "--list"], env=env).stdout.split()
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def ensure_base_image(paths: SandboxPaths, env: Mapping[str, str]) -> bool:
    """Build and push the base image unless the registry has it; True if it was built."""
    if base_image_present(paths):
        return False
    ctx = _context(paths, env)
    buildah = str(paths.bin / "buildah")
    image = base_image(paths)
    run([buildah, "bud", "--isolation", "chroot", "-t", image, str(ctx)], env=env, timeout=300)
    run([buildah, "push", image], env=env, timeout=300)
    shutil.rmtree(ctx, ignore_errors=True)
    if not base_image_present(paths):
        raise SandboxError(f"pushed {image} but the registry does not list it")
    return True


def ensure_stand_in_images(paths: SandboxPaths, env: Mapping[str, str]) -> list[str]:
    """Copy the base image to every missing stand-in name; returns the names copied."""
    copied = []
    for repository, tag in STAND_IN_IMAGES:
        if registry.manifest_status(paths, repository, tag) == 200:
            continue
        target = f"{paths.registry_host}/{repository}:{tag}"
        run(
            [
                str(paths.bin / "skopeo"),
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"docker://{base_image(paths)}",
                f"docker://{target}",
            ],
            env=env,
            timeout=120,
        )
        copied.append(target)
    return copied
