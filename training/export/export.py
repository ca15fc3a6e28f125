"""Export a trained run's light net into a model repository.

``export_run`` turns ``RUN/`` (written by the trainer) into one artifact
(``models/contract/artifact.py``) published atomically under ``REPO/NAME``:

1. rebuild the :class:`~models.joint.JointModel` from the run's weights and
   constructor arguments and take ``light_scorer()`` — the light net and the
   tables it reads, nothing of the booster or the privileged features;
2. fold BatchNorm, optionally quantise embedding rows to int8, script and
   freeze (:mod:`training.export_graph`);
3. check parity: the exported module's logits against the trained model's on
   the run's test rows (or on random valid inputs when the data is gone);
   fp32 within ``1e-5``, int8 within ``1e-2`` in probability. int8 tries
   :func:`int8_plans` in order (all tables and Linear weights; tables only;
   large tables only) and keeps the first that passes; an export that fails
   them all is refused, nothing is published;
4. for a two-tower net, compute ``item_vectors`` of the catalogue with the
   exported module itself (the item features encoded by the run's encoder),
   stored as 8-bit rows in an int8 artifact;
5. write ``encoder.json`` + ``vocabs.npz`` (served features only, vocabulary keys
   in binary), ``manifest.json`` and publish.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.contract.artifact import (
    ENCODER_FILE,
    ITEM_IDS_FILE,
    ITEM_VECTOR_QPARAMS_FILE,
    ITEM_VECTORS_FILE,
    MODEL_FILE,
    Manifest,
    checksum_files,
    encoder_files,
    read_manifest,
    write_manifest,
)
from models.contract.features import FeatureEncoder, FeatureType
from models.contract.repository import ModelRepository
from models.joint import JointModel, JointModelArgs
from training.data.schema import load_schema
from training.evaluate import auc
from training.export_graph import dequantize_rows, prepare_scorer, quantize_rows, to_torchscript

log = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-5
"""Max |logit difference| between the exported fp32 module and the trained model."""
INT8_TOLERANCE = 1e-2
"""Max |probability difference| between the exported int8 module and the trained model."""
TWO_TOWER_METHODS = ("user_vector", "item_vector")
_ITEM_CHUNK = 65_536
_RANDOM_PARITY_ROWS = 2_048
SMALL_TABLE_ROWS = 1024
"""The last int8 fallback keeps tables with fewer rows in fp32."""


class ExportError(RuntimeError):
    """The run cannot be exported (missing files, failed parity, bad item catalogue)."""


@dataclass(frozen=True)
class ExportOptions:
    """What ``rocketrank export`` was asked for.

    Attributes:
        format: serialisation of ``model.pt``; only ``torchscript`` (measured the
            fastest loadable format, see ``training/bench_export.py``).
        quantize: ``none`` or ``int8`` (8-bit embedding rows and Linear weights,
            one fp16 scale per row; fp32 compute).
        items: item catalogue (Parquet/CSV) for two-tower item vectors; default
            ``<data>/items.parquet`` of the run.
        keep: keep only the newest ``keep`` versions after publishing.
        promote: point ``current`` at the new version.
        parity_rows: test rows used for the parity check and the test AUC.
        int8_min_rows: with ``quantize="int8"``, tables with fewer rows stay fp32
            (default 0: every table is int8 unless parity needs the fallback of
            :func:`int8_plans`).
        int8_linears: with ``quantize="int8"``, try 8-bit Linear weights first.
    """

    format: str = "torchscript"
    quantize: str = "none"
    items: Path | None = None
    keep: int | None = None
    promote: bool = True
    parity_rows: int = 50_000
    int8_min_rows: int = 0
    int8_linears: bool = True

    def __post_init__(self) -> None:
        if self.format != "torchscript":
            raise ExportError(f"unsupported format {self.format!r}; supported: ['torchscript']")
        if self.quantize not in ("none", "int8"):
            raise ExportError(f"unsupported quantization {self.quantize!r}; use none or int8")
        if self.keep is not None and self.keep < 1:
            raise ExportError(f"--keep must be >= 1, got {self.keep}")
        if self.int8_min_rows < 0:
            raise ExportError(f"int8_min_rows must be >= 0, got {self.int8_min_rows}")
        if self.parity_rows < 1:
            raise ExportError(f"parity_rows must be >= 1, got {self.parity_rows}")


@dataclass
class TrainedRun:
    """A trained run as the exporter needs it.

    Attributes:
        path: the run directory.
        model: the joint model with the trained weights, eval mode.
        encoder: the run's fitted encoder (all features).
        task: training task name.
        stage: ``coarse`` or ``fine``.
        metrics: the run's evaluation metrics (``metrics.json``).
        data_dir: the run's data directory (``None`` when not recorded or gone).
        config: the run's resolved config (plain dict).
    """

    path: Path
    model: JointModel
    encoder: FeatureEncoder
    task: str
    stage: str
    metrics: dict[str, Any] = field(default_factory=dict)
    data_dir: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportResult:
    """What an export produced.

    Attributes:
        version: the published version.
        path: its directory.
        manifest: its manifest.
        parity: ``{"rows", "max_abs_diff", "tolerance", "space", "source"}``.
        test_auc: AUC of the exported and the trained scores on the parity rows
            (``{"exported", "trained"}``), empty when there were no labels.
        size_bytes: total bytes of the artifact's files.
    """

    version: str
    path: Path
    manifest: Manifest
    parity: dict[str, Any]
    test_auc: dict[str, float]
    size_bytes: int


# --------------------------------------------------------------------------- the run


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"run {path.parent}: {path.name} is missing") from None
    except json.JSONDecodeError as exc:
        raise ExportError(f"run {path.parent}: {path.name} is not JSON: {exc}") from exc


def load_run(run_dir: str | Path) -> TrainedRun:
    """Load a trained run directory (``docs/INTERNALS.md``, "Trainer → export").

    Expects ``model.pt`` (a ``weights_only``-loadable dict with ``model``: the
    state dict and ``model_args``: ``JointModelArgs.to_dict()``), ``encoder.json``,
    ``metrics.json`` and ``config.json`` (the resolved run config with ``task``,
    ``stage`` and ``data_dir``).

    Raises:
        ExportError: naming the missing or invalid file.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ExportError(f"run {path}: not a directory")
    model_file = path / "model.pt"
    if not model_file.is_file():
        raise ExportError(f"run {path}: model.pt is missing (did training finish?)")
    blob = torch.load(model_file, map_location="cpu", weights_only=True)
    if not isinstance(blob, Mapping) or "model" not in blob or "model_args" not in blob:
        raise ExportError(f"run {path}: model.pt must hold 'model' and 'model_args'")
    try:
        model = JointModel(JointModelArgs.from_dict(blob["model_args"]))
        model.load_state_dict(blob["model"])
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ExportError(f"run {path}: model.pt does not rebuild the model: {exc}") from exc
    model.eval()
    encoder = FeatureEncoder.load(str(path / ENCODER_FILE))
    config = _read_json(path / "config.json") if (path / "config.json").is_file() else {}
    metrics = _read_json(path / "metrics.json") if (path / "metrics.json").is_file() else {}
    task = str(config.get("task", blob.get("task", "ctr")))
    stage = str(config.get("stage") or ("coarse" if model.two_tower else "fine"))
    data = config.get("data_dir")
    data_dir = Path(data) if isinstance(data, str) and data else None
    return TrainedRun(path, model, encoder, task, stage, metrics, data_dir, config)


