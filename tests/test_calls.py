"""Unit tests of the call layer (cpo/engine/calls/) with a tiny fake provider and a temp store."""

from __future__ import annotations

import email.utils
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from cpo.engine.calls import LEDGER_COLUMNS, CallLayer, CallStore, RateLimiter, retry_call
from cpo.engine.config import CallSettings, Price
from cpo.engine.config_schema import TargetSettings
from cpo.engine.services import StepProvider
from cpo.errors import BudgetExceededError, ModelError, ProviderError
from cpo.providers import base
from cpo.providers.base import (
    Document,
    GenerationRequest,
    GenerationResult,
    GroundednessResult,
    Hit,
    SafetyResult,
    kind_for_method,
    provider_kinds,
    register_kind,
)
from cpo.providers.failures import http_failure, provider_error

LOG = logging.getLogger("cpo.test_calls")


class FakeProvider:
    """Answers ``generate`` from a per-key plan: a list of exceptions to raise first."""

    kind = "generation"
    name = "tiny"
    model = "tiny-model"

    def __init__(self, plan: dict[str, list[Exception]] | None = None, tokens: int = 100) -> None:
        self.plan = {k: list(v) for k, v in (plan or {}).items()}
        self.tokens = tokens
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "model": self.model}

    def generate(self, request: GenerationRequest) -> GenerationResult:
        with self._lock:
            self.calls.append(request.key)
            pending = self.plan.get(request.key)
            error = pending.pop(0) if pending else None
        if error is not None:
            raise error
        return GenerationResult(
            subject=f"subject {request.prompt}",
            body=f"body {request.prompt}",
            citations=("DOC001",),
            input_tokens=self.tokens,
            output_tokens=self.tokens,
        )


def requests(*keys: str) -> list[GenerationRequest]:
    return [GenerationRequest(key=k, system="s", prompt=f"p-{k}") for k in keys]


def make_layer(
    tmp_path: Path,
    *,
    run_id: str = "run-1",
    max_cost: float | None = None,
    prices: dict[str, Price] | None = None,
    **settings: float,
) -> CallLayer:
    values = {
        "concurrency": 4,
        "max_attempts": 3,
        "backoff_initial_s": 0.5,
        "backoff_max_s": 30.0,
        "breaker_failures": 3,
        **settings,
    }
    layer = CallLayer(
        CallStore(tmp_path / ".cpo" / "cache.sqlite"),
        CallSettings(**values),
        prices or {},
        max_cost,
        run_id,
        LOG,
    )
    layer.sleeps = []  # type: ignore[attr-defined]
    layer.sleep = layer.sleeps.append  # type: ignore[attr-defined]
    return layer


def ledger(layer: CallLayer) -> list[dict]:
    return [dict(zip(LEDGER_COLUMNS, row, strict=True)) for row in layer.ledger.rows()]


def test_cache_hit_and_miss_persist_across_layers(tmp_path: Path) -> None:
    provider = FakeProvider()
    first = make_layer(tmp_path, run_id="run-1")
    out1 = first.call_all("variants", provider, "generate", requests("a", "b"))
    assert [o.cache_hit for o in out1] == [False, False]
    first.store.close()

    second = make_layer(tmp_path, run_id="run-2")
    out2 = second.call_all("variants", provider, "generate", requests("a", "b", "c"))
    assert [o.cache_hit for o in out2] == [True, True, False]
    assert out2[0].result == out1[0].result  # decoded back to the same dataclass
    assert provider.calls.count("a") == 1 and provider.calls.count("c") == 1
    rows = ledger(second)
    assert {r["run_id"] for r in rows} == {"run-1", "run-2"}  # history kept
    # Ledger rows are written as calls return, so their order is not the request order.
    hits = sorted((r["cache_hit"] for r in rows if r["run_id"] == "run-2"), reverse=True)
    assert hits == [1, 1, 0]


