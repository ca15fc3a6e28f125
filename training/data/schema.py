"""The log schema: which columns are ids, labels and features, and per task which
features are privileged (visible to the booster only).

A schema is a YAML file::

    version: 1
    name: synthetic_feed
    ids:
      request: request_id        # optional; ranking metrics group by user without it
      user: user_id
      item: item_id
      timestamp: ts              # optional; used for the time split
    labels:
      click: {column: click}
      conversion: {column: conversion}
    tasks:
      ctr:
        label: click
        privileged: [user_cat_clicks_7d, user_shop_clicks_30d]
      cvr:
        label: conversion
        where: click             # train and evaluate on rows where this label is 1
        privileged: [dwell_time, reviews_viewed]
        exclude: []              # features this task never uses
    features:
      - {name: user_id, type: categorical, side: user, encoding: hash, buckets: 100000, dim: 16}
      - {name: tags, type: multi_categorical, side: item, max_len: 5, dim: 8}
      - {name: price, type: numeric, side: item, transform: log1p_standardize}

Feature keys are those of :class:`models.contract.features.FeatureSpec`.
Unknown keys anywhere are errors that name the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.contract.feature_spec import ContractError, FeatureSpec, Side


class SchemaError(ValueError):
    """The schema file itself is invalid."""


def _strict(kind: str, data: Any, allowed: set[str], required: set[str] = frozenset()) -> dict:
    if not isinstance(data, Mapping):
        raise SchemaError(f"{kind}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SchemaError(f"{kind}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(data))
    if missing:
        raise SchemaError(f"{kind}: missing required key(s) {missing}")
    return dict(data)


@dataclass(frozen=True)
class Ids:
    user: str
    item: str
    request: str | None = None
    timestamp: str | None = None


@dataclass(frozen=True)
class Label:
    name: str
    column: str


@dataclass(frozen=True)
class Task:
    """A prediction task: its label, the rows it uses and its privileged features."""

    name: str
    label: str
    privileged: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    where: str | None = None


@dataclass(frozen=True)
class Schema:
    name: str
    ids: Ids
    labels: dict[str, Label]
    tasks: dict[str, Task]
    features: tuple[FeatureSpec, ...]
    version: int = 1
    source: str | None = field(default=None, compare=False)

    # ----------------------------------------------------------------- queries
    def feature(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise SchemaError(f"unknown task {name!r}; the schema defines {sorted(self.tasks)}")
        return self.tasks[name]

    def task_features(self, task: str) -> tuple[list[str], list[str]]:
        """(served features, privileged features) of a task, in schema order."""
        t = self.task(task)
        used = [f.name for f in self.features if f.name not in t.exclude]
        priv = [n for n in used if n in t.privileged]
        served = [n for n in used if n not in t.privileged]
        return served, priv

    def label_column(self, task: str) -> str:
        return self.labels[self.task(task).label].column

    def required_columns(self) -> list[str]:
        cols = [self.ids.user, self.ids.item]
        cols += [c for c in (self.ids.request, self.ids.timestamp) if c]
        cols += [lab.column for lab in self.labels.values()]
        cols += self.feature_names
        return list(dict.fromkeys(cols))

    # ----------------------------------------------------------------- io
    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> Schema:
        top = _strict(
            "schema",
            data,
            {"version", "name", "ids", "labels", "tasks", "features"},
            {"ids", "labels", "tasks", "features"},
        )
        if top.get("version", 1) != 1:
            raise SchemaError(f"schema: unsupported version {top['version']!r}")
        ids = Ids(
            **_strict("ids", top["ids"], {"user", "item", "request", "timestamp"}, {"user", "item"})
        )
        labels = {}
        for name, spec in _strict("labels", top["labels"], set(top["labels"] or {})).items():
            spec = _strict(f"label {name!r}", spec or {}, {"column"})
            labels[name] = Label(name=name, column=spec.get("column", name))
        if not labels:
            raise SchemaError("labels: at least one label is required")
        features = []
        for i, f in enumerate(top["features"] or []):
            if not isinstance(f, Mapping) or "name" not in f:
                raise SchemaError(f"features[{i}]: each feature needs a name")
            try:
                features.append(FeatureSpec.from_dict(f))
            except ContractError as exc:
                raise SchemaError(str(exc)) from exc
        names = [f.name for f in features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SchemaError(f"features: duplicate name(s) {dup}")
        tasks = {}
        for name, spec in _strict("tasks", top["tasks"], set(top["tasks"] or {})).items():
            spec = _strict(
                f"task {name!r}", spec, {"label", "privileged", "exclude", "where"}, {"label"}
            )
            if spec["label"] not in labels:
                raise SchemaError(
                    f"task {name!r}: label {spec['label']!r} is not declared in labels"
                )
            if spec.get("where") and spec["where"] not in labels:
                raise SchemaError(f"task {name!r}: where {spec['where']!r} is not a declared label")
            for key in ("privileged", "exclude"):
                bad = sorted(set(spec.get(key) or []) - set(names))
                if bad:
                    raise SchemaError(f"task {name!r}: {key} names unknown feature(s) {bad}")
            tasks[name] = Task(
                name=name,
                label=spec["label"],
                privileged=tuple(spec.get("privileged") or ()),
                exclude=tuple(spec.get("exclude") or ()),
                where=spec.get("where"),
            )
        if not tasks:
            raise SchemaError("tasks: at least one task is required")
        return cls(
            name=str(top.get("name", "log")),
            ids=ids,
            labels=labels,
            tasks=tasks,
            features=tuple(features),
            version=1,
            source=source,
        )

    def to_dict(self) -> dict[str, Any]:
        ids = {k: v for k, v in vars(self.ids).items() if v is not None}
        return {
            "version": self.version,
            "name": self.name,
            "ids": ids,
            "labels": {k: {"column": v.column} for k, v in self.labels.items()},
            "tasks": {
                k: {
                    "label": t.label,
                    "privileged": list(t.privileged),
                    **({"exclude": list(t.exclude)} if t.exclude else {}),
                    **({"where": t.where} if t.where else {}),
                }
                for k, t in self.tasks.items()
            },
            "features": [f.to_dict() for f in self.features],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_schema(path: str | Path) -> Schema:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise SchemaError(f"schema file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise SchemaError(f"{path}: not valid YAML: {exc}") from exc
    return Schema.from_dict(data, source=str(path))


__all__ = ["Ids", "Label", "Schema", "SchemaError", "Side", "Task", "load_schema"]
