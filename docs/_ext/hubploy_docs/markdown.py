"""The generated reference pages, written as MyST Markdown: configuration keys as ``confval`` entries,
commands as ``program``/``option`` entries, Prefect deployments as sections with a parameter table."""

from __future__ import annotations

import re
from collections.abc import Iterable

from hubploy_docs.cli_commands import Command
from hubploy_docs.config_keys import ConfigKey
from hubploy_docs.flow_deployments import FlowDeployment

CODE_SPAN = re.compile(r"(`+)(.+?)\1")
SPECIAL = re.compile(r"([\\*_<>\[\]|{}#])")


def escape(text: str) -> str:
    """``text`` as literal Markdown, except its code spans (`...`), which stay code."""
    out, last = [], 0
    for match in CODE_SPAN.finditer(text):
        out += [SPECIAL.sub(r"\\\1", text[last : match.start()]), match.group(0)]
        last = match.end()
    return "".join([*out, SPECIAL.sub(r"\\\1", text[last:])])


def code(text: str) -> str:
    """``text`` as one inline code span, whatever backticks it contains."""
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def config_reference(keys: Iterable[ConfigKey], anchor_prefix: str) -> str:
    """One section per top-level key, a ``confval`` entry (anchor ``confval-<path>``) per key."""
    lines: list[str] = []
    for key in keys:
        if key.depth == 0 and "[]" not in key.path:
            lines += [f"({anchor_prefix}-{key.path})=", f"## {code(key.path)}", ""]
        default = key.default if key.default in ("required", "none") else code(key.default)
        lines += [
            f"```{{confval}} {key.path}",
            ":no-contents-entry:",
            f":type: {escape(key.type)}",
            f":default: {default}",
            "",
            escape(key.description),
            "```",
            "",
        ]
    return "\n".join(lines)


def cli_reference(commands: Iterable[Command]) -> str:
    """One section per command (anchor ``cli-<words>``), its usage, and an ``option`` entry per argument."""
    lines: list[str] = []
    for command in commands:
        level = "#" * max(2, len(command.words))  # commands as sections, sub-commands within them
        title = command.name if len(command.words) > 1 else "Global options"
        lines += [
            f"({anchor(command)})=",
            f"{level} {code(title) if len(command.words) > 1 else title}",
            "",
            escape(command.help),
            "",
            "```text",
            command.usage,
            "```",
            "",
            f"```{{program}} {command.name}",
            "```",
            "",
        ]
        for argument in command.arguments:
            signature = (
                ", ".join(argument.names)
                if argument.positional or not argument.metavar
                else ", ".join(f"{name} {argument.metavar}" for name in argument.names)
            )
            notes = [escape(argument.help)]
            if argument.choices:
                notes.append("One of " + ", ".join(code(c) for c in argument.choices) + ".")
            if argument.default:
                notes.append(f"Default: {code(argument.default)}.")
            lines += [f"```{{option}} {signature}", " ".join(notes), "```", ""]
    return "\n".join(lines)


def anchor(command: Command) -> str:
    return "cli-" + "-".join(command.words)


def flows_reference(deployments: Iterable[FlowDeployment]) -> str:
    """One section per deployment (anchor ``deployment-<name>``) with its flow's parameters."""
    lines: list[str] = []
    for d in deployments:
        facts = [
            ("Flow", f"{code(d.flow_name)} ({code(d.entrypoint)})"),
            ("Start a run", code(f"prefect deployment run {d.run_name}")),
            ("Work pool", code(d.work_pool) if d.work_pool else "none"),
            ("Schedule", ", ".join(d.schedules) or "none: started by an event, a command or a flow"),
            ("Tags", ", ".join(code(t) for t in d.tags) or "none"),
        ]
        lines += [
            f"(deployment-{d.name})=",
            f"## {code(d.name)}",
            "",
            escape(d.description),
            "",
            "| | |",
            "|---|---|",
            *(f"| {k} | {_cell(v)} |" for k, v in facts),
            "",
        ]
        if d.flow_doc:
            lines += [escape_doc(d.flow_doc), ""]
        lines += ["| Parameter | Type | Default | Set by prefect.yaml |", "|---|---|---|---|"]
        lines += [
            f"| {code(p.name)} | {_cell(code(p.annotation)) if p.annotation else ''} | "
            f"{_cell(code(p.default)) if p.default else 'required'} | "
            f"{_cell(code(p.deployment_value)) if p.deployment_value else ''} |"
            for p in d.parameters
        ]
        lines.append("")
    return "\n".join(lines)


def escape_doc(docstring: str) -> str:
    """A flow's docstring (reStructuredText-style ``code``) as Markdown paragraphs."""
    return escape(docstring.replace("``", "`"))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
