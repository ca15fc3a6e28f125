"""ed25519 signatures of artifact manifests.

``manifest.json`` lists the sha256 of every other file of an artifact, so a
signature over the manifest's exact bytes authenticates the whole artifact. The
exporter signs with a private key kept outside the model repository; the service
verifies with the matching public key *before* it parses the manifest or hands
``model.pt`` to ``torch.jit.load`` (loading TorchScript runs the archive's code:
``__setstate__`` methods run at load, there is no safe mode).

Files:

* ``manifest.sig`` (inside the artifact, not listed in the manifest): JSON
  ``{"algorithm": "ed25519", "key_id": <16 hex>, "signature": <base64 of 64 bytes>}``.
  ``key_id`` is informational (it names the key in error messages); only the
  signature decides.
* key pair (``rocketrank models keygen --out DIR``): ``DIR/signing.key`` (PKCS#8
  PEM, unencrypted, mode 0600) and ``signing.pub`` (SubjectPublicKeyInfo PEM, 0644).

Only ``cryptography`` and the standard library are imported, so the service can
verify without training code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_FILE = "manifest.sig"
PRIVATE_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"
ALGORITHM = "ed25519"
SIGNING_KEY_ENV = "ROCKETRANK_SIGNING_KEY"
"""Environment variable the exporter reads the private key path from."""
_MAX_SIGNATURE_BYTES = 4096
_MAX_KEY_BYTES = 16 * 1024


class SigningError(ValueError):
    """A key cannot be read, or a signature is missing, malformed or does not verify."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# --------------------------------------------------------------------------- keys


def _read_small(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise SigningError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if len(data) > _MAX_KEY_BYTES:
        raise SigningError(f"{what} {path} is larger than {_MAX_KEY_BYTES} bytes")
    return data


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The ed25519 private key of a PEM (PKCS#8, unencrypted) file.

    Raises:
        SigningError: unreadable, not PEM, or not an ed25519 key (names the file).
    """
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(_read_small(path, "signing key"), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"signing key {path} is not an unencrypted PEM key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"signing key {path} is a {type(key).__name__}, not ed25519")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """The ed25519 public key of a PEM (SubjectPublicKeyInfo) file.

    Raises:
        SigningError: unreadable, not PEM, or not an ed25519 key (names the file).
    """
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(_read_small(path, "public key"))
    except (ValueError, TypeError) as exc:
        raise SigningError(f"public key {path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"public key {path} is a {type(key).__name__}, not ed25519")
    return key


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite a key (a replaced key silently orphans every signed artifact).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_key_pair(out: str | Path, public_out: str | Path | None = None) -> tuple[Path, Path]:
    """Write a new key pair: ``out/signing.key`` and ``(public_out or out)/signing.pub``.

    The private key is created with mode 0600, the public one 0644; neither is
    ever overwritten.

    Returns:
        ``(private_key_path, public_key_path)``.

    Raises:
        SigningError: a key file already exists.
    """
    out = Path(out)
    public_dir = Path(public_out) if public_out is not None else out
    private_path, public_path = out / PRIVATE_KEY_FILE, public_dir / PUBLIC_KEY_FILE
    for existing in (private_path, public_path):
        if existing.exists():
            raise SigningError(f"{existing} already exists; refusing to overwrite a key")
    out.mkdir(parents=True, exist_ok=True)
    public_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(private_path, private_pem, 0o600)
    # not secret, and read by the service, which may run as another user
    _write_new(public_path, public_pem, 0o644)
    return private_path, public_path


# --------------------------------------------------------------------------- signatures


def sign_manifest(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The ``manifest.sig`` contents for these exact manifest bytes."""
    record = {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(manifest_bytes)).decode("ascii"),
    }
    return (json.dumps(record, sort_keys=True) + "\n").encode()


def read_signature_file(path: str | Path) -> bytes | None:
    """Bytes of a ``manifest.sig`` (at most 4 KiB are read), ``None`` when absent."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SigningError(f"{SIGNATURE_FILE} cannot be read: {exc.strerror or exc}") from None
    if len(data) > _MAX_SIGNATURE_BYTES:
        raise SigningError(f"{SIGNATURE_FILE} is larger than {_MAX_SIGNATURE_BYTES} bytes")
    return data


def verify_manifest(
    manifest_bytes: bytes, signature_bytes: bytes, public_key: Ed25519PublicKey
) -> None:
    """Check a ``manifest.sig`` against the manifest bytes and a public key.

    Raises:
        SigningError: the signature file is malformed, names another algorithm, or
            the signature does not verify (tampered manifest or another key).
    """
    try:
        record = json.loads(signature_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SigningError(f"{SIGNATURE_FILE} is not JSON: {exc}") from None
    if not isinstance(record, dict) or set(record) != {"algorithm", "key_id", "signature"}:
        raise SigningError(f"{SIGNATURE_FILE} must hold exactly algorithm, key_id and signature")
    if record["algorithm"] != ALGORITHM:
        raise SigningError(f"{SIGNATURE_FILE}: algorithm {record['algorithm']!r} is not ed25519")
    try:
        signature = base64.b64decode(str(record["signature"]), validate=True)
    except (binascii.Error, ValueError):
        raise SigningError(f"{SIGNATURE_FILE}: signature is not base64") from None
    try:
        public_key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise SigningError(
            f"{SIGNATURE_FILE} does not verify with the configured public key "
            f"(key id {key_id(public_key)}; signature claims key id {record['key_id']!r}): "
            "the manifest was changed after signing or was signed by another key"
        ) from None


__all__ = [
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "SIGNATURE_FILE",
    "SIGNING_KEY_ENV",
    "SigningError",
    "generate_key_pair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "read_signature_file",
    "sign_manifest",
    "verify_manifest",
]
