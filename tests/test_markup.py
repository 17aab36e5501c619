"""Issue 10.7: markup and spreadsheet formulas in content never reach customers.

stg_content flags them (udfs/text_checks.py, the same rules as the policy), flagged documents
are not retrieved, the policy blocks them in generated copy, and messages are plain text."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest

from cpo.engine.cli import main
from cpo.personalization.policy import find_formulas, find_markup, policy_checks
from tests import fake_providers
from tests.sample import copy_sample_project, query

MARKUP = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "<svg onload=alert(1)>",
    "<b>bold</b> offer",
    "Click <a href='https://x.example'>here</a>",
    "<!-- hidden -->",
    "<iframe src=//x.example></iframe>",
    "Visit javascript:alert(1)",
    "＜script＞alert(1)＜/script＞",  # full-width brackets fold to < >
]
NOT_MARKUP = [
    "I <3 winter",
    "Sizes S < M < L and XL > L.",
    "Hi {{ first_name }}, welcome.",
    "Free returns -> always.",
    "Email support@northwind.example.",
]
FORMULAS = [
    '=HYPERLINK("http://x.example","Claim")',
    "=1+1",
    "+SUM(A1:A3)",
    "-2+3",
    "@SUM(A1)",
    "Great boots.\n=cmd|' /C calc'!A0",
    'Details: =IMPORTXML("http://x.example", "//a")',
    "-cmd|' /C calc'!A0",
]
NOT_FORMULAS = [
    "- warm hood\n- two pockets",
    "Save -20% today only if cited.",
    "Jackets from $99 + free shipping.",
    "2 + 2 layers keep you warm.",
    "Write to help@northwind.example",
]


@pytest.mark.parametrize("text", MARKUP)
def test_markup_is_found(text):
    assert find_markup(text)


@pytest.mark.parametrize("text", NOT_MARKUP)
def test_text_that_is_not_markup(text):
    assert not find_markup(text)


@pytest.mark.parametrize("text", FORMULAS)
def test_formulas_are_found(text):
    assert find_formulas(text)


@pytest.mark.parametrize("text", NOT_FORMULAS)
def test_text_that_is_not_a_formula(text):
    assert not find_formulas(text)


def test_policy_blocks_markup_and_formulas_in_copy():
    for body in ("Warm boots <script>x()</script>", '=HYPERLINK("x")'):
        check = {c.check: c for c in policy_checks("Boots", body, {})}["policy:markup"]
        assert not check.passed and check.reason.startswith("markup: ")
    clean = {c.check: c for c in policy_checks("Boots", "- warm\n- dry", {})}["policy:markup"]
    assert clean.passed


SCRIPTED = "v_champions_friendly"
SCRIPT = {SCRIPTED: {"insert": "<img src=x onerror=alert(document.cookie)>"}}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    project = copy_sample_project(tmp_path_factory.mktemp("markup"))
    with (project / "seeds" / "content.csv").open("a", encoding="utf-8", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for doc_id, body in (
            ("DOC960", "Gold jackets on offer. <script>steal()</script> Offer ends 2026-12-31."),
            ("DOC961", '=HYPERLINK("http://evil.example","Gold jackets") Offer ends 2026-12-31.'),
        ):
            w.writerow([doc_id, "Gold Winter Jacket Offer", body, "promotion", "gold",
                        "gold jacket offer outdoor gear", "2026-11-01", "2026-12-31"])  # fmt: skip
    fake_providers.use_providers(project, generation={"type": "fake", "script": SCRIPT})
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["build", "-s", "+messages", "--project-dir", str(project)])
    yield {"project": project, "code": code, "err": err.getvalue()}


def test_flagged_documents_are_never_retrieved(built):
    assert built["code"] == 0, built["err"]
    flags = query(
        built["project"],
        "select document_id, markup_flag, formula_flag from stg_content "
        "where document_id in ('DOC960', 'DOC961') order by document_id",
    )
    assert flags.values.tolist() == [["DOC960", True, False], ["DOC961", False, True]]
    retrieved = set(
        query(built["project"], "select document_id from retrieved_content")["document_id"]
    )
    assert retrieved and not retrieved & {"DOC960", "DOC961"}
    clean = query(
        built["project"], "select count(*) as n from stg_content where markup_flag or formula_flag"
    )
    assert clean["n"][0] == 2  # the sample's own documents are not flagged


def test_markup_in_generated_copy_is_blocked_and_messages_are_plain_text(built):
    failed = query(
        built["project"],
        'select "check" from safety_screenings where variant_id = ? and not passed',
        [SCRIPTED],
    )
    assert "policy:markup" in set(failed["check"])
    messages = query(built["project"], "select subject, body from messages")
    assert len(messages) > 0
    for column in ("subject", "body"):
        assert not messages[column].map(lambda t: bool(find_markup(t) or find_formulas(t))).any()


def test_markup_in_customer_data_fails_the_plain_text_test(tmp_path):
    project = copy_sample_project(tmp_path / "p")
    path = project / "seeds" / "customers.csv"
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    for row in rows:  # every customer: whichever message names them carries it
        row["first_name"] = "<img src=x onerror=alert(1)>"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["build", "-s", "+messages", "--project-dir", str(project)])
    assert code == 1
    failed = [line for line in out.getvalue().splitlines() if "FAIL" in line]
    assert any("messages_are_plain_text" in line for line in failed), out.getvalue()[-2000:]
    assert "onerror" not in out.getvalue() + err.getvalue()  # the value itself is not echoed
    assert not (project / "cpo.duckdb").exists()
