"""Export built tables to Parquet or CSV for BI tools, without PII unless asked for.

    result = export_tables(config.database_path, load_manifest(config.path("target")),
                           out_dir=Path("target/export"), fmt="parquet")

Each table becomes one file (``<table>.parquet``) or, with `partition_by`, a Hive-partitioned
folder (``<table>/<col>=<value>/data_0.parquet``), next to ``export_manifest.json`` (row counts,
column types, what was done to PII). Everything is written into a hidden staging folder inside
the output folder and checked (rows read back equal rows in the database) before being renamed
into place, so a failed export leaves no half-written file behind.

PII: a column is PII when a ``schema.yml`` declares it with ``meta: {pii: true}``, or when it has
the same name as a declared PII column anywhere in the project (so ``email`` stays PII in a model
that forgot to say so). Without ``include_pii`` such columns are hashed (salted SHA-256, the same
value `cpo.engine.logs.hash_id` gives, so ids still join) or dropped.

CSV injection: in CSV exports a text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return gets a leading ``'`` (OWASP's guidance), so a spreadsheet shows it as text
instead of running it as a formula. Parquet keeps values exactly as they are.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpo.adapters.duckdb import Database
from cpo.engine.calls.ledger import LEDGER_TABLE, LEDGER_VIEW
from cpo.engine.compile import quote
from cpo.engine.compile import sql_literal as _literal
from cpo.engine.logs import project_salt
from cpo.engine.pii import pii_of
from cpo.errors import CPOError, UsageError

FORMATS = ("parquet", "csv")
PII_MODES = ("hash", "drop")
MANIFEST_NAME = "export_manifest.json"
EXPORT_SCHEMA = "https://cpo.dev/schemas/export-manifest/v1.json"
STAGING_PREFIX = ".cpo-export-"


@dataclass(frozen=True)
class ExportedColumn:
    """One column of an exported table.

    Attributes:
        pii: None (not PII), ``hashed``, ``dropped`` or ``included`` (``include_pii``).
    """

    name: str
    type: str
    pii: str | None = None


@dataclass(frozen=True)
class ExportedTable:
    """One exported table: where it is (relative to the output folder) and what it holds."""

    name: str
    path: str
    rows: int
    files: int
    columns: tuple[ExportedColumn, ...]
    partition_by: str | None = None


@dataclass(frozen=True)
class ExportResult:
    """What `export_tables` wrote."""

    out_dir: Path
    manifest_path: Path
    format: str
    tables: tuple[ExportedTable, ...]

    @property
    def rows(self) -> dict[str, int]:
        """Exported rows per table."""
        return {t.name: t.rows for t in self.tables}


def load_manifest(target_dir: Path) -> dict[str, Any]:
    """Read ``target/manifest.json`` (written by every build and compile).

    Raises:
        UsageError: the manifest is missing or unreadable.
    """
    path = Path(target_dir) / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist; run 'build' (or 'compile') first") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path}: {e}; run 'compile' to rewrite it") from e


def declared_pii(manifest: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """Columns declared ``meta: {pii: true}`` in ``schema.yml``, per node of the manifest."""
    found: dict[str, frozenset[str]] = {}
    for name, node in (manifest.get("nodes") or {}).items():
        pii = pii_of(node.get("columns") or {})
        if pii:
            found[name] = pii
    return found


def pii_columns(manifest: Mapping[str, Any], table: str, columns: Collection[str]) -> set[str]:
    """The PII columns of `table`: declared for it, or named like a PII column anywhere."""
    declared = declared_pii(manifest)
    names = set().union(*declared.values()) if declared else set()
    return (set(declared.get(table, ())) | names) & set(columns)


def export_tables(
    database_path: Path | Any,
    manifest: Mapping[str, Any],
    *,
    out_dir: Path,
    fmt: str = "parquet",
    tables: Sequence[str] | None = None,
    partition_by: str | None = None,
    include_pii: bool = False,
    pii_mode: str = "hash",
    salt_env: str = "CPO_LOG_SALT",
    salt: str | None = None,
    protected: Collection[Path] = (),
) -> ExportResult:
    """Export tables of the built database to `out_dir`, plus ``export_manifest.json``.

    Args:
        database_path: The built DuckDB file (opened read-only), or an open adapter of another
            engine (`cpo.adapters.open_adapter`, read-only; the caller closes it) whose
            ``export_table`` writes the files (Spark writes a folder of part files per table).
        manifest: ``target/manifest.json`` as loaded by `load_manifest` (for PII metadata).
        out_dir: Folder to write into (created if missing; other files in it are kept).
        fmt: ``parquet`` or ``csv``.
        tables: Tables or views to export (default: every relation in the database but the
            ``llm_calls`` view, which repeats ``provider_calls``).
        partition_by: Column to partition by (Hive layout); tables without it get one file.
        include_pii: Export PII columns as they are.
        pii_mode: ``hash`` (salted SHA-256, first 16 hex digits) or ``drop`` the PII columns.
        salt_env: Environment variable holding the hashing salt (as for `cpo.engine.logs.hash_id`).
        salt: The salt itself (the project's); by default `cpo.engine.logs.project_salt` of nothing.
        protected: Paths no exported file may replace (the database, the project's inputs).

    Raises:
        UsageError: unsupported format, no database, unknown table, a partition column no
            selected table has, or an output folder that cannot be written.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unsupported export format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if pii_mode not in PII_MODES:
        raise UsageError(f"unsupported PII mode {pii_mode!r}; use one of: {', '.join(PII_MODES)}")
    if isinstance(database_path, str | os.PathLike):
        database_path = Path(database_path)
        if not database_path.exists():
            raise UsageError(f"{database_path.name} does not exist yet; run 'build' first")
        db: Any = Database(database_path, read_only=True)
        label, owned = database_path.name, True
    else:
        db = database_path
        label, owned = str(getattr(db, "label", Path(db.path).name)), False
    if salt is None:
        salt = project_salt(None, salt_env)[0]
    try:
        plans = _plan(db, manifest, tables, partition_by, include_pii, pii_mode)
        out_dir = Path(out_dir)
        staging = _staging_folder(out_dir)
        try:
            exported = tuple(_write_table(db, plan, staging, fmt, salt) for plan in plans)
            _write_manifest(staging, label, fmt, exported, include_pii, pii_mode, partition_by)
            _publish(staging, out_dir, [t.path for t in exported], protected)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        if owned:
            db.close()
    return ExportResult(out_dir, out_dir / MANIFEST_NAME, fmt, exported)


@dataclass(frozen=True)
class _Plan:
    name: str
    select: tuple[tuple[str, str, str | None], ...]  # (column, type, pii handling)
    partition_by: str | None


def _plan(
    db: Any,
    manifest: Mapping[str, Any],
    tables: Sequence[str] | None,
    partition_by: str | None,
    include_pii: bool,
    pii_mode: str,
) -> list[_Plan]:
    relations = {n: k for n, k in db.relations().items() if not n.startswith("__")}
    names = list(dict.fromkeys(tables)) if tables else _default_names(relations)
    unknown = [n for n in names if n not in relations]
    if unknown:
        raise UsageError(
            f"cannot export {', '.join(repr(n) for n in unknown)}: no such table in "
            f"{Path(db.path).name}; available: {', '.join(sorted(relations)) or '(none)'}"
        )
    plans = []
    for name in names:
        columns = db.columns(name)
        pii = pii_columns(manifest, name, [c for c, _ in columns])
        handling = "included" if include_pii else ("hashed" if pii_mode == "hash" else "dropped")
        select = tuple((c, t, handling if c in pii else None) for c, t in columns)
        part = partition_by if partition_by in {c for c, _ in columns} else None
        if part and part in pii and not include_pii and pii_mode == "drop":
            raise UsageError(
                f"cannot partition {name!r} by PII column {part!r} when PII is dropped: "
                "folder names would hold the values; pick another column or hash PII"
            )
        plans.append(_Plan(name, select, part))
    if partition_by and not any(p.partition_by for p in plans):
        raise UsageError(
            f"--partition-by {partition_by!r}: none of the exported tables has that column"
        )
    return plans


def _default_names(relations: Mapping[str, str]) -> list[str]:
    """Every relation, less ``llm_calls`` where ``provider_calls`` is there: the former is a view
    kept for old queries and holds the same rows (exported on request only)."""
    return sorted(n for n in relations if not (n == LEDGER_VIEW and LEDGER_TABLE in relations))


def _staging_folder(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = out_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        probe = staging / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(
            f"cannot write the export to {out_dir}: {e.strerror or e}; "
            "choose a writable folder with --out"
        ) from e
    return staging


def _select_sql(plan: _Plan, salt: str, fmt: str = "parquet") -> str:
    parts = []
    for column, kind, pii in plan.select:
        c = quote(column)
        if pii == "dropped":
            continue
        if pii == "hashed":
            # Same digest as cpo.engine.logs.hash_id(value) for the same salt; NULL stays NULL.
            salted = _literal(f"{salt}:")
            parts.append(f"substr(sha256({salted} || cast({c} as varchar)), 1, 16) as {c}")
        elif fmt == "csv" and _is_text(kind) and column != plan.partition_by:
            parts.append(f"{_neutralised(c)} as {c}")
        else:
            parts.append(c)
    return f"select {', '.join(parts) or '1 as no_columns'} from {quote(plan.name)}"


def _is_text(kind: str) -> bool:
    """A text column type, in DuckDB's (VARCHAR) or Spark's (STRING) names."""
    return kind.upper() in ("VARCHAR", "STRING", "TEXT") or kind.upper().startswith("VARCHAR(")


def _write_table(db: Any, plan: _Plan, staging: Path, fmt: str, salt: str) -> ExportedTable:
    select = _select_sql(plan, salt, fmt)
    if hasattr(db, "export_table"):
        # Another engine writes a folder of part files (Hive-partitioned with partition_by).
        relative = plan.name
        files, written = db.export_table(
            select, staging / relative, fmt=fmt, partition_by=plan.partition_by
        )
    else:
        relative, files = _copy_duckdb(db, plan, select, staging, fmt)
        written = _rows_written(db, files, fmt)
    rows = db.count(plan.name)
    if written != rows:
        raise CPOError(
            f"export of {plan.name!r} wrote {written} rows but the table has {rows}; "
            "nothing was published, run the export again"
        )
    types = {c: t for c, t, _ in plan.select}
    columns = tuple(ExportedColumn(c, types[c], pii) for c, _, pii in plan.select)
    return ExportedTable(plan.name, relative, rows, len(files), columns, plan.partition_by)


def _copy_duckdb(
    db: Database, plan: _Plan, select: str, staging: Path, fmt: str
) -> tuple[str, list[Path]]:
    """DuckDB's export: one file per table, or a Hive-partitioned folder; (path, files)."""
    options = f"format {fmt}" + (", header true" if fmt == "csv" else "")
    if plan.partition_by:
        relative = plan.name
        target = staging / relative
        options += f", partition_by ({quote(plan.partition_by)})"
    else:
        relative = f"{plan.name}.{fmt}"
        target = staging / relative
    db.execute(f"copy ({select}) to {_literal(str(target))} ({options})")
    files = sorted(target.rglob(f"*.{fmt}")) if plan.partition_by else [target]
    return relative, files


def _rows_written(db: Database, files: Sequence[Path], fmt: str) -> int:
    """Rows in the written files, read back (each file on its own: a file list, no globbing)."""
    if not files:
        return 0
    paths = "[" + ", ".join(_literal(str(f)) for f in files) + "]"
    if fmt == "parquet":
        reader = f"read_parquet({paths}, hive_partitioning = false)"
    else:
        reader = f"read_csv({paths}, header = true, all_varchar = true, hive_partitioning = false)"
    _, rows = db.fetch(f"select count(*) from {reader}")
    return int(rows[0][0])


def _write_manifest(
    staging: Path,
    database: str,
    fmt: str,
    tables: Sequence[ExportedTable],
    include_pii: bool,
    pii_mode: str,
    partition_by: str | None,
) -> None:
    from cpo import __version__

    payload = {
        "metadata": {
            "schema_version": EXPORT_SCHEMA,
            "cpo_version": __version__,
            "generated_at": datetime.now(UTC).isoformat(),
            "database": database,
            "format": fmt,
            "include_pii": include_pii,
            "pii_mode": "included" if include_pii else pii_mode,
            "partition_by": partition_by,
        },
        "tables": {t.name: asdict(t) for t in tables},
    }
    (staging / MANIFEST_NAME).write_text(json.dumps(payload, indent=2), encoding="utf-8")


def _neutralised(column: str) -> str:
    """SQL for a text column whose formula-leading cells are made inert (OWASP CSV injection)."""
    return (
        f"case when regexp_matches({column}, '^[=+\\-@\\t\\r]') "
        f"then '''' || {column} else {column} end"
    )


def _publish(
    staging: Path, out_dir: Path, paths: Sequence[str], protected: Collection[Path] = ()
) -> None:
    """Rename each finished file or folder into `out_dir`; the manifest goes last.

    Raises:
        UsageError: a file would replace a protected path (checked before anything moves).
    """
    guarded = [Path(p).resolve() for p in protected]
    for relative in [*paths, MANIFEST_NAME]:
        final = (out_dir / relative).resolve()
        hit = next((p for p in guarded if final == p or p.is_relative_to(final)), None)
        if hit:
            raise UsageError(
                f"the export would replace {hit}: choose another --out folder; nothing was written"
            )
    for relative in [*paths, MANIFEST_NAME]:
        final = out_dir / relative
        if final.is_dir() and not final.is_symlink():
            # A folder cannot be replaced by one rename: move the old one aside first.
            old = staging / f".old-{relative}"
            final.rename(old)
        os.replace(staging / relative, final)
