"""The documentation site cannot rot (issue 21, points 4 and 5).

* The site builds with warnings as errors and internal links checked (`scripts/docs`).
* The reference pages are generated from the code, and every configuration key, command, option and
  Prefect deployment has a description.
* Every `hubploy` command written in a shell block anywhere in the docs (the top-level Markdown files too)
  parses with the real argument parser; every hubploy.yaml / hubploy-repo.yaml example validates.
* The tutorial's and the how-to guides' runnable blocks run, in order per page, on the sandbox, in a
  temporary HOME and a copy of the example deployment repository, each exiting 0 and printing the
  lines the page says it prints (tests/helpers/doc_blocks.py explains the markers).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.cli import VENV_BIN
from helpers.doc_blocks import Page, hubploy_commands, missing_lines, parse_page
from helpers.doc_runner import BlockFailed, PageRunner
from helpers.example_repo import copy_example_repo
from helpers.stack import demo_hub_lock
from pydantic import BaseModel, Field

from hubploy.cli.main import COMMAND_MODULES, build_parser
from hubploy.config.models import HubConfig, RepoSettings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DOCS = PROJECT_ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

from hubploy_docs import generated_pages  # noqa: E402 (docs/_ext is on the path only now)
from hubploy_docs.cli_commands import commands  # noqa: E402 (docs/_ext is on the path only now)
from hubploy_docs.cli_commands import undescribed as undescribed_commands  # noqa: E402 (docs/_ext is on the path only now)
from hubploy_docs.config_keys import config_keys  # noqa: E402 (docs/_ext is on the path only now)
from hubploy_docs.config_keys import undescribed as undescribed_keys  # noqa: E402 (docs/_ext is on the path only now)
from hubploy_docs.flow_deployments import flow_deployments  # noqa: E402 (docs/_ext is on the path only now)
from hubploy_docs.flow_deployments import undescribed as undescribed_deployments  # noqa: E402 (docs/_ext is on the path only now)

MARKDOWN = sorted(p for p in [*DOCS.rglob("*.md"), *PROJECT_ROOT.glob("*.md")] if p.is_file())
PAGES = [
    parse_page(path) for path in MARKDOWN if "_build" not in path.parts and "_generated" not in path.parts
]
GUIDES = [
    p
    for p in PAGES
    if p.path.parent.name == "howto" and p.path.name != "index.md" or p.path.name == "tutorial.md"
]
RUNNABLE = [p for p in PAGES if p.runnable]
NOT_RUN = "Not run by the docs tests"
SCHEMAS = {"hubploy-yaml": HubConfig, "hubploy-repo-yaml": RepoSettings}


def _name(page: Page) -> str:
    return str(page.path.relative_to(PROJECT_ROOT))


# --- the build and the reference ---------------------------------------------------------------------


def test_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(PROJECT_ROOT / "scripts" / "docs"), str(tmp_path / "html")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    html = (tmp_path / "html" / "reference" / "hubploy-yaml.html").read_text()
    assert 'id="confval-cluster.kubeconfig.context"' in html  # an anchor per key
    cli = (tmp_path / "html" / "reference" / "cli.html").read_text()
    assert 'id="cmdoption-hubploy-deploy-no-atomic"' in cli


@pytest.mark.parametrize("model", [HubConfig, RepoSettings], ids=["hubploy.yaml", "hubploy-repo.yaml"])
def test_every_configuration_key_has_a_description(model: type[BaseModel]) -> None:
    keys = config_keys(model.model_json_schema())
    assert len(keys) > 20
    assert undescribed_keys(keys) == []


def test_a_key_without_a_description_is_reported() -> None:
    class Inner(BaseModel):
        described: int = Field(1, description="A number.")
        bare: str = "x"

    class Outer(BaseModel):
        inner: Inner = Field(default_factory=Inner, description="Nested.")
        listed: list[Inner] = Field(default_factory=list)

    keys = config_keys(Outer.model_json_schema())
    assert undescribed_keys(keys) == ["inner.bare", "listed", "listed[].bare"]
    by_path = {k.path: k for k in keys}
    assert (by_path["inner.described"].type, by_path["inner.described"].default) == ("integer", "1")
    assert by_path["listed"].type == "list of object" and by_path["listed"].default == "[]"


def test_every_command_argument_and_option_has_a_description() -> None:
    found = commands(build_parser(None))
    names = {c.name for c in found}
    assert {f"hubploy {name}" for name in COMMAND_MODULES} <= names
    assert "hubploy sandbox up" in names
    assert undescribed_commands(found) == []


def test_a_command_or_option_without_help_is_reported() -> None:
    parser = argparse.ArgumentParser(prog="tool", description="A tool.")
    sub = parser.add_subparsers()
    run = sub.add_parser("run", help="run it")
    run.add_argument("target")
    run.add_argument("--fast", action="store_true", help="quickly")
    sub.add_parser("quiet")
    assert undescribed_commands(commands(parser, ("tool",))) == ["tool quiet", "tool run TARGET"]


def test_every_deployment_has_a_description_and_its_flow_a_signature() -> None:
    deployments = flow_deployments(PROJECT_ROOT / "prefect.yaml")
    assert undescribed_deployments(deployments) == []
    lifecycle = next(d for d in deployments if d.name == "lifecycle")
    assert lifecycle.run_name == "hubploy-lifecycle/lifecycle"
    assert [p.name for p in lifecycle.parameters][:2] == ["sha", "repo_url"]


def test_the_reference_lists_every_key_command_and_deployment() -> None:
    pages = generated_pages(PROJECT_ROOT)
    for model, page in ((HubConfig, "hubploy-yaml.md"), (RepoSettings, "hubploy-repo-yaml.md")):
        for key in config_keys(model.model_json_schema()):
            assert f"```{{confval}} {key.path}\n" in pages[page]
    for command in commands(build_parser(None))[1:]:
        assert f"`{command.name}`" in pages["cli.md"]
    for deployment in flow_deployments(PROJECT_ROOT / "prefect.yaml"):
        assert f"prefect deployment run {deployment.run_name}" in pages["flows.md"]


# --- what the pages say --------------------------------------------------------------------------------


def test_every_hubploy_command_in_the_docs_parses() -> None:
    checked = 0
    for page in PAGES:
        for block in page.blocks:
            if not block.shell:
                continue
            for argv in hubploy_commands(block.text):
                parser = build_parser(argv[0] if argv else None)
                parser.exit = _refuse  # type: ignore[method-assign]
                for sub in _subparsers(parser):
                    sub.exit = _refuse  # type: ignore[method-assign]
                try:
                    parser.parse_args(argv)
                except _Refused as exc:
                    pytest.fail(f"{block.where}: `hubploy {' '.join(argv)}` does not parse: {exc}")
                checked += 1
    assert checked > 30


class _Refused(Exception):
    pass


def _refuse(status: int = 0, message: str | None = None) -> None:
    raise _Refused(message or f"exit {status}")


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield sub
                yield from _subparsers(sub)


@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(c in SCHEMAS for b in p.blocks for c in b.classes)], ids=_name
)
def test_configuration_examples_are_valid(page: Page) -> None:
    for block in page.blocks:
        for kind in set(block.classes) & set(SCHEMAS):
            try:
                SCHEMAS[kind].model_validate(yaml.safe_load(block.text))
            except Exception as exc:  # noqa: BLE001 - any error is the example's
                pytest.fail(f"{block.where}: not a valid {kind.replace('-yaml', '.yaml')}: {exc}")


@pytest.mark.parametrize("page", GUIDES, ids=_name)
def test_guides_run_their_commands_or_say_why_not(page: Page) -> None:
    shell = [b for b in page.blocks if b.shell]
    assert shell, "a guide shows the commands it is about"
    if any(not b.runnable for b in shell):
        assert NOT_RUN in page.path.read_text(), (
            f"{_name(page)} has shell blocks the tests do not run; say why in a note starting '{NOT_RUN}'"
        )


# --- the harness itself ---------------------------------------------------------------------------------


def test_blocks_options_and_expected_output_are_parsed(tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        ````markdown
        ```{code-block} bash
        :class: runnable

        echo inside
        ```
        ````
        ```{code-block} bash
        :class: runnable retry

        echo one
        ```
        Prints:
        ```{code-block} text
        :class: expected-output

        one
        ...
        ```
        ```bash
        hubploy deploy minimal hub staging --timeout 5m  # a comment
        ```
        <!-- docs-test: prefect-server -->
        """)
    page = parse_page(tmp_path / "p.md", text)
    assert [b.language for b in page.blocks] == ["markdown", "bash", "bash"]
    first = page.runnable[0]
    assert (first.retry, first.background, first.expected) == (True, False, ("one",))
    assert first.text == "echo one\n"
    assert hubploy_commands(page.blocks[2].text) == [
        ["deploy", "minimal", "hub", "staging", "--timeout", "5m"]
    ]
    assert page.needs == {"prefect-server"}


