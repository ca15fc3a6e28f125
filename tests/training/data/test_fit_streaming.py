"""The bounded-memory encoder fit equals the in-memory fit; streaming never holds a split."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.helpers.data import SCHEMA, make_log, write_frame
from training.config.run import RunConfig
from training.data.data_dir import find_data_files
from training.data.encoding import fit_encoder
from training.data.fit import EncoderFitter
from training.data.loader import load_dataset
from training.data.prepare import prepare_data
from training.data.readers import read_columns
from training.data.schema import Schema
from training.data.source import SplitSource
from training.data.streaming import StreamingSplit
from training.data.validate_stream import check_streaming, iter_split_columns
from training.loop.evaluation import evaluate_model

CHUNK = 64
STATS_RTOL = 1e-12  # mean/std: Chan/Welford merge vs numpy's one-pass sums


def _schema_dict(**item_id: int) -> dict:
    schema = copy.deepcopy(SCHEMA)
    for feature in schema["features"]:
        if feature["name"] == "item_id":
            feature.update(item_id)
    return schema


def _assert_same_fit(a, b) -> None:  # type: ignore[no-untyped-def]
    assert a.vocabs.keys() == b.vocabs.keys()
    for name in a.vocabs:
        assert a.vocabs[name].is_int == b.vocabs[name].is_int, name
        np.testing.assert_array_equal(a.vocabs[name].keys, b.vocabs[name].keys, err_msg=name)
    assert a.stats.keys() == b.stats.keys()
    for name, stats in a.stats.items():
        assert stats.keys() == b.stats[name].keys(), name
        for key, value in stats.items():
            np.testing.assert_allclose(value, b.stats[name][key], rtol=STATS_RTOL, err_msg=name)


@pytest.mark.parametrize(
    "item_id", [{}, {"min_count": 3}, {"max_vocab": 25}, {"min_count": 2, "max_vocab": 10}]
)
def test_chunked_fit_equals_the_in_memory_fit(tmp_path: Path, item_id: dict) -> None:
    schema = Schema.from_dict(_schema_dict(**item_id))
    path = write_frame(make_log(1_000, 5, n_items=80), tmp_path / "train.parquet", 100)
    memory = fit_encoder(schema, read_columns(path, schema))
    fitter = EncoderFitter(schema)
    for columns in iter_split_columns(path, schema, chunk_rows=CHUNK):
        fitter.update(columns)
    _assert_same_fit(fitter.finish(), memory)
    # every value fitted the quantiles: the bucket boundaries are exact, not approximate
    assert fitter.quantiles_exact() == {"age": True}
    assert fitter.finish().stats["age"]["boundaries"] == memory.stats["age"]["boundaries"]


def test_quantiles_from_a_sample_are_close(tmp_path: Path) -> None:
    schema = Schema.from_dict(SCHEMA)
    df = make_log(4_000, 6)
    df["age"] = np.random.default_rng(0).normal(40, 10, len(df))
    path = write_frame(df, tmp_path / "train.parquet", 500)
    memory = fit_encoder(schema, read_columns(path, schema))
    fitter = EncoderFitter(schema, sample_rows=1_000)
    for columns in iter_split_columns(path, schema, chunk_rows=CHUNK):
        fitter.update(columns)
    assert fitter.quantiles_exact() == {"age": False}
    got = np.asarray(fitter.finish().stats["age"]["boundaries"])
    want = np.asarray(memory.stats["age"]["boundaries"])
    # 1,000 of 4,000 values: each boundary's rank error is a few percent of the rows
    ranks = np.searchsorted(np.sort(df["age"].to_numpy()), got) / len(df)
    want_ranks = np.searchsorted(np.sort(df["age"].to_numpy()), want) / len(df)
    np.testing.assert_allclose(ranks, want_ranks, atol=0.05)


class _Recorder:
    """Wraps SplitSource reads to record the largest table any of them returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.largest = 0
        self.calls = 0
        original_rows, original_all = SplitSource.read_rows, SplitSource.read_all
        recorder = self

        def read_rows(source, start, stop, columns=None):  # type: ignore[no-untyped-def]
            table = original_rows(source, start, stop, columns)
            recorder.calls += 1
            recorder.largest = max(recorder.largest, table.num_rows, stop - start)
            return table

        def read_all(source, columns=None):  # type: ignore[no-untyped-def]
            table = original_all(source, columns)
            recorder.largest = max(recorder.largest, table.num_rows)
            return table

        monkeypatch.setattr(SplitSource, "read_rows", read_rows)
        monkeypatch.setattr(SplitSource, "read_all", read_all)


def _data_dir(root: Path) -> Path:
    root.mkdir()
    (root / "schema.yaml").write_text(yaml.safe_dump(SCHEMA, sort_keys=False))
    for i, (split, rows) in enumerate((("train", 900), ("valid", 300), ("test", 300))):
        write_frame(make_log(rows, 10 + i), root / f"{split}.parquet", row_group_size=40)
    return root


def test_streaming_never_reads_more_than_a_chunk(tmp_path: Path, monkeypatch) -> None:
    data_dir = _data_dir(tmp_path / "data")
    recorder = _Recorder(monkeypatch)
    cfg = RunConfig.from_dict({"task": "cvr", "stage": "fine", "data": {"chunk_rows": CHUNK}})
    data = prepare_data(data_dir, cfg)  # validation + fit pass
    for epoch in (0, 1):  # epoch 1 reads the encoded-chunk cache
        rows = sum(len(b) for b in data.train.iter_batches(50, shuffle=True, seed=0, epoch=epoch))
        assert rows == len(data.train)
    assert isinstance(data.test, StreamingSplit)
    _ = data.test.labels, data.test.group, data.test.user
    assert recorder.calls > 900 // CHUNK
    assert 0 < recorder.largest <= CHUNK
    # the streamed fit is the in-memory fit of the same rows
    memory = load_dataset(data_dir, tasks=["cvr"], cache=False)
    _assert_same_fit(data.dataset.encoder, memory.encoder)


