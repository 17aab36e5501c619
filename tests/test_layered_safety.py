"""Layered screening: several safety providers on one target, every one must pass.

The sample project is built with ``safety: {type: layered, providers: [offline, llm_judge]}``
and the judge served by the loopback emulator (tests/emulator/judge_routes.py)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cpo.engine.cli import main
from cpo.errors import ConfigurationError
from cpo.providers.base import SafetyRequest, SafetyResult, get_provider_factory
from cpo.providers.layered_safety import combine, make_layered_safety
from tests import fake_providers
from tests.emulator import Emulator
from tests.sample import copy_sample_project, query

JUDGE_ONLY = "v_champions_friendly"  # "nude" is mild offline (2) but Sexual 5 for the judge
GARBAGE = "v_loyal_urgent"  # the judge answers prose: unparseable, fail-closed
BOTH = "v_at_risk_friendly"  # a threat both providers block
SCRIPT = {
    JUDGE_ONLY: {"insert": "Our nude palette is back for winter."},
    GARBAGE: {"insert": "Cosy socks for cold evenings. [[judge:garbage]]"},
    BOTH: {"insert": "We will kill you if you do not buy this jacket."},
}


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    project = copy_sample_project(tmp_path_factory.mktemp("layered"))
    fake_providers.use_providers(
        project,
        generation={"type": "fake", "script": SCRIPT},
        safety={
            "type": "layered",
            "providers": [{"type": "offline"}, {"type": "llm_judge", "model": "judge-1b"}],
        },
    )
    with Emulator() as emu, pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", emu.keys.openai)
        mp.setenv("OPENAI_BASE_URL", f"{emu.url}/openai/v1")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["build", "-s", "+approved_variants", "--project-dir", str(project)])
        yield {"project": project, "code": code, "err": err.getvalue(), "emu": emu}


def failed(project: Path, variant: str) -> dict[str, str]:
    """The failed harm checks of a variant (the inserted test sentences are uncited on purpose,
    so grounding blocks them too; these tests are about the harm layers)."""
    rows = query(
        project,
        'select "check", reason from safety_screenings where variant_id = ? and not passed'
        " and \"check\" like 'harm:%'",
        [variant],
    )
    return dict(zip(rows["check"], rows["reason"], strict=True))


def test_build_succeeds_and_every_layer_screens_every_variant(layered):
    assert layered["code"] == 0, layered["err"]
    checks = query(
        layered["project"],
        "select variant_id, count(*) filter (where \"check\" like 'harm:offline:%') as offline, "
        "count(*) filter (where \"check\" like 'harm:llm_judge:%') as judge "
        "from safety_screenings where \"check\" like 'harm:%' group by variant_id",
    )
    assert len(checks) > 3
    assert (checks["offline"] == 4).all() and (checks["judge"] == 4).all()
    judge_calls = [r for r in layered["emu"].requests_for("openai") if "judge" in str(r.body)]
    assert judge_calls  # the judge was really asked, through the call layer
    ledger = query(layered["project"], "select count(*) as n from llm_calls where provider = ?",
                   ["llm_judge"])  # fmt: skip
    assert ledger["n"][0] >= len(checks)


def test_a_variant_only_the_judge_blocks_is_not_approved(layered):
    blocked = failed(layered["project"], JUDGE_ONLY)
    assert list(blocked) == ["harm:llm_judge:Sexual"], blocked
    assert "severity 5 >= threshold 4" in blocked["harm:llm_judge:Sexual"]


def test_unparseable_judge_verdict_blocks_and_says_why(layered):
    blocked = failed(layered["project"], GARBAGE)
    assert set(blocked) == {
        f"harm:llm_judge:{c}" for c in ("Hate", "SelfHarm", "Sexual", "Violence")
    }
    assert all("unparseable verdict" in r for r in blocked.values())


def test_both_layers_record_what_they_blocked(layered):
    blocked = failed(layered["project"], BOTH)
    assert "harm:offline:Violence" in blocked and "harm:llm_judge:Violence" in blocked


def test_approved_only_when_every_layer_passes(layered):
    approved = set(
        query(layered["project"], "select variant_id from approved_variants")["variant_id"]
    )
    assert approved and not approved & {JUDGE_ONLY, GARBAGE, BOTH}
    passed = query(
        layered["project"],
        "select variant_id from safety_screenings group by variant_id having bool_and(passed)",
    )
    assert approved == set(passed["variant_id"])


class Fixed:
    kind, name, model = "safety", "fixed", "fixed"

    def __init__(self, severities):
        self.severities = severities

    def describe(self):
        return {"severities": self.severities}

    def analyze(self, request):
        return SafetyResult(self.severities, ("list:term",))


def test_combine_takes_the_worst_and_keeps_unrated_unrated():
    a = SafetyResult({"Hate": 1, "SelfHarm": 0, "Sexual": 5, "Violence": 0})
    b = SafetyResult({"Hate": 4, "SelfHarm": 0, "Sexual": 0})
    combined = combine([a, b])
    assert dict(combined.severities) == {"Hate": 4, "SelfHarm": 0, "Sexual": 5}


def test_list_shape_and_labels(monkeypatch):
    from cpo.providers import base

    monkeypatch.setitem(base._REGISTRY, ("safety", "fixed"), lambda s, e: Fixed(s["severities"]))
    layered = make_layered_safety(
        [{"type": "offline"}, {"type": "fixed", "severities": {"Hate": 6}},
         {"type": "fixed", "severities": {}}],
        {},
    )  # fmt: skip
    assert [label for label, _ in layered.layers] == ["offline", "fixed", "fixed#2"]
    result = layered.analyze(SafetyRequest(key="k", text="Warm socks."))
    assert dict(result.severities) == {}  # the third layer rated nothing: fail-closed
    assert get_provider_factory("safety", "layered")
    described = layered.describe()
    assert [d[0] for d in described["layers"]] == ["offline", "fixed", "fixed#2"]


@pytest.mark.parametrize(
    "settings",
    [
        {"type": "layered"},
        {"type": "layered", "providers": []},
        {"type": "layered", "providers": [{"kind": "offline"}]},
        {"type": "layered", "providers": [{"type": "layered", "providers": []}]},
        {"type": "layered", "providers": [{"type": "offline"}], "model": "x"},
        [{"type": "nope"}],
    ],
)
def test_bad_layer_settings_are_configuration_errors(settings):
    with pytest.raises(ConfigurationError):
        make_layered_safety(settings, {})
