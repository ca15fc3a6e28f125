"""Parity: the exported module against the trained model, on the rows it will score.

fp32 within ``FP32_TOLERANCE`` in logits, int8 within ``INT8_TOLERANCE`` in
probability; rows are the run's held-out test rows, or valid random inputs when
the data is gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from models.contract.features import FeatureEncoder
from training.data.schema import load_schema
from training.evaluate import auc
from training.export.errors import ExportError
from training.export.graph import dequantize_rows, quantize_rows
from training.export.run_loader import TrainedRun

FP32_TOLERANCE = 1e-5
"""Max |logit difference| between the exported fp32 module and the trained model."""
INT8_TOLERANCE = 1e-2
"""Max |probability difference| between the exported int8 module and the trained model."""
ITEM_CHUNK = 65_536
"""Rows per forward pass when scoring parity rows or a catalogue."""


@dataclass
class ParityRows:
    """Encoded rows to compare trained and exported scores on.

    Attributes:
        features: name -> encoded tensor (served features at least).
        labels: float32 ``[N]`` task labels, or ``None`` for random rows.
        source: ``test split`` or ``random``.
    """

    features: dict[str, Tensor]
    labels: Tensor | None
    source: str


def random_rows(encoder: FeatureEncoder, names: list[str], rows: int, seed: int = 0) -> ParityRows:
    """Valid random inputs for ``names``: every index in its table's range (padding
    and OOV included), numerics standard normal."""
    g = torch.Generator().manual_seed(seed)
    features: dict[str, Tensor] = {}
    for name in names:
        spec = encoder.specs[name]
        if spec.is_sparse:
            high = encoder.cardinality(name)
            shape = (rows, spec.max_len) if spec.is_bag else (rows,)
            features[name] = torch.randint(0, high, shape, generator=g)
        else:
            features[name] = torch.randn(rows, generator=g)
    return ParityRows(features, None, "random")


def held_out_rows(run: TrainedRun, rows: int) -> ParityRows | None:
    """The first ``rows`` test rows of the run's task, encoded by the run's encoder,
    or ``None`` when the run's data directory or test split is unavailable."""
    if run.data_dir is None or not run.data_dir.is_dir():
        return None
    from training.data.data_dir import find_data_files
    from training.data.dataset import encode_split
    from training.data.readers import read_columns

    files = find_data_files(run.data_dir)
    if "test" not in files.splits or files.schema is None:
        return None
    schema = load_schema(files.schema)
    columns = read_columns(files.splits["test"], schema)
    split = encode_split(schema, run.encoder, columns, name="test").for_task(schema, run.task)
    n = min(rows, len(split))
    index = torch.arange(n)
    label_name = schema.task(run.task).label
    features = {k: v.index_select(0, index) for k, v in split.features.items()}
    labels = split.labels[label_name].index_select(0, index)
    return ParityRows(features, labels, "test split")


def _logits(module: Any, features: Mapping[str, Tensor], chunk: int = ITEM_CHUNK) -> Tensor:
    n = int(next(iter(features.values())).shape[0])
    outs = []
    with torch.inference_mode():
        for start in range(0, n, chunk):
            part = {k: v[start : start + chunk] for k, v in features.items()}
            outs.append(module(part))
    return torch.cat(outs) if outs else torch.zeros(0)


def _stored_vectors(vectors: Tensor, storage: str) -> Tensor:
    """Item vectors ``[N, d]`` as ``load_artifact`` returns them after ``storage``."""
    if storage == "int8":
        return dequantize_rows(*quantize_rows(vectors))
    if storage == "fp16":
        return vectors.to(torch.float16).to(torch.float32)
    return vectors


def _served_two_tower_logits(
    exported: Any, features: Mapping[str, Tensor], item_vectors: str
) -> Tensor:
    """Logits as the coarse service computes them: stored item vector · user vector."""
    n = int(next(iter(features.values())).shape[0])
    outs = []
    with torch.inference_mode():
        for start in range(0, n, ITEM_CHUNK):
            part = {k: v[start : start + ITEM_CHUNK] for k, v in features.items()}
            u = exported.user_vector(part)
            v = _stored_vectors(exported.item_vector(part), item_vectors)
            outs.append((u * v).sum(dim=1))
    return torch.cat(outs) if outs else torch.zeros(0)


def check_parity(
    trained: torch.nn.Module,
    exported: Any,
    rows: ParityRows,
    quantize: str,
    kind: str = "mlp",
    item_vectors: str | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Compare exported and trained scores; raise ExportError beyond the tolerance.

    fp32 is compared on logits (``1e-5``); int8 on probabilities (``1e-2``),
    because int8 rounding error grows with the logit's magnitude while what the
    ranking consumes is the order and the probability. For two-tower models the
    serving path (stored item vector · ``user_vector``, item vectors quantised
    as in the artifact) is checked as well as ``forward``.

    Returns:
        (parity report, test AUC of both — empty without labels).
    """
    ref = _logits(trained, rows.features).double()
    paths = {"forward": _logits(exported, rows.features).double()}
    if kind == "two_tower":
        storage = item_vectors or ("int8" if quantize == "int8" else "fp32")
        paths["serving"] = _served_two_tower_logits(exported, rows.features, storage).double()
    if quantize == "int8":
        space, tolerance = "probability", INT8_TOLERANCE
        diffs = {k: (torch.sigmoid(v) - torch.sigmoid(ref)).abs() for k, v in paths.items()}
    else:
        space, tolerance = "logit", FP32_TOLERANCE
        diffs = {k: (v - ref).abs() for k, v in paths.items()}
    per_path = {k: float(d.max()) if len(d) else 0.0 for k, d in diffs.items()}
    max_diff = max(per_path.values())
    report = {
        "rows": len(ref),
        "max_abs_diff": max_diff,
        "max_abs_diff_by_path": per_path,
        "tolerance": tolerance,
        "space": space,
        "source": rows.source,
    }
    if not max_diff <= tolerance:  # also catches NaN
        raise ExportError(
            f"parity check failed on {len(ref)} {rows.source} rows: max |{space} difference| "
            f"{per_path} > {tolerance:g} between the exported and the trained light net"
        )
    aucs: dict[str, float] = {}
    if rows.labels is not None:
        y = rows.labels.numpy()
        aucs = {"exported": auc(y, paths["forward"].numpy()), "trained": auc(y, ref.numpy())}
        if "serving" in paths:
            aucs["exported_serving"] = auc(y, paths["serving"].numpy())
    return report, aucs


__all__ = [
    "FP32_TOLERANCE",
    "INT8_TOLERANCE",
    "ParityRows",
    "check_parity",
    "held_out_rows",
    "random_rows",
]
