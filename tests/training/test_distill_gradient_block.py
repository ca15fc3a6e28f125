"""The gradient-block table of docs/INTERNALS.md, parameter group by parameter group.

Each expected gradient is computed by autograd from the loss terms written out
by hand here (not through ``compute_loss``), then compared with the gradient
``compute_loss(...).total`` actually produces.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from models.joint import JointModel
from tests.helpers.models import PRIVILEGED, make_batch, make_labels, make_model
from training.distill.losses import DistillSettings, compute_loss
from training.distill.rules import Hint, Variant, nets_needed
from training.distill.schedules import LambdaSchedule

GAMMA = 0.7
LAM = 0.4


def _grads(loss: Tensor, params: list[tuple[str, torch.nn.Parameter]]) -> dict[str, Tensor]:
    tensors = [p for _, p in params]
    grads = torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params, grads)}


def _assert_equal(actual: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in actual:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-7, msg=name)


def _differs(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return any(not torch.allclose(a[n], b[n], rtol=1e-4, atol=1e-7) for n in a)


def _nonzero(g: dict[str, Tensor]) -> bool:
    return any(bool(t.abs().sum() > 0) for t in g.values())


def _setup(variant: Variant, hint: Hint, **model_kw):
    model = make_model(
        seed=3,
        light_kind=model_kw.pop("light_kind", "mlp"),
        separate_tables=["user_id"],
        hint_projection=hint is Hint.HIDDEN,
        **model_kw,
    )
    settings = DistillSettings(
        variant=variant,
        hint=hint,
        schedule=LambdaSchedule("constant", GAMMA if variant.startswith("rocket") else LAM),
        temperature=2.0,
    )
    batch = make_batch(24, seed=5)
    labels = make_labels(24, seed=5)
    group = torch.arange(24) // 4  # six requests of four items
    out = model.forward_joint(batch, *nets_needed(variant))
    terms = compute_loss(out, labels, settings, step=10, group=group)
    return model, out, labels, group, terms


def _groups(model: JointModel):
    groups = {
        "booster": model.booster_only_parameters(),
        "light": model.light_only_parameters(),
        "shared": model.shared_parameters(),
    }
    for name, params in groups.items():
        assert params, f"empty {name} parameter group"
    return groups


def _hand_hint(out, hint: Hint, group: Tensor, block: bool) -> Tensor:
    zb = out.booster_logit.detach() if block else out.booster_logit
    zl = out.light_logit
    if hint is Hint.LOGIT_MSE:
        return ((zl - zb) ** 2).mean()
    if hint is Hint.SOFT_BCE:
        p = torch.sigmoid(zb)
        return -(p * F.logsigmoid(zl) + (1 - p) * F.logsigmoid(-zl)).mean()
    if hint is Hint.KL:
        t = 2.0
        p, q = torch.sigmoid(zb / t), torch.sigmoid(zl / t)
        kl = p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())
        return kl.mean() * t * t
    if hint is Hint.HIDDEN:
        hb = out.booster_hidden.detach() if block else out.booster_hidden
        return ((out.light_hint - hb) ** 2).mean()
    if hint is Hint.LISTWISE:
        t = 2.0
        losses = []
        for g in group.unique():
            m = group == g
            p = torch.softmax(zb[m] / t, 0)
            losses.append((p * (p.log() - torch.log_softmax(zl[m] / t, 0))).sum())
        return torch.stack(losses).mean() * t * t
    raise AssertionError(hint)


ALL_HINTS = [Hint.LOGIT_MSE, Hint.SOFT_BCE, Hint.KL, Hint.HIDDEN, Hint.LISTWISE]


@pytest.mark.parametrize("hint", ALL_HINTS)
@pytest.mark.parametrize("light_kind", ["mlp", "two_tower"])
def test_rocket_block_on_matches_the_table(hint: Hint, light_kind: str) -> None:
    model, out, y, group, terms = _setup(Variant.ROCKET, hint, light_kind=light_kind)
    groups = _groups(model)
    bce_b = F.binary_cross_entropy_with_logits(out.booster_logit, y)
    bce_l = F.binary_cross_entropy_with_logits(out.light_logit, y)
    h = _hand_hint(out, hint, group, block=True)
    torch.testing.assert_close(terms.hint, h.detach(), rtol=1e-3, atol=1e-6)

    # booster-only: exactly the booster BCE gradient, nothing from the light BCE or the hint
    _assert_equal(_grads(terms.total, groups["booster"]), _grads(bce_b, groups["booster"]))
    # light-only: light BCE + γ·hint, and the hint part is really there
    light_expected = _grads(bce_l + GAMMA * h, groups["light"])
    _assert_equal(_grads(terms.total, groups["light"]), light_expected)
    assert _nonzero(_grads(h, groups["light"]))
    # shared: all three terms, each of them reaching the shared tables
    shared_expected = _grads(bce_b + bce_l + GAMMA * h, groups["shared"])
    _assert_equal(_grads(terms.total, groups["shared"]), shared_expected)
    for term in (bce_b, bce_l, h):
        assert _nonzero(_grads(term, groups["shared"]))


@pytest.mark.parametrize("hint", [Hint.LOGIT_MSE, Hint.HIDDEN, Hint.KL])
def test_rocket_without_block_lets_the_hint_reach_booster_only_parameters(hint: Hint) -> None:
    variant = Variant.ROCKET_NO_GRADIENT_BLOCK
    model, out, y, group, terms = _setup(variant, hint)
    groups = _groups(model)
    bce_b = F.binary_cross_entropy_with_logits(out.booster_logit, y)
    bce_l = F.binary_cross_entropy_with_logits(out.light_logit, y)
    h = _hand_hint(out, hint, group, block=False)

    actual = _grads(terms.total, groups["booster"])
    _assert_equal(actual, _grads(bce_b + GAMMA * h, groups["booster"]))
    assert _differs(actual, _grads(bce_b, groups["booster"]))
    _assert_equal(_grads(terms.total, groups["light"]), _grads(bce_l + GAMMA * h, groups["light"]))
    _assert_equal(
        _grads(terms.total, groups["shared"]),
        _grads(bce_b + bce_l + GAMMA * h, groups["shared"]),
    )


@pytest.mark.parametrize("variant", [Variant.PFD, Variant.PFD_MD])
def test_pfd_teacher_receives_only_its_own_loss(variant: Variant) -> None:
    model, out, y, group, terms = _setup(variant, Hint.SOFT_BCE)
    groups = _groups(model)
    l_t = F.binary_cross_entropy_with_logits(out.booster_logit, y)
    l_s = F.binary_cross_entropy_with_logits(out.light_logit, y)
    l_d = _hand_hint(out, Hint.SOFT_BCE, group, block=True)
    expected_total = l_t + (1 - LAM) * l_s + LAM * l_d
    torch.testing.assert_close(terms.total, expected_total)

    _assert_equal(_grads(terms.total, groups["booster"]), _grads(l_t, groups["booster"]))
    _assert_equal(
        _grads(terms.total, groups["light"]),
        _grads((1 - LAM) * l_s + LAM * l_d, groups["light"]),
    )
    _assert_equal(_grads(terms.total, groups["shared"]), _grads(expected_total, groups["shared"]))


def test_privileged_and_share_star_tables_are_booster_only() -> None:
    model = make_model(separate_tables=["user_id"])
    booster = {n for n, _ in model.booster_only_parameters()}
    light = {n for n, _ in model.light_only_parameters()}
    shared = {n for n, _ in model.shared_parameters()}
    assert "embeddings.tables.user_cat_clicks.weight" in booster  # privileged feature
    assert "embeddings.booster_tables.user_id.weight" in booster  # Share*: booster copy
    assert "embeddings.tables.user_id.weight" in light  # Share*: light copy
    assert "embeddings.tables.item_id.weight" in shared
    assert not booster & light and not booster & shared and not light & shared
    everything = {n for n, _ in model.named_parameters()}
    assert booster | light | shared == everything


def test_detach_shared_for_light_is_a_different_method() -> None:
    """With the named option, shared tables get the booster BCE only (no light BCE, no hint)."""
    model, out, y, _, terms = _setup(Variant.ROCKET, Hint.LOGIT_MSE, detach_shared_for_light=True)
    groups = _groups(model)
    bce_b = F.binary_cross_entropy_with_logits(out.booster_logit, y)
    bce_l = F.binary_cross_entropy_with_logits(out.light_logit, y)
    actual = _grads(terms.total, groups["shared"])
    _assert_equal(actual, _grads(bce_b, groups["shared"]))
    # the light-only copy of the Share* table still learns from the light path
    light = dict(groups["light"])
    user_light = [("embeddings.tables.user_id.weight", light["embeddings.tables.user_id.weight"])]
    assert _nonzero(_grads(bce_l, user_light))


def test_two_stage_kd_touches_no_booster_parameter() -> None:
    model = make_model(seed=1)
    batch, y = make_batch(16), make_labels(16)
    with torch.no_grad():
        teacher = model.booster_logit(batch)
    out = model.forward_joint(batch, run_booster=False)._replace(booster_logit=teacher)
    settings = DistillSettings(Variant.TWO_STAGE_KD, schedule=LambdaSchedule("constant", LAM))
    terms = compute_loss(out, y, settings, step=0)
    terms.total.backward()
    booster_only = [p for n, p in model.booster_only_parameters()]
    assert all(p.grad is None for p in booster_only)
    assert PRIVILEGED  # privileged tables are among the booster-only ones
