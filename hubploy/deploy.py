"""Deploy one hub to one environment: classic ``hubploy deploy``, made safe.

The sequence (each step fails before the next one runs):

1. ``helm dependency update``, skipped while Chart.yaml/Chart.lock and charts/ match a stamp file;
2. decrypt the secret values files just in time (0600 temp files, removed afterwards);
3. get cluster credentials (a provider passed in; the core never imports Prefect blocks);
4. read the release's history while checking that every image in the merged values (every
   ``{name, tag}`` mapping) is in its registry;
5. when the release has no history, create its namespace if it is missing;
6. stop if the deployed revision was made by hubploy from exactly this chart and these values (its helm
   description carries their digest): nothing to upgrade (``skip_unchanged=False`` upgrades anyway);
7. recover a stuck release, then ``helm upgrade --install --wait --timeout`` with rollback on failure.
   Helm renders and validates the chart before it changes anything, so a render or schema error
   leaves the release untouched (no separate ``helm template`` pass is needed);
8. health check: ``GET <hub url>/hub/api`` (helm has already waited for the rollouts); on failure roll
   back and raise :class:`~hubploy.errors.HealthCheckError`.

Only the release is ever changed; nothing here touches ``os.environ`` (deploys run in threads).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml

from hubploy import cloud, helm, http, values
from hubploy.errors import (
    CommandError,
    CommandTimeoutError,
    DeployError,
    HealthCheckError,
    HubployError,
    RegistryError,
)
from hubploy.git import head_sha
from hubploy.health import check_health
from hubploy.images import effective_tag
from hubploy.layout import DeploymentRepo, Hub
from hubploy.registry import TIMEOUT as REGISTRY_TIMEOUT
from hubploy.registry import RegistryCredentials, manifest_digest, split_repository
from hubploy.registry_login import credentials_from_env, credentials_from_key_files
from hubploy.runner import REDACTED, child_env, redact, register_secret, run
from hubploy.secrets import decrypted

log = logging.getLogger("hubploy.deploy")

DEFAULT_TIMEOUT = "10m"
DEPS_STAMP = ".hubploy-dependencies.sha256"
SECRET_PLACEHOLDER = "<secret>"
_TRANSIENT_MARKERS = ("connection refused", "connection reset", "i/o timeout", "tls handshake timeout",
                      "another operation (install/upgrade/rollback) is in progress", "etcdserver",
                      "the server is currently unable", "too many requests", "no route to host",
                      "unexpected eof", "server has asked for the client to provide credentials")
_dependency_locks: dict[Path, threading.Lock] = {}
_dependency_locks_guard = threading.Lock()


class ClusterAccessLike(Protocol):
    """What a deploy needs from cluster credentials (see ``hubploy.cloud.ClusterAccess``)."""

    kubeconfig: Path
    env: dict[str, str]
    context: str | None


ClusterAccessProvider = Callable[[Hub, str], AbstractContextManager[ClusterAccessLike]]
ClusterSlot = Callable[[], AbstractContextManager[object]]  # held while a deploy loads the cluster API
ImageDigest = Callable[[str, str], "str | None"]
RegistryCredentialsFor = Callable[[str], "RegistryCredentials | None"]
Logger = logging.Logger | logging.LoggerAdapter


@dataclass(frozen=True)
class DeployOptions:
    """Everything ``hubploy deploy`` can change; the defaults are a safe CI deploy."""

    namespace: str | None = None
    release: str | None = None
    chart: Path | None = None
    set_values: tuple[str, ...] = ()
    set_string_values: tuple[str, ...] = ()
    flags: helm.UpgradeFlags = field(
        default_factory=lambda: helm.UpgradeFlags(timeout=DEFAULT_TIMEOUT, atomic=True))
    health_check: bool = True
    health_timeout: float | None = None   # None: the repo's health_check_timeout
    skip_unchanged: bool = True           # False: upgrade even if the release already runs this configuration


@dataclass(frozen=True)
class ImageRef:
    path: str       # dotted values path of the {name, tag} mapping
    name: str
    tag: str
    digest: str | None

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"


@dataclass
class DeployResult:
    hub: str
    env: str
    release: str
    namespace: str
    git_sha: str | None = None
    revision_before: int | None = None
    revision_after: int | None = None
    values_digest: str | None = None
    images: list[ImageRef] = field(default_factory=list)
    started: str = field(default_factory=lambda: _utcnow())  # UTC, ISO 8601
    finished: str = ""
    duration: float = 0.0
    result: str = "pending"          # deployed | dry-run | rolled-back | refused | failed
    message: str = ""
    recovered: list[str] = field(default_factory=list)
    hub_version: str | None = None
    rendered: str | None = None      # dry-run output, secrets redacted

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("rendered")
        return data


def deploy(repo: DeploymentRepo, hub_name: str, env_name: str, *, options: DeployOptions = DeployOptions(),
           cluster_access: ClusterAccessProvider | None = None, base_env: Mapping[str, str] | None = None,
           registry_credentials: RegistryCredentialsFor | None = None, logger: Logger = log,
           on_result: Callable[[DeployResult], None] | None = None,
           cluster_slot: ClusterSlot = contextlib.nullcontext) -> DeployResult:
    """Run the deploy sequence for ``hub_name`` in ``env_name`` and return what happened.

    ``cluster_access`` and ``registry_credentials`` (host -> credentials, asked only when a registry
    refuses anonymous access) default to the hub's classic key files, without Prefect blocks.
    ``cluster_slot`` is entered around the steps that load the cluster API (namespace, history,
    upgrade) and left before the health check waits for the hub.
    Raises a :class:`~hubploy.errors.HubployError` on any failure (after any rollback);
    ``on_result`` is always called with the final result, on success and failure alike.
    """
    hub = repo.load_hub(hub_name)
    env = dict(base_env) if base_env is not None else child_env()
    result = DeployResult(hub=hub.name, env=env_name, release=options.release or hub.release(env_name),
                          namespace=options.namespace or hub.namespace(env_name))
    credentials_for = registry_credentials or hub_key_file_credentials(hub, sops_env(repo, env))
    # One registry client for all image checks of this deploy (one TLS setup and connection, not one per image).
    with _recording(result, on_result), http.client(timeout=REGISTRY_TIMEOUT) as registry_client:
        _deploy(repo, hub, options, result, env, cluster_access or classic_cluster_access(sops_env(repo, env)),
                registry_image_digest(env, credentials_for, client=registry_client), logger, cluster_slot)
    return result


def rollback_hub(repo: DeploymentRepo, hub_name: str, env_name: str, *, revision: int | None = None,
                 namespace: str | None = None, release: str | None = None,
                 cluster_access: ClusterAccessProvider | None = None, base_env: Mapping[str, str] | None = None,
                 health_check: bool = True, health_timeout: float | None = None, timeout: str = DEFAULT_TIMEOUT,
                 logger: Logger = log, on_result: Callable[[DeployResult], None] | None = None) -> DeployResult:
    """Roll a hub's release back to ``revision`` (default: the deployed revision before the current
    one), wait for it, and health-check it. Raises DeployError when there is nothing to roll back to.
    """
    hub = repo.load_hub(hub_name)
    env = dict(base_env) if base_env is not None else child_env()
    result = DeployResult(hub=hub.name, env=env_name, release=release or hub.release(env_name),
                          namespace=namespace or hub.namespace(env_name))
    provider = cluster_access or classic_cluster_access(sops_env(repo, env))
    with _recording(result, on_result), provider(hub, env_name) as access:
        executable = helm.helm_executable(env)
        kube_env = {**access.env, "KUBECONFIG": str(access.kubeconfig)}
        context = access.context.replace("{namespace}", result.namespace) if access.context else None
        name, ns = result.release, result.namespace
        history = release_history(executable, name, ns, env=kube_env, kube_context=context)
        current = helm.last_deployed(history)
        result.revision_before = current.revision if current else None
        earlier = [r for r in history if current and r.revision < current.revision
                   and r.status in ("deployed", "superseded")]
        target = revision or (earlier[-1].revision if earlier else None)
        if target is None or not any(r.revision == target for r in history):
            raise DeployError(f"release {name} has no revision {target or 'before the current one'} to roll back to")
        logger.warning("rolling %s back from revision %s to revision %s", name, result.revision_before, target)
        rollback(executable, name, ns, target, env=kube_env, kube_context=context, timeout=timeout)
        after = helm.last_deployed(release_history(executable, name, ns, env=kube_env, kube_context=context))
        result.revision_after = after.revision if after else None
        if health_check:
            result.hub_version = check_health(hub, env_name, namespace=ns, release=name, env=kube_env,
                                              timeout=health_timeout or repo.settings.health_check_timeout,
                                              kube_context=context, logger=logger)
        result.result = "rolled-back"
        result.message = f"rolled back to the configuration of revision {target}"
    return result


@contextlib.contextmanager
def _recording(result: DeployResult, on_result: Callable[[DeployResult], None] | None) -> Iterator[None]:
    """Time ``result``, record a failure's message, and always hand the final result to ``on_result``."""
    start = time.monotonic()
    try:
        yield
    except HubployError as exc:
        if result.result == "pending":
            result.result = "failed"
        result.message = str(exc)
        raise
    finally:
        result.duration = round(time.monotonic() - start, 3)
        result.finished = _utcnow()
        if on_result is not None:
            on_result(result)


