"""The input contract: ``sources:`` in ``cpo.yml`` maps a file's columns to the roles models use.

    sources:
      customers:
        path: data/customers.parquet        # CSV, Parquet, JSON(L), a glob, or a DuckDB file
        # table: customers                  # with a .duckdb/.db path: the table to read
        columns:                            # role -> column name or SQL expression over columns
          customer_id: id
          recency_days: months_since_purchase * 30
          monetary: spend_last_year
        attributes: [area, channel]         # other columns, carried through unchanged

Only ``customer_id`` (``document_id``, ``title`` and ``body`` for content) is required; models
compute what the mapped roles allow. Everything is checked when the project compiles, before
any build starts: a missing column, an expression that does not bind, a role mapped twice, an
empty file. Errors name the key, list the file's columns and show the block to write.

Models reach a source through the Jinja global ``sources`` (``sources.customers.relation``,
``.expression(role)``, ``.has(role)``, ``.attributes``); Python steps call `source_view`.
"""

from __future__ import annotations

import glob as globlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlglot
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlglot import exp

from cpo.errors import ConfigurationError, ModelError
from cpo.personalization.roles import PII_ROLES, REQUIRED, ROLES  # the one table of roles

CONFIG_FILE = "cpo.yml"

# Columns customer_features derives; an attribute may not take one of these names.
DERIVED_COLUMNS = frozenset(
    {
        "tenure_days",
        "r_score",
        "f_score",
        "m_score",
        "rfm_score",
        "rfm_code",
        "engagement_score",
        "email_is_valid",
        "segment_id",
        "segment_name",
        "segment_description",
    }
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORMATS = ("csv", "parquet", "json", "duckdb")
_NUMERIC = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|FLOAT|"
    r"DOUBLE|REAL|DECIMAL.*)$"
)


class SourceSpec(BaseModel):
    """One input file and how its columns map to roles (``sources.<name>``)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="CSV, Parquet, JSON(L), a glob or a .duckdb file")
    format: str | None = Field(default=None, description="csv | parquet | json | duckdb")
    table: str | None = Field(
        default=None,
        description="with a DuckDB file: the table (or view) to read, 'name' or 'schema.name'",
    )
    columns: dict[str, str] = Field(description="role -> column name or SQL expression")
    attributes: list[str] = Field(default_factory=list, description="columns carried through")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None and value not in _FORMATS:
            raise ValueError(f"expected one of {', '.join(_FORMATS)}")
        return value


class SourcesSettings(BaseModel):
    """The ``sources:`` block: the customers file and, optionally, the content file."""

    model_config = ConfigDict(extra="forbid")

    customers: SourceSpec | None = None
    content: SourceSpec | None = None
    memory_limit: str | None = Field(
        default=None, description="DuckDB memory_limit for builds, e.g. '2GB'"
    )

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
            r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB)", value
        ):
            raise ValueError("expected a size such as '2GB' or '512MB'")
        return value


def sql_string(text: str) -> str:
    """A SQL string literal, by the project's one quoting helper
    (`cpo.engine.compile.sql_literal`)."""
    from cpo.engine.compile import sql_literal

    return sql_literal(str(text))


def quote(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@dataclass
class SourceView:
    """A checked source: where it is read from and the SQL of each mapped role.

    Attributes:
        name: ``customers`` or ``content``.
        relation: The FROM clause that reads the file (a table function call).
        expressions: Role -> SQL expression over the file's columns.
        attributes: Carried-through column names, in order.
        attribute_types: Attribute -> DuckDB type.
        file_columns: (column, type) of the file.
        attach: For a table of another DuckDB file: the ``ATTACH ... (READ_ONLY)`` statement a
            connection runs before reading `relation` (see `attach_sources`); else None.
    """

    name: str
    relation: str
    expressions: dict[str, str]
    attributes: list[str]
    attribute_types: dict[str, str]
    file_columns: list[tuple[str, str]] = field(default_factory=list)
    attach: str | None = None

    @property
    def roles(self) -> list[str]:
        """The mapped roles, in the contract's order."""
        return [r for r in ROLES[self.name] if r in self.expressions]

    def has(self, *roles: str) -> bool:
        """Whether every one of `roles` is mapped."""
        return all(r in self.expressions for r in roles)

    def expression(self, role: str) -> str:
        """The SQL of a mapped role."""
        return self.expressions[role]

    @property
    def numeric_attributes(self) -> list[str]:
        """Attributes of a numeric or boolean type (scaled by KMeans)."""
        return [a for a in self.attributes if _is_numeric(self.attribute_types[a])]

    @property
    def categorical_attributes(self) -> list[str]:
        """The other attributes (one-hot encoded by KMeans)."""
        return [a for a in self.attributes if not _is_numeric(self.attribute_types[a])]

    @property
    def pii_columns(self) -> list[str]:
        """Mapped roles that hold personal data."""
        return [r for r in self.roles if r in PII_ROLES]


