"""The exported-artifact contract: layout, manifest, verification and loading.

One artifact is one directory holding an exported light net and everything the
service needs to turn raw request values into its inputs::

    manifest.json      what this is (Manifest), sha256 of every other file
    encoder.json       FeatureEncoder.state() of the served features, except that
                       vocabulary keys live in
    vocabs.npz         the vocabularies in binary (see :func:`encoder_files`);
                       absent when no served feature has a vocabulary
    model.pt           TorchScript module: forward(features) -> logits [B]
    item_ids.npy       two-tower only: int64 [N], sorted raw item ids
    item_vectors.npy   two-tower only: float32 [N, d], scale already applied —
                       or, in int8 artifacts, int8 codes [N, d] with
    item_vector_qparams.npy  float16 [N, 1]: per-row scale, so
                       vector = codes · scale (the loader dequantises:
                       ``Artifact.item_vectors`` is always float32; artifacts
                       written before this used uint8 codes and [N, 2]
                       (scale, offset), still accepted; an int8 artifact
                       whose parity needed it stores float16 vectors)

:func:`load_artifact` first checks the ed25519 signature ``manifest.sig`` over
the manifest's exact bytes (``models.contract.signing``) against the caller's
public key, before the manifest is parsed and long before ``model.pt`` is
opened; an unsigned artifact is refused unless the caller allows it. It then
verifies every checksum and the feature-spec hash (from ``encoder.json``'s specs
alone) *before* it decodes ``vocabs.npz`` or hands ``model.pt`` to
``torch.jit.load``. Each file is read once into memory and the very bytes that
were hashed are the bytes that get parsed, so a file swapped between check and
load cannot slip through. Nothing is unpickled:
TorchScript archives and ``.npy`` files (``allow_pickle=False``) only.

Only numpy, torch, cryptography (signatures) and the standard library are
imported here, so the service can load an artifact without importing model or
training code.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from models.contract.features import ContractError, FeatureEncoder, FeatureSpec
from models.contract.signing import (
    SIGNATURE_FILE,
    SigningError,
    load_public_key,
    read_signature_file,
    verify_manifest,
)
from models.provenance import sha256_bytes, sha256_file, sha256_files  # noqa: F401 (re-exported for the service)

MANIFEST_FILE = "manifest.json"
# Not listed in the manifest (it signs the manifest): the one file besides it.
_UNLISTED = (MANIFEST_FILE, SIGNATURE_FILE)
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024
ENCODER_FILE = "encoder.json"
VOCABS_FILE = "vocabs.npz"
MODEL_FILE = "model.pt"
ITEM_IDS_FILE = "item_ids.npy"
ITEM_VECTORS_FILE = "item_vectors.npy"
ITEM_VECTOR_QPARAMS_FILE = "item_vector_qparams.npy"

STAGES = ("coarse", "fine")
KINDS = ("two_tower", "mlp")
FORMATS = ("torchscript",)
QUANTIZATIONS = ("none", "int8")
SIDES = ("user", "item", "context", "cross")

_REQUIRED_FILES = {
    "mlp": (ENCODER_FILE, MODEL_FILE),
    "two_tower": (ENCODER_FILE, MODEL_FILE, ITEM_IDS_FILE, ITEM_VECTORS_FILE),
}
_TWO_TOWER_METHODS = ("user_vector", "item_vector")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A file name in the manifest must be a plain name inside the artifact directory.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ArtifactError(ValueError):
    """An artifact is missing, malformed or fails verification.

    The message names the artifact directory, the file and, for checksum or hash
    mismatches, the expected and the actual value.
    """


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` of an artifact.

    Attributes:
        name: model name in the repository (e.g. ``coarse``).
        version: version directory name, UTC ``YYYYmmddTHHMMSSZ`` (+ ``-N``).
        created_at: ISO-8601 UTC time of the export.
        task: training task (e.g. ``ctr``).
        stage: ``coarse`` or ``fine``.
        kind: ``two_tower`` or ``mlp``.
        format: serialisation of ``model.pt`` (``torchscript``).
        quantization: ``none`` or ``int8``.
        features: served feature names by side (``user``, ``item``, ``context``; an
            MLP light net may also serve ``cross`` user×item features).
        feature_types: feature name -> FeatureType value.
        spec_hash: ``FeatureEncoder.spec_hash()`` of ``encoder.json``.
        metrics: evaluation metrics copied from the training run.
        params: number of parameters of the exported light net.
        files: file name -> sha256 hex digest, every file except the manifest.
        git_commit: commit of the code that trained/exported, ``None`` outside git.
        rocketrank_version: package version that wrote the artifact.
    """

    name: str
    version: str
    created_at: str
    task: str
    stage: str
    kind: str
    format: str
    quantization: str
    features: dict[str, list[str]]
    feature_types: dict[str, str]
    spec_hash: str
    metrics: dict[str, Any]
    params: int
    files: dict[str, str]
    git_commit: str | None
    rocketrank_version: str

    @property
    def feature_names(self) -> list[str]:
        """All served features: user, context, item, then cross (user×item) features."""
        return [
            n for side in ("user", "context", "item", "cross") for n in self.features.get(side, [])
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_FILE) -> Manifest:
        """Validate a parsed manifest; every problem raises ArtifactError naming the key."""
        if not isinstance(data, Mapping):
            raise ArtifactError(f"{where}: expected a JSON object, got {type(data).__name__}")
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ArtifactError(f"{where}: unknown key(s) {unknown}")
        missing = sorted(set(allowed) - set(data))
        if missing:
            raise ArtifactError(f"{where}: missing key(s) {missing}")
        for key in ("name", "version", "created_at", "task", "rocketrank_version"):
            if not isinstance(data[key], str) or not data[key]:
                raise ArtifactError(f"{where}: {key!r} must be a non-empty string")
        for key, allowed_values in (
            ("stage", STAGES),
            ("kind", KINDS),
            ("format", FORMATS),
            ("quantization", QUANTIZATIONS),
        ):
            if data[key] not in allowed_values:
                raise ArtifactError(
                    f"{where}: {key} {data[key]!r} is not one of {list(allowed_values)}"
                )
        features = data["features"]
        if not isinstance(features, Mapping) or set(features) - set(SIDES):
            raise ArtifactError(f"{where}: 'features' must map a subset of {list(SIDES)} to lists")
        for side, names in features.items():
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ArtifactError(f"{where}: features[{side!r}] must be a list of names")
        if not isinstance(data["feature_types"], Mapping):
            raise ArtifactError(f"{where}: 'feature_types' must be an object")
        if not isinstance(data["spec_hash"], str) or not _SHA256.match(data["spec_hash"]):
            raise ArtifactError(f"{where}: 'spec_hash' must be a sha256 hex digest")
        if not isinstance(data["metrics"], Mapping):
            raise ArtifactError(f"{where}: 'metrics' must be an object")
        if not isinstance(data["params"], int) or isinstance(data["params"], bool):
            raise ArtifactError(f"{where}: 'params' must be an integer parameter count")
        files = data["files"]
        if not isinstance(files, Mapping):
            raise ArtifactError(f"{where}: 'files' must map file names to sha256 digests")
        for fname, digest in files.items():
            if not _PLAIN_NAME.match(fname) or fname in _UNLISTED:
                raise ArtifactError(f"{where}: 'files' lists an invalid file name {fname!r}")
            if not isinstance(digest, str) or not _SHA256.match(digest):
                raise ArtifactError(f"{where}: files[{fname!r}] is not a sha256 hex digest")
        if data["git_commit"] is not None and not isinstance(data["git_commit"], str):
            raise ArtifactError(f"{where}: 'git_commit' must be a string or null")
        return cls(
            **{
                **data,
                "features": {k: list(v) for k, v in features.items()},
                "feature_types": dict(data["feature_types"]),
                "metrics": dict(data["metrics"]),
                "files": dict(files),
            }
        )


