"""Kubernetes and etcd, built from the Go module proxy through the sandbox's own build modules.

``build_kubernetes`` and ``build_etcd`` put their binaries into the cache (``<cache>/kubernetes-v1.X.Y/``,
``<cache>/etcd-v3.X.Y/``) and do nothing when the cached binaries already report that version. The Go
module and build caches live under ``<cache>/go`` while building and are removed afterwards (they take
about 4 GB; the binaries about 0.4 GB).

``python -m hubploy_sandbox.builds bump kubernetes v1.X.Y`` (or ``etcd v3.X.Y``) rewrites a build module
for another version: it reads which staging modules that Kubernetes release replaces, maps each to the
published ``v0.X.Y``, and runs ``go mod tidy``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from hubploy.runner import child_env, run
from hubploy_sandbox.errors import SandboxError
from hubploy_sandbox.paths import SandboxPaths
from hubploy_sandbox.versions import (
    ETCD_MODULE,
    ETCD_VERSION,
    GOBUILD,
    KUBERNETES_COMMANDS,
    KUBERNETES_MODULE,
    KUBERNETES_VERSION,
    go_directive,
    minor,
)

Say = Callable[[str], None]
PROGRESS_EVERY = 150  # packages between two progress lines of `go build -v`


def go_env(paths: SandboxPaths) -> dict[str, str]:
    """The environment of every go command: caches under the sandbox cache, no toolchain download,
    static binaries (no cgo), modules from the proxy (GOPROXY as the machine sets it)."""
    return child_env(
        {
            "GOMODCACHE": str(paths.cache / "go" / "mod"),
            "GOCACHE": str(paths.cache / "go" / "build"),
            "GOFLAGS": "-mod=mod -buildvcs=false",
            "GOTOOLCHAIN": "local",
            "CGO_ENABLED": "0",
        }
    )


def go_version(env: Mapping[str, str]) -> str:
    """The installed Go's version, e.g. ``1.26.8``; SandboxError when there is no go."""
    found = shutil.which("go", path=env.get("PATH"))
    if found is None:
        raise SandboxError(
            "Go is not installed (the sandbox builds Kubernetes and etcd from Go modules)",
            hint="install Go 1.26 or newer and put it on PATH",
        )
    out = run([found, "env", "GOVERSION"], env=env).stdout.strip()
    return out.removeprefix("go")


