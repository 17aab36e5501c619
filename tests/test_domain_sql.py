"""The customer, content and segment models over the committed seeds, in a real DuckDB.

The models are rendered with a small stand-in for the engine's Jinja (``ref`` -> quoted table
name, ``var`` -> the dotted lookup below, ``config`` -> nothing) and materialised in DAG order,
so these tests do not depend on the engine. Generic tests from the ``schema.yml`` files and the
singular tests in ``data_tests/`` are run the way the engine compiles them.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cpo.errors import ConfigurationError  # noqa: E402

# The vars block handed to the lead for cpo.yml (/tmp/vars_foundation.yml).
VARS: dict[str, Any] = {
    "as_of_date": "2026-11-24",
    "segmentation": {
        "method": "rules",
        "k_min": 3,
        "k_max": 8,
        "seed": 42,
        "sample_size": 20000,
        "rules": {
            "new_customer_max_tenure_days": 90,
            "champions": {"min_r": 4, "min_f": 4, "min_m": 4},
            "loyal": {"min_f": 4, "min_r": 3},
            "at_risk": {"max_r": 2, "min_f": 3, "min_m": 3},
            "hibernating": {"max_r": 2},
        },
    },
}
MODELS = (
    "staging/stg_customers",
    "staging/stg_content",
    "features/customer_features",
    "segments/segments_rules",
    "segments/segments",
    "segments/segment_profiles",
)
SINGULAR_TESTS = (
    "segments_cover_every_customer_once",
    "segment_profiles_add_up",
    "active_promotions_state_a_deadline",
)
SEGMENT_IDS = {
    "new_customers",
    "champions",
    "loyal",
    "at_risk",
    "hibernating",
    "potential_loyalists",
}
_MISSING = object()


def lookup(values: dict[str, Any], dotted: str, default: Any = _MISSING) -> Any:
    """``var('a.b')``: a dotted path into the vars mapping."""
    current: Any = values
    for part in dotted.split("."):
        if not isinstance(current, dict) or part not in current:
            if default is _MISSING:
                raise KeyError(dotted)
            return default
        current = current[part]
    return current


def render(path: Path, variables: dict[str, Any]) -> str:
    """Render a model or test file with the stand-in Jinja functions."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return env.from_string(path.read_text(encoding="utf-8")).render(
        ref=lambda name: f'"{name}"',
        var=lambda name, default=_MISSING: lookup(variables, name, default),
        config=lambda **_: "",
    )


class FakeContext:
    """The part of the engine's step ``ctx`` that segments_kmeans uses."""

    def __init__(self, con: duckdb.DuckDBPyConnection, variables: dict[str, Any]) -> None:
        self.con = con
        self.variables = variables
        self.log = logging.getLogger("test_domain_sql")

    def ref(self, name: str) -> duckdb.DuckDBPyRelation:
        return self.con.sql(f'select * from "{name}"')

    def var(self, name: str, default: Any = _MISSING) -> Any:
        return lookup(self.variables, name, default)


def load_kmeans() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "segments_kmeans", ROOT / "udfs/segments_kmeans.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_seeds(con: duckdb.DuckDBPyConnection, customers: Path | None = None) -> None:
    for name, path in (
        ("customers", customers or ROOT / "seeds/customers.csv"),
        ("content", ROOT / "seeds/content.csv"),
    ):
        con.execute(
            f"create or replace table {name} as "
            f"select * from read_csv('{path}', all_varchar = true, header = true)"
        )


def build(con: duckdb.DuckDBPyConnection, variables: dict[str, Any]) -> None:
    """Materialise the models in order (running the KMeans step first when it is enabled)."""
    kmeans = load_kmeans()
    ctx = FakeContext(con, variables)
    for model in MODELS:
        name = Path(model).name
        if name == "segments" and kmeans.config(ctx)["enabled"]:
            frame = kmeans.model(ctx)
            con.register("segments_kmeans_df", frame)
            con.execute(
                "create or replace table segments_kmeans as select * from segments_kmeans_df"
            )
            con.unregister("segments_kmeans_df")
        sql = render(ROOT / "models" / f"{model}.sql", variables)
        con.execute(f'create or replace table "{name}" as {sql}')


