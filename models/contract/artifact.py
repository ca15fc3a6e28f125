"""Loading an exported artifact: :func:`load_artifact` and the :class:`Artifact` it returns.

The directory layout and the manifest are described in ``models.contract.manifest``,
the encoder files in ``models.contract.encoder_files``, the checks in
``models.contract.verify``.

:func:`load_artifact` first checks the ed25519 signature ``manifest.sig`` over
the manifest's exact bytes (``models.contract.signing``) against the caller's
public key, before the manifest is parsed and long before ``model.pt`` is
opened; an unsigned artifact is refused unless the caller allows it. It then
verifies every checksum and the feature-spec hash (from ``encoder.json``'s specs
alone) *before* it decodes ``vocabs.npz`` or hands the model to its loader:
``torch.export.load`` for format ``export`` (the default; the archive is checked for
pickled payloads first, ``models.contract.programs``), ``torch.jit.load`` for the
deprecated ``torchscript``. Each file is read once into memory and the very bytes that
were hashed are the bytes that get parsed, so a file swapped between check and
load cannot slip through. Nothing is unpickled: ``torch.export`` archives without
pickled members, TorchScript archives and ``.npy`` files (``allow_pickle=False``) only.

Only numpy, torch, cryptography (signatures) and the standard library are
imported here and by the contract modules above, so the service can load an
artifact without importing model or training code.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.contract.features import FeatureEncoder
from models.contract.manifest import (
    ITEM_IDS_FILE,
    ITEM_VECTOR_QPARAMS_FILE,
    ITEM_VECTORS_FILE,
    MODEL_FILE,
    ArtifactError,
    Manifest,
    _parse_manifest,
    _read_manifest_bytes,
    model_files,
)
from models.contract.programs import ExportedScorer, load_scorer
from models.contract.verify import PublicKeyLike, _read_verified, _verified_encoder, check_signature

_TWO_TOWER_METHODS = ("user_vector", "item_vector")


@dataclass(frozen=True)
class Artifact:
    """A verified, loaded artifact.

    Attributes:
        path: the artifact directory.
        manifest: its manifest.
        encoder: FeatureEncoder of the served features (``transform`` raw columns
            with it, then ``torch.from_numpy``, then call ``module``).
        module: the light net, an :class:`~models.contract.programs.ExportedScorer`
            (format ``export``) or a TorchScript module; either way
            ``module(features) -> Tensor[B]`` logits and, for two-tower models,
            ``module.user_vector(features) -> Tensor[B, d]`` and
            ``module.item_vector(features) -> Tensor[N, d]``.
        item_ids: two-tower only: int64 ``[N]`` sorted raw item ids, else ``None``.
        item_vectors: two-tower only: float32 ``[N, d]`` (scale applied), so
            ``logits = item_vectors @ user_vector``; else ``None``.
    """

    path: Path
    manifest: Manifest
    encoder: FeatureEncoder
    module: ExportedScorer | torch.jit.ScriptModule
    item_ids: np.ndarray | None = None
    item_vectors: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def encode(
        self, columns: Mapping[str, Any], names: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Raw columns -> model inputs with the training encoder.

        Args:
            columns: raw values by feature name.
            names: encode only these features (e.g. the user side for
                ``user_vector``); default every served feature.
        """
        arrays = self.encoder.transform(columns, names=names)
        return {k: torch.from_numpy(v) for k, v in arrays.items()}


