"""Export a trained run's light net into a model repository.

``export_run`` turns ``RUN/`` (written by the trainer) into one artifact
(``models/contract/manifest.py``) published atomically under ``REPO/NAME``:

1. rebuild the :class:`~models.joint.JointModel` from the run's weights and
   constructor arguments and take ``light_scorer()`` — the light net and the
   tables it reads, nothing of the booster or the privileged features;
2. fold BatchNorm, optionally quantise embedding rows to int8
   (:mod:`training.export.graph`), then serialise: ``torch.export`` programs with a
   dynamic batch (format ``export``, the default, :mod:`training.export.program`) or,
   deprecated by torch 2.13, scripted and frozen TorchScript (``torchscript``; int8
   artifacts are TorchScript only: their tables dequantise on the first call);
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
   in binary), ``manifest.json``, sign the manifest (``manifest.sig``, ed25519
   with a private key kept outside the repository: ``--signing-key`` or
   ``ROCKETRANK_SIGNING_KEY``) and publish. Without a key the export is refused
   unless ``unsigned`` is asked for (the service refuses unsigned artifacts).
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from models.contract.manifest import MODEL_FILE, Manifest, read_manifest
from models.contract.programs import load_scorer
from models.contract.repository import ModelRepository
from models.contract.signing import SIGNING_KEY_ENV, SigningError, load_private_key
from models.joint import JointModel
from training.export.errors import ExportError
from training.export.graph import prepare_scorer, to_torchscript
from training.export.int8 import Int8Plan, int8_plans
from training.export.parity import ParityRows, check_parity, held_out_rows, random_rows
from training.export.program import export_programs
from training.export.publish import ArtifactContents, catalogue
from training.export.run_loader import TrainedRun, load_run

log = logging.getLogger(__name__)

TWO_TOWER_METHODS = ("user_vector", "item_vector")
FORMATS = ("export", "torchscript")
_RANDOM_PARITY_ROWS = 2_048


@dataclass(frozen=True)
class ExportOptions:
    """What ``rocketrank export`` was asked for.

    Attributes:
        format: ``export`` (``torch.export`` programs, the default for fp32) or
            ``torchscript`` (deprecated by torch 2.13; the default, and the only format,
            for int8). ``None`` picks the default.
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
        signing_key: ed25519 private key (PEM) the manifest is signed with; default
            ``$ROCKETRANK_SIGNING_KEY``.
        unsigned: publish without a signature when no key is given (the service
            loads such artifacts only with ``ROCKETRANK_ALLOW_UNSIGNED_ARTIFACTS``).
    """

    format: str | None = None
    quantize: str = "none"
    items: Path | None = None
    keep: int | None = None
    promote: bool = True
    parity_rows: int = 50_000
    int8_min_rows: int = 0
    int8_linears: bool = True
    signing_key: Path | None = None
    unsigned: bool = False

    def __post_init__(self) -> None:
        if self.quantize not in ("none", "int8"):
            raise ExportError(f"unsupported quantization {self.quantize!r}; use none or int8")
        if self.format is None:
            object.__setattr__(
                self, "format", "torchscript" if self.quantize == "int8" else "export"
            )
        if self.format not in FORMATS:
            raise ExportError(f"unsupported format {self.format!r}; supported: {list(FORMATS)}")
        if self.format == "export" and self.quantize == "int8":
            raise ExportError(
                "int8 artifacts are written as TorchScript only (--format torchscript): their "
                "tables dequantise once on the first call, which a torch.export program cannot"
            )
        if self.keep is not None and self.keep < 1:
            raise ExportError(f"--keep must be >= 1, got {self.keep}")
        if self.int8_min_rows < 0:
            raise ExportError(f"int8_min_rows must be >= 0, got {self.int8_min_rows}")
        if self.parity_rows < 1:
            raise ExportError(f"parity_rows must be >= 1, got {self.parity_rows}")


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


@dataclass
class _Exported:
    """The module that passed parity, as files and loaded back, with its report."""

    model_files: dict[str, bytes]
    loaded: Any
    parity: dict[str, Any]
    test_auc: dict[str, float]
    plan: Int8Plan | None


def _save(module: Any) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    return buffer.getvalue()


def _serialise(
    prepared: Any, kind: str, rows: ParityRows, features: dict, options: ExportOptions
) -> tuple[dict[str, bytes], Any]:
    """The artifact's model files and the scorer loaded back from them, as the service will."""
    if options.format == "export":
        files = export_programs(prepared, kind, rows.features, features)
        return files, load_scorer("export", kind, files)
    methods = TWO_TOWER_METHODS if kind == "two_tower" else ()
    # Frozen fp32 measured fastest (bench/train/export_latency.py); int8 tables must stay
    # unfrozen so they dequantise once at load instead of being folded back to fp32.
    exported = to_torchscript(prepared, methods, freeze=options.quantize != "int8")
    model_bytes = _save(exported)
    return {MODEL_FILE: model_bytes}, torch.jit.load(io.BytesIO(model_bytes), map_location="cpu")


