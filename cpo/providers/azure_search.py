"""Retrieval through Azure AI Search (``azure-search-documents``): index build and queries.

``index()`` creates or updates the index (fields ``document_id`` (key), ``title``, ``body``,
``category``, ``audience``, ``keywords``, ``expires_at``) and uploads documents in batches;
``search()`` runs full-text, semantic or hybrid queries, filtered by audience. The admin key
writes, the query key (when set) reads. SDK retries are off: `cpo.engine.calls` retries.

Hybrid mode embeds on the client with an Azure OpenAI embedding deployment: ``index()`` adds a
``Collection(Edm.Single)`` vector field (HNSW, cosine) and uploads each document's title+body
vector; ``search()`` embeds the query and sends it as a ``VectorizedQuery`` next to the text,
which Azure fuses with Reciprocal Rank Fusion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cpo.errors import ConfigurationError
from cpo.providers.azure_embeddings import AzureEmbeddings, azure_embeddings_factory
from cpo.providers.base import Document, Hit, Hits, RetrievalRequest
from cpo.providers.credentials import (
    Auth,
    azure_credential,
    azure_tls_options,
    check_token_transport,
    endpoint_from_env,
    resolve_auth,
)
from cpo.providers.failures import azure_failure, provider_error

MODES = ("fulltext", "semantic", "hybrid")
SEARCH_SCOPE_NOTE = "Search Index Data Reader/Contributor"
ENDPOINT_VAR = "AZURE_SEARCH_ENDPOINT"
INDEX_VAR = "AZURE_SEARCH_INDEX_NAME"
ADMIN_KEY_VAR = "AZURE_SEARCH_ADMIN_KEY"
QUERY_KEY_VAR = "AZURE_SEARCH_QUERY_KEY"
VECTOR_PROFILE = "cpo-vector-profile"
VECTOR_ALGORITHM = "cpo-hnsw"
# The index's field types as the REST API spells them (every SDK version accepts the string;
# the SDK's enum spellings changed between 11.x and 12.x).
EDM_STRING = "Edm.String"
EDM_VECTOR = "Collection(Edm.Single)"
# Azure OpenAI embedding models take at most 8,192 tokens per input; this stays well below.
MAX_EMBED_CHARS = 20_000


@dataclass(frozen=True)
class SearchSettings:
    """The retrieval settings from ``cpo.yml``."""

    mode: str = "fulltext"
    semantic_configuration: str = "cpo-semantic"
    batch_size: int = 500
    timeout_s: float = 30.0
    audience_any: tuple[str, ...] = ("all", "")
    vector_field: str | None = None
    dimensions: int = 1536
    semantic: bool = False
    as_of: str | None = None

    @property
    def uses_semantic(self) -> bool:
        """Semantic ranking: always in semantic mode, on request (``semantic: true``) in hybrid."""
        return self.mode == "semantic" or (self.mode == "hybrid" and self.semantic)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> SearchSettings:
        """Read and check the settings, naming the key that is wrong."""
        mode = str(settings.get("mode", "fulltext")).replace("_", "").replace("-", "")
        if mode not in MODES:
            raise ConfigurationError(
                f"mode must be one of {', '.join(MODES)}, got {settings.get('mode')!r}",
                path="cpo.yml",
                key="providers.retrieval.mode",
            )
        batch = int(settings.get("batch_size", 500))
        if not 1 <= batch <= 1000:
            raise ConfigurationError(
                f"batch_size must be 1 to 1000 (Azure's limit per request), got {batch}",
                path="cpo.yml",
                key="providers.retrieval.batch_size",
            )
        try:
            dimensions = int(settings.get("dimensions") or 1536)
        except (TypeError, ValueError):
            dimensions = 0  # reported below, naming the key
        if not 1 <= dimensions <= 4096:
            raise ConfigurationError(
                f"dimensions must be 1 to 4096 (the embedding model's vector length), got "
                f"{settings.get('dimensions')!r}",
                path="cpo.yml",
                key="providers.retrieval.dimensions",
            )
        vector_field = settings.get("vector_field") or ("body_vector" if mode == "hybrid" else None)
        return cls(
            mode=mode,
            semantic_configuration=str(settings.get("semantic_configuration", "cpo-semantic")),
            batch_size=batch,
            timeout_s=float(settings.get("timeout_s", 30.0)),
            audience_any=tuple(str(a) for a in settings.get("audience_any", ("all", ""))),
            vector_field=None if vector_field is None else str(vector_field),
            dimensions=dimensions,
            semantic=bool(settings.get("semantic", False)),
            as_of=None if settings.get("as_of") is None else str(settings["as_of"]),
        )


class AzureSearchProvider:
    """A retrieval provider over one Azure AI Search index.

    Args:
        endpoint: The service URL.
        index_name: The index to build and query.
        settings: The checked settings.
        write_auth: Credentials that may create indexes and upload (admin key or token).
        read_auth: Credentials for queries (query key, else the same as `write_auth`).
        client_options: azure-core options (TLS, timeouts, ``retry_total=0``).
        embedder: Client-side embeddings (required in hybrid mode, unused otherwise).

    Attributes:
        price_model: The model the call layer prices calls by: the embedding deployment in
            hybrid mode (the only part of a search that is billed per token), else `model`.
        index_input_tokens: Embedding tokens paid by ``index()`` so far, across calls and
            retries (the caller takes the difference around its own calls).
    """

    kind = "retrieval"
    name = "azure_search"
    # The index lives in the service: the call layer indexes an unchanged corpus only once.
    persistent_index = True

    def __init__(
        self,
        *,
        endpoint: str,
        index_name: str,
        settings: SearchSettings,
        write_auth: Auth,
        read_auth: Auth,
        client_options: Mapping[str, Any],
        embedder: AzureEmbeddings | None = None,
    ) -> None:
        from azure.search.documents import SearchClient
        from azure.search.documents.indexes import SearchIndexClient

        self.endpoint = endpoint
        self.index_name = index_name
        self.settings = settings
        self.model = f"azure-ai-search:{settings.mode}"
        if settings.mode == "hybrid" and embedder is None:
            raise ConfigurationError(
                "mode: hybrid needs an embedding deployment (AZURE_OPENAI_EMBEDDING_DEPLOYMENT)",
                path="cpo.yml",
                key="providers.retrieval.mode",
            )
        self.embedder = embedder if settings.mode == "hybrid" else None
        self.price_model = self.model if self.embedder is None else self.embedder.deployment
        self.index_input_tokens = 0
        self._vectors: dict[str, list[float]] = {}
        self._write_auth, self._read_auth = write_auth, read_auth
        self._service = f"Azure AI Search at {endpoint}"
        opts = dict(client_options)
        self.index_client = SearchIndexClient(endpoint, azure_credential(write_auth), **opts)
        self.writer = SearchClient(endpoint, index_name, azure_credential(write_auth), **opts)
        self.reader = SearchClient(endpoint, index_name, azure_credential(read_auth), **opts)

    def describe(self) -> dict[str, Any]:
        """What identifies the answers: endpoint, index, query and embedding settings (no keys)."""
        s = self.settings
        embedding = (
            {} if self.embedder is None else {"semantic": s.semantic, **self.embedder.describe()}
        )
        return {
            "provider": self.name,
            "model": self.model,
            "endpoint": self.endpoint,
            "index": self.index_name,
            "mode": s.mode,
            "semantic_configuration": s.semantic_configuration,
            "audience_any": list(s.audience_any),
            "vector_field": s.vector_field,
            "as_of": s.as_of,
            **embedding,
        }

    def index(self, documents: list[Document]) -> None:
        """Create or update the index, then upload the documents in batches."""
        from azure.core.exceptions import AzureError

        try:
            self.index_client.create_or_update_index(self._definition())
            for start in range(0, len(documents), self.settings.batch_size):
                batch = documents[start : start + self.settings.batch_size]
                rows = self._with_vectors([_as_row(d) for d in batch])
                results = self.writer.merge_or_upload_documents(rows)
                failed = [r.key for r in results if not r.succeeded]
                if failed:
                    raise provider_error(
                        f"{self._service} did not index {len(failed)} document(s) into "
                        f"{self.index_name!r}: {', '.join(failed[:10])}",
                        retryable=True,
                    )
        except AzureError as e:
            raise self._failure(e, self._write_auth, ADMIN_KEY_VAR) from e

    def _with_vectors(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Hybrid mode: add each row's title+body vector (one embeddings call per batch)."""
        field = self.settings.vector_field
        if self.embedder is None or field is None:
            return rows
        texts = [_embedding_text(r["title"], r["body"]) for r in rows]
        # Kept across attempts: a retried index() (after a 429) does not pay for vectors twice.
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            vectors, tokens = self._embed(missing)
            self.index_input_tokens += tokens
            self._vectors.update(zip(missing, vectors, strict=True))
        return [{**row, field: self._vectors[text]} for row, text in zip(rows, texts, strict=True)]

    def _embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Vectors for `texts` and the prompt tokens Azure OpenAI billed for them."""
        assert self.embedder is not None
        embedded = self.embedder.embed(texts)
        return embedded.vectors, embedded.input_tokens

    def search(self, request: RetrievalRequest) -> Hits:
        """Run the query in the configured mode; hits below ``min_score`` are dropped.

        The hits carry ``input_tokens``: what embedding the query cost (hybrid mode; else 0).
        """
        from azure.core.exceptions import AzureError

        kwargs = self._query_options(request)
        vector_options, tokens = self._vector_options(request)
        kwargs.update(vector_options)
        try:
            rows = list(self.reader.search(search_text=request.query or "*", **kwargs))
        except AzureError as e:
            raise self._failure(e, self._read_auth, QUERY_KEY_VAR) from e
        hits = []
        for row in rows:
            score = row.get("@search.reranker_score") or row.get("@search.score") or 0.0
            if score >= request.min_score:
                hits.append(Hit(document_id=str(row["document_id"]), score=float(score)))
        return Hits(hits[: request.top_k], input_tokens=tokens)

    def _query_options(self, request: RetrievalRequest) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {
            "top": request.top_k,
            "select": ["document_id"],
            "filter": self._filter(request.audience),
        }
        if s.uses_semantic:
            kwargs["query_type"] = "semantic"
            kwargs["semantic_configuration_name"] = s.semantic_configuration
        return kwargs

    def _vector_options(self, request: RetrievalRequest) -> tuple[dict[str, Any], int]:
        """Hybrid mode: the query's vector (one embeddings call), k nearest in the vector field,
        and the tokens that call cost."""
        query = (request.query or "").strip()
        if self.embedder is None or not query or query == "*":
            return {}, 0  # nothing to embed: a match-all text query alone
        from azure.search.documents.models import VectorizedQuery

        (vector,), tokens = self._embed([query[:MAX_EMBED_CHARS]])
        options = {
            "vector_queries": [
                VectorizedQuery(
                    vector=vector,
                    k_nearest_neighbors=request.top_k,
                    fields=self.settings.vector_field,
                )
            ]
        }
        return options, tokens

    def _filter(self, audience: str | None) -> str | None:
        clauses = []
        if audience:
            options = [audience, *self.settings.audience_any]
            either = " or ".join(f"audience eq {_quote(a)}" for a in dict.fromkeys(options))
            clauses.append(f"({either} or audience eq null)")
        if self.settings.as_of:
            clauses.append(f"(expires_at eq null or expires_at ge {_quote(self.settings.as_of)})")
        return " and ".join(clauses) or None

    def _definition(self) -> Any:
        from azure.search.documents.indexes.models import (
            SearchableField,
            SearchIndex,
            SemanticConfiguration,
            SemanticField,
            SemanticPrioritizedFields,
            SemanticSearch,
            SimpleField,
        )

        text = EDM_STRING
        fields = [
            SimpleField(name="document_id", type=text, key=True, filterable=True),
            SearchableField(name="title"),
            SearchableField(name="body"),
            SearchableField(name="category", filterable=True, facetable=True),
            SimpleField(name="audience", type=text, filterable=True, facetable=True),
            SearchableField(name="keywords"),
            # ISO-8601 text: sorts and compares correctly and accepts date-only values.
            SimpleField(name="expires_at", type=text, filterable=True, sortable=True),
        ]
        semantic = None
        if self.settings.uses_semantic:
            config = SemanticConfiguration(
                name=self.settings.semantic_configuration,
                prioritized_fields=SemanticPrioritizedFields(
                    title_field=SemanticField(field_name="title"),
                    content_fields=[SemanticField(field_name="body")],
                    keywords_fields=[SemanticField(field_name="keywords")],
                ),
            )
            semantic = SemanticSearch(configurations=[config])
        vector_search = None
        if self.embedder is not None:
            vector_field, vector_search = self._vector_definition()
            fields.append(vector_field)
        return SearchIndex(
            name=self.index_name,
            fields=fields,
            semantic_search=semantic,
            vector_search=vector_search,
        )

    def _vector_definition(self) -> tuple[Any, Any]:
        """The vector field and its HNSW profile (cosine, as Azure OpenAI vectors are unit)."""
        from azure.search.documents.indexes.models import (
            HnswAlgorithmConfiguration,
            HnswParameters,
            SearchField,
            VectorSearch,
            VectorSearchAlgorithmMetric,
            VectorSearchProfile,
        )

        field = SearchField(
            name=self.settings.vector_field,
            type=EDM_VECTOR,
            searchable=True,
            hidden=True,  # never returned: hits only need document_id
            vector_search_dimensions=self.settings.dimensions,
            vector_search_profile_name=VECTOR_PROFILE,
        )
        config = VectorSearch(
            algorithms=[
                HnswAlgorithmConfiguration(
                    name=VECTOR_ALGORITHM,
                    parameters=HnswParameters(metric=VectorSearchAlgorithmMetric.COSINE),
                )
            ],
            profiles=[
                VectorSearchProfile(
                    name=VECTOR_PROFILE, algorithm_configuration_name=VECTOR_ALGORITHM
                )
            ],
        )
        return field, config

    def _failure(self, error: Exception, auth: Auth, key_var: str) -> Exception:
        if auth.key is not None:
            fix = f"check {auth.source} (the key or its Key Vault reference) and {ENDPOINT_VAR}."
        else:
            fix = (
                f"no key is set, so DefaultAzureCredential was used; give that identity the "
                f"{SEARCH_SCOPE_NOTE} role, or set {key_var}."
            )
        return azure_failure(
            error,
            f"{self._service} (index {self.index_name!r})",
            auth_fix=fix,
            secrets=(*self._write_auth.secrets, *self._read_auth.secrets),
        )


def _quote(value: str) -> str:
    """An OData string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _embedding_text(title: str, body: str) -> str:
    """What a document's vector is computed from: title and body, capped in length."""
    return f"{title}\n{body}".strip()[:MAX_EMBED_CHARS] or title or "(empty)"


