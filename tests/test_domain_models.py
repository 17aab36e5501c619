"""The customer, content and segment models, built by the real engine over the committed seeds.

Read-only checks use the session's `sample_build`. Variations (KMeans, duplicate ids, bad
settings, another as_of_date) build a fresh copy of the sample project with only the nodes they
need.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from cpo.adapters.duckdb import Database
from cpo.engine.artifacts import NodeResult
from cpo.engine.logs import hash_id
from cpo.engine.nodes import TEST, Node
from cpo.engine.project import Project
from cpo.engine.results import RunResult
from cpo.errors import ConfigurationError
from tests.sample import copy_sample_project

MODELS = (
    "stg_customers",
    "stg_content",
    "customer_features",
    "segments_rules",
    "segments",
    "segment_profiles",
)
SINGULAR_TESTS = (
    "segments_cover_every_customer_once",
    "segment_profiles_add_up",
    "content_follows_rules",
    "customer_values_are_plausible",
    "features_are_valid",
)
SEGMENT_IDS = {
    "new_customers",
    "champions",
    "loyal",
    "at_risk",
    "hibernating",
    "potential_loyalists",
}
TIERS = {"bronze", "silver", "gold", "platinum"}
KMEANS = {"segmentation": {"method": "kmeans"}}


def build(
    project: Path, select: Sequence[str], variables: dict[str, Any] | None = None
) -> RunResult:
    """Build `select` in `project` with the real engine.

    Tests that also read models outside the selection are left out: the engine attaches a
    singular test to its first ref (one_message_per_customer and
    segments_cover_every_customer_once to stg_customers) and would run it against tables a
    fresh copy does not have yet.
    """
    loaded = Project.load(project, vars=variables)
    graph = loaded.graph()
    nodes, tests = graph.select(list(select))
    partial = [t for t in tests if not set(graph.tests[t].depends_on) <= set(nodes)]
    return loaded.build(select=list(select), exclude=partial)


def by_name(run: RunResult) -> dict[str, NodeResult]:
    return {r.name: r for r in run.results}


def scalar(db: Database, sql: str) -> Any:
    return db.fetch(sql)[1][0][0]


def rows(db: Database, sql: str) -> list[tuple]:
    return db.fetch(sql)[1]


@pytest.fixture(scope="module")
def db(sample_build: Path) -> Iterator[Database]:
    database = Database(sample_build / "cpo.duckdb", read_only=True)
    yield database
    database.close()


@pytest.fixture(scope="module")
def kmeans_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunResult]:
    """A fresh copy with KMeans segments, built up to segment_profiles (do not modify)."""
    project = copy_sample_project(tmp_path_factory.mktemp("kmeans") / "p")
    run = build(project, ["+segment_profiles"], KMEANS)
    assert run.success, [(r.name, r.message) for r in run.results if r.failed]
    return project, run


@pytest.fixture(scope="module")
def kmeans_db(kmeans_build: tuple[Path, RunResult]) -> Iterator[Database]:
    database = Database(kmeans_build[0] / "cpo.duckdb", read_only=True)
    yield database
    database.close()


# -- staging ----------------------------------------------------------------------------------


def test_stg_customers_keeps_every_seed_row(db):
    assert scalar(db, "select count(*) from stg_customers") == scalar(
        db, "select count(*) from customers"
    )


def test_stg_customers_cleans_dirty_values(db):
    # The raw seed really is dirty, so the checks below prove the cleaning.
    assert scalar(db, "select count(*) from customers where tier <> lower(trim(tier))") > 0
    assert {r[0] for r in rows(db, "select distinct tier from stg_customers")} == TIERS
    name = "upper(left(first_name, 1)) || lower(substr(first_name, 2))"
    assert (
        scalar(
            db,
            "select count(*) from stg_customers "
            f"where first_name <> trim(first_name) or first_name <> {name}",
        )
        == 0
    )
    assert (
        scalar(
            db, "select count(*) from stg_customers where city like '% %' and city <> trim(city)"
        )
        == 0
    )
    assert scalar(db, "select count(*) from stg_customers where city = 'Salt Lake City'") > 0
    assert scalar(db, "select count(*) from stg_customers where email <> lower(trim(email))") == 0
    assert scalar(db, "select bool_and(email_is_valid) from stg_customers")
    junk = scalar(
        db,
        "select count(*) from customers c join stg_customers s using (customer_id) "
        "where c.age in ('n/a', '999', '-4', 'unknown', '0') and s.age is not null",
    )
    assert junk == 0
    missing = scalar(db, "select avg((age is null)::int) from stg_customers")
    assert 0.02 < missing < 0.06
    assert scalar(db, "select min(open_rate) >= 0 and max(click_rate) <= 1 from stg_customers")


# -- data tests -------------------------------------------------------------------------------


def sample_tests(project: Path) -> tuple[list[Node], dict[str, str]]:
    """The data tests attached to `MODELS`, and each test's status in the sample build."""
    tests = [n for n in Project.load(project).ls(select=list(MODELS)) if n.resource_type == TEST]
    payload = json.loads((project / "target/run_results.json").read_text(encoding="utf-8"))
    return tests, {r["name"]: r["status"] for r in payload["results"]}


