"""Verification of an artifact directory before anything in it is deserialised.

:func:`check_signature` checks the ed25519 signature ``manifest.sig`` over the
manifest's exact bytes; :func:`_read_verified` reads every listed file once and
checks its sha256 (the bytes that were hashed are the bytes later parsed);
:func:`_verified_encoder` checks the feature-spec hash from ``encoder.json``'s
specs alone before ``vocabs.npz`` is decoded. :func:`verify_artifact` runs the
checks without loading the model; :func:`models.contract.artifact.load_artifact`
runs them before it loads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from models.contract.encoder_files import decode_encoder
from models.contract.feature_spec import ContractError, FeatureSpec
from models.contract.features import FeatureEncoder
from models.contract.manifest import (
    _UNLISTED,
    ENCODER_FILE,
    MANIFEST_FILE,
    VOCABS_FILE,
    ArtifactError,
    Manifest,
    _parse_manifest,
    _read_manifest_bytes,
    required_files,
)
from models.contract.signing import (
    SIGNATURE_FILE,
    SigningError,
    load_public_key,
    read_signature_file,
    verify_manifest,
)
from models.provenance import sha256_bytes

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
    for required in required_files(manifest.kind, manifest.format):
        if required not in manifest.files:
            raise ArtifactError(
                f"artifact {directory}: {MANIFEST_FILE} does not list {required}, "
                f"which a {manifest.kind} artifact of format {manifest.format} needs"
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
