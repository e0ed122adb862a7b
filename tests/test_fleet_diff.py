"""`hubploy diff`'s comparison of a running release with a render (hubploy/cli/fleet_commands.py)."""

from __future__ import annotations

from hubploy.cli.fleet_commands import resource_changes
from hubploy.manifest_diff import generated_fields

RUNNING = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: hub, namespace: h}
data: {token: running-random, setting: "1"}
"""


def _render(token: str, setting: str) -> str:
    return RUNNING.replace("running-random", token).replace('"1"', f'"{setting}"')


def test_values_the_chart_generates_at_random_are_no_change() -> None:
    first, second = _render("aaa", "1"), _render("bbb", "1")
    assert resource_changes(RUNNING, first, generated_fields(first, second)) == []


def test_a_changed_setting_is_a_change_even_beside_generated_values() -> None:
    first, second = _render("aaa", "2"), _render("bbb", "2")
    [change] = resource_changes(RUNNING, first, generated_fields(first, second))
    assert (change.resource, change.kind) == ("ConfigMap/hub", "changed")
    assert "-  setting: '1'" in change.diff and "+  setting: '2'" in change.diff and "aaa" not in change.diff


def test_without_the_generated_fields_every_difference_shows() -> None:
    [change] = resource_changes(RUNNING, _render("aaa", "1"))
    assert "aaa" in change.diff
