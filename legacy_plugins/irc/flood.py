"""Flood control for lines sent to an IRC server, as a pure token bucket.

IRC servers disconnect clients that send too fast ("Excess Flood"), so every line we
send goes through one bucket per connection. The bucket holds `burst` tokens and
regains `rate_per_s` per second; `take(now)` spends one and says how long to wait
before that line may go. Delays are reservations, so lines taken in order leave in
order. The caller owns the clock (pass a monotonic time) and the waiting. Defaults
follow Biboumi: a burst of 10 lines, then 1 line per second.
"""

from __future__ import annotations

__all__ = ["DEFAULT_BURST", "DEFAULT_RATE_PER_S", "TokenBucket"]

DEFAULT_BURST = 10
DEFAULT_RATE_PER_S = 1.0


class TokenBucket:
    """A virtual-scheduling token bucket (GCRA): `burst` lines at once, then one line
    every 1/`rate_per_s` seconds."""

    __slots__ = ("_interval", "_last_send", "_theoretical", "burst", "rate_per_s")

    def __init__(self, burst: int = DEFAULT_BURST, rate_per_s: float = DEFAULT_RATE_PER_S):
        if burst < 1 or not rate_per_s > 0:
            raise ValueError(
                f"flood control needs burst >= 1 and rate > 0, not {burst}, {rate_per_s}"
            )
        self.burst = burst
        self.rate_per_s = rate_per_s
        self._interval = 1.0 / rate_per_s
        self._theoretical = float("-inf")  # when the bucket would be full again
        self._last_send = float("-inf")

    def take(self, now: float) -> float:
        """Reserve a slot for one line; return the delay in seconds (0.0: send now)."""
        theoretical = max(self._theoretical, now)
        send_at = max(now, self._last_send, theoretical - (self.burst - 1) * self._interval)
        self._theoretical = theoretical + self._interval
        self._last_send = send_at
        return send_at - now
