"""The artifact directory's layout and its manifest.

One artifact is one directory holding an exported light net and everything the
service needs to turn raw request values into its inputs::

    manifest.json      what this is (Manifest), sha256 of every other file
    encoder.json       FeatureEncoder.state() of the served features, except that
                       vocabulary keys live in
    vocabs.npz         the vocabularies in binary (see ``models.contract.encoder_files``);
                       absent when no served feature has a vocabulary
    model.pt2          format ``export`` (the default), mlp: a ``torch.export`` program
                       (``torch.export.save``), forward(features) -> logits [B] with a
                       dynamic batch dimension (``models.contract.programs``)
    user_vector.pt2    format ``export``, two_tower: the user tower program
    item_vector.pt2    format ``export``, two_tower: the item tower program (logit =
                       item vector · user vector, so no third program is stored)
    model.pt           format ``torchscript`` (deprecated by torch 2.13, still loaded):
                       TorchScript module, forward(features) -> logits [B] (+ the
                       two-tower methods)
    item_ids.npy       two-tower only: int64 [N], sorted raw item ids
    item_vectors.npy   two-tower only: float32 [N, d], scale already applied —
                       or, in int8 artifacts, int8 codes [N, d] with
    item_vector_qparams.npy  float16 [N, 1]: per-row scale, so
                       vector = codes · scale (the loader dequantises:
                       ``Artifact.item_vectors`` is always float32; artifacts
                       written before this used uint8 codes and [N, 2]
                       (scale, offset), still accepted; an int8 artifact
                       whose parity needed it stores float16 vectors)

The manifest lists the sha256 of every other file (:func:`checksum_files`) and is
itself signed by ``manifest.sig`` (``models.contract.signing``). Reading or writing
it here checks its keys and values only: :func:`models.contract.verify.verify_artifact`
checks an artifact, :func:`models.contract.artifact.load_artifact` loads one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from models.contract.signing import SIGNATURE_FILE
from models.provenance import sha256_bytes, sha256_file, sha256_files  # noqa: F401 (re-exported for the service)

MANIFEST_FILE = "manifest.json"
# Not listed in the manifest (it signs the manifest): the one file besides it.
_UNLISTED = (MANIFEST_FILE, SIGNATURE_FILE)
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024
ENCODER_FILE = "encoder.json"
VOCABS_FILE = "vocabs.npz"
MODEL_FILE = "model.pt"
PROGRAM_FILE = "model.pt2"
USER_PROGRAM_FILE = "user_vector.pt2"
ITEM_PROGRAM_FILE = "item_vector.pt2"
ITEM_IDS_FILE = "item_ids.npy"
ITEM_VECTORS_FILE = "item_vectors.npy"
ITEM_VECTOR_QPARAMS_FILE = "item_vector_qparams.npy"

STAGES = ("coarse", "fine")
KINDS = ("two_tower", "mlp")
FORMATS = ("export", "torchscript")
QUANTIZATIONS = ("none", "int8")
SIDES = ("user", "item", "context", "cross")

_MODEL_FILES = {
    ("mlp", "torchscript"): (MODEL_FILE,),
    ("two_tower", "torchscript"): (MODEL_FILE,),
    ("mlp", "export"): (PROGRAM_FILE,),
    ("two_tower", "export"): (USER_PROGRAM_FILE, ITEM_PROGRAM_FILE),
}
_ITEM_FILES = {"mlp": (), "two_tower": (ITEM_IDS_FILE, ITEM_VECTORS_FILE)}


def model_files(kind: str, format: str) -> tuple[str, ...]:
    """The model file(s) an artifact of ``kind`` and ``format`` holds."""
    return _MODEL_FILES[(kind, format)]


def required_files(kind: str, format: str) -> tuple[str, ...]:
    """Every file an artifact of ``kind`` and ``format`` must list in its manifest."""
    return (ENCODER_FILE, *model_files(kind, format), *_ITEM_FILES[kind])


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
        format: serialisation of the model: ``export`` (``torch.export`` programs,
            ``*.pt2``) or ``torchscript`` (``model.pt``, deprecated by torch 2.13).
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


# --------------------------------------------------------------------------- reading


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
