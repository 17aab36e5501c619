"""Find seeds, SQL models, Python steps, documentation and data tests on disk."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpo.engine.config import ProjectConfig
from cpo.engine.nodes import MODEL, PYTHON, SEED, SEVERITIES, TEST, Node, TestSpec
from cpo.engine.yamlfile import YamlDocument, read_yaml
from cpo.errors import ConfigurationError, ModelError

SEED_SUFFIXES = (".csv", ".json", ".jsonl", ".ndjson")
GENERIC_TESTS = ("unique", "not_null", "accepted_values", "relationships")
_REF_IN_TEXT = re.compile(r"""ref\(\s*['"]([^'"]+)['"]\s*\)""")


@dataclass(frozen=True)
class Docs:
    """What ``schema.yml`` files say about one node."""

    description: str = ""
    columns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedProject:
    """Everything found on disk, before compilation."""

    nodes: list[Node]
    tests: list[Node]
    docs: Mapping[str, Docs]


def load_project(config: ProjectConfig) -> LoadedProject:
    """Find every node of the project and the tests declared for them.

    Raises:
        ConfigurationError: a ``schema.yml`` is malformed, or two nodes share a name.
    """
    docs, tests, declared = _load_schema_files(config)
    nodes = [*_seeds(config, docs), *_sql_models(config, docs), *_python_steps(config, docs)]
    _check_unique_names(config, nodes)
    _check_documented_nodes_exist(declared, {n.name for n in nodes})
    tests.extend(_singular_tests(config))
    return LoadedProject(nodes=nodes, tests=tests, docs=docs)


def _relative(config: ProjectConfig, path: Path) -> Path:
    return path.relative_to(config.root)


def _files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    if not folder.is_dir():
        return []
    wanted = tuple(suffixes)
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name.endswith(wanted) and not p.name.startswith((".", "_"))
    )


def _seeds(config: ProjectConfig, docs: Mapping[str, Docs]) -> list[Node]:
    nodes = []
    for path in _files(config.path("seeds"), SEED_SUFFIXES):
        name = path.name.split(".")[0]
        doc = docs.get(name, Docs())
        settings = {**config.seeds.get(name, {}), **doc.config}
        nodes.append(
            Node(
                name=name,
                resource_type=SEED,
                path=_relative(config, path),
                config={"materialized": "table", **settings},
                description=doc.description,
                columns=doc.columns,
            )
        )
    return nodes


def _sql_models(config: ProjectConfig, docs: Mapping[str, Docs]) -> list[Node]:
    nodes = []
    for path in _files(config.path("models"), (".sql",)):
        doc = docs.get(path.stem, Docs())
        nodes.append(
            Node(
                name=path.stem,
                resource_type=MODEL,
                path=_relative(config, path),
                raw=path.read_text(encoding="utf-8"),
                config={**_folder_config(config, path), **doc.config},
                description=doc.description,
                columns=doc.columns,
            )
        )
    return nodes


def _folder_config(config: ProjectConfig, path: Path) -> dict[str, Any]:
    """Config from ``cpo.yml`` ``models:`` by folder, e.g. ``{staging: {materialized: view}}``."""
    merged: dict[str, Any] = {}
    level: Any = config.models
    for part in path.relative_to(config.path("models")).parent.parts:
        level = level.get(part, {}) if isinstance(level, Mapping) else {}
        merged.update({k: v for k, v in level.items() if not isinstance(v, Mapping)})
    top = {k: v for k, v in config.models.items() if not isinstance(v, Mapping)}
    return {**top, **merged}


def _python_steps(config: ProjectConfig, docs: Mapping[str, Docs]) -> list[Node]:
    nodes = []
    for path in _files(config.path("udfs"), (".py",)):
        source = path.read_text(encoding="utf-8")
        rel = _relative(config, path)
        try:
            tree = ast.parse(source, filename=str(rel))
        except SyntaxError as e:
            raise ModelError(f"Python syntax error: {e.msg}", path=str(rel), line=e.lineno) from e
        if not _defines_function(tree, "model"):
            continue  # a file of SQL functions or helpers, not a step
        doc = docs.get(path.stem, Docs())
        nodes.append(
            Node(
                name=path.stem,
                resource_type=PYTHON,
                path=rel,
                raw=source,
                config={"materialized": "table", **doc.config},
                depends_on=tuple(dict.fromkeys(_ref_literals(tree))),
                description=doc.description,
                columns=doc.columns,
            )
        )
    return nodes


def _defines_function(tree: ast.Module, name: str) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


def _ref_literals(tree: ast.Module) -> list[str]:
    """The names in ``<anything>.ref("name")`` calls with a literal argument."""
    refs = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "ref"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            refs.append(node.args[0].value)
    return refs


def _singular_tests(config: ProjectConfig) -> list[Node]:
    tests = []
    for path in _files(config.path("data_tests"), (".sql",)):
        raw = path.read_text(encoding="utf-8")
        refs = _REF_IN_TEXT.findall(raw)
        tests.append(
            Node(
                name=path.stem,
                resource_type=TEST,
                path=_relative(config, path),
                raw=raw,
                test=TestSpec(kind="singular", model=refs[0] if refs else ""),
            )
        )
    return tests


def _check_unique_names(config: ProjectConfig, nodes: list[Node]) -> None:
    seen: dict[str, Node] = {}
    for node in nodes:
        if node.name in seen:
            raise ConfigurationError(
                f"two nodes are named {node.name!r}: {seen[node.name].path} and {node.path}; "
                "rename one of them",
                path=str(node.path),
            )
        seen[node.name] = node


def _check_documented_nodes_exist(
    declared: Mapping[str, tuple[YamlDocument, str]], names: set[str]
) -> None:
    """A ``schema.yml`` entry for no node would silently drop its tests: say so instead."""
    import difflib

    for name, (doc, key) in declared.items():
        if name not in names:
            close = difflib.get_close_matches(name, sorted(names), n=3)
            hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
            raise doc.error(
                f"{key}.name",
                f"no model, seed or step is named {name!r}, so its docs and tests would be "
                f"ignored; {hint}Fix the name or remove the entry",
            )


def _load_schema_files(
    config: ProjectConfig,
) -> tuple[dict[str, Docs], list[Node], dict[str, tuple[YamlDocument, str]]]:
    docs: dict[str, Docs] = {}
    tests: list[Node] = []
    declared: dict[str, tuple[YamlDocument, str]] = {}
    folders = [config.path("models"), config.path("seeds"), config.path("udfs")]
    for folder in folders:
        for path in _files(folder, (".yml", ".yaml")):
            doc = read_yaml(path, display_path=str(_relative(config, path)))
            if not isinstance(doc.data, Mapping):
                raise doc.error("(top level)", "expected a mapping with 'models:' or 'seeds:'")
            for section in ("models", "seeds"):
                entries = doc.data.get(section) or []
                if not isinstance(entries, list):
                    raise doc.error(section, "expected a list of {name: ..., columns: [...]}")
                for index, entry in enumerate(entries):
                    key = f"{section}.{index}"
                    name, node_docs, node_tests = _schema_entry(doc, key, entry)
                    if name in declared:
                        raise doc.error(
                            f"{key}.name",
                            f"{name!r} is already described in {declared[name][0].path}; "
                            "keep one entry per node",
                        )
                    declared[name] = (doc, key)
                    docs[name] = node_docs
                    tests.extend(node_tests)
    return docs, _dedupe_test_names(tests), declared


def _schema_entry(doc: YamlDocument, key: str, entry: Any) -> tuple[str, Docs, list[Node]]:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise doc.error(key, "expected a mapping with a 'name'")
    name = entry["name"]
    columns: dict[str, Mapping[str, Any]] = {}
    tests: list[Node] = []
    for c_index, column in enumerate(entry.get("columns") or []):
        c_key = f"{key}.columns.{c_index}"
        if not isinstance(column, Mapping) or not isinstance(column.get("name"), str):
            raise doc.error(c_key, "expected a mapping with a 'name'")
        columns[column["name"]] = column
        specs = column.get("tests", column.get("data_tests")) or []
        for t_index, spec in enumerate(specs):
            tests.append(_generic_test(doc, f"{c_key}.tests.{t_index}", name, column["name"], spec))
    for t_index, spec in enumerate(entry.get("tests", entry.get("data_tests")) or []):
        tests.append(_generic_test(doc, f"{key}.tests.{t_index}", name, None, spec))
    config = entry.get("config") or {}
    if not isinstance(config, Mapping):
        raise doc.error(f"{key}.config", "expected a mapping")
    return name, Docs(str(entry.get("description", "")), columns, dict(config)), tests


def _generic_test(doc: YamlDocument, key: str, model: str, column: str | None, spec: Any) -> Node:
    args: dict[str, Any]
    if isinstance(spec, str):
        kind, args = spec, {}
    elif isinstance(spec, Mapping) and len(spec) == 1:
        kind, given = next(iter(spec.items()))
        args = dict(given or {})
    else:
        raise doc.error(key, "expected a test name or {test_name: {arguments}}")
    if kind not in GENERIC_TESTS:
        raise doc.error(key, f"unknown test {kind!r}; expected one of: {', '.join(GENERIC_TESTS)}")
    severity = str((args.pop("config", None) or {}).get("severity", args.pop("severity", "error")))
    if severity.lower() not in SEVERITIES:
        raise doc.error(key, f"severity must be 'error' or 'warn', got {severity!r}")
    if kind == "accepted_values" and not isinstance(args.get("values"), list):
        raise doc.error(key, "accepted_values needs 'values: [...]'")
    if kind == "relationships":
        if not args.get("to") or not args.get("field"):
            raise doc.error(key, "relationships needs 'to: ref(\"model\")' and 'field: column'")
        match = _REF_IN_TEXT.search(str(args["to"]))
        args["to"] = match.group(1) if match else str(args["to"])
    if column is None and kind != "relationships":
        args.setdefault("column", args.get("column_name"))
    spec_value = TestSpec(kind, model, column or args.get("column"), args, severity.lower())
    depends = (model, args["to"]) if kind == "relationships" else (model,)
    return Node(
        name="_".join(p for p in (kind, model, spec_value.column or "") if p),
        resource_type=TEST,
        path=doc.path,
        depends_on=depends,
        test=spec_value,
    )


def _dedupe_test_names(tests: list[Node]) -> list[Node]:
    counts: dict[str, int] = {}
    result = []
    for test in tests:
        counts[test.name] = counts.get(test.name, 0) + 1
        n = counts[test.name]
        result.append(test if n == 1 else test.with_(name=f"{test.name}_{n}"))
    return result
