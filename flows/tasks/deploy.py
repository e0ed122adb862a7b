"""Prefect tasks ``deploy_hub`` and ``rollback_hub``: one hub in one environment, locked, retried when
the error is transient, audited.

Locks are Prefect global concurrency limits, created (or corrected) on first use:

- ``deploy-<release>`` with limit 1: two runs never drive the same release at once;
- ``cluster-<name>`` with limit ``cluster_concurrency`` of hubploy-repo.yaml: fleet deploys do not
  overload one cluster. The release lock is taken first, so a run waiting for a cluster slot never
  blocks another release. The tasks of one process queue for the cluster slots in a process-local
  FIFO and pass a slot they leave straight on to the next waiting task (``process_slot``). A deploy
  holds its cluster slot only while it loads the cluster API (namespace, history, helm upgrade), not
  while the health check waits for the hub.

Every deploy or rollback, successful or not, writes a markdown artifact with key ``audit-<release>``.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from functools import partial
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext, SettingsContext, TaskRunContext, get_settings_context
from prefect.exceptions import ObjectAlreadyExists

from blocks.resolve import cluster_access_for
from flows.prefect_compat import retry_after as compat_retry_after
from flows.tasks.images import hub_registry_credentials
from hubploy.deploy import (
    ClusterAccessProvider,
    DeployOptions,
    DeployResult,
    Logger,
    deploy,
    is_transient,
    sops_env,
)
from hubploy.deploy import rollback_hub as core_rollback
from hubploy.errors import HubployError
from hubploy.helm import UpgradeFlags
from hubploy.layout import DeploymentRepo, Hub, load_repo
from hubploy.runner import child_env

RETRY_DELAYS = [10, 30]
LIMITS_PAGE = 200
_ensured: dict[str, int] = {}
_ensured_lock = threading.Lock()


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the state's own exception, classified below
        return is_transient(exc)
    return False


def ensure_limit(name: str, limit: int) -> None:
    """Make the global concurrency limit ``name`` exist with ``limit`` slots (once per process)."""
    ensure_limits({name: limit})


def ensure_limits(limits: Mapping[str, int]) -> None:
    """Make every global concurrency limit exist with its number of slots (once per process): one listing
    of the server's limits, then a write only for those missing or with another number of slots."""
    with _ensured_lock:
        wanted = {name: slots for name, slots in limits.items() if _ensured.get(name) != slots}
    if not wanted:
        return
    with get_client(sync_client=True) as client:
        existing: dict[str, int] = {}
        while page := client.read_global_concurrency_limits(limit=LIMITS_PAGE, offset=len(existing)):
            existing.update((limit.name, limit.limit) for limit in page)
            if len(page) < LIMITS_PAGE:
                break
        for name, slots in wanted.items():
            if existing.get(name) == slots:
                continue
            try:
                client.upsert_global_concurrency_limit_by_name(name, slots)
            except ObjectAlreadyExists:  # a concurrent run created it between the read and the create
                client.upsert_global_concurrency_limit_by_name(name, slots)
    with _ensured_lock:
        _ensured.update(wanted)


