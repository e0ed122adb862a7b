"""The deploy locks, and the thread scheduler in front of them. Locks are Prefect global concurrency
limits, created (or corrected) on first use:

- ``deploy-<release>`` with limit 1: two runs never drive the same release at once. A fleet takes the
  locks of all its releases in one request (``release_locks``); the tasks it runs reuse them.
- ``cluster-<name>`` with limit ``cluster_concurrency`` of hubploy-repo.yaml: fleet deploys do not
  overload one cluster. The release lock is taken first (``deploy_locks``), so a run waiting for a cluster
  slot never blocks another release, and a deploy or rollback holds its cluster slot only while it loads
  the cluster API, not while its health check waits for the hub.

The tasks of one process queue for the cluster slots in a process-local FIFO (``SlotGate``) and pass a
slot they leave straight on to the next waiting task (``process_slot``).

Every slot is a lease that its process renews: when the process dies (its worker's machine, a Job's pod),
the server frees the slot once the lease expires, ``lease_seconds()`` after the last renewal
(HUBPLOY_LOCK_LEASE_SECONDS, default 120), and a retry of the run can take it (hubploy/triggers/recovery.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from functools import partial
from typing import Protocol

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.context import SettingsContext, get_settings_context
from prefect.exceptions import ObjectAlreadyExists

from flows import prefect_compat
from hubploy.deploy import Logger
from hubploy.errors import HubployError
from hubploy.layout import DeploymentRepo, Hub, load_repo

LIMITS_PAGE = 200
DEFAULT_LEASE_SECONDS = 120.0
MIN_LEASE_SECONDS = 60.0


def lease_seconds() -> float:
    """How long a dead process's locks outlive it (HUBPLOY_LOCK_LEASE_SECONDS; the holder renews its leases
    when three quarters of it have passed)."""
    value = os.environ.get("HUBPLOY_LOCK_LEASE_SECONDS", "")
    try:
        seconds = float(value) if value else DEFAULT_LEASE_SECONDS
    except ValueError:
        raise HubployError(
            f"HUBPLOY_LOCK_LEASE_SECONDS must be a number of seconds (got {value!r})"
        ) from None
    if seconds < MIN_LEASE_SECONDS:
        raise HubployError(
            f"HUBPLOY_LOCK_LEASE_SECONDS must be at least {MIN_LEASE_SECONDS:.0f}, the "
            f"Prefect server's minimum (got {value!r})"
        )
    return seconds


_ensured: dict[str, int] = {}
_ensured_lock = threading.Lock()


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
    """A name for the cluster a hub deploys to (``Cluster.key``; ``default`` for the ambient kubeconfig)."""
    return hub.config.cluster.key() if hub.config.cluster else "default"


# --- the process-local gate in front of a cluster's limit ------------------------------------------------


class SlotServer(Protocol):
    """Where a gate's slots come from: the Prefect server's global concurrency limits (``PrefectSlots``),
    or a stand-in in tests."""

    def bind(self) -> Callable[[], AbstractContextManager[object]]:
        """Called in a waiting task's thread: what a keeper thread enters to reach the same server."""

    def hold(self, name: str) -> AbstractContextManager[object]:
        """One slot of the limit ``name``, asked once; raises when the slot is not granted."""

    def retry_after(self, error: BaseException) -> float | None:
        """Seconds to wait before asking again when ``error`` says the limit is full; None: give up."""


