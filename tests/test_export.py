"""`cpo.engine.export`: Parquet/CSV exports that round-trip, leave PII out, and never half-write."""

from __future__ import annotations

import csv
import json
import re
from functools import cache
from pathlib import Path

import pandas as pd
import pytest

from cpo.adapters.duckdb import Database
from cpo.engine.export import (
    MANIFEST_NAME,
    STAGING_PREFIX,
    export_tables,
    load_manifest,
    pii_columns,
)
from cpo.engine.logs import hash_id
from cpo.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
DATA_URI = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+")


@cache
def sample_pii() -> tuple[frozenset[str], frozenset[str]]:
    """The sample customers' emails (lower-cased) and first names (as written and title-cased)."""
    with (ROOT / "seeds" / "customers.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    emails = frozenset(r["email"].strip().lower() for r in rows if "@" in r["email"])
    names = {
        n
        for r in rows
        for n in (r["first_name"].strip(), r["first_name"].strip().title())
        if len(n) > 1
    }
    # Names that are also words of a city ("San Diego", "Madison") are not evidence of a leak.
    city_words = {w.lower() for r in rows for w in re.findall(r"[A-Za-z']+", r["city"])}
    return emails, frozenset(n for n in names if n.lower() not in city_words)


def find_pii(text: str) -> list[str]:
    """Sample emails and first names (whole words, case-sensitive) found in `text`."""
    text = DATA_URI.sub("", text)
    emails, names = sample_pii()
    found = sorted(set(re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text.lower())) & emails)
    words = set(re.findall(r"[A-Za-z][A-Za-z'-]*", text))
    return found + sorted(words & names)


def database_counts(project: Path, tables: list[str]) -> dict[str, int]:
    db = Database(project / "cpo.duckdb", read_only=True)
    try:
        return {t: db.count(t) for t in tables}
    finally:
        db.close()


def read_back(path: Path, fmt: str, partitioned: bool) -> tuple[int, int]:
    """Rows read back by DuckDB and by pandas."""
    db = Database(":memory:")
    try:
        glob = str(path / "**" / f"*.{fmt}") if partitioned else str(path)
        hive = str(partitioned).lower()
        reader = (
            f"read_parquet('{glob}', hive_partitioning = {hive})"
            if fmt == "parquet"
            else f"read_csv('{glob}', header = true, hive_partitioning = {hive})"
        )
        duck = db.fetch(f"select count(*) from {reader}")[1][0][0]
    finally:
        db.close()
    if fmt == "parquet":
        frame = pd.read_parquet(path)
    else:
        files = sorted(path.rglob("*.csv")) if partitioned else [path]
        frame = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    return int(duck), len(frame)


def all_tables(project: Path) -> list[str]:
    """What a default export writes: every relation but the ``llm_calls`` compatibility view."""
    db = Database(project / "cpo.duckdb", read_only=True)
    try:
        return sorted(n for n in db.relations() if n != "llm_calls")
    finally:
        db.close()


