"""The code blocks of the documentation's Markdown pages, and which of them the test suite runs.

A block is *runnable* when it is a MyST ``{code-block} bash`` whose ``:class:`` option includes
``runnable``; ``runnable background`` starts it and goes on once its expected output appears (a
long-lived command a reader leaves running in a second terminal), ``runnable retry`` runs it again every
few seconds until it succeeds (a step a reader takes once something is ready), ``runnable fails`` must
exit non-zero (a refusal the page shows). The block right after a
runnable one, when its class is ``expected-output``, lists lines its output must contain, in order
(``...`` lines are ignored). A page says what it needs with ``<!-- docs-test: NEED -->`` comments.
CONTRIBUTING.md describes the convention for writers.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
OPTION = re.compile(r"^:(?P<name>[\w-]+):\s*(?P<value>.*)$")
DIRECTIVE = re.compile(r"^\{(?P<name>[\w-]+)\}\s*(?P<argument>.*)$")
PAGE_NEED = re.compile(r"<!--\s*docs-test:\s*(?P<need>[\w-]+)\s*-->")
SHELLS = ("bash", "sh", "shell", "console")
# `hubploy` at the start of a command: line start, after a shell operator, `$(`, `env VAR=...`, or a path.
HUBPLOY_CALL = re.compile(
    r"(?:^|[;&|(]|\$\()\s*(?:env\s+(?:-u\s+\S+\s+|\w+=\S+\s+)*)?(?:\w+=\S+\s+)*"
    r"(?:\S*/)?hubploy(?=\s|$)(?P<args>[^;&|)]*)"
)


@dataclass(frozen=True)
class Block:
    """A fenced code block: ``language`` (``bash``, ``yaml``, ...), its classes, its text."""

    page: Path
    line: int
    language: str
    classes: tuple[str, ...]
    text: str
    expected: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runnable(self) -> bool:
        return "runnable" in self.classes

    @property
    def background(self) -> bool:
        return "background" in self.classes

    @property
    def retry(self) -> bool:
        return "retry" in self.classes

    @property
    def fails(self) -> bool:
        """The page shows a refusal: the block must exit non-zero (and print its expected lines)."""
        return "fails" in self.classes

    @property
    def shell(self) -> bool:
        return self.language in SHELLS


@dataclass(frozen=True)
class Page:
    path: Path
    blocks: tuple[Block, ...]
    needs: frozenset[str] = field(default_factory=frozenset)

    @property
    def runnable(self) -> tuple[Block, ...]:
        return tuple(b for b in self.blocks if b.runnable)


def parse_page(path: Path, text: str | None = None) -> Page:
    """Every top-level fenced block of ``path`` (blocks inside a longer fence are its text), with each
    runnable block's expected output attached."""
    text = path.read_text() if text is None else text
    raw = _fenced_blocks(path, text.splitlines())
    blocks: list[Block] = []
    for i, block in enumerate(raw):
        if "expected-output" in block.classes:
            continue
        following = raw[i + 1] if i + 1 < len(raw) else None
        if block.runnable and following is not None and "expected-output" in following.classes:
            expected = tuple(
                line for line in following.text.splitlines() if line.strip() and line.strip() != "..."
            )
            block = Block(block.page, block.line, block.language, block.classes, block.text, expected)
        blocks.append(block)
    return Page(path, tuple(blocks), frozenset(m.group("need") for m in PAGE_NEED.finditer(text)))


def _fenced_blocks(path: Path, lines: list[str]) -> list[Block]:
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent, start = opening.group("fence"), len(opening.group("indent")), i
        info = opening.group("info").strip()
        directive = DIRECTIVE.match(info)
        language = (directive.group("argument") if directive else info).split(" ")[0]
        i += 1
        options: dict[str, str] = {}
        while directive and i < len(lines) and (option := OPTION.match(lines[i].strip())):
            options[option.group("name")] = option.group("value")
            i += 1
        body: list[str] = []
        while i < len(lines) and not _closes(lines[i], fence):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1
        if directive is None or directive.group("name") in ("code-block", "code"):
            found.append(
                Block(
                    path,
                    start + 1,
                    language,
                    tuple(options.get("class", "").split()),
                    "\n".join(body).strip("\n") + "\n",
                )
            )
    return found


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(fence) and set(stripped) == {fence[0]}


def hubploy_commands(script: str) -> list[list[str]]:
    """The arguments of each `hubploy` command in a shell ``script`` (comments dropped, continued lines
    joined), e.g. [["deploy", "minimal", "hub", "staging"]]."""
    joined = re.sub(r"\\\n\s*", " ", script)
    commands = []
    for line in joined.splitlines():
        code = _without_comment(line)
        commands += [shlex.split(m.group("args")) for m in HUBPLOY_CALL.finditer(code)]
    return commands


def _without_comment(line: str) -> str:
    """``line`` up to a ``#`` that starts a comment (not one inside quotes or a word)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def missing_lines(expected: tuple[str, ...], output: str) -> list[str]:
    """The ``expected`` lines that do not appear, in order, each within one line of ``output``."""
    lines = output.splitlines()
    position = 0
    for index, wanted in enumerate(expected):
        found = next((i for i in range(position, len(lines)) if wanted.strip() in lines[i]), None)
        if found is None:
            return list(expected[index:])
        position = found + 1
    return []
