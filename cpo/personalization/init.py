"""``runner.py init --customers FILE``: a starter ``sources:`` block guessed from a file.

The guess uses column names (``id``, ``months_since_purchase``, ``spend_last_year``...) and
types; every guess is listed with the reason, so the analyst can check it before pasting the
block into ``cpo.yml``. Nothing is written.
"""

from __future__ import annotations

import re
from pathlib import Path

from cpo.errors import ConfigurationError, ModelError
from cpo.personalization.roles import NUMERIC_ROLES, ROLES

# role -> (name pattern, expression template); first match wins, in role order (`ROLES`).
_PATTERNS: dict[str, list[tuple[str, str]]] = {
    "customer_id": [(r"^(customer_?id|cust_?id|client_?id|user_?id|id)$", "{c}")],
    "first_name": [(r"^(first_?name|given_?name|firstname|forename)$", "{c}")],
    "email": [(r"^(e_?mail|email_?address)$", "{c}")],
    "city": [(r"^(city|town)$", "{c}")],
    "age": [(r"^age$", "{c}")],
    "tier": [(r"^(tier|loyalty_?tier|plan|membership|level)$", "{c}")],
    "signup_date": [(r"^(signup_?date|join(ed)?_?date|created_?(at|date)|since)$", "{c}")],
    "recency_days": [
        (r"^(recency|recency_?days|days_?since_?(last_?)?(purchase|order))$", "{c}"),
        (r"^(months?_?since_?(last_?)?(purchase|order)|recency_?months)$", "{c} * 30"),
        (r"^(weeks?_?since_?(last_?)?(purchase|order))$", "{c} * 7"),
    ],
    "frequency": [
        (r"^(frequency|purchase_?frequency|orders_?per_?year|n_?orders|orders|purchases)$", "{c}")
    ],
    "monetary": [
        (r"^(monetary|spend|spend_?last_?year|total_?spend|revenue|yearly_?spend|history)$", "{c}")
    ],
    "avg_order_value": [(r"^(avg_?order_?value|aov|average_?order_?value)$", "{c}")],
    "open_rate": [(r"^(open_?rate|historical_?open_?rate)$", "{c}")],
    "click_rate": [(r"^(click_?rate|historical_?click_?rate)$", "{c}")],
    "last_engagement_days": [
        (r"^(last_?engagement_?days|days_?since_?(last_?)?engagement)$", "{c}")
    ],
    "document_id": [(r"^(document_?id|doc_?id|id)$", "{c}")],
    "title": [(r"^(title|name|headline)$", "{c}")],
    "body": [(r"^(body|text|content|description)$", "{c}")],
    "category": [(r"^(category|type|kind)$", "{c}")],
    "audience": [(r"^(audience|segment|target)$", "{c}")],
    "keywords": [(r"^(keywords|tags)$", "{c}")],
    "approved_at": [(r"^(approved_?(at|on|date))$", "{c}")],
    "expires_at": [(r"^(expires?_?(at|on|date)|valid_?until)$", "{c}")],
}
_NUMERIC_TYPE = re.compile(r"INT|DOUBLE|FLOAT|DECIMAL|REAL|NUMERIC", re.IGNORECASE)


def guess_roles(
    name: str, columns: list[tuple[str, str]]
) -> tuple[dict[str, str], list[str], list[str]]:
    """Guess role -> expression from column names and types.

    Returns:
        (mapping, attributes, notes): the guessed mapping, the remaining columns as attributes,
        and one note per guess saying why.
    """
    mapping: dict[str, str] = {}
    notes: list[str] = []
    used: set[str] = set()
    for role in ROLES[name]:
        for pattern, template in _PATTERNS.get(role, []):
            hit = next(
                (
                    (c, t)
                    for c, t in columns
                    if c not in used and re.match(pattern, c.strip().lower())
                ),
                None,
            )
            if hit is None:
                continue
            column, kind = hit
            if role in NUMERIC_ROLES and not _NUMERIC_TYPE.search(kind):
                notes.append(f"{column} looks like {role} but is {kind.lower()}: check it")
            column_sql = column if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", column) else f'"{column}"'
            mapping[role] = template.format(c=column_sql)
            why = "" if template == "{c}" else f" (converted: {template.format(c=column)})"
            notes.append(f"{role} <- {column}{why}")
            used.add(column)
            break
    attributes = [
        c for c, _ in columns if c not in used and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", c)
    ]
    if attributes:
        notes.append(
            f"kept as attributes (usable in rules, KMeans, merge tags): {', '.join(attributes)}"
        )
    return mapping, attributes, notes


def guess_block(
    name: str, path: str, columns: list[tuple[str, str]], table: str | None = None
) -> str:
    """A ``sources:`` block for `name` guessed from `columns` (YAML text); `table` of a DuckDB
    file."""
    mapping, attributes, _ = guess_roles(name, columns)
    lines = ["sources:", f"  {name}:", f"    path: {path}"]
    lines += [f"    table: {table}"] if table else []
    lines.append("    columns:")
    if not mapping:
        first = columns[0][0] if columns else "id"
        mapping = {"customer_id" if name == "customers" else "document_id": first}
    lines += [f"      {role}: {_yaml_value(expr)}" for role, expr in mapping.items()]
    lines.append(f"    attributes: [{', '.join(attributes)}]")
    return "\n".join(lines)


def _yaml_value(text: str) -> str:
    return text if re.match(r"^[A-Za-z_][A-Za-z0-9_ *./+-]*$", text) else f"'{text}'"


def init_text(
    path: str, *, name: str = "customers", root: Path | None = None, table: str | None = None
) -> str:
    """The starter block for a file (or a table of a DuckDB file) and what was guessed.

    Raises:
        ConfigurationError: the file does not exist or cannot be read; a DuckDB file has
            several tables and `table` is not one of them.
    """
    from cpo.personalization.sources_read import describe_duckdb_table, format_of
    from cpo.personalization.sources_spec import sql_string

    full = Path(path) if root is None or Path(path).is_absolute() else root / path
    if not full.is_file():
        raise ConfigurationError(f"{path!r} does not exist; pass the path of a file to map")
    fmt = format_of(str(full))
    readers = {"csv": "read_csv", "parquet": "read_parquet", "json": "read_json_auto"}
    if table is not None and fmt != "duckdb":
        raise ConfigurationError(f"--table names a table of a DuckDB file; {path!r} is not one")
    if fmt == "duckdb":
        table, columns = describe_duckdb_table(full, path, table)
    elif fmt not in readers:
        raise ConfigurationError(
            f"cannot read {path!r}: expected a .csv, .parquet, .json, .jsonl or .duckdb file"
        )
    else:
        from cpo.adapters.duckdb import Database

        con = Database(":memory:")
        try:
            rows = con.execute(f"describe select * from {readers[fmt]}({sql_string(str(full))})")
            columns = [(str(r[0]), str(r[1])) for r in rows.fetchall()]
        except ModelError as e:
            raise ConfigurationError(f"cannot read {path!r}: {str(e).splitlines()[0]}") from None
        finally:
            con.close()
    _, _, notes = guess_roles(name, columns)
    block = guess_block(name, path, columns, table)
    found = ", ".join(f"{c} ({t.lower()})" for c, t in columns)
    shown = f"{path}, table {table}" if table else path
    guessed = "\n".join(f"#   {n}" for n in notes) or "#   nothing: map the roles by hand"
    return (
        f"# {shown}: {len(columns)} columns: {found}\n# Guessed:\n{guessed}\n"
        "# Check the guesses, then paste this into cpo.yml:\n"
        f"{block}\n"
    )
