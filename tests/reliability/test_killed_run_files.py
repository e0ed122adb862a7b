"""A deploy killed with SIGKILL in the middle (issue 15): its decrypted secrets and its kubeconfig were in
its one private run directory (0700, readable by its user only), and the next run removes that
directory as it starts; that next deploy then recovers the release and leaves nothing behind."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from helpers.cli import VENV_BIN
from helpers.example_repo import copy_example_repo
from helpers.gitrepo import init_repo

from hubploy.workspace import RUNTIME_DIR_ENV

pytestmark = [pytest.mark.reliability, pytest.mark.sandbox]


def _run_dirs(root: Path) -> set[Path]:
    return {p for p in root.glob("run-*") if p.is_dir()}


def _wait_for(find, timeout: float, what: str, proc: subprocess.Popen[str]):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := find()):
        if proc.poll() is not None:
            output = proc.communicate()[0]
            raise AssertionError(f"the deploy exited ({proc.returncode}) before {what}:\n{output}")
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)
    return found


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_a_killed_deploy_leaves_nothing_readable_once_the_next_run_starts(  # type: ignore[no-untyped-def]
    tmp_path: Path, sandbox
) -> None:
    hub = f"kill{secrets.token_hex(3)}"
    repo = init_repo(tmp_path / "repo", branch="staging")
    copy_example_repo(repo.root, {hub: "minimal"}, settings_extra="health_check_timeout: 60\n")
    hub_dir = repo.root / "deployments" / hub
    shutil.copy(sandbox.env["KUBECONFIG"], hub_dir / "secrets" / "kubeconfig.yaml")
    env = {
        **sandbox.env,
        "PATH": f"{VENV_BIN}{os.pathsep}{sandbox.env['PATH']}",
        RUNTIME_DIR_ENV: str(tmp_path / "runtime"),
    }
    subprocess.run(
        ["sops", "--encrypt", "--in-place", f"deployments/{hub}/secrets/kubeconfig.yaml"],
        cwd=repo.root,
        env=env,
        check=True,
        capture_output=True,
    )
    # registry credentials from HUBPLOY_REGISTRY_* (no Prefect block), the cluster's from the encrypted file
    (hub_dir / "hubploy.yaml").write_text(
        "images:\n  image_name: localhost:5000/hubploy/minimal-user\n"
        "cluster:\n  provider: kubeconfig\n  kubeconfig:\n"
        "    filename: kubeconfig.yaml\n"
    )
    repo.commit(None, f"hub {hub} with a sops-encrypted kubeconfig")
    built = subprocess.run(
        [str(VENV_BIN / "hubploy"), "build", hub, "--check-registry", "--push"],
        cwd=repo.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    runtime = tmp_path / "runtime"
    argv = [str(VENV_BIN / "hubploy"), "deploy", hub, "hub", "staging"]
    try:
        first = subprocess.Popen(
            argv,
            cwd=repo.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:

            def in_flight() -> list[Path]:
                secret_files = list(runtime.glob("run-*/hubploy-secrets-*/*"))
                kubeconfigs = list(runtime.glob("run-*/hubploy-kube-*/config"))
                return secret_files + kubeconfigs if secret_files and kubeconfigs else []

            files = _wait_for(in_flight, 300, "decrypted secrets and a kubeconfig in the run dir", first)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)  # the CLI, helm and anything else it started
            first.communicate(timeout=60)
        [killed] = _run_dirs(runtime)
        assert all(f.is_file() and killed in f.parents for f in files), "SIGKILL cleans nothing up"
        assert b"token" in next(f for f in files if f.name == "config").read_bytes()  # a real kubeconfig
        assert _private(runtime) and _private(killed)  # ...but only its user could ever read it
        assert all(_private(f.parent) for f in files)

        second = subprocess.Popen(
            argv,
            cwd=repo.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            started = _wait_for(lambda: _run_dirs(runtime) - {killed}, 300, "the next run's dir", second)
            assert not killed.exists() and not Path(f"{killed}.lock").exists(), "the stale dir is still there"
            assert _run_dirs(runtime) == started
            out, _ = second.communicate(timeout=600)
        finally:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGKILL)
        assert second.returncode == 0, out[-3000:]
        assert list(runtime.iterdir()) == [], "the next run removes its own directory at exit"
    finally:
        subprocess.run(
            [env["HELM_EXECUTABLE"], "uninstall", f"{hub}-staging", "-n", f"{hub}-staging"],
            env=env,
            capture_output=True,
            check=False,
        )
