"""The input contract (sources:), rules as data, tied scores, merge tags and init."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import yaml

from cpo.engine.cli import main
from cpo.engine.project import Project
from tests.conftest import file_hash
from tests.sample import copy_sample_project, query

CUSTOMERS = "seeds/customers.csv"


def edit(project: Path, change) -> None:
    path = project / "cpo.yml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def write_csv(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def built(built_sample: Path) -> Path:
    """A built sample project (so 'cpo.duckdb unchanged' is checked against a real file)."""
    return built_sample


def run_cli(project: Path, capsys) -> tuple[int, str]:
    code = main(["build", "--project-dir", str(project)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _columns(mapping: dict):
    def change(config):
        config["sources"]["customers"]["columns"] = mapping

    return change


BAD_INPUTS = {
    "mapped_column_missing": (
        _columns({"customer_id": "customer_id", "frequency": "orders_per_year"}),
        [
            "sources.customers.columns.frequency",
            "orders_per_year",
            "purchase_frequency",
            "recency_days:",
        ],
    ),
    "failing_expression": (
        _columns({"customer_id": "customer_id", "monetary": "spend_usd * 2"}),
        ["role 'monetary'", "spend_usd", "sources.customers.columns.monetary"],
    ),
    "not_a_role": (
        _columns({"customer_id": "customer_id", "loyalty": "tier"}),
        ["'loyalty' is not a role", "attributes"],
    ),
    "rule_not_boolean": (
        lambda c: c["vars"]["segmentation"]["rules"].__setitem__(
            0, {"name": "odd", "when": "recency_days + 1"}
        ),
        ["vars.segmentation.rules[0].when", "'odd'", "not a condition"],
    ),
    "rule_unknown_column": (
        lambda c: c["vars"]["segmentation"]["rules"].__setitem__(
            0, {"name": "womens", "when": "bought_womens = 1"}
        ),
        ["'womens'", "bought_womens", "Available: customer_id"],
    ),
    "rule_needs_unmapped_role": (
        lambda c: (
            c["sources"]["customers"]["columns"].pop("purchase_frequency", None)
            or c["sources"]["customers"]["columns"].pop("frequency")
        ),
        ["'champions'", "f_score", "role frequency"],
    ),
    "rule_with_statement": (
        lambda c: c["vars"]["segmentation"]["rules"].__setitem__(
            0, {"name": "x", "when": "1=1; copy stg_customers to 'x.csv'"}
        ),
        ["vars.segmentation.rules[0].when", "must be one SQL expression"],
    ),
    "merge_tag_needs_unmapped_role": (
        lambda c: c["sources"]["customers"]["columns"].pop("city"),
        ["vars.messages.merge_tags.city", "city needs the role city"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_error_and_changes_nothing(built, capsys, case):
    change, expected = BAD_INPUTS[case]
    before = file_hash(built / "cpo.duckdb")
    edit(built, change)
    code, output = run_cli(built, capsys)
    assert code == 1
    assert "Traceback" not in output
    for text in expected:
        assert text in output, (text, output)
    assert file_hash(built / "cpo.duckdb") == before


def test_role_mapped_twice_is_an_error(built, capsys):
    path = built / "cpo.yml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace(
            "      frequency: purchase_frequency\n",
            "      frequency: purchase_frequency\n      frequency: avg_order_value\n",
        ),
        encoding="utf-8",
    )
    before = file_hash(built / "cpo.duckdb")
    code, output = run_cli(built, capsys)
    assert code == 1 and "frequency: duplicate key 'frequency'" in output
    assert "Traceback" not in output
    assert file_hash(built / "cpo.duckdb") == before


@pytest.mark.parametrize("header_only", [False, True])
def test_empty_or_header_only_file_is_an_error(built, capsys, header_only):
    header = (built / CUSTOMERS).read_text(encoding="utf-8").splitlines()[0] + "\n"
    write_csv(built / "data" / "empty.csv", header if header_only else "")
    edit(built, lambda c: c["sources"]["customers"].update(path="data/empty.csv"))
    before = file_hash(built / "cpo.duckdb")
    code, output = run_cli(built, capsys)
    assert code == 1 and "Traceback" not in output
    assert "sources.customers.path" in output
    assert file_hash(built / "cpo.duckdb") == before


def test_duplicate_and_blank_ids_fail_the_unique_and_not_null_tests(built, capsys):
    rows = (built / CUSTOMERS).read_text(encoding="utf-8").splitlines()
    first = rows[1]
    blank = '""' + first[first.index(",") :]
    (built / CUSTOMERS).write_text("\n".join([*rows, first, blank]) + "\n", encoding="utf-8")
    before = file_hash(built / "cpo.duckdb")
    code, output = run_cli(built, capsys)
    assert code == 1 and "Traceback" not in output
    assert "unique_stg_customers_customer_id" in output
    assert "not_null_stg_customers_customer_id" in output
    assert "SKIP" in output and "customer_features" in output  # downstream skipped
    assert file_hash(built / "cpo.duckdb") == before


def test_out_of_range_and_non_finite_values_fail_a_data_test(tmp_path):
    project = copy_sample_project(tmp_path / "p")
    rows = (project / CUSTOMERS).read_text(encoding="utf-8").splitlines()
    header = rows[0].split(",")
    bad = rows[1].split(",")
    bad[header.index('"purchase_frequency"')] = "1e308"
    bad[header.index('"historical_click_rate"')] = "7"
    rows[1] = ",".join(bad)
    (project / CUSTOMERS).write_text("\n".join(rows) + "\n", encoding="utf-8")
    run = Project.load(project).build(select=["+customer_features"])
    result = {r.name: r for r in run.results}["customer_values_are_plausible"]
    assert result.status == "fail"
    assert result.rows == 3  # yearly spend not finite, click rate above 1, above open rate


def write_tied(path: Path, order: str) -> None:
    con = duckdb.connect()
    con.execute(
        f"""copy (
            select 'C' || lpad(i::varchar, 6, '0') as customer_id,
                case when i % 10 < 8 then 30 else i % 97 end as recency_days,
                case when i % 10 < 9 then 1 else 1 + i % 5 end as frequency,
                case when i % 10 < 7 then 50.0 else (i % 13) * 20.0 end as monetary
            from range(3000) as t(i) order by {order}
        ) to '{path}' (format parquet)"""
    )
    con.close()


def test_segments_on_heavily_tied_data_do_not_depend_on_row_order(tmp_path):
    results = []
    for order in ("i", "i desc", "hash(i)"):
        project = copy_sample_project(tmp_path / order.replace(" ", "_").replace("(", ""))
        write_tied(project / "tied.parquet", order)

        def change(config):
            config["sources"]["customers"] = {
                "path": "tied.parquet",
                "columns": {
                    "customer_id": "customer_id",
                    "recency_days": "recency_days",
                    "frequency": "frequency",
                    "monetary": "monetary",
                },
            }
            config["vars"]["segmentation"]["rules"] = [
                r for r in config["vars"]["segmentation"]["rules"] if "tenure" not in r["when"]
            ]
            config["vars"]["messages"]["merge_tags"] = {"unsubscribe_url": "c.customer_id"}

        edit(project, change)
        run = Project.load(project).build(select=["+segments"])
        assert run.success, [(r.name, r.message) for r in run.results if r.failed]
        frame = query(
            project,
            "select customer_id, segment_id, f_score from segments "
            "join customer_features using (customer_id) order by customer_id",
        )
        results.append(frame)
    assert results[0].equals(results[1]) and results[0].equals(results[2])
    # 90% identical frequency: all of them share one score, never split 1-5 by id.
    tied = query(
        project, "select count(distinct f_score) as n from customer_features where frequency = 1"
    )
    assert tied["n"][0] == 1


def test_init_guesses_a_block_and_says_what_it_guessed(tmp_path, capsys):
    write_csv(
        tmp_path / "shop.csv",
        "id,months_since_purchase,spend_last_year,bought_mens,area\n1,3,120.5,1,Urban\n",
    )
    assert main(["init", "--customers", str(tmp_path / "shop.csv")]) == 0
    out = capsys.readouterr().out
    block = yaml.safe_load("\n".join(line for line in out.splitlines() if not line.startswith("#")))
    columns = block["sources"]["customers"]["columns"]
    assert columns == {
        "customer_id": "id",
        "recency_days": "months_since_purchase * 30",
        "monetary": "spend_last_year",
    }
    assert block["sources"]["customers"]["attributes"] == ["bought_mens", "area"]
    assert "recency_days <- months_since_purchase (converted" in out


def _init_block(out: str) -> dict:
    return yaml.safe_load("\n".join(line for line in out.splitlines() if not line.startswith("#")))


def test_init_reads_the_only_table_of_a_duckdb_file(tmp_path, capsys):
    crm = tmp_path / "crm.duckdb"
    with duckdb.connect(str(crm)) as con:
        con.execute(
            "create table clients as select 'c1' as client_id, 3 as months_since_purchase, "
            "120.5 as spend_last_year, 'north' as area"
        )
    assert main(["init", "--customers", str(crm)]) == 0
    out = capsys.readouterr().out
    assert "table clients: 4 columns" in out
    block = _init_block(out)
    customers = block["sources"]["customers"]
    assert customers["table"] == "clients"
    assert customers["columns"]["customer_id"] == "client_id"
    assert customers["attributes"] == ["area"]
    # The printed block is a valid source as it stands.
    from cpo.personalization.sources import SourcesSettings, load_source

    view = load_source(tmp_path, SourcesSettings.model_validate(block["sources"]), "customers")
    assert view.has("customer_id", "recency_days", "monetary") and view.attributes == ["area"]


def test_init_with_several_tables_asks_for_one_and_takes_table(tmp_path, capsys):
    project = copy_sample_project(tmp_path / "p")
    crm = tmp_path / "crm.duckdb"
    _crm(crm, project, schema="sales")
    assert main(["init", "--customers", str(crm)]) == 1
    captured = capsys.readouterr()
    error = captured.out + captured.err
    assert "has 2 tables: orders, sales.customers; choose one with --table NAME" in error
    assert "Traceback" not in error
    assert main(["init", "--customers", str(crm), "--table", "clients"]) == 1
    assert "has no table 'clients'; its tables are: orders, sales.customers" in (
        capsys.readouterr().err
    )
    assert main(["init", "--customers", str(crm), "--table", "sales.customers"]) == 0
    customers = _init_block(capsys.readouterr().out)["sources"]["customers"]
    assert customers["table"] == "sales.customers"
    assert customers["columns"]["customer_id"] == "customer_id"
    assert customers["columns"]["first_name"] == "first_name"


def test_missing_name_never_leaves_a_dangling_word(tmp_path):
    project = copy_sample_project(tmp_path / "p")
    rows = (project / CUSTOMERS).read_text(encoding="utf-8").splitlines()
    header = rows[0].split(",")
    at = header.index('"first_name"')
    for n in range(1, len(rows)):
        cells = rows[n].split(",")
        cells[at] = '""'
        rows[n] = ",".join(cells)
    (project / CUSTOMERS).write_text("\n".join(rows) + "\n", encoding="utf-8")
    run = Project.load(project).build()
    assert run.success, [(r.name, r.message) for r in run.results if r.failed]
    messages = query(project, "select subject, body, arm from messages")
    assert not messages["body"].str.contains("there,").any()
    assert not messages["subject"].str.contains("there,|, :| ,", regex=True).any()
    personal = messages[messages["arm"].isin(["friendly", "informational"])]
    assert personal["body"].str.startswith("Hello,").all()


def _crm(path: Path, project: Path, *, schema: str | None = None) -> None:
    """A DuckDB file holding the sample's customers (and an unrelated table)."""
    con = duckdb.connect(str(path))
    if schema:
        con.execute(f"create schema {schema}")
    table = f"{schema}.customers" if schema else "customers"
    con.execute(
        f"create table {table} as select * from read_csv(?, header = true)",
        [str(project / CUSTOMERS)],
    )
    con.execute("create table orders as select 1 as order_id")
    con.close()


