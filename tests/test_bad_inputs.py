"""Malformed inputs through ``build``: each exits 1 with a message naming the file or key, never
shows a traceback, writes no file outside the build, and leaves ``cpo.duckdb`` byte-identical.

The sample project is built once; every case works on a copy. Most cases fail while ``cpo.yml``,
``--vars`` or the flags are read, before any node runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import file_hash

from cpo.engine.cli import main

ATTACK = (
    "4 then 'champions' end as s from customer_features; "
    "COPY (select customer_id, first_name, email from stg_customers) TO 'x.csv'; "
    "select case when 1 >= 1"
)
BOMB = "".join(
    f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]\n"
    for i in range(1, 9)
).replace("a: &a [*`,*`,*`,*`,*`,*`,*`,*`,*`]", "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]")


def replace(old: str, new: str, count: int = 1) -> Callable[[Path], None]:
    """An edit of ``cpo.yml``: the first `count` occurrences of `old` become `new`."""

    def edit(project: Path) -> None:
        path = project / "cpo.yml"
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} is not in cpo.yml"
        path.write_text(text.replace(old, new, count), encoding="utf-8")

    return edit


def append(text: str, file: str = "cpo.yml") -> Callable[[Path], None]:
    def edit(project: Path) -> None:
        with (project / file).open("a", encoding="utf-8") as f:
            f.write(text)

    return edit


def write(file: str, content: str | bytes) -> Callable[[Path], None]:
    def edit(project: Path) -> None:
        path = project / file
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")

    return edit


def latin1_on_line_3(file: str) -> Callable[[Path], None]:
    """Turn an ASCII character of line 3 of `file` into the Latin-1 byte 0xe9."""

    def edit(project: Path) -> None:
        path = project / file
        lines = path.read_bytes().split(b"\n")
        lines[2] = lines[2][:5] + b"\xe9" + lines[2][6:]
        path.write_bytes(b"\n".join(lines))

    return edit


def nothing(project: Path) -> None:
    """No edit: the case is in the command line."""


@dataclass(frozen=True)
class Case:
    """One malformed input: an edit of the project, extra arguments, and what the error says."""

    id: str
    edit: Callable[[Path], None]
    expected: tuple[str, ...]
    args: tuple[str, ...] = field(default=())


CASES = [
    # --- cpo.yml: safety settings that used to fail open -------------------------------------
    Case(
        "on_unscreened-ignore",
        replace("on_unscreened: fail", "on_unscreened: ignore"),
        ("cpo.yml:", "vars.safety.on_unscreened: expected one of: fail, warn"),
    ),
    Case(
        "on_unscreened-FAIL",
        replace("on_unscreened: fail", "on_unscreened: FAIL"),
        ("vars.safety.on_unscreened", "fail, warn"),
    ),
    Case(
        "on_unscreened-fial",
        replace("on_unscreened: fail", "on_unscreened: fial"),
        ("vars.safety.on_unscreened", "fail, warn"),
    ),
    Case(
        "threshold-for-thresholds",
        replace("thresholds: {Hate", "threshold: {Hate"),
        ("vars.safety.threshold: unknown key 'threshold' (did you mean 'thresholds'?)",),
    ),
    Case(
        "topk-for-top_k",
        replace("top_k: 4", "topk: 4"),
        ("vars.retrieval.topk: unknown key 'topk' (did you mean 'top_k'?)",),
    ),
    Case(
        "unknown-harm-category",
        replace("{Hate: 4,", "{Hat: 4,"),
        ("vars.safety.thresholds.Hat: unknown key 'Hat' (did you mean 'Hate'?)",),
    ),
    Case(
        "threshold-out-of-range",
        replace("{Hate: 4,", "{Hate: 9,"),
        ("vars.safety.thresholds.Hate: expected an integer of at most 7, got int 9",),
    ),
    Case(
        "output-type",
        replace("output_type: EightSeverityLevels\n", "output_type: Eight\n"),
        ("vars.safety.output_type: expected one of: FourSeverityLevels, EightSeverityLevels",),
    ),
    # --- cpo.yml: values that used to surface as engine errors -------------------------------
    Case(
        "min_r-high",
        replace("when: r_score >= 4 and f_score", "when: r_score >= high and f_score"),
        ("vars.segmentation.rules[1].when", "high"),
    ),
    Case(
        "top_k-negative",
        replace("top_k: 4", "top_k: -4"),
        ("vars.retrieval.top_k: expected an integer of at least 1, got int -4",),
    ),
    Case(
        "as_of_date-not-a-date",
        replace('as_of_date: "2026-11-24"', "as_of_date: not-a-date"),
        ("vars.as_of_date: expected a date like 2026-11-24",),
    ),
    Case(
        "metric-type-typo",
        replace("open_rate, type: proportion", "open_rate, type: proportio"),
        ("vars.experiment.metrics[0].type: expected one of: proportion, mean, ratio",),
    ),
    Case(
        "segmentation-method",
        replace("method: rules ", "method: kmean "),
        ("vars.segmentation.method: expected one of: rules, kmeans",),
    ),
    Case(
        "temperature-word",
        replace("temperature: 0.4\n    max_tokens", "temperature: hot\n    max_tokens"),
        ("vars.generation.temperature: expected a number, got the string 'hot'",),
    ),
    Case(
        "duplicate-tone",
        replace("tones: [urgent,", "tones: [urgent, urgent,"),
        ("vars.generation.tones: 'urgent' is listed twice",),
    ),
    Case(
        "exclude_flagged-string",
        replace("exclude_flagged: true", 'exclude_flagged: "yes"'),
        ("vars.retrieval.exclude_flagged: expected true or false",),
    ),
    Case(
        "arm-weight-string",
        replace("{name: control, weight: 0.25}", '{name: control, weight: "0.25"}'),
        ("vars.experiment.arms[0].weight: expected a number, got the string '0.25'",),
    ),
    Case(
        "correction-unknown",
        replace("correction: holm", "correction: bonferroni"),
        ("vars.experiment.correction: expected one of: holm, bh",),
    ),
    Case(
        "alpha-percent",
        replace("alpha: 0.05", "alpha: 5"),
        ("vars.experiment.alpha: expected an integer less than 1",),
    ),
    Case(
        "start_at-not-a-time",
        replace('start_at: "2026-11-24 09:00:00"', 'start_at: "tomorrow 9am"'),
        ("vars.experiment.start_at: expected a timestamp",),
    ),
    Case(
        "unknown-vars-section",
        replace("  segmentation:\n", "  segmntation:\n"),
        ("vars.segmntation: unknown key 'segmntation' (did you mean 'segmentation'?)",),
    ),
    Case(
        "merge-tag-two-statements",
        replace(
            "first_name: {sql: c.first_name,",
            "first_name: {sql: \"c.first_name; copy stg_customers to 'x.csv'\",",
        ),
        ("vars.messages.merge_tags.first_name.sql: must be one SQL expression",),
    ),
    Case(
        "merge-tag-subquery",
        replace(
            "first_name: {sql: c.first_name,",
            'first_name: {sql: "(select max(email) from stg_customers)",',
        ),
        (
            "vars.messages.merge_tags.first_name.sql: "
            "must be a SQL expression over the row's columns",
        ),
    ),
    # --- cpo.yml: engine settings --------------------------------------------------------------
    Case("unknown-top-level-key", append("bogus: 1\n"), ("bogus: unknown key 'bogus'",)),
    Case(
        "top-level-typo",
        replace("budget:\n", "budjet:\n"),
        ("budjet: unknown key 'budjet' (did you mean 'budget'?)",),
    ),
    Case(
        "concurrency-zero",
        replace("concurrency: 8", "concurrency: 0"),
        ("calls.concurrency: expected an integer of at least 1",),
    ),
    Case(
        "concurrency-fraction",
        replace("concurrency: 8", "concurrency: 2.5"),
        ("calls.concurrency: expected an integer, got float 2.5",),
    ),
    Case(
        "max-cost-word",
        replace("max_cost_usd: 5.00", "max_cost_usd: lots"),
        ("budget.max_cost_usd: expected a number, got the string 'lots'",),
    ),
    Case(
        "secret-in-cpo-yml",
        replace("generation: {type: offline}", "generation: {type: offline, api_key: sk-1}"),
        ("targets.offline.providers.generation.api_key: secrets never go in cpo.yml",),
    ),
    Case(
        "unknown-provider-kind",
        replace("safety: {type: offline}\n  # Azure", "painting: {type: offline}\n  # Azure"),
        ("targets.offline.providers.painting: unknown key 'painting'",),
    ),
    Case(
        "unknown-default-target",
        replace("target: offline\n", "target: offlne\n"),
        ("unknown target 'offlne'; defined targets: offline, azure, openai",),
    ),
    Case(
        "price-negative",
        replace("input_per_1m: 0.15", "input_per_1m: -0.15"),
        ("prices.gpt-4o-mini.input_per_1m: expected a number of at least 0",),
    ),
    # --- cpo.yml: the file itself ---------------------------------------------------------------
    Case("latin1-byte-line-3", latin1_on_line_3("cpo.yml"), ("cpo.yml:3: column 6", "not UTF-8")),
    Case("alias-bomb", append("bomb:\n" + BOMB.replace("\n", "\n  ")), ("cpo.yml:", "alias")),
    Case("duplicate-key", append("name: again\n"), ("duplicate key 'name'",)),
    Case("invalid-yaml", append("vars: [\n"), ("cpo.yml:", "invalid YAML")),
    Case("not-a-mapping", write("cpo.yml", "- a\n- b\n"), ("cpo.yml:1:", "expected a mapping")),
    # --- --vars ----------------------------------------------------------------------------------
    Case(
        "vars-injection-threshold",
        nothing,
        ("--vars: vars.segmentation.rules[0].when",),
        ("--vars", "{segmentation: {rules: [{name: x, when: " + repr(ATTACK) + "}]}}"),
    ),
    Case(
        "vars-on_unscreened",
        nothing,
        ("--vars: vars.safety.on_unscreened: expected one of: fail, warn",),
        ("--vars", "{safety: {on_unscreened: ignore}}"),
    ),
    Case(
        "vars-top_k-string",
        nothing,
        ("--vars: vars.retrieval.top_k: expected an integer, got the string '4'",),
        ("--vars", '{"retrieval": {"top_k": "4"}}'),
    ),
    Case(
        "vars-impossible-date",
        nothing,
        ("--vars: vars.as_of_date: expected a date",),
        ("--vars", '{"as_of_date": "2026-02-30"}'),
    ),
    Case("vars-list", nothing, ("--vars must be a mapping",), ("--vars", "[1, 2]")),
    Case("vars-bad-json", nothing, ("--vars is not valid JSON or YAML",), ("--vars", "{bad")),
    # --- flags -----------------------------------------------------------------------------
    Case("unknown-target-flag", nothing, ("unknown target 'nope'",), ("--target", "nope")),
    Case("negative-max-cost", nothing, ("--max-cost must be a non-",), ("--max-cost", "-1")),
    Case("nan-max-cost", nothing, ("--max-cost must be a non-",), ("--max-cost", "nan")),
    Case("unknown-selector", nothing, ("no_such_model",), ("--select", "no_such_model")),
    # --- seeds and models -------------------------------------------------------------------------
    Case(
        "seed-latin1-line-3",
        latin1_on_line_3("seeds/customers.csv"),
        ("seeds/customers.csv:3: column 6", "not UTF-8"),
    ),
    Case(
        "content-latin1-line-3",
        latin1_on_line_3("seeds/content.csv"),
        ("seeds/content.csv:3: column 6", "not UTF-8"),
    ),
    Case("seed-schema-yaml", append("  - name: [\n", "seeds/schema.yml"), ("seeds/schema.yml:",)),
    Case(
        "model-two-statements",
        write("models/extra.sql", "select 1 as x;\ncopy (select 42) to 'x.csv'\n"),
        ("models/extra.sql", "exactly one SQL statement"),
    ),
]


@pytest.fixture(scope="module")
def built(sample_build: Path) -> Path:
    """The sample project built once per session; every case works on a copy."""
    return sample_build


def test_there_are_at_least_40_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_cleanly(case: Case, built: Path, tmp_path: Path, capsys) -> None:
    project = Path(shutil.copytree(built, tmp_path / "p", ignore=shutil.ignore_patterns("logs")))
    database = project / "cpo.duckdb"
    before = file_hash(database)
    files_before = {p for p in tmp_path.rglob("*") if p.is_file()}
    case.edit(project)
    edited = {p for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()
    code = main(["build", "--project-dir", str(project), *case.args])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 1, text
    assert "Traceback" not in text
    for expected in case.expected:
        assert expected in text, text
    assert file_hash(database) == before
    # Nothing written outside the build's own folders (no x.csv from an injected COPY).
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - edited - files_before
    stray = [
        p for p in written if not {"logs", "target", ".cpo"} & set(p.relative_to(project).parts)
    ]
    assert not stray, stray
    assert not list(Path.cwd().glob("x.csv"))