# --------------------------------------------------------------------------- parity rows


@dataclass
class ParityRows:
    """Encoded rows to compare trained and exported scores on.

    Attributes:
        features: name -> encoded tensor (served features at least).
        labels: float32 ``[N]`` task labels, or ``None`` for random rows.
        source: ``test split`` or ``random``.
    """

    features: dict[str, Tensor]
    labels: Tensor | None
    source: str


def random_rows(encoder: FeatureEncoder, names: list[str], rows: int, seed: int = 0) -> ParityRows:
    """Valid random inputs for ``names``: every index in its table's range (padding
    and OOV included), numerics standard normal."""
    g = torch.Generator().manual_seed(seed)
    features: dict[str, Tensor] = {}
    for name in names:
        spec = encoder.specs[name]
        if spec.is_sparse:
            high = encoder.cardinality(name)
            shape = (rows, spec.max_len) if spec.is_bag else (rows,)
            features[name] = torch.randint(0, high, shape, generator=g)
        else:
            features[name] = torch.randn(rows, generator=g)
    return ParityRows(features, None, "random")


def held_out_rows(run: TrainedRun, rows: int) -> ParityRows | None:
    """The first ``rows`` test rows of the run's task, encoded by the run's encoder,
    or ``None`` when the run's data directory or test split is unavailable."""
    if run.data_dir is None or not run.data_dir.is_dir():
        return None
    from training.data.dataset import encode_split
    from training.data.readers import find_data_files, read_columns

    files = find_data_files(run.data_dir)
    if "test" not in files.splits or files.schema is None:
        return None
    schema = load_schema(files.schema)
    columns = read_columns(files.splits["test"], schema)
    split = encode_split(schema, run.encoder, columns, name="test").for_task(schema, run.task)
    n = min(rows, len(split))
    index = torch.arange(n)
    label_name = schema.task(run.task).label
    features = {k: v.index_select(0, index) for k, v in split.features.items()}
    labels = split.labels[label_name].index_select(0, index)
    return ParityRows(features, labels, "test split")


