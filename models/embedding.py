"""Embedding tables over the schema's features (the SparseArch of the joint model).

One :class:`EmbeddingCollection` owns every table. Networks never index it by
name at run time; they hold a :class:`FeatureView` — an ordered list of
per-feature modules that *reference* the collection's tables — so a view is a
plain TorchScript-compatible module and two views that reference the same
table share its parameters (that is how booster and light net share
embeddings).

Encoded inputs (see ``models/contract/features.py``), batch of B rows:

* categorical / bucketised numeric: ``int64 [B]`` → ``nn.Embedding`` → ``[B, d]``
* multi-valued categorical: ``int64 [B, L]`` (0 = padding) → mean of the
  embeddings of the non-zero entries → ``[B, d]`` (all-padding bag → zeros)
* numeric: ``float32 [B]`` → passthrough ``[B, 1]``
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from models.contract.feature_spec import PAD_INDEX, FeatureSpec

BOOSTER = "booster"
LIGHT = "light"


def derived_seed(seed: int, *parts: str) -> int:
    """A stable seed for one sub-network: sha256 of ``seed`` and ``parts``, 63 bits.

    Not Python's ``hash`` (salted per process): the same ``(seed, parts)`` gives
    the same value in every process and on every machine.
    """
    digest = hashlib.sha256("/".join([str(int(seed)), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@contextlib.contextmanager
def seeded_init(seed: int | None, *parts: str) -> Iterator[None]:
    """Build modules inside from their own RNG stream ``derived_seed(seed, *parts)``.

    The global torch RNG is forked and restored, so what is built inside neither
    reads nor advances the stream the caller sees. ``seed=None``: no-op (the
    modules draw from the global stream, the behaviour before per-net seeding).
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, *parts))
        yield


class CategoricalEmbedding(nn.Module):
    """Single-valued id feature: ``int64 [B]`` → ``[B, d]``.

    Args:
        name: feature name (key in the feature dict).
        table: the embedding table (possibly shared with another view).
        detach: cut the gradient to the table on this path (the
            ``detach_shared_for_light`` method; off by default).
    """

    def __init__(self, name: str, table: nn.Embedding, detach: bool = False) -> None:
        super().__init__()
        self.name = name
        self.table = table
        self.dim = table.embedding_dim
        self.detach = detach

    def embed(self, features: dict[str, Tensor]) -> Tensor:
        """The lookup without the path's detach, ``[B, d]``."""
        return self.table(features[self.name].reshape(-1))

    @torch.jit.unused
    def embed_for_training(self, features: dict[str, Tensor]) -> Tensor:
        """``embed`` with the cheaper dense-gradient backward of :func:`_lookup`."""
        return _lookup(self.table, features[self.name].reshape(-1))

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        out = self.embed(features)
        if self.detach:
            out = out.detach()
        return out


class BagEmbedding(nn.Module):
    """Multi-valued id feature: ``int64 [B, L]`` → masked mean over non-zero ids ``[B, d]``.

    Args: as :class:`CategoricalEmbedding`.
    """

    def __init__(self, name: str, table: nn.Embedding, detach: bool = False) -> None:
        super().__init__()
        self.name = name
        self.table = table
        self.dim = table.embedding_dim
        self.detach = detach
        self.pad_index = PAD_INDEX

    def _ids(self, features: dict[str, Tensor]) -> Tensor:
        ids = features[self.name]
        if ids.dim() == 1:
            ids = ids.unsqueeze(1)
        return ids

    def _pool(self, ids: Tensor, vectors: Tensor) -> Tensor:
        """Masked mean of ``vectors`` ``[B, L, d]`` over the non-padding ``ids`` ``[B, L]``."""
        mask = (ids != self.pad_index).unsqueeze(-1).to(vectors.dtype)  # [B, L, 1]
        count = mask.sum(dim=1).clamp_min(1.0)  # [B, 1]
        return (vectors * mask).sum(dim=1) / count

    def embed(self, features: dict[str, Tensor]) -> Tensor:
        """The pooled bag without the path's detach, ``[B, d]``."""
        ids = self._ids(features)
        return self._pool(ids, self.table(ids))

    @torch.jit.unused
    def embed_for_training(self, features: dict[str, Tensor]) -> Tensor:
        """``embed`` with the cheaper dense-gradient backward of :func:`_lookup`."""
        ids = self._ids(features)
        vectors = _lookup(self.table, ids.reshape(-1)).reshape(ids.shape[0], ids.shape[1], -1)
        return self._pool(ids, vectors)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        out = self.embed(features)
        if self.detach:
            out = out.detach()
        return out


