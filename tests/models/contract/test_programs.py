"""``export`` artifacts: torch.export programs load without unpickling anything, archives
that torch.export.load would unpickle from are refused before it runs, and the runner
computes what the exported module computes at any batch size."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from models.contract.manifest import MANIFEST_FILE, PROGRAM_FILE, ArtifactError, sha256_file
from models.contract.programs import ProgramRunner, check_archive, load_program
from tests.helpers.export import encoded, log_columns, make_run, write_items
from tests.helpers.signing import load_signed, sign
from training.export.export import ExportOptions, export_run
from training.export.graph import prepare_scorer
from training.export.program import export_program


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("programs")
    items = write_items(tmp / "items.parquet")
    return {
        kind: export_run(make_run(tmp, kind), tmp / "repo", kind, ExportOptions(items=items)).path
        for kind in ("mlp", "two_tower")
    }


@pytest.fixture()
def mlp_copy(exported, tmp_path) -> Path:
    return Path(shutil.copytree(exported["mlp"], tmp_path / "artifact"))


def _replace_file(artifact: Path, name: str, data: bytes) -> None:
    """Swap a file, fix its checksum and re-sign: only the archive checks stand in the way."""
    (artifact / name).write_bytes(data)
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    manifest["files"][name] = sha256_file(artifact / name)
    (artifact / MANIFEST_FILE).write_text(json.dumps(manifest))
    sign(artifact)


def _rezip(data: bytes, change) -> bytes:
    """The archive with ``change(name, bytes) -> bytes | None`` applied to each member
    (``None`` keeps it) and the members ``change("+", b"")`` returns as a dict added."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = src.read(info)
            new = change(info.filename, content)
            dst.writestr(info.filename, content if new is None else new)
        for name, content in (change("+", b"") or {}).items():
            dst.writestr(name, content)
    return out.getvalue()


@pytest.fixture()
def traps(monkeypatch) -> list[str]:
    """Every unpickling entry point torch.export.load could reach raises and is recorded."""
    calls: list[str] = []

    def trap(name):
        def refuse(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} called while loading an artifact")

        return refuse

    monkeypatch.setattr(torch, "load", trap("torch.load"))
    monkeypatch.setattr(torch.serialization, "load", trap("torch.serialization.load"))
    monkeypatch.setattr(pickle, "loads", trap("pickle.loads"))
    monkeypatch.setattr(pickle, "load", trap("pickle.load"))
    monkeypatch.setattr(torch._C, "_pickle_load_obj", trap("torch._C._pickle_load_obj"))
    return calls


@pytest.mark.parametrize("kind", ["mlp", "two_tower"])
def test_an_export_artifact_loads_and_scores_without_unpickling(exported, kind, traps):
    artifact = load_signed(exported[kind])
    assert artifact.manifest.format == "export"
    raw = log_columns(5, seed=3)
    logits = artifact.module(artifact.encode({n: raw[n] for n in artifact.manifest.feature_names}))
    assert logits.shape == (5,) and bool(torch.isfinite(logits).all())
    assert traps == []


def test_pickled_sample_inputs_are_refused_before_torch_export_load(mlp_copy, monkeypatch):
    data = (mlp_copy / PROGRAM_FILE).read_bytes()
    # torch.export.load reads sample inputs with torch.load and, should that fail, again
    # with weights_only=False: an archive carrying any is refused unread.
    evil = io.BytesIO()
    torch.save({"x": torch.zeros(1)}, evil)
    _replace_file(
        mlp_copy,
        PROGRAM_FILE,
        _rezip(
            data, lambda n, c: evil.getvalue() if n.endswith("sample_inputs/model.pt") else None
        ),
    )
    loads: list[int] = []
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: loads.append(1))
    with pytest.raises(ArtifactError, match="pickled sample inputs"):
        load_signed(mlp_copy)
    assert loads == []


def test_a_pickled_weight_payload_is_refused(mlp_copy):
    data = (mlp_copy / PROGRAM_FILE).read_bytes()

    def pickled(name: str, content: bytes) -> bytes | None:
        if not name.endswith("model_weights_config.json"):
            return None
        config = json.loads(content)
        first = next(iter(config["config"]))
        config["config"][first]["use_pickle"] = True
        return json.dumps(config).encode()

    _replace_file(mlp_copy, PROGRAM_FILE, _rezip(data, pickled))
    with pytest.raises(ArtifactError, match="not a plain tensor payload"):
        load_signed(mlp_copy)


def test_an_unexpected_archive_member_is_refused(mlp_copy):
    data = (mlp_copy / PROGRAM_FILE).read_bytes()
    root = zipfile.ZipFile(io.BytesIO(data)).namelist()[0].split("/")[0]
    extra = {f"{root}/data/constants/custom_obj_0": pickle.dumps(object())}
    _replace_file(mlp_copy, PROGRAM_FILE, _rezip(data, lambda n, c: extra if n == "+" else None))
    with pytest.raises(ArtifactError, match="unexpected member"):
        load_signed(mlp_copy)


def test_check_archive_accepts_what_the_exporter_writes(exported):
    for path in exported.values():
        for program in path.glob("*.pt2"):
            check_archive("test", program.name, program.read_bytes())


class _Counter(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        self.seen.add_(1.0)  # a program that changes state between requests
        return features["x"].sum(dim=1)


def test_a_program_that_mutates_a_buffer_is_refused():
    data = export_program(_Counter(), {"x": torch.ones(4, 3)})
    with pytest.raises(ArtifactError, match="mutates a tensor"):
        load_program("test", "m.pt2", data)


def test_the_runner_matches_the_module_at_any_batch_size_and_checks_dtypes(tmp_path):
    run = make_run(tmp_path, "mlp")
    scorer = prepare_scorer(run.model.light_scorer())
    rows = encoded(run.encoder, log_columns(64, seed=5))
    served = {k: v for k, v in rows.items() if k in run.model.served}
    runner = load_program("test", PROGRAM_FILE, export_program(scorer, served))
    assert isinstance(runner, ProgramRunner) and sorted(runner.names) == sorted(served)
    with torch.inference_mode():
        for n in (1, 2, 64):
            part = {k: v[:n] for k, v in served.items()}
            assert torch.equal(runner(part), scorer(part))
        with pytest.raises(ValueError, match="feature 'user_age'"):
            runner({**served, "user_age": served["user_age"].double()})