# --------------------------------------------------------------------------- steps


def _logits(module: Any, features: Mapping[str, Tensor], chunk: int = _ITEM_CHUNK) -> Tensor:
    n = int(next(iter(features.values())).shape[0])
    outs = []
    with torch.inference_mode():
        for start in range(0, n, chunk):
            part = {k: v[start : start + chunk] for k, v in features.items()}
            outs.append(module(part))
    return torch.cat(outs) if outs else torch.zeros(0)


def _stored_vectors(vectors: Tensor, storage: str) -> Tensor:
    """Item vectors ``[N, d]`` as ``load_artifact`` returns them after ``storage``."""
    if storage == "int8":
        return dequantize_rows(*quantize_rows(vectors))
    if storage == "fp16":
        return vectors.to(torch.float16).to(torch.float32)
    return vectors


def _served_two_tower_logits(
    exported: Any, features: Mapping[str, Tensor], item_vectors: str
) -> Tensor:
    """Logits as the coarse service computes them: stored item vector · user vector."""
    n = int(next(iter(features.values())).shape[0])
    outs = []
    with torch.inference_mode():
        for start in range(0, n, _ITEM_CHUNK):
            part = {k: v[start : start + _ITEM_CHUNK] for k, v in features.items()}
            u = exported.user_vector(part)
            v = _stored_vectors(exported.item_vector(part), item_vectors)
            outs.append((u * v).sum(dim=1))
    return torch.cat(outs) if outs else torch.zeros(0)


