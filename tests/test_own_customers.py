"""The README walk-through "Your own customers": a file unlike the sample builds by editing
only cpo.yml (different column names, no names, emails or tier), with rules over its
attributes and with KMeans; exactly one message per customer."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
import yaml

from cpo.engine.project import Project
from tests.sample import copy_sample_project, query

ROOT = Path(__file__).resolve().parent.parent


def write_own_customers(path: Path, rows: int = 600, seed: int = 3) -> None:
    """A shop's export: id, months_since_purchase, spend_last_year, bought_mens,
    bought_womens, area, channel (heavily tied values, like a real export)."""
    con = duckdb.connect()
    con.execute(f"select setseed({seed / 10})")
    con.execute(
        f"""
        copy (
            select
                1000 + i as id,
                (i * 7) % 12 + 1 as months_since_purchase,
                round(29.5 * ((i * 13) % 9), 2) as spend_last_year,
                (i % 3 = 0)::int as bought_mens,
                (i % 2 = 0)::int as bought_womens,
                ['Urban', 'Suburban', 'Rural'][(i % 3) + 1] as area,
                ['Web', 'Phone', 'Multichannel'][((i // 3) % 3) + 1] as channel
            from range({rows}) as t(i)
        ) to '{path}' (header)
        """
    )
    con.close()


def readme_block() -> dict:
    """The cpo.yml changes shown in the README section, parsed from the README itself."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Your own customers", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block, "the README section shows the cpo.yml block"
    return yaml.safe_load(block.group(1))


def own_project(tmp_path: Path, method: str = "rules") -> Path:
    project = copy_sample_project(tmp_path / "own")
    (project / "data").mkdir()
    write_own_customers(project / "data" / "shop_customers.csv")
    config = yaml.safe_load((project / "cpo.yml").read_text(encoding="utf-8"))
    changes = readme_block()
    config["sources"]["customers"] = changes["sources"]["customers"]
    _merge(config["vars"], changes["vars"])
    config["vars"]["segmentation"]["method"] = method
    (project / "cpo.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return project


def _merge(base: dict, changes: dict) -> None:
    """Merge `changes` into `base` as an analyst edits cpo.yml: mappings key by key."""
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "merge_tags":
            _merge(base[key], value)
        else:
            base[key] = value


@pytest.mark.parametrize("method", ["rules", "kmeans"])
def test_own_customers_build_one_message_each(tmp_path, method):
    project = own_project(tmp_path, method)
    run = Project.load(project).build()
    assert run.success, [(r.name, r.message) for r in run.results if r.failed]
    counts = query(
        project,
        "select (select count(*) from messages) as messages, "
        "(select count(distinct customer_id) from messages) as customers, "
        "(select count(*) from stg_customers) as rows",
    ).iloc[0]
    assert counts["messages"] == counts["customers"] == counts["rows"] == 600
    leftover = query(project, "select count(*) as n from messages where body like '%{{%'")
    assert leftover["n"][0] == 0
    columns = set(query(project, "select * from customer_features limit 1").columns)
    assert {"recency_days", "monetary", "r_score", "m_score", "area", "bought_womens"} <= columns
    assert not {"f_score", "tier", "first_name", "engagement_score"} & columns
    if method == "rules":
        segments = dict(
            query(project, "select segment_id, count(*) as n from segments group by 1").values
        )
        womens = query(
            project,
            "select count(*) as n from customer_features "
            "where bought_womens = 1 and recency_days <= 90",
        )["n"][0]
        assert segments["recent_womens"] == womens > 0
        # A dangling greeting never appears: no name, so "Hello," and no "there".
        bodies = query(project, "select body, subject from messages")
        assert not bodies["body"].str.contains("there,").any()
        assert not bodies["subject"].str.contains(r" ,|,:", regex=True).any()
    else:
        names = query(project, "select distinct segment_id, segment_name from segments")
        assert len(names) >= 3
        # Categorical attributes took part: some cluster is described by area or channel.
        profiles = query(project, "select segment_description from segments_kmeans")
        assert profiles["segment_description"].str.contains("area|channel|bought").any()
