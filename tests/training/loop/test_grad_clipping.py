"""optim.max_grad_norm clips booster-only, light-only and shared gradients on their own."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.models import make_batch, make_labels, make_model
from training.distill.losses import DistillSettings, compute_loss
from training.distill.rules import Hint, Variant
from training.distill.schedules import LambdaSchedule
from training.loop.step_parts import clip_groups

MAX_NORM = 0.05


def _clipped_grads(weight: float) -> dict[str, torch.Tensor]:
    """Gradients after per-group clipping of the Rocket loss with hint weight ``weight``."""
    model = make_model(seed=3, separate_tables=["user_id"])
    batch = make_batch(32)
    settings = DistillSettings(
        variant=Variant.ROCKET, hint=Hint.LOGIT_MSE, schedule=LambdaSchedule(value=weight)
    )
    terms = compute_loss(model.forward_joint(batch), make_labels(32), settings, step=0)
    terms.total.backward()
    for group in clip_groups(model):
        torch.nn.utils.clip_grad_norm_(group, MAX_NORM)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_the_groups_are_the_models_parameter_groups() -> None:
    model = make_model(separate_tables=["user_id"])
    groups = [{id(p) for p in g} for g in clip_groups(model)]
    expected = [
        {id(p) for _, p in model.booster_only_parameters()},
        {id(p) for _, p in model.light_only_parameters()},
        {id(p) for _, p in model.shared_parameters()},
    ]
    assert groups == expected


def test_a_huge_hint_never_rescales_the_boosters_clipped_update() -> None:
    quiet, loud = _clipped_grads(0.0), _clipped_grads(1e4)
    model = make_model(seed=3, separate_tables=["user_id"])
    booster = [n for n, _ in model.booster_only_parameters()]
    light = [n for n, _ in model.light_only_parameters()]
    # the booster's gradient is its own BCE's, clipped by its own norm only
    for name in booster:
        torch.testing.assert_close(loud[name], quiet[name], rtol=1e-5, atol=1e-8, msg=name)
    # each group ends at (or under) the norm; the light group was clipped hard
    for names in (booster, light):
        norm = torch.linalg.vector_norm(torch.stack([loud[n].norm() for n in names]))
        assert norm <= MAX_NORM * (1 + 1e-4)
    light_norm = torch.linalg.vector_norm(torch.stack([loud[n].norm() for n in light]))
    assert float(light_norm) == pytest.approx(MAX_NORM, rel=1e-4)


def test_one_global_clip_would_have_shrunk_the_booster() -> None:
    """The failure the groups prevent, shown on the same model and loss."""
    model = make_model(seed=3, separate_tables=["user_id"])
    batch = make_batch(32)
    settings = DistillSettings(
        variant=Variant.ROCKET, hint=Hint.LOGIT_MSE, schedule=LambdaSchedule(value=1e4)
    )
    compute_loss(model.forward_joint(batch), make_labels(32), settings, step=0).total.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
    quiet = _clipped_grads(0.0)
    name, p = model.booster_only_parameters()[-1]
    assert p.grad.norm() < 0.1 * quiet[name].norm()