@dataclass(frozen=True)
class PreparedValues:
    """Exactly the values a deploy of one hub/env uses, with secrets decrypted to temp files."""

    hub: Hub
    env_name: str
    chart: Path
    helm: str
    plan: values.ValuesPlan
    decrypted: Mapping[Path, Path]   # secret file -> its decrypted temp file
    values_args: list[str]           # -f ... --set ... --set-string ... (paths of decrypted temp files)
    merged: dict[str, Any]           # chart values + every layer, as helm merges them
    secret_strings: list[str]        # every string from a secret file (registered for redaction)

    @property
    def user_values(self) -> dict[str, Any]:
        """The layers without the chart's defaults: what `helm get values` reports for the release."""
        return values.merged_values(self.plan, self.decrypted)


@contextlib.contextmanager
def prepared_values(repo: DeploymentRepo, hub: Hub, env_name: str, *, base_env: Mapping[str, str],
                    set_values: tuple[str, ...] = (), set_string_values: tuple[str, ...] = (),
                    chart: Path | None = None, logger: Logger = log) -> Iterator[PreparedValues]:
    """Layer the values (images injected last), update chart dependencies and decrypt the secrets;
    the decrypted files exist only inside the ``with`` block."""
    chart = (chart or repo.chart_dir).resolve()
    executable = helm.helm_executable(base_env)
    images = [values.ImageValue(spec.helm_substitution_path, spec.name, effective_tag(hub, spec)) for spec in hub.images]
    plan = values.layered_values(hub.dir, repo.root, hub.name, env_name, images=images,
                                 set_values=set_values, set_string_values=set_string_values)
    update_dependencies(executable, chart, env=base_env, logger=logger)
    with decrypted(plan.secret_files, env=sops_env(repo, base_env),
                   allow_plaintext=repo.settings.secrets.allow_plaintext) as files:
        secret_strings = register_secret_values(plan.secret_files, files)
        merged = values.merged_values(plan, files, _chart_values(chart))
        yield PreparedValues(hub, env_name, chart, executable, plan, files, plan.helm_args(files), merged,
                             secret_strings)


