"""Compliance text is the system's job, the control is written by a person (issue 9, 1-2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpo.engine.project import Project
from cpo.errors import CPOError
from tests.sample import copy_sample_project, query

ROOT = Path(__file__).resolve().parent.parent


def test_every_message_ends_with_the_rendered_footer(sample_build: Path) -> None:
    rows = query(
        sample_build,
        "select m.body, m.customer_id from messages m",
    )
    address = "Northwind Outfitters Ltd, 12 Harbour Road, Seattle, WA 98101"
    for body in rows["body"]:
        tail = body.rstrip().splitlines()[-4:]
        assert tail[0] == "--" and address in tail[1]
        assert tail[-1].startswith("Unsubscribe: https://northwind.example/unsubscribe/")
    # The copy itself (model or composer) never writes compliance text.
    variants = query(sample_build, "select body from variants where body is not null")
    assert not any("unsubscribe" in b.lower() for b in variants["body"])


def test_no_prompt_asks_the_model_for_compliance_text() -> None:
    prompts = ROOT / "prompts"
    for path in prompts.rglob("*.txt"):
        text = path.read_text()
        if path.name == "footer.txt":
            assert "{{ unsubscribe_url }}" in text
            continue
        assert "{{ unsubscribe_url }}" not in text, path
        assert "End the body with" not in text, path


def test_the_control_is_written_not_generated_and_screened_like_any(sample_build: Path) -> None:
    control = query(
        sample_build,
        "select subject, body, provider, model, status from variants where tone = 'control'",
    )
    written = (ROOT / "prompts" / "control" / "body.txt").read_text().strip()
    assert control["body"][0] == written
    assert (control["provider"][0], control["model"][0]) == ("human", "prompts/control/")
    calls = query(sample_build, "select count(*) as n from llm_calls where item_key = 'v_control' "
                                "and step = 'variants'")  # fmt: skip
    assert calls["n"][0] == 0  # never sent to a provider
    checks = query(
        sample_build,
        "select count(*) as n, bool_and(passed) as ok from safety_screenings "
        "where variant_id = 'v_control'",
    )
    assert checks["n"][0] >= 10 and checks["ok"][0]  # harm, policy, grounding, injection


def test_a_footer_without_the_unsubscribe_tag_is_a_compile_error(tmp_path: Path) -> None:
    project = copy_sample_project(tmp_path / "p")
    (project / "prompts" / "footer.txt").write_text("Northwind Outfitters\n{{ postal_address }}\n")
    with pytest.raises(CPOError) as info:
        Project.load(project).compile()
    assert "{{ unsubscribe_url }}" in info.value.message
    assert str(info.value.path).endswith("prompts/footer.txt")
    (project / "prompts" / "footer.txt").unlink()
    with pytest.raises(CPOError, match=r"footer\.txt is missing"):
        Project.load(project).build()
    assert not (project / "cpo.duckdb").exists()


def test_a_control_that_fails_screening_stops_the_build_before_assignment(
    tmp_path: Path,
) -> None:
    project = copy_sample_project(tmp_path / "p")
    body = project / "prompts" / "control" / "body.txt"
    body.write_text(body.read_text() + "\nSatisfaction guaranteed, risk-free!\n")
    run = Project.load(project).build()
    assert not run.success
    failed = {r.name: r for r in run.results if r.failed}
    assert "control_passes_screening" in failed
    assert "policy:forbidden_phrases" in failed["control_passes_screening"].message
    skipped = {r.name for r in run.results if r.status == "skipped"}
    assert {"assignments", "messages"} <= skipped
    assert not (project / "cpo.duckdb").exists()
    summary = json.loads((project / "target" / "run_results.json").read_text())["summary"]
    assert summary["variants"]["control_approved"] is False


def test_a_missing_key_is_reported_against_the_step_that_needs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from cpo.engine.cli import main

    project = copy_sample_project(tmp_path / "p")
    code = main(["build", "--project-dir", str(project), "--target", "openai"])
    out, err = capsys.readouterr()
    assert code == 1
    text = out + err
    assert "the generation provider (openai)" in text and "OPENAI_API_KEY" in text
