"""Retry policy of the HTTP publisher: exponential backoff with full jitter,
``Retry-After`` honoured, bounded in attempts and in total time. Standard
library only."""
from __future__ import annotations

import email.utils
import random as _random
import time
from dataclasses import dataclass, field
from typing import Callable, FrozenSet, Optional

__all__ = ["RetryPolicy", "RetryState", "parse_retry_after", "NO_RETRY"]


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long the publisher waits before trying a request again.

    A request is retried when the server answers a status in ``retry_statuses``
    (503 by default: the server says it may be retried, with ``Retry-After``)
    or when the connection fails or times out (``retry_connection_errors``).
    Publishes carry an idempotency key, so a retry never publishes twice.

    Attributes:
        max_attempts: attempts in all, the first included (1: no retry).
        max_elapsed: seconds; no retry starts later than this after the first
            attempt began (a wait that would end past it is not taken).
        base_delay: seconds; the backoff cap before the first retry.
        max_delay: seconds; the backoff cap never grows beyond this.
        retry_after_jitter: fraction of a ``Retry-After`` added at random (0.1:
            up to 10 % more), so clients told the same time do not all return at once.
        retry_statuses: HTTP statuses that are retried.
        retry_connection_errors: retry connection failures and timeouts.
    """

    max_attempts: int = 5
    max_elapsed: float = 30.0
    base_delay: float = 0.2
    max_delay: float = 5.0
    retry_after_jitter: float = 0.1
    retry_statuses: FrozenSet[int] = frozenset({503})
    retry_connection_errors: bool = True
    random: Callable[[], float] = field(default=_random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_elapsed < 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, retry: int) -> float:
        """Full-jitter wait before retry number ``retry`` (0 for the first)."""
        cap = min(self.max_delay, self.base_delay * (2 ** min(retry, 62)))
        return self.random() * cap


#: A policy that never retries.
NO_RETRY = RetryPolicy(max_attempts=1)


class RetryState:
    """The attempts of one request under a policy."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self.started = clock()
        self.attempts = 0

    def next_delay(self, retry_after: Optional[float]) -> Optional[float]:
        """Records a failed attempt; the seconds to wait before the next one, or
        ``None`` when the policy allows no more."""
        self.attempts += 1
        p = self.policy
        if self.attempts >= p.max_attempts:
            return None
        if retry_after is not None:
            delay = retry_after * (1.0 + p.retry_after_jitter * p.random())
        else:
            delay = p.backoff(self.attempts - 1)
        if self.clock() - self.started + delay > p.max_elapsed:
            return None
        return delay


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds of a ``Retry-After`` header (delta-seconds or an HTTP date), or ``None``."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
