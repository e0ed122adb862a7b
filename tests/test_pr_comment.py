"""The pull request comment's body (hubploy.pr_comment): every section, the wording of each release's
state, redaction of secrets, collapsing and the bound below GitHub's limit. Pure: no helm, no cluster."""

from __future__ import annotations

import base64
import re
import secrets

import yaml

from hubploy.config.repo_settings import RolloutSettings
from hubploy.deploy.prepare import secret_strings_at
from hubploy.manifest_diff import document_key
from hubploy.planner import HubPlan, Plan
from hubploy.pr_comment import (
    COLLAPSE_LINES,
    MARKER,
    MAX_BODY,
    BuildResult,
    ImageBuild,
    PrReview,
    ReleaseReview,
    ReleaseState,
    comment_body,
    review_release,
)
from hubploy.render import Rendered
from hubploy.runner import REDACTED, register_secret

SHA = "0123456789abcdef" * 2 + "01234567"
CHECKSUM = ("spec", "template", "metadata", "annotations", "checksum/secret")


def _manifest(course: str, token: str, checksum: str, *, hook: bool = False) -> str:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hub", "namespace": "h-staging"},
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "hub", "namespace": "h-staging"},
        "spec": {
            "template": {
                "metadata": {"annotations": {"checksum/secret": checksum}},
                "spec": {
                    "containers": [
                        {
                            "name": "hub",
                            "env": [
                                {"name": "COURSE", "value": course},
                                {"name": "API_TOKEN", "value": token},
                            ],
                        }
                    ]
                },
            }
        },
    }
    docs = [secret, deployment]
    if hook:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "pull", "annotations": {"helm.sh/hook": "pre-install"}},
            }
        )
    return "".join("---\n" + yaml.safe_dump(d) for d in docs)


def _rendered(manifest: str) -> Rendered:
    key = document_key(yaml.safe_load(manifest.split("---\n")[2]))
    return Rendered(manifest, frozenset({(key, CHECKSUM)}))


def test_an_unchanged_release_says_no_change_though_the_chart_generated_new_values() -> None:
    running = _manifest("physics-100", "tok-" + secrets.token_hex(8), "aaaa")
    rendered = _rendered(running.replace("aaaa", "bbbb"))
    review = review_release("h", "staging", "h-staging", running, rendered, [])
    assert review == ReleaseReview("h", "staging", "h-staging", ReleaseState.unchanged)


def test_no_release_is_not_deployed_yet_and_says_what_a_first_deploy_creates() -> None:
    rendered = _rendered(_manifest("physics-100", "tok", "aaaa", hook=True))
    review = review_release("h", "prod", "h-prod", None, rendered, [])
    assert (review.state, review.diff) == (ReleaseState.not_deployed, "")
    assert review.message == "a first deploy creates 2 resources"  # the hook is no resource of the release


def test_a_change_shows_its_lines_and_no_secret_of_either_side() -> None:
    old_token, new_token = "old-" + secrets.token_hex(8), "new-" + secrets.token_hex(8)
    running = _manifest("physics-100", old_token, "aaaa")
    rendered = _rendered(_manifest("physics-101", new_token, "bbbb"))
    review = review_release("h", "staging", "h-staging", running, rendered, [new_token, old_token])
    assert review.state is ReleaseState.changed
    assert "-          value: physics-100" in review.diff and "+          value: physics-101" in review.diff
    assert review.diff.startswith("--- h-staging running\n+++ this pull request")
    assert f"value: {REDACTED}" in review.diff  # the token in the Deployment, on both sides
    assert "token: sha256:" in review.diff  # the Secret's data, as digests
    assert "checksum/secret" not in review.diff  # generated on both sides: no change
    for token in (old_token, new_token):
        assert token not in review.diff and base64.b64encode(token.encode()).decode() not in review.diff


