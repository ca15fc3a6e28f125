"""The run config's JSON Schema, for editors: ``configs/run_config.schema.json``.

Pydantic derives the schema from the sections (keys, types, ranges, defaults, enum
values; ``additionalProperties: false`` everywhere); each key's description is taken
from its section's ``Attributes:`` docstring, so editors show the same text as the
code. A YAML language server picks it up with a first line
``# yaml-language-server: $schema=run_config.schema.json`` in a config file, or by a
file-pattern mapping in the editor's settings.

Regenerate after changing a section (a test fails while the file is stale)::

    python -m training.config.schema          # rewrites configs/run_config.schema.json
    python -m training.config.schema --check  # exit 1 if the file is not current
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

from training.config.distill_section import DistillConfig
from training.config.model_section import ModelConfig
from training.config.run import DataConfig, OptimConfig, RunConfig
from training.config.strict import json_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "configs" / "run_config.schema.json"
SECTIONS: tuple[type, ...] = (RunConfig, DataConfig, ModelConfig, DistillConfig, OptimConfig)
_ENTRY = re.compile(r"^(?P<names>\w+(?:, \w+)*): (?P<text>.*)$")


def docstring_parts(cls: type) -> tuple[str, dict[str, str]]:
    """``cls``'s docstring as (text before ``Attributes:``, {field name: its description}).

    An entry may name several fields (``cross_layers, cross_rank: ...``); continuation
    lines (indented deeper) are joined to their entry.
    """
    doc = inspect.cleandoc(cls.__doc__ or "")
    head, _, attributes = doc.partition("\nAttributes:\n")
    described: dict[str, str] = {}
    names: list[str] = []
    for line in attributes.splitlines():
        entry = _ENTRY.match(line.strip()) if not line.startswith("        ") else None
        if entry:
            names = entry["names"].split(", ")
            for name in names:
                described[name] = entry["text"]
        elif line.strip() and names:
            for name in names:
                described[name] += " " + line.strip()
    return " ".join(head.split()), described


def run_config_schema() -> dict[str, Any]:
    """The JSON Schema of a run config YAML file (with descriptions from the docstrings)."""
    schema = json_schema(RunConfig)
    definitions = schema.get("$defs", {})
    for cls in SECTIONS:
        node = schema if cls is RunConfig else definitions[cls.__name__]
        summary, described = docstring_parts(cls)
        node["description"] = summary
        fields = cls.__pydantic_fields__  # type: ignore[attr-defined]
        aliases = {name: info.alias or name for name, info in fields.items()}
        for name, text in described.items():
            key = aliases.get(name)
            if key is not None and key in node["properties"]:
                node["properties"][key]["description"] = text
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    """The file's exact content: the schema as sorted, indented JSON."""
    return json.dumps(run_config_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file is not current, write nothing"
    )
    parser.add_argument("--out", type=Path, default=SCHEMA_FILE, help="where to write")
    args = parser.parse_args(argv)
    text = schema_text()
    if args.check:
        current = args.out.exists() and args.out.read_text() == text
        if not current:
            print(f"{args.out} is stale: run python -m training.config.schema", file=sys.stderr)
        return 0 if current else 1
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