@pytest.fixture(scope="module")
def parquet_export(sample_build: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("export") / "parquet"
    manifest = load_manifest(sample_build / "target")
    return export_tables(sample_build / "cpo.duckdb", manifest, out_dir=out, fmt="parquet")


def test_every_table_exports_to_parquet_with_the_database_row_counts(
    sample_build: Path, parquet_export
) -> None:
    tables = all_tables(sample_build)
    assert {
        "dim_customer",
        "dim_segment",
        "dim_variant",
        "fact_assignment",
        "fact_event",
        "experiment_results",
    } <= set(tables)
    counts = database_counts(sample_build, tables)
    assert parquet_export.rows == counts
    for table in parquet_export.tables:
        assert read_back(parquet_export.out_dir / table.path, "parquet", False) == (
            counts[table.name],
            counts[table.name],
        ), table.name
    manifest = json.loads((parquet_export.out_dir / MANIFEST_NAME).read_text())
    assert {n: t["rows"] for n, t in manifest["tables"].items()} == counts
    columns = {c["name"]: c for c in manifest["tables"]["dim_customer"]["columns"]}
    assert columns["email"] == {"name": "email", "type": "VARCHAR", "pii": "hashed"}
    assert columns["customer_id"]["pii"] is None
    assert not [p for p in parquet_export.out_dir.iterdir() if p.name.startswith(".")]


def test_the_ledger_is_exported_once_by_default(parquet_export) -> None:
    """`provider_calls` is exported; `llm_calls`, a view over the same rows, only on request."""
    names = {t.name for t in parquet_export.tables}
    assert "provider_calls" in names
    assert "llm_calls" not in names


def test_star_schema_is_consistent(sample_build: Path) -> None:
    db = Database(sample_build / "cpo.duckdb", read_only=True)
    try:
        _, rows = db.fetch("""
            select (select count(*) from fact_assignment) = (select count(*) from assignments),
                   (select count(*) from fact_event) = (select count(*) from stg_events),
                   (select count(*) from dim_customer)
                       = (select count(distinct customer_id) from stg_customers),
                   (select sum(opens) from fact_assignment)
                       = (select count(*) from fact_event where event = 'open'),
                   (select count(*) from fact_assignment f
                        left join dim_variant v using (variant_id)
                        where f.variant_id is not null and v.variant_id is null) = 0
        """)
    finally:
        db.close()
    assert rows == [(True, True, True, True, True)]


def test_csv_partitioned_export_round_trips(sample_build: Path, tmp_path: Path) -> None:
    tables = ["fact_assignment", "dim_customer", "experiment_results", "llm_calls"]
    result = export_tables(
        sample_build / "cpo.duckdb",
        load_manifest(sample_build / "target"),
        out_dir=tmp_path / "csv",
        fmt="csv",
        tables=tables,
        partition_by="segment_id",
    )
    counts = database_counts(sample_build, tables)
    by_name = {t.name: t for t in result.tables}
    assert by_name["fact_assignment"].partition_by == "segment_id"
    assert by_name["llm_calls"].partition_by is None  # no such column: one file
    assert by_name["llm_calls"].path == "llm_calls.csv"
    assert sorted(p.name for p in (tmp_path / "csv" / "dim_customer").iterdir())[0].startswith(
        "segment_id="
    )
    for name, table in by_name.items():
        partitioned = table.partition_by is not None
        assert read_back(tmp_path / "csv" / table.path, "csv", partitioned) == (
            counts[name],
            counts[name],
        ), name


def test_exports_without_include_pii_hold_no_sample_emails_or_names(
    sample_build: Path, tmp_path: Path, parquet_export
) -> None:
    manifest = load_manifest(sample_build / "target")
    database = sample_build / "cpo.duckdb"
    export_tables(database, manifest, out_dir=tmp_path / "csv", fmt="csv")
    for path in sorted((tmp_path / "csv").rglob("*")):
        if path.is_file():
            assert find_pii(path.read_text(encoding="utf-8")) == [], path.name
    # Parquet compresses text, so scan what a reader gets back rather than raw bytes.
    for table in parquet_export.tables:
        text = pd.read_parquet(parquet_export.out_dir / table.path).to_csv(index=False)
        assert find_pii(text) == [], table.name
    # The scan can fail: with include_pii the same export does hold them.
    leaky = export_tables(
        database,
        manifest,
        out_dir=tmp_path / "pii",
        fmt="csv",
        tables=["dim_customer", "messages"],
        include_pii=True,
    )
    assert find_pii((leaky.out_dir / "dim_customer.csv").read_text(encoding="utf-8"))
    assert find_pii((leaky.out_dir / "messages.csv").read_text(encoding="utf-8"))


def test_pii_is_hashed_like_hash_id_or_dropped(
    sample_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CPO_TEST_SALT", "s3cret")
    manifest = load_manifest(sample_build / "target")
    database = sample_build / "cpo.duckdb"
    export_tables(
        database,
        manifest,
        out_dir=tmp_path / "h",
        tables=["dim_customer"],
        salt_env="CPO_TEST_SALT",
    )
    hashed = pd.read_parquet(tmp_path / "h" / "dim_customer.parquet")
    raw = pd.read_parquet(
        export_tables(
            database, manifest, out_dir=tmp_path / "raw", tables=["dim_customer"], include_pii=True
        ).out_dir
        / "dim_customer.parquet"
    )
    merged = hashed.merge(raw, on="customer_id", suffixes=("_h", "_raw"))
    expected = merged["email_raw"].map(lambda e: hash_id(e, "CPO_TEST_SALT"))
    assert (merged["email_h"] == expected).all()
    assert (merged["customer_id"] == raw["customer_id"]).all()  # ids are not PII: kept

    dropped = export_tables(
        database, manifest, out_dir=tmp_path / "d", tables=["dim_customer"], pii_mode="drop"
    )
    columns = list(pd.read_parquet(tmp_path / "d" / "dim_customer.parquet").columns)
    assert "email" not in columns and "first_name" not in columns and "city" in columns
    assert {c.name: c.pii for c in dropped.tables[0].columns}["email"] == "dropped"


def test_pii_columns_come_from_schema_yml_and_their_names() -> None:
    manifest = {
        "nodes": {
            "a": {"columns": {"email": {"meta": {"pii": True}}, "x": {}}},
            "b": {"columns": {"note": {"meta": {"pii": True}}}},
        }
    }
    assert pii_columns(manifest, "a", ["email", "x"]) == {"email"}
    # a table that did not declare it still treats a column named like a PII column as PII
    assert pii_columns(manifest, "c", ["email", "note", "y"]) == {"email", "note"}


def test_unknown_table_is_a_clear_error_and_writes_nothing(
    sample_build: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(UsageError) as error:
        export_tables(
            sample_build / "cpo.duckdb",
            load_manifest(sample_build / "target"),
            out_dir=out,
            tables=["dim_customer", "no_such_table"],
        )
    assert str(error.value).startswith(
        "cannot export 'no_such_table': no such table in cpo.duckdb; available: "
    )
    assert not out.exists()


def test_unsupported_format_is_a_clear_error(sample_build: Path, tmp_path: Path) -> None:
    with pytest.raises(
        UsageError,
        match=r"^unsupported export format 'xlsx'; use one of: "
        r"parquet, csv$",
    ):
        export_tables(sample_build / "cpo.duckdb", {}, out_dir=tmp_path / "out", fmt="xlsx")
    assert not (tmp_path / "out").exists()


def test_unknown_partition_column_is_a_clear_error(sample_build: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="none of the exported tables has that column"):
        export_tables(
            sample_build / "cpo.duckdb",
            {},
            out_dir=tmp_path / "out",
            tables=["dim_segment"],
            partition_by="nope",
        )


def test_unwritable_directory_is_a_clear_error(sample_build: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError) as error:
        export_tables(
            sample_build / "cpo.duckdb", {}, out_dir=blocker / "export", tables=["dim_segment"]
        )
    assert str(error.value) == (
        f"cannot write the export to {blocker / 'export'}: Not a directory; "
        "choose a writable folder with --out"
    )


def test_export_before_any_build_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^cpo.duckdb does not exist yet; run 'build' first$"):
        export_tables(tmp_path / "cpo.duckdb", {}, out_dir=tmp_path / "out")


def test_failed_export_leaves_the_previous_export_untouched(
    sample_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cpo.engine.export

    database, out = sample_build / "cpo.duckdb", tmp_path / "out"
    export_tables(database, {}, out_dir=out, tables=["dim_segment"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = cpo.engine.export._write_table
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise UsageError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(cpo.engine.export, "_write_table", fail_on_second)
    with pytest.raises(UsageError, match="simulated"):
        export_tables(database, {}, out_dir=out, tables=["dim_segment", "dim_variant"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]
