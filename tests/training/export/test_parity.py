"""Export: parity with the trained light net, int8 size and accuracy, light net only."""

from __future__ import annotations

import math
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from rocketrank.cli import main as cli
from tests.helpers.export import (
    ITEM_FEATURES,
    SERVED,
    encoded,
    item_columns,
    log_columns,
    make_run,
    write_items,
    write_run_dir,
)
from tests.helpers.signing import load_signed
from training.export.export import ExportError, ExportOptions, export_run
from training.export.graph import Int8Embedding, fold_batchnorm, prepare_scorer, to_torchscript
from training.export.int8 import int8_plans
from training.export.parity import ParityRows, check_parity

KINDS = ["mlp", "two_tower"]


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> Path:
    return write_items(tmp_path_factory.mktemp("items") / "items.parquet")


def _raw_rows(rows: int = 500) -> dict[str, np.ndarray]:
    return log_columns(rows, seed=99)


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_export_scores_equal_the_trained_light_net(tmp_path, items, kind):
    run = make_run(tmp_path, kind)
    result = export_run(run, tmp_path / "repo", kind, ExportOptions(items=items))
    artifact = load_signed(result.path)
    raw = _raw_rows()
    with torch.no_grad():
        trained = run.model(encoded(run.encoder, raw))
    # the service path: raw values -> the artifact's own encoder -> the TorchScript module
    exported = artifact.module(
        artifact.encode({n: raw[n] for n in artifact.manifest.feature_names})
    )
    assert torch.allclose(exported, trained, rtol=0, atol=1e-5)
    assert result.parity["max_abs_diff"] <= 1e-5 and result.parity["space"] == "logit"


def test_two_tower_item_vectors_reproduce_the_logits(tmp_path, items):
    run = make_run(tmp_path, "two_tower")
    artifact = load_signed(
        export_run(run, tmp_path / "repo", "coarse", ExportOptions(items=items)).path
    )
    catalogue = item_columns()
    assert np.array_equal(artifact.item_ids, np.sort(catalogue["item_id"]))
    assert artifact.item_vectors.shape == (len(catalogue["item_id"]), 8)
    # score every catalogue item for three users: item_vectors @ user_vector == forward
    raw = _raw_rows(3)
    user = artifact.encode(raw, names=["user_id", "user_age", "hour"])
    u = artifact.module.user_vector(user)  # [3, d]
    fast = torch.from_numpy(artifact.item_vectors) @ u.T  # [N, 3]
    # rows pairing each user with every item, in item_ids order, through the trained model
    position = {int(i): k for k, i in enumerate(catalogue["item_id"])}
    pick = np.array([position[int(i)] for i in artifact.item_ids])
    for b in range(3):
        pair = {n: np.repeat(raw[n][b : b + 1], len(pick)) for n in ("user_id", "user_age", "hour")}
        pair.update({n: catalogue[n][pick] for n in ITEM_FEATURES})
        with torch.no_grad():
            trained = run.model(encoded(run.encoder, {**pair, **_privileged(len(pick))}))
        assert torch.allclose(fast[:, b], trained, rtol=0, atol=1e-5)


def _privileged(rows: int) -> dict[str, np.ndarray]:
    return {"user_cat_clicks": np.zeros(rows, dtype=np.int64), "dwell": np.zeros(rows)}


@pytest.mark.parametrize("kind", KINDS)
def test_int8_export_is_within_tolerance_of_the_trained_net(tmp_path, items, kind):
    run = make_run(tmp_path, kind)
    options = ExportOptions(quantize="int8", items=items, int8_min_rows=0)  # every table int8
    result = export_run(run, tmp_path / "repo", kind, options)
    artifact = load_signed(result.path)
    assert artifact.manifest.quantization == "int8"
    raw = _raw_rows(2000)
    with torch.no_grad():
        trained = torch.sigmoid(run.model(encoded(run.encoder, raw)))
    exported = torch.sigmoid(artifact.module(artifact.encode(raw)))
    diff = (exported - trained).abs()
    assert float(diff.max()) <= 1e-2
    assert float(diff.max()) > 0  # the int8 path really ran