def test_schema_tests_pass(sample_build):
    tests, status = sample_tests(sample_build)
    generic = [t for t in tests if t.test and t.test.kind != "singular"]
    assert {
        "unique_stg_customers_customer_id",
        "unique_segments_customer_id",
        "relationships_segments_customer_id",
        "unique_segment_profiles_segment_id",
    } <= {t.name for t in generic}
    # Error-severity tests must pass; a warn-severity test may also warn.
    allowed = {"error": {"pass"}, "warn": {"pass", "warn"}}
    failures = [
        (t.name, status.get(t.name))
        for t in generic
        if status.get(t.name) not in allowed[t.severity]
    ]
    assert failures == []


def test_singular_tests_pass(sample_build):
    tests, status = sample_tests(sample_build)
    assert set(SINGULAR_TESTS) <= {t.name for t in tests}
    assert {name: status.get(name) for name in SINGULAR_TESTS} == dict.fromkeys(
        SINGULAR_TESTS, "pass"
    )


def test_unique_test_catches_duplicate_customer_ids(tmp_path):
    project = copy_sample_project(tmp_path / "p")
    seed = project / "seeds/customers.csv"
    lines = seed.read_text(encoding="utf-8").splitlines()
    seed.write_text("\n".join([*lines, lines[1]]) + "\n", encoding="utf-8")
    run = build(project, ["+segment_profiles"])
    results = by_name(run)
    assert not run.success and not run.committed
    unique = results["unique_stg_customers_customer_id"]
    assert (unique.status, unique.rows) == ("fail", 1)
    # the duplicated id is named by its salted hash, never as it is (issue 10)
    assert "C000001" not in unique.message
    assert f"#{hash_id('C000001', 'CPO_LOG_SALT', project)}" in unique.message
    for downstream in ("customer_features", "segments_rules", "segments", "segment_profiles"):
        assert results[downstream].status == "skipped", downstream
    assert "unique_stg_customers_customer_id" in results["customer_features"].message
    # A failed build leaves no database behind to read half-built tables from.
    assert not (project / "cpo.duckdb").exists()


# -- features ---------------------------------------------------------------------------------


def test_rfm_scores_are_quintile_bins_that_never_split_ties(db):
    for score, column in (
        ("r_score", "recency_days"),
        ("f_score", "frequency"),
        ("m_score", "monetary"),
    ):
        counts = dict(rows(db, f"select {score}, count(*) from customer_features group by 1"))
        assert set(counts) == {1, 2, 3, 4, 5}
        assert all(500 <= n <= 1500 for n in counts.values()), counts  # about a fifth each
        split = scalar(
            db,
            f"select count(*) from (select {column} from customer_features group by 1 "
            f"having count(distinct {score}) > 1)",
        )
        assert split == 0  # equal values, equal scores
    # Recency: 5 means the most recent buyers.
    assert scalar(
        db,
        "select max(recency_days) filter (where r_score = 5) "
        "<= min(recency_days) filter (where r_score = 1) from customer_features",
    )
    assert scalar(db, "select min(rfm_score) >= 3 and max(rfm_score) <= 15 from customer_features")
    assert scalar(
        db,
        "select min(engagement_score) >= 0 and max(engagement_score) <= 100 from customer_features",
    )


