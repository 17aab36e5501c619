"""Issue 11, point 9 (scale): the query shapes that keep a 10,000,000-customer build in memory.

The figures themselves come from ``benchmarks/run.py --customers 10000000 --minimal`` (never
timed asserts here); these tests pin what makes them possible and that nothing is lost for it.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import yaml

from cpo.engine.project import Project
from tests.conftest import copy_built
from tests.sample import copy_sample_project


def _edit(project: Path, change) -> None:
    path = project / "cpo.yml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="module")
def built(sample_build: Path, tmp_path_factory) -> Path:
    """A copy of the session's sample build (each change is rolled back)."""
    return copy_built(sample_build, tmp_path_factory.mktemp("scale") / "p")


def _failures(project: Path, change: str) -> int:
    """Failing rows of one_message_per_customer after `change` (rolled back afterwards)."""
    compiled = Project.load(project).compile()["one_message_per_customer"]
    sql = (project / compiled).read_text(encoding="utf-8")
    con = duckdb.connect(str(project / "cpo.duckdb"))
    try:
        con.execute("begin")
        con.execute(change)
        return con.execute(f"select count(*) from ({sql})").fetchone()[0]
    finally:
        con.execute("rollback")
        con.close()


@pytest.mark.parametrize(
    ("change", "failures"),
    [
        ("select 1", 0),
        # dropped: a customer with a variant has no message
        ("delete from messages where customer_id = (select min(customer_id) from messages)", 1),
        # doubled
        ("insert into messages select * from messages limit 1", 1),
        # customers with no variant (a holdout) got one
        (
            "update assignments set variant_id = null, is_holdout = true "
            "where customer_id in (select customer_id from messages order by 1 limit 2)",
            2,
        ),
        # a customer with no assignment at all got one
        ("insert into messages select 'nobody', 'e', 'a', 'v', 's', 's', 'b'", 1),
    ],
)
def test_one_message_per_customer_catches_every_way_to_get_it_wrong(built, change, failures):
    assert _failures(built, change) == failures


def _compiled_messages(project: Path) -> str:
    compiled = Project.load(project).compile(select=["messages"])["messages"]
    return (project / compiled).read_text(encoding="utf-8")


def test_messages_join_customers_only_when_a_merge_tag_reads_them(tmp_path):
    project = copy_sample_project(tmp_path / "p")
    assert 'join "stg_customers"' in _compiled_messages(project)  # first_name, ...

    def only_customer_id(config):
        tags = config["vars"]["messages"]["merge_tags"]
        config["vars"]["messages"]["merge_tags"] = {"unsubscribe_url": tags["unsubscribe_url"]}

    _edit(project, only_customer_id)
    assert "stg_customers" not in _compiled_messages(project)
