"""A small thread-safe circuit breaker for calls to a remote store.

closed → (``failures`` consecutive errors) → open → (``cooldown_s`` later, one
probe call allowed) → half-open → closed on success, open again on failure.
While open, callers skip the remote call entirely, so a dead dependency costs
nothing per request instead of one timeout per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Args:
    failures: consecutive failures that open the circuit.
    cooldown_s: seconds the circuit stays open before one probe is let through.
    clock: monotonic time source (injectable for tests).
    """

    def __init__(
        self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError("failures must be >= 1 and cooldown_s > 0")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False
        self._probe_started = 0.0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if (
                self._state is BreakerState.OPEN
                and self._clock() - self._opened_at >= self.cooldown_s
            ):
                return BreakerState.HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """Whether a call may go to the remote store now (claims the probe when half-open)."""
        return self.admit() is not None

    def admit(self) -> BreakerState | None:
        """Like :meth:`allow`, saying which call it is.

        Returns:
            ``CLOSED`` for an ordinary call, ``HALF_OPEN`` for the one probe, ``None``
            when the call must be skipped. A probe that never reported back (its caller
            died on an unexpected error) expires after a cool-down, so the breaker can
            never stay half-open forever.
        """
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return BreakerState.CLOSED
            now = self._clock()
            if self._probing:
                if now - self._probe_started < self.cooldown_s:
                    return None
            elif now - self._opened_at < self.cooldown_s:
                return None
            self._probing = True
            self._probe_started = now
            self._state = BreakerState.HALF_OPEN
            return BreakerState.HALF_OPEN

    def trip(self) -> None:
        """Open the circuit now (the store answered, but its data is gone)."""
        with self._lock:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._consecutive = self.failures
            self._probing = False

    def record_success(self) -> None:
        with self._lock:
            self._state = BreakerState.CLOSED
            self._consecutive = 0
            self._probing = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            if self._state is BreakerState.HALF_OPEN or self._consecutive >= self.failures:
                self._state = BreakerState.OPEN
                self._opened_at = self._clock()
            self._probing = False