def require_go(module_dir: Path, env: Mapping[str, str]) -> None:
    wanted, have = go_directive(module_dir), go_version(env)
    if _version_tuple(have) < _version_tuple(wanted):
        raise SandboxError(
            f"Go {have} is too old to build {module_dir.name} (its go.mod needs Go {wanted})",
            hint=f"install Go {wanted} or newer",
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def reports_version(binary: Path, version: str, *, env: Mapping[str, str]) -> bool:
    """Whether ``binary --version`` (kubectl: ``version --client``) names ``version`` (a cached build of
    another version does not count)."""
    if not binary.is_file():
        return False
    args = ["version", "--client"] if binary.name == "kubectl" else ["--version"]
    result = run([binary, *args], env=env, check=False, timeout=30)
    return version.lstrip("v") in (result.stdout + result.stderr)


def kubernetes_ldflags(version: str) -> str:
    """Version stamps a release build sets, so the API server reports ``version`` (helm compares a chart's
    ``kubeVersion`` with it) and kubectl its client version."""
    major, minor_ = minor(version)
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    stamps = {
        "gitVersion": version,
        "gitMajor": str(major),
        "gitMinor": str(minor_),
        "gitTreeState": "clean",
        "buildDate": date,
    }
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{name}={value}" for name, value in stamps.items()]
    return " ".join(flags)


def _go_build(
    module: str, paths: SandboxPaths, targets: list[str], dest: Path, ldflags: str, say: Say
) -> None:
    """``go build`` ``targets`` in a copy of the build module ``gobuild/<module>`` into ``dest``."""
    env = go_env(paths)
    source = GOBUILD / module
    require_go(source, env)
    work = paths.cache / "go" / "src" / module
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    compiled = 0

    def progress(line: str) -> None:
        nonlocal compiled
        if line.startswith("go: downloading"):
            return
        compiled += 1
        if compiled % PROGRESS_EVERY == 0:
            say(f"{module}: {compiled} packages compiled")

    run(
        ["go", "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(tmp) + "/", *targets],
        env=env,
        cwd=work,
        timeout=3600,
        on_line=progress,
    )
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def _clean_go_caches(paths: SandboxPaths) -> None:
    """Drop the module and build caches (go marks module files read-only, so chmod first)."""
    go_dir = paths.cache / "go"
    if go_dir.exists():
        for path in go_dir.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(go_dir, ignore_errors=True)


def _disk_usage(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def build_kubernetes(paths: SandboxPaths, say: Say = print) -> bool:
    """kube-apiserver, kube-controller-manager, kube-scheduler and kubectl of KUBERNETES_VERSION in
    ``paths.k8s_bin``; False when they were cached already."""
    env = child_env()
    if all(reports_version(paths.k8s_bin / c, KUBERNETES_VERSION, env=env) for c in KUBERNETES_COMMANDS):
        say(f"kubernetes {KUBERNETES_VERSION}: cached in {paths.k8s_bin}")
        return False
    say(
        f"kubernetes {KUBERNETES_VERSION}: building {', '.join(KUBERNETES_COMMANDS)} from Go modules "
        "(about 5 minutes on 2 cores; cached afterwards)"
    )
    start = time.monotonic()
    targets = [f"{KUBERNETES_MODULE}/cmd/{c}" for c in KUBERNETES_COMMANDS]
    _go_build("kubernetes", paths, targets, paths.k8s_bin, kubernetes_ldflags(KUBERNETES_VERSION), say)
    peak = _disk_usage(paths.cache / "go")
    _clean_go_caches(paths)
    say(
        f"kubernetes {KUBERNETES_VERSION}: built in {time.monotonic() - start:.0f} s; "
        f"{_disk_usage(paths.k8s_bin) / 1e9:.2f} GB of binaries (Go caches {peak / 1e9:.1f} GB, removed)"
    )
    return True


def build_etcd(paths: SandboxPaths, say: Say = print) -> bool:
    """etcd of ETCD_VERSION in ``paths.etcd_bin``; False when it was cached already."""
    env = child_env()
    if reports_version(paths.etcd_bin / "etcd", ETCD_VERSION, env=env):
        say(f"etcd {ETCD_VERSION}: cached in {paths.etcd_bin}")
        return False
    say(f"etcd {ETCD_VERSION}: building from Go modules (under a minute)")
    start = time.monotonic()
    _go_build("etcd", paths, ["."], paths.etcd_bin, "-s -w", say)
    _clean_go_caches(paths)
    say(f"etcd {ETCD_VERSION}: built in {time.monotonic() - start:.0f} s")
    return True


# --- changing a version (a maintainer's step; the result is committed) -----------------------------------


def staging_replacements(kubernetes_go_mod: str, version: str) -> list[str]:
    """``k8s.io/x => k8s.io/x v0.Y.Z`` for every staging module Kubernetes ``version`` maps to
    ``./staging/src/...`` in its own go.mod."""
    staged = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", kubernetes_go_mod, re.MULTILINE)
    if not staged:
        raise SandboxError(f"the go.mod of {KUBERNETES_MODULE} {version} lists no staging modules")
    published = "v0." + version.lstrip("v").split(".", 1)[1]
    return [f"\t{module} => {module} {published}" for module in staged]


def _header(go_mod: Path) -> str:
    """The comment lines at the top of a go.mod (kept across a bump)."""
    lines = go_mod.read_text().splitlines()
    return "\n".join(
        line for line in lines[: next(i for i, text in enumerate(lines) if text.startswith("module"))]
    )


def bump(component: str, version: str, paths: SandboxPaths, say: Say = print) -> None:
    env = go_env(paths)
    if not version.startswith("v"):
        version = "v" + version
    module_dir = GOBUILD / component
    go_mod = module_dir / "go.mod"
    header, go_line = _header(go_mod), f"go {go_directive(module_dir)}"
    if component == "kubernetes":
        info = json.loads(
            run(
                ["go", "mod", "download", "-json", f"{KUBERNETES_MODULE}@{version}"],
                env=env,
                cwd=module_dir,
                timeout=600,
            ).stdout
        )
        replaces = staging_replacements(Path(info["GoMod"]).read_text(), version)
        body = (
            f"module hubploy-sandbox/kubernetes\n\n{go_line}\n\nrequire {KUBERNETES_MODULE} {version}\n\n"
            "replace (\n" + "\n".join(replaces) + "\n)\n"
        )
    elif component == "etcd":
        body = f"module hubploy-sandbox/etcd\n\n{go_line}\n\nrequire {ETCD_MODULE} {version}\n"
    else:
        raise SandboxError(f"unknown build module {component!r}", hint="kubernetes or etcd")
    go_mod.write_text(header + "\n" + body)
    (module_dir / "go.sum").write_text("")
    run(["go", "mod", "tidy"], env=env, cwd=module_dir, timeout=1200)
    say(f"{go_mod}: {component} {version}; commit go.mod and go.sum")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hubploy_sandbox.builds", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="action", required=True)
    bump_parser = sub.add_parser("bump", help="point a build module at another version")
    bump_parser.add_argument("component", choices=["kubernetes", "etcd"])
    bump_parser.add_argument("version")
    sub.add_parser("versions", help="print the versions the build modules pin")
    args = parser.parse_args(argv)
    if args.action == "versions":
        print(f"kubernetes {KUBERNETES_VERSION}\netcd {ETCD_VERSION}")
        return 0
    try:
        bump(args.component, args.version, SandboxPaths.from_env())
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
