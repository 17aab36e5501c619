"""README "Analyse an experiment you ran elsewhere", run on generated data with known effects.

A 3-arm experiment (a no-email holdout as control, two e-mail arms) assigned outside CPO, with
per-customer outcomes and no timestamps. The sample project is copied, its ``vars.experiment``
block replaced by the README's, and only ``+experiment_results segment_policy`` is built.
Estimates are checked against the ratio of means, p-values against scipy's Welch and z tests,
CUPED against statsmodels OLS ``y ~ arm + covariate``; decisions against the known truth.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from cpo.engine.cli import main
from cpo.engine.project import Project
from tests.sample import copy_sample_project, query

README = Path(__file__).resolve().parent.parent / "README.md"
N = 30_000
# True visit rates per arm and region: email_a lifts visits by 60 % in the north only.
VISIT = {
    ("holdout", "north"): 0.10,
    ("holdout", "south"): 0.10,
    ("email_a", "north"): 0.16,
    ("email_a", "south"): 0.10,
    ("email_b", "north"): 0.10,
    ("email_b", "south"): 0.10,
}


def readme_section() -> str:
    text = README.read_text()
    section = text[text.index("## Analyse an experiment you ran elsewhere") :]
    return section[: section.index("\n## ", 5)]


def readme_block(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", readme_section(), re.DOTALL)


def generate(root: Path, seed: int = 7) -> pd.DataFrame:
    """Write data/assignments.csv and data/outcomes.csv; return the truth per customer."""
    rng = np.random.default_rng(seed)
    arms = np.array(["holdout", "email_a", "email_b"])[rng.permutation(np.arange(N) % 3)]
    region = np.where(rng.random(N) < 0.5, "north", "south")
    p_visit = np.array([VISIT[(a, r)] for a, r in zip(arms, region, strict=True)])
    visit = (rng.random(N) < p_visit).astype(int)
    conversion = visit * (rng.random(N) < 0.3)
    pre_spend = rng.gamma(2.0, 20.0, N).round(2)
    spend = (conversion * (0.8 * pre_spend + rng.gamma(2.0, 25.0, N))).round(2)
    unsubscribed = (rng.random(N) < 0.01).astype(int)
    ids = [f"K{i:06d}" for i in range(N)]
    frame = pd.DataFrame(
        {
            "customer": ids,
            "group": arms,
            "region": region,
            "visit": visit,
            "conversion": conversion,
            "spend": spend,
            "pre_spend": pre_spend,
            "unsubscribed": unsubscribed,
        }
    )
    data = root / "data"
    data.mkdir(exist_ok=True)
    frame[["customer", "group", "region"]].to_csv(data / "assignments.csv", index=False)
    # Customers without any outcome are left out of the outcome table: they count as zero.
    outcome_cols = ["visit", "conversion", "spend", "unsubscribed"]
    absent = (frame[outcome_cols].sum(axis=1) == 0) & (rng.random(N) < 0.3)
    frame.loc[~absent, ["customer", *outcome_cols, "pre_spend"]].to_csv(
        data / "outcomes.csv", index=False
    )
    frame.loc[absent, "pre_spend"] = 0.0  # absent from the table: the covariate is 0 too
    frame.attrs["absent"] = int(absent.sum())
    return frame


def set_experiment(root: Path, experiment: dict[str, Any]) -> None:
    """Replace the sample cpo.yml's vars.experiment block with `experiment`."""
    path = root / "cpo.yml"
    text = path.read_text()
    start = text.index("  experiment:\n")
    end = text.index("\n  messages:", start)
    block = yaml.safe_dump({"experiment": experiment}, sort_keys=False, width=1000)
    indented = "".join("  " + line + "\n" for line in block.splitlines())
    path.write_text(text[:start] + indented + text[end + 1 :])


def readme_experiment() -> dict[str, Any]:
    (block,) = readme_block("yaml")
    return yaml.safe_load(block)["experiment"]