def _deploy(repo: DeploymentRepo, hub: Hub, options: DeployOptions, result: DeployResult, env: dict[str, str],
            cluster_access: ClusterAccessProvider, image_digest: ImageDigest, logger: Logger,
            cluster_slot: ClusterSlot) -> None:
    flags = options.flags
    with contextlib.suppress(HubployError):
        result.git_sha = head_sha(repo.root)
    with prepared_values(repo, hub, result.env, base_env=env, set_values=options.set_values,                # 1, 2
                         set_string_values=options.set_string_values, chart=options.chart, logger=logger) as prepared:
        executable, chart = prepared.helm, str(prepared.chart)
        major = helm.helm_major_version(executable, env)
        result.values_digest = values_digest(prepared.merged, prepared.plan.secret_files, prepared.decrypted)
        with cluster_access(hub, result.env) as access:                                                   # 3
            kube_env = {**access.env, "KUBECONFIG": str(access.kubeconfig)}
            context = access.context.replace("{namespace}", result.namespace) if access.context else None
            if flags.dry_run:
                result.images = check_images(prepared.merged, image_digest, logger=logger)
                out = run(helm.upgrade_argv(executable, major, result.release, chart, result.namespace,
                                            prepared.values_args, flags, kube_context=context), env=kube_env)
                result.rendered = redact_rendered(out.stdout, prepared.secret_strings)
                result.result = "dry-run"
                return
            with cluster_slot():
                history, created = _prepare_release(prepared, result, image_digest, kube_env, context, logger)  # 4, 5
                stamp = config_stamp(config_digest(prepared, result.release, result.namespace, flags.version))
                current = helm.last_deployed(history)
                if (options.skip_unchanged and history and current is history[-1]                         # 6
                        and current.status == "deployed" and stamp in current.description):
                    result.revision_before = result.revision_after = current.revision
                    result.result = "unchanged"
                    result.message = (f"revision {current.revision} already runs exactly this chart and these values;"
                                      " nothing to upgrade")
                    logger.info("%s: %s", result.release, result.message)
                else:
                    try:
                        _upgrade(executable, major, chart, prepared.values_args, options, result, kube_env,  # 7
                                 context, logger, history=history,
                                 description=f"{stamp} (git {(result.git_sha or 'unknown')[:12]})")
                    except DeployError:
                        # Nothing of the release is left when helm refused it or --atomic removed the first install.
                        if created and (result.result == "refused" or options.flags.atomic):
                            remove_namespace(result.namespace, env=kube_env, kube_context=context, logger=logger)
                        raise
            if options.health_check:
                _check_health_or_roll_back(hub, executable, options, result, kube_env, context, logger)  # 8
            if result.result == "pending":
                result.result = "deployed"
                logger.info("deployed %s revision %s (JupyterHub %s)", result.release, result.revision_after,
                            result.hub_version or "not checked")