def test_int8_artifact_is_at_least_3x_smaller(tmp_path):
    run = make_run(tmp_path, "mlp", user_buckets=40_000)
    fp32 = export_run(run, tmp_path / "repo", "fine", ExportOptions(format="torchscript"))
    int8 = export_run(run, tmp_path / "repo", "fine", ExportOptions(quantize="int8"))
    assert fp32.size_bytes >= 3 * int8.size_bytes
    assert fp32.manifest.params == int8.manifest.params
    sizes = int8.manifest.metrics["export"]
    # same module as the fp32 export (class-name mangling may differ by a few bytes)
    assert sizes["fp32_model_bytes"] == pytest.approx(
        fp32.manifest.metrics["export"]["model_bytes"], rel=0.01
    )
    assert sizes["fp32_model_bytes"] >= 3 * sizes["model_bytes"]


def test_int8_embedding_rows_round_trip_within_half_a_step():
    torch.manual_seed(0)
    weight = torch.randn(50, 16) * torch.rand(50, 1) * 3
    weight[0] = 0.0  # a constant row (e.g. padding) must come back exactly
    q = Int8Embedding(weight)
    step = q.scale.float().unsqueeze(1)
    assert torch.all((q.dequantized() - weight).abs() <= step / 2 + 1e-3 * step)
    assert torch.equal(q.dequantized()[0], torch.zeros(16))
    ids = torch.tensor([[3, 0], [49, 7]])
    assert torch.equal(q(ids), q.dequantized()[ids])
    assert q.codes.dtype == torch.int8 and q.scale.dtype == torch.float16


def test_batchnorm_is_folded_exactly():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.ReLU(), torch.nn.Linear(5, 1)
    )
    net.train()
    for _ in range(5):
        net(torch.randn(64, 6) * 3 + 1)
    net.eval()
    x = torch.randn(32, 6)
    with torch.no_grad():
        before = net(x)
        assert fold_batchnorm(net) == 1
        after = net(x)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules())
    assert torch.allclose(before, after, atol=1e-6)


def _stored_and_code(path: Path, fmt: str) -> tuple[int, str]:
    """Bytes of stored tensors and the text of the code/graph of an artifact's model."""
    stored, code = 0, []
    for name in ("model.pt",) if fmt == "torchscript" else [p.name for p in path.glob("*.pt2")]:
        with zipfile.ZipFile(path / name) as archive:
            for i in archive.infolist():
                if fmt == "torchscript" and ("/constants/" in i.filename or "/data/" in i.filename):
                    stored += i.file_size
                if fmt == "export" and "/data/weights/weight_" in i.filename:
                    stored += i.file_size
                if i.filename.endswith((".py", ".json")):
                    code.append(archive.read(i).decode(errors="ignore"))
    return stored, " ".join(code)


@pytest.mark.parametrize("fmt", ["export", "torchscript"])
@pytest.mark.parametrize("kind", KINDS)
def test_artifact_holds_the_light_net_only(tmp_path, items, kind, fmt):
    run = make_run(tmp_path, kind)
    model = run.model
    result = export_run(run, tmp_path / "repo", kind, ExportOptions(items=items, format=fmt))

    def nbytes(tensors) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)

    light = model.light_scorer()
    light_bytes = nbytes([*light.parameters(), *light.buffers()])
    booster_bytes = nbytes(p for _, p in model.booster_only_parameters())
    assert booster_bytes > light_bytes / 2  # the check below would notice a booster
    stored, code = _stored_and_code(result.path, fmt)
    assert 0 < stored <= light_bytes
    assert "booster" not in code.lower()
    for privileged in ("user_cat_clicks", "dwell"):
        assert privileged not in code
    # the same module unfrozen keeps its parameter names: none is the booster's
    names = [n for n, _ in to_torchscript(prepare_scorer(light), freeze=False).named_parameters()]
    assert names and not [n for n in names if "booster" in n or "user_cat_clicks" in n]


def test_failed_parity_refuses_the_export(tmp_path):
    class Shifted(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module, shift: float) -> None:
            super().__init__()
            self.inner, self.shift = inner, shift

        def forward(self, features):
            return self.inner(features) + self.shift

    run = make_run(tmp_path, "mlp")
    net = run.model
    rows = ParityRows(encoded(run.encoder, _raw_rows(64)), None, "test")
    report, _ = check_parity(net, Shifted(net, 5e-6), rows, "none")
    assert report["max_abs_diff"] == pytest.approx(5e-6, rel=0.05)
    with pytest.raises(ExportError, match=r"parity check failed on 64 test rows"):
        check_parity(net, Shifted(net, 1e-3), rows, "none")


