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

from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from cpo.errors import ConfigurationError, ModelError
from cpo.personalization.roles import (  # the one table of roles
    CONTENT_ROLES,
    CUSTOMER_ROLES,
    PII_ROLES,
    REQUIRED,
    ROLES,
)
from cpo.personalization.sources_read import connection, describe, is_duckdb_spec, relation_of
from cpo.personalization.sources_spec import (
    CONFIG_FILE,
    DERIVED_COLUMNS,
    IDENTIFIER,
    SourceSpec,
    SourcesSettings,
    SourceView,
    columns_text,
    customer_columns,
    error_at,
    feature_columns,
    first_line,
    has_engagement,
    quote,
)

__all__ = [
    "CONTENT_ROLES",
    "CUSTOMER_ROLES",
    "PII_ROLES",
    "ROLES",
    "SourceCatalog",
    "SourceView",
    "SourcesSettings",
    "attach_sources",
    "customer_columns",
    "feature_columns",
    "has_engagement",
    "load_source",
    "source_view",
    "sources_settings",
]


class SourceCatalog:
    """What models see as the Jinja global ``sources``: each source checked on first use."""

    def __init__(self, root: Path, settings: SourcesSettings) -> None:
        self._root = root
        self._settings = settings
        self._views: dict[str, SourceView] = {}

    def __getattr__(self, name: str) -> SourceView:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> SourceView:
        if name not in self._views:
            try:
                self._views[name] = load_source(self._root, self._settings, name)
            except ConfigurationError as e:
                from cpo.personalization.segmentation import to_model_error

                raise to_model_error(e) from None
        return self._views[name]


def sources_settings(config: Any) -> SourcesSettings:
    """``sources:`` of a loaded project: the model that checked it when ``cpo.yml`` loaded."""
    return config.section("sources", SourcesSettings)


def source_view(config: Any, name: str) -> SourceView:
    """The checked source `name` of a loaded project (for Python steps)."""
    return load_source(config.root, sources_settings(config), name)


def load_source(root: Path, settings: SourcesSettings, name: str) -> SourceView:
    """Check ``sources.<name>`` (its settings validated at load) against its file; its view.

    Raises:
        ConfigurationError: naming the key, the file's columns and the block to write.
    """
    if name not in ROLES:
        raise ConfigurationError(f"unknown source {name!r}; sources are: {', '.join(ROLES)}")
    spec: SourceSpec | None = getattr(settings, name)
    if spec is None:
        raise ConfigurationError(
            f"sources.{name} is not set; add to cpo.yml:\n{_example_block(name)}\n"
            f"(python runner.py init --{name} FILE prints a block guessed from your file)",
            path=CONFIG_FILE,
            key=f"sources.{name}",
        )
    key = f"sources.{name}"
    roles = ROLES[name]
    unknown = [r for r in spec.columns if r not in roles]
    if unknown:
        raise error_at(
            root,
            f"{key}.columns.{unknown[0]}",
            f"{unknown[0]!r} is not a role; roles are: {_role_list(name)}. Keep other columns "
            f"with '{key}.attributes: [{unknown[0]}]' instead",
        )
    missing_required = [r for r in REQUIRED[name] if r not in spec.columns]
    relation, attach = relation_of(root, spec, key)
    file_columns = describe(root, relation, key, spec.path, attach)
    by_lower = {c.lower(): c for c, _ in file_columns}
    if missing_required:
        raise error_at(
            root,
            f"{key}.columns",
            f"role {missing_required[0]!r} is required but not mapped. "
            + _mapping_help(name, file_columns, spec),
        )
    expressions: dict[str, str] = {}
    absent: list[tuple[str, str]] = []
    for role, text in spec.columns.items():
        text = str(text).strip()
        if IDENTIFIER.match(text):
            if text.lower() not in by_lower:
                absent.append((role, text))
                continue
            expressions[role] = quote(by_lower[text.lower()])
        else:
            expressions[role] = _expression(root, f"{key}.columns.{role}", role, text)
    if absent:
        shown = ", ".join(f"{role}: {column}" for role, column in absent)
        raise error_at(
            root,
            f"{key}.columns.{absent[0][0]}",
            f"{spec.path} has no column(s) for {shown}. " + _mapping_help(name, file_columns, spec),
        )
    attributes, types = [], {}
    for index, attribute in enumerate(spec.attributes):
        where = f"{key}.attributes.{index}"
        if attribute.lower() not in by_lower:
            raise error_at(
                root,
                where,
                f"attribute {attribute!r} is not a column of {spec.path}; its columns are: "
                f"{columns_text(file_columns)}",
            )
        if attribute in roles or attribute in DERIVED_COLUMNS:
            raise error_at(
                root,
                where,
                f"attribute {attribute!r} has the name of a role or derived feature; map it "
                f"as a role under {key}.columns instead, or rename the column with a role "
                "expression",
            )
        if not IDENTIFIER.match(attribute):
            raise error_at(
                root,
                where,
                f"attribute {attribute!r} must be a plain name (letters, digits, _) so rules "
                "and merge tags can use it",
            )
        if attribute in attributes:
            raise error_at(root, where, f"attribute {attribute!r} is listed twice")
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