def _prepare_release(prepared: PreparedValues, result: DeployResult, image_digest: ImageDigest,
                     env: dict[str, str], context: str | None, logger: Logger) -> tuple[list[helm.Revision], bool]:
    """Steps 4 and 5: read the release's history while every image is looked up in its registry; only
    when the release has no history, make sure the namespace exists (a release with revisions lives in
    one). Returns the history and whether the namespace was created just now. A history error wins over
    an image refusal; an image refusal leaves the cluster untouched."""
    with ThreadPoolExecutor(1) as background:
        history = background.submit(release_history, prepared.helm, result.release, result.namespace,
                                    env=env, kube_context=context)
        try:
            result.images = check_images(prepared.merged, image_digest, logger=logger)
        except HubployError:
            result.result = "refused"
            history.result()  # its error, if any, comes first
            raise
        revisions = history.result()
    if revisions:
        return revisions, False
    return [], ensure_namespace(result.namespace, env=env, kube_context=context, logger=logger)


def _upgrade(executable: str, major: int, chart: str, values_args: list[str], options: DeployOptions,
             result: DeployResult, env: dict[str, str], context: str | None, logger: Logger, *,
             history: list[helm.Revision], description: str) -> None:
    """Step 7: recover a stuck release, then ``helm upgrade --install --wait`` with rollback on failure.

    Helm renders and validates the chart before it changes anything, so a chart or values error leaves
    the release as it was (no new revision) and is reported as such.
    """
    name, ns = result.release, result.namespace
    result.recovered = recover_stuck_release(executable, name, ns, env=env, kube_context=context,
                                             timeout=options.flags.timeout, logger=logger, history=history)
    if result.recovered:
        history = release_history(executable, name, ns, env=env, kube_context=context)
    before = helm.last_deployed(history)
    result.revision_before = before.revision if before else None
    logger.info("helm upgrade %s in %s (deployed revision before: %s)", name, ns, result.revision_before or "none")
    try:
        upgraded = run(helm.upgrade_argv(executable, major, name, chart, ns, values_args, options.flags,
                                         kube_context=context, description=description),
                       env=env, on_line=lambda line: logger.debug("helm: %s", line))
    except CommandError as exc:
        after_history = release_history(executable, name, ns, env=env, kube_context=context)
        after = helm.last_deployed(after_history)
        result.revision_after = after.revision if after else None
        if [r.revision for r in after_history] == [r.revision for r in history]:
            result.result = "refused"
            where = "nothing was changed: the chart does not render or validate with these values"
        else:
            rolled = options.flags.atomic and result.revision_before is not None
            result.result = "rolled-back" if rolled else "failed"
            where = (f"rolled back; revision {result.revision_after} is serving" if rolled
                     else "the first install was removed" if options.flags.atomic else "no rollback was requested")
        raise DeployError(f"helm upgrade of {name} failed ({where}): {_last_line(exc.stderr_tail)}",
                          hint=f"`kubectl get pods -n {ns}` shows what is not ready; --debug logs helm's output"
                          ) from None
    result.revision_after = deployed_revision(upgraded.stdout)
    if result.revision_after is None:
        current = helm.last_deployed(release_history(executable, name, ns, env=env, kube_context=context))
        result.revision_after = current.revision if current else None


