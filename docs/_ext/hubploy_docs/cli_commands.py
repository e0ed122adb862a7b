"""Every command, argument and option of an argparse parser, as the CLI reference lists them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Argument:
    """A positional argument (``names`` is its metavar) or an option (its option strings)."""

    names: tuple[str, ...]
    metavar: str
    help: str
    default: str
    choices: tuple[str, ...]
    positional: bool


@dataclass(frozen=True)
class Command:
    """``words``: the command line up to it, e.g. ("hubploy", "sandbox", "up")."""

    words: tuple[str, ...]
    help: str
    usage: str
    arguments: tuple[Argument, ...]

    @property
    def name(self) -> str:
        return " ".join(self.words)


def commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ("hubploy",), help: str = ""
) -> list[Command]:
    """``parser`` itself, then each of its sub-commands (depth first, in the order they were added)."""
    found = [
        Command(
            words,
            (help or parser.description or "").strip(),
            _usage(parser),
            tuple(_argument(a) for a in parser._actions if _documented(a)),
        )
    ]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found += commands(sub, (*words, name), helps.get(name, ""))
    return found


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().split()).removeprefix("usage: ")


def _documented(action: argparse.Action) -> bool:
    return (
        not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
        and action.help != argparse.SUPPRESS
    )


def _argument(action: argparse.Action) -> Argument:
    positional = not action.option_strings
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    if positional:
        metavar = metavar or str(action.dest).upper()
    elif action.nargs != 0 and not metavar:
        metavar = str(action.dest).upper()
    names = (metavar,) if positional else tuple(action.option_strings)
    choices = tuple(str(c) for c in action.choices or ())
    return Argument(names, metavar, (action.help or "").strip(), _default(action), choices, positional)


def _default(action: argparse.Action) -> str:
    """The default worth showing: none for flags, empty lists, or a help text that states its own
    (which keeps machine-dependent ones such as ``--as user@host`` out of the reference)."""
    value = action.default
    if action.nargs == 0 or value in (None, [], "", argparse.SUPPRESS) or "default" in (action.help or ""):
        return ""
    return str(value)


def undescribed(found: list[Command]) -> list[str]:
    """Commands, arguments and options without a help text, as `hubploy cmd` or `hubploy cmd --opt`."""
    missing = [c.name for c in found if not c.help]
    missing += [f"{c.name} {a.names[-1]}" for c in found for a in c.arguments if not a.help]
    return missing
