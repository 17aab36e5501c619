"""How many calls, how fast: token-bucket quotas, adaptive concurrency, the circuit breaker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from cpo.errors import CPOError, ProviderError


class RateLimiter:
    """A token bucket refilled continuously at `per_minute`, with about one second of burst.

    A request larger than the bucket is let through when the bucket is full and leaves it in
    debt, so later requests wait until the debt is repaid: the long-run rate never exceeds
    `per_minute`, however large single requests are.

    Args:
        per_minute: Units (requests or tokens) per minute; 0 or less means no limit.
        clock: Monotonic clock in seconds (injectable for tests).
        sleep: How to wait (injectable for tests).
    """

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.clock = clock
        self.sleep = sleep
        self.updated = clock()
        self._lock = threading.Lock()

    def acquire(self, amount: float = 1.0) -> None:
        """Block until `amount` can be spent (no-op when the limit is 0, meaning none)."""
        if self.rate <= 0:
            return
        # A request bigger than the bucket only needs a full bucket, then goes into debt.
        needed = min(amount, self.capacity)
        while True:
            with self._lock:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= needed:
                    self.tokens -= amount
                    return
                wait = (needed - self.tokens) / self.rate
            self.sleep(wait)


class AdaptiveLimit:
    """How many calls may run at once against one service, adapted to how it copes.

    Starts at one call (a probe) and doubles on success until the first sign of congestion (a
    timeout or a 429), which halves it; from then on it grows by one after as many successes in
    a row as the current limit. `ceiling` (``calls.concurrency``) is never exceeded, so a
    service that answers one request at a time is not flooded with requests it cannot serve.
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = max(1, int(ceiling))
        self.limit = 1
        self.active = 0
        self.lowest = 1
        self.highest = 1
        self._streak = 0
        self._congested = False
        self._cond = threading.Condition()

    def __enter__(self) -> AdaptiveLimit:
        with self._cond:
            while self.active >= self.limit:
                self._cond.wait()
            self.active += 1
        return self

    def __exit__(self, *_: Any) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def succeeded(self) -> None:
        """A call succeeded: raise the limit (doubling before any congestion, then by one)."""
        with self._cond:
            self._streak += 1
            if not self._congested:
                self.limit = min(self.ceiling, self.limit * 2)
            elif self._streak >= self.limit:
                self.limit = min(self.ceiling, self.limit + 1)
                self._streak = 0
            self.highest = max(self.highest, self.limit)
            self._cond.notify_all()

    def congested(self) -> None:
        """A timeout or a 429: halve the limit (at least 1)."""
        with self._cond:
            self._congested = True
            self._streak = 0
            self.limit = max(1, self.limit // 2)
            self.lowest = min(self.lowest, self.limit)


class Breaker:
    """Opens after `limit` consecutive failures, or at once on a credential error."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.failures = 0
        self.reason = ""
        self.open = False
        self._lock = threading.Lock()

    def failure(self, message: str, *, fatal: bool) -> None:
        """Count a failure that says the service is unusable (`counts_for_breaker`)."""
        with self._lock:
            self.failures += 1
            if fatal or self.failures >= self.limit:
                if not self.open:
                    why = "a credential error" if fatal else f"{self.failures} failures in a row"
                    self.reason = f"circuit breaker opened after {why}; last error: {message}"
                self.open = True

    def stop(self, reason: str) -> None:
        """Open at once for a reason that is not a provider failure (budget, broken template)."""
        with self._lock:
            if not self.open:
                self.reason = reason
            self.open = True

    def success(self) -> None:
        """A call succeeded: the count of failures in a row starts again."""
        with self._lock:
            self.failures = 0


# Statuses that say "this request", not "this service": they never open the breaker.
_ITEM_STATUSES = frozenset({None, 400, 413, 422})


def counts_for_breaker(error: Exception) -> bool:
    """Whether a failure says the service is unusable (so N in a row open the breaker).

    A provider's own non-retryable verdict on one item (``no_documents``, a 400 on one prompt,
    a content-filter refusal) says nothing about the next item, so it never counts; exhausted
    retries, credential errors, other HTTP errors and unexpected exceptions do.
    """
    if isinstance(error, ProviderError):
        return error.retryable or error.status not in _ITEM_STATUSES
    return not isinstance(error, CPOError)