def _load_npy(directory: Path, fname: str, data: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise ArtifactError(
            f"artifact {directory}: {fname} is not a plain .npy array: {exc}"
        ) from exc


def dequantize_rows(codes: np.ndarray, qparams: np.ndarray) -> np.ndarray:
    """8-bit codes ``[N, d]`` and per-row parameters -> float32 ``[N, d]``.

    ``int8`` codes with ``[N, 1]`` scales: ``codes · scale``; ``uint8`` codes with
    ``[N, 2]`` (scale, offset), the earlier layout: ``codes · scale + offset``.
    """
    scale = qparams[:, 0:1].astype(np.float32)
    vectors = codes.astype(np.float32) * scale
    if codes.dtype == np.uint8:
        vectors += qparams[:, 1:2].astype(np.float32)
    return vectors


def _load_item_table(
    directory: Path, manifest: Manifest, contents: dict[str, bytes]
) -> tuple[np.ndarray, np.ndarray]:
    ids = _load_npy(directory, ITEM_IDS_FILE, contents[ITEM_IDS_FILE])
    vectors = _load_npy(directory, ITEM_VECTORS_FILE, contents[ITEM_VECTORS_FILE])
    if ids.dtype != np.int64 or ids.ndim != 1:
        raise ArtifactError(
            f"artifact {directory}: {ITEM_IDS_FILE} must be int64 [N], "
            f"got {ids.dtype} {list(ids.shape)}"
        )
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise ArtifactError(f"artifact {directory}: {ITEM_IDS_FILE} is not sorted and unique")
    quantized = vectors.dtype in (np.int8, np.uint8)
    if quantized:
        if manifest.quantization != "int8" or ITEM_VECTOR_QPARAMS_FILE not in contents:
            raise ArtifactError(
                f"artifact {directory}: {ITEM_VECTORS_FILE} holds 8-bit codes but the artifact "
                f"is not int8 or lacks {ITEM_VECTOR_QPARAMS_FILE}"
            )
        qparams = _load_npy(directory, ITEM_VECTOR_QPARAMS_FILE, contents[ITEM_VECTOR_QPARAMS_FILE])
        width = 1 if vectors.dtype == np.int8 else 2
        if qparams.dtype != np.float16 or qparams.shape != (len(vectors), width):
            raise ArtifactError(
                f"artifact {directory}: {ITEM_VECTOR_QPARAMS_FILE} must be float16 "
                f"[{len(vectors)}, {width}] for {vectors.dtype} codes, "
                f"got {qparams.dtype} {list(qparams.shape)}"
            )
    elif not (
        vectors.dtype == np.float32
        or (vectors.dtype == np.float16 and manifest.quantization == "int8")
    ):
        raise ArtifactError(
            f"artifact {directory}: {ITEM_VECTORS_FILE} must be float32 (or 8-bit codes or "
            f"float16 in an int8 artifact), got {vectors.dtype}"
        )
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ArtifactError(
            f"artifact {directory}: {ITEM_VECTORS_FILE} must be [{len(ids)}, d], "
            f"got {list(vectors.shape)}"
        )
    if quantized:
        vectors = dequantize_rows(vectors, qparams)
    return ids, np.ascontiguousarray(vectors, dtype=np.float32)


def _first_call(directory: Path, module: Any, encoder: FeatureEncoder) -> None:
    """Score one default row: int8 modules dequantise their tables on the first call,
    which must not race with concurrent requests; a program that does not take the
    encoder's own inputs is refused here."""
    row = {k: torch.from_numpy(v) for k, v in encoder.defaults(encoder.specs).items()}
    try:
        with torch.no_grad():
            module(row)
    except Exception as exc:  # a module that cannot score its own default row is broken
        raise ArtifactError(
            f"artifact {directory}: the model fails on a default row: {exc}"
        ) from exc


def _load_torchscript(
    directory: Path, manifest: Manifest, encoder: FeatureEncoder, data: bytes
) -> torch.jit.ScriptModule:
    """``model.pt`` of a ``torchscript`` artifact (deprecated by torch 2.13, still served)."""
    try:
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError and others for a bad archive
        raise ArtifactError(
            f"artifact {directory}: {MODEL_FILE} is not a loadable TorchScript archive: {exc}"
        ) from exc
    module.eval()
    if manifest.quantization == "int8":
        _first_call(directory, module, encoder)
    if manifest.kind == "two_tower":
        missing = [m for m in _TWO_TOWER_METHODS if not hasattr(module, m)]
        if missing:
            raise ArtifactError(
                f"artifact {directory}: {MODEL_FILE} of a two_tower model lacks method(s) {missing}"
            )
    return module


def load_artifact(
    path: str | Path,
    expected_spec_hash: str | None = None,
    *,
    public_key: PublicKeyLike | None = None,
    allow_unsigned: bool = False,
) -> Artifact:
    """Verify and load an artifact directory.

    Verification happens before anything is deserialised: first the ed25519
    signature over the manifest's bytes (before the manifest is even parsed), then
    manifest keys and values, every file's sha256 (missing or unlisted files are refused), the
    encoder's spec hash against the manifest (and against ``expected_spec_hash``
    when given), the feature sides and types. Only then are the model files given to
    their loader (``torch.export.load`` after the archive check of
    ``models.contract.programs``, or ``torch.jit.load``) — from the same bytes that
    were hashed.

    Args:
        path: the artifact directory (e.g. ``ModelRepository.resolve_current(name)``).
        expected_spec_hash: spec hash the caller's features were built for.
        public_key: ed25519 public key (or a PEM file path) the manifest must be
            signed with; a signature that does not verify is always refused.
        allow_unsigned: accept an artifact without ``manifest.sig`` (or load without a
            key). Loading a model runs the archive's code, so only for artifacts
            whose writer is trusted by other means (tests, legacy fixtures).

    Returns:
        The loaded :class:`Artifact` (module in eval mode, on CPU).

    Raises:
        ArtifactError: the artifact is missing, malformed or fails verification.
    """
    # Resolve once: a `current` symlink may flip while the files are read.
    directory = Path(path).resolve()
    manifest_bytes = _read_manifest_bytes(directory)
    check_signature(directory, manifest_bytes, public_key, allow_unsigned)
    manifest = _parse_manifest(directory, manifest_bytes)
    contents = _read_verified(directory, manifest)
    encoder = _verified_encoder(directory, manifest, contents, expected_spec_hash)
    if manifest.format == "export":
        files = {f: contents[f] for f in model_files(manifest.kind, manifest.format)}
        module: Any = load_scorer(f"artifact {directory}", manifest.kind, files)
        _first_call(directory, module, encoder)
    else:
        module = _load_torchscript(directory, manifest, encoder, contents[MODEL_FILE])
    if manifest.kind == "two_tower":
        item_ids, item_vectors = _load_item_table(directory, manifest, contents)
    else:
        item_ids = item_vectors = None
    return Artifact(directory, manifest, encoder, module, item_ids, item_vectors)
