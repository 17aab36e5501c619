"""The input contract's vocabulary: roles, the ``sources:`` settings and a checked source's view.

`cpo.personalization.sources` checks a ``sources.<name>`` block against its file and returns a
`SourceView`; `cpo.personalization.sources_read` reads the files. This module holds what both
(and the models, through the view) share.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from cpo.engine.settings import NonEmptyStr, Section
from cpo.errors import ConfigurationError
from cpo.personalization.roles import PII_ROLES, ROLES  # the one table of roles

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
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Format = Literal["csv", "parquet", "json", "duckdb"]
FORMATS: tuple[str, ...] = get_args(Format)
_NUMERIC = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|FLOAT|"
    r"DOUBLE|REAL|DECIMAL.*)$"
)


class SourceSpec(Section):
    """One input file and how its columns map to roles (``sources.<name>``)."""

    path: NonEmptyStr = Field(description="CSV, Parquet, JSON(L), a glob or a .duckdb file")
    format: Format | None = Field(default=None, description="csv | parquet | json | duckdb")
    table: str | None = Field(
        default=None,
        description="with a DuckDB file: the table (or view) to read, 'name' or 'schema.name'",
    )
    columns: dict[str, str] = Field(description="role -> column name or SQL expression")
    attributes: list[str] = Field(default_factory=list, description="columns carried through")


class SourcesSettings(Section):
    """The ``sources:`` block: the customers file and, optionally, the content file.

    Declared to the engine by `cpo.personalization.plugin` (``cpo_settings_sections``), so it is
    checked when ``cpo.yml`` loads; `ProjectConfig.section("sources", SourcesSettings)` is that
    instance. DuckDB's memory limit is a target's (``targets.<name>.memory_limit``).
    """

    customers: SourceSpec | None = None
    content: SourceSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _memory_limit_moved(cls, data: Any) -> Any:
        # Its older place: say where it went rather than only "unknown key".
        if isinstance(data, Mapping) and data.get("memory_limit") is not None:
            raise ValueError(
                "memory_limit: DuckDB's memory limit is a target setting now: move it to "
                f"'targets.<name>.memory_limit: {data['memory_limit']}' (e.g. under "
                "targets.offline) and remove it from sources"
            )
        return data


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


def error_at(root: Path, key: str, message: str) -> ConfigurationError:
    """A configuration error at `key` of ``cpo.yml`` (with its line when it can be found)."""
    return ConfigurationError(message, path=CONFIG_FILE, line=_line_of(root, key), key=key)


def _line_of(root: Path, key: str) -> int | None:
    try:
        from cpo.engine.yamlfile import read_yaml

        return read_yaml(root / CONFIG_FILE, display_path=CONFIG_FILE).line_of(key)
    except Exception:  # only a hint
        return None


def first_line(error: Exception) -> str:
    """DuckDB's message without "Original Line: ..." (it would echo a customer's row)."""
    text = str(error).split("Original Line")[0].strip()
    return " ".join(text.splitlines()[:2])[:300]


def columns_text(columns: list[tuple[str, str]]) -> str:
    """``name (type), ...`` of a file's columns."""
    return ", ".join(f"{c} ({t.lower()})" for c, t in columns)
