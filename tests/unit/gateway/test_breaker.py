"""The circuit breaker's state machine, with an injected clock."""

import pytest

from gateway.backends import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_opens_after_threshold_consecutive_failures(clock: Clock) -> None:
    b = CircuitBreaker(failure_threshold=3, reset_timeout_s=10, clock=clock)
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED and b.can_route()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert not b.can_route()


def test_success_resets_the_count(clock: Clock) -> None:
    b = CircuitBreaker(failure_threshold=2, reset_timeout_s=10, clock=clock)
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state is BreakerState.CLOSED


def test_half_open_after_timeout_allows_one_trial(clock: Clock) -> None:
    b = CircuitBreaker(failure_threshold=1, reset_timeout_s=10, clock=clock)
    b.record_failure()
    clock.now += 9.9
    assert b.state is BreakerState.OPEN
    clock.now += 0.2
    assert b.state is BreakerState.HALF_OPEN
    assert b.can_route()
    b.on_dispatch()
    assert not b.can_route(), "only one trial request in half-open"


def test_half_open_success_closes(clock: Clock) -> None:
    b = CircuitBreaker(failure_threshold=1, reset_timeout_s=5, clock=clock)
    b.record_failure()
    clock.now += 5
    b.on_dispatch()
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.can_route()


def test_half_open_failure_reopens_and_restarts_timer(clock: Clock) -> None:
    b = CircuitBreaker(failure_threshold=1, reset_timeout_s=5, clock=clock)
    b.record_failure()
    clock.now += 5
    b.on_dispatch()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.now += 4
    assert b.state is BreakerState.OPEN
    clock.now += 1
    assert b.state is BreakerState.HALF_OPEN


@pytest.mark.parametrize("kwargs", [{"failure_threshold": 0}, {"reset_timeout_s": 0}])
def test_rejects_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
