"""The provider call layer: cache, concurrency, rate limits, retries, breaker, ledger, budget.

Every provider call of every step goes through `CallLayer.call_all`. Answers and ledger rows go
to the call store (`cpo.engine.calls.store`) as each call returns, so what a failed or killed
build paid for is kept and never paid again.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cpo.engine.calls.cache import cache_key, now
from cpo.engine.calls.limits import AdaptiveLimit, Breaker, RateLimiter, counts_for_breaker
from cpo.engine.calls.retry import is_retryable, retry_call
from cpo.engine.calls.store import CallStore
from cpo.engine.config import Price
from cpo.engine.config_schema import CallsSettings
from cpo.errors import BudgetExceededError, ConfigurationError, CPOError, ModelError, ProviderError
from cpo.providers.base import ProviderKind, kind_for_method, prepare_batch


@dataclass(frozen=True)
class CallOutcome:
    """What happened to one request: a result, or an error message (never both)."""

    key: str
    result: Any = None
    error: str | None = None
    cache_hit: bool = False
    attempts: int = 0


def decode(method: str, value: Any) -> Any:
    """Turn a cached JSON value back into the result a provider's `method` returns."""
    return kind_for_method(method).decode(value)


@dataclass(frozen=True)
class _Batch:
    """What every call of one `CallLayer.call_all` shares."""

    step: str
    provider: Any
    method: str
    kind: ProviderKind
    breaker: Breaker
    cacheable: bool
    limit: AdaptiveLimit


def _prepare(provider: Any, requests: Sequence[Any]) -> None:
    """Let a provider that can batch (an optional ``prepare(requests)``) see every uncached
    request before they are called one by one; e.g. the offline screen scores all their
    sentences in one model call. Best effort: a failure here is left for the calls to report.
    """
    try:
        prepare_batch(provider, requests)
    except Exception:  # each call reports its own failure, with its item key
        logging.getLogger(__name__).debug("prepare failed", exc_info=True)


def estimate_tokens(request: Any) -> tuple[int, int]:
    """A rough (input, output) token estimate for a request: 4 characters per token."""
    text = " ".join(
        str(getattr(request, name, "")) for name in ("system", "prompt", "text", "query")
    )
    documents = getattr(request, "documents", ())
    text += " ".join(d.body for d in documents)
    params = getattr(request, "params", {}) or {}
    return len(text) // 4 + 1, int(params.get("max_tokens", 0) or 0)


