"""The ``rocketrank`` command: a thin dispatcher.

Every subcommand lives in the package that owns it and is imported lazily, so
``rocketrank serve`` never imports training code (and torch-heavy training
modules are not loaded to print ``--help``).

A subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``;
its module docstring (description and examples) is its ``--help`` text.

Exit codes, for every subcommand: 0 success, 1 the command ran and found
problems (invalid data, a failed export or parity check), 2 a usage or input
error (a bad flag, a missing file or setting); 130 when interrupted. Errors go
to stderr and name the flag or environment variable to fix.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from rocketrank import __version__

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

# (command path, module, one-line help). Nested commands use a space.
COMMANDS: list[tuple[str, str, str]] = [
    ("synth", "training.commands.synth", "write a synthetic e-commerce impression log"),
    ("data check", "training.commands.data_check", "validate a data directory against its schema"),
    (
        "data negatives",
        "training.commands.data_negatives",
        "add sampled negatives to a positives-only log",
    ),
    (
        "sample-request",
        "training.commands.sample_request",
        "print a /v1/rank body with a real user and real items from a log",
    ),
    ("train", "training.commands.train", "jointly train booster and light net"),
    ("ablate", "training.commands.ablate", "train every distillation variant and report"),
    ("export", "training.commands.export", "export the light net into a model repository"),
    ("eval", "training.commands.eval", "metrics of an exported model on a split or a new log"),
    ("predict", "training.commands.predict", "score a log with an exported model into Parquet"),
    ("models list", "training.commands.model_versions", "list versions in a model repository"),
    ("models promote", "training.commands.model_versions", "point `current` at a version"),
    (
        "models rollback",
        "training.commands.model_versions",
        "point `current` at the previous version",
    ),
    ("models keygen", "training.commands.model_versions", "write an artifact-signing key pair"),
    ("features load", "service.commands.features", "fill Redis with user and item features"),
    ("features prune", "service.commands.features", "delete old feature versions from Redis"),
    ("serve", "service.commands.serve", "start the scoring service"),
    ("bench serve", "bench.serve.command", "benchmark the HTTP service"),
    ("bench train", "bench.train.command", "benchmark training throughput and cost"),
]

_PATHS = {path: (module, help_text) for path, module, help_text in COMMANDS}


def _commands_listing() -> str:
    width = max(len(path) for path in _PATHS) + 2
    lines = ["commands:"]
    lines += [f"  {path:<{width}}{help_text}" for path, (_, help_text) in _PATHS.items()]
    lines += [
        "",
        "`rocketrank COMMAND --help` shows a command's options and examples.",
        "Exit codes: 0 ok, 1 problems found, 2 usage or input error.",
    ]
    return "\n".join(lines)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rocketrank",
        description="Jointly-trained booster + light net ranking, and its scoring service.",
        epilog=_commands_listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rocketrank {__version__}")
    # The subparsers carry no help= so argparse does not list them a second time:
    # the epilog lists every command, nested ones by their full path.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="one of the commands below")
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, _, help_text in COMMANDS:
        words = path.split()
        target = sub
        if len(words) == 2:
            if words[0] not in groups:
                children = [p for p in _PATHS if p.split()[0] == words[0]]
                group_parser = sub.add_parser(
                    words[0],
                    description="\n".join(f"{c}: {_PATHS[c][1]}" for c in children),
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                )
                groups[words[0]] = group_parser.add_subparsers(
                    dest=f"{words[0]}_command", metavar="SUBCOMMAND", required=True
                )
            target = groups[words[0]]
        target.add_parser(words[-1], description=help_text)
    return parser


def _description(module: object, help_text: str) -> str:
    """The module docstring as help text: reST literals shown plainly."""
    doc = (getattr(module, "__doc__", None) or "").strip()
    if not doc:
        return help_text
    doc = doc.replace("``", "`")
    return re.sub(r"(\w|\))::$", r"\1:", doc, flags=re.MULTILINE).replace("\n::\n", "\n")


def command_parser(path: str) -> argparse.ArgumentParser:
    """The full argument parser of one subcommand (its module imported)."""
    module_name, help_text = _PATHS[path]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"rocketrank {path}",
        description=_description(module, help_text),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if hasattr(module, "add_arguments_for"):
        module.add_arguments_for(path, parser)
    else:
        module.add_arguments(parser)
    return parser


def _command_path(words: list[str]) -> str | None:
    for n in (2, 1):
        candidate = " ".join(words[:n])
        if len(words) >= n and candidate in _PATHS:
            return candidate
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    path = _command_path(argv)
    if path is None:
        # --help, --version, a group without its subcommand, or an unknown command:
        # argparse prints help (exit 0) or the usage error on stderr (exit 2).
        parser.parse_args(argv)
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    module = importlib.import_module(_PATHS[path][0])
    args = command_parser(path).parse_args(argv[len(path.split()) :])
    args.command_path = path
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