def test_hubploy_commands_are_found_after_operators_and_in_substitutions() -> None:
    script = (
        'cd x && hubploy validate\nRUN=$(hubploy plan --since prod) ; echo "# hubploy not this"\n'
        "env -u KUBECONFIG hubploy diff minimal staging | head\n"
        ".venv/bin/hubploy render \\\n  a prod\n"
    )
    assert hubploy_commands(script) == [
        ["validate"],
        ["plan", "--since", "prod"],
        ["diff", "minimal", "staging"],
        ["render", "a", "prod"],
    ]


def test_expected_lines_must_appear_in_order() -> None:
    output = "a first line\nsecond\nthird line\n"
    assert missing_lines(("first", "third"), output) == []
    assert missing_lines(("third", "first"), output) == ["first"]
    assert missing_lines(("fourth",), output) == ["fourth"]


def test_blocks_continue_where_the_previous_one_left_off(tmp_path: Path) -> None:
    page = parse_page(
        tmp_path / "p.md",
        textwrap.dedent("""\
        ```{code-block} bash
        :class: runnable

        mkdir sub && cd sub && export GREETING=hello
        ```
        ```{code-block} bash
        :class: runnable

        echo "$GREETING from $(basename "$PWD")"
        ```
        ```{code-block} text
        :class: expected-output

        hello from sub
        ```
        ```{code-block} bash
        :class: runnable

        false
        echo never
        ```
        """),
    )
    runner = PageRunner(tmp_path, dict(os.environ), tmp_path / "logs")
    runner.run(page.runnable[0])
    assert "hello from sub" in runner.run(page.runnable[1])
    with pytest.raises(BlockFailed, match="exit 1"):
        runner.run(page.runnable[2])


