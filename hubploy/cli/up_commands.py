"""`hubploy up`, `hubploy down` and `hubploy demo`: run everything on this machine."""

from __future__ import annotations

import argparse
import os
import signal
import time
from typing import Any

from rich.console import Console

from hubploy.errors import HubployError
from hubploy.triggers.routing import DEFAULT_SECRET_BLOCK

console = Console(stderr=True)


def register(sub: argparse._SubParsersAction) -> None:
    for name, help_text in (
        (
            "up",
            (
                "start the local Prefect server, sandbox, worker and webhook receiver; "
                "Ctrl-C stops what it started"
            ),
        ),
        (
            "demo",
            (
                "push a change to the example repo through the webhook and follow the "
                "lifecycle to the approval form (--approve: on to prod)"
            ),
        ),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--port", type=int, default=4200, help="Prefect server port on 127.0.0.1 (default 4200)"
        )
        p.add_argument("--webhook-port", type=int, default=8787, help="webhook receiver port (default 8787)")
        p.add_argument(
            "--repo", help="git URL of your deployment repo (default: the example repo, created once)"
        )
        p.add_argument("--no-sandbox", action="store_true", help="use your own cluster (KUBECONFIG) instead")
        p.add_argument(
            "--database",
            choices=["sqlite", "postgres"],
            default="sqlite",
            help="the Prefect server's database: sqlite (embedded, the default) or postgres (a "
            "PostgreSQL server of its own on 127.0.0.1, data kept across `hubploy down`)",
        )
        p.add_argument("--workers", type=int, default=1, help="process workers polling the pool (default 1)")
        if name == "demo":
            p.add_argument("--approve", action="store_true", help="approve the change and follow it to prod")
            p.add_argument("--keep", action="store_true", help="keep everything running afterwards")
        p.set_defaults(func=cmd_up if name == "up" else cmd_demo)
    sub.add_parser("down", help="stop what `hubploy up` started").set_defaults(func=cmd_down)


def _say(line: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {line}", highlight=False, soft_wrap=True)


def _start(args: argparse.Namespace) -> Any:
    """Start the stack; Ctrl-C (or SIGTERM), or a failure, while it starts stops what was started so far."""
    from hubploy.triggers.database import Database
    from hubploy.triggers.stack import down, up

    # Ctrl-C must work even when SIGINT was inherited as ignored (started from a script with `&`)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    started: list[str] = []
    try:
        with console.status("starting hubploy", spinner="dots"):
            return up(
                port=args.port,
                webhook_port=args.webhook_port,
                repo_url=args.repo,
                with_sandbox=not args.no_sandbox,
                db=Database(args.database),
                workers=args.workers,
                say=_say,
                started=started,
            )
    except KeyboardInterrupt:
        _say("interrupted: stopping what was started")
        down(say=_say, only=started)
        raise SystemExit(130) from None
    except Exception:
        if started:
            _say(f"could not start everything: stopping what was started ({', '.join(started)})")
            down(say=_say, only=started)
        raise


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def _print_stack(stack: Any) -> None:
    secret = (
        f"in the Prefect Secret block {DEFAULT_SECRET_BLOCK} (not printed: CI is set)"
        if os.environ.get("CI")
        else stack.webhook_secret
    )
    console.print(
        f"""
[bold]hubploy is up[/]
  Prefect UI       {stack.ui_url}
  log in           {stack.how_to_log_in()}
  database         {stack.database}
  webhook URL      {stack.webhook_url}
  webhook secret   {secret}
  deployment repo  {stack.repo_url}
Point a GitHub webhook (push and pull_request events, content type application/json) at the webhook
URL through your reverse proxy, with that secret. Try it with `hubploy demo`.
Ctrl-C stops what this `hubploy up` started ({", ".join(stack.started) or "nothing: all was running"}).""",
        highlight=False,
        soft_wrap=True,
    )


def cmd_up(args: argparse.Namespace) -> int:
    from hubploy.triggers.stack import down

    stack = _start(args)
    try:
        _print_stack(stack)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see _start)
        pass
    finally:
        down(say=_say, only=stack.started)  # what was already running before is left alone
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from hubploy.triggers.stack import down

    down(say=_say)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from hubploy.triggers.demo import demo
    from hubploy.triggers.stack import down

    stack = _start(args)
    stop = not args.keep
    try:
        with temporary_settings(
            updates={
                PREFECT_API_URL: stack.api_url,
                PREFECT_API_AUTH_STRING: stack.env["PREFECT_API_AUTH_STRING"],
            }
        ):
            result = demo(stack, approve=args.approve, say=_say)
        _print_summary(stack, result)
        if not args.approve and result.state in ("Paused", "Suspended"):
            console.print(
                f"""
Approve in the UI: log in at {stack.how_to_log_in(stack.run_path(result.run_id))},
  then press Resume on the run page {result.run_url}
or in another shell: hubploy approve {result.run_id}
"""
                + (
                    "Everything keeps running (--keep); `hubploy down` stops it."
                    if args.keep
                    else "Everything keeps running until Ctrl-C."
                ),
                highlight=False,
                soft_wrap=True,
            )
            if not args.keep:
                _wait_for_interrupt()
    finally:
        if stop:
            down(say=_say, only=stack.started)
    if result.state not in ("Completed", "Paused", "Suspended"):
        raise HubployError(f"the lifecycle ended {result.state}: {result.message}")
    return 0


def _print_summary(stack: Any, result: Any) -> None:
    console.print(
        f"""
[bold]demo summary[/]
  change     {result.sha[:12]} on staging (hub minimal)
  run        {result.run_name}: {result.state} {result.message}
  log in     {stack.how_to_log_in(stack.run_path(result.run_id))}
  run page   {result.run_url}""",
        highlight=False,
        soft_wrap=True,
    )


def _wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
