"""Signed artifacts: the ed25519 signature over manifest.json is checked before the
manifest is parsed and before model.pt reaches torch.jit.load; checksums alone
authenticate nothing (whoever rewrites model.pt can rewrite the manifest too)."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from models.contract.artifact import load_artifact
from models.contract.manifest import MANIFEST_FILE, MODEL_FILE, ArtifactError, sha256_file
from models.contract.signing import (
    SIGNATURE_FILE,
    SigningError,
    generate_key_pair,
    load_private_key,
    load_public_key,
)
from models.contract.verify import verify_artifact
from rocketrank.cli import main as cli
from tests.helpers.export import make_run, write_items
from tests.helpers.signing import PRIVATE_KEY, PUBLIC_KEY, sign
from training.export.export import ExportError, ExportOptions, export_run


def read_from_file(path: str) -> torch.Tensor:
    """What a malicious archive runs: aten::from_file, which maps (and with
    shared=True creates) any file the serving process can reach."""
    return torch.from_file(path, shared=True, size=8, dtype=torch.uint8)


class FromFileModule(torch.nn.Module):
    """A scripted module whose code calls aten::from_file in ``__setstate__``, which
    ``torch.jit.load`` runs while loading (and in ``forward``)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return read_from_file(self.path).float()[:1]

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        read_from_file(state[0])


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("signed")
    items = write_items(tmp / "items.parquet")
    # TorchScript: these tests are about an archive whose loading runs its code
    options = ExportOptions(items=items, format="torchscript")
    return export_run(make_run(tmp, "mlp"), tmp / "repo", "fine", options).path


@pytest.fixture()
def artifact(exported, tmp_path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "artifact"))


@pytest.fixture()
def jit_loads(monkeypatch) -> list[int]:
    """Counts torch.jit.load calls: a refused artifact must never reach it."""
    calls: list[int] = []
    real = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _refresh_checksums(path: Path) -> None:
    data = json.loads((path / MANIFEST_FILE).read_text())
    data["files"] = {name: sha256_file(path / name) for name in data["files"]}
    (path / MANIFEST_FILE).write_text(json.dumps(data))


def test_a_signed_export_loads_with_its_public_key(artifact, jit_loads):
    assert (artifact / SIGNATURE_FILE).is_file()
    assert load_artifact(artifact, public_key=PUBLIC_KEY).manifest.stage == "fine"
    assert load_artifact(artifact, public_key=load_public_key(PUBLIC_KEY)).version
    assert verify_artifact(artifact, public_key=PUBLIC_KEY).kind == "mlp"
    assert jit_loads == [1, 1]


def test_tampered_manifest_is_refused_before_loading(artifact, jit_loads):
    data = json.loads((artifact / MANIFEST_FILE).read_text())
    data["metrics"]["light"] = {"auc": 0.99}  # a checksum-neutral edit
    (artifact / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="does not verify with the configured public key"):
        load_artifact(artifact, public_key=PUBLIC_KEY)
    with pytest.raises(ArtifactError, match="does not verify"):
        verify_artifact(artifact, public_key=PUBLIC_KEY)
    assert jit_loads == []


def test_wrong_key_is_refused(artifact, tmp_path, jit_loads):
    _, other_public = generate_key_pair(tmp_path / "other")
    with pytest.raises(ArtifactError, match="signed by another key") as err:
        load_artifact(artifact, public_key=other_public)
    assert str(artifact.resolve()) in str(err.value)
    assert jit_loads == []


