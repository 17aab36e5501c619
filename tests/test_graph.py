"""The DAG and the selection grammar, through `Project.ls`, `Graph` and ``cpo ls``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpo.engine.graph import Graph
from cpo.engine.nodes import MODEL, SEED, Node
from cpo.engine.project import Project
from cpo.errors import ModelError, UsageError

ALL_NODES = {
    "people",
    "visits",
    "stg_people",
    "stg_visits",
    "adults",
    "person_totals",
    "adult_stats",
    "city_counts",
}
ADULTS_TESTS = {
    "accepted_values_adults_city",
    "no_minors",
    "not_null_adults_id",
    "relationships_adults_id",
    "unique_adults_id",
}


@pytest.fixture
def project(mini_project: Path) -> Project:
    return Project.load(mini_project)


def selected(project: Project, select=None, exclude=None) -> set[str]:
    return {n.name for n in project.ls(select, exclude) if n.resource_type != "test"}


def selected_tests(project: Project, select=None, exclude=None) -> set[str]:
    return {n.name for n in project.ls(select, exclude) if n.resource_type == "test"}


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        (["adults"], {"adults"}),
        (["adults+"], {"adults", "adult_stats", "city_counts"}),
        (["+adults"], {"people", "stg_people", "adults"}),
        (["1+adults"], {"stg_people", "adults"}),
        (["stg_people+1"], {"stg_people", "adults", "person_totals"}),
        (["2+city_counts"], {"stg_people", "adults", "city_counts"}),
        (["tag:marts"], {"adults", "person_totals"}),
        (["tag:raw"], {"people", "visits"}),
        (["path:models/marts"], {"adults", "city_counts", "person_totals"}),
        (["path:models/staging/"], {"stg_people", "stg_visits"}),
        (["adults", "visits"], {"adults", "visits"}),  # two --select values: a union
        (["adults visits"], {"adults", "visits"}),  # space inside one value: a union
        (["tag:marts,+city_counts"], {"adults"}),  # comma: an intersection
        (["stg_*"], {"stg_people", "stg_visits"}),
    ],
)
def test_selection_grammar(project, select, expected):
    assert selected(project, select) == expected


def test_exclude_removes_nodes_and_their_tests(project):
    assert selected(project, ["tag:marts"], ["person_totals"]) == {"adults"}
    assert selected(project, None, ["adults+"]) == ALL_NODES - {
        "adults",
        "adult_stats",
        "city_counts",
    }
    tests = selected_tests(project, None, ["adults"])
    assert not tests & ADULTS_TESTS  # a test of an excluded node must not run on stale data
    assert "unique_people_id" in tests


def test_tests_follow_their_model(project):
    # Nothing is built yet: a relationships test runs only when its parent is built too.
    assert selected_tests(project, ["adults"]) == ADULTS_TESTS - {"relationships_adults_id"}
    assert selected_tests(project, ["+adults"]) >= ADULTS_TESTS
    assert selected_tests(project, ["unique_people_id"]) == {"unique_people_id"}
    assert selected(project, ["unique_people_id"]) == set()


def test_ls_orders_parents_first(project):
    order = [n.name for n in project.ls() if n.resource_type != "test"]
    assert set(order) == ALL_NODES
    for child, parent in [
        ("stg_people", "people"),
        ("adults", "stg_people"),
        ("city_counts", "adults"),
        ("adult_stats", "adults"),
        ("person_totals", "stg_visits"),
    ]:
        assert order.index(parent) < order.index(child)


def test_unknown_selector_suggests_a_name(project):
    with pytest.raises(UsageError, match=r"'adultz' matches no node; did you mean 'adults'"):
        project.ls(["adultz"])


def test_unparseable_selector(project):
    with pytest.raises(UsageError, match="cannot parse selector"):
        project.ls(["+"])


def test_cli_ls_select_ancestors(cli, mini_project):
    result = cli("ls", "--project-dir", mini_project, "--select", "+adults")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[:3] == ["people", "stg_people", "adults"]
    assert set(lines[3:]) == ADULTS_TESTS | {
        "not_null_people_age",
        "not_null_people_id",
        "unique_people_id",
    }


def test_cli_ls_json_is_one_object_per_line(cli, mini_project):
    result = cli("ls", "--project-dir", mini_project, "--output", "json", "-s", "person_totals")
    assert result.code == 0
    rows = [json.loads(line) for line in result.out.splitlines()]
    node = rows[0]
    assert node["name"] == "person_totals"
    assert node["materialized"] == "incremental"
    assert node["tags"] == ["marts", "inc"]
    assert sorted(node["depends_on"]) == ["stg_people", "stg_visits"]
    assert {r["name"] for r in rows[1:]} == {"not_null_person_totals_id", "unique_person_totals_id"}


def test_cli_ls_path_output(cli, mini_project):
    result = cli("ls", "--project-dir", mini_project, "--output", "path", "-s", "visits")
    assert result.out.splitlines()[0] == str(Path("seeds/visits.jsonl"))


def test_cli_unknown_select_exits_1_with_suggestion(cli, built_mini):
    from conftest import file_hash

    before = file_hash(built_mini / "mini.duckdb")
    result = cli("build", "--project-dir", built_mini, "--select", "adultz")
    assert result.code == 1
    assert "Error: --select/--exclude 'adultz' matches no node; did you mean 'adults'?" in (
        result.err
    )
    assert "Traceback" not in result.err
    assert file_hash(built_mini / "mini.duckdb") == before


def _node(name: str, *parents: str) -> Node:
    return Node(
        name=name,
        resource_type=MODEL if parents else SEED,
        path=Path(f"models/{name}.sql"),
        raw="".join(f"{{{{ ref('{p}') }}}}\n" for p in parents),
        depends_on=parents,
    )


def test_cycle_is_named():
    nodes = [_node("a"), _node("b", "a", "d"), _node("c", "b"), _node("d", "c")]
    with pytest.raises(ModelError) as error:
        Graph.build(nodes, [])
    message = str(error.value)
    assert "dependency cycle:" in message
    assert "remove one of these ref()s" in message
    cycle = message.split("dependency cycle: ")[1].split(";")[0].split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"b", "c", "d"}


def test_unknown_ref_names_node_file_and_line():
    nodes = [_node("a"), _node("b", "a", "zz")]
    with pytest.raises(ModelError) as error:
        Graph.build(nodes, [])
    assert error.value.path == str(Path("models/b.sql"))
    assert error.value.line == 2
    assert "b refers to 'zz', which is not a model, seed or step" in str(error.value)


def test_depth_limited_walks():
    graph = Graph.build([_node("a"), _node("b", "a"), _node("c", "b"), _node("d", "c")], [])
    assert graph.ancestors("d") == {"a", "b", "c"}
    assert graph.ancestors("d", 2) == {"b", "c"}
    assert graph.descendants("a", 1) == {"b"}
    assert graph.order(["d", "b", "c", "a"]) == ["a", "b", "c", "d"]
