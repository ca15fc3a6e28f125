"""Each sub-network is seeded on its own: the booster never changes the light init."""

from __future__ import annotations

import pytest
import torch

from models.embedding import derived_seed
from models.joint import JointModel
from tests.helpers.models import make_args


def _light_side(model: JointModel) -> dict[str, torch.Tensor]:
    """Light-only parameters and the light copies / shared tables, by name."""
    params = model.light_only_parameters() + model.shared_parameters()
    return {name: p.detach().clone() for name, p in params}


@pytest.mark.parametrize("light_kind", ["mlp", "two_tower"])
@pytest.mark.parametrize("separate", [[], ["user_id"]])
def test_changing_the_booster_leaves_the_light_init_bit_identical(light_kind, separate) -> None:
    common = dict(light_kind=light_kind, separate_tables=separate)
    small = JointModel(make_args(booster_kind="mlp", booster_dims=[8], **common), init_seed=7)
    large = JointModel(
        make_args(booster_kind="dcn", booster_dims=[64, 32, 16], cross_layers=2, **common),
        init_seed=7,
    )
    # and without privileged features at all (one table fewer in the collection)
    no_priv = JointModel(make_args(privileged=[], **common), init_seed=7)
    a, b, c = _light_side(small), _light_side(large), _light_side(no_priv)
    assert a.keys() == b.keys() == c.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
        assert torch.equal(a[name], c[name]), name
    # the boosters themselves do differ
    assert sum(p.numel() for p in small.booster.parameters()) < sum(
        p.numel() for p in large.booster.parameters()
    )


def test_the_seed_changes_every_subnetwork_and_the_global_rng_is_untouched() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = JointModel(make_args(separate_tables=["user_id"]), init_seed=1)
    assert torch.equal(torch.get_rng_state(), before)  # building drew nothing from it
    b = JointModel(make_args(separate_tables=["user_id"]), init_seed=2)
    again = JointModel(make_args(separate_tables=["user_id"]), init_seed=1)
    sa, sb, s_again = a.state_dict(), b.state_dict(), again.state_dict()
    for name in sa:
        assert torch.equal(sa[name], s_again[name]), name
    # booster, light net, a light table and the booster copy of a Share* table all move
    for name in (
        "booster.over_arch.weight",
        "light.over_arch.weight",
        "embeddings.tables.item_id.weight",
        "embeddings.booster_tables.user_id.weight",
    ):
        assert not torch.equal(sa[name], sb[name]), name
    # the two copies of a Share* table start apart (their own streams)
    assert not torch.equal(
        sa["embeddings.tables.user_id.weight"], sa["embeddings.booster_tables.user_id.weight"]
    )


def test_state_dict_keys_do_not_depend_on_seeding() -> None:
    torch.manual_seed(0)
    unseeded = JointModel(make_args(separate_tables=["user_id"], hint_projection=True))
    seeded = JointModel(make_args(separate_tables=["user_id"], hint_projection=True), init_seed=0)
    assert list(unseeded.state_dict()) == list(seeded.state_dict())
    # rebuilding a saved model (no seed) loads the seeded weights exactly
    unseeded.load_state_dict(seeded.state_dict())
    for name, value in seeded.state_dict().items():
        assert torch.equal(unseeded.state_dict()[name], value), name


def test_derived_seed_is_stable_and_distinct() -> None:
    # fixed value: the same in every process (not Python's salted hash)
    assert derived_seed(0, "light") == derived_seed(0, "light")
    assert derived_seed(0, "light") != derived_seed(0, "booster")
    assert derived_seed(0, "light") != derived_seed(1, "light")
    assert 0 <= derived_seed(2**40, "table", "light", "user_id") < 2**63