def _is_numeric(kind: str) -> bool:
    return bool(_NUMERIC.match(kind.upper())) or kind.upper() == "BOOLEAN"


def feature_columns(view: SourceView) -> list[str]:
    """The columns ``customer_features`` has for a customers source (mirrors its SQL)."""
    has = view.has
    columns = ["customer_id"]
    columns += [r for r in ("tier", "age", "signup_date") if has(r)]
    if has("signup_date"):
        columns.append("tenure_days")
    if has("recency_days"):
        columns.append("recency_days")
    if has("frequency"):
        columns.append("frequency")
    if has("avg_order_value"):
        columns.append("avg_order_value")
    monetary = has("monetary") or has("frequency", "avg_order_value")
    if monetary:
        columns.append("monetary")
    scores = [
        s
        for s, ok in (
            ("r_score", has("recency_days")),
            ("f_score", has("frequency")),
            ("m_score", monetary),
        )
        if ok
    ]
    columns += scores
    if scores:
        columns += ["rfm_score", "rfm_code"]
    columns += [r for r in ("open_rate", "click_rate", "last_engagement_days") if has(r)]
    if has_engagement(view):
        columns.append("engagement_score")
    return columns + list(view.attributes)


def has_engagement(view: SourceView) -> bool:
    """Whether an engagement score can be computed (any of its inputs is mapped)."""
    return any(view.has(r) for r in ("open_rate", "click_rate", "last_engagement_days"))


def customer_columns(view: SourceView) -> list[str]:
    """The columns of ``stg_customers`` (mapped roles, email_is_valid, attributes)."""
    columns = list(view.roles)
    if view.has("email"):
        columns.insert(columns.index("email") + 1, "email_is_valid")
    return columns + list(view.attributes)


class SourceCatalog:
    """What models see as the Jinja global ``sources``: each source checked on first use."""

    def __init__(self, root: Path, raw: Any) -> None:
        self._root = root
        self._raw = raw
        self._views: dict[str, SourceView] = {}

    def __getattr__(self, name: str) -> SourceView:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> SourceView:
        if name not in self._views:
            try:
                self._views[name] = load_source(self._root, self._raw, name)
            except ConfigurationError as e:
                from cpo.personalization.segmentation import to_model_error

                raise to_model_error(e) from None
        return self._views[name]


def raw_sources(root: Path) -> Any:
    """The raw ``sources:`` block of ``cpo.yml`` (None when absent)."""
    path = root / CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None  # the configuration loader reports these
    return data.get("sources") if isinstance(data, Mapping) else None


def source_view(config: Any, name: str) -> SourceView:
    """The checked source `name` of a loaded project (for Python steps)."""
    return load_source(config.root, raw_sources(config.root), name)


def memory_limit(root: Path) -> str | None:
    """``sources.memory_limit`` from ``cpo.yml``, validated (None when unset)."""
    raw = raw_sources(root)
    if not isinstance(raw, Mapping) or raw.get("memory_limit") is None:
        return None
    return _settings(root, raw).memory_limit


def prepare_build(root: Path, db: Any) -> None:
    """Ready a build's connection: ``sources.memory_limit`` and the attached DuckDB sources."""
    if limit := memory_limit(root):
        db.execute(f"set memory_limit = {sql_string(limit)}")
    attach_sources(root, db)


def _error(root: Path, key: str, message: str) -> ConfigurationError:
    return ConfigurationError(message, path=CONFIG_FILE, line=_line_of(root, key), key=key)


def _line_of(root: Path, key: str) -> int | None:
    try:
        from cpo.engine.yamlfile import read_yaml

        return read_yaml(root / CONFIG_FILE, display_path=CONFIG_FILE).line_of(key)
    except Exception:  # only a hint
        return None


