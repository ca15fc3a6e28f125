"""JointModel: what the light net can see, the exported scorer, rebuilding, cost."""

from __future__ import annotations

import pytest
import torch

from models.cost import count_parameters, flops_per_candidate
from models.joint import JointModel
from models.joint_args import JointModelArgs
from tests.helpers.models import PRIVILEGED, make_args, make_batch, make_model

KINDS = ["mlp", "two_tower"]


@pytest.mark.parametrize("light_kind", KINDS)
@pytest.mark.parametrize("booster_kind", ["mlp", "dcn"])
def test_privileged_columns_do_not_reach_the_light_net(light_kind, booster_kind) -> None:
    model = make_model(light_kind=light_kind, booster_kind=booster_kind).eval()
    batch = make_batch(12)
    perturbed = dict(batch)
    perturbed["user_cat_clicks"] = (batch["user_cat_clicks"] + 3) % 9
    perturbed["dwell"] = batch["dwell"] * -7 + 5
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(perturbed), rtol=0, atol=0)
        a, b = model.forward_joint(batch), model.forward_joint(perturbed)
        torch.testing.assert_close(a.light_logit, b.light_logit, rtol=0, atol=0)
        assert not torch.allclose(a.booster_logit, b.booster_logit)  # the booster does see them
    # and the light path works without the privileged columns at all
    served_only = {k: v for k, v in batch.items() if k not in PRIVILEGED}
    torch.testing.assert_close(model(served_only), model(batch))


def test_two_tower_item_vector_ignores_user_and_context_inputs() -> None:
    model = make_model(light_kind="two_tower")
    scorer = model.light_scorer()
    batch = make_batch(10)
    other = dict(batch)
    other["user_id"] = (batch["user_id"] + 5) % 20
    other["user_age"] = batch["user_age"] + 3.0
    other["hour"] = (batch["hour"] + 1) % 26
    with torch.no_grad():
        torch.testing.assert_close(scorer.item_vector(batch), scorer.item_vector(other))
        assert not torch.allclose(scorer.user_vector(batch), scorer.user_vector(other))
        item_only = {k: batch[k] for k in ("item_id", "tags", "price")}
        torch.testing.assert_close(scorer.item_vector(item_only), scorer.item_vector(batch))


@pytest.mark.parametrize("light_kind", KINDS)
@pytest.mark.parametrize("tower_bias", [False, True])
def test_light_scorer_scripts_matches_forward_and_has_no_booster_parts(
    light_kind, tower_bias, tmp_path
) -> None:
    model = make_model(
        light_kind=light_kind,
        booster_kind="dcn",
        separate_tables=["user_id"],
        hint_projection=True,
        tower_bias=tower_bias,
    )
    # move the light net away from its init so a stale copy would show
    with torch.no_grad():
        for _, p in model.light_only_parameters():
            p.add_(0.05 * torch.randn_like(p))
    scorer = model.light_scorer()
    names = [n for n, _ in scorer.named_parameters()] + list(scorer.state_dict())
    assert not [n for n in names if "booster" in n or "hint_projection" in n]
    assert not [n for n in names if any(p in n for p in PRIVILEGED)]
    # exactly the light-only and shared parameters minus the hint projection
    light_side = model.light_only_parameters() + model.shared_parameters()
    expected = count_parameters(p for n, p in light_side if not n.startswith("hint_projection"))
    assert count_parameters(scorer) == expected

    scripted = torch.jit.script(scorer)
    path = tmp_path / "model.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    model.eval()
    batch = make_batch(9)
    served = {k: v for k, v in batch.items() if k not in PRIVILEGED}
    with torch.no_grad():
        torch.testing.assert_close(loaded(served), model(batch))
        if light_kind == "two_tower":
            u = loaded.user_vector(served)
            v = loaded.item_vector(served)
            torch.testing.assert_close((u * v).sum(1), model(batch), rtol=1e-5, atol=1e-5)
            # a request: one user against every item, as the service does it
            user = {k: served[k][:1] for k in ("user_id", "user_age", "hour")}
            items = {k: served[k] for k in ("item_id", "tags", "price")}
            scores = loaded.item_vector(items) @ loaded.user_vector(user)[0]
            rows = {**{k: served[k][:1].repeat(9) for k in user}, **items}
            torch.testing.assert_close(scores, model(rows), rtol=1e-5, atol=1e-5)


