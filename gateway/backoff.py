"""When to restart something that failed: capped exponential backoff with jitter.

Pure: the caller passes the failure count and a random number, so tests are tables.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """``initial * factor**(failures-1)``, capped, spread by ±``jitter`` (a fraction)."""

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.2
    healthy_after: float = 60.0
    """A run at least this long (seconds) counts as healthy and resets the failure count."""

    def failures_after(self, previous_failures: int, uptime: float) -> int:
        """The failure count after a run of ``uptime`` seconds ended badly."""
        return 1 if uptime >= self.healthy_after else previous_failures + 1

    def delay(self, failures: int, rand: float) -> float:
        """Seconds to wait before attempt number ``failures + 1``; ``rand`` is in [0, 1)."""
        if failures <= 0:
            return 0.0
        base = min(self.cap, self.initial * self.factor ** min(failures - 1, 64))
        return max(0.0, base * (1 + self.jitter * (2 * rand - 1)))
