"""Entry point of the `hubploy` command: builds the argument parser from the command modules and
reports every :class:`~hubploy.errors.HubployError` in one place, as one line, with exit code 1."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Sequence

from hubploy.errors import CommandNotFoundError, ConfigError, HubployError

# Each module exposes register(subparsers) and sets a `func(args) -> int` default on its parsers.
# Modules are imported lazily by name so that `hubploy validate` never pays for importing Prefect.
COMMAND_MODULES: dict[str, str] = {
    "validate": "hubploy.cli.config_commands",
    "schema": "hubploy.cli.config_commands",
    "render": "hubploy.cli.config_commands",
    "init": "hubploy.cli.init_commands",
    "new-hub": "hubploy.cli.init_commands",
    "sandbox": "hubploy.cli.sandbox_commands",
    "approve": "hubploy.cli.approve_commands",
    "up": "hubploy.cli.up_commands",
    "down": "hubploy.cli.up_commands",
    "demo": "hubploy.cli.up_commands",
    "webhook": "hubploy.cli.webhook_commands",
    "build": "hubploy.cli.build_commands",
    "deploy": "hubploy.cli.deploy_commands",
    "plan": "hubploy.cli.fleet_commands",
    "diff": "hubploy.cli.fleet_commands",
    "rollout": "hubploy.cli.rollout_commands",
    "rollback": "hubploy.cli.rollout_commands",
    "hold": "hubploy.cli.rollout_commands",
    "unhold": "hubploy.cli.rollout_commands",
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubploy",
        description="Continuous deployment of JupyterHubs with "
        "the Zero to JupyterHub chart, as Prefect flows.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO messages")
    parser.add_argument("-d", "--debug", action="store_true", help="log DEBUG messages")
    parser.add_argument("-D", "--helm-debug", action="store_true", help="pass --debug to helm (not in CI)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = (
        [COMMAND_MODULES[command]]
        if command in COMMAND_MODULES
        else list(dict.fromkeys(COMMAND_MODULES.values()))
    )
    for module_name in wanted:
        importlib.import_module(module_name).register(sub)
    return parser


def _first_command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_first_command(argv))
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue.format()}", file=sys.stderr)
        print(f"{len(exc.issues)} error(s)", file=sys.stderr)
        return 1
    except HubployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, CommandNotFoundError) and importlib.util.find_spec("hubploy_sandbox"):
            print("hint: `hubploy sandbox install` installs the tools the sandbox uses", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (stdout for the rest of the process)
        return 0
    except Exception as exc:  # a bug or an unexpected failure of a library: one line, the trace on -d
        if args.debug:
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (hint: run `hubploy -d ...` for the full trace)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
