"""Feature declarations: what a feature is, before anything is fitted.

The index conventions every categorical table shares (``PAD_INDEX`` = padding /
missing, ``OOV_INDEX`` = out-of-vocabulary, ``FIRST_INDEX..`` = known values or
hash buckets), the feature enums, :class:`ContractError` and
:class:`FeatureSpec` (one schema entry, validated). Part of the feature contract
(:mod:`models.contract.features`); standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any

PAD_INDEX = 0
OOV_INDEX = 1
FIRST_INDEX = 2


class FeatureType(StrEnum):
    CATEGORICAL = "categorical"
    MULTI_CATEGORICAL = "multi_categorical"
    NUMERIC = "numeric"


class Side(StrEnum):
    """Where a feature comes from at serving time."""

    USER = "user"
    ITEM = "item"
    CONTEXT = "context"
    CROSS = "cross"  # user×item interacted features: not available to a two-tower model


class Encoding(StrEnum):
    VOCAB = "vocab"
    HASH = "hash"


class Transform(StrEnum):
    NONE = "none"
    LOG1P = "log1p"
    STANDARDIZE = "standardize"
    LOG1P_STANDARDIZE = "log1p_standardize"
    BUCKETIZE = "bucketize"


class ContractError(ValueError):
    """A feature spec or encoder state is invalid; the message names the feature."""


def _check_keys(kind: str, name: str, data: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ContractError(
            f"{kind} {name!r}: unknown key(s) {unknown}; allowed: {sorted(allowed)}"
        )


@dataclass(frozen=True)
class FeatureSpec:
    """One input feature as declared in the schema.

    Attributes:
        name: column name in the log (and key in the encoded batch).
        type: categorical, multi_categorical or numeric.
        side: user, item, context or cross.
        encoding: vocab (fitted on train, OOV index for unseen) or hash buckets
            (categorical only).
        buckets: number of hash buckets (``encoding == hash``).
        min_count: values seen fewer times on train map to OOV (vocab only).
        max_vocab: keep only the most frequent values (vocab only; 0 = no limit).
        transform: numeric transform; ``bucketize`` turns the value into a
            categorical index over ``num_buckets`` train quantiles.
        num_buckets: quantile buckets for ``bucketize``.
        max_len: fixed length of a multi-valued bag (longer bags are truncated).
        separator: splits a string cell into a bag (CSV logs).
        dim: embedding dimension (categorical and bucketised features).
        default: value used when a numeric value is missing or not finite;
            ``None`` means the train mean.
    """

    name: str
    type: FeatureType
    side: Side
    encoding: Encoding = Encoding.VOCAB
    buckets: int = 0
    min_count: int = 1
    max_vocab: int = 0
    transform: Transform = Transform.NONE
    num_buckets: int = 16
    max_len: int = 8
    separator: str = "|"
    dim: int = 8
    default: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", FeatureType(self.type))
        object.__setattr__(self, "side", Side(self.side))
        object.__setattr__(self, "encoding", Encoding(self.encoding))
        object.__setattr__(self, "transform", Transform(self.transform))
        if self.encoding is Encoding.HASH and self.buckets <= 0:
            raise ContractError(f"feature {self.name!r}: hash encoding needs buckets > 0")
        if self.type is FeatureType.NUMERIC and self.encoding is Encoding.HASH:
            raise ContractError(f"feature {self.name!r}: numeric features cannot be hashed")
        if self.type is not FeatureType.NUMERIC and self.transform is not Transform.NONE:
            raise ContractError(
                f"feature {self.name!r}: transform applies to numeric features only"
            )
        if self.dim <= 0 or self.max_len <= 0 or self.num_buckets <= 1:
            raise ContractError(f"feature {self.name!r}: dim, max_len must be > 0, num_buckets > 1")

    @property
    def is_sparse(self) -> bool:
        """True when the encoded value is an embedding index (needs a table)."""
        return self.type is not FeatureType.NUMERIC or self.transform is Transform.BUCKETIZE

    @property
    def is_bag(self) -> bool:
        return self.type is FeatureType.MULTI_CATEGORICAL

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        name = str(data.get("name", "?"))
        _check_keys("feature", name, data, [f.name for f in fields(cls)])
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ContractError(f"feature {name!r}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in asdict(self).items()}