def _as_row(doc: Document) -> dict[str, Any]:
    return {
        "document_id": doc.document_id,
        "title": doc.title,
        "body": doc.body,
        "category": doc.category,
        "audience": doc.audience,
        "keywords": doc.keywords,
        # Empty means "never expires": stored as null so `expires_at eq null` finds it.
        "expires_at": str(doc.expires_at) if doc.expires_at else None,
    }


def azure_search_factory(
    settings: Mapping[str, Any], env: Mapping[str, str]
) -> AzureSearchProvider:
    """Azure AI Search from ``AZURE_SEARCH_*`` variables.

    Settings: ``mode`` (fulltext|semantic|hybrid), ``semantic_configuration``, ``batch_size``,
    ``timeout_s``, ``audience_any`` (audiences every segment may see), ``as_of`` (drop documents
    expired before this ISO date), ``index_name`` and ``api_version`` (override), ``ca_bundle`` /
    ``verify`` (TLS), ``_credential`` (a token credential, tests). Hybrid only: ``vector_field``
    (default ``body_vector``), ``dimensions`` (default 1536), ``semantic`` (add semantic
    ranking), ``embedding_deployment`` / ``embedding_api_version`` / ``embedding_batch_size``;
    the embedding deployment comes from ``AZURE_OPENAI_EMBEDDING_DEPLOYMENT`` with
    ``AZURE_OPENAI_ENDPOINT`` and ``AZURE_OPENAI_API_KEY`` (or a token).
    """
    search = SearchSettings.from_settings(settings)
    endpoint = endpoint_from_env(env, ENDPOINT_VAR, "azure_search")
    index_name = str(settings.get("index_name") or env.get(INDEX_VAR) or "").strip()
    if not index_name:
        raise ConfigurationError(
            f"{INDEX_VAR} is not set: the azure_search provider needs an index name. Set it "
            "in the environment (see .env.example) or index_name under providers.retrieval.",
        )
    write_auth = resolve_auth(settings, env, (ADMIN_KEY_VAR,))
    # Queries use the query key when there is one, else whatever writes.
    read_auth = (
        resolve_auth(settings, env, (QUERY_KEY_VAR,)) if env.get(QUERY_KEY_VAR) else write_auth
    )
    check_token_transport(endpoint, write_auth, ENDPOINT_VAR, ADMIN_KEY_VAR)
    options: dict[str, Any] = {
        "retry_total": 0,
        "connection_timeout": min(10.0, search.timeout_s),
        "read_timeout": search.timeout_s,
        **azure_tls_options(settings),
    }
    if settings.get("api_version"):
        options["api_version"] = str(settings["api_version"])
    embedder = None
    if search.mode == "hybrid":
        embedder = azure_embeddings_factory(
            settings, env, dimensions=search.dimensions, timeout_s=search.timeout_s
        )
    return AzureSearchProvider(
        endpoint=endpoint,
        index_name=index_name,
        settings=search,
        write_auth=write_auth,
        read_auth=read_auth,
        client_options=options,
        embedder=embedder,
    )
