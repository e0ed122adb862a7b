"""Image checks: every ``{name, tag}`` of a deploy's merged values (that hubploy.yaml's ``image_check``
wants) must be in its registry before helm runs; lookups are anonymous first (registry v2 token auth,
as quay.io and Docker Hub use) and log in only where a registry refuses."""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypedDict

import httpx

from hubploy.config.models import ImageCheck
from hubploy.deploy.model import ImageDigest, ImageRef, Logger, RegistryCredentialsFor, log
from hubploy.errors import DeployError, RegistryError
from hubploy.registry import RegistryCredentials, manifest_digest, split_repository
from hubploy.registry_login import credentials_from_env

CHECK_ALL = ImageCheck()


class _SharedClient(TypedDict, total=False):
    client: httpx.Client  # given only when there is one to share


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


def registry_image_digest(
    env: Mapping[str, str],
    credentials_for: RegistryCredentialsFor | None = None,
    *,
    client: httpx.Client | None = None,
) -> ImageDigest:
    """Manifest lookups: HUBPLOY_REGISTRY* credentials for that host, else anonymous; when a registry
    refuses (401/403), ``credentials_for(host)`` once per host (a registry login can be slow).
    Thread-safe; ``client`` (shared by the lookups) saves a TLS setup and connection per image."""
    logins: dict[str, RegistryCredentials | None] = {}
    login_lock = threading.Lock()
    shared: _SharedClient = {"client": client} if client is not None else {}

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
            raise RegistryError(
                f"registry {host} refused anonymous access to {name}:{tag} and the hub "
                "configures no credentials for it",
                status=401,
                hint="set images.registry in hubploy.yaml, or HUBPLOY_REGISTRY_USERNAME/PASSWORD",
            )
        return manifest_digest(name, tag, logins[host], **shared)

    return lookup


def check_images(
    merged: Mapping[str, Any],
    image_digest: ImageDigest,
    *,
    logger: Logger = log,
    scope: ImageCheck = CHECK_ALL,
    built: Collection[str] = (),
) -> list[ImageRef]:
    """Look up every image of the merged values that ``scope`` (hubploy.yaml's ``image_check``) wants;
    ``built``: the image names hubploy.yaml declares. Refuse the deploy naming each missing image; an
    image whose registry cannot be asked is a RegistryError naming it, its registry and how to scope."""
    refs: list[ImageRef] = []
    missing: list[str] = []
    found = image_references(merged)
    wanted = list(
        dict.fromkeys((name, tag) for _, name, tag in found if tag and scope.wants(name, set(built)))
    )
    where = {(name, tag): path for path, name, tag in reversed(found)}
    # Distinct images are looked up concurrently; results (and the first error) are taken in values order.
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(wanted)))) as pool:
        lookups = {key: pool.submit(image_digest, *key) for key in wanted}
        seen = {key: _answer(lookups[key], *key, where[key]) for key in wanted}
    for path, name, tag in found:
        if not tag:
            missing.append(f"{name} at {path} has no tag")
            continue
        if (name, tag) not in seen:
            refs.append(ImageRef(path, name, tag, None, checked=False))
            continue
        digest = seen[(name, tag)]
        if digest is None:
            missing.append(f"{name}:{tag} (at {path})")
        refs.append(ImageRef(path, name, tag, digest))
    if missing:
        raise DeployError(
            "image(s) not found in their registry, refusing to deploy: " + "; ".join(missing),
            hint="build and push them first (`hubploy build <hub> --push`), or fix the tag",
        )
    present = sorted({f"{r.reference}@{r.digest}" for r in refs if r.checked})
    unchecked = sorted({r.reference for r in refs if not r.checked})
    logger.info("images present: %s", ", ".join(present) or "none")
    if unchecked:
        logger.info("images not looked up (image_check in hubploy.yaml): %s", ", ".join(unchecked))
    return refs


def _answer(lookup: Future[str | None], name: str, tag: str, path: str) -> str | None:
    """The digest a lookup found; its RegistryError told again with the image, the registry and how to
    scope the check."""
    try:
        return lookup.result()
    except RegistryError as exc:
        host, _ = split_repository(name)
        raise RegistryError(
            f"cannot check image {name}:{tag} (at {path}) in registry {host}: {exc.message}",
            status=exc.status,
            hint=(exc.hint + "; " if exc.hint else "") + f"or leave it out of the check in hubploy.yaml: "
            f"`image_check: {{skip: [{host}]}}`, or `image_check: {{only: built}}` for the images this "
            "repository builds",
        ) from None
