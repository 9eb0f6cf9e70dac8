import pytest

from gateway.backoff import Backoff

B = Backoff(initial=1.0, factor=2.0, cap=60.0, jitter=0.2, healthy_after=60.0)


@pytest.mark.parametrize(
    ("failures", "rand", "delay"),
    [
        (0, 0.5, 0.0),
        (1, 0.5, 1.0),
        (2, 0.5, 2.0),
        (3, 0.5, 4.0),
        (7, 0.5, 60.0),  # 64 capped at 60
        (1000, 0.5, 60.0),
        (1, 0.0, 0.8),  # -20 % jitter
        (1, 0.999999, 1.2),  # +20 % jitter
        (10, 0.0, 48.0),
    ],
)
def test_delay(failures: int, rand: float, delay: float) -> None:
    assert B.delay(failures, rand) == pytest.approx(delay, rel=1e-5)


@pytest.mark.parametrize(
    ("previous", "uptime", "failures"),
    [
        (0, 1.0, 1),
        (3, 1.0, 4),
        (3, 59.9, 4),
        (3, 60.0, 1),  # a healthy minute resets the count
        (9, 3600.0, 1),
    ],
)
def test_failure_count(previous: int, uptime: float, failures: int) -> None:
    assert B.failures_after(previous, uptime) == failures
