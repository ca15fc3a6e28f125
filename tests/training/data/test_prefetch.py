"""The chunk prefetch: same items in the same order, bounded look-ahead, clean stops."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers.data import make_log, schema, write_frame
from training.data.dataset import fit_encoder
from training.data.prefetch import prefetched
from training.data.readers import read_columns
from training.data.streaming import StreamingSplit


class _Counted:
    """An iterator over ``range(n)`` that records how many items it has started."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.started = 0
        self.closed = threading.Event()
        self.threads: set[str] = set()

    def __iter__(self) -> Iterator[int]:
        try:
            for i in range(self.n):
                self.started += 1
                self.threads.add(threading.current_thread().name)
                if i == self.fail_at:
                    raise RuntimeError(f"broken item {i}")
                yield i
        finally:
            self.closed.set()


def _wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_items_arrive_in_order(ahead: int) -> None:
    source = _Counted(25)
    assert list(prefetched(source, ahead)) == list(range(25))
    # the work ran on the background thread (or on the caller's with ahead=0)
    expected = {threading.current_thread().name} if ahead == 0 else {"rocketrank-prefetch"}
    assert source.threads == expected


@pytest.mark.parametrize("ahead", [1, 2])
def test_look_ahead_is_bounded(ahead: int) -> None:
    source = _Counted(10)
    it = prefetched(source, ahead)
    for taken in range(1, 6):
        assert next(it) == taken - 1
        # the thread prepares exactly `ahead` more items, then waits for the consumer
        _wait_for(lambda taken=taken: source.started >= taken + ahead)
        time.sleep(0.05)
        assert source.started == taken + ahead
    it.close()


def test_closing_early_stops_the_thread_and_the_source() -> None:
    source = _Counted(1_000)
    assert list(itertools.islice(prefetched(source, 1), 3)) == [0, 1, 2]
    assert source.closed.wait(10)
    assert source.started <= 5
    assert not any(t.name == "rocketrank-prefetch" for t in threading.enumerate())


def test_an_error_is_raised_at_its_position() -> None:
    got: list[int] = []
    with pytest.raises(RuntimeError, match="broken item 4"):
        for item in prefetched(_Counted(10, fail_at=4), 1):
            got.append(item)
    assert got == [0, 1, 2, 3]


def test_negative_look_ahead_is_refused() -> None:
    with pytest.raises(ValueError, match="ahead"):
        list(prefetched([1], -1))


def test_prefetched_streaming_yields_the_same_batches(tmp_path: Path) -> None:
    """Same seed and chunk plan: identical batches whether chunks are prepared ahead or not."""
    path = write_frame(make_log(233, 4), tmp_path / "train.parquet", row_group_size=40)
    s = schema()
    enc = fit_encoder(s, read_columns(path, s))
    splits = {
        ahead: StreamingSplit(path, s, enc, chunk_rows=40, prefetch=ahead) for ahead in (0, 1, 2)
    }
    for epoch in (0, 1):
        runs = {
            ahead: list(split.iter_batches(24, shuffle=True, seed=3, epoch=epoch))
            for ahead, split in splits.items()
        }
        base = runs[0]
        assert sum(len(b) for b in base) == 233
        for ahead in (1, 2):
            assert len(runs[ahead]) == len(base)
            for a, b in zip(base, runs[ahead], strict=True):
                assert torch.equal(a.group, b.group)
                for name in a.features:
                    assert torch.equal(a.features[name], b.features[name]), name
                for name in a.labels:
                    assert torch.equal(a.labels[name], b.labels[name]), name
    # a rank's share goes through the same look-ahead
    for ahead in (1, 2):
        one = list(splits[0].for_rank(1, 2).iter_batches(24, shuffle=True, seed=3))
        two = list(splits[ahead].for_rank(1, 2).iter_batches(24, shuffle=True, seed=3))
        assert all(torch.equal(a.group, b.group) for a, b in zip(one, two, strict=True))
    with pytest.raises(ValueError, match="prefetch"):
        StreamingSplit(path, s, enc, chunk_rows=40, prefetch=-1)
