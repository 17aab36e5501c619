"""Offline retrieval: BM25 full-text search with DuckDB's FTS extension, fully offline.

The FTS extension is loaded from the ``duckdb-extension-fts`` wheel (pinned to the same version
as ``duckdb``), never downloaded: extension autoinstall and autoload are switched off on the
provider's private in-memory connection, opened by `cpo.adapters.duckdb.private_connection` (the
only module that imports duckdb); it never touches the project database.

Settings (``providers.retrieval`` in ``cpo.yml``, all optional besides ``type: bm25``):

- ``audience_mode``: ``boost`` (default) multiplies the score of documents whose audience matches
  the request's (or is ``all``/empty) by ``audience_boost``; ``filter`` keeps only those.
- ``audience_boost``: the multiplier for ``boost`` mode, > 0 (default 1.5).
- ``k1``, ``b``: BM25 parameters (default 1.2 and 0.75).
- ``conjunctive``: require every query term in a document (default false).

``min_score`` of a request applies to the final score (after any audience boost).
"""

from __future__ import annotations

import importlib.util
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from cpo.adapters.duckdb import DUCKDB_VERSION, private_connection
from cpo.engine.settings import Number, PositiveNumber, Section, validate_model
from cpo.errors import ConfigurationError, ProviderError
from cpo.providers.base import Document, Hit, RetrievalRequest, corpus_fingerprint

EXTENSION_PACKAGE = "duckdb_extension_fts"
EXTENSION_DIST = "duckdb-extension-fts"
AUDIENCE_ALL = "all"
_TABLE = "documents"
_SETTINGS_KEY = "providers.retrieval"


