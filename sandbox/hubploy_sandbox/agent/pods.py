"""Pods on the node, run as a kubelet runs them.

:class:`PodManager` follows the pods bound to the node and keeps one :class:`PodWorker` per pod. A worker
gives its pod a network namespace and address, sets up its volumes, runs the init containers one after
another to completion, then the containers, restarting them as the pod's restartPolicy says (with a
back-off), runs their probes, reports the pod's status, and on deletion stops the processes (TERM, the
grace period, KILL) and removes the pod from the API. Each container's process is started by
``podrun.py`` in the pod's network namespace and a mount namespace of its own; a container whose program
does not exist on the host is simulated (running, or for a Job's pod completed), with an Event saying so.

Opt-in lazy start (the pod annotation ``hubploy-sandbox/lazy-start: "true"``, for many hubs on a small
machine): the pod is Running and Ready at once, without processes; the agent itself listens on the pod's
address and container ports, and the first connection starts the containers (:class:`LazyStart`), which
then get the connections accepted meanwhile. A hub nobody visits costs no CPU; a health check starts it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubploy.processes import proc_start_time
from hubploy_sandbox.agent import containers, netns, podfiles, probes
from hubploy_sandbox.agent.envvars import ConfigMissing, Sources, container_env, service_env
from hubploy_sandbox.agent.kube import Recorder, timestamp
from hubploy_sandbox.agent.node import CAPACITY
from hubploy_sandbox.agent.rest import Api, ApiError, path
from hubploy_sandbox.agent.services import ServiceIndex
from hubploy_sandbox.agent.volumes import Mount, PodVolumes, VolumeNotReady
from hubploy_sandbox.image_envs import ImageEnv, env_for, path_for
from hubploy_sandbox.network import ClusterNetwork

log = logging.getLogger("hubploy_sandbox.agent")
PODRUN = Path(__file__).resolve().parent / "podrun.py"
TICK = 0.3
BACKOFF_BASE, BACKOFF_MAX = 1.0, 20.0  # a kubelet's back-off is 10 s doubling to 5 min
DEFAULT_GRACE = 30
SIMULATED = "hubploy-sandbox/simulated"
LAZY_START = "hubploy-sandbox/lazy-start"
HAND_OVER_TIMEOUT = 120.0  # how long a connection accepted by a lazy pod waits for its container to listen
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Context:
    """What every pod worker of the agent shares."""

    api: Api
    network: ClusterNetwork
    addresses: netns.Addresses
    services: ServiceIndex
    recorder: Recorder
    cache: Path
    state: Path

    @property
    def pid_dir(self) -> Path:
        return self.state / "pod-pids"

    @property
    def log_dir(self) -> Path:
        return self.state / "logs"


@dataclass
class Container:
    """One container of a pod and what the worker knows of its current run."""

    spec: dict[str, Any]
    init: bool
    restart_count: int = 0
    proc: subprocess.Popen[bytes] | None = None
    simulated: bool = False
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    next_start: float = 0.0
    probes: dict[str, probes.ProbeState] = field(default_factory=dict)
    ever_started: bool = False
    last_event: str = ""

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def terminated(self) -> bool:
        return "terminated" in self.state


def listen_in(netns: Path, address: str, port: int) -> socket.socket:
    """A TCP socket listening on ``address:port`` inside the network namespace ``netns`` (made in a thread
    of its own that enters the namespace: a network namespace is a per-thread setting)."""
    made: list[socket.socket | BaseException] = []

    def inside() -> None:
        try:
            with open(netns) as target:
                if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            made.append(socket.create_server((address, port), backlog=64))
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            made.append(exc)

    thread = threading.Thread(target=inside, name=f"listen {address}:{port}")
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until ``source`` ends (or fails), then end ``sink``'s sending side."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError as exc:
        log.info("lazy start relay: %s", exc)
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def relay(client: socket.socket, address: str, port: int, timeout: float = HAND_OVER_TIMEOUT) -> None:
    """Connect ``client`` to ``address:port`` as soon as something listens there (within ``timeout``), and
    copy bytes both ways until both sides are done."""
    deadline = time.monotonic() + timeout
    with client:
        while True:
            try:
                upstream = socket.create_connection((address, port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)
        with upstream:
            upstream.settimeout(None)
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join()


class LazyStart:
    """The agent's listeners on a lazy pod's address and ports: the first connection sets ``triggered``;
    ``close`` stops listening (so that the containers can listen there) and returns the connections accepted
    until then, which ``hand_over`` relays to the containers once they listen."""

    def __init__(self, netns: Path, address: str, ports: list[int]) -> None:
        self.address = address
        self.triggered = threading.Event()
        self._lock = threading.Lock()
        self._listeners = {listen_in(netns, address, port): port for port in ports}
        self._accepted: list[tuple[socket.socket, int]] = []
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, name=f"lazy {address}", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                listeners = list(self._listeners)
            readable, _, _ = select.select(listeners, [], [], 0.2)
            with self._lock:
                if self._closed:
                    return
                for listener in readable:
                    connection, _ = listener.accept()
                    self._accepted.append((connection, self._listeners[listener]))
            if readable:
                self.triggered.set()

    def close(self) -> list[tuple[socket.socket, int]]:
        """Stop listening; the connections accepted so far (with their ports). When it returns, nothing
        listens any more (a socket closed while a select() waits on it would listen until that returns, and
        reset the connections it queued meanwhile)."""
        with self._lock:
            self._closed = True
            for listener in self._listeners:
                with contextlib.suppress(OSError):
                    listener.shutdown(socket.SHUT_RDWR)
                listener.close()
            accepted, self._accepted = self._accepted, []
        self._acceptor.join()
        return accepted

    def hand_over(self, accepted: list[tuple[socket.socket, int]]) -> None:
        """Relay each connection ``close`` returned to the container now listening on its port."""
        for connection, port in accepted:
            threading.Thread(
                target=relay,
                args=(connection, self.address, port),
                daemon=True,
                name=f"relay {self.address}:{port}",
            ).start()


class PodWorker:
    def __init__(self, ctx: Context, pod: dict[str, Any]) -> None:
        self.ctx, self.pod = ctx, pod
        meta = pod["metadata"]
        self.uid, self.namespace, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.dir = ctx.state / "pods" / self.uid
        self.log_dir = ctx.log_dir / f"{self.namespace}_{self.name}_{self.uid}"
        self.policy = pod["spec"].get("restartPolicy", "Always")
        self.host_network = bool(pod["spec"].get("hostNetwork"))
        self.init = [Container(c, True) for c in pod["spec"].get("initContainers") or []]
        self.main = [Container(c, False) for c in pod["spec"].get("containers") or []]
        self.pod_ip = ""
        self.netns: Path | None = None
        self.volumes: PodVolumes | None = None
        self.phase = "Pending"
        self.start_time = timestamp()
        self.transitions: dict[str, tuple[str, str]] = {}
        self.reported = ""
        self.stop_event = threading.Event()
        self.grace = DEFAULT_GRACE
        self.finalize = False
        annotations = meta.get("annotations") or {}
        self.lazy = (
            annotations.get(LAZY_START) == "true" and self.policy == "Always" and not self.host_network
        )
        self.thread = threading.Thread(target=self.run, name=f"pod {self.namespace}/{self.name}", daemon=True)

    # --- control from the manager ---------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self, grace: int | None, finalize: bool) -> None:
        if grace is not None:
            self.grace = min(self.grace, grace) if self.stop_event.is_set() else grace
        self.finalize = self.finalize or finalize
        self.stop_event.set()
        if not self.thread.is_alive() and self.finalize:
            self.remove_from_api()

    # --- the pod's life ----------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            if self.prepare() and self.run_init_containers():
                self.run_containers()
        except Exception as exc:  # a bug of the agent: said on the pod, not only in the agent's log
            log.exception("pod %s/%s: the worker failed", self.namespace, self.name)
            self.event(
                "FailedCreatePodSandBox",
                f"the sandbox agent failed: {type(exc).__name__}: {exc}",
                warning=True,
            )
        finally:
            self.kill_all(self.grace)
            self.cleanup()
            if self.finalize:
                self.remove_from_api()

    def prepare(self) -> bool:
        """Address, network namespace, pod files and volumes; False when stopped meanwhile."""
        wanted = (self.pod.get("status") or {}).get("podIP")
        if self.host_network:
            self.pod_ip = self.ctx.network.node_ip
        else:
            self.pod_ip = self.ctx.addresses.take(self.uid, wanted)
            self.netns = netns.create(self.ctx.network, self.uid, self.pod_ip)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write_pod_files()
        self.transitions["PodReadyToStartContainers"] = ("True", timestamp())
        self.volumes = PodVolumes(
            self.ctx.api,
            self.pod,
            self.dir / "volumes",
            pod_ip=self.pod_ip,
            host_ip=self.ctx.network.node_ip,
            allocatable=CAPACITY,
        )
        reported = ""
        while not self.stop_event.is_set():
            try:
                self.volumes.setup()
                return True
            except (VolumeNotReady, ConfigMissing, ApiError) as exc:
                if str(exc) != reported:
                    reported = str(exc)
                    self.event("FailedMount", f"MountVolume.SetUp failed: {exc}", warning=True)
                self.report()
                self.stop_event.wait(1.0)
        return False

    def run_init_containers(self) -> bool:
        for container in self.init:
            while not self.stop_event.is_set():
                self.start_due([container])
                self.poll(container)
                self.report()
                if container.terminated:
                    code = container.state["terminated"]["exitCode"]
                    if code == 0:
                        break
                    if self.policy == "Never":
                        self.phase = "Failed"
                        self.report()
                        return False
                    self.schedule_restart(container)
                self.stop_event.wait(TICK)
            if self.stop_event.is_set():
                return False
        return True

    def run_containers(self) -> None:
        if self.lazy and not self.wait_for_first_connection():
            return
        last_refresh = time.monotonic()
        while not self.stop_event.is_set():
            self.start_due(self.main)
            for container in self.main:
                self.poll(container)
                if container.terminated and self.restarts(container):
                    self.schedule_restart(container)
                self.probe(container)
            if all(c.terminated for c in self.main) and not any(self.restarts(c) for c in self.main):
                failed = any(c.state["terminated"]["exitCode"] != 0 for c in self.main)
                self.phase = "Failed" if failed else "Succeeded"
                self.report()
                return
            if time.monotonic() - last_refresh > 30 and self.volumes is not None:
                last_refresh = time.monotonic()
                try:
                    self.volumes.refresh_tokens()
                except (ApiError, OSError) as exc:
                    log.warning("pod %s/%s: token refresh failed: %s", self.namespace, self.name, exc)
            self.report()
            self.stop_event.wait(TICK)

    def wait_for_first_connection(self) -> bool:
        """A lazy pod: Ready without processes until a connection reaches one of its ports, then its
        containers start and get the connections; False when the pod is stopped meanwhile."""
        ports = sorted(
            {
                int(p["containerPort"])
                for c in self.main
                for p in c.spec.get("ports") or []
                if p.get("protocol", "TCP") == "TCP"
            }
        )
        if not ports or self.netns is None:
            return True  # nothing could ever start it: it starts now
        try:
            lazy = LazyStart(self.netns, self.pod_ip, ports)
        except OSError as exc:
            self.event(
                "LazyStart", f"lazy start is not possible ({exc}): the containers start now", warning=True
            )
            return True
        for container in self.main:
            container.state = {"running": {"startedAt": timestamp()}}
            container.ready = container.started = container.ever_started = True
        self.event(
            "LazyStart",
            f"lazy start: the containers start on the first connection to port(s) "
            f"{', '.join(map(str, ports))}",
        )
        while not self.stop_event.is_set() and not lazy.triggered.wait(TICK):
            self.report()
        if self.stop_event.is_set():
            for connection, _ in lazy.close():
                connection.close()
            return False
        accepted = lazy.close()  # before the containers start: they listen on the same ports
        for container in self.main:
            container.state = {"waiting": {"reason": "ContainerCreating"}}
        self.start_due(self.main)
        for container in self.main:  # it was Ready: it stays so unless its readiness probe fails
            readiness = container.probes.get("readinessProbe")
            container.ready = True
            if readiness is not None:
                readiness.passed = True
        lazy.hand_over(accepted)
        self.event("LazyStart", "lazy start: a first connection started the containers")
        return True

    def restarts(self, container: Container) -> bool:
        """Whether the restart policy restarts ``container`` after its exit."""
        if self.policy == "Always":
            return True
        return self.policy == "OnFailure" and container.state["terminated"]["exitCode"] != 0

    def schedule_restart(self, container: Container) -> None:
        delay = min(BACKOFF_BASE * 2**container.restart_count, BACKOFF_MAX)
        container.last_state = {"terminated": container.state["terminated"]}
        container.restart_count += 1
        container.next_start = time.monotonic() + delay
        container.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:.0f}s restarting failed container="
                f"{container.name} pod={self.name}",
            }
        }
        self.event(
            "BackOff",
            f"Back-off restarting failed container {container.name}",
            warning=True,
            container=container,
        )

    # --- containers ----------------------------------------------------------------------------------
    def start_due(self, group: list[Container]) -> None:
        for container in group:
            if "waiting" in container.state and time.monotonic() >= container.next_start:
                self.start_container(container)

    def start_container(self, container: Container) -> None:
        spec = container.spec
        image = env_for(spec.get("image", ""))
        try:
            env = self.container_environment(spec, image)
        except ConfigMissing as exc:
            container.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            container.next_start = time.monotonic() + 2.0
            self.event("Failed", f"Error: {exc}", warning=True, container=container, once=True)
            return
        identity = containers.identity(self.pod, spec, image)
        passwd, group = podfiles.passwd_and_group(image.user, identity.uid, identity.gid)
        env.setdefault("HOME", podfiles.home_of(passwd, identity.uid))
        etc = [
            Mount(str(podfiles.write(self.dir / f"{container.name}.{n}", text)), f"/etc/{n}", readonly=True)
            for n, text in (("passwd", passwd), ("group", group))
        ]
        etc += [
            Mount(str(self.dir / "hosts"), "/etc/hosts"),
            Mount(str(self.dir / "resolv.conf"), "/etc/resolv.conf"),
        ]
        assert self.volumes is not None
        mounts = [*etc, *containers.image_file_mounts(image, self.ctx.cache), *self.volumes.mounts(spec, env)]
        argv = containers.command(spec, image, env)
        program = containers.find_program(argv[0], env.get("PATH", ""), mounts) if argv else None
        if program is None:
            self.simulate(container, argv, spec.get("image", ""))
            return
        log_file = self.log_dir / container.name / f"{container.restart_count}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        run_spec = {
            "netns": str(self.netns) if self.netns else None,
            "hostname": self.hostname(),
            "root": str(self.dir / "rootfs" / container.name / "merged"),
            "upper": str(self.dir / "rootfs" / container.name / "upper"),
            "work": str(self.dir / "rootfs" / container.name / "work"),
            "mounts": [m.__dict__ for m in mounts],
            "uid": identity.uid,
            "gid": identity.gid,
            "groups": list(identity.groups),
            "workdir": spec.get("workingDir") or image.workdir,
            "argv": argv,
            "env": env,
        }
        spec_file = self.dir / f"{container.name}.run.json"
        spec_file.write_text(json.dumps(run_spec))
        spec_file.chmod(0o600)
        shutil.rmtree(self.dir / "rootfs" / container.name, ignore_errors=True)  # a fresh filesystem per run
        with open(log_file, "ab") as out:
            container.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(PODRUN), str(spec_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
        self.ctx.pid_dir.mkdir(parents=True, exist_ok=True)
        (self.ctx.pid_dir / f"{self.uid}_{container.name}.pid").write_text(
            f"{container.proc.pid} {proc_start_time(container.proc.pid) or 0}\n"
        )
        container.state = {"running": {"startedAt": timestamp()}}
        container.simulated, container.ever_started, container.ready = False, True, False
        container.started = "startupProbe" not in spec
        container.probes = {
            kind: probes.ProbeState(spec[kind], time.monotonic())
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if kind in spec
        }
        self.event("Started", f"Started container {container.name}", container=container)

    def simulate(self, container: Container, argv: list[str], image: str) -> None:
        what = f"program {argv[0]!r} does not exist" if argv else "no command, and the image has none"
        self.event(
            "Simulated",
            f"{what} on the host (image {image} is not run by the sandbox): the container is simulated",
            container=container,
            once=True,
        )
        container.simulated, container.ever_started = True, True
        if container.init or self.policy != "Always":
            now = timestamp()
            container.state = {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "message": SIMULATED,
                    "startedAt": now,
                    "finishedAt": now,
                }
            }
            container.ready, container.started = False, True
        else:
            container.state = {"running": {"startedAt": timestamp()}}
            container.ready = container.started = True

    def container_environment(self, spec: dict[str, Any], image: ImageEnv) -> dict[str, str]:
        links = self.pod["spec"].get("enableServiceLinks", True)
        services = service_env(self.ctx.services.for_env(self.namespace, links=links))
        env = container_env(
            self.pod,
            spec,
            sources=Sources(self.ctx.api, self.namespace),
            services=services,
            pod_ip=self.pod_ip,
            host_ip=self.ctx.network.node_ip,
            allocatable=CAPACITY,
        )
        base = {"PATH": path_for(spec.get("image", ""), self.ctx.cache), "HOSTNAME": self.hostname()}
        return {**base, **env}

    def poll(self, container: Container) -> None:
        """Notice the exit of a container's process."""
        if container.proc is None or container.proc.poll() is None:
            return
        code = container.proc.returncode
        code = 128 - code if code < 0 else code  # killed by a signal: 128 + signal, as runtimes report it
        started = container.state.get("running", {}).get("startedAt", timestamp())
        reason = "Completed" if code == 0 else "Error"
        container.state = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": timestamp(),
            }
        }
        container.proc, container.ready = None, False
        (self.ctx.pid_dir / f"{self.uid}_{container.name}.pid").unlink(missing_ok=True)

    def probe(self, container: Container) -> None:
        if not container.running or container.simulated or container.proc is None:
            return
        now = probes.now()
        prefix = ["nsenter", "-t", str(container.proc.pid), "-m", "-u", "-n", "-r", "-w"]
        startup = container.probes.get("startupProbe")
        if startup is not None and not container.started:
            if startup.due(now):
                ok, why = probes.check(startup.probe, container.spec, self.pod_ip, prefix)
                startup.record(ok, why, now)
                container.started = startup.passed
                if startup.failed:
                    self.kill(container, f"Container {container.name} failed startup probe: {why}")
            return
        container.started = True
        readiness = container.probes.get("readinessProbe")
        if readiness is None:
            container.ready = True
        elif readiness.due(now):
            ok, why = probes.check(readiness.probe, container.spec, self.pod_ip, prefix)
            readiness.record(ok, why, now)
            container.ready = readiness.passed
            if not ok and readiness.ever_passed:
                self.event("Unhealthy", f"Readiness probe failed: {why}", warning=True, container=container)
        liveness = container.probes.get("livenessProbe")
        if liveness is not None and liveness.due(now):
            ok, why = probes.check(liveness.probe, container.spec, self.pod_ip, prefix)
            liveness.record(ok, why, now)
            if liveness.failed:
                self.kill(
                    container, f"Container {container.name} failed liveness probe, will be restarted: {why}"
                )

    def kill(self, container: Container, why: str) -> None:
        self.event("Killing", why, container=container)
        if container.proc is not None:
            _signal_group(container.proc.pid, signal.SIGTERM)
            try:
                container.proc.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                _signal_group(container.proc.pid, signal.SIGKILL)
                container.proc.wait()
            self.poll(container)

    def kill_all(self, grace: int) -> None:
        running = [c for c in self.init + self.main if c.proc is not None and c.proc.poll() is None]
        for container in running:
            self.event("Killing", f"Stopping container {container.name}", container=container)
            _signal_group(container.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + grace
        for container in running:
            assert container.proc is not None
            try:
                container.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(container.proc.pid, signal.SIGKILL)
                container.proc.wait()
        for container in self.init + self.main:
            self.poll(container)

    def cleanup(self) -> None:
        if not self.host_network:
            netns.delete(self.ctx.network, self.uid)
            self.ctx.addresses.release(self.uid)
        shutil.rmtree(self.dir, ignore_errors=True)

    def remove_from_api(self) -> None:
        """Delete the pod object, now that its processes are gone (grace 0, only this very pod)."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        try:
            self.ctx.api.delete(path("pods", self.namespace, self.name), body)
            log.info("pod %s/%s: deleted", self.namespace, self.name)
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("pod %s/%s: delete failed: %s", self.namespace, self.name, exc)

    # --- files, events, status -------------------------------------------------------------------------
    def hostname(self) -> str:
        return (self.pod["spec"].get("hostname") or self.name)[:63]

    def write_pod_files(self) -> None:
        self.write_hosts()
        podfiles.write(
            self.dir / "resolv.conf", podfiles.resolv_conf(self.namespace, self.ctx.network.node_ip)
        )

    def write_hosts(self) -> None:
        text = podfiles.hosts(
            pod_ip=self.pod_ip,
            hostname=self.hostname(),
            namespace=self.namespace,
            services=self.ctx.services.names(),
        )
        aliases = "".join(
            f"{a['ip']}\t{' '.join(a.get('hostnames') or [])}\n"
            for a in self.pod["spec"].get("hostAliases") or []
        )
        target = self.dir / "hosts"
        if target.parent.exists():
            podfiles.write_in_place(target, text + aliases)

    def event(
        self,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        container: Container | None = None,
        once: bool = False,
    ) -> None:
        if once and container is not None:
            if container.last_event == reason + message:
                return
            container.last_event = reason + message
        kind = "initContainers" if container is not None and container.init else "containers"
        field_path = f"spec.{kind}{{{container.name}}}" if container is not None else None
        self.ctx.recorder.event(
            {"kind": "Pod", **self.pod}, reason, message, warning=warning, field_path=field_path
        )

    def _condition(self, kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
        status = "True" if ok else "False"
        previous = self.transitions.get(kind)
        if previous is None or previous[0] != status:
            self.transitions[kind] = previous = (status, timestamp())
        condition = {"type": kind, "status": status, "lastTransitionTime": previous[1]}
        if reason and not ok:
            condition["reason"] = reason
        return condition

    def container_status(self, container: Container) -> dict[str, Any]:
        image = container.spec.get("image", "")
        return {
            "name": container.name,
            "image": image,
            "imageID": f"sandbox://{image}",
            "containerID": f"sandbox://{self.uid}/{container.name}/{container.restart_count}",
            "ready": container.ready,
            "started": container.started if container.running else False,
            "restartCount": container.restart_count,
            "state": container.state,
            "lastState": container.last_state,
        }

    def status(self) -> dict[str, Any]:
        initialized = all(c.terminated and c.state["terminated"]["exitCode"] == 0 for c in self.init)
        if self.phase not in ("Succeeded", "Failed"):
            started = initialized and all(c.ever_started for c in self.main)
            self.phase = "Running" if started else "Pending"
        ready = initialized and self.phase == "Running" and all(c.ready for c in self.main)
        not_ready = "PodCompleted" if self.phase in ("Succeeded", "Failed") else "ContainersNotReady"
        status: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": self.ctx.network.node_ip,
            "hostIPs": [{"ip": self.ctx.network.node_ip}],
            "startTime": self.start_time,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                self._condition("PodReadyToStartContainers", "PodReadyToStartContainers" in self.transitions),
                self._condition("Initialized", initialized, "ContainersNotInitialized"),
                self._condition("ContainersReady", ready, not_ready),
                self._condition("Ready", ready, not_ready),
            ],
            "containerStatuses": [self.container_status(c) for c in self.main],
        }
        if self.pod_ip:
            status["podIP"], status["podIPs"] = self.pod_ip, [{"ip": self.pod_ip}]
        if self.init:
            status["initContainerStatuses"] = [self.container_status(c) for c in self.init]
        return status

    def reconcile(self, api_status: dict[str, Any]) -> None:
        """Send the status again at the next report when the API's conditions are not the ones this
        agent reported: the node lifecycle controller marks the pods of a node whose lease went stale
        (the API server was away) not ready, and a kubelet's status manager then restores its own."""
        if not self.reported:
            return
        if _condition_states(api_status) != _condition_states(json.loads(self.reported)):
            self.reported = ""

    def report(self) -> None:
        """Send the pod's status when it changed since the last report."""
        status = self.status()
        text = json.dumps(status, sort_keys=True)
        if text == self.reported:
            return
        try:
            self.ctx.api.merge_patch(
                path("pods", self.namespace, self.name, subresource="status"), {"status": status}
            )
            self.reported = text
        except ApiError as exc:
            if exc.status == 404:
                self.stop_event.set()  # the pod is gone
            else:
                log.warning("pod %s/%s: status update failed: %s", self.namespace, self.name, exc)


def _condition_states(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status.get("conditions") or []}


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


class PodManager:
    """One worker per pod of the node; ``handle`` takes the pod watch's events."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        ctx.services.listeners.append(self.services_changed)

    def handle(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker is not None:
                    worker.stop(0, finalize=False)
                    self.workers.pop(uid, None)
                return
            if meta.get("deletionTimestamp"):
                if worker is None:
                    worker = self.workers[uid] = PodWorker(self.ctx, pod)
                worker.stop(meta.get("deletionGracePeriodSeconds", DEFAULT_GRACE), finalize=True)
                return
            if worker is not None:
                worker.pod = pod
                worker.reconcile(pod.get("status") or {})
                return
            phase = (pod.get("status") or {}).get("phase")
            worker = self.workers[uid] = PodWorker(self.ctx, pod)
            if phase in ("Succeeded", "Failed"):
                return  # finished before this agent started: nothing to run
            worker.start()

    def find(self, namespace: str, name: str) -> PodWorker | None:
        with self.lock:
            return next(
                (w for w in self.workers.values() if (w.namespace, w.name) == (namespace, name)), None
            )

    def services_changed(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            if worker.thread.is_alive():
                worker.write_hosts()

    def stop_all(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.stop(5, finalize=False)
        for worker in workers:
            if worker.thread.is_alive():
                worker.thread.join(timeout=15)