def test_different_parameters_are_different_cache_entries(tmp_path: Path) -> None:
    provider = FakeProvider()
    layer = make_layer(tmp_path)
    base = GenerationRequest(key="a", system="s", prompt="p", params={"temperature": 0.1})
    other = GenerationRequest(key="a", system="s", prompt="p", params={"temperature": 0.9})
    layer.call_all("variants", provider, "generate", [base])
    outcome = layer.call_all("variants", provider, "generate", [other])[0]
    assert not outcome.cache_hit and provider.calls == ["a", "a"]


def test_failed_batch_keeps_what_was_paid_for(tmp_path: Path) -> None:
    # Item "c" fails with a credential error: the breaker stops the batch, yet "a" and "b",
    # answered before, are cached and not paid again on the next run.
    provider = FakeProvider(
        {"c": [provider_error("401 unauthorized", retryable=False, status=401)]}
    )
    layer = make_layer(tmp_path, concurrency=1)
    with pytest.raises(ProviderError):
        layer.call_all("variants", provider, "generate", requests("a", "b", "c", "d"))
    layer.store.close()
    provider.calls.clear()
    again = make_layer(tmp_path, run_id="run-2", concurrency=1)
    outcomes = again.call_all("variants", provider, "generate", requests("a", "b", "c", "d"))
    assert [o.cache_hit for o in outcomes] == [True, True, False, False]
    assert provider.calls == ["c", "d"]


def test_retries_honour_retry_after_then_succeed(tmp_path: Path) -> None:
    throttled = [provider_error("429", retryable=True, status=429, retry_after=7.0)] * 2
    provider = FakeProvider({"a": list(throttled)})
    layer = make_layer(tmp_path, max_attempts=3)
    outcome = layer.call_all("variants", provider, "generate", requests("a"))[0]
    assert outcome.error is None and outcome.attempts == 3
    assert layer.sleeps == [7.0, 7.0]  # type: ignore[attr-defined]
    assert ledger(layer)[-1]["attempts"] == 3


def test_retries_back_off_and_give_up_after_max_attempts(tmp_path: Path) -> None:
    provider = FakeProvider({"a": [provider_error("503", retryable=True, status=503)] * 5})
    layer = make_layer(tmp_path, max_attempts=3, backoff_initial_s=0.5)
    outcome = layer.call_all("variants", provider, "generate", requests("a"))[0]
    assert outcome.error == "503" and outcome.attempts == 3
    assert provider.calls == ["a", "a", "a"]
    sleeps = layer.sleeps  # type: ignore[attr-defined]
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 0.625 and 1.0 <= sleeps[1] <= 1.25
    row = ledger(layer)[-1]
    assert row["status"] == "error" and row["error"] == "503" and row["attempts"] == 3


def test_credential_error_opens_breaker_at_once(tmp_path: Path) -> None:
    provider = FakeProvider(
        {k: [provider_error("401 bad key", retryable=False, status=401)] for k in "abcdef"}
    )
    layer = make_layer(tmp_path, concurrency=1, max_attempts=6)
    with pytest.raises(ProviderError) as info:
        layer.call_all("variants", provider, "generate", requests(*"abcdef"))
    assert provider.calls == ["a"]  # one call, no retry storm, nothing after it
    assert layer.sleeps == []  # type: ignore[attr-defined]
    assert "'variants'" in str(info.value) and "credential" in str(info.value)
    assert info.value.node == "variants"


def test_consecutive_failures_open_breaker(tmp_path: Path) -> None:
    boom = [ConnectionError("connection reset")]
    provider = FakeProvider({k: list(boom) for k in "abcdefgh"})
    layer = make_layer(tmp_path, concurrency=1, breaker_failures=3)
    with pytest.raises(ProviderError, match="3 failures in a row"):
        layer.call_all("variants", provider, "generate", requests(*"abcdefgh"))
    assert provider.calls == ["a", "b", "c"]


def test_success_resets_the_failure_count(tmp_path: Path) -> None:
    boom = [ConnectionError("reset")]
    plan = {"a": list(boom), "b": list(boom), "d": list(boom), "e": list(boom)}
    provider = FakeProvider(plan)
    layer = make_layer(tmp_path, concurrency=1, breaker_failures=3)
    outcomes = layer.call_all("variants", provider, "generate", requests(*"abcde"))
    assert [o.error is None for o in outcomes] == [False, False, True, False, False]


