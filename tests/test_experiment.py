"""The experiment layer end to end: events staging, metrics, results, simulation, design help.

Each test copies tests/fixtures/experiment/ and the repository's real experiment files
(models/experiment/, udfs/) into a scratch project and builds it with `Project.build`.
"""

from __future__ import annotations

import csv
import math
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from scipy import stats as sps

from cpo.engine.project import Project
from cpo.errors import ConfigurationError
from cpo.experiments import stats

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "experiment"
STEPS = (
    "_experiment_design.py",
    "observed_events.py",
    "simulated_events.py",
    "experiment_results.py",
    "_experiment_files.py",
    "observed_outcomes.py",
    "external_assignments.py",
)
ARMS = ("control", "urgent", "informational", "friendly")


def make_project(tmp: Path) -> Path:
    """The fixture plus the repository's experiment models and steps."""
    root = tmp / "project"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("*.duckdb", "target", "logs"))
    shutil.copytree(REPO / "models" / "experiment", root / "models" / "experiment")
    (root / "udfs").mkdir()
    for name in STEPS:
        shutil.copy(REPO / "udfs" / name, root / "udfs" / name)
    return root


def build(root: Path, vars: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    result = Project.load(root, vars=vars or {}).build()
    failures = [(r.name, r.message) for r in result.results if r.failed]
    assert result.success, failures
    return duckdb.connect(str(root / "experiment.duckdb"), read_only=True)


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    rel = con.sql(sql)
    return [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def write_csv(path: Path, table: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(table)


def write_assignments(root: Path, n: int, arms: tuple[str, ...] = ARMS) -> None:
    """`n` customers spread evenly over `arms` and three segments, with covariates."""
    assignments = [
        ["experiment_id", "customer_id", "arm", "variant_id", "segment_id", "assigned_at"]
    ]
    customers = [
        ["customer_id", "open_rate", "click_rate", "purchase_frequency", "avg_order_value"]
    ]
    # A balanced random allocation, independent of the covariate (as a salted hash would be).
    allocation = [arms[i % len(arms)] for i in range(n)]
    random.Random(n).shuffle(allocation)
    for i, arm in enumerate(allocation):
        assignments.append(
            ["exp1", f"C{i:06d}", arm, f"v_{arm}", ("a", "b", "c")[i % 3], "2026-11-20 09:00:00"]
        )
        history = ((i * 7927) % 1000) / 2000
        customers.append([f"C{i:06d}", history, history / 5, 1, 50])
    write_csv(root / "seeds" / "assignments.csv", assignments)
    write_csv(root / "seeds" / "stg_customers.csv", customers)


def no_events(root: Path) -> None:
    for path in (root / "seeds").glob("events*.csv"):
        path.unlink()


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    root = make_project(tmp_path_factory.mktemp("experiment"))
    return build(root)


def overall(con: duckdb.DuckDBPyConnection, metric: str, arm: str) -> dict[str, Any]:
    (row,) = rows(
        con,
        f"select * from experiment_results where metric = '{metric}' "
        f"and arm = '{arm}' and segment_id is null",
    )
    return row


# --------------------------------------------------------------------------- stg_events


def test_rejected_rows_are_counted_by_reason(fixture_db: duckdb.DuckDBPyConnection) -> None:
    by_reason = dict(
        fixture_db.sql("select reason, sum(n) from event_rejections group by 1").fetchall()
    )
    assert by_reason == {
        "unknown_event_type": 1,
        "unparseable_timestamp": 1,
        "negative_revenue": 1,
        "unknown_customer": 2,
        "unknown_experiment": 1,
        "outside_attribution_window": 2,
    }
    summary = dict(
        fixture_db.sql("select status, n from event_summary where source = 'observed'").fetchall()
    )
    raw_rows = fixture_db.sql("select count(*) from observed_events").fetchone()[0]
    assert sum(summary.values()) == raw_rows  # every raw row is accounted for
    assert summary["unknown_customer"] == 2


def test_duplicates_collapse_and_stg_events_is_clean(
    fixture_db: duckdb.DuckDBPyConnection,
) -> None:
    total, distinct = fixture_db.sql(
        "select count(*), count(distinct (customer_id, experiment_id, event, event_at, revenue))"
        " from stg_events"
    ).fetchone()
    assert total == distinct
    # events.csv repeats 3 rows; events_2.csv re-exports 10 rows with ISO 'Z' timestamps.
    summary = dict(fixture_db.sql("select status, n from event_summary").fetchall())
    assert summary["duplicate"] == 13
    assert total == summary["accepted"]
    outside = fixture_db.sql("""
        select count(*) from stg_events e join assignments a using (customer_id)
        where e.event_at < a.assigned_at or e.event_at >= a.assigned_at + interval 7 day
           or e.revenue < 0
           or e.event not in ('delivered', 'open', 'click', 'conversion', 'unsubscribe')
    """).fetchone()[0]
    assert outside == 0
    assert (
        fixture_db.sql(
            "select count(*) from stg_events where customer_id not in "
            "(select customer_id from assignments)"
        ).fetchone()[0]
        == 0
    )
    # Observed events exist, so the simulation (enabled: auto) stays off.
    assert fixture_db.sql("select count(*) from simulated_events").fetchone()[0] == 0
    assert set(fixture_db.sql("select distinct source from stg_events").fetchall()) == {
        ("observed",)
    }


def test_attribution_window_is_configurable(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    con = build(root, {"experiment": {"attribution_days": 20}})
    late = con.sql(
        "select count(*) from stg_events where event_at = timestamp '2026-12-05 12:00:00'"
    ).fetchone()[0]
    assert late == 1  # the 15-day-late open is inside a 20-day window
    assert (
        con.sql(
            "select sum(n) from event_rejections where reason = 'outside_attribution_window'"
        ).fetchone()[0]
        == 1
    )


# --------------------------------------------------------------------------- metrics and results


def per_customer(
    con: duckdb.DuckDBPyConnection, arm: str, expression: str, covariate: str = "0"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer metric values recomputed from stg_events and assignments, independently."""
    data = con.sql(f"""
        select
            coalesce((select {expression} from stg_events e
                      where e.customer_id = a.customer_id and e.experiment_id = a.experiment_id),
                     0)::double as y,
            coalesce((select {covariate} from stg_customers c
                      where c.customer_id = a.customer_id), 0)::double as x
        from assignments a where a.arm = '{arm}'
    """).fetchnumpy()
    return data["y"], data["x"]


def test_open_rate_recomputed_by_hand(fixture_db: duckdb.DuckDBPyConnection) -> None:
    expr = "max(case when event = 'open' then 1 else 0 end)"
    yc, _ = per_customer(fixture_db, "control", expr)
    yt, _ = per_customer(fixture_db, "urgent", expr)
    nc, nt, pc, pt = yc.size, yt.size, yc.mean(), yt.mean()
    # The two-proportion z test of the difference; the relative lift is the ratio of means
    # with Fieller's interval at the same z.
    vt, vc = pt * (1 - pt) / nt, pc * (1 - pc) / nc
    p_value = 2 * sps.norm.sf(abs(pt - pc) / math.sqrt(vt + vc))
    estimate = pt / pc - 1
    z = sps.norm.isf(0.025)
    a, b, c = pc * pc - z * z * vc, pt * pc, pt * pt - z * z * vt
    root = math.sqrt(b * b - a * c)
    ci = (max((b - root) / a - 1, -1.0), (b + root) / a - 1)
    row = overall(fixture_db, "open_rate", "urgent")
    assert (row["n_control"], row["n_treatment"]) == (nc, nt) == (100, 100)
    assert row["control_mean"] == pytest.approx(pc)
    assert row["treatment_mean"] == pytest.approx(pt)
    assert row["absolute_effect"] == pytest.approx(pt - pc)
    assert row["estimate"] == pytest.approx(estimate)
    assert row["p_value"] == pytest.approx(p_value)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(ci)
    assert row["method"] == "z-test" and row["cuped"] is False


def test_cuped_ratio_and_corrections_recomputed(fixture_db: duckdb.DuckDBPyConnection) -> None:
    revenue = "sum(case when event = 'conversion' then revenue else 0 end)"
    yc, xc = per_customer(fixture_db, "control", revenue, "avg_order_value")
    yt, xt = per_customer(fixture_db, "friendly", revenue, "avg_order_value")
    adjusted = stats.cuped_adjust(yc, xc, yt, xt)
    expected = stats.frequentist_test(adjusted.control, adjusted.treatment)
    row = overall(fixture_db, "revenue_per_customer", "friendly")
    assert row["cuped"] is True and row["method"] == "welch-t+cuped"
    assert row["estimate"] == pytest.approx(expected.estimate)
    assert row["p_value"] == pytest.approx(expected.p_value)

    clicks, opens = (
        "count(*) filter (where event = 'click')",
        "count(*) filter (where event = 'open')",
    )
    num_c, _ = per_customer(fixture_db, "control", clicks)
    den_c, _ = per_customer(fixture_db, "control", opens)
    num_t, _ = per_customer(fixture_db, "informational", clicks)
    den_t, _ = per_customer(fixture_db, "informational", opens)
    ratio = stats.frequentist_test(stats.ratio_stats(num_c, den_c), stats.ratio_stats(num_t, den_t))
    row = overall(fixture_db, "clicks_per_open", "informational")
    assert row["estimate"] == pytest.approx(ratio.estimate)
    assert row["ci_low"] == pytest.approx(ratio.ci_low)
    assert row["p_value"] == pytest.approx(ratio.p_value)

    results = rows(
        fixture_db, "select * from experiment_results where segment_id is null order by arm, metric"
    )
    assert len(results) == 3 * 5
    # Each family is corrected on its own: primary (arms x primary metrics), secondary (arms x
    # secondary metrics); guardrails are one-sided for harm and not adjusted.
    for family in ("primary", "secondary"):
        chosen = [r for r in results if r["metric_role"] == family]
        holm = stats.adjust_pvalues([r["p_value"] for r in chosen], "holm")
        assert [r["p_value_adjusted"] for r in chosen] == pytest.approx(holm)
    for r in results:
        if r["metric_role"] == "guardrail":
            assert r["p_value_adjusted"] == r["p_value"] and r["alternative"].startswith("one")
        if r["metric_role"] == "secondary":
            assert r["decision"] == "info"
    srm = sps.chisquare([100, 100, 100, 100]).pvalue
    assert [r["srm_p_value"] for r in results] == pytest.approx([srm] * len(results))
    segments = {
        r[0]
        for r in fixture_db.sql(
            "select distinct segment_id from experiment_results where segment_id is not null"
        ).fetchall()
    }
    assert segments == {"loyal", "new"}


def test_absolute_mean_matches_scipy_welch(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    metric = {
        "name": "revenue",
        "type": "mean",
        "role": "primary",
        "event": "conversion",
        "value": "revenue",
    }
    con = build(root, {"experiment": {"effect": "absolute", "metrics": [metric]}})
    revenue = "sum(case when event = 'conversion' then revenue else 0 end)"
    yc, _ = per_customer(con, "control", revenue)
    yt, _ = per_customer(con, "urgent", revenue)
    welch = sps.ttest_ind(yt, yc, equal_var=False)
    row = overall(con, "revenue", "urgent")
    assert row["estimate"] == pytest.approx(yt.mean() - yc.mean())
    assert row["p_value"] == pytest.approx(welch.pvalue)
    assert row["effect_scale"] == "absolute"
    # The sums in experiment_metrics are the plain per-customer sums.
    (m,) = rows(con, "select * from experiment_metrics where arm = 'urgent' and level = 'overall'")
    assert (m["n"], m["sum"], m["sum_squares"]) == pytest.approx((yt.size, yt.sum(), (yt**2).sum()))


# --------------------------------------------------------------------------- bad input


def test_no_events_zero_arm_single_segment_are_inconclusive(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    no_events(root)
    table = read_csv(root / "seeds" / "assignments.csv")
    kept = [table[0]] + [[*r[:4], "only", *r[5:]] for r in table[1:] if r[2] != "friendly"]
    write_csv(root / "seeds" / "assignments.csv", kept)
    con = build(root, {"experiment": {"simulation": {"enabled": False}}})
    assert con.sql("select count(*) from stg_events").fetchone()[0] == 0
    assert con.sql("select count(*) from simulated_events").fetchone()[0] == 0
    results = rows(con, "select * from experiment_results")
    assert {r["decision"] for r in results if r["metric_role"] == "primary"} == {"inconclusive"}
    assert {r["segment_id"] for r in results} == {None, "only"}
    friendly = [r for r in results if r["arm"] == "friendly"]
    assert friendly and all(
        "no customers assigned to arm 'friendly'" in r["decision_reason"] for r in friendly
    )
    open_rate = overall(con, "open_rate", "urgent")
    assert "under-powered" in open_rate["decision_reason"]
    assert open_rate["estimate"] is None and open_rate["absolute_effect"] == 0
    # SRM ignores the empty arm: the three others are balanced.
    assert open_rate["srm_p_value"] == pytest.approx(1.0)


def test_all_zero_control_is_still_tested_on_the_difference(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    table = read_csv(root / "seeds" / "assignments.csv")
    control = {r[1] for r in table[1:] if r[2] == "control"}
    for path in (root / "seeds").glob("events*.csv"):
        events = read_csv(path)
        write_csv(path, [r for r in events if not (r[0] in control and r[2] == "open")])
    con = build(root)
    for arm in ("urgent", "informational", "friendly"):
        row = overall(con, "open_rate", arm)
        assert row["control_mean"] == 0
        # The relative lift is undefined, but the test of the difference is not.
        assert row["estimate"] is None and row["absolute_effect"] > 0
        assert row["p_value"] < 1e-6
        assert row["decision"] == "ship", row["decision_reason"]


def test_sample_ratio_mismatch_is_invalid(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    table = read_csv(root / "seeds" / "assignments.csv")
    urgent = [r for r in table[1:] if r[2] == "urgent"]
    dropped = {r[1] for r in urgent[: len(urgent) * 3 // 5]}
    write_csv(root / "seeds" / "assignments.csv", [r for r in table if r[1] not in dropped])
    con = build(root)
    overall_rows = rows(con, "select * from experiment_results where segment_id is null")
    assert all(r["srm_p_value"] < 0.001 for r in overall_rows)
    assert {r["decision"] for r in overall_rows} == {"invalid"}
    assert "sample ratio mismatch" in overall_rows[0]["decision_reason"]
    # Every result, segment rows included, is invalid.
    assert {r["decision"] for r in rows(con, "select * from experiment_results")} == {"invalid"}


def test_bad_metric_setting_names_the_key(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    bad = [{"name": "open_rate", "type": "proportion", "event": "opened"}]
    # The one settings schema refuses it when the project loads, before anything is built.
    with pytest.raises(ConfigurationError) as caught:
        Project.load(root, vars={"experiment": {"metrics": bad}}).build()
    message = str(caught.value)
    assert message.startswith("--vars: vars.experiment.metrics[0].event")
    assert "got the string 'opened'" in message
    assert "expected one of: delivered, open, click, conversion, unsubscribe" in message
    assert not (root / "experiment.duckdb").exists()


# --------------------------------------------------------------------------- simulation


SIMULATION = {
    "enabled": True,
    "seed": 5,
    "covariate": "open_rate",
    "covariate_strength": 0.8,
    "rates": {
        "default": {
            "delivered": 0.98,
            "open": 0.22,
            "click": 0.25,
            "conversion": 0.12,
            "unsubscribe": 0.004,
            "revenue_mean": 65.0,
        },
        "urgent": {"open": 0.264, "unsubscribe": 0.02},
        "informational": {},
        "friendly": {"open": 0.286},
    },
}


def test_simulation_recovers_the_truth_and_decides(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    no_events(root)
    write_assignments(root, 40_000)
    metrics = [
        {
            "name": "open_rate",
            "type": "proportion",
            "role": "primary",
            "event": "open",
            "mde": 0.15,
        },
        {
            "name": "open_rate_cuped",
            "type": "proportion",
            "role": "secondary",
            "event": "open",
            "covariate": "open_rate",
            "mde": 0.15,
        },
        {
            "name": "unsubscribe_rate",
            "type": "proportion",
            "role": "guardrail",
            "event": "unsubscribe",
            "direction": "decrease",
            "mde": 0.5,
        },
    ]
    con = build(root, {"experiment": {"simulation": SIMULATION, "metrics": metrics}})
    assert set(con.sql("select distinct source from stg_events").fetchall()) == {("simulated",)}
    truth = {"urgent": 0.264 / 0.22 - 1, "informational": 0.0, "friendly": 0.286 / 0.22 - 1}
    for arm, lift in truth.items():
        for metric in ("open_rate", "open_rate_cuped"):
            row = overall(con, metric, arm)
            assert row["ci_low"] < lift < row["ci_high"], (arm, metric, row)
        plain, adjusted = overall(con, "open_rate", arm), overall(con, "open_rate_cuped", arm)
        assert adjusted["ci_high"] - adjusted["ci_low"] < plain["ci_high"] - plain["ci_low"]
    # urgent lifts opens but its unsubscribe guardrail is significantly worse: never ship.
    # Simulated outcomes never decide; evidence_decision keeps what the data would support.
    results = rows(con, "select * from experiment_results")
    assert {r["decision"] for r in results} == {"simulated"}
    urgent = overall(con, "open_rate", "urgent")
    assert urgent["evidence_decision"] == "no_ship"
    assert "guardrail unsubscribe_rate" in urgent["decision_reason"]
    friendly = overall(con, "open_rate", "friendly")
    assert friendly["evidence_decision"] == "ship", friendly["decision_reason"]
    assert friendly["power"] >= 0.8 and friendly["chance_to_win"] > 0.99
    informational = overall(con, "open_rate", "informational")
    assert informational["evidence_decision"] in ("no_ship", "inconclusive")
    guardrail = overall(con, "unsubscribe_rate", "urgent")
    assert guardrail["evidence_decision"] == "no_ship" and guardrail["chance_to_win"] < 0.01
    # The segment policy never picks a winner on simulated outcomes.
    policy = rows(con, "select * from segment_policy")
    assert policy and {p["basis"] for p in policy} == {"simulated"}
    assert {p["send_arm"] for p in policy} == {"control"}


def test_simulation_is_deterministic(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    no_events(root)
    write_assignments(root, 3_000)
    vars = {"experiment": {"simulation": SIMULATION}}
    first = build(root, vars).sql("select * from simulated_events order by all").fetchall()
    second = build(root, vars).sql("select * from simulated_events order by all").fetchall()
    assert first == second and len(first) > 3_000


# --------------------------------------------------------------------------- design help


def test_design_table_matches_the_planning_formula() -> None:
    sys.path.insert(0, str(REPO / "udfs"))
    try:
        from _experiment_design import ExperimentVars, design_table, experiment_config
    finally:
        sys.path.remove(str(REPO / "udfs"))
    settings = ExperimentVars.model_validate(
        {
            "arms": [
                {"name": "control", "weight": 2},
                {"name": "urgent", "weight": 1},
                {"name": "friendly", "weight": 1},
            ],
            "metrics": [
                {
                    "name": "open_rate",
                    "type": "proportion",
                    "event": "open",
                    "baseline": 0.2,
                    "mde": 0.1,
                },
                {"name": "revenue", "type": "mean", "event": "conversion"},
            ],
        }
    )
    table = design_table(experiment_config(settings), n_customers=40_000)
    assert [(r.arm, r.metric) for r in table] == [
        ("urgent", "open_rate"),
        ("friendly", "open_rate"),
    ]
    row = table[0]
    assert row.alpha_per_test == pytest.approx(0.05 / 4)  # 2 arms x 2 secondary metrics
    assert row.n_required_per_arm == pytest.approx(
        stats.sample_size_per_arm(0.2, 0.02, 0.0125, 0.8)
    )
    assert (row.n_control, row.n_treatment) == (20_000, 10_000)
    n_eff = 2 / (1 / 20_000 + 1 / 10_000)
    assert row.mde_reachable_relative == pytest.approx(stats.mde(0.2, n_eff, 0.0125) / 0.2)
    assert row.power_at_mde == pytest.approx(stats.power(0.2, 0.02, n_eff, 0.0125))
