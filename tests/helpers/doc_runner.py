"""Run a documentation page's runnable blocks in order, as a reader runs them in one terminal: each
block in bash with ``set -e -o pipefail``, starting where the previous one left off (its working
directory and exported variables carry over); a ``background`` block as a second terminal, interrupted
(Ctrl-C) when the page is done."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.doc_blocks import Block, missing_lines

BLOCK_TIMEOUT = 600  # one block, as a reader would wait for it
RETRY_SECONDS = 600  # how long a `retry` block is tried again
RETRY_PAUSE = 5
READY_TIMEOUT = 600  # a background block's expected output
STOP_TIMEOUT = 120  # a background block after Ctrl-C

# The block runs after the previous block's state is restored; on exit (also a failing one) it saves its own.
PROLOGUE = """source "$HUBPLOY_DOCS_STATE"
save_state() { { export -p; printf 'cd %q\\n' "$PWD"; } > "$HUBPLOY_DOCS_STATE"; }
trap save_state EXIT
set -e -o pipefail
"""


class BlockFailed(AssertionError):
    pass


@dataclass
class PageRunner:
    """Runs blocks in ``workdir`` with ``env``; ``logs`` receives each background block's output."""

    workdir: Path
    env: dict[str, str]
    logs: Path
    background: list[tuple[Block, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = self.logs / "state.sh"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.state.write_text(f"cd {self.workdir}\n")
        self.env = {**self.env, "HUBPLOY_DOCS_STATE": str(self.state)}

    def run(self, block: Block) -> str:
        """Run ``block``; its output, once it succeeded and printed what it is expected to."""
        if block.background:
            return self._start(block)
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            code, output = self._once(block)
            if (code != 0) == block.fails or not block.retry or time.monotonic() > deadline:
                break
            time.sleep(RETRY_PAUSE)
        shown = f"\n$ {block.text}{output[-6000:]}"
        if (code != 0) != block.fails:
            note = " (the page says it fails)" if block.fails else ""
            raise BlockFailed(f"{block.where}: exit {code}{note}{shown}")
        missing = missing_lines(block.expected, output)
        if missing:
            raise BlockFailed(f"{block.where}: no line {missing[0]!r} in the output{shown}")
        return output

    def _once(self, block: Block) -> tuple[int, str]:
        proc = subprocess.Popen(
            ["bash", "-c", PROLOGUE + block.text],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return -1, out.decode(errors="replace") + f"\n(timed out after {BLOCK_TIMEOUT} s)"
        return proc.returncode, out.decode(errors="replace")

    def _start(self, block: Block) -> str:
        log = self.logs / f"background-{block.line}.log"
        with open(log, "wb") as handle:
            proc = subprocess.Popen(
                ["bash", "-c", f'source "$HUBPLOY_DOCS_STATE"\n{block.text}'],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append((block, proc, log))
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            output = log.read_text(errors="replace")
            if not missing_lines(block.expected, output):
                return output
            if proc.poll() is not None or time.monotonic() > deadline:
                why = f"exited {proc.returncode}" if proc.returncode is not None else f"{READY_TIMEOUT} s"
                wanted = missing_lines(block.expected, output)[0]
                raise BlockFailed(
                    f"{block.where}: {why} before printing {wanted!r}\n$ {block.text}{output[-6000:]}"
                )
            time.sleep(1)

    def stop(self) -> list[str]:
        """Ctrl-C every background block, newest first; what went wrong stopping them."""
        problems = []
        for block, proc, log in reversed(self.background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    problems.append(f"{block.where} did not stop on Ctrl-C within {STOP_TIMEOUT} s")
            if proc.returncode not in (0, -signal.SIGINT, 130):
                tail = log.read_text(errors="replace")[-3000:]
                problems.append(f"{block.where} ended with exit {proc.returncode}:\n{tail}")
        self.background.clear()
        return problems
