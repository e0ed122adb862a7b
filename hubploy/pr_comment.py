"""The pull request's review surface: one markdown comment per pull request, which PR validation edits
in place on every push (it finds its comment again by :data:`MARKER`).

It holds the commit and the verdict, the plan (each hub and why, in the waves a rollout would deploy
them in when hubploy-repo.yaml has ``rollout``), validate's problems as ``file:line: key: message``,
the image builds (built, skipped or failed, and why), and for each hub and each of its environments
the diff of the pull request head's rendered manifests against the release running there now: Secret
data as digests, every secret string redacted, what the chart generates at random masked on both
sides (hubploy.manifest_diff), "no change" when there is none and "not deployed yet" when there is no
release. A long diff is collapsed in a ``<details>`` block; when the whole would not fit under
GitHub's limit (65536 characters), the diffs are cut, each to a fair share of the room left.

Pure: the flow (flows/pr_validation.py) gathers the parts, flows/tasks/render.py reads the releases,
flows/tasks/github_status.py posts or edits the comment.
"""

from __future__ import annotations

import enum
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from hubploy.config.repo_settings import RolloutSettings
from hubploy.manifest_diff import documents, is_hook, manifest_diff
from hubploy.planner import Plan
from hubploy.render import Rendered
from hubploy.rollout import plan_waves
from hubploy.runner import redact

MARKER = "<!-- hubploy:pr-validation -->"
MAX_BODY = 60_000  # characters; GitHub refuses a comment over 65536
COLLAPSE_LINES = 20  # a diff longer than this is collapsed
MAX_ROWS = 50  # rows of a table or list before "… and N more"
CUT_NOTE_ROOM = 200  # what the note of a cut diff takes, at most
CHANGES_LEGEND = (
    "The rendered manifests of this pull request against each release running now (`helm get "
    "manifest`): Secret data as digests, values the chart generates at random left out."
)


class ReleaseState(enum.StrEnum):
    """What a pull request would do to one hub's release in one environment."""

    changed = "changed"
    unchanged = "no change"
    not_deployed = "not deployed yet"
    not_rendered = "does not render"
    unreadable = "running release unreadable"


@dataclass(frozen=True)
class ReleaseReview:
    hub: str
    env: str
    release: str
    state: ReleaseState
    diff: str = ""  # changed: the unified diff of the normalized manifests, secrets redacted
    message: str = ""  # why (does not render, unreadable), or what a first deploy creates


class BuildResult(enum.StrEnum):
    built = "built"
    skipped = "skipped"
    failed = "failed"


@dataclass(frozen=True)
class ImageBuild:
    hub: str
    image: str
    tag: str
    result: BuildResult
    reason: str


@dataclass(frozen=True)
class PrReview:
    """Everything the comment says about one push of a pull request. ``plan``, ``builds`` and ``releases``
    are None when validation stopped before them; ``failure`` is why the validation failed, if it did."""

    sha: str
    plan: Plan | None
    rollout: RolloutSettings | None = None
    problems: tuple[str, ...] = ()  # validate's, each `file:line: key: message`
    builds: tuple[ImageBuild, ...] | None = None
    releases: tuple[ReleaseReview, ...] | None = None
    failure: str = ""


def review_release(
    hub: str,
    env_name: str,
    release: str,
    running: str | None,
    rendered: Rendered,
    secret_strings: Sequence[str],
) -> ReleaseReview:
    """Compare a render of the pull request head with the manifest of the release running now (None:
    no release). Every secret string (the checkout's and the running release's) is redacted."""
    if running is None:
        created = sum(not is_hook(doc) for doc in documents(rendered.manifest))
        return ReleaseReview(
            hub,
            env_name,
            release,
            ReleaseState.not_deployed,
            message=f"a first deploy creates {created} resources",
        )
    diff = manifest_diff(
        running,
        rendered.manifest,
        generated=rendered.generated,
        old_label=f"{release} running",
        new_label="this pull request",
    )
    if not diff:
        return ReleaseReview(hub, env_name, release, ReleaseState.unchanged)
    return ReleaseReview(hub, env_name, release, ReleaseState.changed, diff=redact(diff, secret_strings))


def comment_body(review: PrReview) -> str:
    """The comment's markdown: starts with :data:`MARKER`, at most :data:`MAX_BODY` characters, every
    registered secret redacted."""
    releases = review.releases or ()
    room = MAX_BODY - len(_body(review, [""] * len(releases))) - CUT_NOTE_ROOM * len(releases)
    shown = _fit([r.diff for r in releases], room)
    body = redact(_body(review, [_cut(r, size) for r, size in zip(releases, shown, strict=True)]))
    if len(body) > MAX_BODY:  # only with sections far beyond MAX_ROWS lines; never an open fence
        note = "\n\n… the rest of this comment is cut: it is too long for GitHub"
        body = _close_fences(body[: MAX_BODY - len(note) - 10]) + note
    return body