def test_item_level_failures_never_open_the_breaker(tmp_path: Path) -> None:
    # A provider's verdict on one item (no documents, a 400 on one prompt) is isolated.
    bad = [provider_error("no_documents: nothing retrieved", retryable=False)]
    provider = FakeProvider({k: list(bad) for k in "abcde"})
    layer = make_layer(tmp_path, concurrency=1, breaker_failures=2)
    outcomes = layer.call_all("variants", provider, "generate", requests(*"abcdef"))
    assert [o.error is None for o in outcomes] == [False] * 5 + [True]


def test_template_error_fails_the_step(tmp_path: Path) -> None:
    broken = ModelError("undefined variable: 'code' is undefined", path="prompts/x.txt", line=2)
    provider = FakeProvider({"a": [broken]})
    layer = make_layer(tmp_path, concurrency=1)
    with pytest.raises(ModelError, match="'code' is undefined"):
        layer.call_all("variants", provider, "generate", requests("a", "b"))
    assert provider.calls == ["a"]


def test_budget_stops_before_the_call_that_would_exceed(tmp_path: Path) -> None:
    # Each call: ~2 input tokens estimated + max_tokens 1000 output at $1/1M = ~$0.001 estimate;
    # actual cost 100 + 100 tokens = $0.0002. Cap $0.0025: two calls fit, the third would not.
    prices = {"tiny-model": Price(input_per_1m=1.0, output_per_1m=1.0)}
    layer = make_layer(tmp_path, max_cost=0.0025, prices=prices, concurrency=1)
    provider = FakeProvider()
    reqs = [
        GenerationRequest(key=k, system="", prompt=k, params={"max_tokens": 1000}) for k in "abc"
    ]
    layer.call_all("variants", provider, "generate", reqs[:2])
    assert layer.spent_usd == pytest.approx(0.0004)
    layer.max_cost_usd = 0.0012  # spent 0.0004 + next estimate ~0.001 > 0.0012
    with pytest.raises(BudgetExceededError) as info:
        layer.call_all("variants", provider, "generate", reqs[2:])
    assert provider.calls == ["a", "b"]
    assert info.value.key == "budget.max_cost_usd"
    assert layer.reserved_usd == pytest.approx(0.0)


def test_budget_holds_under_concurrency(tmp_path: Path) -> None:
    # 8 concurrent calls of ~$0.001 estimate each against a $0.0035 cap: reservations stop
    # the batch after at most 3 calls, however the threads interleave.
    prices = {"tiny-model": Price(input_per_1m=1.0, output_per_1m=1.0)}
    layer = make_layer(tmp_path, max_cost=0.0035, prices=prices, concurrency=8)

    class Slow(FakeProvider):
        def generate(self, request: GenerationRequest) -> GenerationResult:
            time.sleep(0.02)  # keep calls in flight together
            return super().generate(request)

    provider = Slow(tokens=500)
    reqs = [
        GenerationRequest(key=k, system="", prompt=k, params={"max_tokens": 1000})
        for k in "abcdefgh"
    ]
    with pytest.raises(BudgetExceededError):
        layer.call_all("variants", provider, "generate", reqs)
    assert 1 <= len(provider.calls) <= 3


def test_concurrent_results_come_back_in_request_order(tmp_path: Path) -> None:
    class Jittery(FakeProvider):
        def generate(self, request: GenerationRequest) -> GenerationResult:
            time.sleep(0.001 * (20 - int(request.key)) / 4)  # later keys answer first
            return super().generate(request)

    layer = make_layer(tmp_path, concurrency=8)
    keys = [str(i) for i in range(20)]
    outcomes = layer.call_all("variants", Jittery(), "generate", requests(*keys))
    assert [o.key for o in outcomes] == keys
    assert [o.result.body for o in outcomes] == [f"body p-{k}" for k in keys]


