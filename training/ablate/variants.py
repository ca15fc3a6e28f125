"""The variants an ablation trains and the run config of each.

``rocketrank ablate`` and ``rocketrank bench train`` derive every variant's
config from the base config with :func:`with_variant` (:func:`variant_config`
adds the PFD teacher's size and the per-variant overrides). The PFD variants
apply only when the task, as the light net sees it, has privileged features.

The fairness rule — every distilled variant runs on the config's distillation
settings, not on silent defaults:

* ``light_alone`` and ``booster_alone`` train one net: no hint, λ, schedule or
  warm-up (the hint weight is 0, so a schedule would change nothing).
* Every distilled variant (``two_stage_kd``, ``rocket``,
  ``rocket_no_gradient_block``, ``pfd``, ``pfd_md``) takes the config's
  ``schedule``, ``warmup_steps`` / ``warmup_epochs`` and ``temperature`` as
  they are.
* The config's ``hint`` (when it names one) applies to every distilled variant
  that can compute it; only ``hidden`` cannot be computed by ``two_stage_kd``
  (its frozen teacher contributes a logit, not a hidden layer). Where the hint
  does not apply, the variant uses its default hint *and* default λ.
* The config's ``lambda`` (when it names one) goes with its hint, unless the
  variant's rules refuse it (the PFD and two-stage KD variants mix two losses
  as ``(1−λ)`` and ``λ``, so ``λ ≤ 1``; a Rocket γ of 3 then falls back to
  their default 0.5).
* A key the config leaves unset (``hint`` or ``lambda`` absent) means "each
  variant's default" (``training.distill.rules.default_hint`` / ``default_lambda``).
* ``gradient_block`` is always the variant's own: it is what tells ``rocket``
  from ``rocket_no_gradient_block``.

Anything else is set per variant with an overrides file
(``rocketrank ablate --variant-config FILE``): a YAML mapping
``variant -> {section: {key: value}}`` over the sections ``data``, ``model``,
``distill`` and ``optim``, applied last and validated by building the
``RunConfig`` through its own strict ``from_dict``::

    pfd: {distill: {lambda: 0.8, warmup_epochs: 0.5}}
    light_alone: {optim: {lr_sparse: 0.005}}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from training.config.errors import ConfigError
from training.config.model_section import model_args
from training.config.run import RunConfig
from training.data.prepare import PreparedData
from training.distill.rules import Hint, Variant, rule_violation
from training.distill.schedules import Schedule

SINGLE_NET = frozenset({Variant.LIGHT_ALONE, Variant.BOOSTER_ALONE})
OVERRIDE_SECTIONS = ("data", "model", "distill", "optim")

Overrides = Mapping[str, Mapping[str, Any]]
"""One variant's overrides: ``{section: {key: value}}`` in the run config's YAML keys."""


def _hint_applies(variant: Variant, hint: Hint) -> bool:
    """Whether ``variant`` can compute ``hint`` (see the module docstring)."""
    if hint is Hint.OFF:
        return False
    return not (variant is Variant.TWO_STAGE_KD and hint is Hint.HIDDEN)


def with_variant(cfg: RunConfig, variant: Variant | str) -> RunConfig:
    """``cfg`` with another distillation variant, under the rule of the module docstring."""
    variant = Variant(variant)
    d = cfg.distill
    if variant in SINGLE_NET:
        distill = dataclasses.replace(
            d,
            variant=variant,
            hint=None,
            lam=None,
            schedule=Schedule.CONSTANT,
            warmup_steps=0,
            warmup_epochs=0.0,
            gradient_block=None,
        )
        return dataclasses.replace(cfg, distill=distill)
    hint, lam = d.hint, d.lam
    if hint is not None and not _hint_applies(variant, hint):
        hint, lam = None, None
    if lam is not None and rule_violation(variant, hint, lam, None) is not None:
        lam = None
    distill = dataclasses.replace(d, variant=variant, hint=hint, lam=lam, gradient_block=None)
    return dataclasses.replace(cfg, distill=distill)


VARIANTS: tuple[Variant, ...] = (
    Variant.LIGHT_ALONE,
    Variant.BOOSTER_ALONE,
    Variant.TWO_STAGE_KD,
    Variant.ROCKET,
    Variant.ROCKET_NO_GRADIENT_BLOCK,
    Variant.PFD,
    Variant.PFD_MD,
)
PRIVILEGED_ONLY = frozenset({Variant.PFD, Variant.PFD_MD})


def privileged_features(cfg: RunConfig, data: PreparedData) -> list[str]:
    """Features only the booster reads for this config (task + light-net kind)."""
    args = model_args(cfg, data.dataset.schema, data.dataset.encoder.cardinality)
    return list(args.privileged)


def applicable_variants(cfg: RunConfig, data: PreparedData) -> list[Variant]:
    """Every variant of :data:`VARIANTS` that applies to this config and data."""
    has_privileged = bool(privileged_features(cfg, data))
    return [v for v in VARIANTS if v not in PRIVILEGED_ONLY or has_privileged]


def apply_overrides(cfg: RunConfig, overrides: Overrides, where: str = "overrides") -> RunConfig:
    """``cfg`` with ``{section: {key: value}}`` set, validated by ``RunConfig.from_dict``.

    Args:
        cfg: the config to change.
        overrides: sections of :data:`OVERRIDE_SECTIONS`, each a mapping of YAML keys.
        where: prefix of error messages (e.g. ``"variants.yaml: pfd"``).

    Raises:
        ConfigError: an unknown section or key, a wrong type, a broken rule, or
            an attempt to change ``distill.variant`` (the variant is the file's key).
    """
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping of sections, got {type(overrides).__name__}"
        )
    data = cfg.to_dict()
    for section, values in overrides.items():
        if section not in OVERRIDE_SECTIONS:
            raise ConfigError(
                f"{where}: {section}: not an overridable section; "
                f"allowed: {list(OVERRIDE_SECTIONS)}"
            )
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"{where}: {section}: expected a mapping of keys, got {type(values).__name__}"
            )
        if section == "distill" and "variant" in values:
            raise ConfigError(f"{where}: distill.variant: set by the variant this entry is for")
        data[section] = {**data[section], **values}
    try:
        return RunConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def variant_config(
    cfg: RunConfig, variant: Variant | str, overrides: Overrides | None = None
) -> RunConfig:
    """The run config of one variant (see the module docstring); ``overrides`` apply last."""
    variant = Variant(variant)
    out = with_variant(cfg, variant)
    if variant is Variant.PFD:
        # PFD without model distillation: the teacher has the student's capacity
        model = dataclasses.replace(
            out.model, booster="mlp", booster_dims=tuple(cfg.model.light_dims)
        )
        out = dataclasses.replace(out, model=model)
    if overrides:
        out = apply_overrides(out, overrides, f"overrides of {variant.value}")
    return out


def parse_variant_overrides(data: Any, where: str = "variant config") -> dict[Variant, Overrides]:
    """Check the shape of a ``variant -> {section: {key: value}}`` mapping.

    Raises:
        ConfigError: not a mapping, an unknown variant name, or a section that
            is not a mapping (keys and values are checked by :func:`apply_overrides`).
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping variant -> sections, got {type(data)}")
    allowed = [v.value for v in VARIANTS]
    out: dict[Variant, Overrides] = {}
    for name, sections in data.items():
        if name not in allowed:
            raise ConfigError(f"{where}: {name}: unknown variant; allowed: {allowed}")
        if not isinstance(sections, Mapping):
            raise ConfigError(
                f"{where}: {name}: expected a mapping of sections, got {type(sections).__name__}"
            )
        out[Variant(name)] = {str(k): v for k, v in sections.items()}
    return out


def load_variant_overrides(path: str | Path, base: RunConfig) -> dict[Variant, Overrides]:
    """Read ``--variant-config FILE`` and validate every entry against ``base`` at once.

    Every entry is applied to its variant's config here, so a typo fails before
    any training starts, naming the file, the variant and the key.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"variant config not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    overrides = parse_variant_overrides(raw, str(path))
    for variant, sections in overrides.items():
        apply_overrides(variant_config(base, variant), sections, f"{path}: {variant.value}")
    return overrides


def describe_settings(cfg: RunConfig) -> str:
    """The distillation settings a variant trains with, e.g. ``soft_bce λ=0.5, step 0.25 ep``."""
    d = cfg.distill
    if d.resolved_hint is Hint.OFF:
        return "labels only"
    text = f"{d.resolved_hint.value} λ={d.resolved_lambda:g}"
    if d.schedule is not Schedule.CONSTANT:
        warm = f"{d.warmup_epochs:g} ep" if d.warmup_epochs else f"{d.warmup_steps} steps"
        text += f", {d.schedule.value}" + ("" if d.schedule is Schedule.ANNEAL else f" {warm}")
    if d.resolved_hint in (Hint.KL, Hint.LISTWISE):
        text += f", T={d.temperature:g}"
    if not d.resolved_gradient_block:
        text += ", no gradient block"
    return text


__all__ = [
    "OVERRIDE_SECTIONS",
    "PRIVILEGED_ONLY",
    "SINGLE_NET",
    "VARIANTS",
    "Overrides",
    "applicable_variants",
    "apply_overrides",
    "describe_settings",
    "load_variant_overrides",
    "parse_variant_overrides",
    "privileged_features",
    "variant_config",
    "with_variant",
]
