"""The ``rocketrank`` command: a thin dispatcher.

Every subcommand lives in the package that owns it and is imported lazily, so
``rocketrank serve`` never imports training code (and torch-heavy training
modules are not loaded to print ``--help``).

A subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command path, module, one-line help). Nested commands use a space.
COMMANDS: list[tuple[str, str, str]] = [
    ("synth", "training.commands.synth", "write a synthetic e-commerce impression log"),
    ("data check", "training.commands.data_check", "validate a data directory against its schema"),
    (
        "data negatives",
        "training.commands.data_negatives",
        "add sampled negatives to a positives-only log",
    ),
    ("train", "training.commands.train", "jointly train booster and light net"),
    ("ablate", "training.commands.ablate", "train every distillation variant and report"),
    ("export", "training.commands.export", "export the light net into a model repository"),
    ("models list", "training.commands.model_versions", "list versions in a model repository"),
    ("models promote", "training.commands.model_versions", "point `current` at a version"),
    (
        "models rollback",
        "training.commands.model_versions",
        "point `current` at the previous version",
    ),
    ("features load", "service.commands.features", "fill Redis with user and item features"),
    ("features prune", "service.commands.features", "delete old feature versions from Redis"),
    ("serve", "service.commands.serve", "start the scoring service"),
    ("bench serve", "bench.serve.command", "benchmark the HTTP service"),
    ("bench train", "bench.train.command", "benchmark training throughput and cost"),
]


_PATHS = {path for path, _, _ in COMMANDS}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rocketrank",
        description="Jointly-trained booster + light net ranking, and its scoring service.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, module, help_text in COMMANDS:
        words = path.split()
        target = sub
        if len(words) == 2:
            if words[0] not in groups:
                group_parser = sub.add_parser(words[0], help=f"{words[0]} commands")
                groups[words[0]] = group_parser.add_subparsers(
                    dest=f"{words[0]}_command", metavar="SUBCOMMAND", required=True
                )
            target = groups[words[0]]
        p = target.add_parser(words[-1], help=help_text, description=help_text)
        p.set_defaults(_module=module, _path=path)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _build_parser()
    # Parse only the command words first; the owning module adds its options.
    # -h/--help is held back so `rocketrank train --help` shows train's options.
    words = [a for a in argv if a not in ("-h", "--help")]
    if not words:
        parser.print_help()
        return 0 if argv else 2
    wants_help = len(words) != len(argv)
    if wants_help and not any(" ".join(words[:n]) in _PATHS for n in (1, 2)):
        parser.parse_args(argv)  # prints the group's help and exits
    known, _ = parser.parse_known_args(words)
    if getattr(known, "_module", None) is None:
        parser.print_help()
        return 2
    path: str = known._path
    module = importlib.import_module(known._module)
    sub = argparse.ArgumentParser(
        prog=f"rocketrank {path}", description=dict((p, h) for p, _, h in COMMANDS)[path]
    )
    if hasattr(module, "add_arguments_for"):
        module.add_arguments_for(path, sub)
    else:
        module.add_arguments(sub)
    args = sub.parse_args(argv[len(path.split()) :])
    args.command_path = path
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
