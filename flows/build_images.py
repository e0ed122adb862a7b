"""Flow `build_images`: build (and push) the images of a set of hubs, concurrently up to a limit,
and publish the table artifact ``image-builds``: hub, image, tag, digest, built/skipped/failed, why.

Per image: the tag (git-derived, pinned, or a recorded rebuild tag); with ``check_registry`` a
manifest HEAD decides (present -> skipped, with its digest); with ``rebuild`` a new immutable tag
``<git tag>-r<UTC date>`` is built without cache. Registry credentials come from the hub's
``images.registry`` credentials block (prefect-docker DockerRegistryCredentials, or a per-cloud
block), else its key files, else HUBPLOY_REGISTRY_USERNAME/PASSWORD; they live in a temp auth file
for this run only. A failed image does not stop the others; the flow fails at the end, after the
artifact is published (unless ``raise_on_failure`` is off: PR validation reports failed images itself).
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import asdict, dataclass
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectConcurrentFuture, PrefectFuture

from blocks.resolve import BlockCredentials, credentials
from flows.tasks.docker_backend import select_backend
from flows.tasks.images import build_image, image_exists, image_tag, push_image
from hubploy.build import BuildBackend
from hubploy.errors import HubployError
from hubploy.images import git_tag, rebuild_tag
from hubploy.layout import Hub, ImageSpec, load_repo
from hubploy.registry import AuthFiles, RegistryCredentials, auth_files, split_repository
from hubploy.runner import child_env

ARTIFACT_KEY = "image-builds"


@dataclass
class ImageRow:
    hub: str
    image: str
    tag: str
    source_tag: str
    result: str  # built | skipped | failed
    reason: str
    digest: str = ""


@dataclass
class _Job:
    row: ImageRow
    spec: ImageSpec
    no_cache: bool


def _credentials(hubs: list[Hub], source: BlockCredentials) -> dict[str, RegistryCredentials]:
    found: dict[str, RegistryCredentials] = {}
    for hub in hubs:
        for host in sorted({split_repository(s.name)[0] for s in hub.images if s.path is not None}):
            if host not in found:
                creds = source.registry(hub, host)
                if creds is not None:
                    found[host] = creds
    return found


def _plan(
    hub: Hub,
    spec: ImageSpec,
    repo_path: str,
    creds: RegistryCredentials | None,
    *,
    check_registry: bool,
    rebuild: bool,
    no_cache: bool,
) -> _Job:
    tag = image_tag(repo_path, hub.name, spec)
    row = ImageRow(hub.name, spec.name, tag, tag, "skipped", "")
    if spec.path is None:
        row.reason = f"pinned to {tag} with no build dir"
    elif rebuild:
        row.source_tag = git_tag(hub.repo.root, spec)
        row.tag = rebuild_tag(row.source_tag, lambda t: image_exists(spec.name, t, creds) is not None)
        row.result, row.reason = "built", f"scheduled rebuild of {row.source_tag} without cache"
    elif check_registry:
        digest = image_exists(spec.name, tag, creds)
        if digest:
            row.digest, row.reason = digest, "already in the registry"
        else:
            row.result, row.reason = "built", "not in the registry"
    else:
        row.result, row.reason = "built", "registry check off: built unconditionally"
    return _Job(row, spec, no_cache or rebuild)


def _submit(
    job: _Job, backend: BuildBackend, repo_path: str, auth: AuthFiles | None, push: bool
) -> tuple[PrefectFuture, PrefectFuture | None]:
    built = build_image.submit(backend, repo_path, job.spec, job.row.tag, auth, job.no_cache)
    if not push:
        return built, None
    return built, push_image.submit(
        backend, f"{job.spec.name}:{job.row.tag}", auth, wait_for=[built], return_state=False
    )


def _finish(job: _Job, built: PrefectFuture, pushed: PrefectFuture | None) -> None:
    """Record the outcome; the build's own error wins over the push's "upstream failed"."""
    try:
        result = built.result()
        digest = pushed.result() if pushed is not None else None
    except Exception as exc:  # reported per image; the flow fails after the artifact
        job.row.result, job.row.reason = "failed", f"{type(exc).__name__}: {exc}"
        return
    if result.cache_from:
        job.row.reason += f"; cache from {result.cache_from}"
    if digest is None:
        job.row.reason += " (not pushed)"
    else:
        job.row.digest = str(digest)


def _run_limited(
    jobs: list[_Job], limit: int, backend: BuildBackend, repo_path: str, auth: AuthFiles | None, push: bool
) -> None:
    """Submit build(+push) pipelines, at most ``limit`` in flight."""
    pending: dict[concurrent.futures.Future, tuple[_Job, PrefectFuture, PrefectFuture | None]] = {}
    for job in jobs:
        while len(pending) >= limit:
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for key in done:
                _finish(*pending.pop(key))
        built, pushed = _submit(job, backend, repo_path, auth, push)
        # the flow's task runner is a thread pool, whose futures wrap concurrent.futures ones
        pending[cast(PrefectConcurrentFuture[Any], pushed or built).wrapped_future] = (job, built, pushed)
    for key in list(pending):
        _finish(*pending.pop(key))


def _markdown(rows: list[ImageRow]) -> str:
    counts = {r: sum(row.result == r for row in rows) for r in ("built", "skipped", "failed")}
    return f"Images: {counts['built']} built, {counts['skipped']} skipped, {counts['failed']} failed"


@flow(name="build-images", log_prints=True)
def build_images(
    hubs: list[str] | None = None,
    repo_path: str = ".",
    push: bool = True,
    check_registry: bool = True,
    no_cache: bool = False,
    max_concurrency: int = 2,
    rebuild: bool = False,
    raise_on_failure: bool = True,
) -> list[dict[str, Any]]:
    if max_concurrency < 1:
        raise HubployError(f"max_concurrency must be at least 1, not {max_concurrency}")
    logger = get_run_logger()
    repo = load_repo(repo_path)
    loaded = [repo.load_hub(name) for name in (hubs or repo.hub_names())]
    # Logins also without push: for private base images and cache pulls.
    logins = _credentials(loaded, credentials(repo, child_env()))
    backend = select_backend()
    with auth_files(logins.values()) as auth:
        jobs = [
            _plan(
                hub,
                spec,
                str(repo.root),
                logins.get(split_repository(spec.name)[0]),
                check_registry=check_registry,
                rebuild=rebuild,
                no_cache=no_cache,
            )
            for hub in loaded
            for spec in hub.images
        ]
        for job in jobs:
            logger.info(
                "%s:%s %s: %s",
                job.row.image,
                job.row.tag,
                "building" if job.row.result == "built" else "skipped",
                job.row.reason,
            )
        _run_limited(
            [j for j in jobs if j.row.result == "built"], max_concurrency, backend, str(repo.root), auth, push
        )
    rows = [job.row for job in jobs]
    create_table_artifact(key=ARTIFACT_KEY, table=[asdict(r) for r in rows], description=_markdown(rows))
    failed = [r for r in rows if r.result == "failed"]
    if failed and raise_on_failure:
        raise HubployError(
            f"{len(failed)} image(s) failed: " + "; ".join(f"{r.image}:{r.tag}: {r.reason}" for r in failed)
        )
    return [asdict(r) for r in rows]
