"""``REPO/NAME[@VERSION]``: naming one exported artifact on the command line."""

from __future__ import annotations

from pathlib import Path

from models.contract.artifact import MANIFEST_FILE
from models.contract.repository import ModelRepository, RepositoryError


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