def test_customer_features_hold_no_pii(db):
    columns = set(db.fetch("select * from customer_features limit 0")[0])
    assert not {"email", "first_name", "city"} & columns  # merge tags come from stg_customers
    assert {"customer_id", "tier", "recency_days", "monetary", "rfm_score"} <= columns


# -- segments ---------------------------------------------------------------------------------


def test_segments_cover_every_customer_once(db):
    assert scalar(db, "select count(*) from segments") == scalar(
        db, "select count(*) from stg_customers"
    )
    assert scalar(db, "select count(distinct customer_id) from segments") == scalar(
        db, "select count(*) from segments"
    )
    assert {r[0] for r in rows(db, "select distinct segment_id from segments")} == SEGMENT_IDS


def test_rules_follow_thresholds(db):
    joined = "from segments join customer_features using (customer_id)"
    champions = rows(
        db,
        f"select min(r_score), min(f_score), min(m_score) {joined} where segment_id = 'champions'",
    )[0]
    assert champions == (4, 4, 4)
    assert scalar(db, f"select max(tenure_days) {joined} where segment_id = 'new_customers'") <= 90
    assert (
        scalar(db, f"select max(r_score) {joined} where segment_id in ('at_risk', 'hibernating')")
        <= 2
    )


def test_segment_profiles(db):
    profiles = rows(
        db, "select segment_id, customers, share_of_customers, dominant_tier from segment_profiles"
    )
    assert {r[0] for r in profiles} == SEGMENT_IDS
    assert sum(r[1] for r in profiles) == 5000
    assert abs(sum(r[2] for r in profiles) - 1.0) < 0.01
    assert all(r[3] in TIERS for r in profiles)
    spend = dict(rows(db, "select segment_id, avg_monetary from segment_profiles"))
    assert spend["champions"] > spend["hibernating"]


def test_unknown_method_fails_with_the_key_to_fix(tmp_path):

    project = copy_sample_project(tmp_path / "p")
    # The settings schema refuses it before anything is built.
    with pytest.raises(ConfigurationError) as caught:
        build(project, ["+segments"], {"segmentation": {"method": "dbscan"}})
    assert str(caught.value).startswith(
        "--vars: vars.segmentation.method: expected one of: rules, kmeans; got the string 'dbscan'"
    )


# -- content ----------------------------------------------------------------------------------


def test_injection_docs_are_flagged(db):
    flagged = {r[0] for r in rows(db, "select document_id from stg_content where injection_flag")}
    assert flagged == {"DOC027", "DOC041"}
    bodies = rows(db, "select body from stg_content where document_id in ('DOC027', 'DOC041')")
    assert any("Ignore previous instructions" in b[0] for b in bodies)


def test_expired_and_draft_docs_are_not_active(db):
    state = dict(rows(db, "select document_id, is_active from stg_content"))
    assert len(state) >= 32
    for doc in ("DOC012", "DOC024", "DOC025", "DOC026", "DOC028"):  # 4 expired, 1 draft
        assert state[doc] is False, doc
    assert state["DOC013"] is True  # Winter Sale, ends 2026-12-31
    assert state["DOC029"] is True  # returns policy, no expiry
    assert scalar(db, "select count(*) from stg_content where not is_active") == 5


def test_content_active_follows_as_of_date(tmp_path):
    project = copy_sample_project(tmp_path / "p")
    run = build(project, ["+stg_content"], {"as_of_date": "2027-01-01"})
    assert run.success, [(r.name, r.message) for r in run.results if r.failed]
    database = Database(project / "cpo.duckdb", read_only=True)
    try:
        state = dict(rows(database, "select document_id, is_active from stg_content"))
    finally:
        database.close()
    assert state["DOC013"] is False  # the Winter Sale ended 2026-12-31
    assert state["DOC014"] is True  # free shipping runs to 2027-01-31
    compiled = Project.load(project, vars={"as_of_date": ""}).compile(select=["stg_content"])
    sql = (project / compiled["stg_content"]).read_text(encoding="utf-8")
    assert "current_date" in sql and "2026-11-24" not in sql