def test_ledger_rows_have_run_step_cache_tokens_and_cost(tmp_path: Path) -> None:
    prices = {"tiny-model": Price(input_per_1m=2.0, output_per_1m=4.0)}
    layer = make_layer(tmp_path, run_id="run-x", prices=prices)
    layer.call_all("variants", FakeProvider(tokens=1000), "generate", requests("a"))
    layer.call_all("variants", FakeProvider(tokens=1000), "generate", requests("a"))
    miss, hit = ledger(layer)
    assert miss["run_id"] == "run-x" and miss["step"] == "variants"
    assert miss["provider"] == "tiny" and miss["model"] == "tiny-model"
    assert miss["item_key"] == "a" and miss["cache_hit"] == 0 and miss["status"] == "success"
    assert miss["input_tokens"] == 1000 and miss["output_tokens"] == 1000
    assert miss["cost_usd"] == pytest.approx(0.006)  # 1000*2/1M + 1000*4/1M
    assert hit["cache_hit"] == 1 and hit["cost_usd"] == 0.0 and hit["called_at"]


def test_price_model_prices_calls_and_index_rows_but_ledger_keeps_model(tmp_path: Path) -> None:
    """A provider billed by another model (hybrid search: its embedding deployment)."""
    provider = FakeProvider(tokens=1000)
    provider.price_model = "embed-model"  # type: ignore[attr-defined]
    prices = {"embed-model": Price(input_per_1m=2.0, output_per_1m=4.0)}
    layer = make_layer(tmp_path, prices=prices)
    layer.call_all("retrieval", provider, "generate", requests("a"))
    layer.record_index("retrieval", provider, input_tokens=500)
    layer.record_index("retrieval", provider, cache_hit=True)
    call, index, cached = ledger(layer)
    assert call["model"] == "tiny-model" and call["cost_usd"] == pytest.approx(0.006)
    assert (index["item_key"], index["input_tokens"]) == ("index", 500)
    assert index["cost_usd"] == pytest.approx(0.001)  # 500 * 2 / 1M
    assert cached["input_tokens"] == 0 and cached["cost_usd"] == 0.0
    assert layer.spent_usd == pytest.approx(0.007)
    # Unpriced under its own model name: without price_model the same call is free.
    del provider.price_model  # type: ignore[attr-defined]
    fresh = make_layer(tmp_path / "other", prices=prices)
    fresh.call_all("retrieval", provider, "generate", requests("a"))
    assert ledger(fresh)[0]["cost_usd"] == 0.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_calls() -> None:
    clock = FakeClock()
    limiter = RateLimiter(120, clock=clock, sleep=clock.sleep)  # 2/s, burst 2
    for _ in range(6):
        limiter.acquire()
    # Two from the burst, then one every 0.5 s.
    assert clock.slept == pytest.approx([0.5, 0.5, 0.5, 0.5])
    assert clock.now == pytest.approx(102.0)


def test_rate_limiter_refills_while_idle() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, clock=clock, sleep=clock.sleep)  # 1/s, burst 1
    limiter.acquire()
    clock.now += 5  # idle: the bucket refills only up to its capacity
    limiter.acquire()
    limiter.acquire()
    assert clock.slept == pytest.approx([1.0])


def test_rate_limiter_large_requests_keep_the_long_run_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(6000, clock=clock, sleep=clock.sleep)  # 100 tokens/s, burst 100
    for _ in range(4):
        limiter.acquire(300)  # each request is 3x the bucket
    # 1200 tokens at 100/s: at least 9 s after the first (which the full bucket let through).
    assert clock.now - 100.0 == pytest.approx(9.0)


def test_rate_limiter_zero_means_no_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        limiter.acquire()
    assert clock.slept == []


# -- one call path: typed errors, one retry rule, codecs on the result types, the ledger ------