def _settings(root: Path, raw: Any) -> SourcesSettings:
    try:
        return SourcesSettings.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        key = "sources" + (f".{loc}" if loc else "")
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = (
                "unknown key; expected customers, content or memory_limit"
                if len(first["loc"]) == 1
                else "unknown key; expected path, columns, attributes, format or table"
            )
        elif first["type"] == "missing":
            message = "is required"
        raise _error(root, key, message) from None


def load_source(root: Path, raw: Any, name: str) -> SourceView:
    """Check ``sources.<name>`` against its file and return its view.

    Raises:
        ConfigurationError: naming the key, the file's columns and the block to write.
    """
    if name not in ROLES:
        raise ConfigurationError(f"unknown source {name!r}; sources are: {', '.join(ROLES)}")
    if not isinstance(raw, Mapping) or raw.get(name) is None:
        raise ConfigurationError(
            f"sources.{name} is not set; add to cpo.yml:\n{_example_block(name)}\n"
            f"(python runner.py init --{name} FILE prints a block guessed from your file)",
            path=CONFIG_FILE,
            key=f"sources.{name}",
        )
    spec = getattr(_settings(root, raw), name)
    key = f"sources.{name}"
    _check_duplicate_roles(root, name)
    roles = ROLES[name]
    unknown = [r for r in spec.columns if r not in roles]
    if unknown:
        raise _error(
            root,
            f"{key}.columns.{unknown[0]}",
            f"{unknown[0]!r} is not a role; roles are: {_role_list(name)}. Keep other columns "
            f"with '{key}.attributes: [{unknown[0]}]' instead",
        )
    missing_required = [r for r in REQUIRED[name] if r not in spec.columns]
    relation, attach = _relation(root, spec, key)
    file_columns = _describe(root, relation, key, spec.path, attach)
    by_lower = {c.lower(): c for c, _ in file_columns}
    if missing_required:
        raise _error(
            root,
            f"{key}.columns",
            f"role {missing_required[0]!r} is required but not mapped. "
            + _mapping_help(name, file_columns, spec),
        )
    expressions: dict[str, str] = {}
    absent: list[tuple[str, str]] = []
    for role, text in spec.columns.items():
        text = str(text).strip()
        if _IDENTIFIER.match(text):
            if text.lower() not in by_lower:
                absent.append((role, text))
                continue
            expressions[role] = quote(by_lower[text.lower()])
        else:
            expressions[role] = _expression(root, f"{key}.columns.{role}", role, text)
    if absent:
        shown = ", ".join(f"{role}: {column}" for role, column in absent)
        raise _error(
            root,
            f"{key}.columns.{absent[0][0]}",
            f"{spec.path} has no column(s) for {shown}. " + _mapping_help(name, file_columns, spec),
        )
    attributes, types = [], {}
    for index, attribute in enumerate(spec.attributes):
        where = f"{key}.attributes.{index}"
        if attribute.lower() not in by_lower:
            raise _error(
                root,
                where,
                f"attribute {attribute!r} is not a column of {spec.path}; its columns are: "
                f"{_columns_text(file_columns)}",
            )
        if attribute in roles or attribute in DERIVED_COLUMNS:
            raise _error(
                root,
                where,
                f"attribute {attribute!r} has the name of a role or derived feature; map it "
                f"as a role under {key}.columns instead, or rename the column with a role "
                "expression",
            )
        if not _IDENTIFIER.match(attribute):
            raise _error(
                root,
                where,
                f"attribute {attribute!r} must be a plain name (letters, digits, _) so rules "
                "and merge tags can use it",
            )
        if attribute in attributes:
            raise _error(root, where, f"attribute {attribute!r} is listed twice")
        actual = by_lower[attribute.lower()]
        attributes.append(attribute)
        types[attribute] = dict(file_columns)[actual]
    view = SourceView(
        name=name,
        relation=relation,
        expressions=expressions,
        attributes=attributes,
        attribute_types=types,
        file_columns=file_columns,
        attach=attach,
    )
    _check_binds(root, view, key)
    _check_not_empty(root, view, key, spec.path)
    return view