@dataclass(frozen=True)
class Artifact:
    """A verified, loaded artifact.

    Attributes:
        path: the artifact directory.
        manifest: its manifest.
        encoder: FeatureEncoder of the served features (``transform`` raw columns
            with it, then ``torch.from_numpy``, then call ``module``).
        module: TorchScript module; ``forward(features) -> Tensor[B]`` logits and, for
            two-tower models, ``user_vector(features) -> Tensor[B, d]`` and
            ``item_vector(features) -> Tensor[N, d]``.
        item_ids: two-tower only: int64 ``[N]`` sorted raw item ids, else ``None``.
        item_vectors: two-tower only: float32 ``[N, d]`` (scale applied), so
            ``logits = item_vectors @ user_vector``; else ``None``.
    """

    path: Path
    manifest: Manifest
    encoder: FeatureEncoder
    module: torch.jit.ScriptModule
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


# --------------------------------------------------------------------------- encoder files


def encoder_files(encoder: FeatureEncoder) -> dict[str, bytes]:
    """The encoder as artifact files: ``{ENCODER_FILE: json, VOCABS_FILE: npz}``.

    ``encoder.json`` is ``encoder.state()`` with each vocabulary's ``keys``
    replaced by ``{"is_int", "size", "file": "vocabs.npz"}``; the keys go to
    ``vocabs.npz`` (deflate-compressed, no pickles). Sorted integer keys are
    stored as ``<name>.first`` (int64 ``[≤1]``) and ``<name>.deltas`` (gaps
    between consecutive keys in the narrowest unsigned dtype that holds them):
    on 16,800 random 40-bit ids this is 69 KB against 215 KB of JSON text and
    82 KB of compressed int64. String keys are stored as ``<name>.keys`` (unicode).
    ``vocabs.npz`` is omitted when no feature has a vocabulary.
    """
    state = encoder.state()
    arrays: dict[str, np.ndarray] = {}
    for name, vocab in encoder.vocabs.items():
        keys = vocab.keys
        if vocab.is_int:
            as_unsigned = keys.astype(np.int64).view(np.uint64)
            # sorted ascending as int64, so the wrap-around uint64 difference is the exact gap
            deltas = np.diff(as_unsigned)
            top = int(deltas.max()) if len(deltas) else 0
            dtype = next(
                t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if top <= np.iinfo(t).max
            )
            arrays[f"{name}.first"] = keys[:1].astype(np.int64)
            arrays[f"{name}.deltas"] = deltas.astype(dtype)
        else:
            arrays[f"{name}.keys"] = np.asarray(keys, dtype=str)
        state["vocabs"][name] = {"is_int": vocab.is_int, "size": len(keys), "file": VOCABS_FILE}
    files = {ENCODER_FILE: json.dumps(state, separators=(",", ":"), sort_keys=True).encode()}
    if arrays:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        files[VOCABS_FILE] = buffer.getvalue()
    return files