def test_export_cli_from_a_run_directory(tmp_path, items, capsys):
    run = make_run(tmp_path, "two_tower")
    run_dir = write_run_dir(run)
    repo = tmp_path / "repo"
    argv = ["export", "--run", str(run_dir), "--repo", str(repo), "--name", "coarse"]
    assert cli([*argv, "--items", str(items), "--keep", "1"]) == 0
    assert cli([*argv, "--items", str(items), "--keep", "1", "--quantize", "int8"]) == 0
    out = capsys.readouterr().out
    assert "exported coarse/" in out and "parity on" in out
    versions = sorted(p.name for p in (repo / "coarse").iterdir() if p.name[0].isdigit())
    assert len(versions) == 2  # --keep 1 keeps the first too: it is the rollback target
    artifact = load_signed(repo / "coarse" / "current")
    assert artifact.manifest.quantization == "int8" and artifact.manifest.stage == "coarse"
    # a two-tower run without a catalogue is refused with a clear message
    assert cli(argv) == 1
    assert "pass --items" in capsys.readouterr().out


def test_int8_two_tower_stores_8bit_item_vectors_and_loads_them_as_float(tmp_path, items):
    run = make_run(tmp_path, "two_tower")
    fp32 = load_signed(
        export_run(run, tmp_path / "repo", "coarse", ExportOptions(items=items)).path
    )
    # tables of >= 1024 rows only (none here) and fp32 Linear weights: the item tower
    # is exact, so the stored vectors differ from fp32 only by their own rounding
    exact_tower = ExportOptions(
        quantize="int8", items=items, int8_min_rows=1024, int8_linears=False
    )
    result = export_run(run, tmp_path / "repo", "coarse", exact_tower)
    assert np.load(result.path / "item_vectors.npy").dtype == np.int8
    qparams = np.load(result.path / "item_vector_qparams.npy")
    assert qparams.dtype == np.float16 and qparams.shape == (len(fp32.item_ids), 1)
    int8 = load_signed(result.path)
    assert int8.item_vectors.dtype == np.float32
    assert np.array_equal(int8.item_ids, fp32.item_ids)
    half_step = qparams[:, :1].astype(np.float32) / 2
    assert np.all(np.abs(int8.item_vectors - fp32.item_vectors) <= half_step * 1.01 + 1e-6)
    assert result.parity["max_abs_diff_by_path"]["serving"] > 0


def test_mlp_serving_a_cross_feature_lists_it_under_cross(tmp_path):
    run = make_run(tmp_path, "mlp", served=[*SERVED, "user_cat_clicks"], privileged=["dwell"])
    artifact = load_signed(export_run(run, tmp_path / "repo", "fine").path)
    assert artifact.manifest.features["cross"] == ["user_cat_clicks"]
    assert "user_cat_clicks" in artifact.encoder.specs and "dwell" not in artifact.encoder.specs
    raw = _raw_rows(100)
    with torch.no_grad():
        trained = run.model(encoded(run.encoder, raw))
    assert torch.allclose(artifact.module(artifact.encode(raw)), trained, rtol=0, atol=1e-5)


def test_int8_tables_dequantise_once_and_are_never_frozen():
    torch.manual_seed(0)
    q = Int8Embedding(torch.randn(30, 4))
    assert q.table.numel() == 0
    scripted = torch.jit.script(q)
    saved = scripted.table.numel()
    out = scripted(torch.tensor([1, 29]))
    assert saved == 0 and scripted.table.shape == (30, 4)  # filled by the first call
    assert torch.equal(out, q.dequantized()[[1, 29]])
    with pytest.raises(ValueError, match="cannot be frozen"):
        to_torchscript(torch.nn.Sequential(Int8Embedding(torch.randn(5, 2))), freeze=True)


def test_int8_falls_back_plan_by_plan_until_parity_holds(tmp_path, items):
    """A two-tower net with a large logit scale: 8-bit item vectors alone break the
    1e-2 tolerance, so the exporter ends on its last plan — fp16 item vectors."""
    run = make_run(tmp_path, "two_tower")
    with torch.no_grad():
        run.model.light.log_scale.fill_(math.log(60.0))
    assert int8_plans(two_tower=True)[-1].item_vectors == "fp16"
    result = export_run(
        run, tmp_path / "repo", "coarse", ExportOptions(quantize="int8", items=items)
    )
    assert result.parity["int8_plan"] == asdict(int8_plans(two_tower=True)[-1])
    assert result.parity["max_abs_diff"] <= 1e-2
    stored = np.load(result.path / "item_vectors.npy")
    assert stored.dtype == np.float16 and "item_vector_qparams.npy" not in result.manifest.files
    artifact = load_signed(result.path)
    assert artifact.item_vectors.dtype == np.float32
    assert np.array_equal(artifact.item_vectors, stored.astype(np.float32))
