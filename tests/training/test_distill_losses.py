"""Hint losses, λ schedules and variant formulas of training/distill/."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.joint import JointOutput
from training.distill.hints import binary_kl, hidden_mse, listwise_kl, soft_bce
from training.distill.losses import DistillSettings, compute_loss
from training.distill.rules import Hint, Variant, nets_needed
from training.distill.schedules import LambdaSchedule

# --------------------------------------------------------------------------- schedules


def test_constant_schedule() -> None:
    s = LambdaSchedule("constant", 0.3)
    assert [s(t) for t in (0, 1, 10_000)] == [0.3, 0.3, 0.3]


def test_step_warmup_is_zero_for_k_steps_then_lambda() -> None:
    s = LambdaSchedule("step", 0.5, warmup_steps=3)
    assert [s(t) for t in range(6)] == [0.0, 0.0, 0.0, 0.5, 0.5, 0.5]


def test_linear_ramp_reaches_lambda_after_warmup() -> None:
    s = LambdaSchedule("linear", 0.8, warmup_steps=4)
    assert [s(t) for t in (0, 1, 2, 4, 100)] == pytest.approx([0.0, 0.2, 0.4, 0.8, 0.8])


def test_teacher_annealing_decays_linearly_to_zero() -> None:
    s = LambdaSchedule("anneal", 0.6, total_steps=10)
    assert [s(t) for t in (0, 5, 10, 20)] == pytest.approx([0.6, 0.3, 0.0, 0.0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "linear", "value": 1.0},  # no ramp length
        {"kind": "anneal", "value": 1.0},  # no total steps
        {"kind": "constant", "value": -0.1},
        {"kind": "sometimes", "value": 1.0},
    ],
)
def test_bad_schedules_are_rejected(kwargs) -> None:
    with pytest.raises(ValueError):
        LambdaSchedule(**kwargs)


# --------------------------------------------------------------------------- hints


def test_binary_kl_with_temperature_matches_hand_computation() -> None:
    zl = torch.tensor([0.5, -1.0])
    zb = torch.tensor([2.0, 1.0])
    t = 2.0
    expected = 0.0
    for s, b in zip(zl.tolist(), zb.tolist()):
        p = 1 / (1 + math.exp(-b / t))
        q = 1 / (1 + math.exp(-s / t))
        expected += p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    expected = expected / 2 * t * t
    assert float(binary_kl(zl, zb, t)) == pytest.approx(expected, rel=1e-5)
    assert float(binary_kl(zb, zb, t)) == pytest.approx(0.0, abs=1e-7)


def test_soft_bce_uses_teacher_probability() -> None:
    zl, zb = torch.tensor([0.3, -2.0]), torch.tensor([1.0, 0.0])
    p = torch.sigmoid(zb)
    expected = -(p * torch.log(torch.sigmoid(zl)) + (1 - p) * torch.log(1 - torch.sigmoid(zl)))
    torch.testing.assert_close(soft_bce(zl, zb), expected.mean())


def _naive_listwise(zl, zb, group, t):
    losses = []
    for g in sorted(set(group.tolist())):
        rows = [i for i, v in enumerate(group.tolist()) if v == g]
        if len(rows) < 2:
            continue
        p = torch.softmax(zb[rows] / t, 0)
        q = torch.softmax(zl[rows] / t, 0)
        losses.append(float((p * (p / q).log()).sum()))
    return sum(losses) / len(losses) * t * t


def test_listwise_hint_matches_a_per_group_loop() -> None:
    g = torch.Generator().manual_seed(0)
    zl = torch.randn(11, generator=g) * 2
    zb = torch.randn(11, generator=g) * 2
    group = torch.tensor([7, 3, 7, 3, 3, 9, 100, 7, 3, 100, 42])  # unsorted, one singleton
    for t in (1.0, 3.0):
        expected = _naive_listwise(zl, zb, group, t)
        assert float(listwise_kl(zl, zb, group, t)) == pytest.approx(expected, rel=1e-5)


def test_listwise_hint_is_shift_invariant_per_group_and_zero_without_lists() -> None:
    zl = torch.tensor([1.0, 2.0, 3.0, 0.0])
    group = torch.tensor([0, 0, 1, 1])
    shifted = zl + torch.tensor([5.0, 5.0, -2.0, -2.0])
    assert float(listwise_kl(zl, shifted, group)) == pytest.approx(0.0, abs=1e-6)
    assert float(listwise_kl(zl, zl * 3, torch.arange(4))) == 0.0


def test_listwise_large_logits_are_stable() -> None:
    zl = torch.tensor([1000.0, 0.0, -1000.0])
    zb = torch.tensor([0.0, 1000.0, 0.0])
    value = listwise_kl(zl, zb, torch.zeros(3, dtype=torch.long))
    assert torch.isfinite(value)


def test_hidden_hint_pulls_features_together() -> None:
    """A gradient step on the hint reduces the distance (the sign is right)."""
    student = torch.randn(8, 5, requires_grad=True)
    teacher = torch.randn(8, 5)
    before = float(((student.detach() - teacher) ** 2).sum())
    hidden_mse(student, teacher).backward()
    with torch.no_grad():
        student -= 0.5 * student.grad
    assert float(((student.detach() - teacher) ** 2).sum()) < before
    with pytest.raises(ValueError, match="does not match"):
        hidden_mse(torch.zeros(2, 3), torch.zeros(2, 4))


# --------------------------------------------------------------------------- variants


def _out(seed: int = 0) -> tuple[JointOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    zb, zl = torch.randn(6, generator=g), torch.randn(6, generator=g)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    return JointOutput(zb, zl, None, None, None), y


def test_variant_formulas() -> None:
    out, y = _out()
    bce_b = F.binary_cross_entropy_with_logits(out.booster_logit, y)
    bce_l = F.binary_cross_entropy_with_logits(out.light_logit, y)
    mse = ((out.light_logit - out.booster_logit) ** 2).mean()
    sbce = soft_bce(out.light_logit, out.booster_logit)
    sched = LambdaSchedule("constant", 0.25)
    cases = {
        Variant.LIGHT_ALONE: bce_l,
        Variant.BOOSTER_ALONE: bce_b,
        Variant.ROCKET: bce_b + bce_l + 0.25 * mse,
        Variant.ROCKET_NO_GRADIENT_BLOCK: bce_b + bce_l + 0.25 * mse,
        Variant.PFD: bce_b + 0.75 * bce_l + 0.25 * sbce,
        Variant.PFD_MD: bce_b + 0.75 * bce_l + 0.25 * sbce,
        Variant.TWO_STAGE_KD: 0.75 * bce_l + 0.25 * sbce,
    }
    for variant, expected in cases.items():
        terms = compute_loss(out, y, DistillSettings(variant, schedule=sched), step=0)
        torch.testing.assert_close(terms.total, expected, msg=str(variant))
        logged = terms.as_dict()
        assert set(logged) == {"loss", "booster_bce", "light_bce", "hint", "lambda"}
        no_hint = variant in (Variant.LIGHT_ALONE, Variant.BOOSTER_ALONE)
        assert logged["lambda"] == (0.0 if no_hint else 0.25)


def test_step_warmup_turns_the_pfd_distillation_on_later() -> None:
    out, y = _out(1)
    s = DistillSettings(Variant.PFD, schedule=LambdaSchedule("step", 0.5, warmup_steps=2))
    bce_b = F.binary_cross_entropy_with_logits(out.booster_logit, y)
    bce_l = F.binary_cross_entropy_with_logits(out.light_logit, y)
    torch.testing.assert_close(compute_loss(out, y, s, step=1).total, bce_b + bce_l)
    assert compute_loss(out, y, s, step=2).lam == 0.5


def test_nets_needed_and_single_net_variants() -> None:
    assert nets_needed(Variant.LIGHT_ALONE) == (False, True)
    assert nets_needed(Variant.BOOSTER_ALONE) == (True, False)
    assert nets_needed(Variant.ROCKET) == (True, True)
    out, y = _out()
    terms = compute_loss(out._replace(booster_logit=None), y, DistillSettings("light_alone"), 0)
    assert math.isnan(terms.as_dict()["booster_bce"])
    with pytest.raises(ValueError, match="booster"):
        compute_loss(out._replace(booster_logit=None), y, DistillSettings("rocket"), 0)


def test_hidden_hint_without_projection_is_a_clear_error() -> None:
    out, y = _out()
    with pytest.raises(ValueError, match="hint_projection"):
        compute_loss(out, y, DistillSettings("rocket", hint=Hint.HIDDEN), 0)


def test_listwise_hint_needs_groups() -> None:
    out, y = _out()
    with pytest.raises(ValueError, match="group"):
        compute_loss(out, y, DistillSettings("rocket", hint=Hint.LISTWISE), 0)


def test_settings_defaults_and_validation() -> None:
    assert DistillSettings("rocket").hint is Hint.LOGIT_MSE
    assert DistillSettings("pfd").hint is Hint.SOFT_BCE
    assert DistillSettings("rocket").gradient_block is True
    assert DistillSettings("rocket_no_gradient_block").gradient_block is False
    with pytest.raises(TypeError, match="bool"):
        DistillSettings("rocket", gradient_block="False")  # bool("False") is True: refuse
    with pytest.raises(ValueError, match="contradicts"):
        DistillSettings("rocket_no_gradient_block", gradient_block=True)
    with pytest.raises(ValueError, match="off"):
        DistillSettings("light_alone", hint=Hint.LOGIT_MSE)
    with pytest.raises(ValueError, match="<= 1"):
        DistillSettings("pfd", schedule=LambdaSchedule("constant", 1.5))
