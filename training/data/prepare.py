"""Read, validate and encode a data directory once for one task.

``prepare_data`` is what every run, ablation and benchmark starts from::

    data = prepare_data("data/", cfg)    # schema check, encoder fit, encoded splits
    train(cfg, data, "runs/fine")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from training.config.run import RunConfig
from training.data.dataset import EncodedSplit
from training.data.loader import Dataset, load_dataset
from training.data.rank_shard import RankShard
from training.data.shuffle import CHUNK_ROWS
from training.data.stream_prepare import StreamedDataset, open_streaming
from training.data.streaming import StreamingSplit
from training.loop.errors import TrainingError

if TYPE_CHECKING:
    from training.loop.distributed import DistContext


@dataclass
class PreparedData:
    """The encoded splits of one task, shared by every run that uses them.

    Attributes:
        dataset: the validated, encoded data directory (schema + fitted encoder).
        task: the task name; ``label`` its label name (key of ``Batch.labels``).
        train: the training split (in memory, or streamed from Parquet; under
            torchrun with ``data.shard_by_rank``, this rank's share of it).
        valid: validation split (early stopping), or None; streamed in chunks
            when ``data.chunk_rows > 0``.
        test: test split (final metrics), or None (then final metrics use valid).
        data_dir: where the data came from.
    """

    dataset: Dataset | StreamedDataset
    task: str
    label: str
    train: EncodedSplit | StreamingSplit | RankShard
    valid: EncodedSplit | StreamingSplit | None
    test: EncodedSplit | StreamingSplit | None
    data_dir: Path | None = None


def prepare_data(
    data_dir: str | Path,
    cfg: RunConfig,
    *,
    max_rows: int | None = None,
    cache: bool = True,
    dist: DistContext | None = None,
) -> PreparedData:
    """Read, validate and encode a data directory once for ``cfg.task``.

    The task's ``where`` filter (e.g. CVR on clicked rows) is applied to every
    split, so training and evaluation see the same population.

    Args:
        data_dir: directory with ``train``/``valid``/``test`` files and ``schema.yaml``.
        cfg: the run config (task; ``data.chunk_rows`` > 0 streams the training split).
        max_rows: use at most the first N rows of each split file (quick runs).
        cache: reuse the data layer's encoded-split cache.
        dist: this process's place under torchrun. With ``data.shard_by_rank``
            (streaming), rank 0 alone validates the log and fits the encoder,
            the others receive the result, and each rank reads only its own
            chunks of the training split (:class:`training.data.rank_shard.RankShard`;
            the trainer then does not slice the batches again). Otherwise, or
            in one process: every rank reads every batch.
    """
    if max_rows is not None and max_rows <= 0:
        raise ValueError(f"max_rows must be > 0, got {max_rows}")
    if cfg.data.chunk_rows > 0:
        if max_rows is not None:
            raise ValueError("max_rows cannot be combined with streaming (data.chunk_rows > 0)")
        return prepare_streaming(data_dir, cfg, cache=cache, dist=dist)
    # the in-memory split shuffles with the same chunk plan as a streamed one
    chunk_rows = cfg.data.chunk_rows or CHUNK_ROWS
    dataset = load_dataset(data_dir, tasks=[cfg.task], cache=cache, chunk_rows=chunk_rows)
    schema = dataset.schema
    label = schema.task(cfg.task).label

    def split(name: str) -> EncodedSplit | None:
        if name not in dataset.splits:
            return None
        s = dataset.splits[name]
        if max_rows is not None and len(s) > max_rows:
            s = s.filter_rows(torch.arange(len(s)) < max_rows)
        return s.for_task(schema, cfg.task)

    train = split("train")
    valid, test = split("valid"), split("test")
    if len(train) == 0:
        raise TrainingError(f"task {cfg.task!r}: the training split has no rows")
    return PreparedData(dataset, cfg.task, label, train, valid, test, Path(data_dir))


def prepare_streaming(
    data_dir: str | Path,
    cfg: RunConfig,
    *,
    cache: bool = True,
    dist: DistContext | None = None,
) -> PreparedData:
    """:func:`prepare_data` with ``data.chunk_rows > 0``: nothing holds a split.

    One bounded-memory pass validates every split and fits the encoder on train
    (:mod:`training.data.validate_stream`); train, valid and test are
    :class:`StreamingSplit` s reading ``data.chunk_rows`` rows at a time, and
    encoded chunks are cached on disk (:mod:`training.data.stream_prepare`).
    """
    shard = None  # (rank, world size) when each rank reads only its own chunks
    if dist is not None and dist.distributed and cfg.data.shard_by_rank:
        dataset, splits = _open_shared(data_dir, cfg, cache, dist)
        shard = (dist.rank, dist.world_size)
    else:
        dataset, splits = open_streaming(
            data_dir, cfg.task, chunk_rows=cfg.data.chunk_rows, cache=cache
        )
    train = splits["train"]
    if len(train) == 0:
        raise TrainingError(f"task {cfg.task!r}: the training split has no rows")
    label = dataset.schema.task(cfg.task).label
    sharded: StreamingSplit | RankShard = train if shard is None else train.for_rank(*shard)
    return PreparedData(
        dataset,
        cfg.task,
        label,
        sharded,
        splits.get("valid"),
        splits.get("test"),
        Path(data_dir),
    )


def _open_shared(
    data_dir: str | Path, cfg: RunConfig, cache: bool, dist: DistContext
) -> tuple[StreamedDataset, dict[str, StreamingSplit | EncodedSplit]]:
    """:func:`open_streaming` where rank 0 alone validates the log and fits the encoder.

    The other ranks receive rank 0's encoder and validation report (or its
    error, so no rank waits for a fit that failed) and open the same splits
    without reading the log.
    """
    if dist.is_main:
        try:
            dataset, splits = open_streaming(
                data_dir, cfg.task, chunk_rows=cfg.data.chunk_rows, cache=cache
            )
        except Exception as exc:
            dist.broadcast_object(("error", f"{type(exc).__name__}: {exc}"))
            raise
        dist.broadcast_object(("ok", (dataset.encoder.state(), dataset.validation)))
        return dataset, splits
    status, fitted = dist.broadcast_object(None)
    if status != "ok":
        raise TrainingError(f"rank 0 could not open {data_dir}: {fitted}")
    return open_streaming(
        data_dir, cfg.task, chunk_rows=cfg.data.chunk_rows, cache=cache, fitted=fitted
    )


__all__ = ["PreparedData", "prepare_data", "prepare_streaming"]
