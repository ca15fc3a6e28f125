"""Step timing of one request: ``with timed(steps, "parse"): ...`` adds milliseconds."""

from __future__ import annotations

import time
from types import TracebackType


class _Timed:
    """The context :func:`timed` returns (a class, not a generator: it runs ~6 times a
    request, and ``contextlib.contextmanager`` costs several times more per use)."""

    __slots__ = ("_start", "_step", "_steps")

    def __init__(self, steps: dict[str, float], step: str) -> None:
        self._steps = steps
        self._step = step
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed_ms = (time.perf_counter() - self._start) * 1e3
        self._steps[self._step] = self._steps.get(self._step, 0.0) + elapsed_ms


def timed(steps: dict[str, float], step: str) -> _Timed:
    """A context that adds the milliseconds spent inside it to ``steps[step]``.

    Args:
        steps: step name -> milliseconds, accumulated over the request.
        step: the step being timed (``feature_fetch``, ``coarse_inference``, ...).
    """
    return _Timed(steps, step)