def _extension_package_dir() -> Path | None:
    """Return the installed ``duckdb_extension_fts`` package directory, or None."""
    spec = importlib.util.find_spec(EXTENSION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def fts_extension_path() -> Path:
    """Return the FTS extension file that matches the installed duckdb version.

    Raises:
        ConfigurationError: The wheel is missing or built for another duckdb version.
    """
    version = DUCKDB_VERSION
    package_dir = _extension_package_dir()
    if package_dir is None:
        raise ConfigurationError(
            f"the offline retrieval provider needs the {EXTENSION_DIST} package; "
            f"install it with: pip install '{EXTENSION_DIST}=={version}'"
        )
    path = package_dir / "extensions" / f"v{version}" / "fts.duckdb_extension"
    if not path.is_file():
        found = sorted(p.name for p in (package_dir / "extensions").glob("v*"))
        raise ConfigurationError(
            f"{EXTENSION_DIST} has no FTS extension for duckdb {version} "
            f"(expected {path}; found: {', '.join(found) or 'none'}); "
            f"install the matching version: pip install '{EXTENSION_DIST}=={version}'"
        )
    return path


class Bm25Retrieval:
    """BM25 search over title, body and keywords of the indexed documents.

    Args:
        audience_mode: ``boost`` or ``filter`` (see the module docstring).
        audience_boost: The score multiplier in ``boost`` mode.
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
        conjunctive: Require every query term.
    """

    kind = "retrieval"
    name = "bm25"
    model = "duckdb-fts"

    def __init__(
        self,
        *,
        audience_mode: str = "boost",
        audience_boost: float = 1.5,
        k1: float = 1.2,
        b: float = 0.75,
        conjunctive: bool = False,
    ) -> None:
        self.audience_mode = audience_mode
        self.audience_boost = audience_boost
        self.k1 = k1
        self.b = b
        self.conjunctive = conjunctive
        # One private connection; the lock serialises index() and search() across the call
        # layer's threads (a DuckDB connection object is not safe to share between threads).
        self._lock = threading.Lock()
        self._conn = _connect()
        self._audiences: dict[str, frozenset[str]] = {}
        self._fingerprint: str | None = None

    def describe(self) -> dict[str, Any]:
        """Identify this provider's answers: settings, duckdb version and the corpus indexed."""
        return {
            "kind": self.kind,
            "name": self.name,
            "model": self.model,
            "version": DUCKDB_VERSION,
            "audience_mode": self.audience_mode,
            "audience_boost": self.audience_boost,
            "k1": self.k1,
            "b": self.b,
            "conjunctive": self.conjunctive,
            # Results depend on the corpus, so a cache keyed on describe() must see it change.
            "corpus": self._fingerprint,
        }

    def index(self, documents: list[Document]) -> None:
        """Replace the index with ``documents``.

        Raises:
            ProviderError: Two documents share a ``document_id``.
        """
        counts = Counter(d.document_id for d in documents)
        duplicates = sorted(i for i, n in counts.items() if n > 1)
        if duplicates:
            raise ProviderError(
                f"cannot index content: duplicate document_id {', '.join(duplicates[:5])}; "
                "make document_id unique in the content seed"
            )
        rows = [(d.document_id, d.title, d.body, d.keywords, d.audience) for d in documents]
        with self._lock:
            self._conn.execute(
                f"CREATE OR REPLACE TABLE {_TABLE} (document_id VARCHAR PRIMARY KEY, "
                "title VARCHAR, body VARCHAR, keywords VARCHAR, audience VARCHAR)"
            )
            if rows:
                self._conn.executemany(f"INSERT INTO {_TABLE} VALUES (?, ?, ?, ?, ?)", rows)
            self._conn.execute(
                f"PRAGMA create_fts_index('{_TABLE}', 'document_id', 'title', 'body', 'keywords', "
                "stemmer='english', stopwords='english', strip_accents=1, lower=1, overwrite=1)"
            )
            self._audiences = {d.document_id: _audiences(d.audience) for d in documents}
            self._fingerprint = corpus_fingerprint(documents)

    def search(self, request: RetrievalRequest) -> list[Hit]:
        """Return up to ``top_k`` hits scoring at least ``min_score``, best first.

        Ties are broken by ``document_id`` so results are deterministic.

        Raises:
            ProviderError: `index` has not been called.
        """
        if request.top_k <= 0 or not request.query.strip():
            return []
        with self._lock:
            if self._fingerprint is None:
                raise ProviderError(
                    f"bm25: search for {request.key!r} before index(); index the content first"
                )
            rows = self._conn.execute(
                f"SELECT document_id, fts_main_{_TABLE}.match_bm25(document_id, ?, k := ?, "
                f"b := ?, conjunctive := ?) AS score FROM {_TABLE} WHERE score IS NOT NULL",
                [request.query, self.k1, self.b, self.conjunctive],
            ).fetchall()
            audiences = self._audiences
        hits = []
        for document_id, score in rows:
            score = self._adjust(float(score), audiences[document_id], request.audience)
            if score is not None and score >= request.min_score:
                hits.append(Hit(document_id=document_id, score=score))
        hits.sort(key=lambda h: (-h.score, h.document_id))
        return hits[: request.top_k]

    def _adjust(self, score: float, audiences: frozenset[str], wanted: str | None) -> float | None:
        if not wanted:
            return score
        matches = not audiences or AUDIENCE_ALL in audiences or wanted.strip().lower() in audiences
        if self.audience_mode == "filter":
            return score if matches else None
        return score * self.audience_boost if matches else score


class Bm25Settings(Section):
    """``providers.retrieval`` of ``type: bm25`` (validated with the rest of ``cpo.yml``)."""

    type: Literal["bm25"] = "bm25"
    audience_mode: Literal["boost", "filter"] = "boost"
    audience_boost: PositiveNumber = 1.5
    k1: PositiveNumber = 1.2
    b: Annotated[Number, Field(ge=0, le=1)] = 0.75
    conjunctive: bool = False


def make_bm25(settings: Mapping[str, Any], env: Mapping[str, str]) -> Bm25Retrieval:
    """Build the BM25 provider from its ``cpo.yml`` settings (the environment is not used).

    Raises:
        ConfigurationError: A setting is invalid, or the FTS extension is not installed.
    """
    checked = validate_model(Bm25Settings, settings, key=_SETTINGS_KEY)
    return Bm25Retrieval(**checked.model_dump(exclude={"type"}))


def _connect() -> Any:
    return private_connection(
        fts_extension_path(),
        fix=f"reinstall it with pip install --force-reinstall '{EXTENSION_DIST}=={DUCKDB_VERSION}'",
    )


def _audiences(audience: str) -> frozenset[str]:
    # An audience may list several values ("new, vip"); empty means everyone.
    return frozenset(a.strip().lower() for a in (audience or "").split(",") if a.strip())
