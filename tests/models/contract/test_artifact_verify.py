"""Artifact loader: manifest fields, checksums and spec hash verified before model.pt loads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch

from models.contract import artifact as artifact_mod
from models.contract.encoder_files import read_encoder
from models.contract.manifest import MANIFEST_FILE, ArtifactError, sha256_file
from models.contract.signing import SIGNATURE_FILE
from models.contract.verify import verify_artifact
from tests.helpers.export import make_run, write_items
from tests.helpers.repo import ROOT
from tests.helpers.signing import PUBLIC_KEY, load_signed, sign
from training.export.export import ExportOptions, export_run


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """One fp32 mlp and one two-tower artifact per format (``kind`` is the default
    format, ``export``; ``kind:torchscript`` the deprecated one), exported once."""
    tmp = tmp_path_factory.mktemp("artifacts")
    items = write_items(tmp / "items.parquet")
    out = {}
    for kind in ("mlp", "two_tower"):
        for fmt, key in (("export", kind), ("torchscript", f"{kind}:torchscript")):
            options = ExportOptions(items=items, format=fmt)
            out[key] = export_run(make_run(tmp, kind), tmp / fmt, kind, options).path
    return out


# A pickle, a TorchScript archive and a torch.export archive each refused as the other.
_NOT_LOADABLE = "not a loadable TorchScript archive|unexpected member|not a torch.export archive"


@pytest.fixture(params=["mlp", "two_tower", "mlp:torchscript", "two_tower:torchscript"])
def artifact_copy(request, exported, tmp_path) -> Path:
    """A private copy a test may tamper with."""
    return Path(shutil.copytree(exported[request.param], tmp_path / "artifact"))


def _manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST_FILE).read_text())


def _rewrite_manifest(path: Path, **changes) -> None:
    data = _manifest(path)
    data.update(changes)
    (path / MANIFEST_FILE).write_text(json.dumps(data))
    # re-signed: these rules hold even for a manifest the key holder signed by mistake
    # (an unsigned or badly signed one never gets this far: test_artifact_signature.py)
    sign(path)


def test_manifest_has_every_field(exported):
    for key, path in exported.items():
        kind, _, fmt = key.partition(":")
        fmt = fmt or "export"
        m = _manifest(path)
        assert m["name"] == kind and m["version"] == path.name
        assert datetime.fromisoformat(m["created_at"]).tzinfo is not None
        assert m["task"] == "ctr"
        assert m["stage"] == ("coarse" if kind == "two_tower" else "fine")
        assert m["kind"] == kind
        assert m["format"] == fmt and m["quantization"] == "none"
        assert m["metrics"]["export"]["format"] == fmt
        assert m["features"] == {
            "user": ["user_id", "user_age"],
            "context": ["hour"],
            "item": ["item_id", "tags", "price"],
        }
        assert m["feature_types"] == {
            "user_id": "categorical",
            "user_age": "numeric",
            "hour": "categorical",
            "item_id": "categorical",
            "tags": "multi_categorical",
            "price": "numeric",
        }
        encoder = read_encoder(path)
        assert m["spec_hash"] == encoder.spec_hash()
        assert m["metrics"]["light"] == {"auc": 0.71, "logloss": 0.42}
        assert m["metrics"]["export"]["parity"]["max_abs_diff"] <= 1e-5
        assert isinstance(m["params"], int) and m["params"] > 0
        files = {p.name for p in path.iterdir()} - {MANIFEST_FILE, SIGNATURE_FILE}
        assert (path / SIGNATURE_FILE).is_file()  # signed with the session key
        assert set(m["files"]) == files
        assert all(m["files"][f] == sha256_file(path / f) for f in files)
        expected = {"encoder.json", "vocabs.npz"}
        if fmt == "torchscript":
            expected.add("model.pt")
        else:
            expected |= (
                {"user_vector.pt2", "item_vector.pt2"} if kind == "two_tower" else {"model.pt2"}
            )
        if kind == "two_tower":
            expected |= {"item_ids.npy", "item_vectors.npy"}
        assert files == expected
        assert m["git_commit"] is None or len(m["git_commit"]) == 40
        assert m["rocketrank_version"]


def test_privileged_features_are_not_in_the_artifact(exported):
    for path in exported.values():
        encoder = read_encoder(path)
        assert set(encoder.specs) == {"user_id", "user_age", "hour", "item_id", "tags", "price"}
        assert "dwell" not in (path / MANIFEST_FILE).read_text()


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name not in (MANIFEST_FILE, SIGNATURE_FILE))


def test_flipped_byte_in_any_file_is_refused_before_the_model_loads(artifact_copy, monkeypatch):
    loads = []
    jit_load, export_load = torch.jit.load, torch.export.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(1) or jit_load(*a, **k))
    monkeypatch.setattr(
        torch.export, "load", lambda *a, **k: loads.append(1) or export_load(*a, **k)
    )
    model_files = [f for f in _files(artifact_copy) if f.startswith(("model.", "user_", "item_v"))]
    model_files = [f for f in model_files if f.endswith((".pt", ".pt2"))]
    for name in _files(artifact_copy):
        file = artifact_copy / name
        original = file.read_bytes()
        corrupted = bytearray(original)
        corrupted[len(corrupted) // 2] ^= 0x01
        file.write_bytes(bytes(corrupted))
        with pytest.raises(ArtifactError) as err:
            load_signed(artifact_copy)
        message = str(err.value)
        assert f"checksum mismatch for {name}" in message
        expected = _manifest(artifact_copy)["files"][name]
        assert expected in message and sha256_file(file) in message  # expected vs actual
        file.write_bytes(original)
    assert loads == []  # model.pt was never deserialised
    assert load_signed(artifact_copy).version == _manifest(artifact_copy)["version"]
    assert loads == [1] * len(model_files)  # restored bytes load again


def test_missing_or_unlisted_file_is_refused(artifact_copy):
    for name in _files(artifact_copy):
        file = artifact_copy / name
        data = file.read_bytes()
        file.unlink()
        with pytest.raises(ArtifactError, match=rf"{name} is missing"):
            load_signed(artifact_copy)
        file.write_bytes(data)
    (artifact_copy / "notes.txt").write_text("hello")
    with pytest.raises(ArtifactError, match=r"\['notes.txt'\] are not listed"):
        load_signed(artifact_copy)
    (artifact_copy / "notes.txt").unlink()
    (artifact_copy / MANIFEST_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"manifest\.json is missing"):
        load_signed(artifact_copy)


def test_tampered_spec_hash_is_refused(artifact_copy):
    good = _manifest(artifact_copy)["spec_hash"]
    _rewrite_manifest(artifact_copy, spec_hash="0" * 64)
    with pytest.raises(ArtifactError) as err:
        load_signed(artifact_copy)
    assert "spec hash mismatch" in str(err.value) and good in str(err.value)
    assert "0" * 64 in str(err.value)


def test_changed_feature_spec_with_consistent_checksum_is_refused(artifact_copy):
    """Someone edits encoder.json (a dim) and 'fixes' the checksum: the spec hash catches it."""
    state = json.loads((artifact_copy / "encoder.json").read_text())
    state["features"][0]["dim"] += 1
    (artifact_copy / "encoder.json").write_text(json.dumps(state))
    files = dict(_manifest(artifact_copy)["files"])
    files["encoder.json"] = sha256_file(artifact_copy / "encoder.json")
    _rewrite_manifest(artifact_copy, files=files)
    with pytest.raises(ArtifactError, match="spec hash mismatch"):
        load_signed(artifact_copy)


def test_caller_expected_spec_hash_is_enforced(artifact_copy):
    actual = _manifest(artifact_copy)["spec_hash"]
    assert load_signed(artifact_copy, expected_spec_hash=actual).manifest.spec_hash == actual
    with pytest.raises(ArtifactError, match="the caller expects"):
        verify_artifact(artifact_copy, expected_spec_hash="f" * 64)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stage": "middle"}, "stage 'middle' is not one of"),
        ({"params": "many"}, "'params' must be an integer"),
        ({"extra_key": 1}, r"unknown key\(s\) \['extra_key'\]"),
        ({"files": {"../../etc/passwd": "0" * 64}}, "invalid file name"),
        ({"features": {"user": ["user_id"], "item": ["price"]}}, "does not list as served"),
    ],
)
def test_malformed_manifest_is_refused(artifact_copy, changes, message):
    _rewrite_manifest(artifact_copy, **changes)
    with pytest.raises(ArtifactError, match=message):
        load_signed(artifact_copy)


def test_pickled_module_with_valid_checksums_is_refused(artifact_copy):
    """A whole-module pickle is neither TorchScript nor a torch.export archive: the
    loader never unpickles it."""
    name = next(f for f in _files(artifact_copy) if f.endswith((".pt", ".pt2")))
    torch.save(torch.nn.Linear(2, 1), artifact_copy / name)
    files = dict(_manifest(artifact_copy)["files"])
    files[name] = sha256_file(artifact_copy / name)
    _rewrite_manifest(artifact_copy, files=files)
    with pytest.raises(ArtifactError, match=_NOT_LOADABLE):
        load_signed(artifact_copy)


def test_loading_imports_no_training_or_model_code(exported):
    code = (
        "import sys\n"
        "from models.contract.artifact import load_artifact\n"
        f"a = load_artifact({str(exported['two_tower'])!r}, public_key={str(PUBLIC_KEY)!r})\n"
        "assert a.item_vectors is not None\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'training'\n"
        "             or (m.startswith('models.')\n"
        "                 and not m.startswith(('models.contract', 'models.provenance'))))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_artifact_error_is_a_value_error_with_the_directory(tmp_path):
    with pytest.raises(ArtifactError, match=str(tmp_path / "nope")):
        artifact_mod.load_artifact(tmp_path / "nope", allow_unsigned=True)
    assert issubclass(ArtifactError, ValueError)


def test_loading_through_a_symlink_reads_one_version(exported, tmp_path):
    """The path is resolved once, so every file comes from the version it pointed at."""
    link = tmp_path / "current"
    link.symlink_to(exported["mlp"])
    artifact = load_signed(link)
    assert artifact.path == exported["mlp"].resolve()
    link.unlink()
    link.symlink_to(exported["two_tower"])  # flipping afterwards changes nothing loaded
    assert artifact.manifest.kind == "mlp"


def test_spec_hash_is_checked_before_the_vocabularies_are_decoded(artifact_copy):
    """A vocabs.npz that is not even a zip (checksum 'fixed'): a wrong spec hash is
    reported first, because the hash is computed from encoder.json's specs alone."""
    (artifact_copy / "vocabs.npz").write_bytes(b"not a zip")
    files = dict(_manifest(artifact_copy)["files"])
    files["vocabs.npz"] = sha256_file(artifact_copy / "vocabs.npz")
    _rewrite_manifest(artifact_copy, files=files)
    with pytest.raises(ArtifactError, match="the caller expects"):
        load_signed(artifact_copy, expected_spec_hash="f" * 64)
    with pytest.raises(ArtifactError, match=r"vocabs\.npz is not a plain \.npz"):
        load_signed(artifact_copy)
