"""`plan`: what a build would call and cost, with nothing called, written or paid."""

from __future__ import annotations

import sqlite3

from cpo.engine.cli import main
from cpo.engine.project import Project
from tests.sample import copy_sample_project


def cached_entries(project_dir) -> int:
    path = project_dir / ".cpo" / "cache.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as con:
        return con.execute("select count(*) from cache").fetchone()[0]


def test_plan_counts_every_uncached_call_and_writes_nothing(tmp_path):
    project_dir = copy_sample_project(tmp_path / "p")
    plan = Project.load(project_dir).plan()
    assert plan.run.success
    steps = {row["step"]: row["calls"] for row in plan.by_step()}
    segments = len({c.item_key for c in plan.calls if c.step == "retrieved_content"}) - 1
    assert segments >= 3
    assert steps["variants"] == segments * 3  # three tones per segment; the control is written
    assert steps["safety_screenings"] == steps["variants"] + 1  # ... and screened like any
    assert not (project_dir / "cpo.duckdb").exists()
    assert cached_entries(project_dir) == 0


def test_plan_after_a_build_finds_nothing_to_call(built_sample, capsys):
    project_dir = built_sample
    before = (project_dir / "cpo.duckdb").read_bytes()
    assert main(["plan", "--project-dir", str(project_dir)]) == 0
    out = capsys.readouterr().out
    # The one CLI check of the printed table; plans are otherwise tested through Project.plan.
    assert "Planned provider calls, target 'offline' (cache hits excluded)" in out
    assert "step" in out and "cost (USD)" in out
    assert "0 call(s), estimated $0.0000" in out
    assert (project_dir / "cpo.duckdb").read_bytes() == before


def test_plan_prints_the_experiment_design_from_the_project_hook(tmp_path):
    from cpo.experiments import stats

    project_dir = copy_sample_project(tmp_path / "p")
    plan = Project.load(project_dir).plan()
    titles = [title for title, _ in plan.tables]
    assert any(t.startswith("Experiment design (5,000 customers") for t in titles)
    rows = dict(plan.tables)[titles[0]]
    open_rate = next(r for r in rows if r["metric"] == "open_rate" and r["arm"] == "urgent")
    # Primary family: alpha split over 3 treatment arms x 1 primary metric (Bonferroni bound).
    expected = stats.sample_size_per_arm(0.2, 0.02, alpha=0.05 / 3, power=0.8)
    assert open_rate["needed per arm"] == int(-(-expected // 1))