def test_missing_signature_is_refused_unless_allowed(artifact, jit_loads):
    (artifact / SIGNATURE_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"manifest\.sig is missing: unsigned artifacts"):
        load_artifact(artifact, public_key=PUBLIC_KEY)
    with pytest.raises(ArtifactError, match="no public key"):
        load_artifact(artifact)  # no key, not allowed: the secure default
    assert jit_loads == []
    assert load_artifact(artifact, public_key=PUBLIC_KEY, allow_unsigned=True).version
    # allowed unsigned never means "accept a bad signature"
    bad = {"algorithm": "ed25519", "key_id": "x", "signature": ""}
    (artifact / SIGNATURE_FILE).write_text(json.dumps(bad))
    with pytest.raises(ArtifactError, match="does not verify"):
        load_artifact(artifact, public_key=PUBLIC_KEY, allow_unsigned=True)


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b'{"algorithm": "rsa", "key_id": "x", "signature": "AA=="}', b"x" * 5000],
)
def test_malformed_signature_file_is_refused(artifact, content, jit_loads):
    (artifact / SIGNATURE_FILE).write_bytes(content)
    with pytest.raises(ArtifactError, match=r"manifest\.sig"):
        load_artifact(artifact, public_key=PUBLIC_KEY)
    assert jit_loads == []


@pytest.mark.parametrize("signature", ["kept", "missing", "other_key"])
def test_from_file_module_with_valid_checksums_is_refused_without_running(
    artifact, tmp_path, jit_loads, signature
):
    """model.pt replaced by a module whose code calls aten::from_file, the manifest's
    checksums updated to match: valid checksums, no valid signature. Its code never
    runs (the marker file it would create never appears) and torch.jit.load is never
    called."""
    marker = tmp_path / "from_file_ran"
    module = torch.jit.script(FromFileModule(str(marker)))
    assert "aten::from_file" in str(module.forward.graph) or "from_file" in module.code
    torch.jit.save(module, str(artifact / MODEL_FILE))
    _refresh_checksums(artifact)
    if signature == "missing":
        (artifact / SIGNATURE_FILE).unlink()
    elif signature == "other_key":
        other, _ = generate_key_pair(tmp_path / "attacker")
        sign(artifact, other)
    verify_artifact(artifact)  # the checksums are valid
    with pytest.raises(ArtifactError, match=r"manifest\.sig"):
        load_artifact(artifact, public_key=PUBLIC_KEY)
    assert jit_loads == [] and not marker.exists()

    # what the signature prevents: loading the same bytes runs the archive's code
    torch.jit.load(io.BytesIO((artifact / MODEL_FILE).read_bytes()))
    assert marker.exists()


def test_export_without_a_key_is_refused_unless_unsigned(tmp_path, monkeypatch):
    monkeypatch.delenv("ROCKETRANK_SIGNING_KEY", raising=False)
    run = make_run(tmp_path, "mlp")
    with pytest.raises(ExportError, match="no signing key"):
        export_run(run, tmp_path / "repo", "fine")
    assert not (tmp_path / "repo").exists()  # refused before anything was written
    unsigned = export_run(run, tmp_path / "repo", "fine", ExportOptions(unsigned=True)).path
    assert not (unsigned / SIGNATURE_FILE).exists()
    signed = export_run(run, tmp_path / "repo", "fine", ExportOptions(signing_key=PRIVATE_KEY))
    assert load_artifact(signed.path, public_key=PUBLIC_KEY).version == signed.version
    with pytest.raises(ExportError, match="cannot be read"):
        export_run(run, tmp_path / "repo", "fine", ExportOptions(signing_key=tmp_path / "nope"))


def test_keygen_writes_a_0600_private_key_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "keys"
    assert cli(["models", "keygen", "--out", str(out), "--public-out", str(tmp_path / "pub")]) == 0
    private, public = out / "signing.key", tmp_path / "pub" / "signing.pub"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(public).st_mode) == 0o644
    load_private_key(private)
    load_public_key(public)
    before = private.read_bytes()
    assert cli(["models", "keygen", "--out", str(out), "--public-out", str(tmp_path / "pub")]) == 1
    assert "already exists" in capsys.readouterr().out
    argv = ["models", "keygen", "--out", str(out), "--public-out", str(tmp_path / "pub")]
    assert cli([*argv, "--if-missing"]) == 0
    assert private.read_bytes() == before
    with pytest.raises(SigningError, match="not an unencrypted PEM key"):
        load_private_key(public)
