"""``REPO/NAME[@VERSION]``: naming one exported artifact on the command line."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from models.contract.artifact import Artifact, load_artifact
from models.contract.manifest import MANIFEST_FILE
from models.contract.repository import ModelRepository
from models.contract.repository_reader import RepositoryError


class ModelRefError(ValueError):
    """A model reference that names no artifact (the message says what to pass)."""


def resolve_model(ref: str | Path) -> Path:
    """The artifact directory ``ref`` names.

    Args:
        ref: ``REPO/NAME`` (the version ``current`` points at), ``REPO/NAME@VERSION``,
            or an artifact directory (one holding ``manifest.json``).

    Raises:
        ModelRefError: no such repository, model or version.
    """
    text = str(ref)
    direct = Path(text)
    if (direct / MANIFEST_FILE).is_file():
        return direct
    path_part, _, version = text.partition("@")
    model_dir = Path(path_part)
    name, root = model_dir.name, model_dir.parent
    if not name or not root.is_dir():
        raise ModelRefError(
            f"--model {text!r}: no model repository at {root}; "
            "expected REPO/NAME[@VERSION] or an artifact directory"
        )
    repository = ModelRepository(root)
    try:
        if version:
            if version not in repository.list_versions(name):
                known = ", ".join(repository.list_versions(name)) or "none"
                raise ModelRefError(
                    f"--model {text!r}: {name} has no version {version} (versions: {known})"
                )
            return repository.version_dir(name, version)
        if repository.current_version(name) is None:
            names = ", ".join(repository.names()) or "none"
            raise ModelRefError(
                f"--model {text!r}: no current version of {name!r} in {root} (models: {names})"
            )
        return repository.resolve_current(name)
    except RepositoryError as exc:
        raise ModelRefError(f"--model {text!r}: {exc}") from exc


PUBLIC_KEY_ENV = "ROCKETRANK_ARTIFACT_PUBLIC_KEY"
"""The public key the service verifies artifacts with; eval and predict read the same one."""


def load_verified(
    ref: str | Path, public_key: str | Path | None = None, allow_unsigned: bool = False
) -> Artifact:
    """Load the artifact ``ref`` names, verifying its signature like the service does.

    Args:
        ref: see :func:`resolve_model`.
        public_key: ed25519 public key file; default ``$ROCKETRANK_ARTIFACT_PUBLIC_KEY``.
        allow_unsigned: also load an artifact without a signature (a signature that
            does not verify is always refused).

    Raises:
        ModelRefError: ``ref`` names no artifact.
        ArtifactError: the signature, a checksum or the spec is wrong.
    """
    key = public_key if public_key is not None else os.environ.get(PUBLIC_KEY_ENV) or None
    return load_artifact(resolve_model(ref), public_key=key, allow_unsigned=allow_unsigned)


def add_verification_arguments(parser: argparse.ArgumentParser) -> None:
    """``--public-key`` and ``--allow-unsigned``, shared by ``eval`` and ``predict``."""
    parser.add_argument(
        "--public-key",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"ed25519 public key that checks the signature (default ${PUBLIC_KEY_ENV})",
    )
    parser.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="also score an artifact without a signature (a bad signature is always refused)",
    )
