"""The private run directory (hubploy.workspace): one 0700 directory per process for decrypted secrets
and kubeconfigs, removed at exit, and removed by the next run when its process was killed. Each case
runs real processes, since the directory belongs to a process."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from hubploy.workspace import RUNTIME_DIR_ENV

# A process that makes a secret file in a private_dir of its run directory, says where, and then
# either exits normally or waits to be killed.
HOLDER = textwrap.dedent("""
    import sys, time
    from hubploy.workspace import private_dir, private_run_dir
    with private_dir("hubploy-secrets-") as secrets:
        (secrets / "prod.yaml").write_text("token: s3cret")
        print(private_run_dir(), secrets, flush=True)
        if sys.argv[1] == "wait":
            time.sleep(600)
""")


def start(root: Path, mode: str) -> tuple[subprocess.Popen[str], Path, Path]:
    env = {**os.environ, RUNTIME_DIR_ENV: str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, mode],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    run_dir, secrets = proc.stdout.readline().split()
    return proc, Path(run_dir), Path(secrets)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_run_keeps_its_secrets_in_one_private_directory_and_removes_it_at_exit(tmp_path: Path) -> None:
    root = tmp_path / "runtime"
    proc, run_dir, secrets = start(root, "wait")
    try:
        assert run_dir.parent == root and secrets.parent == run_dir
        assert (mode(root), mode(run_dir), mode(secrets)) == (0o700, 0o700, 0o700)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    proc, run_dir, secrets = start(root, "exit")
    assert proc.wait(timeout=30) == 0
    assert list(root.iterdir()) == [], "an exiting run leaves nothing behind"


def test_the_next_run_removes_what_a_killed_run_left_and_keeps_a_live_runs(tmp_path: Path) -> None:
    root = tmp_path / "runtime"
    killed, killed_dir, killed_secrets = start(root, "wait")
    live, live_dir, live_secrets = start(root, "wait")
    try:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        assert (killed_secrets / "prod.yaml").read_text() == "token: s3cret"  # SIGKILL cleans nothing up
        assert mode(killed_dir) == 0o700  # ...but it is readable by its user only
        nxt, _, _ = start(root, "exit")
        assert nxt.wait(timeout=30) == 0
        assert not killed_dir.exists() and not Path(f"{killed_dir}.lock").exists()
        assert (live_secrets / "prod.yaml").read_text() == "token: s3cret"  # its process still runs
        assert sorted(p.name for p in root.iterdir()) == [live_dir.name, f"{live_dir.name}.lock"]
    finally:
        os.killpg(live.pid, signal.SIGKILL)
        live.wait(timeout=30)


def test_a_root_that_is_not_private_is_made_private_or_refused(tmp_path: Path) -> None:
    def first_use(root: Path) -> subprocess.CompletedProcess[str]:
        code = "from hubploy.workspace import private_run_dir; print(private_run_dir())"
        return subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, RUNTIME_DIR_ENV: str(root)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    open_root = tmp_path / "open"
    open_root.mkdir(mode=0o755)
    os.chmod(open_root, 0o755)
    assert first_use(open_root).returncode == 0 and mode(open_root) == 0o700

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    refused = first_use(link)
    assert refused.returncode == 1 and "is not a directory of this user" in refused.stderr
    assert list(elsewhere.iterdir()) == []
    if os.geteuid() == 0:  # a root directory owned by someone else
        other = tmp_path / "other"
        other.mkdir(mode=0o700)
        os.chown(other, 65534, 65534)
        assert "is not a directory of this user" in first_use(other).stderr


def test_threads_of_one_run_share_its_directory(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        from concurrent.futures import ThreadPoolExecutor
        from hubploy.workspace import private_run_dir
        with ThreadPoolExecutor(8) as pool:
            print(len(set(pool.map(lambda _: private_run_dir(), range(32)))))
    """)
    env = {**os.environ, RUNTIME_DIR_ENV: str(tmp_path / "r")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "1"
    deadline = time.monotonic() + 5
    while list((tmp_path / "r").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list((tmp_path / "r").iterdir()) == []