def _check_health_or_roll_back(hub: Hub, executable: str, options: DeployOptions, result: DeployResult,
                               env: dict[str, str], context: str | None, logger: Logger) -> None:
    """Step 8, outside the cluster slot (it waits on the hub, not on the cluster API). An unchanged
    release is only probed: it failing is not this deploy's doing, so nothing is rolled back."""
    name, ns = result.release, result.namespace
    unchanged = result.result == "unchanged"
    try:
        result.hub_version = check_health(hub, result.env, namespace=ns, release=name, env=env,
                                          timeout=options.health_timeout or hub.repo.settings.health_check_timeout,
                                          kube_context=context, logger=logger)
    except HealthCheckError as exc:
        reason = exc.message
        if unchanged:
            result.result = "failed"
            raise HealthCheckError(f"{name}: health check failed on revision {result.revision_after}, which already "
                                   f"ran this configuration (nothing was changed or rolled back): {reason}") from None
        result.result = "rolled-back" if result.revision_before else "failed"
        if result.revision_before is not None:
            logger.warning("health check of %s failed (%s); rolling back to revision %s",
                           name, reason, result.revision_before)
            try:
                rollback(executable, name, ns, result.revision_before, env=env, kube_context=context,
                         timeout=options.flags.timeout)
            except CommandError as failed:
                result.result = "failed"
                raise DeployError(f"{name}: health check failed ({reason}) and the rollback to revision "
                                  f"{result.revision_before} failed too: {_last_line(failed.stderr_tail)}",
                                  hint=f"roll back by hand: helm rollback {name} {result.revision_before} -n {ns}"
                                  ) from None
            after = helm.last_deployed(release_history(executable, name, ns, env=env, kube_context=context))
            result.revision_after = after.revision if after else None
            raise HealthCheckError(f"{name}: health check failed, rolled back to revision "
                                   f"{result.revision_before}: {reason}") from None
        logger.warning("health check of %s failed (%s); uninstalling the failed first install", name, reason)
        uninstall(executable, name, ns, env=env, kube_context=context)
        result.revision_after = None
        raise HealthCheckError(f"{name}: health check failed on the first install, which was removed: {reason}"
                               ) from None


_STATUS_LINE = re.compile(r"^STATUS: (\S+)\s*$")
_REVISION_LINE = re.compile(r"^REVISION: (\d+)\s*$")


def deployed_revision(upgrade_stdout: str) -> int | None:
    """The revision a successful ``helm upgrade`` reports (its STATUS/REVISION lines, before the chart's
    NOTES), when it says ``deployed``; None when the output does not say (then read the history)."""
    status = revision = None
    for line in upgrade_stdout.splitlines():
        if line.startswith("NOTES:"):
            break
        if status is None and (m := _STATUS_LINE.match(line)):
            status = m.group(1)
        if revision is None and (m := _REVISION_LINE.match(line)):
            revision = int(m.group(1))
    return revision if status == "deployed" else None


def _utcnow() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


# --- step 1: chart dependencies ----------------------------------------------------------------------