def _check_duplicate_roles(root: Path, name: str) -> None:
    """A role written twice under ``columns:``: YAML keeps the last one silently; refuse."""
    try:
        node = yaml.compose((root / CONFIG_FILE).read_text(encoding="utf-8"))
    except Exception:
        return
    for step in ("sources", name, "columns"):
        if not isinstance(node, yaml.MappingNode):
            return
        node = next((v for k, v in node.value if k.value == step), None)
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        role = key_node.value
        if role in seen:
            raise ConfigurationError(
                f"role {role!r} is mapped twice (lines {seen[role]} and "
                f"{key_node.start_mark.line + 1}); keep one mapping per role",
                path=CONFIG_FILE,
                line=key_node.start_mark.line + 1,
                key=f"sources.{name}.columns.{role}",
            )
        seen[role] = key_node.start_mark.line + 1


def _relation(root: Path, spec: SourceSpec, key: str) -> tuple[str, str | None]:
    """The FROM clause that reads the source, and the ATTACH it needs (None for files)."""
    path = Path(spec.path)
    full = path if path.is_absolute() else root / path
    pattern = str(full)
    matches = sorted(globlib.glob(pattern)) if globlib.has_magic(pattern) else []
    if globlib.has_magic(pattern) and not matches:
        raise _error(root, f"{key}.path", f"no file matches {spec.path!r}; fix the path or glob")
    if not globlib.has_magic(pattern) and not full.is_file():
        raise _error(
            root,
            f"{key}.path",
            f"{spec.path!r} does not exist (paths are relative to the project folder)",
        )
    if all(Path(f).stat().st_size == 0 for f in (matches or [pattern])):
        raise _error(
            root,
            f"{key}.path",
            f"{spec.path!r} is empty; a build needs a header and at least one row",
        )
    fmt = spec.format or _format_of(matches[0] if matches else pattern)
    if fmt is None:
        raise _error(
            root,
            f"{key}.path",
            f"cannot tell the format of {spec.path!r} from its name; add "
            f"'format: csv' (or parquet, json, duckdb) under {key}",
        )
    if spec.table is not None and fmt != "duckdb":
        raise _error(
            root,
            f"{key}.table",
            f"'table' names a table of a DuckDB file, but {spec.path!r} is read as {fmt}; "
            f"remove 'table', or point path at a .duckdb file (or add 'format: duckdb')",
        )
    literal = sql_string(pattern)
    if fmt == "csv":
        return f"read_csv({literal}, header = true, union_by_name = true)", None
    if fmt == "parquet":
        return f"read_parquet({literal}, union_by_name = true)", None
    if fmt == "json":
        return f"read_json_auto({literal})", None
    return _duckdb_table(root, spec, key, full)


def _duckdb_table(root: Path, spec: SourceSpec, key: str, full: Path) -> tuple[str, str]:
    """``<alias>.<schema>.<table>`` of a DuckDB file attached read-only, and its ATTACH."""
    from cpo.engine.compile import sql_identifier

    if globlib.has_magic(str(full)):
        raise _error(root, f"{key}.path", "a DuckDB source is one file, not a glob")
    if full.resolve() in _own_databases(root):
        raise _error(
            root,
            f"{key}.path",
            f"{spec.path!r} is this project's own database: every build replaces it, so it "
            "cannot also be an input. Keep your customers in another DuckDB file (or a "
            "CSV/Parquet file) and point path at that",
        )
    parts = (spec.table or "").split(".")
    if not spec.table or len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
        raise _error(
            root,
            f"{key}.table",
            f"reading {spec.path!r} needs the table to read: add 'table: <name>' (or "
            f"'table: <schema>.<name>') under {key}; the file's tables are: "
            + (_tables_text(_tables(root, full, key, spec.path)) or "none"),
        )
    schema, table = parts if len(parts) == 2 else ("main", parts[0])
    tables = _tables(root, full, key, spec.path)
    match = next(
        ((s, t) for s, t in tables if s.lower() == schema.lower() and t.lower() == table.lower()),
        None,
    )
    if match is None:
        raise _error(
            root,
            f"{key}.table",
            f"{spec.path!r} has no table {spec.table!r}; its tables are: "
            + (_tables_text(tables) or "none (the file is empty)"),
        )
    alias = _ALIAS + spec_name(key)
    attach = f"attach {sql_string(str(full))} as {sql_identifier(alias)} (read_only)"
    relation = ".".join(quote(p) for p in (alias, *match))
    return relation, attach


