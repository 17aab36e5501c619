"""The provider call layer: every provider call of a build goes through `CallLayer.call_all`.

Modules:
    layer: `CallLayer` (concurrency, budget, breaker, progress) and `CallOutcome`.
    retry: the one retry rule (tenacity: ``Retry-After``, exponential backoff with jitter).
    limits: token-bucket quotas, adaptive concurrency, the circuit breaker.
    cache: the response cache and its keys.
    ledger: the call ledger (``provider_calls``; ``llm_calls`` is a view over it).
    store: the SQLite file that holds both.
"""

from cpo.engine.calls.cache import ResponseCache, cache_key
from cpo.engine.calls.layer import (
    CallLayer,
    CallOutcome,
    decode,
    estimate_tokens,
    price_model,
    unusable,
)
from cpo.engine.calls.ledger import LEDGER_COLUMNS, LEDGER_TABLE, LEDGER_VIEW, CallLedger
from cpo.engine.calls.limits import AdaptiveLimit, Breaker, RateLimiter
from cpo.engine.calls.retry import is_retryable, retry_call
from cpo.engine.calls.store import CallStore

__all__ = [
    "LEDGER_COLUMNS",
    "LEDGER_TABLE",
    "LEDGER_VIEW",
    "AdaptiveLimit",
    "Breaker",
    "CallLayer",
    "CallLedger",
    "CallOutcome",
    "CallStore",
    "RateLimiter",
    "ResponseCache",
    "cache_key",
    "decode",
    "estimate_tokens",
    "is_retryable",
    "price_model",
    "retry_call",
    "unusable",
]
