"""The served encoder as artifact files: ``encoder.json`` and ``vocabs.npz``.

:func:`encoder_files` writes them, :func:`decode_encoder` reads them back (also
the older layout with the vocabulary keys inline in ``encoder.json``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from models.contract.feature_spec import ContractError
from models.contract.features import FeatureEncoder
from models.contract.manifest import ENCODER_FILE, VOCABS_FILE, ArtifactError


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
