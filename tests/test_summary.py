"""The user sees what happened: build summary, failed steps, progress lines, congestion."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from cpo.engine.calls import CallLayer
from cpo.engine.project import Project, RunResult
from cpo.providers.base import GenerationRequest, GenerationResult
from cpo.providers.failures import provider_error
from cpo.reporting import summary
from tests.fake_providers import use_providers
from tests.sample import copy_sample_project, query
from tests.test_calls import FakeProvider, make_layer, requests


def test_the_build_summary_is_printed_and_written(sample_build: Path) -> None:
    results = json.loads((sample_build / "target" / "run_results.json").read_text())
    data = results["summary"]
    assert data["variants"]["total"] == data["variants"]["approved"] == 19
    assert data["variants"]["control_approved"] is True
    assert data["customers"]["total"] == 5000 and data["customers"]["without_message"] == 0
    assert data["calls"]["made"] + data["calls"]["cached"] > 0
    lines = summary.lines(data)
    assert lines[0] == "Variants: 19 of 19 approved"
    assert lines[1].startswith("Customers: 5,000, 0 on the fallback message")
    assert lines[-1].startswith("Calls: ") and "tokens" in lines[-1] and "cost $" in lines[-1]


def test_all_personalised_blocked_is_said_first_with_reasons_and_a_query() -> None:
    data = {
        "calls": {"made": 2, "cached": 0, "failed": 0, "attempts": 2, "input_tokens": 10,
                  "output_tokens": 5, "cost_usd": 0.0},
        "variants": {"total": 3, "approved": 1, "blocked": 2, "personalised": 2,
                     "personalised_approved": 0, "control_approved": True,
                     "blocked_by_reason": {"grounding:sentences (unsupported_sentence)": 2}},
    }  # fmt: skip
    data["headline"] = summary.headline(data)
    lines = summary.lines(data)
    assert lines[0].startswith("Every personalised variant was blocked (2 of 2)")
    assert "grounding:sentences (unsupported_sentence) x2" in lines[0]
    assert summary.INSPECT_QUERY in lines[0]
    data["variants"]["personalised_approved"] = 1
    assert summary.headline(data) is None


def test_a_step_whose_every_item_failed_fails_with_the_provider_reason(
    sample_build: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from cpo.engine.cli import main

    segments = query(sample_build, "select segment_id from segment_profiles")["segment_id"]
    tones = ("urgent", "informational", "friendly")
    reason = "HTTP 400: model 'gpt-x' does not exist"
    script = {f"v_{s}_{t}": {"fail": reason} for s in segments for t in tones}
    project = copy_sample_project(tmp_path / "p")
    use_providers(project, generation={"type": "fake", "script": script})
    code = main(["build", "--project-dir", str(project)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "variants" in out and "ERROR" in out  # not "OK (19 rows)"
    assert f"every one of the {len(script)} generation calls failed" in out + err
    assert reason in out + err  # the provider's own reason reaches the console


def test_progress_lines_while_a_long_batch_runs(tmp_path: Path) -> None:
    class Slow(FakeProvider):
        def generate(self, request: GenerationRequest) -> GenerationResult:
            time.sleep(0.05)
            return super().generate(request)

    layer = make_layer(tmp_path, concurrency=1)
    lines: list[str] = []
    layer.progress, layer.progress_interval_s = lines.append, 0.02
    layer.call_all("variants", Slow(), "generate", requests(*"abcdef"))
    assert lines and lines[0].startswith("variants: ")
    assert "/6 items done, 0 failed, " in lines[0] and "called" in lines[-1]


def test_timeouts_lower_the_concurrency_and_successes_raise_it(tmp_path: Path) -> None:
    """A one-slot server: while requests time out, fewer are in flight at once."""
    active, peak, lock = [0], [0], threading.Lock()
    timeouts = {"k1": 2, "k2": 2}

    class OneSlot(FakeProvider):
        def generate(self, request: GenerationRequest) -> GenerationResult:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                left = timeouts.get(request.key, 0)
                timeouts[request.key] = left - 1
            try:
                time.sleep(0.01)
                if left > 0:
                    raise provider_error("timed out", retryable=True, timeout=True)
                return super().generate(request)
            finally:
                with lock:
                    active[0] -= 1

    layer: CallLayer = make_layer(tmp_path, concurrency=8, backoff_initial_s=0.0)
    keys = ["k0", "k1", "k2", *[f"x{i}" for i in range(20)]]
    outcomes = layer.call_all("variants", OneSlot(), "generate", requests(*keys))
    assert all(o.error is None for o in outcomes)
    limit = layer.limits["tiny/tiny-model"]
    assert limit.lowest < limit.ceiling == 8  # lowered on timeouts
    assert limit.limit > limit.lowest  # and raised again by the successes that followed
    assert peak[0] <= 8


def test_blocked_answers_are_cached_and_retry_failed_asks_again(tmp_path: Path) -> None:
    class Unusable(FakeProvider):
        def generate(self, request: GenerationRequest) -> GenerationResult:
            self.calls.append(request.key)
            return GenerationResult("", "", (), 40, 10, blocked_reason="no_json: x", requests=2)

    provider = Unusable()
    layer = make_layer(tmp_path)
    layer.call_all("variants", provider, "generate", requests("a", "b"))
    again = make_layer(tmp_path, run_id="run-2")
    outcomes = again.call_all("variants", provider, "generate", requests("a", "b"))
    assert provider.calls == ["a", "b"] and all(o.cache_hit for o in outcomes)
    retry = make_layer(tmp_path, run_id="run-3")
    retry.retry_failed = True
    retry.call_all("variants", provider, "generate", requests("a", "b"))
    assert sorted(provider.calls) == ["a", "a", "b", "b"]
    rows = [r for r in layer.ledger.rows() if r[0] == "run-1"]
    assert {(r[6], r[7], r[12]) for r in rows} == {(40, 10, "blocked: no_json: x")}


def test_project_build_summary_counts_this_builds_calls_only(
    sample_run: RunResult, built_sample: Path
) -> None:
    first = sample_run  # the sample's first build; `built_sample` is a copy of its folder
    second = Project.load(built_sample).build()
    assert first.summary["calls"]["made"] > 0
    assert second.summary["calls"]["made"] == 0 and second.summary["calls"]["cached"] > 0