def _parity_rows(run: TrainedRun, served: list[str], options: ExportOptions) -> ParityRows:
    rows = held_out_rows(run, options.parity_rows)
    if rows is None:
        log.warning("run %s: no test split available; parity on random inputs", run.path)
        encoder = run.encoder.subset(served)
        rows = random_rows(encoder, served, min(options.parity_rows, _RANDOM_PARITY_ROWS))
    return rows


def _export_passing_parity(
    model: JointModel, kind: str, rows: ParityRows, options: ExportOptions
) -> _Exported:
    """Serialise the light scorer under each int8 plan in turn (one try for fp32) and
    keep the first that passes parity; re-raise the last plan's failure."""
    plans: list[Int8Plan | None] = (
        list(int8_plans(options.int8_min_rows, options.int8_linears, kind == "two_tower"))
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
        # Parity and item vectors run on the module as the service will load it.
        files, loaded = _serialise(prepared, kind, rows, model.light_features(), options)
        try:
            parity, test_auc = check_parity(
                model, loaded, rows, options.quantize, kind, plan.item_vectors if plan else None
            )
        except ExportError as exc:
            if attempt + 1 == len(plans):
                raise
            log.warning("int8 %s: %s; retrying with %s", plan, exc, plans[attempt + 1])
            continue
        if plan is not None:
            parity["int8_plan"] = asdict(plan)
        return _Exported(files, loaded, parity, test_auc, plan)
    raise AssertionError("unreachable: the last plan returns or raises")


def _export_metrics(model: JointModel, kind: str, done: _Exported, options: ExportOptions) -> dict:
    quantize = options.quantize
    metrics: dict[str, Any] = {
        "parity": done.parity,
        "quantization": quantize,
        "format": options.format,
        "model_bytes": sum(len(b) for b in done.model_files.values()),
    }
    if quantize == "int8":
        # the fp32 model.pt this artifact replaces, for the size comparison
        methods = TWO_TOWER_METHODS if kind == "two_tower" else ()
        fp32 = to_torchscript(prepare_scorer(model.light_scorer()), methods, freeze=True)
        metrics["fp32_model_bytes"] = len(_save(fp32))
    if done.test_auc:
        metrics["test_auc"] = done.test_auc
    return metrics


def _signing_key(options: ExportOptions) -> Any:
    """The private key to sign with (``None`` for an explicitly unsigned export)."""
    path = options.signing_key or os.environ.get(SIGNING_KEY_ENV) or None
    if path is None:
        if options.unsigned:
            log.warning("exporting an UNSIGNED artifact: the service refuses it by default")
            return None
        raise ExportError(
            f"no signing key: pass --signing-key PATH or set {SIGNING_KEY_ENV} "
            "(`rocketrank models keygen --out DIR` makes a key pair), or --unsigned"
        )
    try:
        return load_private_key(path)
    except SigningError as exc:
        raise ExportError(str(exc)) from None


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
    signing_key = _signing_key(options)  # before the slow steps: a bad key fails at once
    if not isinstance(run, TrainedRun):
        run = load_run(run)
    model = run.model.eval()
    kind = "two_tower" if model.two_tower else "mlp"
    served = list(model.served)
    features = model.light_features()
    encoder = run.encoder.subset(served)

    started = time.perf_counter()
    done = _export_passing_parity(model, kind, _parity_rows(run, served, options), options)
    items = (
        catalogue(run, options.items, done.loaded, encoder, features["item"], done.plan)
        if kind == "two_tower"
        else None
    )
    contents = ArtifactContents(
        name=name,
        run=run,
        kind=kind,
        format=options.format,
        quantization=options.quantize,
        model_files=done.model_files,
        encoder=encoder,
        features=features,
        catalogue=items,
        metrics={**run.metrics, "export": _export_metrics(model, kind, done, options)},
        params=sum(p.numel() for p in model.light_scorer().parameters()),
        signing_key=signing_key,
    )
    repository = ModelRepository(repo)
    version = repository.publish(name, contents.write, promote=options.promote, keep=options.keep)
    path = repository.version_dir(name, version)
    manifest = read_manifest(path)
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    log.info(
        "exported %s/%s (%s, %s, %s, %.1f MB) in %.1fs",
        name,
        version,
        kind,
        options.format,
        options.quantize,
        size / 1e6,
        time.perf_counter() - started,
    )
    return ExportResult(version, path, manifest, done.parity, done.test_auc, size)


__all__ = ["ExportError", "ExportOptions", "ExportResult", "export_run"]
