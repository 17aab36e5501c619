"""The README's promises: set-up commands, generated CLI reference, runnable SQL examples."""

from __future__ import annotations

import re
from pathlib import Path

from cpo.engine.cli import README_END, README_START, reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_shows_the_two_setup_commands():
    text = README.read_text()
    head = text[:2000]
    assert "python runner.py build" in head
    assert "python -m pytest" in head


def test_cli_reference_is_generated_from_the_parser():
    text = README.read_text()
    block = text[text.index(README_START) + len(README_START) : text.index(README_END)]
    assert block.strip() == reference_markdown().strip(), (
        "README CLI reference is stale: run "
        "python -c 'from cpo.engine.cli import update_readme; update_readme()'"
    )


def readme_sql_examples() -> list[str]:
    """The ```sql blocks under 'Querying the results'."""
    text = README.read_text()
    section = text[text.index("## Querying the results") :]
    section = section[: section.index("\n## ", 5)]
    return re.findall(r"```sql\n(.*?)```", section, re.DOTALL)


def test_readme_has_at_least_five_query_examples():
    assert len(readme_sql_examples()) >= 5


def test_readme_queries_run_against_the_sample_build(sample_build):
    from cpo.adapters.duckdb import Database

    db = Database(sample_build / "cpo.duckdb", read_only=True)
    try:
        empty = []
        for sql in readme_sql_examples():
            columns, rows = db.fetch(sql.strip().rstrip(";"))
            assert columns, sql
            if not rows:
                empty.append(sql)
        # The sample may legitimately block nothing; every other example must show data.
        assert all("not passed" in sql for sql in empty), empty
    finally:
        db.close()
