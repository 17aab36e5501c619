"""The schema of ``cpo.yml``: the engine's own keys as pydantic models, and the validation of
the whole file (``--vars`` merged into ``vars``) section by section.

`validate_settings` is the one entry point (`cpo.engine.config` calls it); ``vars`` sections are
checked against the schemas registered in `cpo.engine.settings`, and every error is turned into
one `ConfigurationError` by `cpo.engine.settings_errors`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cpo.engine.settings import (
    Identifier,
    MemorySize,
    NonEmptyStr,
    NonNegativeNumber,
    PositiveInt,
    Section,
    SqlExpression,
    custom_error,
    settings_sections,
    unknown_key_error,
    vars_sections,
)
from cpo.engine.settings_errors import Origin, checked, configuration_error, describe
from cpo.engine.telemetry import TelemetrySettings
from cpo.errors import ConfigurationError
from cpo.providers.base import provider_kinds, provider_settings_model

PROVIDER_KINDS = provider_kinds()
"""The step kinds registered when this module loaded (`cpo.providers.base.register_kind`)."""
SPARK_FIELDS = ("master", "remote", "warehouse", "schema_", "catalog", "conf", "shuffle_partitions")
"""The keys only a ``type: spark`` target takes (field names: ``schema_`` is ``schema``)."""
SECRET_KEYS = ("api_key", "key", "password", "secret")
# A section's key path -> (its schema, the schema's adapter).
_ADAPTERS: dict[str, tuple[Any, TypeAdapter[Any]]] = {}


# --- the engine's own keys ---------------------------------------------------------------------


class ProviderSettings(BaseModel):
    """One provider of a target; its own settings are checked by the provider when it is built."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    type: NonEmptyStr

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in SECRET_KEYS:
                if key in data:
                    raise PydanticCustomError(
                        "secret",
                        "{key}: secrets never go in cpo.yml; set them in the environment "
                        "(see .env.example) or use a Key Vault reference",
                        {"key": key},
                    )
            if "type" not in data:
                raise custom_error("missing_type", "missing 'type' (the provider name)")
        return data