def limit_name(prefix: str, key: str) -> str:
    """A limit name from free text: lowercase letters, digits and dashes."""
    return f"{prefix}-" + (re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-") or "default")


def cluster_key(hub: Hub) -> str:
    """A name for the cluster a hub deploys to (its kube context when it names one)."""
    cluster = hub.config.cluster
    if cluster is None:
        return "default"
    settings = cluster.settings
    if cluster.context_template:
        return cluster.context_template.split("{", 1)[0] or cluster.provider
    parts = [cluster.provider, getattr(settings, "project", None) or getattr(settings, "resource_group", None),
             getattr(settings, "cluster", None) or getattr(settings, "credentials_block", None)
             or getattr(settings, "filename", None)]
    return "-".join(p for p in parts if p)


class _Claim:
    """One task's place in a gate's queue: granted a keeper (a server slot), or failed."""

    def __init__(self) -> None:
        self.decided = threading.Event()
        self.keeper: _Keeper | None = None
        self.error: Exception | None = None

    def grant(self, keeper: _Keeper) -> None:
        self.keeper = keeper
        self.decided.set()

    def fail(self, error: Exception) -> None:
        self.error = error
        self.decided.set()


class _Keeper:
    """A thread that gets one slot of the gate's limit from the server (Prefect's strict ``concurrency``,
    with its lease renewal) and holds it while the tasks of this process pass it on to each other."""

    def __init__(self, gate: _SlotGate, settings: SettingsContext) -> None:
        self.gate = gate
        self.settings = settings
        self.error: Exception | None = None
        self.wake = threading.Event()  # the queue emptied: stop sleeping the server's Retry-After
        self._retire = threading.Event()
        self._done = threading.Event()
        threading.Thread(target=self._run, name=f"slot-keeper-{gate.name}", daemon=True).start()

    def _run(self) -> None:
        try:
            # A new thread starts without context: bring the caller's settings (API URL) and nothing else,
            # so that the lease belongs to no task run (a task's ConcurrencyContext releases its leases
            # when that task ends).
            with SettingsContext(profile=self.settings.profile, settings=self.settings.settings):
                self._serve()
        except Exception as exc:
            if not self._retire.is_set():
                raise  # a release nobody waits for: threading.excepthook reports it
            self.error = exc  # raised by the task that retires this keeper
        finally:
            self.gate.finished(self)
            self._done.set()

    def _serve(self) -> None:
        with contextlib.ExitStack() as held:
            while True:
                self.wake.clear()
                if not self.gate.wanted():
                    return
                try:
                    # One request per try (max_retries=0): Prefect's own waiting would go on asking after
                    # every task of the process has been served. A failed lease renewal is logged only:
                    # cancelling this thread would not stop the deploy that holds the slot.
                    held.enter_context(concurrency(self.gate.name, occupy=1, strict=True, max_retries=0,
                                                   raise_on_lease_renewal_failure=False))
                    break
                except Exception as exc:  # noqa: BLE001 - a refusal is retried, anything else goes to a task
                    retry_after = compat_retry_after(exc)
                    if retry_after is None:
                        self.gate.failed(self, exc)
                        return
                self.wake.wait(retry_after)
            if self.gate.acquired(self):
                self._retire.wait()

    def retire(self) -> None:
        """Release the slot on the server and wait until it is released."""
        self._retire.set()
        self._done.wait()
        if self.error is not None:
            raise self.error


class _SlotGate:
    """A process-local FIFO queue in front of one global concurrency limit.

    Prefect's own waiting hands a freed slot over slowly: waiters poll one request per limit at a time
    and sleep a ``Retry-After`` that grows with the refusals, and on SQLite an acquire that meets
    concurrent writes (releases, task states) is often refused with 503 (database busy), which the client
    retries only after 1-3 s. Here at most ``limit`` keepers of this process ask the server; a task leaving the block
    hands its keeper's slot to the longest-waiting task of the process without a server round trip, and
    the last task out releases it on the server before it returns. The server's limit still bounds all
    processes together; a process keeps its slots while it has tasks waiting."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiting: deque[_Claim] = deque()
        self._keepers = 0  # asking for a slot or holding one
        self._unsettled: set[_Keeper] = set()  # neither passing a slot among tasks nor finished
        self._limit = 1

    @contextlib.contextmanager
    def slot(self, limit: int) -> Iterator[None]:
        claim = _Claim()
        with self._lock:
            self._limit = limit
            self._waiting.append(claim)
            if self._keepers < limit:
                self._start_keeper(get_settings_context())
        try:
            claim.decided.wait()
        except BaseException:
            self._abandon(claim)
            raise
        if claim.error is not None:
            raise claim.error
        assert claim.keeper is not None
        try:
            yield
        finally:
            self._pass_on(claim.keeper)

    def _start_keeper(self, settings: SettingsContext) -> None:
        """Called with the lock held."""
        self._keepers += 1
        self._unsettled.add(_Keeper(self, settings))

    def wanted(self) -> bool:
        """Whether a task still waits; if not, the asking keeper stops."""
        with self._lock:
            if self._waiting:
                return True
            self._keepers -= 1
            return False

    def acquired(self, keeper: _Keeper) -> bool:
        """A keeper got a server slot: grant it to the first waiting task (False: none waits any more)."""
        with self._lock:
            if not self._waiting:
                self._keepers -= 1
                return False
            self._waiting.popleft().grant(keeper)
            self._unsettled.discard(keeper)
            self._changed.notify_all()
            return True

    def failed(self, keeper: _Keeper, error: Exception) -> None:
        """A keeper could not get a slot: the first waiting task raises the error, the next one gets a
        keeper of its own."""
        with self._lock:
            self._keepers -= 1
            if self._waiting:
                self._waiting.popleft().fail(error)
            if self._waiting and self._keepers < self._limit:
                self._start_keeper(keeper.settings)

    def finished(self, keeper: _Keeper) -> None:
        with self._lock:
            self._unsettled.discard(keeper)
            self._changed.notify_all()

    def _pass_on(self, keeper: _Keeper) -> None:
        """Hand the slot to the first waiting task. With none waiting, release it on the server, and
        wait for the keepers still asking to stop (releasing what they got meanwhile), so that no slot
        outlives the last task of the process."""
        with self._lock:
            if self._waiting and self._keepers <= self._limit:
                self._waiting.popleft().grant(keeper)
                return
            self._keepers -= 1
            asking = set() if self._waiting else set(self._unsettled)
        for other in asking:
            other.wake.set()
        try:
            keeper.retire()
        finally:
            with self._lock:
                self._changed.wait_for(lambda: bool(self._waiting) or not self._unsettled & asking)

    def _abandon(self, claim: _Claim) -> None:
        """A waiting task was interrupted: leave the queue, or pass on the slot granted meanwhile."""
        with self._lock:
            if claim in self._waiting:
                self._waiting.remove(claim)
                return
        if claim.keeper is not None:
            self._pass_on(claim.keeper)


_gates: dict[str, _SlotGate] = {}
_gates_lock = threading.Lock()


def _forget_gates() -> None:
    """In a forked child: the keeper threads did not survive the fork, so neither may their gates."""
    global _gates_lock
    _gates_lock = threading.Lock()
    _gates.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_gates)


def process_slot(name: str, limit: int) -> contextlib.AbstractContextManager[None]:
    """Hold one slot of the global concurrency limit ``name`` (``limit`` slots, strict: the limit must
    exist), queued first come, first served with the other tasks of this process."""
    with _gates_lock:
        gate = _gates.get(name)
        if gate is None:
            gate = _gates[name] = _SlotGate(name)
    return gate.slot(limit)


_held_release_locks: ContextVar[frozenset[str]] = ContextVar("hubploy_held_release_locks", default=frozenset())


@contextlib.contextmanager
def release_locks(releases: Iterable[str]) -> Iterator[None]:
    """Hold ``deploy-<release>`` (1 slot each) for several releases, taken together in one request (all
    or none). Two runs never drive the same release at once. Tasks run inside the block (the task
    runner copies this context) use the locks held here instead of asking the server again, which
    spares a fleet deploy two server writes per hub: on SQLite each write can meet another and wait
    out the client's 2 s retry."""
    held = _held_release_locks.get()
    names = sorted({limit_name("deploy", release) for release in releases} - held)
    if not names:
        yield
        return
    ensure_limits(dict.fromkeys(names, 1))
    with concurrency(names, occupy=1, strict=True):
        token = _held_release_locks.set(held | set(names))
        try:
            yield
        finally:
            _held_release_locks.reset(token)


def fleet_release_locks(repo_path: str, hubs: Iterable[str], env: str) -> contextlib.AbstractContextManager[None]:
    """``release_locks`` for the releases of ``hubs`` in ``env``. A hub whose config does not load is
    left out: its own deploy task reports the error."""
    try:
        repo = load_repo(repo_path)
    except HubployError:
        return contextlib.nullcontext()
    releases = []
    for hub in hubs:
        with contextlib.suppress(HubployError):
            releases.append(repo.load_hub(hub).release(env))
    return release_locks(releases)


def release_lock(release: str) -> contextlib.AbstractContextManager[None]:
    """Hold ``deploy-<release>`` unless this context already holds it (see ``release_locks``)."""
    return release_locks([release])


@contextlib.contextmanager
def cluster_slot(repo: DeploymentRepo, hub: Hub, logger: Logger) -> Iterator[None]:
    """Hold a slot of ``cluster-<name>`` (cluster_concurrency slots), logging when it is taken and left."""
    name = limit_name("cluster", cluster_key(hub))
    ensure_limit(name, repo.settings.cluster_concurrency)
    with process_slot(name, repo.settings.cluster_concurrency):
        logger.info("holding a slot of %s", name)
        try:
            yield
        finally:
            logger.info("left the slot of %s", name)


@contextlib.contextmanager
def deploy_locks(repo: DeploymentRepo, hub: Hub, release: str, logger: Logger) -> Iterator[None]:
    """Hold ``deploy-<release>``, then a slot of ``cluster-<name>``: the release lock first, so a run
    waiting for a cluster slot never blocks another release."""
    with release_lock(release), cluster_slot(repo, hub, logger):
        yield


def blocks_cluster_access(base_env: Mapping[str, str]) -> ClusterAccessProvider:
    """Credential blocks named in hubploy.yaml, else classic key files, else the ambient KUBECONFIG."""
    return lambda hub, env_name: cluster_access_for(hub, env_name, base_env=base_env)


def trigger_info(trigger: str | None) -> dict[str, Any]:
    """What started this deploy: the caller's label, and the flow and task run it ran in."""
    info: dict[str, Any] = {"trigger": trigger or "manual"}
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        run = flow_ctx.flow_run
        info.update(flow_run=f"{run.name} ({run.id})", flow_parameters=run.parameters,
                    deployment_id=str(run.deployment_id) if run.deployment_id else None)
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        info["task_run"] = f"{task_ctx.task_run.name} ({task_ctx.task_run.id})"
    return info


def audit_markdown(result: DeployResult, trigger: Mapping[str, Any]) -> str:
    rows = [("hub", result.hub), ("env", result.env), ("release", result.release),
            ("namespace", result.namespace), ("result", result.outcome),
            ("git SHA", result.git_sha or "unknown"),
            ("values digest (secrets excluded)", result.values_digest or "not computed"),
            ("helm revision before", result.revision_before or "none"),
            ("helm revision after", result.revision_after or "none"),
            ("duration", f"{result.duration:.1f} s"), ("JupyterHub version", result.hub_version or "not checked")]
    rows += [(k.replace("_", " "), v) for k, v in trigger.items() if v]
    lines = [f"# {result.release}: {result.outcome}", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in rows]
    lines += ["", "## Images", "", "| values path | image | digest |", "|---|---|---|"]
    lines += [f"| {i.path} | `{i.reference}` | `{i.digest}` |" for i in result.images]
    if result.recovered:
        lines += ["", "## Recovered", "", *(f"- {line}" for line in result.recovered)]
    if result.message:
        lines += ["", "## Message", "", "```", result.message, "```"]
    return "\n".join(lines) + "\n"


@task(name="deploy-hub", retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=_retry_transient, task_run_name="deploy-{hub}-{env}")
def deploy_hub(hub: str, env: str, repo_path: str = ".", *, namespace: str | None = None,
               release: str | None = None, set_values: list[str] | None = None,
               set_string_values: list[str] | None = None, timeout: str = "10m", health_check: bool = True,
               trigger: str | None = None, redeploy: bool = False) -> dict[str, Any]:
    """Deploy ``hub`` to ``env`` under the release and cluster locks; returns the audit record.
    ``redeploy`` upgrades even a release that already runs exactly this configuration."""
    logger = get_run_logger()
    repo = load_repo(repo_path)
    hub_obj = repo.load_hub(hub)
    options = DeployOptions(namespace=namespace, release=release, set_values=tuple(set_values or ()),
                            set_string_values=tuple(set_string_values or ()), health_check=health_check,
                            flags=UpgradeFlags(timeout=timeout, atomic=True), skip_unchanged=not redeploy)
    name = release or hub_obj.release(env)
    base_env = child_env()
    triggered = trigger_info(trigger)
    # The cluster slot is held only while the deploy loads the cluster API, not while it waits for the hub.
    with release_lock(name):
        logger.info("holding the release lock of %s; deploying", name)
        result = deploy(repo, hub, env, options=options, base_env=base_env, logger=logger,
                        on_result=partial(write_audit, trigger=triggered),
                        cluster_access=blocks_cluster_access(sops_env(repo, base_env)),
                        registry_credentials=partial(hub_registry_credentials, hub_obj, base_env=base_env),
                        cluster_slot=partial(cluster_slot, repo, hub_obj, logger))
    return {**result.summary(), **triggered}


@task(name="rollback-hub", retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=_retry_transient, task_run_name="rollback-{hub}-{env}")
def rollback_hub(hub: str, env: str, repo_path: str = ".", *, revision: int | None = None,
                 namespace: str | None = None, release: str | None = None, timeout: str = "10m",
                 health_check: bool = True, trigger: str | None = None) -> dict[str, Any]:
    """Roll ``hub`` in ``env`` back to ``revision`` (default: the previous deployed one) under the
    same locks as a deploy, health-check it, and audit it; returns the audit record."""
    logger = get_run_logger()
    repo = load_repo(repo_path)
    hub_obj = repo.load_hub(hub)
    name = release or hub_obj.release(env)
    base_env = child_env()
    triggered = trigger_info(trigger)
    with deploy_locks(repo, hub_obj, name, logger):
        result = core_rollback(repo, hub, env, revision=revision, namespace=namespace, release=release,
                               base_env=base_env, health_check=health_check, timeout=timeout, logger=logger,
                               cluster_access=blocks_cluster_access(sops_env(repo, base_env)),
                               on_result=partial(write_audit, trigger=triggered))
    return {**result.summary(), **triggered}


def write_audit(result: DeployResult, *, trigger: Mapping[str, Any]) -> None:
    create_markdown_artifact(key=limit_name("audit", result.release), markdown=audit_markdown(result, trigger),
                             description=f"{result.release}: {result.outcome}")
