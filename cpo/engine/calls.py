"""The provider call layer: cache, concurrency, rate limits, retries, breaker, ledger, budget.

Every provider call of every step goes through `CallLayer.call_all`. The cache and the ledger
live in one SQLite file outside the built database (``.cpo/cache.sqlite``), written as each call
returns, so what a failed or killed build paid for is kept and never paid again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpo.engine.config import CallSettings, Price
from cpo.errors import (
    BudgetExceededError,
    ConfigurationError,
    CPOError,
    ModelError,
    ProviderError,
)
from cpo.providers.base import GenerationResult, GroundednessResult, Hit, SafetyResult

CACHE_SCHEMA = """
create table if not exists cache (
    key text primary key, provider text, model text, value text, created_at text
);
create table if not exists llm_calls (
    run_id text, step text, provider text, model text, item_key text, cache_hit integer,
    input_tokens integer, output_tokens integer, cost_usd real, latency_ms real,
    status text, attempts integer, error text, called_at text
);
"""
LEDGER_COLUMNS = (
    "run_id",
    "step",
    "provider",
    "model",
    "item_key",
    "cache_hit",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "status",
    "attempts",
    "error",
    "called_at",
)


@dataclass(frozen=True)
class CallOutcome:
    """What happened to one request: a result, or an error message (never both)."""

    key: str
    result: Any = None
    error: str | None = None
    cache_hit: bool = False
    attempts: int = 0


@dataclass(frozen=True)
class _Codec:
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


def _encode_dataclass(value: Any) -> Any:
    return dataclasses.asdict(value)


def decode(method: str, value: Any) -> Any:
    """Turn a cached JSON value back into the result a provider's `method` returns."""
    return _CODECS[method].decode(value)


_CODECS = {
    "generate": _Codec(
        _encode_dataclass,
        lambda d: GenerationResult(**{**d, "citations": tuple(d["citations"])}),
    ),
    "analyze": _Codec(
        _encode_dataclass,
        lambda d: SafetyResult(d["severities"], tuple(d["blocklist_matches"])),
    ),
    "detect": _Codec(
        _encode_dataclass,
        lambda d: GroundednessResult(d["ungrounded"], d["ungrounded_share"], tuple(d["details"])),
    ),
    "search": _Codec(
        lambda hits: [dataclasses.asdict(h) for h in hits],
        lambda rows: [Hit(**r) for r in rows],
    ),
}


@dataclass(frozen=True)
class _Batch:
    """What every call of one `CallLayer.call_all` shares."""

    step: str
    provider: Any
    method: str
    codec: _Codec
    breaker: _Breaker
    cacheable: bool
    limit: AdaptiveLimit


