"""What the recipe adds to a run: the calibrated block, request batches, one light init."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tests.helpers.trainer import tiny_config, write_tiny_data
from training.calibration import fit_platt_pooled_rate
from training.data.prepare import prepare_data
from training.evaluate import apply_platt, evaluate_scores, fit_platt
from training.loop.build import build_model
from training.loop.evaluation import light_logits
from training.loop.options import TrainOptions
from training.loop.trainer import train

QUIET = {"progress": False, "threads": 1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("tiny") / "data", rows=8_000)


def test_metrics_json_has_the_platt_fit_on_valid_and_its_test_effect(data_dir, tmp_path):
    cfg = tiny_config("pfd", epochs=1)
    data = prepare_data(data_dir, cfg, max_rows=3000)
    result = train(cfg, data, tmp_path / "run", TrainOptions(**QUIET))
    block = json.loads((tmp_path / "run" / "metrics.json").read_text())["light_calibrated"]
    assert block["fitted_on"] == "valid" and block["split"] == "test"
    # the parameters are the fit on the validation split's light logits, the intercept
    # anchored to the label rate of train ∪ valid (labels only) ...
    z_valid = light_logits(result.model, data.valid, 4096)
    y_valid = data.valid.labels["click"].double().numpy()
    a, b, base = fit_platt_pooled_rate(z_valid, y_valid, data.train.labels["click"].numpy())
    assert (block["a"], block["b"]) == pytest.approx((a, b))
    assert block["base_rate"]["rate"] == pytest.approx(base.rate)
    assert (block["platt_valid"]["a"], block["platt_valid"]["b"]) == pytest.approx(
        fit_platt(z_valid, y_valid)
    )
    # ... and "after" is the test split scored with σ(a·z + b)
    z = light_logits(result.model, data.test, 4096)
    y = data.test.labels["click"].double().numpy()
    after = evaluate_scores(y, apply_platt(z, a, b), data.test.user.numpy())
    assert block["after"]["logloss"] == pytest.approx(after["logloss"])
    assert block["after"]["calibration"] == pytest.approx(after["calibration"])
    assert block["before"]["logloss"] == pytest.approx(result.metrics["light"]["logloss"])
    assert block["after"]["auc"] == pytest.approx(block["before"]["auc"])  # a > 0: same order
    assert a > 0


def test_request_shuffle_trains_on_whole_requests(data_dir, tmp_path):
    cfg = tiny_config(
        "rocket", epochs=1, data={"shuffle_unit": "requests"}, distill={"hint": "listwise"}
    )
    data = prepare_data(data_dir, cfg, max_rows=3000)
    result = train(cfg, data, tmp_path / "run", TrainOptions(**QUIET))
    assert result.metrics["steps"] == data.train.num_batches(256)
    batches = list(data.train.iter_batches(256, shuffle=True, seed=0, epoch=0, unit="requests"))
    owner: dict[int, int] = {}
    for k, batch in enumerate(batches):
        for request in torch.unique(batch.group).tolist():
            assert owner.setdefault(request, k) == k


def test_light_alone_and_pfd_md_start_from_the_same_light_weights(data_dir):
    light_cfg = tiny_config("light_alone")
    pfd_cfg = tiny_config("pfd_md", model={"booster_dims": [64, 32], "booster": "mlp"})
    data = prepare_data(data_dir, light_cfg, max_rows=1000)
    light_model, _ = build_model(light_cfg, data)
    pfd_model, _ = build_model(pfd_cfg, data)
    a = dict(light_model.light_only_parameters() + light_model.shared_parameters())
    b = dict(pfd_model.light_only_parameters() + pfd_model.shared_parameters())
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the run seed does move it
    reseeded, _ = build_model(dataclasses.replace(light_cfg, seed=1), data)
    c = dict(reseeded.light_only_parameters())
    assert any(not torch.equal(c[n], a[n]) for n in c)