def attach_sources(config: Any, db: Any) -> None:
    """Attach (read-only) the DuckDB files that ``sources`` read tables from, on `db`.

    A build calls this on its connection before running models; it is a no-op for file
    sources. Each source is checked as at compile time.

    Raises:
        ConfigurationError: a source is invalid, or the engine cannot attach DuckDB files.
    """
    root = Path(config.root)
    settings = sources_settings(config)
    for name in ROLES:
        spec = getattr(settings, name)
        if spec is None or not is_duckdb_spec(spec):
            continue
        view = load_source(root, settings, name)
        if view.attach is None:
            continue
        from cpo.adapters.duckdb import Database

        if not isinstance(db, Database):  # only the DuckDB engine can attach a DuckDB file
            raise error_at(
                root,
                f"sources.{name}.path",
                "a table of a DuckDB file can only be read by the duckdb engine; export it "
                f"(COPY ... TO '{name}.parquet' (FORMAT parquet)) and point path at the file",
            )
        db.execute(view.attach)


def _expression(root: Path, key: str, role: str, text: str) -> str:
    """A role's SQL expression: one expression, no query, no statement; normalised."""
    try:
        parsed = sqlglot.parse(text, read="duckdb")
    except sqlglot.errors.ParseError as e:
        raise error_at(
            root, key, f"role {role!r}: cannot parse the expression {text!r}: {first_line(e)}"
        ) from None
    if len(parsed) != 1 or parsed[0] is None:
        raise error_at(root, key, f"role {role!r}: {text!r} must be a single SQL expression")
    tree = parsed[0]
    if isinstance(tree, exp.Query | exp.Command | exp.DDL | exp.DML) or tree.find(exp.Query):
        raise error_at(
            root,
            key,
            f"role {role!r}: {text!r} must be an expression over the file's columns "
            "(e.g. months_since_purchase * 30), not a query or statement",
        )
    return "(" + tree.sql(dialect="duckdb") + ")"


def _check_binds(root: Path, view: SourceView, key: str) -> None:
    # One statement binds every role (each describe re-reads the file's header); only when
    # it fails are the roles bound one by one, to name the one that fails.
    con = connection(view.attach)
    try:
        every = ", ".join(f"{sql} as r{i}" for i, sql in enumerate(view.expressions.values()))
        try:
            con.execute(f"describe select {every} from {view.relation}")
            return
        except ModelError:
            pass
        for role, sql in view.expressions.items():
            try:
                con.execute(f"describe select {sql} as x from {view.relation}")
            except ModelError as e:
                raise error_at(
                    root,
                    f"{key}.columns.{role}",
                    f"role {role!r}: the expression {sql} fails: {first_line(e)}. The "
                    f"file's columns are: {columns_text(view.file_columns)}",
                ) from None
    finally:
        con.close()


def _check_not_empty(root: Path, view: SourceView, key: str, shown: str) -> None:
    con = connection(view.attach)
    try:
        row = con.execute(f"select 1 from {view.relation} limit 1").fetchone()
    except ModelError as e:
        raise error_at(root, f"{key}.path", f"cannot read {shown!r}: {first_line(e)}") from None
    finally:
        con.close()
    if row is None:
        raise error_at(
            root,
            f"{key}.path",
            f"{shown!r} has no rows (only a header, or nothing); a build needs at least one "
            f"{'customer' if view.name == 'customers' else 'document'}",
        )


def _role_list(name: str) -> str:
    return ", ".join(ROLES[name])


def _mapping_help(name: str, file_columns: list[tuple[str, str]], spec: SourceSpec) -> str:
    from cpo.personalization.init import guess_block

    block = guess_block(name, spec.path, file_columns, spec.table)
    roles = "\n".join(f"  {role}: {meaning}" for role, meaning in ROLES[name].items())
    return (
        f"The file's columns are: {columns_text(file_columns)}.\nRoles:\n{roles}\n"
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
