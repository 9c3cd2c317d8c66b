"""The ``dogbench`` command. Each subcommand lives beside the code it drives and registers itself here
through ``add_command(subparsers)``; ``main`` turns expected user errors into one line on stderr."""
from __future__ import annotations

import argparse
import importlib
import sys

# command module -> defines add_command(subparsers), whose parser sets ``func(args) -> int | None``
COMMAND_MODULES = (
    "benchmark.data.prepare",        # dogbench prepare
    "benchmark.data.latents",        # dogbench latents
    "benchmark.training.run",        # dogbench finetune / pretrain
    "benchmark.sampling.cli",        # dogbench sample
    "benchmark.metrics.evaluate",    # dogbench evaluate
    "benchmark.harness.run",         # dogbench run
    "benchmark.harness.sweep",       # dogbench sweep
    "benchmark.toy.cli",             # dogbench toy
    "benchmark.perf",                # dogbench perf
)


class UserError(Exception):
    """An error caused by the user's input: printed as one line naming the fix, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dogbench", description="Domain Guidance vs classifier-free guidance benchmark")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    parser.add_argument("--version", action="version", version=f"dogbench {importlib.import_module('benchmark').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a command whose module is not part of this build
            if e.name and name.startswith(e.name):  # the module or its package is absent
                continue
            raise
        module.add_command(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as e:
        if getattr(args, "debug", False):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"dogbench {args.command}: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"dogbench {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # under `python -m benchmark.cli` this file runs as __main__; import the package's module so that UserError
    # raised by commands is the class main() catches
    from benchmark.cli import main as package_main

    sys.exit(package_main())