@pytest.mark.parametrize("schema", [None, "sales"])
def test_table_of_another_duckdb_file_builds(tmp_path, schema):
    project = copy_sample_project(tmp_path / "p")
    crm = tmp_path / "crm.duckdb"
    _crm(crm, project, schema=schema)
    before = file_hash(crm)
    table = f"{schema}.customers" if schema else "customers"
    edit(project, lambda c: c["sources"]["customers"].update(path=str(crm), table=table))
    (project / CUSTOMERS).write_text("customer_id\nnot-read\n", encoding="utf-8")
    run = Project.load(project).build(select=["+customer_features"])
    assert run.success, [(r.name, r.message) for r in run.results if r.failed]
    expected = duckdb.connect(str(crm), read_only=True).sql(f"select count(*) from {table}")
    counts = query(project, "select count(*) as n from customer_features")
    assert counts["n"][0] == expected.fetchone()[0] > 1
    assert file_hash(crm) == before  # attached read-only: the file is untouched
    assert not (project / "cpo.duckdb.wal").exists()


def _duckdb_error(tmp_path: Path, capsys, source: dict, make=None) -> str:
    project = copy_sample_project(tmp_path / "p")
    if make:
        make(project)
    edit(project, lambda c: c["sources"]["customers"].update(source))
    code, output = run_cli(project, capsys)
    assert code == 1 and "Traceback" not in output
    assert not (project / "cpo.duckdb").exists()
    return output


