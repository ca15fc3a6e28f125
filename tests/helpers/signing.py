"""One throwaway ed25519 key pair for the whole test session.

Artifacts written by tests are signed like the exporter signs them, and the
service under test verifies them like a deployment does: the private key path
goes into ``ROCKETRANK_SIGNING_KEY`` (read by ``rocketrank export``), the public
one into ``ROCKETRANK_ARTIFACT_PUBLIC_KEY`` (read by the service's settings).
``install_env`` is called by ``tests/conftest.py``; subprocess launchers that
drop ``ROCKETRANK_*`` add :func:`service_env` back.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from models.contract.manifest import MANIFEST_FILE
from models.contract.signing import (
    SIGNATURE_FILE,
    SIGNING_KEY_ENV,
    generate_key_pair,
    load_private_key,
    sign_manifest,
)

PUBLIC_KEY_ENV = "ROCKETRANK_ARTIFACT_PUBLIC_KEY"


def _session_keys() -> tuple[Path, Path]:
    # a subprocess of a test inherits the session's pair through the environment
    inherited = os.environ.get(SIGNING_KEY_ENV), os.environ.get(PUBLIC_KEY_ENV)
    if all(inherited) and all(Path(p).is_file() for p in inherited):
        return Path(inherited[0]), Path(inherited[1])
    directory = Path(tempfile.mkdtemp(prefix="rocketrank-test-keys-"))
    atexit.register(shutil.rmtree, directory, True)
    return generate_key_pair(directory)


PRIVATE_KEY, PUBLIC_KEY = _session_keys()


def install_env() -> None:
    """Point the exporter and the service at the session's key pair."""
    os.environ.setdefault(SIGNING_KEY_ENV, str(PRIVATE_KEY))
    os.environ.setdefault(PUBLIC_KEY_ENV, str(PUBLIC_KEY))


def service_env() -> dict[str, str]:
    """The service's public-key setting, for a subprocess started without ``ROCKETRANK_*``."""
    return {PUBLIC_KEY_ENV: str(PUBLIC_KEY)}


def sign(directory: Path, key_file: Path = PRIVATE_KEY) -> None:
    """(Re-)sign an artifact directory's manifest, as the exporter does."""
    data = (directory / MANIFEST_FILE).read_bytes()
    (directory / SIGNATURE_FILE).write_bytes(sign_manifest(data, load_private_key(key_file)))


def load_signed(path: str | Path, expected_spec_hash: str | None = None):
    """``load_artifact`` as the service calls it: the signature verified with the session key."""
    from models.contract.artifact import load_artifact

    return load_artifact(path, expected_spec_hash, public_key=PUBLIC_KEY)