def generic_test_sql(model: str, column: str, kind: str, args: dict[str, Any]) -> str:
    """The failing-rows query of a schema.yml test, as cpo/compile.py writes it."""
    col = f'"{column}"'
    if kind == "unique":
        return f'select {col} from "{model}" where {col} is not null group by 1 having count(*) > 1'
    if kind == "not_null":
        return f'select * from "{model}" where {col} is null'
    if kind == "accepted_values":
        values = ", ".join("'" + str(v).replace("'", "''") + "'" for v in args["values"])
        return (
            f'select {col} from "{model}" '
            f"where {col} is not null and {col}::varchar not in ({values})"
        )
    if kind == "relationships":
        parent = args["to"].split("'")[1]
        field = f'"{args["field"]}"'
        return (
            f'select child.{col} from "{model}" as child left join "{parent}" as parent '
            f"on child.{col} = parent.{field} "
            f"where child.{col} is not null and parent.{field} is null"
        )
    raise AssertionError(kind)


def generic_tests(models: set[str]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    for path in sorted((ROOT / "models").rglob("schema.yml")):
        for entry in yaml.safe_load(path.read_text(encoding="utf-8"))["models"]:
            if entry["name"] not in models:
                continue
            for column in entry.get("columns", []):
                for spec in column.get("tests", []):
                    kind, args = (spec, {}) if isinstance(spec, str) else next(iter(spec.items()))
                    args = dict(args)
                    severity = (args.pop("config", None) or {}).get("severity", "error")
                    if severity == "error":
                        yield entry["name"], column["name"], kind, args


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    load_seeds(connection)
    build(connection, VARS)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def kmeans_con() -> Iterator[duckdb.DuckDBPyConnection]:
    variables = copy.deepcopy(VARS)
    variables["segmentation"]["method"] = "kmeans"
    connection = duckdb.connect()
    load_seeds(connection)
    build(connection, variables)
    yield connection
    connection.close()


def scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    return con.execute(sql).fetchone()[0]


def test_stg_customers_keeps_every_seed_row(con):
    assert scalar(con, "select count(*) from stg_customers") == scalar(
        con, "select count(*) from customers"
    )


def test_stg_customers_cleans_dirty_values(con):
    assert scalar(con, "select count(*) from customers where tier <> lower(trim(tier))") > 0
    assert {r[0] for r in con.execute("select distinct tier from stg_customers").fetchall()} == {
        "bronze",
        "silver",
        "gold",
        "platinum",
    }
    messy = "select count(*) from stg_customers where {c} <> trim({c}) or {c} <> {f}"
    assert (
        scalar(
            con,
            messy.format(
                c="first_name", f="upper(left(first_name, 1)) || lower(substr(first_name, 2))"
            ),
        )
        == 0
    )
    assert (
        scalar(
            con, "select count(*) from stg_customers where city like '% %' and city <> trim(city)"
        )
        == 0
    )
    assert scalar(con, "select count(*) from stg_customers where city = 'Salt Lake City'") > 0
    assert scalar(con, "select count(*) from stg_customers where email <> lower(trim(email))") == 0
    assert scalar(con, "select bool_and(email_is_valid) from stg_customers")
    junk = scalar(
        con,
        "select count(*) from customers c join stg_customers s using (customer_id) "
        "where c.age in ('n/a', '999', '-4', 'unknown', '0') and s.age is not null",
    )
    assert junk == 0
    missing = scalar(con, "select avg((age is null)::int) from stg_customers")
    assert 0.02 < missing < 0.06
    assert scalar(con, "select min(open_rate) >= 0 and max(click_rate) <= 1 from stg_customers")


def test_schema_tests_pass(con):
    failures = [
        (model, column, kind)
        for model, column, kind, args in generic_tests({Path(m).name for m in MODELS})
        if con.execute(generic_test_sql(model, column, kind, args)).fetchall()
    ]
    assert failures == []


def test_singular_tests_pass(con):
    for name in SINGULAR_TESTS:
        path = ROOT / "data_tests" / f"{name}.sql"
        assert con.execute(render(path, VARS)).fetchall() == [], path.name


def test_unique_test_catches_duplicate_customer_ids(tmp_path):
    lines = (ROOT / "seeds/customers.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "customers.csv").write_text("\n".join([*lines, lines[1]]) + "\n", encoding="utf-8")
    connection = duckdb.connect()
    load_seeds(connection, tmp_path / "customers.csv")
    connection.execute(
        f"create table stg_customers as {render(ROOT / 'models/staging/stg_customers.sql', VARS)}"
    )
    assert connection.execute(
        generic_test_sql("stg_customers", "customer_id", "unique", {})
    ).fetchall() == [("C000001",)]


def test_rfm_scores_are_balanced_quintiles(con):
    for score in ("r_score", "f_score", "m_score"):
        counts = dict(
            con.execute(f"select {score}, count(*) from customer_features group by 1").fetchall()
        )
        assert set(counts) == {1, 2, 3, 4, 5}
        assert max(counts.values()) - min(counts.values()) <= 1
    # Recency: 5 means the most recent buyers.
    assert scalar(
        con,
        "select max(recency_days) filter (where r_score = 5) "
        "<= min(recency_days) filter (where r_score = 1) from customer_features",
    )
    assert scalar(con, "select min(rfm_score) >= 3 and max(rfm_score) <= 15 from customer_features")
    assert scalar(
        con,
        "select min(engagement_score) >= 0 and max(engagement_score) <= 100 from customer_features",
    )


def test_customer_features_has_no_email(con):
    columns = {r[0] for r in con.execute("describe customer_features").fetchall()}
    assert "email" not in columns
    assert {"customer_id", "first_name", "tier", "recency_days", "monetary", "rfm_score"} <= columns


def test_segments_cover_every_customer_once(con):
    assert scalar(con, "select count(*) from segments") == scalar(
        con, "select count(*) from stg_customers"
    )
    assert scalar(con, "select count(distinct customer_id) from segments") == scalar(
        con, "select count(*) from segments"
    )
    found = {r[0] for r in con.execute("select distinct segment_id from segments").fetchall()}
    assert found == SEGMENT_IDS


def test_rules_follow_thresholds(con):
    champions = con.execute(
        "select min(r_score), min(f_score), min(m_score) from segments join customer_features "
        "using (customer_id) where segment_id = 'champions'"
    ).fetchone()
    assert champions == (4, 4, 4)
    assert (
        scalar(
            con,
            "select max(tenure_days) from segments join customer_features using (customer_id) "
            "where segment_id = 'new_customers'",
        )
        <= 90
    )
    assert (
        scalar(
            con,
            "select max(r_score) from segments join customer_features using (customer_id) "
            "where segment_id in ('at_risk', 'hibernating')",
        )
        <= 2
    )


def test_segment_profiles(con):
    rows = con.execute(
        "select segment_id, customers, share_of_customers, dominant_tier from segment_profiles"
    ).fetchall()
    assert {r[0] for r in rows} == SEGMENT_IDS
    assert sum(r[1] for r in rows) == 5000
    assert abs(sum(r[2] for r in rows) - 1.0) < 0.01
    assert all(r[3] in {"bronze", "silver", "gold", "platinum"} for r in rows)
    profile = dict(con.execute("select segment_id, avg_monetary from segment_profiles").fetchall())
    assert profile["champions"] > profile["hibernating"]


def test_injection_docs_are_flagged(con):
    flagged = {
        r[0]
        for r in con.execute("select document_id from stg_content where injection_flag").fetchall()
    }
    assert flagged == {"DOC027", "DOC041"}
    bodies = con.execute(
        "select body from stg_content where document_id in ('DOC027', 'DOC041')"
    ).fetchall()
    assert any("Ignore previous instructions" in b[0] for b in bodies)


def test_expired_and_draft_docs_are_not_active(con):
    state = dict(con.execute("select document_id, is_active from stg_content").fetchall())
    assert len(state) >= 32
    for doc in ("DOC012", "DOC024", "DOC025", "DOC026", "DOC028"):  # 4 expired, 1 draft
        assert state[doc] is False, doc
    assert state["DOC013"] is True  # Winter Sale, ends 2026-12-31
    assert state["DOC029"] is True  # returns policy, no expiry
    assert scalar(con, "select count(*) from stg_content where not is_active") == 5


def test_content_active_follows_as_of_date():
    variables = {**VARS, "as_of_date": "2027-01-01"}
    connection = duckdb.connect()
    load_seeds(connection)
    sql = render(ROOT / "models/staging/stg_content.sql", variables)
    state = dict(connection.execute(f"select document_id, is_active from ({sql})").fetchall())
    assert state["DOC013"] is False  # the Winter Sale ended 2026-12-31
    assert state["DOC014"] is True  # free shipping runs to 2027-01-31
    assert "current_date" in render(
        ROOT / "models/staging/stg_content.sql", {**VARS, "as_of_date": ""}
    )


def test_unknown_method_fails_with_the_key_to_fix(con):
    variables = copy.deepcopy(VARS)
    variables["segmentation"]["method"] = "dbscan"
    sql = render(ROOT / "models/segments/segments.sql", variables)
    with pytest.raises(duckdb.Error, match=r"vars\.segmentation\.method is dbscan"):
        con.execute(sql).fetchall()


def test_kmeans_segments_cover_every_customer(kmeans_con):
    con = kmeans_con
    assert scalar(con, "select count(*) from segments") == 5000
    assert scalar(con, "select count(distinct customer_id) from segments") == 5000
    k = scalar(con, "select count(distinct segment_id) from segments")
    assert 3 <= k <= 8
    ids = [
        r[0] for r in con.execute("select distinct segment_id from segments order by 1").fetchall()
    ]
    assert ids == [f"kmeans_{i:02d}" for i in range(1, k + 1)]
    assert scalar(con, "select count(distinct segment_name) from segments") == k
    # kmeans_01 has the highest average spend.
    spend = con.execute(
        "select segment_id from segment_profiles order by avg_monetary desc limit 1"
    ).fetchone()[0]
    assert spend == "kmeans_01"
    failures = [
        (m, c, kind)
        for m, c, kind, args in generic_tests({"segments", "segments_kmeans", "segment_profiles"})
        if con.execute(generic_test_sql(m, c, kind, args)).fetchall()
    ]
    assert failures == []
    description = scalar(con, "select segment_description from segments_kmeans limit 1")
    assert "customers (" in description and "Average spend $" in description


def test_kmeans_is_deterministic_and_only_enabled_for_kmeans(kmeans_con):
    module = load_kmeans()
    ctx = FakeContext(kmeans_con, VARS)
    assert module.config(ctx)["enabled"] is False
    variables = copy.deepcopy(VARS)
    variables["segmentation"].update(method="kmeans", k_min=3, k_max=4)
    ctx = FakeContext(kmeans_con, variables)
    assert module.config(ctx)["enabled"] is True
    first, second = module.model(ctx), module.model(ctx)
    assert first.equals(second)
    assert first["segment_id"].nunique() in (3, 4)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"k_min": 1}, "vars.segmentation.k_min"),
        ({"k_min": 5, "k_max": 4}, "vars.segmentation.k_min"),
        ({"k_max": "eight"}, "vars.segmentation.k_max"),
    ],
)
def test_kmeans_rejects_bad_settings(con, changes, key):
    variables = copy.deepcopy(VARS)
    variables["segmentation"].update(method="kmeans", **changes)
    with pytest.raises(ConfigurationError) as info:
        load_kmeans().model(FakeContext(con, variables))
    assert info.value.key == key
    assert info.value.path == "cpo.yml"
