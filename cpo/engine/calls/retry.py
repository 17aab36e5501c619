"""The one retry rule of every provider call, index build and document check (tenacity).

A failure is tried again when it is a `ProviderError` marked ``retryable`` (timeouts, 408, 429,
5xx), up to ``calls.max_attempts`` attempts in all. Between attempts it waits what the service
asked for (``Retry-After``, in seconds or as an HTTP date, parsed by
`cpo.providers.failures.retry_after_seconds` into ``ProviderError.retry_after``), else an
exponential backoff from ``calls.backoff_initial_s`` doubling up to ``calls.backoff_max_s``,
with up to 25 % random jitter so that throttled workers do not come back in step.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

from cpo.engine.config_schema import CallsSettings
from cpo.errors import ProviderError

T = TypeVar("T")
JITTER = 0.25
"""Backoff waits are stretched by a random share of up to this much."""
RETRY_AFTER_CAP = 4
"""A service's ``Retry-After`` is honoured up to this many times ``calls.backoff_max_s``."""


def is_retryable(error: BaseException) -> bool:
    """Whether `error` says the same request may succeed later."""
    return isinstance(error, ProviderError) and error.retryable


class _Backoff(tenacity.wait.wait_base):
    """``Retry-After`` when the service sent one, else exponential backoff with jitter."""

    def __init__(self, settings: CallsSettings, jitter: Callable[[], float]) -> None:
        self.settings = settings
        self.exponential = tenacity.wait_exponential(
            multiplier=settings.backoff_initial_s, max=settings.backoff_max_s
        )
        self.jitter = jitter

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        asked = error.retry_after if isinstance(error, ProviderError) else None
        if asked:
            return min(asked, self.settings.backoff_max_s * RETRY_AFTER_CAP)
        return self.exponential(retry_state) * (1 + self.jitter() * JITTER)


def retry_call(
    attempt: Callable[[int], T],
    settings: CallsSettings,
    *,
    sleep: Callable[[float], None],
    retry_if: Callable[[BaseException], bool] = is_retryable,
    on_retry: Callable[[int, float, BaseException], None] | None = None,
    jitter: Callable[[], float] = random.random,
) -> T:
    """Call ``attempt(n)`` for n = 1, 2, ... until it returns, retrying what `retry_if` allows.

    Args:
        attempt: One try; gets its 1-based attempt number.
        settings: ``calls:`` (``max_attempts``, ``backoff_initial_s``, ``backoff_max_s``).
        sleep: How to wait (the call layer's, replaceable in tests).
        retry_if: Whether a failure is worth another try (default: `is_retryable`).
        on_retry: Told (attempt number, wait in seconds, error) before each wait.
        jitter: Random numbers in [0, 1) (injectable for tests).

    Returns:
        What the successful attempt returned.

    Raises:
        Exception: the last attempt's error, unchanged, when it is not retried.
    """

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            error = state.outcome.exception()
            assert error is not None
            on_retry(state.attempt_number, state.next_action.sleep, error)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, settings.max_attempts)),
        wait=_Backoff(settings, jitter),
        retry=tenacity.retry_if_exception(retry_if),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    number = 0

    def once() -> T:
        nonlocal number
        number += 1
        return attempt(number)

    result: Any = retrying(once)
    return result
