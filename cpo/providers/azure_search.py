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
from datetime import date
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator

from cpo.engine.settings import NonEmptyStr, PositiveNumber, custom_error, validate_model
from cpo.errors import ConfigurationError
from cpo.providers.azure_embeddings import (
    AzureEmbeddings,
    EmbeddingSettings,
    azure_embeddings_factory,
)
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

Mode = Literal["fulltext", "semantic", "hybrid"]
MODES: tuple[str, ...] = get_args(Mode)
SETTINGS_KEY = "providers.retrieval"
DEFAULT_DIMENSIONS = 1536
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


class SearchSettings(EmbeddingSettings):
    """``providers.retrieval`` of ``type: azure_search`` (validated with the rest of ``cpo.yml``).

    Attributes:
        mode: ``fulltext``, ``semantic`` or ``hybrid`` (``full-text``/``full_text`` read as
            ``fulltext``).
        semantic_configuration: The index's semantic configuration (semantic ranking).
        batch_size: Documents per upload request (Azure takes at most 1000).
        timeout_s: Read timeout of every request, in seconds.
        audience_any: Audiences every segment may see, besides its own and none.
        audience_mode: Only ``filter``: documents of another audience are filtered out (bm25's
            ``boost`` has no Azure counterpart here, so it is refused rather than ignored).
        as_of: Drop documents that expired before this ISO date.
        index_name: Overrides ``AZURE_SEARCH_INDEX_NAME``.
        api_version: The Search REST API version (default: the SDK's).
        vector_field: Hybrid: the index's vector field (default ``body_vector``).
        dimensions: Hybrid: the embeddings' length, sent to the model only when set (default
            1536, see `vector_dimensions`).
        semantic: Hybrid: add semantic ranking to the fused results.
    """

    type: Literal["azure_search"] = "azure_search"
    mode: Mode = "fulltext"
    semantic_configuration: NonEmptyStr = "cpo-semantic"
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 500
    timeout_s: PositiveNumber = 30.0
    audience_any: tuple[str, ...] = ("all", "")
    audience_mode: Literal["filter"] = "filter"
    as_of: NonEmptyStr | None = None
    index_name: NonEmptyStr | None = None
    api_version: NonEmptyStr | None = None
    vector_field: NonEmptyStr | None = None
    dimensions: Annotated[int, Field(ge=1, le=4096)] | None = None
    semantic: bool = False

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_spelling(cls, value: Any) -> Any:
        # ``full-text`` and ``full_text`` have always been read as ``fulltext``; anything else
        # is reported as written.
        if isinstance(value, str) and (spelled := value.replace("_", "").replace("-", "")) in MODES:
            return spelled
        return value

    @field_validator("audience_mode", mode="before")
    @classmethod
    def _no_boost(cls, value: Any) -> Any:
        if value == "boost":
            raise custom_error(
                "audience_mode",
                "azure_search filters by audience (see audience_any) and cannot boost; remove "
                "audience_mode or set it to filter (boost is bm25's)",
            )
        return value

    @field_validator("audience_any", mode="before")
    @classmethod
    def _audience_list(cls, value: Any) -> Any:
        # cpo.yml gives a list; the model keeps a tuple (it is frozen and hashable).
        return tuple(value) if isinstance(value, list) else value

    @field_validator("as_of", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        # YAML reads an unquoted 2025-06-01 as a date; the filter compares ISO text.
        return value.isoformat() if isinstance(value, date) else value

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> SearchSettings:
        """Check the settings, naming the key that is wrong (`validate_model`)."""
        return validate_model(cls, settings, key=SETTINGS_KEY)

    @property
    def uses_semantic(self) -> bool:
        """Semantic ranking: always in semantic mode, on request (``semantic: true``) in hybrid."""
        return self.mode == "semantic" or (self.mode == "hybrid" and self.semantic)

    @property
    def vector(self) -> str | None:
        """The vector field the index has: hybrid mode's (default ``body_vector``), else none
        unless one was named."""
        return self.vector_field or ("body_vector" if self.mode == "hybrid" else None)

    @property
    def vector_dimensions(self) -> int:
        """The length of the vectors: ``dimensions``, else 1536 (text-embedding-3-small's)."""
        return self.dimensions or DEFAULT_DIMENSIONS


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
            "vector_field": s.vector,
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
        field = self.settings.vector
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
                    fields=self.settings.vector,
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
            name=self.settings.vector,
            type=EDM_VECTOR,
            searchable=True,
            hidden=True,  # never returned: hits only need document_id
            vector_search_dimensions=self.settings.vector_dimensions,
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
    """Azure AI Search from ``AZURE_SEARCH_*`` variables and the settings (`SearchSettings`).

    In hybrid mode the embedding deployment comes from ``AZURE_OPENAI_EMBEDDING_DEPLOYMENT``
    with ``AZURE_OPENAI_ENDPOINT`` and ``AZURE_OPENAI_API_KEY`` (or a token).

    Raises:
        ConfigurationError: A setting is invalid (naming its key), or a variable is missing.
    """
    search = SearchSettings.from_settings(settings)
    endpoint = endpoint_from_env(env, ENDPOINT_VAR, "azure_search")
    index_name = (search.index_name or env.get(INDEX_VAR) or "").strip()
    if not index_name:
        raise ConfigurationError(
            f"{INDEX_VAR} is not set: the azure_search provider needs an index name. Set it "
            "in the environment (see .env.example) or index_name under providers.retrieval.",
        )
    write_auth = resolve_auth(search, env, (ADMIN_KEY_VAR,))
    # Queries use the query key when there is one, else whatever writes.
    read_auth = (
        resolve_auth(search, env, (QUERY_KEY_VAR,)) if env.get(QUERY_KEY_VAR) else write_auth
    )
    check_token_transport(endpoint, write_auth, ENDPOINT_VAR, ADMIN_KEY_VAR)
    options: dict[str, Any] = {
        "retry_total": 0,
        "connection_timeout": min(10.0, search.timeout_s),
        "read_timeout": search.timeout_s,
        **azure_tls_options(search),
    }
    if search.api_version:
        options["api_version"] = search.api_version
    embedder = None
    if search.mode == "hybrid":
        embedder = azure_embeddings_factory(
            search,
            env,
            dimensions=search.vector_dimensions,
            send_dimensions=search.dimensions is not None,
            timeout_s=search.timeout_s,
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