def _vocab_keys(
    where: str, vocabs: Mapping[str, np.ndarray], name: str, is_int: bool
) -> np.ndarray:
    try:
        if not is_int:
            keys = vocabs[f"{name}.keys"]
            if keys.dtype.kind != "U":
                raise ArtifactError(f"{where}: {name}.keys must be unicode, got {keys.dtype}")
            return keys
        first, deltas = vocabs[f"{name}.first"], vocabs[f"{name}.deltas"]
    except KeyError as exc:
        raise ArtifactError(f"{where}: no array {exc} for feature {name!r}") from None
    if first.dtype != np.int64 or first.shape != ((1,) if len(deltas) or len(first) else (0,)):
        raise ArtifactError(f"{where}: {name}.first must be int64 [1] (or [0] when empty)")
    if deltas.dtype.kind != "u" or deltas.ndim != 1 or not bool(np.all(deltas > 0)):
        raise ArtifactError(f"{where}: {name}.deltas must be positive unsigned gaps")
    base = first.view(np.uint64)
    return np.concatenate([base, base + np.cumsum(deltas, dtype=np.uint64)]).view(np.int64)


def decode_encoder(
    encoder_bytes: bytes, vocabs_bytes: bytes | None, where: str = ENCODER_FILE
) -> FeatureEncoder:
    """Inverse of :func:`encoder_files`; also reads a plain ``FeatureEncoder.state()``
    (keys inline, as artifacts written before ``vocabs.npz`` have them).

    Raises:
        ArtifactError: malformed JSON or arrays, a referenced array missing, a
            size that disagrees with its array.
    """
    try:
        state = json.loads(encoder_bytes)
        sidecar = [
            (n, v) for n, v in state["vocabs"].items() if isinstance(v, dict) and "keys" not in v
        ]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{where}: {ENCODER_FILE} is invalid: {exc}") from exc
    if sidecar:
        if vocabs_bytes is None:
            raise ArtifactError(
                f"{where}: {ENCODER_FILE} refers to {VOCABS_FILE}, which is missing"
            )
        try:
            with np.load(io.BytesIO(vocabs_bytes), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (ValueError, OSError, EOFError) as exc:  # zipfile.BadZipFile is an OSError
            raise ArtifactError(f"{where}: {VOCABS_FILE} is not a plain .npz: {exc}") from exc
        for name, entry in sidecar:
            if entry.get("file") != VOCABS_FILE:
                raise ArtifactError(f"{where}: vocabulary {name!r} names no known keys file")
            keys = _vocab_keys(f"{where}: {VOCABS_FILE}", arrays, name, bool(entry.get("is_int")))
            if len(keys) != entry.get("size"):
                raise ArtifactError(
                    f"{where}: {VOCABS_FILE} holds {len(keys)} keys for {name!r}, "
                    f"{ENCODER_FILE} says {entry.get('size')}"
                )
            state["vocabs"][name] = {"is_int": bool(entry["is_int"]), "keys": keys}
    try:
        return FeatureEncoder.from_state(state)
    except (ContractError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{where}: {ENCODER_FILE} is invalid: {exc}") from exc


def read_encoder(path: str | Path) -> FeatureEncoder:
    """The encoder of an artifact directory (no checksum verification)."""
    directory = Path(path)
    vocabs = directory / VOCABS_FILE
    return decode_encoder(
        (directory / ENCODER_FILE).read_bytes(),
        vocabs.read_bytes() if vocabs.is_file() else None,
        where=f"artifact {directory}",
    )


# --------------------------------------------------------------------------- checksums


def checksum_files(directory: str | Path) -> dict[str, str]:
    """sha256 of every regular file in ``directory`` except the manifest and its
    signature (sorted by name)."""
    directory = Path(directory)
    return {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name not in _UNLISTED
    }


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` (validated by a round trip through :meth:`Manifest.from_dict`)."""
    data = manifest.to_dict()
    Manifest.from_dict(data)
    path = Path(directory) / MANIFEST_FILE
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


# --------------------------------------------------------------------------- verification


def _read_manifest_bytes(directory: Path) -> bytes:
    if not directory.is_dir():
        raise ArtifactError(f"artifact {directory}: not a directory")
    try:
        with open(directory / MANIFEST_FILE, "rb") as fh:
            data = fh.read(_MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ArtifactError(f"artifact {directory}: {MANIFEST_FILE} is missing") from None
    if len(data) > _MAX_MANIFEST_BYTES:
        raise ArtifactError(f"artifact {directory}: {MANIFEST_FILE} is over 16 MiB")
    return data


def _parse_manifest(directory: Path, data: bytes) -> Manifest:
    try:
        parsed = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"artifact {directory}: {MANIFEST_FILE} is not JSON: {exc}") from exc
    return Manifest.from_dict(parsed, where=f"artifact {directory}: {MANIFEST_FILE}")


def read_manifest(path: str | Path) -> Manifest:
    """Parse and validate ``path/manifest.json`` (no checksum or signature verification)."""
    directory = Path(path)
    return _parse_manifest(directory, _read_manifest_bytes(directory))


PublicKeyLike = Ed25519PublicKey | str | Path


def check_signature(
    directory: Path,
    manifest_bytes: bytes,
    public_key: PublicKeyLike | None,
    allow_unsigned: bool,
) -> bool:
    """Verify ``manifest.sig`` over ``manifest_bytes``; True if a signature verified.

    With a public key, a present signature must verify (always), and a missing one
    is refused unless ``allow_unsigned``. Without a key nothing can be verified:
    refused unless ``allow_unsigned``.

    Raises:
        ArtifactError: naming the artifact, the signature file and the fix.
    """
    where = f"artifact {directory}"
    try:
        signature = read_signature_file(directory / SIGNATURE_FILE)
    except SigningError as exc:
        raise ArtifactError(f"{where}: {exc}") from None
    if public_key is None:
        if allow_unsigned:
            return False
        raise ArtifactError(
            f"{where}: no public key to verify {SIGNATURE_FILE} with; configure one "
            "(service: ROCKETRANK_ARTIFACT_PUBLIC_KEY) or explicitly allow unsigned artifacts"
        )
    if signature is None:
        if allow_unsigned:
            return False
        raise ArtifactError(
            f"{where}: {SIGNATURE_FILE} is missing: unsigned artifacts are refused "
            "(export with --signing-key / ROCKETRANK_SIGNING_KEY)"
        )
    try:
        key = public_key
        if not isinstance(key, Ed25519PublicKey):
            key = load_public_key(key)
        verify_manifest(manifest_bytes, signature, key)
    except SigningError as exc:
        raise ArtifactError(f"{where}: {exc}") from None
    return True


def _read_verified(directory: Path, manifest: Manifest) -> dict[str, bytes]:
    """Read every listed file and check its sha256; also refuse missing/unlisted files."""
    for required in _REQUIRED_FILES[manifest.kind]:
        if required not in manifest.files:
            raise ArtifactError(
                f"artifact {directory}: {MANIFEST_FILE} does not list {required}, "
                f"which a {manifest.kind} artifact needs"
            )
    present = {p.name for p in directory.iterdir() if p.name not in _UNLISTED}
    unlisted = sorted(present - set(manifest.files))
    if unlisted:
        raise ArtifactError(
            f"artifact {directory}: file(s) {unlisted} are not listed in {MANIFEST_FILE}"
        )
    contents: dict[str, bytes] = {}
    for fname, expected in sorted(manifest.files.items()):
        file = directory / fname
        if not file.is_file():
            raise ArtifactError(f"artifact {directory}: {fname} is missing")
        data = file.read_bytes()
        actual = sha256_bytes(data)
        if actual != expected:
            raise ArtifactError(
                f"artifact {directory}: checksum mismatch for {fname}: "
                f"manifest says sha256 {expected}, file has {actual}"
            )
        contents[fname] = data
    return contents


def _verified_encoder(
    directory: Path,
    manifest: Manifest,
    contents: Mapping[str, bytes],
    expected_spec_hash: str | None,
) -> FeatureEncoder:
    where = f"artifact {directory}"
    # The spec hash covers the feature specs only: check it from the JSON before the
    # vocabularies (vocabs.npz) are decoded.
    try:
        features = json.loads(contents[ENCODER_FILE])["features"]
        actual = FeatureEncoder([FeatureSpec.from_dict(f) for f in features]).spec_hash()
    except (json.JSONDecodeError, ContractError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{where}: {ENCODER_FILE} is invalid: {exc}") from exc
    if actual != manifest.spec_hash:
        raise ArtifactError(
            f"artifact {directory}: spec hash mismatch: {MANIFEST_FILE} says "
            f"{manifest.spec_hash}, {ENCODER_FILE} hashes to {actual}"
        )
    if expected_spec_hash is not None and actual != expected_spec_hash:
        raise ArtifactError(
            f"artifact {directory}: spec hash mismatch: the caller expects "
            f"{expected_spec_hash}, the artifact has {actual}"
        )
    encoder = decode_encoder(contents[ENCODER_FILE], contents.get(VOCABS_FILE), where=where)
    for side, names in manifest.features.items():
        for n in names:
            spec = encoder.specs.get(n)
            if spec is None:
                raise ArtifactError(
                    f"artifact {directory}: feature {n!r} is in the manifest but not in "
                    f"{ENCODER_FILE}"
                )
            if str(spec.side) != side:
                raise ArtifactError(
                    f"artifact {directory}: feature {n!r} is listed under {side!r} in the "
                    f"manifest but {ENCODER_FILE} says side {str(spec.side)!r}"
                )
            if manifest.feature_types.get(n) != str(spec.type):
                raise ArtifactError(
                    f"artifact {directory}: feature {n!r} has type "
                    f"{manifest.feature_types.get(n)!r} in the manifest but {str(spec.type)!r} "
                    f"in {ENCODER_FILE}"
                )
    extra = sorted(set(encoder.specs) - set(manifest.feature_names))
    if extra:
        raise ArtifactError(
            f"artifact {directory}: {ENCODER_FILE} has feature(s) {extra} the manifest "
            "does not list as served"
        )
    return encoder


def verify_artifact(
    path: str | Path,
    expected_spec_hash: str | None = None,
    *,
    public_key: PublicKeyLike | None = None,
) -> Manifest:
    """Check manifest, every checksum and the spec hash without loading the model.

    Args:
        path: the artifact directory.
        expected_spec_hash: if given, the artifact's spec hash must equal it.
        public_key: if given, ``manifest.sig`` must verify with it (without one the
            signature is not checked: this function never loads model code;
            :func:`load_artifact` is the gate that does).

    Returns:
        The validated manifest.

    Raises:
        ArtifactError: naming the file and the expected vs actual value.
    """
    # Resolve once: a `current` symlink may flip while the files are read.
    directory = Path(path).resolve()
    manifest_bytes = _read_manifest_bytes(directory)
    if public_key is not None:
        check_signature(directory, manifest_bytes, public_key, allow_unsigned=False)
    manifest = _parse_manifest(directory, manifest_bytes)
    contents = _read_verified(directory, manifest)
    _verified_encoder(directory, manifest, contents, expected_spec_hash)
    return manifest


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


def _first_call(directory: Path, module: torch.jit.ScriptModule, encoder: FeatureEncoder) -> None:
    """Score one default row: int8 modules dequantise their tables on the first call,
    which must not race with concurrent requests."""
    row = {k: torch.from_numpy(v) for k, v in encoder.defaults(encoder.specs).items()}
    try:
        with torch.no_grad():
            module(row)
    except Exception as exc:  # a module that cannot score its own default row is broken
        raise ArtifactError(
            f"artifact {directory}: {MODEL_FILE} fails on a default row: {exc}"
        ) from exc


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
    when given), the feature sides and types. Only then is ``model.pt`` given to
    ``torch.jit.load`` — from the same bytes that were hashed.

    Args:
        path: the artifact directory (e.g. ``ModelRepository.resolve_current(name)``).
        expected_spec_hash: spec hash the caller's features were built for.
        public_key: ed25519 public key (or a PEM file path) the manifest must be
            signed with; a signature that does not verify is always refused.
        allow_unsigned: accept an artifact without ``manifest.sig`` (or load without a
            key). Loading TorchScript runs the archive's code, so only for artifacts
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
    try:
        module = torch.jit.load(io.BytesIO(contents[MODEL_FILE]), map_location="cpu")
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
        item_ids, item_vectors = _load_item_table(directory, manifest, contents)
    else:
        item_ids = item_vectors = None
    return Artifact(directory, manifest, encoder, module, item_ids, item_vectors)
