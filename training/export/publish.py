"""Publishing: the two-tower item catalogue and the artifact's files and manifest.

``write_artifact`` is the ``write`` callback ``ModelRepository.publish`` calls with
the new version's directory (``models/contract/repository.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.contract.encoder_files import encoder_files
from models.contract.feature_spec import FeatureType
from models.contract.features import FeatureEncoder
from models.contract.manifest import (
    ITEM_IDS_FILE,
    ITEM_VECTOR_QPARAMS_FILE,
    ITEM_VECTORS_FILE,
    Manifest,
    checksum_files,
    write_manifest,
)
from models.contract.signing import SIGNATURE_FILE, sign_manifest
from models.provenance import git_commit, json_safe, package_version
from training.data.schema import load_schema
from training.export.errors import ExportError
from training.export.graph import quantize_rows
from training.export.int8 import Int8Plan
from training.export.parity import ITEM_CHUNK
from training.export.run_loader import TrainedRun


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
        for start in range(0, len(sorted_ids), ITEM_CHUNK):
            part = {k: v[start : start + ITEM_CHUNK] for k, v in feats.items()}
            chunks.append(exported.item_vector(part))
    vectors = torch.cat(chunks).numpy().astype(np.float32, copy=False)
    return sorted_ids, np.ascontiguousarray(vectors)


def catalogue(
    run: TrainedRun,
    items: Path | None,
    exported: Any,
    encoder: FeatureEncoder,
    item_names: list[str],
    plan: Int8Plan | None,
) -> dict[str, np.ndarray]:
    """The two-tower item files: ``{file name: array}`` (stored as ``plan`` says)."""
    items_file = items
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


def _item_id_column(run: TrainedRun) -> str:
    schema_file = run.data_dir / "schema.yaml" if run.data_dir is not None else None
    if schema_file is not None and schema_file.is_file():
        return load_schema(schema_file).ids.item
    return str(run.config.get("item_id_column", "item_id"))


def _feature_types(encoder: FeatureEncoder) -> dict[str, str]:
    return {n: FeatureType(s.type).value for n, s in encoder.specs.items()}


@dataclass(frozen=True)
class ArtifactContents:
    """Everything one artifact version is written from.

    Attributes:
        name: model name in the repository.
        run: the exported run (task, stage).
        kind: ``mlp`` or ``two_tower``.
        format: serialisation of the model (``export`` or ``torchscript``).
        quantization: ``none`` or ``int8``.
        model_files: file name -> bytes of the serialised model (``*.pt2`` programs
            or ``model.pt``).
        encoder: the served features' encoder.
        features: side -> light-net feature names.
        catalogue: two-tower item files ``{file name: array}`` (None for an MLP).
        metrics: the run's metrics plus ``export``.
        params: light-net parameter count.
        signing_key: ed25519 private key that signs the manifest (``None``: unsigned).
    """

    name: str
    run: TrainedRun
    kind: str
    format: str
    quantization: str
    model_files: dict[str, bytes]
    encoder: FeatureEncoder
    features: dict[str, list[str]]
    catalogue: dict[str, np.ndarray] | None
    metrics: dict[str, Any]
    params: int
    signing_key: Any = None

    def write(self, directory: Path, version: str) -> None:
        """Write every file of the artifact, then the manifest (its checksums cover the
        rest), then the manifest's signature (it covers the manifest's bytes)."""
        for fname, data in self.model_files.items():
            (directory / fname).write_bytes(data)
        for fname, data in encoder_files(self.encoder).items():
            (directory / fname).write_bytes(data)
        for fname, array in (self.catalogue or {}).items():
            np.save(directory / fname, array, allow_pickle=False)
        manifest = Manifest(
            name=self.name,
            version=version,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            task=self.run.task,
            stage=self.run.stage,
            kind=self.kind,
            format=self.format,
            quantization=self.quantization,
            features={side: list(names) for side, names in self.features.items() if names},
            feature_types=_feature_types(self.encoder),
            spec_hash=self.encoder.spec_hash(),
            metrics=json_safe(self.metrics),
            params=int(self.params),
            files=checksum_files(directory),
            git_commit=git_commit(),
            rocketrank_version=package_version(),
        )
        manifest_file = write_manifest(directory, manifest)
        if self.signing_key is not None:
            signature = sign_manifest(manifest_file.read_bytes(), self.signing_key)
            (directory / SIGNATURE_FILE).write_bytes(signature)


__all__ = ["ArtifactContents", "catalogue", "item_table"]
