"""A helm chart as hubploy reads it, from a chart directory or a packaged ``.tgz``: its metadata
(Chart.yaml), default values (values.yaml), values schema (values.schema.json) and dependencies; and
digests of a chart's content that stay the same when helm packages the same files again (a ``.tgz``
holds the time it was made, so its bytes change on every ``helm dependency update``).

Which chart serves a dependency: a ``file://`` dependency is read from its directory (what the next
``helm dependency update`` packages), any other from the package ``helm dependency update`` left in
``charts/``. A ``file://`` path must stay inside the deployment repository.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tarfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from hubploy import helm
from hubploy.config.base import inside
from hubploy.config.loader import MAX_YAML_BYTES, decode_text, load_yaml, parse_checked
from hubploy.errors import ConfigError, ConfigIssue
from hubploy.runner import run

log = logging.getLogger("hubploy.charts")

STAMP_PREFIX = ".hubploy-"  # files hubploy writes into charts/ (not part of the chart)
MAX_PACKAGE_BYTES = 64 * 2**20
FILE_SCHEME = "file://"


@dataclass(frozen=True)
class Dependency:
    """One entry of Chart.yaml's ``dependencies``."""

    name: str
    version: str = ""
    repository: str = ""
    alias: str | None = None
    condition: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The key of its values in the parent's values (its alias, else its name)."""
        return self.alias or self.name

    def local_dir(self, chart_dir: Path) -> Path | None:
        """The directory of a ``file://`` dependency, resolved from the parent chart's directory."""
        if not self.repository.startswith(FILE_SCHEME):
            return None
        return (chart_dir / self.repository[len(FILE_SCHEME) :]).resolve()

    def enabled(self, values: Mapping[str, Any]) -> bool:
        """helm's rule: the first ``condition`` path that holds a boolean decides; else any of its
        ``tags`` set true under ``tags:`` enables it, all false disable it; else it is enabled."""
        for path in (self.condition or "").split(","):
            found = _dig(values, path.strip().split(".")) if path.strip() else None
            if isinstance(found, bool):
                return found
        tags = values.get("tags")
        flags = [tags.get(tag) for tag in self.tags] if isinstance(tags, dict) else []
        flags = [flag for flag in flags if isinstance(flag, bool)]
        return any(flags) if flags else True


def _dig(values: Any, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(values, Mapping) or key not in values:
            return None
        values = values[key]
    return values


@dataclass(frozen=True)
class Chart:
    """A chart's metadata, default values, schema and the charts found in its ``charts/``."""

    source: str  # where it was read from, for messages
    name: str
    version: str
    dependencies: tuple[Dependency, ...] = ()
    values: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] | None = None
    packaged: tuple[Chart, ...] = ()  # the charts in its charts/ directory


def _load(raw: bytes, where: str, name: str) -> Any:
    path = Path(where) / name
    text, issues = decode_text(path, raw)
    data, _, more = parse_checked(text, path) if text is not None else (None, {}, [])
    if issues or more:
        raise ConfigError(issues + more)
    return data


def _chart(files: Mapping[str, bytes], packaged: tuple[Chart, ...], where: str) -> Chart:
    if "Chart.yaml" not in files:
        raise ConfigError([ConfigIssue(Path(where), "", "not a chart: no Chart.yaml")])
    meta = _load(files["Chart.yaml"], where, "Chart.yaml")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise ConfigError([ConfigIssue(Path(where) / "Chart.yaml", "name", "a chart needs a name")])
    values = _load(files["values.yaml"], where, "values.yaml") if "values.yaml" in files else None
    if values is not None and not isinstance(values, dict):
        raise ConfigError(
            [ConfigIssue(Path(where) / "values.yaml", "", "the chart's values must be a mapping")]
        )
    schema = None
    if "values.schema.json" in files:
        try:
            schema = json.loads(files["values.schema.json"])
        except ValueError as exc:
            raise ConfigError(
                [
                    ConfigIssue(
                        Path(where) / "values.schema.json",
                        "",
                        f"the chart's values schema is not JSON: {exc}",
                    )
                ]
            ) from None
    requirements = meta
    if meta.get("apiVersion") == "v1" and "requirements.yaml" in files:  # a helm 2 era chart
        requirements = _load(files["requirements.yaml"], where, "requirements.yaml") or {}
    return Chart(
        where,
        meta["name"],
        str(meta.get("version", "")),
        _dependencies(requirements, where),
        values or {},
        schema,
        packaged,
    )