def test_secret_strings_at_the_secret_files_keys_of_a_running_release() -> None:
    running = {
        "jupyterhub": {
            "proxy": {"secretToken": "s3cret-one"},
            "hub": {"db": {"password": "pw-two", "user": {"n": "u3"}}},
            "singleuser": {"defaultUrl": "/lab"},
        }
    }
    paths = [("jupyterhub", "proxy", "secretToken"), ("jupyterhub", "hub", "db"), ("jupyterhub", "absent")]
    assert secret_strings_at(running, paths) == ["s3cret-one", "pw-two", "u3"]


def _fences_closed(body: str) -> bool:
    fence = None
    for line in body.splitlines():
        if line.startswith("```") and (fence is None or line == fence):
            fence = None if fence else line.removesuffix("diff")
    return fence is None


def _plan(*hubs: str) -> Plan:
    return Plan(
        tuple(
            HubPlan(h, (f"deployments/{h}/config/common.yaml",), ("image",) if h == "b" else ()) for h in hubs
        )
    )


def _changed(hub: str, env: str, lines: int, word: str = "x") -> ReleaseReview:
    diff = "\n".join(
        [
            "--- running",
            "+++ this pull request",
            "@@ -1 +1 @@",
            *[f"{'+-'[n % 2]}line {word} {n}" for n in range(lines)],
        ]
    )
    return ReleaseReview(hub, env, f"{hub}-{env}", ReleaseState.changed, diff=diff)


def _review(**overrides) -> PrReview:  # type: ignore[no-untyped-def]
    releases = (
        _changed("a", "staging", 4),
        ReleaseReview("a", "prod", "a-prod", ReleaseState.unchanged),
        ReleaseReview(
            "b",
            "staging",
            "b-staging",
            ReleaseState.not_deployed,
            message="a first deploy creates 9 resources",
        ),
        _changed("b", "prod", COLLAPSE_LINES + 5),
    )
    builds = (
        ImageBuild("b", "localhost:5000/b-user", "abc1234", BuildResult.built, "not in the registry"),
        ImageBuild("a", "localhost:5000/a-user", "def5678", BuildResult.skipped, "already in the registry"),
    )
    return PrReview(
        **{"sha": SHA, "plan": _plan("a", "b"), "builds": builds, "releases": releases, **overrides}
    )


def test_the_body_holds_every_section_in_order() -> None:
    body = comment_body(_review())
    assert body.startswith(MARKER + "\n### hubploy: valid for `0123456789ab`")
    assert f"Commit `{SHA}`. **Plan:** 2 hub(s): a, b" in body
    assert "| hub | why | images changed |" in body and "wave" not in body  # no rollout: no waves
    assert "| b | deployments/b/config/common.yaml | image |" in body
    assert "#### Validation\n\nNo problems found." in body
    assert "1 built, 1 skipped, 0 failed; a pull request's images are never pushed." in body
    assert "| b | `localhost:5000/b-user:abc1234` | built | not in the registry |" in body
    positions = [
        body.index(s)
        for s in (
            "#### Plan",
            "#### Validation",
            "#### Images",
            "#### Changes against what runs now",
            "**a**",
            "**b**",
        )
    ]
    assert positions == sorted(positions)


def test_each_release_is_worded_by_its_state_and_long_diffs_are_collapsed() -> None:
    body = comment_body(_review())
    assert "- staging (`a-staging`): changed, +2 −2 lines\n\n```diff\n--- running" in body
    assert "- prod (`a-prod`): no change" in body
    assert "- staging (`b-staging`): not deployed yet: a first deploy creates 9 resources" in body
    collapsed = re.search(
        r"<details><summary>prod \(<code>b-prod</code>\): changed, \+13 −12 lines</summary>"
        r"\n\n```diff\n(.*?)\n```\n\n</details>",
        body,
        re.DOTALL,
    )
    assert collapsed and collapsed.group(1).count("\n") == COLLAPSE_LINES + 5 + 2
    assert "<details>" not in body.split("**b**")[0]  # the short diff is shown as it is


def test_waves_are_shown_when_the_repository_has_a_rollout() -> None:
    rollout = RolloutSettings.model_validate({"waves": [{"name": "canary", "hubs": ["b"], "soak": "2m"}]})
    body = comment_body(_review(rollout=rollout))
    assert "| wave | hub | why | images changed |" in body
    rows = [line for line in body.splitlines() if line.startswith(("| 1.", "| 2."))]
    assert rows == [
        "| 1. canary (soak 120 s) | b | deployments/b/config/common.yaml | image |",
        "| 2. remaining | a | deployments/a/config/common.yaml | – |",
    ]


