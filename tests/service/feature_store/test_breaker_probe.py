"""A probe whose caller never reports back (an unexpected exception) does not leave the
circuit breaker half-open forever."""

from __future__ import annotations

from service.feature_store.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_unreported_probe_expires_after_a_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 2.0, clock=clock)
    breaker.record_failure()
    clock.now = 2.5
    assert breaker.admit() is BreakerState.HALF_OPEN  # the probe, never reported back
    assert breaker.admit() is None  # one probe at a time
    clock.now = 4.0
    assert breaker.admit() is None
    clock.now = 4.6
    assert breaker.admit() is BreakerState.HALF_OPEN  # was refused forever
    breaker.record_success()
    assert breaker.admit() is BreakerState.CLOSED


def test_trip_opens_the_circuit_at_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 1.0, clock=clock)
    breaker.trip()
    assert breaker.admit() is None
    clock.now = 1.0
    assert breaker.admit() is BreakerState.HALF_OPEN
