"""Tests for the offline BM25 retrieval provider (real DuckDB, real FTS extension)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from cpo.errors import ConfigurationError, ProviderError
from cpo.providers import bm25
from cpo.providers.base import Document, Hit, RetrievalRequest
from cpo.providers.bm25 import Bm25Retrieval, make_bm25

CORPUS = [
    Document(
        "D1", "Trail running shoes", "Our trail running shoes grip wet rocks.", audience="all"
    ),
    Document("D2", "Loyalty points", "Members earn points on every purchase.", audience="vip"),
    Document("D3", "Winter jackets", "Warm jackets for cold mornings.", keywords="coat parka"),
    Document("D4", "Running socks", "Socks that keep runners dry.", audience="new"),
    Document("D5", "VIP lounge", "Points members can visit the lounge.", audience="vip, new"),
]


@pytest.fixture(scope="module")
def provider() -> Bm25Retrieval:
    p = make_bm25({"type": "bm25"}, {})
    p.index(CORPUS)
    return p


def ids(hits: list[Hit]) -> list[str]:
    return [h.document_id for h in hits]


def test_relevant_document_ranks_first(provider):
    hits = provider.search(RetrievalRequest("k", "trail running shoes"))
    assert ids(hits)[0] == "D1"
    assert "D4" in ids(hits)  # "running" matches through the stemmer
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_keywords_are_searched(provider):
    assert ids(provider.search(RetrievalRequest("k", "parka"))) == ["D3"]


def test_no_match_and_stopword_queries_return_nothing(provider):
    assert provider.search(RetrievalRequest("k", "submarine")) == []
    assert provider.search(RetrievalRequest("k", "the and of")) == []
    assert provider.search(RetrievalRequest("k", "   ")) == []


def test_top_k_limits_hits(provider):
    assert len(provider.search(RetrievalRequest("k", "points running", top_k=5))) == 4
    assert len(provider.search(RetrievalRequest("k", "points running", top_k=2))) == 2
    assert provider.search(RetrievalRequest("k", "points running", top_k=0)) == []


def test_min_score_drops_weak_hits(provider):
    hits = provider.search(RetrievalRequest("k", "trail running shoes"))
    threshold = (hits[0].score + hits[1].score) / 2
    strong = provider.search(RetrievalRequest("k", "trail running shoes", min_score=threshold))
    assert ids(strong) == ["D1"]
    assert all(h.score >= threshold for h in strong)


def test_boost_raises_matching_audience_without_dropping_others():
    p = make_bm25({"type": "bm25", "audience_mode": "boost", "audience_boost": 2.0}, {})
    p.index(CORPUS)
    plain = {h.document_id: h.score for h in p.search(RetrievalRequest("k", "points members"))}
    boosted = p.search(RetrievalRequest("k", "points members", audience="new"))
    by_id = {h.document_id: h.score for h in boosted}
    assert set(by_id) == set(plain)
    assert by_id["D5"] == pytest.approx(plain["D5"] * 2.0)  # audience list includes "new"
    assert by_id["D2"] == pytest.approx(plain["D2"])  # vip only: not boosted
    assert ids(boosted)[0] == "D5"


def test_filter_keeps_matching_audience_and_all():
    p = make_bm25({"type": "bm25", "audience_mode": "filter"}, {})
    p.index(CORPUS)
    hits = p.search(RetrievalRequest("k", "running points jackets", audience="VIP"))
    assert set(ids(hits)) == {"D1", "D2", "D3", "D5"}  # D1 'all', D3 empty = everyone
    no_audience = p.search(RetrievalRequest("k", "running points jackets"))
    assert "D4" in ids(no_audience)


def test_ties_are_broken_by_document_id():
    p = make_bm25({"type": "bm25"}, {})
    p.index([Document(i, "Same title", "Same body text here.") for i in ("B", "C", "A")])
    assert ids(p.search(RetrievalRequest("k", "same body"))) == ["A", "B", "C"]


def test_concurrent_searches_match_sequential_results(provider):
    queries = ["trail running", "points members", "warm jackets", "socks", "lounge vip"] * 8
    expected = [provider.search(RetrievalRequest(q, q)) for q in queries]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda q: provider.search(RetrievalRequest(q, q)), queries))
    assert results == expected


def test_reindex_replaces_corpus_and_changes_fingerprint():
    p = make_bm25({"type": "bm25"}, {})
    p.index(CORPUS)
    before = p.describe()["corpus"]
    p.index([Document("N1", "Gift cards", "Gift cards for every occasion.")])
    assert ids(p.search(RetrievalRequest("k", "running gift"))) == ["N1"]
    assert p.describe()["corpus"] != before


def test_search_before_index_is_a_provider_error():
    with pytest.raises(ProviderError, match="before index"):
        make_bm25({"type": "bm25"}, {}).search(RetrievalRequest("seg1", "shoes"))


def test_duplicate_document_ids_are_rejected():
    p = make_bm25({"type": "bm25"}, {})
    with pytest.raises(ProviderError, match="duplicate document_id D1"):
        p.index([CORPUS[0], CORPUS[0]])


def test_empty_corpus_gives_no_hits():
    p = make_bm25({"type": "bm25"}, {})
    p.index([])
    assert p.search(RetrievalRequest("k", "shoes")) == []


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"audience_mode": "rank"}, "audience_mode"),
        ({"audience_boost": 0}, "audience_boost"),
        ({"k1": "high"}, "k1"),
        ({"b": 2}, "b"),
        ({"conjunctive": "yes"}, "conjunctive"),
    ],
)
def test_invalid_settings_name_the_key(settings, key):
    with pytest.raises(ConfigurationError) as info:
        make_bm25({"type": "bm25", **settings}, {})
    assert info.value.key == f"providers.retrieval.{key}"


def test_missing_extension_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(bm25, "_extension_package_dir", lambda: None)
    with pytest.raises(ConfigurationError, match=r"pip install 'duckdb-extension-fts==1\.5\.5'"):
        make_bm25({"type": "bm25"}, {})


def test_extension_for_another_duckdb_version_is_reported(monkeypatch, tmp_path):
    (tmp_path / "extensions" / "v1.0.0").mkdir(parents=True)
    monkeypatch.setattr(bm25, "_extension_package_dir", lambda: tmp_path)
    with pytest.raises(ConfigurationError, match=r"no FTS extension for duckdb .*found: v1\.0\.0"):
        make_bm25({"type": "bm25"}, {})


def test_extension_is_loaded_from_the_wheel_with_autoinstall_off(provider):
    assert bm25.fts_extension_path().name == "fts.duckdb_extension"
    settings = provider._conn.execute(
        "SELECT current_setting('autoinstall_known_extensions'), "
        "current_setting('autoload_known_extensions')"
    ).fetchone()
    assert settings == (False, False)


def test_describe_identifies_provider(provider):
    d = provider.describe()
    assert (d["kind"], d["name"], d["model"]) == ("retrieval", "bm25", "duckdb-fts")
    assert d["corpus"] is not None
