"""Flood control: the token bucket's delays, as tables and as a property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from legacy_plugins.irc.flood import DEFAULT_BURST, DEFAULT_RATE_PER_S, TokenBucket


@pytest.mark.parametrize(
    ("burst", "rate", "times", "delays"),
    [
        (3, 1.0, [0, 0, 0, 0, 0], [0, 0, 0, 1, 2]),
        (3, 2.0, [0, 0, 0, 0, 0], [0, 0, 0, 0.5, 1.0]),
        (1, 1.0, [0, 0.5, 1.5, 1.5], [0, 0.5, 0.5, 1.5]),
        (1, 1.0, [0, 1, 2.5, 2.5], [0, 0, 0, 1]),
        (3, 1.0, [0, 0, 0, 0, 10, 10, 10, 10], [0, 0, 0, 1, 0, 0, 0, 1]),
        (2, 1.0, [0, 0, 0, 0.5, 5], [0, 0, 1, 1.5, 0]),
        (10, 1.0, [0] * 12, [0] * 10 + [1, 2]),
    ],
)
def test_take(burst: int, rate: float, times: list[float], delays: list[float]) -> None:
    bucket = TokenBucket(burst, rate)
    assert [bucket.take(now) for now in times] == pytest.approx(delays)


def test_biboumi_like_defaults() -> None:
    bucket = TokenBucket()
    assert (bucket.burst, bucket.rate_per_s) == (DEFAULT_BURST, DEFAULT_RATE_PER_S) == (10, 1.0)


@pytest.mark.parametrize(("burst", "rate"), [(0, 1.0), (1, 0.0), (1, -1.0), (1, float("nan"))])
def test_rejects_nonsense(burst: int, rate: float) -> None:
    with pytest.raises(ValueError, match="flood control"):
        TokenBucket(burst, rate)


@given(
    st.integers(1, 20),
    st.floats(0.1, 10),
    st.lists(st.floats(0, 5, allow_nan=False), max_size=60),
)
def test_lines_leave_in_order_and_within_the_rate(
    burst: int, rate: float, gaps: list[float]
) -> None:
    bucket = TokenBucket(burst, rate)
    now, sends = 0.0, []
    for gap in gaps:
        now += gap
        delay = bucket.take(now)
        assert delay >= 0
        sends.append(now + delay)
    assert sends == sorted(sends)
    for i in range(len(sends)):
        for j in range(i, len(sends)):  # any window holds at most burst + rate * length lines
            assert j - i + 1 <= burst + rate * (sends[j] - sends[i]) + 1e-6