def build_args() -> list[str]:
    (command,) = readme_block("bash")
    args = command.split()
    assert args[:3] == ["python", "runner.py", "build"]
    return args[2:]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = copy_sample_project(tmp_path_factory.mktemp("external"))
    truth = generate(root)
    set_experiment(root, readme_experiment())
    assert main([*build_args(), "--project-dir", str(root)]) == 0
    return root, truth


def results(root: Path, where: str = "segment_id is null") -> pd.DataFrame:
    return query(root, f"select * from experiment_results where {where} order by arm, metric")


def row(frame: pd.DataFrame, arm: str, metric: str) -> pd.Series:
    (index,) = frame.index[(frame["arm"] == arm) & (frame["metric"] == metric)]
    return frame.loc[index]


def test_readme_build_analyses_only_what_the_analysis_needs(project) -> None:
    import json

    root, _ = project
    run_results = json.loads((root / "target" / "run_results.json").read_text())
    names = {r["name"] for r in run_results["results"]}
    assert {"experiment_results", "segment_policy", "external_assignments", "assignments"} <= names
    for costly in ("retrieved_content", "variants", "safety_screenings", "approved_variants"):
        assert costly not in names
    assignments = query(
        root,
        "select arm, count(*) as n, bool_and(variant_id is null) as none "
        "from assignments group by arm order by arm",
    )
    assert assignments["n"].tolist() == [N // 3] * 3 and assignments["none"].all()
    # The README's queries run.
    for sql in readme_block("sql"):
        assert not query(root, sql).empty


def test_estimates_and_p_values_match_the_oracles(project) -> None:
    root, truth = project
    overall = results(root)
    control = truth[truth["group"] == "holdout"]
    for arm in ("email_a", "email_b"):
        treated = truth[truth["group"] == arm]
        for metric in ("visit", "conversion", "unsubscribe"):
            column = "unsubscribed" if metric == "unsubscribe" else metric
            yc, yt = (control[column] > 0).astype(float), (treated[column] > 0).astype(float)
            r = row(overall, arm, metric)
            assert r["estimate"] == pytest.approx(yt.mean() / yc.mean() - 1, rel=1e-9)
            vt, vc = yt.mean() * (1 - yt.mean()) / yt.size, yc.mean() * (1 - yc.mean()) / yc.size
            z = (yt.mean() - yc.mean()) / math.sqrt(vt + vc)
            # A guardrail is tested one-sided for harm (here an increase).
            expected = sps.norm.sf(z) if metric == "unsubscribe" else 2 * sps.norm.sf(abs(z))
            assert r["p_value"] == pytest.approx(expected, rel=1e-6), (arm, metric)
            assert r["method"] == "z-test"
            assert r["ci_low"] >= -1.0


def test_cuped_matches_statsmodels_ols(project) -> None:
    import statsmodels.formula.api as smf

    root, truth = project
    overall = results(root)
    for arm in ("email_a", "email_b"):
        data = truth[truth["group"].isin(["holdout", arm])].copy()
        data["treated"] = (data["group"] == arm).astype(float)
        fit = smf.ols("spend ~ treated + pre_spend", data=data).fit()
        r = row(overall, arm, "spend")
        assert r["cuped"] and r["method"] == "welch-t+cuped"
        assert r["absolute_effect"] == pytest.approx(fit.params["treated"], rel=1e-3)
        assert r["p_value"] == pytest.approx(fit.pvalues["treated"], rel=2e-2)


def test_decisions_follow_the_truth(project) -> None:
    root, _ = project
    overall = results(root)
    a = row(overall, "email_a", "visit")
    # A large true effect ships although power at the configured 5 % MDE is below min_power.
    assert a["decision"] == "ship", a["decision_reason"]
    assert a["power"] < 0.8
    b = row(overall, "email_b", "visit")
    assert b["decision"] == "inconclusive" and "under-powered" in b["decision_reason"]
    assert set(overall[overall["metric_role"] == "secondary"]["decision"]) == {"info"}
    assert set(overall["srm_p_value"].round(6)) == {1.0}
    # Per segment: email_a wins in the north only.
    policy = query(root, "select * from segment_policy order by segment_id")
    assert policy["segment_id"].tolist() == ["north", "south"]
    assert policy["send_arm"].tolist() == ["email_a", "holdout"]
    assert set(policy["basis"]) == {"observed"}
    assert "email_a significantly better" in policy["evidence"][0]


def test_a_well_powered_null_is_no_ship(tmp_path: Path) -> None:
    root = copy_sample_project(tmp_path / "p")
    generate(root, seed=3)
    experiment = readme_experiment()
    experiment["metrics"][0]["mde"] = 0.5  # power at a 50 % lift is ~1 with 10,000 per arm
    experiment["effect"] = "absolute"
    set_experiment(root, experiment)
    run = Project.load(root).build(select=["+experiment_results"])
    assert run.success, [(r.name, r.message) for r in run.results if r.failed]
    b = row(results(root), "email_b", "visit")
    assert b["decision"] == "no_ship" and "no effect as large as the MDE" in b["decision_reason"]
    assert b["estimate"] == pytest.approx(b["treatment_mean"] - b["control_mean"])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _break(root: Path, case: str) -> str:
    """Apply one bad input; return a fragment the error message must contain."""
    experiment = readme_experiment()
    data = root / "data"
    if case == "missing_file":
        experiment["assignments"]["path"] = "data/nowhere.csv"
        expect = "vars.experiment.assignments.path"
    elif case == "missing_column":
        experiment["assignments"]["columns"]["arm"] = "variant"
        expect = "arm -> 'variant'"
    elif case == "duplicate_customer":
        text = (data / "assignments.csv").read_text().splitlines()
        (data / "assignments.csv").write_text("\n".join([*text, text[1]]) + "\n")
        expect = "more than once"
    elif case == "unknown_arm":
        experiment["arms"] = experiment["arms"][:2]
        expect = "not in vars.experiment.arms"
    elif case == "empty_outcomes":
        (data / "outcomes.csv").write_text(
            "customer,visit,conversion,spend,unsubscribed,pre_spend\n"
        )
        expect = "empty outcome source is an error"
    elif case == "not_a_number":
        text = (data / "outcomes.csv").read_text().splitlines()
        text[1] = re.sub(r",[^,]*$", ",lots", text[1])
        (data / "outcomes.csv").write_text("\n".join(text) + "\n")
        expect = "not numbers"
    elif case == "column_without_outcomes":
        del experiment["outcomes"]
        expect = "vars.experiment.metrics[0].column"
    elif case == "misspelt_key":
        experiment["metrics"][0]["rol"] = "primary"
        expect = "vars.experiment.metrics[0].rol"
    elif case == "bad_metric_type":
        experiment["metrics"][2]["type"] = "average"
        expect = "expected one of: proportion, mean, ratio"
    else:
        raise AssertionError(case)
    set_experiment(root, experiment)
    return expect


BAD = [
    "missing_file",
    "missing_column",
    "duplicate_customer",
    "unknown_arm",
    "empty_outcomes",
    "not_a_number",
    "column_without_outcomes",
    "misspelt_key",
    "bad_metric_type",
]


def test_every_bad_input_is_named_and_changes_nothing(tmp_path: Path, capsys) -> None:
    root = copy_sample_project(tmp_path / "p")
    generate(root, seed=5)
    set_experiment(root, readme_experiment())
    assert main(["build", "--select", "+experiment_results", "--project-dir", str(root)]) == 0
    before = digest(root / "cpo.duckdb")
    pristine = {p.name: p.read_bytes() for p in [root / "cpo.yml", *(root / "data").iterdir()]}
    for case in BAD:
        for name, content in pristine.items():
            (root / ("cpo.yml" if name == "cpo.yml" else f"data/{name}")).write_bytes(content)
        expect = _break(root, case)
        capsys.readouterr()
        code = main(["build", "--select", "+experiment_results", "--project-dir", str(root)])
        out = capsys.readouterr()
        shown = out.out + out.err
        assert code == 1, (case, shown)
        assert expect in shown, (case, shown)
        assert "Traceback" not in shown and "K0000" not in shown  # no customer id
        assert digest(root / "cpo.duckdb") == before, case


def test_rejected_events_are_counted_and_make_results_invalid(tmp_path: Path, capsys) -> None:
    """All events outside the attribution window: invalid with the reason, not "control mean
    is zero"; the rejected counts by reason are on the console."""
    root = copy_sample_project(tmp_path / "p")
    generate(root, seed=9)
    experiment = readme_experiment()
    experiment["assignments"]["columns"]["assigned_at"] = "sent_at"
    frame = pd.read_csv(root / "data" / "assignments.csv")
    frame["sent_at"] = "2026-03-01 09:00:00"
    frame.to_csv(root / "data" / "assignments.csv", index=False)
    events = frame.sample(3000, random_state=1)[["customer"]].rename(
        columns={"customer": "customer_id"}
    )
    events["event"] = "open"
    events["event_at"] = "2026-05-01 10:00:00"  # two months after: outside the 7-day window
    (root / "data" / "events.csv").write_text(events.to_csv(index=False))
    experiment["events"] = {"path": "data/events.csv"}
    experiment["metrics"].append(
        {"name": "opened", "type": "proportion", "role": "secondary", "event": "open"}
    )
    set_experiment(root, experiment)
    code = main(["build", "--select", "+experiment_results", "--project-dir", str(root)])
    shown = capsys.readouterr().out
    assert code == 0
    assert "outside_attribution_window: 3000" in shown
    overall = results(root)
    assert set(overall["decision"]) == {"invalid"}
    assert "100% of observed events were rejected" in overall["decision_reason"].iloc[0]


def test_one_arm_is_skipped_and_said_so(tmp_path: Path) -> None:
    root = copy_sample_project(tmp_path / "p")
    frame = generate(root, seed=2)
    frame.loc[:, "group"] = "email_a"
    frame[["customer", "group", "region"]].to_csv(root / "data" / "assignments.csv", index=False)
    experiment = readme_experiment()
    experiment["arms"] = [{"name": "email_a", "weight": 1}]
    experiment["control"] = "email_a"
    set_experiment(root, experiment)
    run = Project.load(root).build(select=["+experiment_results"])
    assert run.success, [(r.name, r.message) for r in run.results if r.failed]
    assert query(root, "select count(*) as n from experiment_results")["n"][0] == 0
    log = (root / "logs" / "cpo.log").read_text()
    assert "one arm only: nothing to compare" in log


def test_own_assignment_with_one_arm_and_a_holdout_compiles(tmp_path: Path) -> None:
    """CPO's own hash with one arm (was `case else ... end`, a syntax error) and a holdout."""
    root = copy_sample_project(tmp_path / "p")
    text = (root / "cpo.yml").read_text()
    one = text.replace(
        "      - {name: control, weight: 0.25}\n      - {name: urgent, weight: 0.25}\n"
        "      - {name: informational, weight: 0.25}\n      - {name: friendly, weight: 0.25}\n",
        "      - {name: control, weight: 1}\n",
    )
    assert one != text
    (root / "cpo.yml").write_text(one)
    run = Project.load(root).build(select=["+assignments"])
    assert run.success, [(r.name, r.message) for r in run.results if r.failed]
    assert set(query(root, "select distinct arm from assignments")["arm"]) == {"control"}
    holdout = text.replace(
        "      - {name: friendly, weight: 0.25}\n",
        "      - {name: friendly, weight: 0.25}\n      - {name: no_email, weight: 0.25, "
        "message: none}\n",
    )
    (root / "cpo.yml").write_text(holdout)
    run = Project.load(root).build(select=["+messages"])
    assert run.success, [(r.name, r.message) for r in run.results if r.failed]
    held = query(
        root,
        "select count(*) as n, bool_and(a.variant_id is null and a.is_holdout) as ok, "
        "count(m.customer_id) as messages from assignments a "
        "left join messages m using (customer_id) where a.arm = 'no_email'",
    )
    assert held["n"][0] > 0 and held["ok"][0] and held["messages"][0] == 0