class NumericPassthrough(nn.Module):
    """Numeric feature: ``float32 [B]`` → ``[B, 1]`` (already transformed by the encoder)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.dim = 1
        self.detach = False

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return features[self.name].to(torch.float32).reshape(-1, 1)


class FeatureView(nn.Module):
    """The concatenated embeddings of an ordered list of features.

    Args:
        parts: one module per feature (each maps the feature dict to ``[B, d_f]``).

    ``forward(features) -> [B, sum(d_f)]``.
    """

    def __init__(self, parts: Sequence[nn.Module]) -> None:
        super().__init__()
        if not parts:
            raise ValueError("a feature view needs at least one feature")
        self.parts = nn.ModuleList(parts)
        self.names: list[str] = [p.name for p in parts]
        self.dim = int(sum(p.dim for p in parts))

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        outs: list[Tensor] = []
        for part in self.parts:
            outs.append(part(features))
        return torch.cat(outs, dim=1)

    @torch.jit.unused
    def forward_cached(self, features: dict[str, Tensor], cache: dict[int, Tensor]) -> Tensor:
        """``forward`` that reuses lookups another view already made on the same table.

        Training-only (not scripted). Looking a shared table up once per batch
        instead of once per net also means one embedding backward per table, which
        is most of the cost the light net adds to joint training.

        Args:
            features: the encoded batch.
            cache: ``id(table) -> [B, d]`` lookups of this batch; filled as a side effect.
        """
        outs: list[Tensor] = []
        for part in self.parts:
            if isinstance(part, NumericPassthrough):
                outs.append(part(features))
                continue
            key = id(part.table)
            if key not in cache:
                cache[key] = part.embed_for_training(features)
            out = cache[key]
            outs.append(out.detach() if part.detach else out)
        return torch.cat(outs, dim=1)


class EmbeddingCollection(nn.Module):
    """All embedding tables of the joint model.

    Sharing modes:

    * full sharing (``separate=()``): booster and light net read the same table
      for every served feature; privileged features have tables only the
      booster reads.
    * "Share*" (``separate=[...]``): each listed feature has one table per net
      (``tables[name]`` for the light net, ``booster_tables[name]`` for the
      booster) — PFD found full sharing of e.g. the user id hurt the CTR student.

    Args:
        specs: feature specs of every feature any net reads.
        cardinalities: table size per sparse feature (``FeatureEncoder.cardinality``).
        dims: per-feature embedding dim overrides (default ``spec.dim``).
        separate: features with a separate table per net.
        sparse: sparse gradients for the tables (use SparseAdam/SGD for them).
        sparse_min_rows: with ``sparse``, only tables of at least this many rows
            get sparse gradients; smaller ones stay dense. A batch touches most
            rows of a small table anyway, so coalescing its sparse gradient and
            the sparse optimiser's row gathers cost more than a dense update of
            the whole (tiny) table. 0 = every table sparse.
        init_seed: initialise each table from its own stream
            ``derived_seed(init_seed, "table", net, name)`` (``net`` "light" for
            ``tables``, "booster" for ``booster_tables``), so a table's initial
            values do not depend on which other tables exist; None = global stream.
    """

    def __init__(
        self,
        specs: Sequence[FeatureSpec],
        cardinalities: Mapping[str, int],
        dims: Mapping[str, int] | None = None,
        separate: Iterable[str] = (),
        sparse: bool = False,
        sparse_min_rows: int = 0,
        init_seed: int | None = None,
    ) -> None:
        super().__init__()
        if sparse_min_rows < 0:
            raise ValueError(f"sparse_min_rows must be >= 0, got {sparse_min_rows}")
        self.specs: dict[str, FeatureSpec] = {s.name: s for s in specs}
        dims = dict(dims or {})
        separate = list(separate)
        for name in [*dims, *separate]:
            if name not in self.specs:
                raise ValueError(f"embedding option names unknown feature {name!r}")
        for name in separate:
            if not self.specs[name].is_sparse:
                raise ValueError(f"feature {name!r} is numeric: it has no table to keep separate")
        self.separate = frozenset(separate)
        self.tables = nn.ModuleDict()
        self.booster_tables = nn.ModuleDict()
        for name, spec in self.specs.items():
            if not spec.is_sparse:
                continue
            rows = int(cardinalities.get(name, 0))
            if rows <= 0:
                raise ValueError(f"feature {name!r}: cardinality missing or not positive")
            dim = int(dims.get(name, spec.dim))
            if dim <= 0:
                raise ValueError(f"feature {name!r}: embedding dim must be > 0, got {dim}")
            table_sparse = sparse and rows >= sparse_min_rows
            with seeded_init(init_seed, "table", LIGHT, name):
                self.tables[name] = _table(rows, dim, table_sparse)
            if name in self.separate:
                with seeded_init(init_seed, "table", BOOSTER, name):
                    self.booster_tables[name] = _table(rows, dim, table_sparse)

    def table_for(self, name: str, net: str) -> nn.Embedding:
        """The table ``net`` ("booster" or "light") reads for feature ``name``."""
        if net == BOOSTER and name in self.booster_tables:
            return self.booster_tables[name]
        return self.tables[name]

    def is_shared(self, name: str) -> bool:
        """True when booster and light net read the same table for ``name``."""
        return name in self.tables and name not in self.booster_tables

    def view(self, names: Sequence[str], net: str, detach_shared: bool = False) -> FeatureView:
        """A :class:`FeatureView` over ``names`` (in that order) as read by ``net``.

        Args:
            names: feature names, in output order.
            net: "booster" or "light" (selects the per-net table under Share*).
            detach_shared: cut the gradient to tables shared with the other net
                on this path (``detach_shared_for_light``; not the paper's method).
        """
        if net not in (BOOSTER, LIGHT):
            raise ValueError(f"net must be {BOOSTER!r} or {LIGHT!r}, got {net!r}")
        parts: list[nn.Module] = []
        for name in names:
            if name not in self.specs:
                raise ValueError(f"feature {name!r} is not in the embedding collection")
            spec = self.specs[name]
            if not spec.is_sparse:
                parts.append(NumericPassthrough(name))
            else:
                kind = BagEmbedding if spec.is_bag else CategoricalEmbedding
                detach = detach_shared and self.is_shared(name)
                parts.append(kind(name, self.table_for(name, net), detach=detach))
        return FeatureView(parts)


def _lookup(table: nn.Embedding, ids: Tensor) -> Tensor:
    """Rows ``ids`` (``int64 [N]``) of ``table`` → ``[N, d]``, as ``table(ids)``.

    Same values; only the backward differs. Sparse tables keep ``nn.Embedding``'s
    sparse gradient (for SparseAdam). Dense tables use ``index_select``, whose
    backward is a plain ``index_add_`` into a zero table — on CPU about 4x cheaper
    than ``embedding_dense_backward`` (~50 vs ~220 us for 2,048 ids, one thread),
    paid once per table per training step.
    """
    if not isinstance(table, nn.Embedding) or table.sparse:
        return table(ids)  # sparse gradient, or a non-trainable (e.g. int8) table
    return torch.index_select(table.weight, 0, ids)


def _table(rows: int, dim: int, sparse: bool) -> nn.Embedding:
    table = nn.Embedding(rows, dim, sparse=sparse)
    # Small init keeps the initial logits near 0 whatever the number of features.
    nn.init.normal_(table.weight, std=0.01)
    return table


__all__ = [
    "BOOSTER",
    "LIGHT",
    "BagEmbedding",
    "CategoricalEmbedding",
    "EmbeddingCollection",
    "FeatureView",
    "NumericPassthrough",
    "derived_seed",
    "seeded_init",
]