class TargetSettings(Section):
    """Where a build writes and which provider serves each AI step."""

    type: Literal["duckdb", "spark"] = "duckdb"
    database: NonEmptyStr = "cpo.duckdb"
    # DuckDB's memory_limit for builds (it spills to disk beyond it); None: DuckDB's default.
    memory_limit: MemorySize | None = None
    # Spark targets only (`cpo.adapters.SparkSettings` holds them, with their defaults).
    master: NonEmptyStr | None = None
    remote: NonEmptyStr | None = None
    warehouse: NonEmptyStr | None = None
    schema_: Identifier | None = Field(default=None, alias="schema")
    catalog: Identifier | None = None
    conf: dict[str, str | int | float | bool] | None = None
    shuffle_partitions: PositiveInt | None = None
    providers: dict[NonEmptyStr, ProviderSettings | list[ProviderSettings]] = Field(
        default_factory=dict
    )

    @field_validator("providers", mode="before")
    @classmethod
    def _known_kinds(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            kinds = list(provider_kinds())
            for kind in value:
                if kind not in kinds:
                    raise unknown_key_error(kind, kinds)
        return value

    @field_validator(*SPARK_FIELDS)
    @classmethod
    def _spark_only(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("type") != "spark":
            raise custom_error(
                "spark_only", "only a spark target takes this key; add type: spark or remove it"
            )
        return value

    @field_validator("memory_limit")
    @classmethod
    def _duckdb_only(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("type") == "spark":
            raise custom_error(
                "duckdb_only",
                "memory_limit is DuckDB's; a spark target sets spark.driver.memory under conf",
            )
        return value

    @field_validator("remote")
    @classmethod
    def _one_endpoint(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("master"):
            raise custom_error(
                "endpoint",
                "set either master (local[N], a cluster URL) or remote (sc://host:port), not both",
            )
        return value

    @model_validator(mode="after")
    def _only_safety_is_layered(self) -> TargetSettings:
        for kind, value in self.providers.items():
            if isinstance(value, list) and kind != "safety":
                raise custom_error(
                    "layered",
                    f"providers.{kind}: only safety may list several providers; give one mapping",
                )
            if isinstance(value, list) and not value:
                raise custom_error("layered", "providers.safety: the list of providers is empty")
        return self


class CallsSettings(Section):
    """Limits applied by the call layer around every provider call."""

    concurrency: PositiveInt = 8
    requests_per_minute: NonNegativeNumber = 0.0
    tokens_per_minute: NonNegativeNumber = 0.0
    max_attempts: PositiveInt = 6
    backoff_initial_s: NonNegativeNumber = 0.5
    backoff_max_s: NonNegativeNumber = 30.0
    breaker_failures: PositiveInt = 5


class BudgetSettings(Section):
    """The cost cap of a build."""

    max_cost_usd: NonNegativeNumber | None = None


class PriceSettings(Section):
    """List price of a model, per million tokens."""

    input_per_1m: NonNegativeNumber = 0.0
    output_per_1m: NonNegativeNumber = 0.0


class PathsSettings(Section):
    """Project folders, relative to the project root."""

    models: NonEmptyStr = "models"
    seeds: NonEmptyStr = "seeds"
    udfs: NonEmptyStr = "udfs"
    prompts: NonEmptyStr = "prompts"
    data_tests: NonEmptyStr = "data_tests"
    target: NonEmptyStr = "target"
    logs: NonEmptyStr = "logs"


class CacheSettings(Section):
    """The provider-call cache (outside the built database)."""

    path: NonEmptyStr = ".cpo/cache.sqlite"


class LoggingSettings(Section):
    """Logging: the environment variable holding the salt of hashed ids."""

    salt_env: NonEmptyStr = "CPO_LOG_SALT"


_OFFLINE_TARGET: dict[str, TargetSettings | None] = {"offline": TargetSettings()}
"""The targets of a ``cpo.yml`` that names none: ``offline``, with the defaults."""


class CpoSettings(Section):
    """The whole of ``cpo.yml``; ``vars`` is checked section by section (`validate_vars`)."""

    name: NonEmptyStr | None = None
    version: int | NonEmptyStr | None = None
    target: NonEmptyStr | None = None
    targets: dict[NonEmptyStr, TargetSettings | None] = Field(
        default_factory=lambda: _OFFLINE_TARGET.copy(), min_length=1
    )
    paths: PathsSettings = PathsSettings()
    seeds: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, Any] = Field(default_factory=dict)
    calls: CallsSettings = CallsSettings()
    budget: BudgetSettings = BudgetSettings()
    prices: dict[str, PriceSettings] = Field(default_factory=dict)
    cache: CacheSettings = CacheSettings()
    logging: LoggingSettings = LoggingSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    vars: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def known_keys(cls) -> list[str]:
        """The engine's keys and the top-level sections plugins own (``sources``), which
        `validate_settings` checks against their own schemas."""
        return [*super().known_keys(), *settings_sections()]


@dataclass(frozen=True)
class ValidatedSettings:
    """A whole ``cpo.yml``, checked.

    Attributes:
        settings: The engine's own keys.
        vars: ``vars`` as a plain dict (``--vars`` merged in) in which the values typed
            `SqlExpression` are one.
        sections: Key path (``sources``, ``vars.segmentation``) -> the value its registered
            schema validated (a model instance for a `Section`): what the domain reads.
    """

    settings: CpoSettings
    vars: dict[str, Any]
    sections: dict[str, Any] = field(default_factory=dict)


def validate_settings(data: Any, origin: Origin) -> ValidatedSettings:
    """Validate a whole ``cpo.yml`` mapping (with ``--vars`` already merged into ``vars``).

    The engine's keys are checked by `CpoSettings`, the keys plugins own (``sources``) and every
    ``vars`` section by their registered schemas, each once.

    Raises:
        ConfigurationError: the first problem, naming key path, line and what is expected.
    """
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"expected a mapping of settings at the top level, got {describe(data)}",
            path=origin.path,
            line=1,
        )
    owned = settings_sections()
    engine_keys = {k: v for k, v in data.items() if k not in owned}
    settings = checked(CpoSettings.model_validate, engine_keys, (), origin)
    _validate_providers(settings, origin)
    sections = {
        name: _validate_section(name, schema, data[name], (name,), origin)
        for name, schema in owned.items()
        if name in data
    }
    variables, var_sections = validate_vars(settings.vars, origin)
    sections.update({f"vars.{name}": value for name, value in var_sections.items()})
    return ValidatedSettings(settings, variables, sections)


def _validate_providers(settings: CpoSettings, origin: Origin) -> None:
    """Check each provider's settings against its registered model (`register_provider`)."""
    for name, target in settings.targets.items():
        for kind, value in (target.providers if target else {}).items():
            listed = isinstance(value, list)
            for index, provider in enumerate(value if isinstance(value, list) else [value]):
                prefix = ("targets", name, "providers", kind, *((index,) if listed else ()))
                _validate_provider(kind, provider.model_dump(), prefix, origin)


def _validate_provider(
    kind: str, raw: dict[str, Any], prefix: tuple[Any, ...], origin: Origin
) -> None:
    """Check one provider's settings; a provider whose model has a ``providers`` field (layered
    safety) combines providers of its kind, so each of those is checked against its own model."""
    model = provider_settings_model(kind, str(raw["type"]))
    if model is None:
        return
    checked(model.model_validate, raw, prefix, origin)
    if "providers" in model.model_fields:
        for index, layer in enumerate(raw["providers"]):
            _validate_provider(kind, dict(layer), (*prefix, "providers", index), origin)


def validate_vars(
    values: Mapping[str, Any], origin: Origin
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate every ``vars`` section against its registered schema.

    Returns:
        A copy of `values` in which every value typed `SqlExpression` is one, and the validated
        value of each registered section given (section name -> model instance or value).

    Raises:
        ConfigurationError: an unregistered section or an invalid value.
    """
    sections = vars_sections()
    result = dict(values)
    validated: dict[str, Any] = {}
    for name, value in values.items():
        if name not in sections:
            close = difflib.get_close_matches(str(name), list(sections), n=1, cutoff=0.8)
            if isinstance(value, Mapping) or close:
                # A section must be registered; a plain value (dbt-style ``min_age: 18``) may
                # be the project's own, unless its name is a near-miss of a section's.
                error = unknown_key_error(name, list(sections))
                raise configuration_error(
                    origin,
                    ("vars", name),
                    f"{error.message()}; a vars section needs a schema: a plugin's "
                    "cpo_vars_sections hook, or register_vars_section(name, Model) in Python",
                )
            continue
        validated[name] = _validate_section(
            f"vars.{name}", sections[name], value, ("vars", name), origin
        )
        result[name] = _with_sql_expressions(value, validated[name])
    return result, validated


def _validate_section(
    key: str, schema: Any, value: Any, prefix: tuple[Any, ...], origin: Origin
) -> Any:
    """`value` validated (strict types) by `schema`, whose adapter is built once per schema."""
    cached, adapter = _ADAPTERS.get(key) or (None, None)
    if adapter is None or cached is not schema:
        adapter = TypeAdapter(schema)
        _ADAPTERS[key] = (schema, adapter)
    return checked(partial(adapter.validate_python, strict=True), value, prefix, origin)


def _with_sql_expressions(raw: Any, validated: Any) -> Any:
    """`raw` (as written) with the values that `validated` holds as `SqlExpression` marked."""
    if isinstance(validated, SqlExpression):
        return validated
    if isinstance(validated, BaseModel) and isinstance(raw, Mapping):
        fields = type(validated).model_fields
        return {
            k: _with_sql_expressions(v, getattr(validated, k)) if k in fields else v
            for k, v in raw.items()
        }
    if isinstance(validated, Mapping) and isinstance(raw, Mapping):
        return {k: _with_sql_expressions(v, validated.get(k)) for k, v in raw.items()}
    if isinstance(validated, list | tuple) and isinstance(raw, list | tuple):
        return [_with_sql_expressions(r, v) for r, v in zip(raw, validated, strict=False)]
    return raw