def _body(review: PrReview, diffs: list[str]) -> str:
    sections = [
        _heading(review),
        _plan(review),
        _validation(review),
        _images(review),
        _changes(review.releases, diffs),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def _heading(review: PrReview) -> list[str]:
    verdict = "failed" if review.failure else "valid"
    plan = review.plan.summary() if review.plan else "none: the changes could not be planned"
    lines = [
        MARKER,
        f"### hubploy: {verdict} for `{review.sha[:12]}`",
        "",
        f"Commit `{review.sha}`. **Plan:** {_text(plan)}",
    ]
    return lines + (["", f"**Failed:** {_text(review.failure)}"] if review.failure else [])


def _plan(review: PrReview) -> list[str]:
    if review.plan is None or review.plan.empty:
        return []
    reasons = {h.hub: h for h in review.plan.hubs}
    staged = review.rollout is not None
    lines = [
        "#### Plan",
        "",
        "| wave | hub | why | images changed |" if staged else "| hub | why | images changed |",
        "|---|---|---|---|" if staged else "|---|---|---|",
    ]
    rows = []
    for wave in plan_waves(review.plan.hub_names, review.rollout):
        for index, hub in enumerate(wave.hubs):
            why = reasons[hub].reasons
            cells = [
                hub,
                ", ".join(why[:3]) + (" …" if len(why) > 3 else ""),
                ", ".join(reasons[hub].images_changed) or "–",
            ]
            if staged:
                soak = f" (soak {wave.soak_seconds:g} s)" if wave.soak_seconds else ""
                cells.insert(0, f"{wave.number}. {wave.name}{soak}" if index == 0 else "")
            rows.append(_row(cells))
    return lines + _capped(rows, "hubs")


def _validation(review: PrReview) -> list[str]:
    if not review.problems:
        return ["#### Validation", "", "No problems found."] if review.releases is not None else []
    listed = _capped(list(review.problems), "problems", table=False)
    return ["#### Validation", "", f"{len(review.problems)} problem(s):", "", *_fenced("\n".join(listed))]


def _images(review: PrReview) -> list[str]:
    if review.builds is None:
        return []
    if not review.builds:
        return ["#### Images", "", "No images to build."]
    counts = ", ".join(f"{sum(b.result is r for b in review.builds)} {r.value}" for r in BuildResult)
    rows = [_row([b.hub, f"`{b.image}:{b.tag}`", b.result.value, b.reason]) for b in review.builds]
    return [
        "#### Images",
        "",
        f"{counts}; a pull request's images are never pushed.",
        "",
        "| hub | image | result | why |",
        "|---|---|---|---|",
        *_capped(rows, "images"),
    ]


def _changes(releases: tuple[ReleaseReview, ...] | None, diffs: list[str]) -> list[str]:
    if releases is None:
        return []
    lines = ["#### Changes against what runs now", "", CHANGES_LEGEND]
    hub = None
    for review, diff in zip(releases, diffs, strict=True):
        if review.hub != hub:
            hub = review.hub
            lines += ["", f"**{hub}**"]
        lines += ["", *_release(review, diff)]
    return lines


def _release(review: ReleaseReview, diff: str) -> list[str]:
    where = f"{review.env} (`{review.release}`)"
    if review.state is not ReleaseState.changed:
        detail = f": {_text(review.message)}" if review.message else ""
        return [f"- {where}: {review.state.value}{detail}"]
    added, removed = _counts(review.diff)
    summary = f"{review.state.value}, +{added} −{removed} lines"
    if len(review.diff.splitlines()) <= COLLAPSE_LINES:
        return [f"- {where}: {summary}", "", *_fenced(diff, "diff")]
    return [
        f"<details><summary>{review.env} (<code>{review.release}</code>): {summary}</summary>",
        "",
        *_fenced(diff, "diff"),
        "",
        "</details>",
    ]


def _counts(diff: str) -> tuple[int, int]:
    lines = [line for line in diff.splitlines() if not line.startswith(("+++ ", "--- "))]
    return sum(line.startswith("+") for line in lines), sum(line.startswith("-") for line in lines)


def _fit(texts: list[str], room: int) -> list[int]:
    """How many characters of each text fit in ``room``: all of each text that is shorter than an equal
    share, the rest split evenly among the longer ones."""
    allowed = [0] * len(texts)
    left = max(room, 0)
    for count, index in enumerate(sorted(range(len(texts)), key=lambda i: len(texts[i]))):
        allowed[index] = min(len(texts[index]), left // (len(texts) - count))
        left -= allowed[index]
    return allowed


def _cut(review: ReleaseReview, size: int) -> str:
    """The first whole lines of the release's diff within ``size`` characters, and a note when cut."""
    if size >= len(review.diff):
        return review.diff
    kept = review.diff[:size].rsplit("\n", 1)[0] if "\n" in review.diff[:size] else ""
    hidden = len(review.diff.splitlines()) - len(kept.splitlines())
    note = (
        f"… {hidden} more lines not shown (this comment has room for no more): "
        f"`hubploy diff {review.hub} {review.env}` shows them all"
    )
    return f"{kept}\n{note}" if kept else note


def _fenced(text: str, language: str = "") -> list[str]:
    """``text`` in a code block whose fence is longer than any run of backticks in it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + language, text, fence]


def _close_fences(text: str) -> str:
    """``text`` with a code block it leaves open closed."""
    open_fence = None
    for line in text.splitlines():
        match = re.match(r"(`{3,})", line)
        if match and (open_fence is None or line.strip() == open_fence):
            open_fence = None if open_fence else match.group(1)
    return text + f"\n{open_fence}" if open_fence else text


def _capped(rows: list[str], what: str, *, table: bool = True) -> list[str]:
    """The first :data:`MAX_ROWS` rows, and how many more there are (after a blank line that ends a table:
    GitHub would take the note for a row)."""
    if len(rows) <= MAX_ROWS:
        return rows
    return [*rows[:MAX_ROWS], *([""] if table else []), f"… and {len(rows) - MAX_ROWS} more {what}"]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(_text(cell).replace("|", "\\|") for cell in cells) + " |"


def _text(text: str) -> str:
    """Free text (an error message, a reason) on one markdown line, HTML escaped."""
    return html.escape(" ".join(text.split()), quote=False)
