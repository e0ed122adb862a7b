"""Start one container's process: the agent runs ``python -I -S podrun.py SPEC.json`` as root, and this
script becomes the container's program (it ends in ``execve``).

In order: join the pod's network namespace; take a mount and a UTS namespace of its own; set the pod's
hostname; mount an overlay whose lower layer is the host's root (so the host's programs and the image
environments are there, and nothing the container writes reaches the host); bind the host's /proc,
/sys and /dev and a fresh /tmp into it; bind every volume, stand-in program and the pod's hosts,
resolv.conf, passwd and group files at their paths; chroot into it; change to the working directory;
drop to the container's user and groups; exec the command with the container's environment.

Standard library only (it runs with ``-I -S`` before any site-packages); every failure before the exec
is one line on stderr (the container's log) and exit code 126 (127 when the program does not exist).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


class SetupError(Exception):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {source or fstype} on {target}")


def bind(source: str, target: str, *, readonly: bool = False, recursive: bool = True) -> None:
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | (MS_REC if recursive else 0))


def make_mount_point(target: str, *, is_dir: bool) -> None:
    """Create ``target`` (a directory, or an empty file for a file mount) inside the overlay."""
    if os.path.lexists(target):
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        with open(target, "a"):
            pass


def inside(root: str, path: str) -> str:
    """``path`` of the container, as a path under ``root`` (symlinks in between resolved inside ``root``)."""
    current = root
    for part in [p for p in path.split("/") if p]:
        candidate = os.path.join(current, part)
        hops = 0
        while os.path.islink(candidate) and hops < 40:
            link = os.readlink(candidate)
            candidate = (
                os.path.join(root, link.lstrip("/"))
                if link.startswith("/")
                else os.path.normpath(os.path.join(current, link))
            )
            hops += 1
        current = candidate
    return current


def setup(spec: dict) -> None:
    if spec["netns"]:  # None: the pod uses the host's network
        with open(spec["netns"]) as handle:
            _check(libc.setns(handle.fileno(), CLONE_NEWNET), "join the pod's network namespace")
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare mount and UTS namespaces")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    hostname = spec["hostname"].encode()
    _check(libc.sethostname(hostname, len(hostname)), "sethostname")
    root, upper, work = spec["root"], spec["upper"], spec["work"]
    for d in (root, upper, work):
        os.makedirs(d, exist_ok=True)
    mount("overlay", root, "overlay", 0, f"lowerdir=/,upperdir={upper},workdir={work}")
    for host_dir in ("/proc", "/sys", "/dev"):
        bind(host_dir, root + host_dir)
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for m in spec["mounts"]:
        target = inside(root, m["target"])
        make_mount_point(target, is_dir=os.path.isdir(m["source"]))
        bind(m["source"], target, readonly=m.get("readonly", False))
    os.chroot(root)
    workdir = spec["workdir"] or "/"
    os.makedirs(workdir, exist_ok=True)
    if spec["uid"] != 0 and os.stat(workdir).st_uid == 0 and not os.listdir(workdir):
        os.chown(workdir, spec["uid"], spec["gid"])  # a new WORKDIR belongs to the image's user
    os.chdir(workdir)


def find(program: str, search_path: str) -> str | None:
    """The program as execvp finds it (``search_path`` is the container's PATH)."""
    if "/" in program:
        return program
    for directory in search_path.split(":"):
        candidate = os.path.join(directory or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def drop_privileges(spec: dict) -> None:
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])


def main(argv: list[str]) -> int:
    with open(argv[1]) as handle:
        spec = json.load(handle)
    command, env = spec["argv"], spec["env"]
    try:
        setup(spec)
        # Found as root: this interpreter's own modules may be unreadable to the container's user.
        program = find(command[0], env.get("PATH", os.defpath))
        drop_privileges(spec)
    except (SetupError, OSError) as exc:
        print(f"hubploy sandbox: cannot start the container: {exc}", file=sys.stderr, flush=True)
        return 126
    if program is None:
        print(f"hubploy sandbox: {command[0]}: no such program in the container", file=sys.stderr, flush=True)
        return 127
    try:
        os.execve(program, command, env)
    except OSError as exc:
        print(f"hubploy sandbox: cannot run {command[0]}: {exc.strerror}", file=sys.stderr, flush=True)
    return 127 if not os.path.exists(program) else 126


if __name__ == "__main__":
    sys.exit(main(sys.argv))