def check_parity(
    trained: torch.nn.Module,
    exported: Any,
    rows: ParityRows,
    quantize: str,
    kind: str = "mlp",
    item_vectors: str | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Compare exported and trained scores; raise ExportError beyond the tolerance.

    fp32 is compared on logits (``1e-5``); int8 on probabilities (``1e-2``),
    because int8 rounding error grows with the logit's magnitude while what the
    ranking consumes is the order and the probability. For two-tower models the
    serving path (stored item vector · ``user_vector``, item vectors quantised
    as in the artifact) is checked as well as ``forward``.

    Returns:
        (parity report, test AUC of both — empty without labels).
    """
    ref = _logits(trained, rows.features).double()
    paths = {"forward": _logits(exported, rows.features).double()}
    if kind == "two_tower":
        storage = item_vectors or ("int8" if quantize == "int8" else "fp32")
        paths["serving"] = _served_two_tower_logits(exported, rows.features, storage).double()
    if quantize == "int8":
        space, tolerance = "probability", INT8_TOLERANCE
        diffs = {k: (torch.sigmoid(v) - torch.sigmoid(ref)).abs() for k, v in paths.items()}
    else:
        space, tolerance = "logit", FP32_TOLERANCE
        diffs = {k: (v - ref).abs() for k, v in paths.items()}
    per_path = {k: float(d.max()) if len(d) else 0.0 for k, d in diffs.items()}
    max_diff = max(per_path.values())
    report = {
        "rows": len(ref),
        "max_abs_diff": max_diff,
        "max_abs_diff_by_path": per_path,
        "tolerance": tolerance,
        "space": space,
        "source": rows.source,
    }
    if not max_diff <= tolerance:  # also catches NaN
        raise ExportError(
            f"parity check failed on {len(ref)} {rows.source} rows: max |{space} difference| "
            f"{per_path} > {tolerance:g} between the exported and the trained light net"
        )
    aucs: dict[str, float] = {}
    if rows.labels is not None:
        y = rows.labels.numpy()
        aucs = {"exported": auc(y, paths["forward"].numpy()), "trained": auc(y, ref.numpy())}
        if "serving" in paths:
            aucs["exported_serving"] = auc(y, paths["serving"].numpy())
    return report, aucs


def item_table(
    exported: Any, encoder: FeatureEncoder, item_names: list[str], items_file: Path, id_column: str
) -> tuple[np.ndarray, np.ndarray]:
    """Item ids and vectors of a catalogue, computed by the exported module.

    Returns:
        ``item_ids int64 [N]`` sorted, ``item_vectors float32 [N, d]`` in the same order.

    Raises:
        ExportError: the file lacks a column, ids are not integers or repeat.
    """
    from training.data.readers import read_columns

    if not items_file.is_file():
        raise ExportError(f"item catalogue {items_file} does not exist (pass --items)")
    columns = read_columns(items_file, columns=[id_column, *item_names])
    missing = [c for c in [id_column, *item_names] if c not in columns]
    if missing:
        raise ExportError(f"item catalogue {items_file}: missing column(s) {missing}")
    ids = np.asarray(columns[id_column])
    if ids.dtype.kind not in "iu":
        raise ExportError(
            f"item catalogue {items_file}: {id_column!r} must be integer ids, got {ids.dtype}"
        )
    ids = ids.astype(np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    dup = np.unique(sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]])
    if len(dup):
        raise ExportError(
            f"item catalogue {items_file}: {len(dup)} item id(s) appear more than once, "
            f"e.g. {dup[:5].tolist()}"
        )
    encoded = encoder.transform({n: columns[n] for n in item_names}, names=item_names)
    feats = {n: torch.from_numpy(encoded[n][order]) for n in item_names}
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(sorted_ids), _ITEM_CHUNK):
            part = {k: v[start : start + _ITEM_CHUNK] for k, v in feats.items()}
            chunks.append(exported.item_vector(part))
    vectors = torch.cat(chunks).numpy().astype(np.float32, copy=False)
    return sorted_ids, np.ascontiguousarray(vectors)


def git_commit(cwd: Path | None = None) -> str | None:
    """HEAD of the repository holding this code, ``None`` outside git (or no git binary)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def package_version() -> str:
    try:
        return metadata.version("rocketrank")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _feature_types(encoder: FeatureEncoder) -> dict[str, str]:
    return {n: FeatureType(s.type).value for n, s in encoder.specs.items()}


# --------------------------------------------------------------------------- export


def export_run(
    run: TrainedRun | str | Path,
    repo: str | Path,
    name: str,
    options: ExportOptions | None = None,
) -> ExportResult:
    """Export a run's light net and publish it as a new version of ``repo/name``.

    Args:
        run: a :class:`TrainedRun` or its directory.
        repo: the model repository root.
        name: model name (e.g. ``coarse``, ``fine``).
        options: see :class:`ExportOptions`.

    Raises:
        ExportError: the run is unusable, parity fails or the catalogue is bad.
    """
    options = options or ExportOptions()
    if not isinstance(run, TrainedRun):
        run = load_run(run)
    model = run.model.eval()
    kind = "two_tower" if model.two_tower else "mlp"
    served = list(model.served)
    features = model.light_features()
    encoder = run.encoder.subset(served)

    started = time.perf_counter()
    methods = TWO_TOWER_METHODS if kind == "two_tower" else ()
    rows = held_out_rows(run, options.parity_rows)
    if rows is None:
        log.warning("run %s: no test split available; parity on random inputs", run.path)
        rows = random_rows(encoder, served, min(options.parity_rows, _RANDOM_PARITY_ROWS))
    plans = (
        int8_plans(options.int8_min_rows, options.int8_linears, kind == "two_tower")
        if options.quantize == "int8"
        else [None]
    )
    for attempt, plan in enumerate(plans):
        prepared = prepare_scorer(
            model.light_scorer(),
            options.quantize,
            plan.min_rows if plan else 0,
            linears=plan.linears if plan else False,
        )
        # Frozen fp32 measured fastest (training/bench_export.py); int8 tables must stay
        # unfrozen so they dequantise once at load instead of being folded back to fp32.
        exported = to_torchscript(prepared, methods, freeze=options.quantize != "int8")
        # Parity and item vectors run on the module as the service will load it.
        buffer = io.BytesIO()
        torch.jit.save(exported, buffer)
        model_bytes = buffer.getvalue()
        loaded = torch.jit.load(io.BytesIO(model_bytes), map_location="cpu")
        try:
            parity, test_auc = check_parity(
                model, loaded, rows, options.quantize, kind, plan.item_vectors if plan else None
            )
            break
        except ExportError as exc:
            if attempt + 1 == len(plans):
                raise
            log.warning("int8 %s: %s; retrying with %s", plan, exc, plans[attempt + 1])
    if plan is not None:
        parity["int8_plan"] = asdict(plan)

    catalogue = (
        _catalogue(run, options, loaded, encoder, features["item"], plan)
        if kind == "two_tower"
        else None
    )

    export_metrics: dict[str, Any] = {
        "parity": parity,
        "quantization": options.quantize,
        "model_bytes": len(model_bytes),
    }
    if options.quantize == "int8":
        # the fp32 model.pt this artifact replaces, for the size comparison
        fp32 = to_torchscript(prepare_scorer(model.light_scorer()), methods, freeze=True)
        fp32_buffer = io.BytesIO()
        torch.jit.save(fp32, fp32_buffer)
        export_metrics["fp32_model_bytes"] = len(fp32_buffer.getvalue())
    if test_auc:
        export_metrics["test_auc"] = test_auc
    metrics = {**run.metrics, "export": export_metrics}
    params = sum(p.numel() for p in model.light_scorer().parameters())

    def write(directory: Path, version: str) -> None:
        (directory / MODEL_FILE).write_bytes(model_bytes)
        for fname, data in encoder_files(encoder).items():
            (directory / fname).write_bytes(data)
        for fname, array in (catalogue or {}).items():
            np.save(directory / fname, array, allow_pickle=False)
        manifest = Manifest(
            name=name,
            version=version,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            task=run.task,
            stage=run.stage,
            kind=kind,
            format=options.format,
            quantization=options.quantize,
            features={side: list(names) for side, names in features.items() if names},
            feature_types=_feature_types(encoder),
            spec_hash=encoder.spec_hash(),
            metrics=_json_safe(metrics),
            params=int(params),
            files=checksum_files(directory),
            git_commit=git_commit(),
            rocketrank_version=package_version(),
        )
        write_manifest(directory, manifest)

    repository = ModelRepository(repo)
    version = repository.publish(name, write, promote=options.promote, keep=options.keep)
    path = repository.version_dir(name, version)
    manifest = read_manifest(path)
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    log.info(
        "exported %s/%s (%s, %s, %.1f MB) in %.1fs",
        name,
        version,
        kind,
        options.quantize,
        size / 1e6,
        time.perf_counter() - started,
    )
    return ExportResult(version, path, manifest, parity, test_auc, size)


def _catalogue(
    run: TrainedRun,
    options: ExportOptions,
    exported: Any,
    encoder: FeatureEncoder,
    item_names: list[str],
    plan: Int8Plan | None,
) -> dict[str, np.ndarray]:
    """The two-tower item files: ``{file name: array}`` (stored as ``plan`` says)."""
    items_file = options.items
    if items_file is None:
        if run.data_dir is None:
            raise ExportError(
                f"run {run.path} records no data directory; pass --items for the catalogue"
            )
        items_file = run.data_dir / "items.parquet"
    ids, vectors = item_table(exported, encoder, item_names, Path(items_file), _item_id_column(run))
    if plan is None:
        return {ITEM_IDS_FILE: ids, ITEM_VECTORS_FILE: vectors}
    if plan.item_vectors == "fp16":
        return {ITEM_IDS_FILE: ids, ITEM_VECTORS_FILE: vectors.astype(np.float16)}
    codes, scale = quantize_rows(torch.from_numpy(vectors))
    return {
        ITEM_IDS_FILE: ids,
        ITEM_VECTORS_FILE: codes.numpy(),
        ITEM_VECTOR_QPARAMS_FILE: scale.unsqueeze(1).numpy(),
    }


@dataclass(frozen=True)
class Int8Plan:
    """What ``--quantize int8`` turns into 8 bits.

    Attributes:
        min_rows: embedding tables with at least this many rows are int8.
        linears: Linear weights are int8 too.
        item_vectors: two-tower item vectors stored as ``int8`` or ``fp16``.
    """

    min_rows: int
    linears: bool
    item_vectors: str = "int8"

    def __str__(self) -> str:
        linears = "int8" if self.linears else "fp32"
        return (
            f"(tables >= {self.min_rows} rows, {linears} Linear weights, "
            f"{self.item_vectors} item vectors)"
        )


def int8_plans(min_rows: int = 0, linears: bool = True, two_tower: bool = False) -> list[Int8Plan]:
    """int8 plans from the smallest artifact to the most exact, tried in order until
    one passes parity: Linear weights are the most error per byte saved (a
    rounding error there reaches every row), small tables the least bytes. A
    two-tower net's last resort keeps its item vectors in fp16: their rounding
    reaches every served logit and no model-side plan can undo it."""
    plans = [Int8Plan(min_rows, True)] if linears else []
    plans.append(Int8Plan(min_rows, False))
    if min_rows < SMALL_TABLE_ROWS:
        plans.append(Int8Plan(SMALL_TABLE_ROWS, False))
    if two_tower:
        plans.append(replace(plans[-1], item_vectors="fp16"))
    return plans


def _item_id_column(run: TrainedRun) -> str:
    schema_file = run.data_dir / "schema.yaml" if run.data_dir is not None else None
    if schema_file is not None and schema_file.is_file():
        return load_schema(schema_file).ids.item
    return str(run.config.get("item_id_column", "item_id"))


def _json_safe(value: Any) -> Any:
    """Metrics as strict JSON (NaN/inf -> None)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


__all__ = [
    "FP32_TOLERANCE",
    "INT8_TOLERANCE",
    "ExportError",
    "ExportOptions",
    "ExportResult",
    "Int8Plan",
    "TrainedRun",
    "check_parity",
    "export_run",
    "held_out_rows",
    "int8_plans",
    "item_table",
    "load_run",
    "random_rows",
]