def test_streamed_evaluation_equals_in_memory(tmp_path: Path) -> None:
    from tests.helpers.trainer import tiny_config
    from training.loop.build import build_model

    data_dir = _data_dir(tmp_path / "data")
    cfg = tiny_config("rocket", epochs=1, data={"chunk_rows": CHUNK})
    streamed = prepare_data(data_dir, cfg, cache=False)
    in_memory = prepare_data(data_dir, RunConfig.from_dict({**cfg.to_dict(), "data": {
        **cfg.to_dict()["data"], "chunk_rows": 0}}), cache=False)  # fmt: skip
    model, _ = build_model(cfg, streamed)
    a = evaluate_model(model, streamed.test, "click", 100)
    b = evaluate_model(model, in_memory.test, "click", 100)
    assert a["light"]["rows"] == b["light"]["rows"] == 300
    for net in ("light", "booster"):
        for key, value in b[net].items():
            assert a[net][key] == pytest.approx(value, rel=1e-6, nan_ok=True), (net, key)


def test_streaming_check_reports_problems_across_chunks(tmp_path: Path) -> None:
    data_dir = _data_dir(tmp_path / "data")
    df = make_log(200, 1)
    df.loc[[5, 150], "click"] = 3  # two bad labels in different chunks
    write_frame(df, data_dir / "valid.parquet", row_group_size=40)
    files = find_data_files(data_dir)
    check = check_streaming(files, Schema.from_dict(SCHEMA), ["ctr"], chunk_rows=CHUNK)
    messages = [str(p) for p in check.report.problems]
    assert messages == [
        "[valid.click] labels must be 0 or 1; 2 row(s) hold other values (e.g. 3.0)"
    ]
    assert check.encoder is None
    assert check.report.splits["train"].rows == 900


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_split_every_epoch_between_the_ranks(tmp_path: Path, world: int) -> None:
    data_dir = _data_dir(tmp_path / "data")
    cfg = RunConfig.from_dict({"task": "cvr", "stage": "fine", "data": {"chunk_rows": CHUNK}})
    split = prepare_data(data_dir, cfg, cache=False).train
    assert isinstance(split, StreamingSplit)
    everything = torch.cat([b.group for b in split.iter_batches(1_000)])
    for epoch in (0, 1):
        read: list[list[int]] = []
        per_rank = []
        for rank in range(world):
            shard = split.for_rank(rank, world)
            chunks: list[int] = []
            original = StreamingSplit.encode_chunk

            def spy(self, chunk, report=None, seen=chunks, original=original):  # type: ignore[no-untyped-def]
                seen.append(chunk)
                return original(self, chunk, report)

            StreamingSplit.encode_chunk = spy  # type: ignore[method-assign]
            try:
                batches = list(shard.iter_batches(50, shuffle=True, seed=7, epoch=epoch))
            finally:
                StreamingSplit.encode_chunk = original  # type: ignore[method-assign]
            assert len(batches) == shard.num_batches(50) == split.num_batches(50)
            per_rank.append(batches)
            read.append(chunks)
        # no chunk is read by two ranks, and together they read every chunk once
        flat = sorted(c for chunks in read for c in chunks)
        assert len(flat) == len(set(flat))
        # every row of the epoch is trained exactly once, by one rank
        rows = torch.cat([b.group for batches in per_rank for b in batches])
        assert sorted(rows.tolist()) == sorted(everything.tolist())
        # each global step holds about batch_size rows in all
        steps = [sum(len(per_rank[r][k]) for r in range(world)) for k in range(len(per_rank[0]))]
        assert sum(steps) == len(split)
        # the assignment is a function of (rank, world, seed, epoch)
        again = list(split.for_rank(1, world).iter_batches(50, shuffle=True, seed=7, epoch=epoch))
        assert all(torch.equal(a.group, b.group) for a, b in zip(again, per_rank[1], strict=True))


def test_streaming_check_summarises_like_the_in_memory_check(tmp_path: Path) -> None:
    from training.commands.data_check import oov_rates
    from training.data.data_dir import read_data_dir
    from training.data.validate import validate_columns

    data_dir = _data_dir(tmp_path / "data")
    files = find_data_files(data_dir)
    schema = Schema.from_dict(SCHEMA)
    splits, side = read_data_dir(files, schema)
    memory = validate_columns(schema, dict(splits), None, side_tables=side)
    streamed = check_streaming(files, schema, None, chunk_rows=CHUNK)
    assert streamed.report.problems == memory.problems == []
    assert streamed.report.tasks == memory.tasks
    for name, summary in memory.splits.items():
        got = streamed.report.splits[name]
        assert (got.rows, got.nonfinite, got.missing) == (
            summary.rows,
            summary.nonfinite,
            summary.missing,
        )
        assert got.label_rates == pytest.approx(summary.label_rates, rel=1e-12)
    encoder = fit_encoder(schema, splits["train"])
    _assert_same_fit(streamed.encoder, encoder)
    for name in ("valid", "test"):
        assert streamed.oov_rate[name] == pytest.approx(oov_rates(encoder, splits[name]))
