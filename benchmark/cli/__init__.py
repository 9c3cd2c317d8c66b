"""The ``dogbench`` command: one layer on top of the library, which never imports it.

Each command lives in a module of this package that defines ``configure(parser)`` (its flags, mostly generated from
the settings schemas) and ``run(args) -> int``. Only the chosen command's module is imported, so ``dogbench --help``
and every command's ``--help`` start quickly and the library can import its dependencies at module top.
``main`` turns expected user errors into one line on stderr.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from benchmark.errors import UserError

# command -> (module of this package, one-line help)
COMMANDS = {
    "run": ("run", "run an experiment end to end (prepare, latents, fine-tune, sample, evaluate, report); reruns resume"),
    "sweep": ("sweep", "Optuna search over w for one dataset and method"),
    "finetune": ("train", "fine-tune a pre-trained DiT on a target dataset (re-headed to its classes)"),
    "pretrain": ("train", "train a DiT from scratch (e.g. the 32x32 CIFAR-10 source model)"),
    "sample": ("sample", "sample fine-tune only / CFG / DoG into a folder of PNGs"),
    "evaluate": ("evaluate", "FID / FD_DINOv2 / PRDC of generated samples against a dataset"),
    "prepare": ("data", "download or check a dataset, or print where to put its files"),
    "latents": ("data", "encode a dataset once with the VAE (both flips) for fast fine-tuning"),
    "toy": ("toy", "2D toy: every guidance method on a shifted few-mode target, over seeds (CPU, ~3 min)"),
    "perf": ("perf", "measure sampling / fine-tuning / decoding / feature throughput"),
    "methods": ("methods", "list guidance methods, combination rules and schedules: guides, parameters, calls per step"),
}


class Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line that says where the help is (exit status 2, as argparse's)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def command_module(name: str):
    return importlib.import_module(f"benchmark.cli.{COMMANDS[name][0]}")


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser; only the command named in ``argv`` (all of them when None) gets its flags."""
    parser = Parser(prog="dogbench", description="Domain Guidance vs classifier-free guidance benchmark")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    parser.add_argument("--version", action="version",
                        version=f"dogbench {importlib.import_module('benchmark').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    parser.commands = {}
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".")
        parser.commands[name] = p
        if argv is None or name == chosen:
            command_module(name).configure(p, name)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's parser, so that the line names the command and its --help
        parser.commands.get(getattr(args, "command", None), parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, OSError, ValueError) as e:  # OSError: a file the user named (missing, unreadable, no space)
        if getattr(args, "debug", False):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, OSError) and not isinstance(e, UserError):
            from benchmark.cli.oserrors import os_error_line  # the path, where it came from, what to do
            msg = os_error_line(e, args)
        print(f"dogbench {args.command}: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"dogbench {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