# --- the runnable pages, on the sandbox ---------------------------------------------------------------


@pytest.fixture
def reader_env(sandbox, tmp_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A reader's terminal: the sandbox's environment, hubploy on PATH, a HOME of their own with git set
    up."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Docs Reader\n\temail = reader@example.org\n[init]\n\tdefaultBranch = main\n"
    )
    # `hubploy` runs the code under test (the console script of the venv may belong to another checkout)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hubploy").write_text(f'#!/bin/sh\nexec {sys.executable} -m hubploy.cli.main "$@"\n')
    (bin_dir / "hubploy").chmod(0o755)
    env = {k: v for k, v in sandbox.env.items() if not k.startswith(("PREFECT_", "HUBPLOY_HOME"))}
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join([str(bin_dir), str(VENV_BIN), sandbox.env["PATH"]]),
        COLUMNS="160",
    )
    return env


def _example_checkout(root: Path, env: dict[str, str]) -> Path:
    """A copy of the example deployment repository, committed on staging with prod at the same commit, as a
    reader's checkout of this project is."""
    copy_example_repo(root, {"minimal": "minimal", "physics": "physics"})
    for args in (
        ["init", "-q", "-b", "staging"],
        ["add", "-A"],
        ["commit", "-q", "-m", "Example hubs"],
        ["branch", "prod"],
    ):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)
    return root


@pytest.mark.sandbox
@pytest.mark.parametrize(
    "page",
    [pytest.param(p, marks=[pytest.mark.prefect] if "prefect-server" in p.needs else []) for p in RUNNABLE],
    ids=_name,
)
def test_runnable_page(
    page: Page, reader_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = dict(reader_env)
    if "prefect-server" in page.needs:  # stands in for the reader's running `hubploy up`
        env["PREFECT_API_URL"] = request.getfixturevalue("prefect_api")
    runner = PageRunner(_example_checkout(tmp_path / "checkout", env), env, tmp_path / "logs")
    with demo_hub_lock():  # pages deploy the example hubs to the shared sandbox, as the demo tests do
        try:
            for block in page.runnable:
                runner.run(block)
        finally:
            problems = runner.stop()
    assert problems == []