def test_scorer_is_a_snapshot() -> None:
    model = make_model()
    scorer = model.light_scorer()
    batch = make_batch(4)
    before = scorer(batch).detach().clone()
    with torch.no_grad():
        for _, p in model.shared_parameters():
            p.add_(1.0)
    torch.testing.assert_close(scorer(batch).detach(), before)
    assert model.training  # building the scorer did not switch the joint model to eval


def test_args_round_trip_rebuilds_the_same_model() -> None:
    model = make_model(light_kind="two_tower", booster_kind="dcn", cross_rank=2)
    clone = JointModel(JointModelArgs.from_dict(model.args.to_dict()))
    clone.load_state_dict(model.state_dict())
    batch = make_batch(5)
    model.eval()
    clone.eval()
    torch.testing.assert_close(clone(batch), model(batch))
    with pytest.raises(ValueError, match="unknown key"):
        JointModelArgs.from_dict({**model.args.to_dict(), "light_dim": [3]})


def test_bad_feature_assignments_are_rejected() -> None:
    with pytest.raises(ValueError, match="cross"):
        make_model(
            light_kind="two_tower",
            served=["user_id", "item_id", "user_cat_clicks"],
            privileged=["dwell"],
        )
    with pytest.raises(ValueError, match="both served and privileged"):
        make_model(privileged=["user_id"])
    with pytest.raises(ValueError, match="no FeatureSpec"):
        make_model(privileged=["nope"])
    with pytest.raises(ValueError, match="separate_tables"):
        make_model(separate_tables=["user_cat_clicks"])
    with pytest.raises(ValueError, match="light_kind"):
        make_model(light_kind="three_tower")


def test_optimizer_groups_cover_every_parameter_once() -> None:
    model = make_model(sparse=True)
    emb = {n for n, _ in model.embedding_parameters()}
    dense = {n for n, _ in model.dense_parameters()}
    assert emb and dense and not emb & dense
    assert emb | dense == {n for n, _ in model.named_parameters()}
    assert all(n.startswith("embeddings.") for n in emb)
    out = model.forward_joint(make_batch(6))
    (out.booster_logit.sum() + out.light_logit.sum()).backward()
    assert all(p.grad is None or p.grad.is_sparse for _, p in model.embedding_parameters())


def test_cost_report_and_flops() -> None:
    model = make_model(light_kind="mlp", booster_kind="mlp")
    batch = make_batch(8)
    report = model.cost_report(batch)
    # light MLP: D=6+1+3+6+4+1=21 → 8 → 4 → 1; FLOPs = 2·(21·8 + 8·4 + 4·1)
    assert report["light_flops_per_candidate"] == 2 * (21 * 8 + 8 * 4 + 4)
    # booster MLP: D = 21 + 4 + 1 = 26 → 16 → 8 → 1
    assert report["booster_flops_per_candidate"] == 2 * (26 * 16 + 16 * 8 + 8)
    assert report["light_params"] == count_parameters(model.light_scorer())
    assert flops_per_candidate(model, batch) == report["light_flops_per_candidate"]
    tt = make_model(light_kind="two_tower").cost_report(batch)
    assert tt["light_serving_flops_per_candidate"] == 2 * 4  # dot product of d = 4


def test_forward_joint_can_skip_a_net() -> None:
    model = make_model()
    out = model.forward_joint(make_batch(3), run_booster=False)
    assert out.booster_logit is None and out.light_logit is not None
    out = model.forward_joint(make_batch(3), run_light=False)
    assert out.light_logit is None and out.booster_logit.shape == (3,)
    assert make_args().served  # fixture sanity: served features exist


@pytest.mark.parametrize("light_kind", KINDS)
def test_forward_joint_shares_lookups_without_changing_outputs(light_kind) -> None:
    model = make_model(light_kind=light_kind, separate_tables=["user_id"]).eval()
    batch = make_batch(7)
    with torch.no_grad():
        out = model.forward_joint(batch)
        torch.testing.assert_close(out.booster_logit, model.booster_logit(batch))
        torch.testing.assert_close(out.light_logit, model.light_scorer()(batch))