class Cache:
    """The persistent cache and call ledger (SQLite, safe to use from several threads)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._con.execute("pragma journal_mode=wal")
        self._con.executescript(CACHE_SCHEMA)

    def get(self, key: str) -> Any | None:
        """The cached JSON value for a key, or None."""
        with self._lock:
            row = self._con.execute("select value from cache where key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, provider: str, model: str, value: Any) -> None:
        """Store a value at once (so a killed build keeps what it paid for)."""
        with self._lock:
            self._con.execute(
                "insert or replace into cache values (?, ?, ?, ?, ?)",
                (key, provider, model, json.dumps(value), _now()),
            )

    def record(self, row: Mapping[str, Any]) -> None:
        """Append one row to the call ledger."""
        with self._lock:
            self._con.execute(
                f"insert into llm_calls values ({', '.join('?' * len(LEDGER_COLUMNS))})",
                tuple(row.get(c) for c in LEDGER_COLUMNS),
            )

    def ledger(self) -> list[tuple]:
        """Every ledger row, oldest first."""
        with self._lock:
            return self._con.execute(
                f"select {', '.join(LEDGER_COLUMNS)} from llm_calls order by rowid"
            ).fetchall()

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            self._con.close()


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


def cache_key(provider_description: Mapping[str, Any], method: str, request: Any, salt: str) -> str:
    """Hash of (provider, model, rendered prompt, parameters): equal keys give equal answers."""
    payload = {
        "provider": provider_description,
        "method": method,
        "request": _jsonable({k: v for k, v in dataclasses.asdict(request).items() if k != "key"}),
        "salt": salt,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


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
        cache: The persistent cache and ledger.
        settings: Concurrency, rate limits, retries and breaker settings.
        prices: Model name -> price per million tokens.
        max_cost_usd: Stop before a call that would take this build's spend over this cap.
        run_id: The build's invocation id, written on every ledger row.
        logger: Where call events go (JSON lines; item keys only, never prompts or bodies).
    """

    def __init__(
        self,
        cache: Cache,
        settings: CallSettings,
        prices: Mapping[str, Price],
        max_cost_usd: float | None,
        run_id: str,
        logger: logging.Logger,
    ) -> None:
        self.cache = cache
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
        codec = _CODECS[method]
        description = provider.describe()
        breaker = _Breaker(self.settings.breaker_failures)
        probe, proven = threading.Lock(), threading.Event()
        limit = self.limits.setdefault(
            f"{provider.name}/{provider.model}", AdaptiveLimit(self.settings.concurrency)
        )
        batch = _Batch(step, provider, method, codec, breaker, cacheable, limit)
        progress = _Progress(step, len(requests))

        def call(request: Any, key: str) -> CallOutcome:
            if breaker.open:
                return CallOutcome(request.key, error=f"not called: {breaker.reason}")
            progress.called()
            return self._call(batch, request, key)

        def one(request: Any) -> CallOutcome:
            outcome = lookup(request)
            progress.finished(outcome)
            return outcome

        def lookup(request: Any) -> CallOutcome:
            key = cache_key(description, method, request, salt)
            if cacheable:
                cached = self.cache.get(key)
                if cached is not None:
                    result = codec.decode(cached)
                    if not (self.retry_failed and unusable(result)):
                        self._record(step, provider, request.key, cache_hit=True, status="success")
                        return CallOutcome(request.key, result, cache_hit=True)
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

        workers = max(1, min(self.settings.concurrency, len(requests) or 1))
        reporter = self._report_progress(progress)
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"cpo-{step}") as pool:
                outcomes = list(pool.map(one, requests))
        finally:
            reporter.set()
        if breaker.open:
            raise ProviderError(
                f"step {step!r} stopped: {breaker.reason.rstrip('.')}. Results obtained so far are "
                "cached; fix the cause and rebuild to resume",
                node=step,
            )
        return outcomes

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
        step, provider, method, breaker = batch.step, batch.provider, batch.method, batch.breaker
        attempts = 0
        delay = self.settings.backoff_initial_s
        while True:
            attempts += 1
            self.requests.acquire()
            self.tokens.acquire(token_estimate)
            started = time.perf_counter()
            try:
                with batch.limit:
                    result = getattr(provider, method)(request)
            except Exception as error:  # provider failures are isolated per item
                latency = (time.perf_counter() - started) * 1000
                retryable = bool(getattr(error, "retryable", False))
                status = getattr(error, "status", None)
                message = _safe_message(error)
                if getattr(error, "timeout", False) or status in (408, 429):
                    batch.limit.congested()  # a slow or throttling service: fewer at once
                if retryable and attempts < self.settings.max_attempts and not breaker.open:
                    wait = getattr(error, "retry_after_s", None) or delay * (
                        1 + random.random() * 0.25
                    )
                    self.log.info(
                        "retrying call",
                        extra={
                            "step": step,
                            "item": request.key,
                            "attempt": attempts,
                            "wait_s": round(wait, 3),
                            "status": status,
                        },
                    )
                    self.sleep(min(wait, self.settings.backoff_max_s * 4))
                    delay = min(delay * 2, self.settings.backoff_max_s)
                    continue
                self._record(
                    step,
                    provider,
                    request.key,
                    status="error",
                    attempts=attempts,
                    latency_ms=latency,
                    error=message,
                )
                if isinstance(error, ModelError | ConfigurationError):
                    # A broken template or setting fails every item the same way: it is the
                    # project's error, not this item's, so the step fails and names it.
                    breaker.stop(message)
                    raise
                if _counts_for_breaker(error, retryable, status):
                    breaker.failure(message, fatal=status in (401, 403))
                return CallOutcome(request.key, error=message, attempts=attempts)
            latency = (time.perf_counter() - started) * 1000
            breaker.success()
            batch.limit.succeeded()
            input_tokens = int(getattr(result, "input_tokens", 0) or 0)
            output_tokens = int(getattr(result, "output_tokens", 0) or 0)
            cost = self.cost(price_model(provider), input_tokens, output_tokens)
            with self._spend_lock:
                self.spent_usd += cost
            if batch.cacheable:
                self.cache.put(key, provider.name, provider.model, batch.codec.encode(result))
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
            "called_at": _now(),
            **values,
        }
        self.cache.record(row)


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


class _Breaker:
    """Opens after `limit` consecutive failures, or at once on a credential error."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.failures = 0
        self.reason = ""
        self.open = False
        self._lock = threading.Lock()

    def failure(self, message: str, *, fatal: bool) -> None:
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
        with self._lock:
            self.failures = 0


# Statuses that say "this request", not "this service": they never open the breaker.
_ITEM_STATUSES = frozenset({None, 400, 413, 422})


def _counts_for_breaker(error: Exception, retryable: bool, status: int | None) -> bool:
    """Whether a failure says the service is unusable (so N in a row open the breaker).

    A provider's own non-retryable verdict on one item (``no_documents``, a 400 on one prompt,
    a content-filter refusal) says nothing about the next item, so it never counts; exhausted
    retries, credential errors, other HTTP errors and unexpected exceptions do.
    """
    item_level = isinstance(error, CPOError) and not retryable and status in _ITEM_STATUSES
    return not item_level


def _safe_message(error: Exception) -> str:
    if isinstance(error, CPOError):
        return error.message
    return f"{type(error).__name__}: {error}"[:500]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