class CallLayer:
    """Wraps provider calls for one build.

    Args:
        store: The call store: response cache and call ledger.
        settings: Concurrency, rate limits, retries and breaker settings.
        prices: Model name -> price per million tokens.
        max_cost_usd: Stop before a call that would take this build's spend over this cap.
        run_id: The build's invocation id, written on every ledger row.
        logger: Where call events go (JSON lines; item keys only, never prompts or bodies).
    """

    def __init__(
        self,
        store: CallStore,
        settings: CallsSettings,
        prices: Mapping[str, Price],
        max_cost_usd: float | None,
        run_id: str,
        logger: logging.Logger,
    ) -> None:
        self.store = store
        self.cache = store.cache
        self.ledger = store.ledger
        self.settings = settings
        self.prices = prices
        self.max_cost_usd = max_cost_usd
        self.run_id = run_id
        self.log = logger
        self.requests = RateLimiter(settings.requests_per_minute)
        self.tokens = RateLimiter(settings.tokens_per_minute)
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self._spend_lock = threading.Lock()
        self.sleep: Callable[[float], None] = time.sleep
        # build --retry-failed: cached unusable answers (blocked, refused) are asked again.
        self.retry_failed = False
        # Progress lines while a batch runs, when no terminal shows a live status.
        self.progress_interval_s = 10.0
        self.progress: Callable[[str], None] | None = _progress_to_stderr
        self.limits: dict[str, AdaptiveLimit] = {}

    def call_all(
        self,
        step: str,
        provider: Any,
        method: str,
        requests: Sequence[Any],
        *,
        salt: str = "",
        cacheable: bool = True,
    ) -> list[CallOutcome]:
        """Call `provider.<method>` for every request, concurrently, in request order.

        A failed item becomes an outcome with an ``error``; it never stops the batch. The
        batch stops only when the circuit breaker opens (repeated failures, or a credential
        error), or when the budget would be exceeded.

        Raises:
            ProviderError: the breaker opened; the message names the step and the last error.
            BudgetExceededError: the next call would exceed ``budget.max_cost_usd``.
        """
        kind = kind_for_method(method)
        description = provider.describe()
        breaker = Breaker(self.settings.breaker_failures)
        probe, proven = threading.Lock(), threading.Event()
        limit = self.limits.setdefault(
            f"{provider.name}/{provider.model}", AdaptiveLimit(self.settings.concurrency)
        )
        batch = _Batch(step, provider, method, kind, breaker, cacheable, limit)
        progress = _Progress(step, len(requests))

        def call(request: Any, key: str) -> CallOutcome:
            if breaker.open:
                return CallOutcome(request.key, error=f"not called: {breaker.reason}")
            progress.called()
            return self._call(batch, request, key)

        def one(item: tuple[Any, str, Any]) -> CallOutcome:
            outcome = answer(*item)
            progress.finished(outcome)
            return outcome

        def answer(request: Any, key: str, cached: Any) -> CallOutcome:
            if cached is not None:
                self._record(step, provider, request.key, cache_hit=True, status="success")
                return CallOutcome(request.key, cached, cache_hit=True)
            if not proven.is_set():
                # Until one call has succeeded, calls go one at a time: a wrong key or a dead
                # endpoint then costs one request (and its retries), not one per worker.
                with probe:
                    if not proven.is_set():
                        outcome = call(request, key)
                        if outcome.error is None:
                            proven.set()
                        return outcome
            return call(request, key)

        # Cache first, so a provider that batches is given only what it must answer.
        items = []
        for request in requests:
            key = cache_key(description, method, request, salt)
            items.append((request, key, self._cached(kind, key) if cacheable else None))
        _prepare(provider, [r for r, _, cached in items if cached is None])
        workers = max(1, min(self.settings.concurrency, len(requests) or 1))
        reporter = self._report_progress(progress)
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"cpo-{step}") as pool:
                outcomes = list(pool.map(one, items))
        finally:
            reporter.set()
        if breaker.open:
            raise ProviderError(
                f"step {step!r} stopped: {breaker.reason.rstrip('.')}. Results obtained so far are "
                "cached; fix the cause and rebuild to resume",
                node=step,
            )
        return outcomes

    def _cached(self, kind: ProviderKind, key: str) -> Any | None:
        """The cached result for `key`, or None (also for an unusable one under --retry-failed)."""
        value = self.cache.get(key)
        if value is None:
            return None
        result = kind.decode(value)
        return None if self.retry_failed and unusable(result) else result

    def _report_progress(self, progress: _Progress) -> threading.Event:
        """Every `progress_interval_s`, a line saying how far the batch is (no TTY needed)."""
        stop = threading.Event()
        if self.progress is None or self.progress_interval_s <= 0 or progress.total == 0:
            return stop

        def report() -> None:
            while not stop.wait(self.progress_interval_s):
                line = progress.line()
                self.log.info("progress", extra=progress.counts())
                assert self.progress is not None
                self.progress(line)

        threading.Thread(target=report, daemon=True, name="cpo-progress").start()
        return stop

    def _call(self, batch: _Batch, request: Any, key: str) -> CallOutcome:
        input_estimate, output_estimate = estimate_tokens(request)
        # A generation may take a repair request: reserve for the worst case.
        repeats = int(getattr(batch.provider, "max_requests_per_item", 1) or 1)
        try:
            reserved = self._reserve_budget(
                price_model(batch.provider), input_estimate * repeats, output_estimate * repeats
            )
        except BudgetExceededError as error:
            batch.breaker.stop(error.message)  # queued items are not called either
            raise
        try:
            return self._attempts(batch, request, key, input_estimate + output_estimate)
        finally:
            with self._spend_lock:
                self.reserved_usd -= reserved

    def _attempts(self, batch: _Batch, request: Any, key: str, token_estimate: int) -> CallOutcome:
        step, provider, breaker = batch.step, batch.provider, batch.breaker
        attempts = 0
        started = 0.0

        def attempt(number: int) -> Any:
            nonlocal attempts, started
            attempts = number
            self.requests.acquire()
            self.tokens.acquire(token_estimate)
            started = time.perf_counter()
            try:
                with batch.limit:
                    return getattr(provider, batch.method)(request)
            except ProviderError as error:
                if error.timeout or error.status in (408, 429):
                    batch.limit.congested()  # a slow or throttling service: fewer at once
                raise

        def on_retry(number: int, wait: float, error: BaseException) -> None:
            status = error.status if isinstance(error, ProviderError) else None
            self.log.info(
                "retrying call",
                extra={
                    "step": step,
                    "item": request.key,
                    "attempt": number,
                    "wait_s": round(wait, 3),
                    "status": status,
                },
            )

        try:
            result = retry_call(
                attempt,
                self.settings,
                sleep=lambda seconds: self.sleep(seconds),
                retry_if=lambda error: is_retryable(error) and not breaker.open,
                on_retry=on_retry,
            )
        except Exception as error:  # provider failures are isolated per item
            return self._failed(batch, request, error, attempts, started)
        latency = (time.perf_counter() - started) * 1000
        breaker.success()
        batch.limit.succeeded()
        input_tokens = int(getattr(result, "input_tokens", 0) or 0)
        output_tokens = int(getattr(result, "output_tokens", 0) or 0)
        cost = self.cost(price_model(provider), input_tokens, output_tokens)
        with self._spend_lock:
            self.spent_usd += cost
        if batch.cacheable:
            self.cache.put(key, provider.name, provider.model, batch.kind.encode(result))
        self._record(
            step,
            provider,
            request.key,
            status="success",
            attempts=attempts,
            latency_ms=latency,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
            error=_blocked_note(result),
        )
        return CallOutcome(request.key, result, attempts=attempts)

    def _failed(
        self, batch: _Batch, request: Any, error: Exception, attempts: int, started: float
    ) -> CallOutcome:
        """Record an item that failed for good; stop the step when the failure is the project's."""
        latency = (time.perf_counter() - started) * 1000
        message = _safe_message(error)
        self._record(
            batch.step,
            batch.provider,
            request.key,
            status="error",
            attempts=attempts,
            latency_ms=latency,
            error=message,
        )
        if isinstance(error, ModelError | ConfigurationError):
            # A broken template or setting fails every item the same way: it is the
            # project's error, not this item's, so the step fails and names it.
            batch.breaker.stop(message)
            raise error
        status = error.status if isinstance(error, ProviderError) else None
        if counts_for_breaker(error):
            batch.breaker.failure(message, fatal=status in (401, 403))
        return CallOutcome(request.key, error=message, attempts=attempts)

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """List-price cost of a call, from the ``prices:`` table (0 for unpriced models)."""
        price = self.prices.get(model)
        if price is None:
            return 0.0
        return (input_tokens * price.input_per_1m + output_tokens * price.output_per_1m) / 1e6

    def _reserve_budget(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """Reserve a call's estimated cost (released when it returns); concurrent calls see
        each other's reservations, so together they cannot overshoot the cap."""
        if self.max_cost_usd is None:
            return 0.0
        estimate = self.cost(model, input_tokens, output_tokens)
        with self._spend_lock:
            committed = self.spent_usd + self.reserved_usd
            if committed + estimate > self.max_cost_usd:
                raise BudgetExceededError(
                    f"stopping before a call estimated at ${estimate:.4f}: this build has spent "
                    f"${self.spent_usd:.4f} (plus ${self.reserved_usd:.4f} in flight) of its "
                    f"${self.max_cost_usd:.6g} budget. Raise budget.max_cost_usd in cpo.yml or "
                    "pass --max-cost",
                    key="budget.max_cost_usd",
                )
            self.reserved_usd += estimate
        return estimate

    def record_index(self, step: str, provider: Any, **values: Any) -> None:
        """Ledger row for building a service-side index (item key ``index``).

        Tokens it paid for (``input_tokens``, e.g. document embeddings) are priced and counted
        in the build's spend like any call's.
        """
        tokens_in = int(values.get("input_tokens", 0) or 0)
        tokens_out = int(values.get("output_tokens", 0) or 0)
        cost = self.cost(price_model(provider), tokens_in, tokens_out)
        with self._spend_lock:
            self.spent_usd += cost
        self._record(step, provider, "index", status="success", cost_usd=cost, **values)

    def _record(self, step: str, provider: Any, item_key: str, **values: Any) -> None:
        row = {
            "run_id": self.run_id,
            "step": step,
            "provider": provider.name,
            "model": provider.model,
            "item_key": item_key,
            "cache_hit": int(values.pop("cache_hit", False)),
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
            "latency_ms": 0.0,
            "attempts": 0,
            "error": None,
            "called_at": now(),
            **values,
        }
        self.ledger.record(row)


def price_model(provider: Any) -> str:
    """The ``prices:`` entry a provider's calls are billed by: its ``price_model`` if it has
    one (hybrid search pays only for its embedding deployment), else its ``model``."""
    return str(getattr(provider, "price_model", None) or provider.model)


def unusable(result: Any) -> bool:
    """Whether a cached answer was unusable (blocked or refused): ``--retry-failed`` asks again."""
    return bool(getattr(result, "blocked_reason", None)) or (
        getattr(result, "finish_reason", None) == "content_filter"
    )


def _blocked_note(result: Any) -> str | None:
    reason = getattr(result, "blocked_reason", None)
    if reason:
        return f"blocked: {reason}"
    if getattr(result, "finish_reason", None) == "content_filter":
        return "blocked: content_filter"
    return None


class _Progress:
    """Counts of one batch, for progress lines."""

    def __init__(self, step: str, total: int) -> None:
        self.step = step
        self.total = total
        self.done = self.failed = self.calls = self.cached = 0
        self._lock = threading.Lock()

    def called(self) -> None:
        with self._lock:
            self.calls += 1

    def finished(self, outcome: CallOutcome) -> None:
        with self._lock:
            self.done += 1
            self.failed += outcome.error is not None
            self.cached += outcome.cache_hit

    def counts(self) -> dict[str, Any]:
        with self._lock:
            return {
                "step": self.step,
                "done": self.done,
                "total": self.total,
                "failed": self.failed,
                "calls": self.calls,
                "cached": self.cached,
            }

    def line(self) -> str:
        c = self.counts()
        return (
            f"{c['step']}: {c['done']}/{c['total']} items done, {c['failed']} failed, "
            f"{c['calls']} called, {c['cached']} from cache"
        )


def _progress_to_stderr(line: str) -> None:
    """Print a progress line when stderr is not a terminal (a terminal shows a live status)."""
    if not sys.stderr.isatty():
        print(line, file=sys.stderr, flush=True)


def _safe_message(error: Exception) -> str:
    if isinstance(error, CPOError):
        return error.message
    return f"{type(error).__name__}: {error}"[:500]
