"""The ``llm_judge`` safety provider against a real server: llama.cpp + SmolLM2-135M.

A target screens with ``safety: [{type: offline}, {type: llm_judge}]`` (layered); the copy is
written by the offline composer, so the server only judges (one tone: the CPU is shared). The tiny
model's verdicts are not expected to be good, the wiring is: every variant gets its four
``harm:llm_judge:*`` rows, a verdict the parser could not read blocks with a named reason, the
judge's tokens are in ``llm_calls``, an unchanged rebuild asks the server nothing, and the full
build ends as designed: one message per customer, or (when the judge blocks the human-written
control everyone falls back to) exit 1 with one error naming ``control_passes_screening``.

Marked ``real_llm`` and skipped like tests/test_real_llm.py; run with ``benchmarks/real_llm.sh``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cpo.engine.cli import main
from tests.llama_server import find_model, llama_server, server_python
from tests.sample import copy_sample_project, query
from tests.test_real_llm import MODEL_NAME

pytestmark = pytest.mark.real_llm
TONE = "friendly"
CATEGORIES = ("Hate", "SelfHarm", "Sexual", "Violence")


@pytest.fixture(scope="module")
def gguf() -> Path:
    model, why = find_model()
    if model is None:
        pytest.skip(why)
    return model


def judge_project(destination: Path) -> Path:
    """The sample project with a ``judge`` target: offline copy, offline + llm_judge screening
    (priced, so the judge's cost is exercised), and one tone."""
    project = copy_sample_project(destination)
    config = yaml.safe_load((project / "cpo.yml").read_text())
    config["targets"]["judge"] = {
        "database": "cpo.duckdb",
        "providers": {
            "retrieval": {"type": "bm25", "audience_mode": "boost"},
            "generation": {"type": "offline"},
            "safety": [
                {"type": "offline"},
                {"type": "llm_judge", "model": MODEL_NAME, "max_tokens": 200, "timeout_s": 300},
            ],
        },
    }
    config["prices"][MODEL_NAME] = {"input_per_1m": 0.15, "output_per_1m": 0.60}
    config["calls"]["concurrency"] = 2
    config["vars"]["generation"]["tones"] = [TONE]
    experiment = config["vars"]["experiment"]
    experiment["arms"] = [{"name": "control", "weight": 0.5}, {"name": TONE, "weight": 0.5}]
    rates = experiment["simulation"]["rates"]
    experiment["simulation"]["rates"] = {k: v for k, v in rates.items() if k in ("default", TONE)}
    (project / "cpo.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return project


def test_llm_judge_against_llama_cpp_screens_every_variant_and_fails_closed(
    gguf: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    project = judge_project(tmp_path / "p")
    base = ["--project-dir", str(project), "--target", "judge"]
    # The safety step and what it needs; the control's data test is left for the full build.
    screen = ["build", "-s", "+approved_variants", "--exclude", "control_passes_screening", *base]
    with llama_server(gguf, python=server_python()) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "local-no-key")

        code = main(screen)
        out, err = capsys.readouterr()
        assert code == 0, out + err
        variants = query(project, "select variant_id from variants where status = 'generated'")
        assert len(variants) >= 2  # the control and at least one segment's copy
        asked = server.requests()
        assert asked >= len(variants)  # one judge call per variant (json verdicts)

        rows = query(
            project,
            'select variant_id, "check", severity, passed, reason from safety_screenings '
            'where "check" like \'harm:llm_judge:%\' order by variant_id, "check"',
        )
        # Every variant: the judge's four rows, next to the offline layer's.
        per_variant = rows.groupby("variant_id")["check"].apply(sorted).to_dict()
        expected = [f"harm:llm_judge:{c}" for c in CATEGORIES]
        assert set(per_variant) == set(variants["variant_id"])
        assert all(checks == expected for checks in per_variant.values()), per_variant
        offline = query(
            project,
            "select count(*) as n from safety_screenings where \"check\" like 'harm:offline:%'",
        )
        assert offline["n"][0] == 4 * len(variants)

        # Each row is a parsed verdict (below/at the threshold) or an unread one that blocks.
        unread = rows["reason"].str.startswith("not_screened")
        assert (~rows.loc[unread, "passed"]).all()
        assert rows.loc[unread, "reason"].str.contains(r"\(unparseable verdict: .+\)").all()
        parsed = rows[~unread]
        assert parsed["reason"].str.fullmatch(r"severity [0-7] (<|>=) threshold [0-7].*").all()
        assert (parsed["passed"] == parsed["reason"].str.contains(" < threshold ")).all()
        approved = set(query(project, "select variant_id from approved_variants")["variant_id"])
        assert not approved & set(rows.loc[~rows["passed"], "variant_id"])  # blocked: not sent

        # The judge's calls are in the ledger, with tokens and a price.
        ledger = query(
            project,
            "select count(*) as n, sum(input_tokens) as i, sum(output_tokens) as o, "
            "sum(cost_usd) as cost from llm_calls where provider = 'llm_judge' and not cache_hit "
            "and status = 'success'",
        )
        assert ledger["n"][0] == asked
        assert ledger["i"][0] > 0 and ledger["o"][0] > 0 and ledger["cost"][0] > 0

        # An unchanged rebuild asks the server nothing.
        code = main(screen)
        out, err = capsys.readouterr()
        assert code == 0, out + err
        assert server.requests() == asked and "Calls: 0 made" in out

        # The full build, from the cache: the designed ending for the judge's verdict on the
        # control (every customer's fallback).
        control_blocked = query(
            project,
            "select count(*) as n from safety_screenings where variant_id = 'v_control' "
            "and not passed",
        )["n"][0]
        code = main(["build", *base])
        out, err = capsys.readouterr()
        assert server.requests() == asked  # nothing new to ask
        if control_blocked:
            # One clear error, and the database left as the screening build made it.
            assert code == 1, out + err
            assert "1 fail," in out and "control_passes_screening: " in out + err
            assert "cpo.duckdb was left unchanged" in out + err and "Traceback" not in out + err
            published = query(
                project,
                "select count(*) as n from information_schema.tables where table_name = 'messages'",
            )
            assert published["n"][0] == 0
        else:
            assert code == 0, out + err
            customers = query(project, "select count(*) as n from stg_customers")["n"][0]
            messages = query(
                project, "select count(*) as n, count(distinct customer_id) as c from messages"
            )
            assert messages["n"][0] == messages["c"][0] == customers

    verdicts = rows.assign(unread=unread).groupby("variant_id")
    figures = {
        "variants": len(variants),
        "requests": asked,
        "input_tokens": int(ledger["i"][0]),
        "output_tokens": int(ledger["o"][0]),
        "unparsed": int(verdicts["unread"].all().sum()),
        "partly_parsed": int((verdicts["unread"].any() & ~verdicts["unread"].all()).sum()),
        "parsed": int((~verdicts["unread"].any()).sum()),
        "approved_by_judge": int(verdicts["passed"].all().sum()),
        "blocked_by_judge": int((~verdicts["passed"].all()).sum()),
        "approved": len(approved),
        "control_blocked": bool(control_blocked),
        "full_build_exit": code,
        "unparsed_because": sorted(
            set(rows.loc[unread, "reason"].str.extract(r"\(unparseable verdict: (.*)\)$")[0])
        ),
    }
    with capsys.disabled():
        print("\nllm_judge verdicts:", json.dumps(figures))