def _dependency_fingerprint(chart: Path) -> str | None:
    """Hash of Chart.yaml, Chart.lock and the charts/ listing; None if the chart has no dependencies."""
    chart_yaml = chart / "Chart.yaml"
    try:
        meta = yaml.safe_load(chart_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DeployError(f"cannot read {chart_yaml}: {exc}") from None
    if not meta.get("dependencies"):
        return None
    digest = hashlib.sha256(chart_yaml.read_bytes())
    lock = chart / "Chart.lock"
    digest.update(lock.read_bytes() if lock.is_file() else b"no lock")
    charts = chart / "charts"
    for entry in sorted(charts.iterdir()) if charts.is_dir() else []:
        if entry.name != DEPS_STAMP:
            digest.update(f"{entry.name}:{entry.stat().st_size}\n".encode())
    return digest.hexdigest()


def update_dependencies(executable: str, chart: Path, *, env: Mapping[str, str], logger: Logger = log) -> bool:
    """``helm dependency update`` unless nothing changed since the last one; True if it ran."""
    with _dependency_locks_guard:
        lock = _dependency_locks.setdefault(chart, threading.Lock())
    with lock:
        fingerprint = _dependency_fingerprint(chart)
        stamp = chart / "charts" / DEPS_STAMP
        if fingerprint is None or (stamp.is_file() and stamp.read_text().strip() == fingerprint):
            logger.debug("chart dependencies of %s unchanged; skipping helm dependency update", chart)
            return False
        logger.info("helm dependency update %s", chart)
        run(helm.dependency_update_argv(executable, str(chart)), env=env, cwd=chart)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(_dependency_fingerprint(chart) or "")
        return True


# --- step 2: secrets ------------------------------------------------------------------------------------

def sops_env(repo: DeploymentRepo, env: Mapping[str, str]) -> dict[str, str]:
    """sops's environment: ``env`` plus SOPS_AGE_KEY_FILE when the repo names an age key file."""
    key = repo.settings.secrets.age_key_file
    return {**env, "SOPS_AGE_KEY_FILE": str(repo.root / key)} if key else dict(env)


def _leaves(data: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(data, dict) and data:
        for key, value in data.items():
            yield from _leaves(value, (*prefix, str(key)))
    else:
        yield prefix, data


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def register_secret_values(secret_files: Sequence[Path], files: Mapping[Path, Path]) -> list[str]:
    """Every string in the decrypted secret values files, registered for redaction."""
    strings = []
    for path in secret_files:
        for _, value in _leaves(_load(files[path])):
            if isinstance(value, str):
                register_secret(value)
                strings.append(value)
    return strings


def values_digest(merged: Mapping[str, Any], secret_files: Sequence[Path], files: Mapping[Path, Path]) -> str:
    """sha256 of the merged values with every key set by a secret file replaced by a placeholder."""
    masked = json.loads(json.dumps(merged, default=str))
    for path in secret_files:
        for keys, _ in _leaves(_load(files[path])):
            target = masked
            for key in keys[:-1]:
                target = target.get(key) if isinstance(target, dict) else None
            if isinstance(target, dict) and keys and keys[-1] in target:
                target[keys[-1]] = SECRET_PLACEHOLDER
    text = json.dumps(masked, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def redact_rendered(text: str, secret_strings: Sequence[str]) -> str:
    """Rendered manifests without secrets: every Secret's data/stringData values and every secret string."""
    out: list[str] = []
    in_secret, in_data, data_indent = False, False, 0
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped == "---" or stripped.startswith("MANIFEST:"):
            in_secret, in_data = False, False
        elif indent == 0 and stripped.startswith("kind:"):
            in_secret = stripped.split(":", 1)[1].strip() == "Secret"
        elif in_data and stripped and indent <= data_indent:
            in_data = False
        if in_data and ":" in stripped:
            key = line.split(":", 1)[0]
            out.append(f"{key}: \"{REDACTED}\"")  # quoted: the output stays valid YAML
            continue
        if in_secret and stripped in ("data:", "stringData:"):
            in_data, data_indent = True, indent
        out.append(line)
    return redact("\n".join(out) + ("\n" if text.endswith("\n") else ""), secret_strings)


def _chart_values(chart: Path) -> dict[str, Any]:
    path = chart / "values.yaml"
    return _load(path) if path.is_file() else {}


# --- step 3: cluster access -------------------------------------------------------------------------

def classic_cluster_access(base_env: Mapping[str, str]) -> ClusterAccessProvider:
    """Credentials from the hub's key files (or the ambient KUBECONFIG), without Prefect blocks."""
    return lambda hub, env_name: cloud.cluster_access(hub, env_name, base_env=base_env)


# --- step 5 (after step 4's image check, below): namespace ----------------------------------------

def kubectl_argv(env: Mapping[str, str], kube_context: str | None, *args: str) -> list[str]:
    return [env.get("KUBECTL_EXECUTABLE", "kubectl"), *(["--context", kube_context] if kube_context else []), *args]


def ensure_namespace(namespace: str, *, env: Mapping[str, str], kube_context: str | None = None,
                     logger: Logger = log, terminating_timeout: float = 120.0) -> bool:
    """Create ``namespace`` unless it exists (helm 3 no longer does); True if it was created.

    A namespace still being deleted is waited for, then created again.
    """
    deadline = time.monotonic() + terminating_timeout
    while True:
        got = run(kubectl_argv(env, kube_context, "get", "namespace", namespace, "-o", "jsonpath={.status.phase}"),
                  env=env, check=False)
        if got.returncode != 0 and "NotFound" not in got.stderr:
            raise DeployError(f"cannot read namespace {namespace}: {_last_line(got.stderr)}")
        if got.returncode == 0 and got.stdout.strip() != "Terminating":
            return False
        if got.returncode != 0:
            break
        if time.monotonic() > deadline:
            raise DeployError(f"namespace {namespace} is still being deleted after {terminating_timeout:.0f} s",
                              hint=f"see `kubectl get namespace {namespace} -o yaml` for what blocks its deletion")
        logger.info("namespace %s is being deleted; waiting to create it again", namespace)
        time.sleep(1.0)
    logger.info("creating namespace %s", namespace)
    made = run(kubectl_argv(env, kube_context, "create", "namespace", namespace), env=env, check=False)
    if made.returncode != 0 and "AlreadyExists" not in made.stderr:
        raise DeployError(f"cannot create namespace {namespace}: {_last_line(made.stderr)}")
    return made.returncode == 0


def remove_namespace(namespace: str, *, env: Mapping[str, str], kube_context: str | None = None,
                     logger: Logger = log) -> None:
    """Delete a namespace this deploy created when nothing was deployed into it (best effort)."""
    logger.info("removing namespace %s, created for this deploy: nothing was deployed", namespace)
    run(kubectl_argv(env, kube_context, "delete", "namespace", namespace, "--wait=false"), env=env, check=False)


# --- step 4: images ---------------------------------------------------------------------------------------

def image_references(merged: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Every ``{name, tag}`` mapping in ``merged``: (dotted path, name, tag), in values order."""
    found: list[tuple[str, str, str]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            name, tag = node.get("name"), node.get("tag")
            if isinstance(name, str) and name and "tag" in node:
                found.append((path, name, "" if tag is None else str(tag)))
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{path}[{index}]")

    walk(merged, "")
    return found


def hub_key_file_credentials(hub: Hub, env: Mapping[str, str]) -> RegistryCredentialsFor:
    """Credentials from the key files of the hub's ``images.registry`` (no Prefect blocks), or None."""
    registry = hub.config.images.registry if hub.config.images else None

    def for_host(host: str) -> RegistryCredentials | None:
        if registry is None or getattr(registry.settings, "credentials_block", None):
            return None
        return credentials_from_key_files(hub, host, env)
    return for_host


def registry_image_digest(env: Mapping[str, str], credentials_for: RegistryCredentialsFor | None = None, *,
                          client: httpx.Client | None = None) -> ImageDigest:
    """Manifest lookups: HUBPLOY_REGISTRY* credentials for that host, else anonymous; when a registry
    refuses (401/403), ``credentials_for(host)`` once per host (a registry login can be slow).
    Thread-safe; ``client`` (shared by the lookups) saves a TLS setup and connection per image."""
    logins: dict[str, RegistryCredentials | None] = {}
    login_lock = threading.Lock()
    shared = {"client": client} if client is not None else {}

    def lookup(name: str, tag: str) -> str | None:
        host, _ = split_repository(name)
        creds = logins.get(host) or credentials_from_env(host, env)
        try:
            return manifest_digest(name, tag, creds, **shared)
        except RegistryError as exc:
            if exc.status not in (401, 403) or credentials_for is None:
                raise
            with login_lock:
                if host not in logins:
                    logins[host] = credentials_for(host)
                elif logins[host] is None or logins[host] is creds:
                    raise  # refused with the host's login too (a concurrent lookup's login is used below)
        if logins[host] is None:
            raise RegistryError(f"registry {host} refused anonymous access to {name}:{tag} and the hub "
                                "configures no credentials for it", status=401,
                                hint="set images.registry in hubploy.yaml, or HUBPLOY_REGISTRY_USERNAME/PASSWORD")
        return manifest_digest(name, tag, logins[host], **shared)
    return lookup


def check_images(merged: Mapping[str, Any], image_digest: ImageDigest, *, logger: Logger = log) -> list[ImageRef]:
    """Look up every image of the merged values; refuse the deploy naming each missing one."""
    refs: list[ImageRef] = []
    missing: list[str] = []
    found = image_references(merged)
    wanted = list(dict.fromkeys((name, tag) for _, name, tag in found if tag))
    # Distinct images are looked up concurrently; results (and the first error) are taken in values order.
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(wanted)))) as pool:
        lookups = {key: pool.submit(image_digest, *key) for key in wanted}
        seen = {key: lookups[key].result() for key in wanted}
    for path, name, tag in found:
        if not tag:
            missing.append(f"{name} at {path} has no tag")
            continue
        digest = seen[(name, tag)]
        if digest is None:
            missing.append(f"{name}:{tag} (at {path})")
        refs.append(ImageRef(path, name, tag, digest))
    if missing:
        raise DeployError("image(s) not found in their registry, refusing to deploy: " + "; ".join(missing),
                          hint="build and push them first (`hubploy build <hub> --push`), or fix the tag")
    logger.info("images present: %s", ", ".join(sorted({f"{r.reference}@{r.digest}" for r in refs})) or "none")
    return refs


# --- step 6: unchanged releases ----------------------------------------------------------------------------

CONFIG_STAMP_PREFIX = "hubploy config sha256:"


def config_digest(prepared: PreparedValues, release: str, namespace: str, version: str | None) -> str:
    """sha256 of everything that decides what helm deploys: every file of the chart, the merged values
    (secrets included: helm stores them in the release anyway), the ``--set`` arguments, release,
    namespace and chart version. Comments and key order in values files do not count."""
    digest = hashlib.sha256()
    for path in sorted(p for p in prepared.chart.rglob("*") if p.is_file() and p.name != DEPS_STAMP):
        digest.update(f"{path.relative_to(prepared.chart)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    described = {"values": prepared.merged, "set": prepared.plan.set_args, "set-string": prepared.plan.set_string_args,
                 "release": release, "namespace": namespace, "version": version}
    digest.update(json.dumps(described, sort_keys=True, separators=(",", ":"), default=str).encode())
    return digest.hexdigest()


def config_stamp(digest: str) -> str:
    """What a revision's helm description carries, so a later deploy can tell it is unchanged."""
    return CONFIG_STAMP_PREFIX + digest


# --- step 7: release state, recovery and rollback -----------------------------------------------------------

def release_history(executable: str, name: str, namespace: str, *, env: Mapping[str, str],
                    kube_context: str | None = None) -> list[helm.Revision]:
    """``helm history`` of the release, oldest first; [] when it does not exist."""
    out = run(helm.history_argv(executable, name, namespace, kube_context=kube_context), env=env, check=False)
    if out.returncode != 0:
        if helm.is_release_not_found(out.stderr):
            return []
        raise DeployError(f"cannot read the history of release {name}: {_last_line(out.stderr)}")
    return helm.parse_history(out.stdout)


def rollback(executable: str, name: str, namespace: str, revision: int, *, env: Mapping[str, str],
             kube_context: str | None = None, timeout: str | None = DEFAULT_TIMEOUT) -> None:
    """``helm rollback --wait`` to ``revision`` (0: the previous one)."""
    run(helm.rollback_argv(executable, name, namespace, revision, timeout=timeout, kube_context=kube_context),
        env=env)


def uninstall(executable: str, name: str, namespace: str, *, env: Mapping[str, str],
              kube_context: str | None = None) -> None:
    run(helm.uninstall_argv(executable, name, namespace, kube_context=kube_context), env=env)


def recover_stuck_release(executable: str, name: str, namespace: str, *, env: Mapping[str, str],
                          kube_context: str | None = None, timeout: str | None = DEFAULT_TIMEOUT,
                          logger: Logger = log, history: Sequence[helm.Revision] | None = None) -> list[str]:
    """Bring a release that an interrupted or failed run left behind back to an upgradable state.

    - pending-install/upgrade/rollback ("another operation is in progress"): roll back to the last
      deployed revision, or uninstall when there never was one;
    - failed with no deployed revision (hubploy#25, "has no deployed releases"): uninstall, so that
      the upgrade that follows is a fresh install.

    Call it only while holding the release lock: a pending status may be another run's live upgrade.
    ``history`` saves reading it again when the caller just did. Returns one line per action taken.
    """
    if history is None:
        history = release_history(executable, name, namespace, env=env, kube_context=kube_context)
    if not history:
        return []
    latest = history[-1]
    deployed = helm.last_deployed(history)
    actions: list[str] = []
    if latest.status in helm.PENDING_STATUSES:
        if deployed is not None:
            line = (f"release {name} is stuck in {latest.status} at revision {latest.revision} (another operation "
                    f"is in progress, left by an interrupted run): rolling back to revision {deployed.revision}, "
                    "the last deployed one")
            logger.warning(line)
            rollback(executable, name, namespace, deployed.revision, env=env, kube_context=kube_context,
                     timeout=timeout)
        else:
            line = (f"release {name} is stuck in {latest.status} with no deployed revision (an interrupted "
                    "first install): uninstalling it before installing again")
            logger.warning(line)
            uninstall(executable, name, namespace, env=env, kube_context=kube_context)
        actions.append(line)
    elif deployed is None and latest.status == "failed":
        line = (f"release {name} has only failed revisions (a failed first install): uninstalling it and "
                "retrying the install")
        logger.warning(line)
        uninstall(executable, name, namespace, env=env, kube_context=kube_context)
        actions.append(line)
    return actions


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: registry 5xx/429/no answer, or a command that failed on the network or a busy API."""
    if isinstance(exc, HealthCheckError | CommandTimeoutError):
        return False
    if isinstance(exc, RegistryError):
        return exc.transient
    text = (exc.stderr_tail if isinstance(exc, CommandError) else str(exc)).lower()
    return isinstance(exc, CommandError | DeployError) and any(m in text for m in _TRANSIENT_MARKERS)