def _dependencies(meta: Mapping[str, Any], where: str) -> tuple[Dependency, ...]:
    found = []
    for index, entry in enumerate(meta.get("dependencies") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(
                [
                    ConfigIssue(
                        Path(where) / "Chart.yaml", f"dependencies[{index}]", "a dependency needs a name"
                    )
                ]
            )
        tags = entry.get("tags") or []
        found.append(
            Dependency(
                entry["name"],
                str(entry.get("version") or ""),
                str(entry.get("repository") or ""),
                entry.get("alias"),
                entry.get("condition"),
                tuple(str(t) for t in tags) if isinstance(tags, list) else (),
            )
        )
    return tuple(found)


_READ = ("Chart.yaml", "requirements.yaml", "values.yaml", "values.schema.json")
_LOCKS = ("Chart.lock", "requirements.yaml", "requirements.lock")


def read_chart(path: Path) -> Chart:
    """The chart at ``path``: a chart directory or a packaged ``.tgz``."""
    return _read_package(path.read_bytes(), str(path)) if path.is_file() else _read_dir(path)


def _read_dir(path: Path) -> Chart:
    files = {}
    for name in _READ:
        file = path / name
        if file.is_file():
            if file.stat().st_size > MAX_YAML_BYTES:
                raise ConfigError(
                    [ConfigIssue(file, "", f"file is larger than {MAX_YAML_BYTES // 2**20} MiB")]
                )
            files[name] = file.read_bytes()
    charts = path / "charts"
    packaged = (
        tuple(
            read_chart(sub)
            for sub in sorted(charts.iterdir())
            if sub.suffix == ".tgz" or (sub / "Chart.yaml").is_file()
        )
        if charts.is_dir()
        else ()
    )
    return _chart(files, packaged, str(path))


def _members(data: bytes, where: str) -> Iterator[tuple[PurePosixPath, bytes]]:
    """(path inside the chart, content) of each regular file of a chart package."""
    if len(data) > MAX_PACKAGE_BYTES:
        raise ConfigError(
            [ConfigIssue(Path(where), "", f"chart package is larger than {MAX_PACKAGE_BYTES // 2**20} MiB")]
        )
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive:
                if member.isfile() and member.size <= MAX_PACKAGE_BYTES:
                    handle = archive.extractfile(member)
                    if handle is not None:
                        parts = PurePosixPath(member.name).parts
                        yield (
                            PurePosixPath(*parts[1:]) if len(parts) > 1 else PurePosixPath(member.name),
                            handle.read(),
                        )
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ConfigError([ConfigIssue(Path(where), "", f"not a readable chart package: {exc}")]) from None


def _read_package(data: bytes, where: str) -> Chart:
    files: dict[str, bytes] = {}
    nested: dict[str, dict[str, bytes]] = {}
    packages: list[tuple[str, bytes]] = []
    for path, content in _members(data, where):
        parts = path.parts
        if len(parts) == 1 and parts[0] in _READ:
            files[parts[0]] = content
        elif len(parts) == 2 and parts[0] == "charts" and parts[1].endswith(".tgz"):
            packages.append((parts[1], content))
        elif len(parts) == 3 and parts[0] == "charts" and parts[2] in _READ:
            nested.setdefault(parts[1], {})[parts[2]] = content
    packaged = [_read_package(content, f"{where}!charts/{name}") for name, content in sorted(packages)]
    packaged += [_chart(sub, (), f"{where}!charts/{name}") for name, sub in sorted(nested.items())]
    return _chart(files, tuple(packaged), where)


def dependency_charts(chart: Chart, root: Path) -> dict[str, Chart | None]:
    """The chart serving each dependency of ``chart``, by its values key: a ``file://`` dependency of a
    chart directory from its directory, any other from the chart's charts/ (None when no ``helm
    dependency update`` has fetched it yet)."""
    chart_dir = Path(chart.source)
    found: dict[str, Chart | None] = {}
    for dependency in chart.dependencies:
        local = local_dependency_dir(chart_dir, dependency, root) if chart_dir.is_dir() else None
        if local is not None:
            found[dependency.key] = read_chart(local)
            continue
        found[dependency.key] = next(
            (
                c
                for c in chart.packaged
                if c.name == dependency.name
                and (c.version == dependency.version or not _exact(dependency.version))
            ),
            None,
        )
    return found


def _exact(version: str) -> bool:
    """Whether a dependency's version is one exact version (not a range such as ``~4.4`` or ``>=4``)."""
    return bool(re.fullmatch(r"v?\d+(\.\d+){0,2}([-+][\w.-]+)?", version))


def local_dependency_dir(chart_dir: Path, dependency: Dependency, root: Path) -> Path | None:
    """The directory of a ``file://`` dependency; ConfigError when it is outside the repository."""
    local = dependency.local_dir(chart_dir)
    if local is None:
        return None
    if not inside(local, root):
        raise ConfigError(
            [
                ConfigIssue(
                    chart_dir / "Chart.yaml",
                    "dependencies",
                    f"dependency {dependency.name}'s {dependency.repository} resolves "
                    f"outside the repository (to {local})",
                    hint="a file:// dependency must live in the deployment repository",
                )
            ]
        )
    if not (local / "Chart.yaml").is_file():
        raise ConfigError(
            [
                ConfigIssue(
                    chart_dir / "Chart.yaml",
                    "dependencies",
                    f"dependency {dependency.name}'s {dependency.repository} is not a "
                    f"chart directory (no {local}/Chart.yaml)",
                )
            ]
        )
    return local


# --- digests ---------------------------------------------------------------------------------------------


def content_digest(path: Path) -> str:
    """sha256 of a chart's files (a directory or a package), by their paths inside the chart and their
    bytes: the same for the same files however often helm packaged them. Packages found inside are
    counted by their content too; files hubploy writes (``.hubploy-*``) are left out."""
    digest = hashlib.sha256()
    for name, content in sorted(_files(path)):
        digest.update(f"{name}\0".encode())
        digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()


def _files(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_file():
        for member, content in _members(path.read_bytes(), str(path)):
            yield str(member), _package_digest(member.name, content, str(path))
        return
    for file in path.rglob("*"):
        if file.is_file() and not file.name.startswith(STAMP_PREFIX):
            relative = file.relative_to(path).as_posix()
            yield (
                relative,
                (
                    _package_digest(file.name, file.read_bytes(), str(file))
                    if file.suffix == ".tgz"
                    else file.read_bytes()
                ),
            )


def _package_digest(name: str, content: bytes, where: str) -> bytes:
    """A nested package stands for its files; any other file for its bytes."""
    if not name.endswith(".tgz"):
        return content
    digest = hashlib.sha256()
    for member, data in sorted(_members(content, where)):
        digest.update(f"{member}\0".encode())
        digest.update(hashlib.sha256(_package_digest(member.name, data, where)).digest())
    return digest.hexdigest().encode()


# --- fetching dependencies ------------------------------------------------------------------------------

DEPS_STAMP = ".hubploy-dependencies.sha256"
_UNREACHABLE = re.compile(r'Unable to get an update from the "([^"]+)" chart repository:\s*\n\s*(.+)')
_dependency_locks: dict[Path, threading.Lock] = {}
_dependency_locks_guard = threading.Lock()


def dependency_fingerprint(chart_dir: Path, root: Path) -> str | None:
    """Hash of Chart.yaml, its lock (and a helm 2 chart's requirements), the charts/ listing and the
    content of every ``file://`` dependency (an edit there must reach charts/); None when the chart has
    no dependencies."""
    chart = read_chart(chart_dir)
    if not chart.dependencies:
        return None
    digest = hashlib.sha256((chart_dir / "Chart.yaml").read_bytes())
    for name in _LOCKS:
        lock = chart_dir / name
        digest.update(lock.read_bytes() if lock.is_file() else f"no {name}".encode())
    charts = chart_dir / "charts"
    for entry in sorted(charts.iterdir()) if charts.is_dir() else []:
        if not entry.name.startswith(STAMP_PREFIX):
            digest.update(f"{entry.name}:{entry.stat().st_size}\n".encode())
    for dependency in chart.dependencies:
        local = local_dependency_dir(chart_dir, dependency, root)
        if local is not None:
            digest.update(f"{dependency.key}:{content_digest(local)}\n".encode())
    return digest.hexdigest()


def update_dependencies(
    executable: str,
    chart_dir: Path,
    *,
    root: Path,
    env: Mapping[str, str],
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
) -> bool:
    """``helm dependency update`` unless nothing changed since the last one; True if it ran. A
    repository that cannot be reached is a ConfigError naming it and the cause."""
    with _dependency_locks_guard:
        lock = _dependency_locks.setdefault(chart_dir, threading.Lock())
    with lock:
        fingerprint = dependency_fingerprint(chart_dir, root)
        stamp = chart_dir / "charts" / DEPS_STAMP
        if fingerprint is None or (stamp.is_file() and stamp.read_text().strip() == fingerprint):
            logger.debug("chart dependencies of %s unchanged; skipping helm dependency update", chart_dir)
            return False
        logger.info("helm dependency update %s", chart_dir)
        done = run(
            helm.dependency_update_argv(executable, str(chart_dir)), env=env, cwd=chart_dir, check=False
        )
        if done.returncode != 0:
            raise ConfigError(
                _fetch_issues(chart_dir, read_chart(chart_dir), done.stdout + "\n" + done.stderr)
            )
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(dependency_fingerprint(chart_dir, root) or "")
        return True


def _fetch_issues(chart_dir: Path, chart: Chart, output: str) -> list[ConfigIssue]:
    """One issue per dependency whose repository helm could not reach (with helm's cause), else one
    naming helm's error and the remote repositories."""
    _, lines, _ = load_yaml(chart_dir / "Chart.yaml")
    causes = {url.rstrip("/"): cause.strip() for url, cause in _UNREACHABLE.findall(output)}
    error = next(
        (line.strip() for line in reversed(output.splitlines()) if line.startswith("Error:")),
        output.strip().splitlines()[-1] if output.strip() else "no output",
    )
    issues = []
    for index, dependency in enumerate(chart.dependencies):
        cause = causes.get(dependency.repository.rstrip("/"))
        if cause is not None:
            issues.append(
                ConfigIssue(
                    chart_dir / "Chart.yaml",
                    f"dependencies[{index}].repository",
                    f"cannot fetch {dependency.name} {dependency.version} from chart "
                    f"repository {dependency.repository}: {cause}",
                    line=lines.get(("dependencies", index, "repository")),
                    hint="check the repository URL and that it can be reached from here",
                )
            )
    if issues:
        return issues
    remote = sorted({d.repository for d in chart.dependencies if not d.repository.startswith(FILE_SCHEME)})
    return [
        ConfigIssue(
            chart_dir / "Chart.yaml",
            "dependencies",
            f"helm dependency update failed: {error}"
            + (f" (chart repositories: {', '.join(remote)})" if remote else ""),
            line=lines.get(("dependencies",)),
        )
    ]
