"""A torchrun worker that runs ``rocketrank train`` and records what this rank read.

Usage (under torchrun)::

    python -m torch.distributed.run --nproc-per-node 2 -m tests.helpers.sharded_worker \\
        OUT_PREFIX train --config C --data D --out RUN ...

It counts, without changing them, the real reads of the data layer — rows
``SplitSource`` reads per split file and phase, and the chunks each
``StreamingSplit`` is asked to encode — then runs the CLI's ``main`` with the
remaining arguments and writes ``OUT_PREFIX.<rank>.json``::

    {"rank": r, "exit": code,
     "rows": {"prepare": {"train": n, ...}, "train": {...}},
     "chunks": {"train": [k, ...], "valid": [...], ...}}

``prepare`` is everything before the first training step (the validation and
encoder-fit pass), ``train`` the rest (training and evaluation).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_phase = ["prepare"]
_rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
_chunks: dict[str, list[int]] = defaultdict(list)


def _split_name(source: Any) -> str:
    path = Path(source.path)
    return path.stem if path.suffix else path.name


def _install() -> None:
    from training.data import prepare as prepare_module
    from training.data.source import SplitSource
    from training.data.streaming import StreamingSplit
    from training.loop import trainer

    def add(source: Any, rows: int) -> None:
        with _lock:
            _rows[_phase[0]][_split_name(source)] += rows

    # every read goes through one of these two (iter_tables calls read_rows)
    read_rows, read_all = SplitSource.read_rows, SplitSource.read_all

    def counted_read_rows(self, start, stop, columns=None):  # type: ignore[no-untyped-def]
        table = read_rows(self, start, stop, columns)
        add(self, table.num_rows)
        return table

    def counted_read_all(self, columns=None):  # type: ignore[no-untyped-def]
        table = read_all(self, columns)
        add(self, table.num_rows)
        return table

    SplitSource.read_rows = counted_read_rows  # type: ignore[method-assign]
    SplitSource.read_all = counted_read_all  # type: ignore[method-assign]

    encode_chunk = StreamingSplit.encode_chunk

    def counted_encode_chunk(self, chunk, report=None):  # type: ignore[no-untyped-def]
        with _lock:
            _chunks[self.name].append(int(chunk))
        return encode_chunk(self, chunk, report)

    StreamingSplit.encode_chunk = counted_encode_chunk  # type: ignore[method-assign]

    # the training phase starts when the prepared data reaches the trainer
    train = trainer.train

    def train_phase(*args, **kwargs):  # type: ignore[no-untyped-def]
        _phase[0] = "train"
        return train(*args, **kwargs)

    trainer.train = train_phase
    del prepare_module  # imported so the data layer is loaded before patching


def main(out_prefix: str, argv: list[str]) -> int:
    _install()
    import training.commands.train as train_command
    from rocketrank.cli import main as cli_main
    from training.loop import trainer

    train_command.train = trainer.train  # the command imported the name before patching
    code = cli_main(argv)
    rank = int(os.environ.get("RANK", "0"))
    Path(f"{out_prefix}.{rank}.json").write_text(
        json.dumps({"rank": rank, "exit": code, "rows": _rows, "chunks": _chunks})
    )
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2:]))