def test_provider_error_is_typed() -> None:
    error = ProviderError("busy", retryable=True, status=503, retry_after=1.5, node="n")
    assert (error.retryable, error.status, error.retry_after, error.timeout) == (
        True,
        503,
        1.5,
        False,
    )
    assert error.node == "n" and str(error) == "busy"
    plain = ProviderError("bad key")
    assert (plain.retryable, plain.status, plain.retry_after) == (False, None, None)
    scrubbed = provider_error("key sk-123 refused", retryable=False, secrets=["sk-123"])
    assert type(scrubbed) is ProviderError and scrubbed.message == "key *** refused"


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_http_date_is_honoured(tmp_path: Path, status: int) -> None:
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    throttled = http_failure("svc", status, {"Retry-After": when}, "slow down", auth_fix="")
    assert throttled.retryable and throttled.status == status
    assert 17 <= (throttled.retry_after or 0) <= 20
    layer = make_layer(tmp_path, max_attempts=2)
    outcome = layer.call_all(
        "variants", FakeProvider({"a": [throttled]}), "generate", requests("a")
    )
    assert outcome[0].error is None and outcome[0].attempts == 2
    assert layer.sleeps == [throttled.retry_after]  # type: ignore[attr-defined]


def test_retry_after_is_capped_and_5xx_backoff_has_jitter() -> None:
    settings = CallSettings(max_attempts=4, backoff_initial_s=1.0, backoff_max_s=3.0)
    errors = [
        ProviderError("429", retryable=True, status=429, retry_after=600.0),
        ProviderError("503", retryable=True, status=503),
        ProviderError("503", retryable=True, status=503),
    ]
    slept: list[float] = []

    def attempt(number: int) -> str:
        if errors:
            raise errors.pop(0)
        return f"ok after {number}"

    result = retry_call(attempt, settings, sleep=slept.append, jitter=lambda: 1.0)
    assert result == "ok after 4"
    # Retry-After capped at 4 x backoff_max_s; then 2 s and 4 s (capped to 3) plus 25 % jitter.
    assert slept == [12.0, pytest.approx(2.5), pytest.approx(3.75)]


def test_non_retryable_errors_are_raised_at_once() -> None:
    slept: list[float] = []
    calls: list[int] = []

    def attempt(number: int) -> None:
        calls.append(number)
        raise ProviderError("bad request", retryable=False, status=400)

    with pytest.raises(ProviderError, match="bad request"):
        retry_call(attempt, CallSettings(max_attempts=5), sleep=slept.append)
    assert calls == [1] and slept == []


def test_index_retries_through_the_same_rule(tmp_path: Path) -> None:
    class Index:
        kind, name, model, persistent_index = "retrieval", "svc", "svc-model", True

        def __init__(self) -> None:
            self.failures = [ProviderError("503", retryable=True, status=503, retry_after=3.0)]
            self.calls = 0

        def describe(self) -> dict[str, str]:
            return {"name": self.name}

        def index(self, documents: list[Document]) -> None:
            self.calls += 1
            if self.failures:
                raise self.failures.pop(0)

    layer = make_layer(tmp_path, max_attempts=3)
    target = Index()
    StepProvider("retrieval", "retrieval", target, layer).index([Document("D1", "t", "b")])
    assert target.calls == 2 and layer.sleeps == [3.0]  # type: ignore[attr-defined]
    row = ledger(layer)[-1]
    assert (row["item_key"], row["attempts"]) == ("index", 2)


@dataclass(frozen=True)
class Score:
    """A result type of a kind the call layer has never heard of."""

    value: float

    def to_cache(self) -> dict[str, float]:
        return {"v": self.value}

    @classmethod
    def from_cache(cls, data: dict[str, float]) -> Score:
        return cls(data["v"])


@dataclass(frozen=True)
class ScoreRequest:
    key: str
    text: str


def test_a_new_provider_kind_needs_no_edit_of_the_call_layer(tmp_path: Path) -> None:
    class Scorer:
        kind, name, model = "scoring", "len", "len-1"

        def __init__(self) -> None:
            self.calls = 0

        def describe(self) -> dict[str, str]:
            return {"name": self.name}

        def score(self, request: ScoreRequest) -> Score:
            self.calls += 1
            return Score(len(request.text))

    register_kind("scoring", "score", Score)
    try:
        assert "scoring" in provider_kinds()
        scorer = Scorer()
        first = make_layer(tmp_path).call_all("s", scorer, "score", [ScoreRequest("a", "abc")])
        again = make_layer(tmp_path).call_all("s", scorer, "score", [ScoreRequest("a", "abc")])
        assert first[0].result == again[0].result == Score(3.0)
        assert again[0].cache_hit and scorer.calls == 1
        # cpo.yml accepts the kind, too: the settings schema reads the registry.
        TargetSettings.model_validate({"providers": {"scoring": {"type": "len"}}})
    finally:
        base._KINDS.pop("scoring")
    with pytest.raises(ValidationError, match="unknown key 'scoring'"):
        TargetSettings.model_validate({"providers": {"scoring": {"type": "len"}}})