def test_duckdb_source_file_missing(tmp_path, capsys):
    output = _duckdb_error(tmp_path, capsys, {"path": "crm.duckdb", "table": "customers"})
    assert "sources.customers.path" in output and "'crm.duckdb' does not exist" in output


def test_duckdb_source_table_missing_lists_the_files_tables(tmp_path, capsys):
    output = _duckdb_error(
        tmp_path,
        capsys,
        {"path": "crm.duckdb", "table": "clients"},
        make=lambda p: _crm(p / "crm.duckdb", p),
    )
    assert "sources.customers.table" in output
    assert "has no table 'clients'" in output and "customers, orders" in output


def test_duckdb_source_without_table_lists_the_files_tables(tmp_path, capsys):
    output = _duckdb_error(
        tmp_path, capsys, {"path": "crm.db"}, make=lambda p: _crm(p / "crm.db", p, schema="s")
    )
    assert "needs the table to read" in output and "orders, s.customers" in output


def test_duckdb_source_not_a_database(tmp_path, capsys):
    output = _duckdb_error(
        tmp_path,
        capsys,
        {"path": "crm.duckdb", "table": "customers"},
        make=lambda p: (p / "crm.duckdb").write_text("id\n1\n", encoding="utf-8"),
    )
    assert "cannot open 'crm.duckdb'" in output and "not a DuckDB database" in output


