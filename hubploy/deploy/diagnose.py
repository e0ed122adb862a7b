"""What was not ready when a helm upgrade failed, read from the Kubernetes API before anything is rolled
back: pods not Ready with their containers' waiting or terminated reasons and the last line they logged
(JupyterHub's own error when its config raises), pods that cannot be scheduled and why, claims that are
not bound (with the provisioner's reason), hook Jobs that did not complete with their pods, and
LoadBalancer Services without an address. Best effort: a diagnosis that cannot be read says so, and
never hides helm's own error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hubploy.deploy.model import Target
from hubploy.health import kubectl_argv
from hubploy.runner import redact, run

KINDS = "pods,persistentvolumeclaims,jobs,services"
MAX_LOGS = 6  # containers whose last log line is read
MAX_ITEM = 300  # characters of one reason
USER_PODS = "singleuser-server"  # Z2JH's user pods: not part of a release's rollout
TIMEOUT_MARKERS = ("timed out waiting for the condition", "context deadline exceeded", "status: inprogress")

Obj = Mapping[str, Any]


def is_timeout(helm_error: str) -> bool:
    """Whether helm gave up waiting (helm 3: "timed out waiting for the condition", "context deadline
    exceeded"; helm 4: "resource ... not ready. status: InProgress") rather than seeing something fail."""
    text = helm_error.lower()
    return any(marker in text for marker in TIMEOUT_MARKERS)


@dataclass(frozen=True)
class Diagnosis:
    """What was not ready, one line per object; ``error`` when the API could not be read."""

    not_ready: tuple[str, ...] = ()
    error: str = ""

    def summary(self, limit: int = 1500) -> str:
        """One line; every registered secret redacted (a pod may log one)."""
        if self.error:
            return redact(f"what was not ready could not be read: {self.error}")
        if not self.not_ready:
            return "every pod, claim, hook Job and Service of the release was ready when helm gave up"
        text = redact("not ready: " + "; ".join(self.not_ready))
        return text if len(text) <= limit else text[: limit - 1] + "…"


def diagnose(target: Target) -> Diagnosis:
    """Read the release's namespace and tell what is not ready and why."""
    listed = _kubectl(target, "get", KINDS, "-n", target.namespace, "-o", "json")
    if isinstance(listed, str):
        return Diagnosis(error=listed)
    events = _kubectl(target, "get", "events", "-n", target.namespace, "-o", "json")
    warnings = _warnings(events.get("items", []) if isinstance(events, dict) else [])
    objects = [o for o in listed.get("items", []) if _of_release(o, target.release)]
    by_kind: dict[str, list[Obj]] = {}
    for obj in objects:
        by_kind.setdefault(obj.get("kind", ""), []).append(obj)
    logs = _Logs(target)
    job_pods = {
        name: [p for p in by_kind.get("Pod", []) if _labels(p).get("job-name") == name]
        for name in (_name(j) for j in by_kind.get("Job", []))
    }
    found = [
        *_claims(by_kind.get("PersistentVolumeClaim", []), warnings),
        *_jobs(by_kind.get("Job", []), job_pods, warnings, logs),
        *_pods(
            [p for p in by_kind.get("Pod", []) if _labels(p).get("job-name") not in job_pods], warnings, logs
        ),
        *_services(by_kind.get("Service", [])),
    ]
    return Diagnosis(tuple(found))


def _kubectl(target: Target, *args: str) -> dict[str, Any] | str:
    done = run(kubectl_argv(target.env, target.context, *args), env=target.env, check=False, timeout=60)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"kubectl exited {done.returncode}"
    try:
        data: dict[str, Any] = json.loads(done.stdout)  # kubectl get -o json prints one object
    except ValueError:
        return "kubectl printed something that is not JSON"
    return data


def _labels(obj: Obj) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", "?"))


def _of_release(obj: Obj, release: str) -> bool:
    labels = _labels(obj)
    owner = labels.get("release") or labels.get("app.kubernetes.io/instance")
    return (
        owner in (None, release)
        and labels.get("component") != USER_PODS
        and not (obj.get("metadata") or {}).get("deletionTimestamp")
    )


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_ITEM else text[: MAX_ITEM - 1] + "…"


def _warnings(events: Iterable[Obj]) -> dict[tuple[str, str], str]:
    """The latest Warning event of each object: (kind, name) -> "reason: message"."""
    latest: dict[tuple[str, str], tuple[str, str]] = {}
    for event in events:
        if event.get("type") != "Warning":
            continue
        involved = event.get("involvedObject") or {}
        when = str(event.get("lastTimestamp") or event.get("eventTime") or "")
        key = (str(involved.get("kind")), str(involved.get("name")))
        if key not in latest or when >= latest[key][0]:
            latest[key] = (when, f"{event.get('reason')}: {_short(event.get('message', ''))}")
    return {key: text for key, (_, text) in latest.items()}


class _Logs:
    """The last line containers logged, for at most MAX_LOGS containers."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.read = 0

    def last_line(self, pod: str, container: str, *, previous: bool) -> str | None:
        if self.read >= MAX_LOGS:
            return None
        self.read += 1
        args = ["logs", "-n", self.target.namespace, pod, "-c", container, "--tail", "20"]
        done = run(
            kubectl_argv(self.target.env, self.target.context, *args, *(["--previous"] if previous else [])),
            env=self.target.env,
            check=False,
            timeout=60,
        )
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        return _short(lines[-1]) if done.returncode == 0 and lines else None


def _containers(pod: Obj, logs: _Logs) -> list[str]:
    status = pod.get("status") or {}
    found = []
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        if container.get("ready"):
            continue
        state = container.get("state") or {}
        last = (container.get("lastState") or {}).get("terminated") or {}
        reasons, ended = [], None
        if "waiting" in state:
            reasons.append(state["waiting"].get("reason") or "waiting")
            message = state["waiting"].get("message") or ""
            if message and reasons[-1] != "CrashLoopBackOff":
                reasons.append(_short(message))
        if "terminated" in state:
            ended = state["terminated"]
            reasons.append(ended.get("reason") or "terminated")
        ended = ended or last or None
        if ended and ended.get("exitCode") not in (None, 0):
            reasons.append(f"exit code {ended['exitCode']}")
        if container.get("restartCount"):
            reasons.append(f"{container['restartCount']} restarts")
        if not reasons:
            reasons.append("not ready")
        if ended and ended.get("exitCode") not in (None, 0):
            line = logs.last_line(_name(pod), container["name"], previous="terminated" not in state)
            if line:
                reasons.append(f"last log line: {line}")
        found.append(f"container {container['name']}: {', '.join(reasons)}")
    return found


def _pod(pod: Obj, warnings: Mapping[tuple[str, str], str], logs: _Logs) -> str | None:
    status = pod.get("status") or {}
    phase = status.get("phase")
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if phase == "Succeeded" or (conditions.get("Ready") or {}).get("status") == "True":
        return None
    reasons = _containers(pod, logs)
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False":
        reasons.insert(
            0, f"{scheduled.get('reason', 'not scheduled')}: {_short(scheduled.get('message', ''))}"
        )
    if not reasons:
        reasons.append(warnings.get(("Pod", _name(pod))) or phase or "not ready")
    return f"Pod {_name(pod)} ({'; '.join(reasons)})"


def _pods(pods: Iterable[Obj], warnings: Mapping[tuple[str, str], str], logs: _Logs) -> list[str]:
    return [line for pod in pods if (line := _pod(pod, warnings, logs)) is not None]


def _claims(claims: Iterable[Obj], warnings: Mapping[tuple[str, str], str]) -> list[str]:
    found = []
    for claim in claims:
        phase = (claim.get("status") or {}).get("phase")
        if phase != "Bound":
            why = warnings.get(("PersistentVolumeClaim", _name(claim)))
            found.append(
                f"PersistentVolumeClaim {_name(claim)} is {phase or 'unbound'}" + (f" ({why})" if why else "")
            )
    return found


def _jobs(
    jobs: Iterable[Obj],
    job_pods: Mapping[str, list[Obj]],
    warnings: Mapping[tuple[str, str], str],
    logs: _Logs,
) -> list[str]:
    found = []
    for job in jobs:
        conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []}
        if (conditions.get("Complete") or {}).get("status") == "True":
            continue
        failed = conditions.get("Failed") or {}
        why = (
            f"{failed.get('reason')}: {_short(failed.get('message', ''))}"
            if failed.get("status") == "True"
            else warnings.get(("Job", _name(job))) or "still running"
        )
        hook = "hook " if "helm.sh/hook" in ((job.get("metadata") or {}).get("annotations") or {}) else ""
        pods = _pods(job_pods.get(_name(job), []), warnings, logs)
        found.append(
            f"{hook}Job {_name(job)} not complete ({why})" + (f": {'; '.join(pods)}" if pods else "")
        )
    return found


def _services(services: Iterable[Obj]) -> list[str]:
    found = []
    for service in services:
        spec = service.get("spec") or {}
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if spec.get("type") == "LoadBalancer" and not ingress and not spec.get("externalIPs"):
            found.append(f"Service {_name(service)} has no external address (type LoadBalancer)")
    return found