def test_validate_problems_are_listed_with_file_line_and_key_and_nothing_else_follows() -> None:
    problems = (
        "deployments/a/hubploy.yaml:2: images.no_such_key: Extra inputs are not permitted",
        "deployments/a/config/common.yaml:7: jupyterhub.hub.`x`: not allowed",
    )
    body = comment_body(PrReview(SHA, _plan("a"), problems=problems, failure="2 problems"))
    assert "### hubploy: failed for `0123456789ab`" in body and "**Failed:** 2 problems" in body
    assert "#### Validation\n\n2 problem(s):\n\n```\n" + "\n".join(problems) + "\n```" in body
    assert "#### Images" not in body and "#### Changes" not in body


def test_a_repository_that_cannot_be_planned_says_so() -> None:
    body = comment_body(PrReview(SHA, None, failure="hubploy-repo.yaml:3: chart: no such directory"))
    assert "**Plan:** none: the changes could not be planned" in body
    assert "**Failed:** hubploy-repo.yaml:3: chart: no such directory" in body


def test_nothing_to_deploy_has_no_tables() -> None:
    body = comment_body(PrReview(SHA, Plan(())))
    assert "nothing to deploy" in body and "####" not in body


def test_a_diff_with_backticks_keeps_its_code_block_closed() -> None:
    review = ReleaseReview(
        "a",
        "staging",
        "a-staging",
        ReleaseState.changed,
        diff="--- running\n+++ this pull request\n+  ```python\n+  ````",
    )
    body = comment_body(PrReview(SHA, _plan("a"), builds=(), releases=(review,)))
    assert "`````diff\n--- running" in body and "+  ````\n`````" in body
    assert "No images to build." in body


def test_registered_secrets_are_redacted_everywhere_in_the_body() -> None:
    token = "ghs_" + secrets.token_hex(12)
    register_secret(token)
    body = comment_body(
        PrReview(
            SHA,
            _plan("a"),
            failure=f"helm said {token}",
            problems=(f"deployments/a/secrets/staging.yaml:1: x: {token}",),
        )
    )
    assert token not in body and body.count(REDACTED) == 2


def test_text_that_could_break_the_markdown_is_escaped() -> None:
    builds = (ImageBuild("a", "r/a", "t", BuildResult.failed, "BuildError: <script> | step 2\nfailed"),)
    body = comment_body(PrReview(SHA, _plan("a"), builds=builds, releases=(), failure="1 image failed"))
    assert "| a | `r/a:t` | failed | BuildError: &lt;script&gt; \\| step 2 failed |" in body
    assert "0 built, 0 skipped, 1 failed" in body


def test_a_huge_review_fits_under_githubs_limit_with_every_release_named() -> None:
    releases = tuple(
        _changed(f"hub{n}", env, 3000, "y" * 20) for n in range(12) for env in ("staging", "prod")
    )
    small = _changed("tiny", "staging", 6)
    problems = tuple(f"deployments/x/config/common.yaml:{n}: k: bad" for n in range(500))
    body = comment_body(
        PrReview(
            SHA,
            _plan(*[f"hub{n}" for n in range(300)]),
            problems=problems,
            releases=(small, *releases),
            builds=(),
        )
    )
    assert len(body) <= MAX_BODY
    assert _fences_closed(body)
    assert small.diff in body  # a small diff fits in its share, whole
    for review in releases:
        assert f"<code>{review.release}</code>): changed, +1500 −1500 lines" in body
        assert (
            f"not shown (this comment has room for no more): `hubploy diff {review.hub} {review.env}`" in body
        )
    assert "… and 450 more problems" in body and "… and 250 more hubs" in body
    shown = [len(m) for m in re.findall(r"```diff\n(.*?)\n```", body, re.DOTALL)][1:]
    assert max(shown) - min(shown) < 200  # the long diffs share the room evenly