# -- KMeans -----------------------------------------------------------------------------------


def test_kmeans_segments_cover_every_customer(kmeans_build, kmeans_db):
    db = kmeans_db
    assert scalar(db, "select count(*) from segments") == 5000
    assert scalar(db, "select count(distinct customer_id) from segments") == 5000
    k = scalar(db, "select count(distinct segment_id) from segments")
    assert 3 <= k <= 8
    ids = [r[0] for r in rows(db, "select distinct segment_id from segments order by 1")]
    assert ids == [f"kmeans_{i:02d}" for i in range(1, k + 1)]
    assert scalar(db, "select count(distinct segment_name) from segments") == k
    # kmeans_01 has the highest average spend.
    top = scalar(db, "select segment_id from segment_profiles order by avg_monetary desc limit 1")
    assert top == "kmeans_01"
    description = scalar(db, "select segment_description from segments_kmeans limit 1")
    assert "customers (" in description and "Average spend $" in description
    # The schema tests of the KMeans path ran in that build and passed.
    results = by_name(kmeans_build[1])
    for name in (
        "unique_segments_kmeans_customer_id",
        "not_null_segments_kmeans_segment_id",
        "unique_segments_customer_id",
        "relationships_segments_customer_id",
        "segments_cover_every_customer_once",
        "unique_segment_profiles_segment_id",
        "segment_profiles_add_up",
    ):
        assert results[name].status == "pass", name
    assert "segments_rules" not in results  # the rules model is not upstream of segments here


@pytest.mark.slow  # two builds of the sample project
def test_kmeans_is_deterministic_and_only_enabled_for_kmeans(sample_build, db, tmp_path):
    # Rules (the sample's setting): the step is disabled, so it is neither listed nor built.
    assert "segments_kmeans" not in {n.name for n in Project.load(sample_build).ls()}
    tables = "select count(*) from duckdb_tables() where table_name = 'segments_kmeans'"
    assert scalar(db, tables) == 0
    project = copy_sample_project(tmp_path / "p")
    variables = {"segmentation": {"method": "kmeans", "k_min": 3, "k_max": 4}}
    assert "segments_kmeans" in {n.name for n in Project.load(project, vars=variables).ls()}
    snapshots = []
    for select in (["+segments_kmeans"], ["segments_kmeans"]):  # the second rebuilds only it
        run = build(project, select, variables)
        assert by_name(run)["segments_kmeans"].status == "success"
        database = Database(project / "cpo.duckdb", read_only=True)
        try:
            snapshots.append(rows(database, "select * from segments_kmeans order by customer_id"))
        finally:
            database.close()
    assert len(snapshots[0]) == 5000
    assert snapshots[0] == snapshots[1]
    assert len({r[1] for r in snapshots[0]}) in (3, 4)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"k_min": 1}, "segmentation.k_min"),
        ({"k_min": 5, "k_max": 4}, "segmentation.k_min"),
        ({"k_max": "eight"}, "segmentation.k_max"),
    ],
    ids=["k_min_below_2", "k_min_above_k_max", "k_max_not_an_integer"],
)
def test_kmeans_rejects_bad_settings(tmp_path, changes, key):
    project = copy_sample_project(tmp_path / "p")
    variables = {"segmentation": {"method": "kmeans", **changes}}
    # The settings schema refuses it when the project loads, before anything is built.
    with pytest.raises(ConfigurationError) as caught:
        build(project, ["+segments"], variables)
    message = str(caught.value)
    assert message.startswith(("--vars: vars.segmentation", "cpo.yml:"))
    assert key in message
    if "k_max" not in changes or "k_min" not in changes:
        assert "expected an integer" in message
    else:
        assert "must be at most" in message
    assert not (project / "cpo.duckdb").exists()