def test_result_types_round_trip_through_the_cache_json() -> None:
    results = {
        "generate": GenerationResult("s", "b", ("D1",), input_tokens=3, blocked_reason="x"),
        "analyze": SafetyResult({"Hate": 0}, ("word",)),
        "detect": GroundednessResult(True, 0.5, ("claim",)),
        "search": [Hit("D1", 1.5), Hit("D2", 0.5)],
    }
    for method, result in results.items():
        kind = kind_for_method(method)
        stored = json.loads(json.dumps(kind.encode(result)))
        assert kind.decode(stored) == result, method


def test_ledger_is_provider_calls_with_llm_calls_as_a_view(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with sqlite3.connect(path) as con:  # a store written before the rename
        con.execute(f"create table llm_calls ({', '.join(LEDGER_COLUMNS)})")
        con.execute("insert into llm_calls (run_id, step) values ('old-run', 'variants')")
    layer = CallLayer(CallStore(path), CallSettings(), {}, None, "new-run", LOG)
    layer.call_all("variants", FakeProvider(), "generate", requests("a"))
    assert [row[0] for row in layer.ledger.rows()] == ["old-run", "new-run"]  # history kept
    layer.store.close()
    with sqlite3.connect(path) as con:
        kinds = dict(con.execute("select name, type from sqlite_master").fetchall())
        assert (kinds["provider_calls"], kinds["llm_calls"]) == ("table", "view")
        assert con.execute("select count(*) from llm_calls").fetchone() == (2,)


def test_built_database_has_provider_calls_and_the_llm_calls_view(built_mini: Path) -> None:
    import duckdb

    with duckdb.connect(str(built_mini / "mini.duckdb"), read_only=True) as con:
        kinds = dict(
            con.execute(
                "select table_name, table_type from information_schema.tables "
                "where table_name in ('provider_calls', 'llm_calls')"
            ).fetchall()
        )
        assert kinds == {"provider_calls": "BASE TABLE", "llm_calls": "VIEW"}
        table = con.execute("describe provider_calls").fetchall()
        view = con.execute("describe llm_calls").fetchall()
        assert [c[:2] for c in view] == [c[:2] for c in table]
        assert [c[0] for c in table] == list(LEDGER_COLUMNS)


class BatchingProvider(FakeProvider):
    """A FakeProvider that can batch: records what each `prepare` call was given."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.prepared: list[list[str]] = []
        self.fail = fail

    def prepare(self, batch: list[GenerationRequest]) -> None:
        self.prepared.append([r.key for r in batch])
        if self.fail:
            raise RuntimeError("batch scoring is down")


def test_a_batching_provider_prepares_only_the_uncached_requests_once(tmp_path: Path) -> None:
    provider = BatchingProvider()
    layer = make_layer(tmp_path)
    layer.call_all("variants", provider, "generate", requests("a", "b"))
    assert provider.prepared == [["a", "b"]]
    out = layer.call_all("variants", provider, "generate", requests("a", "b", "c"))
    assert provider.prepared == [["a", "b"], ["c"]]  # cache hits are not prepared again
    assert [o.cache_hit for o in out] == [True, True, False]
    layer.call_all("variants", provider, "generate", requests("a"))
    assert len(provider.prepared) == 2  # nothing uncached: prepare is not called at all


def test_a_failing_prepare_leaves_the_calls_to_answer(tmp_path: Path) -> None:
    provider = BatchingProvider(fail=True)
    out = make_layer(tmp_path).call_all("variants", provider, "generate", requests("a", "b"))
    assert provider.prepared == [["a", "b"]]
    assert [o.error for o in out] == [None, None] and sorted(provider.calls) == ["a", "b"]