_ALIAS = "cpo_source_"


def spec_name(key: str) -> str:
    """``customers`` from ``sources.customers``."""
    return key.rsplit(".", 1)[-1]


def _own_databases(root: Path) -> set[Path]:
    """The project's own built databases (``cpo.duckdb`` and every target's ``database``)."""
    paths = {(root / "cpo.duckdb").resolve()}
    try:
        data = yaml.safe_load((root / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return paths
    targets = data.get("targets") if isinstance(data, Mapping) else None
    for target in (targets or {}).values() if isinstance(targets, Mapping) else ():
        database = target.get("database") if isinstance(target, Mapping) else None
        if isinstance(database, str) and database:
            paths.add((root / database).resolve())
    return paths


def _tables(root: Path, full: Path, key: str, shown: str) -> list[tuple[str, str]]:
    """(schema, name) of the tables and views in a DuckDB file, opened read-only."""
    from cpo.adapters.duckdb import Database  # the one module that talks to DuckDB

    try:
        con = Database(full, read_only=True)
    except ModelError as e:
        text = _first_line(e)
        if "lock" in text.lower():
            why = "another program has it open for writing; close that program (or copy the file)"
        else:
            why = f"it is not a DuckDB database this version can read ({text})"
        raise _error(root, f"{key}.path", f"cannot open {shown!r}: {why}") from None
    try:
        _, rows = con.fetch(
            "select schema_name, table_name from duckdb_tables() where database_name = "
            "current_database() union all select schema_name, view_name from duckdb_views() "
            "where database_name = current_database() and not internal order by 1, 2"
        )
    finally:
        con.close()
    return [(str(s), str(t)) for s, t in rows]


def _tables_text(tables: list[tuple[str, str]]) -> str:
    return ", ".join(t if s == "main" else f"{s}.{t}" for s, t in tables)


def attach_sources(root: Path, db: Any) -> None:
    """Attach (read-only) the DuckDB files that ``sources`` read tables from, on `db`.

    A build calls this on its connection before running models; it is a no-op for file
    sources. Each source is checked as at compile time.

    Raises:
        ConfigurationError: a source is invalid, or the engine cannot attach DuckDB files.
    """
    raw = raw_sources(root)
    if not isinstance(raw, Mapping):
        return
    for name in ROLES:
        spec = raw.get(name)
        if not isinstance(spec, Mapping) or not _is_duckdb_spec(spec):
            continue
        view = load_source(root, raw, name)
        if view.attach is None:
            continue
        from cpo.adapters.duckdb import Database

        if not isinstance(db, Database):  # only the DuckDB engine can attach a DuckDB file
            raise _error(
                root,
                f"sources.{name}.path",
                "a table of a DuckDB file can only be read by the duckdb engine; export it "
                f"(COPY ... TO '{name}.parquet' (FORMAT parquet)) and point path at the file",
            )
        db.execute(view.attach)


def _is_duckdb_spec(spec: Mapping[str, Any]) -> bool:
    path = spec.get("path")
    return spec.get("format") == "duckdb" or (
        isinstance(path, str) and _format_of(path) == "duckdb"
    )


def _format_of(path: str) -> str | None:
    name = path.lower()
    for suffix, fmt in (
        (".csv", "csv"),
        (".csv.gz", "csv"),
        (".tsv", "csv"),
        (".txt", "csv"),
        (".parquet", "parquet"),
        (".json", "json"),
        (".jsonl", "json"),
        (".ndjson", "json"),
        (".duckdb", "duckdb"),
        (".db", "duckdb"),
    ):
        if name.endswith(suffix):
            return fmt
    return None


def _check_utf8(root: Path, shown: str) -> None:
    """Raise naming the first non-UTF-8 byte (file:line: column) of the CSV files of `shown`."""
    from cpo.engine.yamlfile import decode_utf8

    for path in sorted(root.glob(shown)) if not Path(shown).is_absolute() else [Path(shown)]:
        if path.suffix.lower() in (".csv", ".tsv", ".txt") and path.is_file():
            decode_utf8(path.read_bytes(), shown if "*" not in shown else str(path.name))


def _connection(attach: str | None = None) -> Any:
    from cpo.adapters.duckdb import Database  # the one module that talks to DuckDB

    db = Database(":memory:")
    if attach:
        db.execute(attach)
    return db


def _describe(
    root: Path, relation: str, key: str, shown: str, attach: str | None = None
) -> list[tuple[str, str]]:
    try:
        con = _connection(attach)
    except ModelError as e:
        raise _error(root, f"{key}.path", f"cannot read {shown!r}: {_first_line(e)}") from None
    try:
        rows = con.execute(f"describe select * from {relation}").fetchall()
    except ModelError as e:
        _check_utf8(root, shown)  # a bad byte is named with its file, line and column
        raise _error(root, f"{key}.path", f"cannot read {shown!r}: {_first_line(e)}") from None
    finally:
        con.close()
    if not rows:
        raise _error(root, f"{key}.path", f"{shown!r} has no columns; is it empty?")
    return [(str(r[0]), str(r[1])) for r in rows]


def _first_line(error: Exception) -> str:
    # DuckDB's message without "Original Line: ..." (it would echo a customer's row).
    text = str(error).split("Original Line")[0].strip()
    return " ".join(text.splitlines()[:2])[:300]


def _expression(root: Path, key: str, role: str, text: str) -> str:
    """A role's SQL expression: one expression, no query, no statement; normalised."""
    try:
        parsed = sqlglot.parse(text, read="duckdb")
    except sqlglot.errors.ParseError as e:
        raise _error(
            root, key, f"role {role!r}: cannot parse the expression {text!r}: {_first_line(e)}"
        ) from None
    if len(parsed) != 1 or parsed[0] is None:
        raise _error(root, key, f"role {role!r}: {text!r} must be a single SQL expression")
    tree = parsed[0]
    if isinstance(tree, exp.Query | exp.Command | exp.DDL | exp.DML) or tree.find(exp.Query):
        raise _error(
            root,
            key,
            f"role {role!r}: {text!r} must be an expression over the file's columns "
            "(e.g. months_since_purchase * 30), not a query or statement",
        )
    return "(" + tree.sql(dialect="duckdb") + ")"


def _check_binds(root: Path, view: SourceView, key: str) -> None:
    con = _connection(view.attach)
    try:
        for role, sql in view.expressions.items():
            try:
                con.execute(f"describe select {sql} as x from {view.relation}")
            except ModelError as e:
                raise _error(
                    root,
                    f"{key}.columns.{role}",
                    f"role {role!r}: the expression {sql} fails: {_first_line(e)}. The "
                    f"file's columns are: {_columns_text(view.file_columns)}",
                ) from None
    finally:
        con.close()


def _check_not_empty(root: Path, view: SourceView, key: str, shown: str) -> None:
    con = _connection(view.attach)
    try:
        row = con.execute(f"select 1 from {view.relation} limit 1").fetchone()
    except ModelError as e:
        raise _error(root, f"{key}.path", f"cannot read {shown!r}: {_first_line(e)}") from None
    finally:
        con.close()
    if row is None:
        raise _error(
            root,
            f"{key}.path",
            f"{shown!r} has no rows (only a header, or nothing); a build needs at least one "
            f"{'customer' if view.name == 'customers' else 'document'}",
        )


def _columns_text(columns: list[tuple[str, str]]) -> str:
    return ", ".join(f"{c} ({t.lower()})" for c, t in columns)


def _role_list(name: str) -> str:
    return ", ".join(ROLES[name])


def _mapping_help(name: str, file_columns: list[tuple[str, str]], spec: SourceSpec) -> str:
    from cpo.personalization.init import guess_block

    block = guess_block(name, spec.path, file_columns)
    roles = "\n".join(f"  {role}: {meaning}" for role, meaning in ROLES[name].items())
    return (
        f"The file's columns are: {_columns_text(file_columns)}.\nRoles:\n{roles}\n"
        f"Map each role you have to a column name or SQL expression in cpo.yml, e.g.:\n{block}"
    )


def _example_block(name: str) -> str:
    if name == "customers":
        return (
            "sources:\n  customers:\n    path: data/customers.csv\n    columns:\n"
            "      customer_id: id\n      recency_days: days_since_last_purchase\n"
            "    attributes: []"
        )
    return (
        "sources:\n  content:\n    path: data/content.csv\n    columns:\n"
        "      document_id: id\n      title: title\n      body: body"
    )