def test_table_with_a_csv_path_is_an_error(tmp_path, capsys):
    output = _duckdb_error(tmp_path, capsys, {"table": "customers"})
    assert "sources.customers.table" in output and "read as csv" in output


def test_unknown_key_in_a_source_is_an_error(tmp_path, capsys):
    output = _duckdb_error(tmp_path, capsys, {"tabel": "customers"})
    assert "sources.customers.tabel" in output and "unknown key" in output


def test_the_projects_own_database_is_refused(built, capsys):
    before = file_hash(built / "cpo.duckdb")
    edit(built, lambda c: c["sources"]["customers"].update(path="cpo.duckdb", table="customers"))
    code, output = run_cli(built, capsys)
    assert code == 1 and "Traceback" not in output
    assert "sources.customers.path" in output and "this project's own database" in output
    assert file_hash(built / "cpo.duckdb") == before


def test_content_with_other_columns_rules_from_cpo_yml_and_audience_lists(tmp_path):
    """sources.content maps another file's columns; vars.content.rules decides what a valid
    document says (a promotion without its deadline fails, naming the rule); an audience may
    list several values."""
    project = copy_sample_project(tmp_path / "p")
    write_csv(
        project / "data" / "docs.csv",
        "doc_id,headline,text,kind,who\n"
        'D1,Boots,The boot costs $10.,product,"Gold, Platinum"\n'
        "D2,Sale,Take 20% off all boots.,promotion,all\n"
        "D3,Ends,Take 10% off. Offer ends 2027-01-31.,promotion,all\n"
        "D4,Help,Write to us any time.,support,all\n",
    )

    def change(config):
        config["sources"]["content"] = {
            "path": "data/docs.csv",
            "columns": {
                "document_id": "doc_id",
                "title": "headline",
                "body": "text",
                "category": "kind",
                "audience": "who",
            },
        }
        config["vars"]["content"]["rules"].append(
            {"name": "support_gives_address", "category": "support", "must_match": "@"}
        )

    edit(project, change)
    run = Project.load(project).build(select=["stg_content"])
    results = {r.name: r for r in run.results}
    assert results["stg_content"].status == "success"
    rules = results["content_follows_rules"]
    assert rules.failed and rules.rows == 2
    assert "promotion_states_deadline" in rules.message and "D2" in rules.message
    assert "support_gives_address" in rules.message and "D4" in rules.message
    assert not any(r.status == "warn" for r in run.results), [
        (r.name, r.message) for r in run.results if r.status == "warn"
    ]
    # Fixed as the messages say, the build succeeds; the list audience is normalised.
    write_csv(
        project / "data" / "docs.csv",
        "doc_id,headline,text,kind,who\n"
        'D1,Boots,The boot costs $10.,product,"Gold, Platinum"\n'
        "D4,Help,Write to help@shop.example any time.,support,all\n",
    )
    assert Project.load(project).build(select=["stg_content"]).success
    audiences = query(project, "select audience from stg_content where document_id = 'D1'")
    assert audiences["audience"][0] == "gold, platinum"