class PrefectSlots:
    """Slots of Prefect's global concurrency limits, strict (a limit must exist)."""

    def bind(self) -> Callable[[], AbstractContextManager[object]]:
        # A new thread starts without context: bring the caller's settings (API URL) and nothing else, so
        # that the lease belongs to no task run (a task's ConcurrencyContext releases its leases when that
        # task ends).
        settings = get_settings_context()
        return partial(SettingsContext, profile=settings.profile, settings=settings.settings)

    def hold(self, name: str) -> AbstractContextManager[object]:
        # One request per try (max_retries=0): Prefect's own waiting would go on asking after every task of
        # the process has been served. A failed lease renewal is logged only: cancelling the keeper thread
        # would not stop the deploy that holds the slot.
        return concurrency(
            name,
            occupy=1,
            strict=True,
            max_retries=0,
            lease_duration=lease_seconds(),
            raise_on_lease_renewal_failure=False,
        )

    def retry_after(self, error: BaseException) -> float | None:
        return prefect_compat.retry_after(error)


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
    """A thread that gets one slot of the gate's limit from the server and holds it while the tasks of
    this process pass it on to each other."""

    def __init__(self, gate: SlotGate, reach: Callable[[], AbstractContextManager[object]]) -> None:
        self.gate = gate
        self.reach = reach
        self.error: Exception | None = None
        self.wake = threading.Event()  # the queue emptied: stop sleeping the server's Retry-After
        self._retire = threading.Event()
        self._done = threading.Event()
        threading.Thread(target=self._run, name=f"slot-keeper-{gate.name}", daemon=True).start()

    def _run(self) -> None:
        try:
            with self.reach():
                self._serve()
        except Exception as exc:
            if not self._retire.is_set():
                raise  # a release nobody waits for: threading.excepthook reports it
            self.error = exc  # raised by the task that retires this keeper
        finally:
            self.gate.finished(self)
            self._done.set()

    def _serve(self) -> None:
        server = self.gate.server
        with contextlib.ExitStack() as held:
            while True:
                self.wake.clear()
                if not self.gate.wanted():
                    return
                try:
                    held.enter_context(server.hold(self.gate.name))
                    break
                except Exception as exc:  # noqa: BLE001 - a refusal is retried, anything else goes to a task
                    retry_after = server.retry_after(exc)
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


class SlotGate:
    """A process-local FIFO queue in front of one global concurrency limit.

    Prefect's own waiting hands a freed slot over slowly: waiters poll one request per limit at a time
    and sleep a ``Retry-After`` that grows with the refusals, and on SQLite an acquire that meets
    concurrent writes (releases, task states) is often refused with 503 (database busy), which the client
    retries only after 1-3 s. Here at most ``limit`` keepers of this process ask the server; a task leaving
    the block hands its keeper's slot to the longest-waiting task of the process without a server round
    trip, and the last task out releases it on the server before it returns. The server's limit still
    bounds all processes together; a process keeps its slots while it has tasks waiting."""

    def __init__(self, name: str, server: SlotServer) -> None:
        self.name = name
        self.server = server
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
                self._start_keeper(self.server.bind())
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

    def waiting(self) -> int:
        """How many tasks wait for a slot."""
        with self._lock:
            return len(self._waiting)

    def _start_keeper(self, reach: Callable[[], AbstractContextManager[object]]) -> None:
        """Called with the lock held."""
        self._keepers += 1
        self._unsettled.add(_Keeper(self, reach))

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
                self._start_keeper(keeper.reach)

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


_gates: dict[str, SlotGate] = {}
_gates_lock = threading.Lock()


def _forget_gates() -> None:
    """In a forked child: the keeper threads did not survive the fork, so neither may their gates."""
    global _gates_lock
    _gates_lock = threading.Lock()
    _gates.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_gates)


def gate(name: str) -> SlotGate:
    """This process's gate in front of the global concurrency limit ``name``."""
    with _gates_lock:
        found = _gates.get(name)
        if found is None:
            found = _gates[name] = SlotGate(name, PrefectSlots())
        return found


def process_slot(name: str, limit: int) -> AbstractContextManager[None]:
    """Hold one slot of the global concurrency limit ``name`` (``limit`` slots, strict: the limit must
    exist), queued first come, first served with the other tasks of this process."""
    return gate(name).slot(limit)


# --- release locks, cluster slots ------------------------------------------------------------------------

_held_release_locks: ContextVar[frozenset[str]] = ContextVar(
    "hubploy_held_release_locks", default=frozenset()
)


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
    with concurrency(names, occupy=1, strict=True, lease_duration=lease_seconds()):
        token = _held_release_locks.set(held | set(names))
        try:
            yield
        finally:
            _held_release_locks.reset(token)


def fleet_release_locks(repo_path: str, hubs: Iterable[str], env: str) -> AbstractContextManager[None]:
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


def release_lock(release: str) -> AbstractContextManager[None]:
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
def deploy_locks(
    repo: DeploymentRepo, hub: Hub, release: str, logger: Logger
) -> Iterator[Callable[[], AbstractContextManager[None]]]:
    """Hold ``deploy-<release>`` for the whole block; yield the release's cluster slot, for the block to
    enter only around its cluster calls. The release lock comes first, so a run waiting for a cluster
    slot never blocks another release."""
    with release_lock(release):
        logger.info("holding the release lock of %s", release)
        yield partial(cluster_slot, repo, hub, logger)
