"""One schema for the whole of ``cpo.yml`` (and ``--vars``), as pydantic models.

The engine owns the top-level keys, targets, calls, budget, prices, cache, logging and telemetry.
``vars:`` is made of sections that the domain registers through the ``cpo_vars_sections`` hook
(`cpo.engine.plugins`), one pydantic model (or type) per section::

    @hookimpl
    def cpo_vars_sections():
        return {"safety": SafetyVars}

A ``vars`` section (a mapping) nobody registered is an error, as is any unknown key or wrong value
anywhere; a plain value (``min_age: 18``, dbt-style) may be the project's own unless its name is a
near-miss of a registered section's.
`validate_settings` turns pydantic's errors into one `ConfigurationError` naming the key path, its
line in ``cpo.yml`` (or ``--vars``), what was expected and, for a near-miss, the key meant.

Models derive from `Section`: unknown keys are refused, types are strict (``"4"`` is not 4, 2.5
workers is not 2), and values written as SQL on purpose are typed `SqlExpression` (parsed, one
expression) so the compiler can tell them from plain values, which only ever reach SQL as quoted
literals (see `cpo.engine.compile`).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from cpo.errors import ConfigurationError
from cpo.providers.base import provider_kinds, provider_settings_model

PROVIDER_KINDS = provider_kinds()
"""The step kinds registered when this module loaded (`cpo.providers.base.register_kind`)."""
SECRET_KEYS = ("api_key", "key", "password", "secret")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ModelT = TypeVar("ModelT", bound=BaseModel)
_VARS_SECTIONS: dict[str, Any] = {}
_ADAPTERS: dict[str, tuple[Any, TypeAdapter[Any]]] = {}  # name -> (schema, its adapter)


def register_vars_section(name: str, schema: Any) -> None:
    """Declare the schema of ``vars.<name>`` (a `Section` subclass or any type annotation).

    Plugins declare their sections with the ``cpo_vars_sections`` hook (`cpo.engine.plugins`);
    this is for a project or a test: a section registered here replaces a plugin's of the same
    name (the last registration wins).
    """
    _VARS_SECTIONS[name] = schema
    _ADAPTERS.pop(name, None)


def vars_sections() -> dict[str, Any]:
    """The ``vars`` sections (name -> schema): the plugins', then those registered here."""
    from cpo.engine.plugins import hooks, merged

    return {**merged(hooks().cpo_vars_sections()), **_VARS_SECTIONS}


# --- building blocks ---------------------------------------------------------------------------


class Section(BaseModel):
    """Base of every settings model: strict types, unknown keys are errors (with a suggestion)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = [field.alias or name for name, field in cls.model_fields.items()]
            for key in data:
                if key not in known:
                    raise unknown_key_error(key, known)
        return data


def unknown_key_error(key: Any, known: list[str]) -> PydanticCustomError:
    """The error of a key that is not among `known`, with a "did you mean" for a near-miss."""
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return PydanticCustomError(
        "unknown_key",
        "unknown key {quoted}{hint}; expected one of: {expected}",
        {
            "key": str(key),
            "quoted": repr(str(key)),
            "hint": hint,
            "expected": ", ".join(sorted(known)),
        },
    )


def _custom(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message.replace("{", "{{").replace("}", "}}"))


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise _custom("finite", f"expected a finite number, got {value!r}")
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise _custom("non_empty", "expected a non-empty string")
    return value


def _identifier(value: str) -> str:
    if not IDENTIFIER.match(value):
        raise _custom(
            "identifier",
            f"expected a name of letters, digits and underscores (not starting with a digit), "
            f"got {value!r}",
        )
    return value


MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB)")


def memory_size(value: str) -> str:
    """A DuckDB memory size such as ``2GB`` or ``512MB`` (raises ValueError otherwise)."""
    if not MEMORY_SIZE.fullmatch(value):
        raise _custom("memory_size", f"expected a size such as '2GB' or '512MB', got {value!r}")
    return value


Number = Annotated[float, AfterValidator(_finite)]
NonNegativeNumber = Annotated[float, Field(ge=0), AfterValidator(_finite)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonEmptyStr = Annotated[str, AfterValidator(_non_empty)]
Identifier = Annotated[str, AfterValidator(_identifier)]
MemorySize = Annotated[str, AfterValidator(memory_size)]


class SqlExpression(str):
    """A value written as SQL on purpose (a merge tag's expression, a rule's ``when:``).

    Validated as exactly one SQL expression (no statement separators, no queries, no DDL); the
    compiler pastes it verbatim, where any other string from the settings becomes a quoted literal.
    """

    __slots__ = ()

    @classmethod
    def parse(cls, text: str) -> SqlExpression:
        """Check that `text` is one SQL expression; raise ValueError saying why not."""
        import sqlglot
        from sqlglot import exp

        if not text.strip():
            raise ValueError("expected a SQL expression, got an empty string")
        try:
            statements = [s for s in sqlglot.parse(text, read="duckdb") if s is not None]
        except sqlglot.errors.ParseError as e:
            first = e.errors[0]["description"] if e.errors else str(e)
            raise ValueError(f"is not a valid SQL expression ({first})") from None
        if len(statements) != 1:
            raise ValueError("must be one SQL expression, not several statements")
        tree = statements[0]
        forbidden = (exp.Query, exp.Command, exp.Create, exp.Drop, exp.Insert, exp.Delete)
        forbidden += (exp.Update, exp.Copy, exp.Attach, exp.Pragma, exp.Set)
        if isinstance(tree, forbidden) or any(isinstance(n, forbidden) for n in tree.walk()):
            raise ValueError(
                "must be a SQL expression over the row's columns, not a query or a statement"
            )
        return cls(text)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        def validate(value: str) -> SqlExpression:
            try:
                return cls.parse(value)
            except ValueError as e:
                raise _custom("sql_expression", str(e)) from None

        return core_schema.no_info_after_validator_function(
            validate, core_schema.str_schema(strict=True)
        )


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
                raise _custom("missing_type", "missing 'type' (the provider name)")
        return data


class TargetSettings(Section):
    """Where a build writes and which provider serves each AI step."""

    type: Literal["duckdb", "spark"] = "duckdb"
    database: NonEmptyStr = "cpo.duckdb"
    # DuckDB's memory_limit for builds (it spills to disk beyond it); None: DuckDB's default.
    memory_limit: MemorySize | None = None
    # Spark targets only (checked further by cpo.adapters.spark_settings).
    master: NonEmptyStr | None = None
    remote: NonEmptyStr | None = None
    warehouse: NonEmptyStr | None = None
    schema_: NonEmptyStr | None = Field(default=None, alias="schema")
    catalog: NonEmptyStr | None = None
    conf: dict[str, str | int | float | bool] | None = None
    shuffle_partitions: PositiveInt | None = None
    providers: dict[NonEmptyStr, ProviderSettings | list[ProviderSettings]] = {}

    @field_validator("providers", mode="before")
    @classmethod
    def _known_kinds(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            kinds = list(provider_kinds())
            for kind in value:
                if kind not in kinds:
                    raise unknown_key_error(kind, kinds)
        return value

    @model_validator(mode="after")
    def _only_safety_is_layered(self) -> TargetSettings:
        for kind, value in self.providers.items():
            if isinstance(value, list) and kind != "safety":
                raise _custom(
                    "layered",
                    f"providers.{kind}: only safety may list several providers; give one mapping",
                )
            if isinstance(value, list) and not value:
                raise _custom("layered", "providers.safety: the list of providers is empty")
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


class TelemetryBlock(Section):
    """Optional OpenTelemetry traces (see `cpo.engine.telemetry`)."""

    enabled: bool = False
    exporter: Literal["console", "otlp", "azure_monitor"] = "console"
    service_name: NonEmptyStr = "cpo"


class CpoSettings(Section):
    """The whole of ``cpo.yml``; ``vars`` is checked section by section (`validate_vars`)."""

    name: NonEmptyStr | None = None
    version: int | NonEmptyStr | None = None
    target: NonEmptyStr | None = None
    targets: dict[NonEmptyStr, TargetSettings | None] = Field(
        default_factory=lambda: {"offline": TargetSettings()}, min_length=1
    )
    paths: PathsSettings = PathsSettings()
    seeds: dict[str, Any] = {}
    models: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    calls: CallsSettings = CallsSettings()
    budget: BudgetSettings = BudgetSettings()
    prices: dict[str, PriceSettings] = {}
    cache: CacheSettings = CacheSettings()
    logging: LoggingSettings = LoggingSettings()
    telemetry: TelemetryBlock = TelemetryBlock()
    vars: dict[str, Any] = {}


# --- validation and error messages -------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """Where settings came from, to point an error at the right file and line.

    Attributes:
        line_of: Line of a dotted key path in ``cpo.yml`` (None when unknown).
        path: The file shown in errors.
        cli_vars: The ``--vars`` mapping (errors inside it name ``--vars``, not a line).
        file_vars: The ``vars`` of the file, before ``--vars`` was merged in.
    """

    line_of: Callable[[str], int | None]
    path: str = "cpo.yml"
    cli_vars: Mapping[str, Any] | None = None
    file_vars: Mapping[str, Any] | None = None


def validate_settings(data: Any, origin: Origin) -> tuple[CpoSettings, dict[str, Any]]:
    """Validate a whole ``cpo.yml`` mapping (with ``--vars`` already merged into ``vars``).

    Returns:
        The settings, and ``vars`` as a plain dict in which SQL-typed values are `SqlExpression`.

    Raises:
        ConfigurationError: the first problem, naming key path, line and what is expected.
    """
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"expected a mapping of settings at the top level, got {describe(data)}",
            path=origin.path,
            line=1,
        )
    try:
        settings = CpoSettings.model_validate(dict(data))
    except ValidationError as e:
        raise _to_configuration_error(e, (), origin, dict(data)) from None
    _validate_providers(settings, origin)
    return settings, validate_vars(settings.vars, origin)


def _validate_providers(settings: CpoSettings, origin: Origin) -> None:
    """Check each provider's settings against its registered model (`register_provider`)."""
    for name, target in settings.targets.items():
        for kind, value in (target.providers if target else {}).items():
            listed = isinstance(value, list)
            for index, provider in enumerate(value if isinstance(value, list) else [value]):
                raw = provider.model_dump()
                model = provider_settings_model(kind, str(raw["type"]))
                if model is None:
                    continue
                prefix = ("targets", name, "providers", kind, *((index,) if listed else ()))
                try:
                    model.model_validate(raw)
                except ValidationError as e:
                    raise _to_configuration_error(e, prefix, origin, raw) from None


def validate_model(model: type[ModelT], data: Mapping[str, Any], *, key: str) -> ModelT:
    """Validate `data` (a provider's settings given in Python) against a settings model.

    Raises:
        ConfigurationError: naming ``cpo.yml``, the key path under `key` and what is expected.
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as e:
        origin = Origin(line_of=lambda _: None)
        raise _to_configuration_error(e, tuple(_key_parts(key)), origin, dict(data)) from None


def validate_vars(values: Mapping[str, Any], origin: Origin) -> dict[str, Any]:
    """Validate every ``vars`` section against its registered schema.

    Returns:
        A copy of `values` in which every value typed `SqlExpression` is one.

    Raises:
        ConfigurationError: an unregistered section or an invalid value.
    """
    sections = vars_sections()
    result = dict(values)
    for name, value in values.items():
        if name not in sections:
            close = difflib.get_close_matches(str(name), list(sections), n=1, cutoff=0.8)
            if isinstance(value, Mapping) or close:
                # A section must be registered; a plain value (dbt-style ``min_age: 18``) may
                # be the project's own, unless its name is a near-miss of a section's.
                error = unknown_key_error(name, list(sections))
                raise _error(
                    origin,
                    ("vars", name),
                    f"{error.message()}; a vars section needs a schema: a plugin's "
                    "cpo_vars_sections hook, or register_vars_section(name, Model) in Python",
                )
            continue
        schema, adapter = _ADAPTERS.get(name) or (None, None)
        if adapter is None or schema is not sections[name]:
            adapter = TypeAdapter(sections[name])
            _ADAPTERS[name] = (sections[name], adapter)
        try:
            validated = adapter.validate_python(value, strict=True)
        except ValidationError as e:
            raise _to_configuration_error(e, ("vars", name), origin, value) from None
        result[name] = _with_sql_expressions(value, validated)
    return result


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


def _to_configuration_error(
    error: ValidationError, prefix: tuple[Any, ...], origin: Origin, data: Any
) -> ConfigurationError:
    details = [(d, _clean_loc(d["loc"], data)) for d in error.errors(include_url=False)]
    # Alternatives of a union all fail: report the error that got furthest into the value.
    depth = max(len(loc) for _, loc in details)
    deepest = [(d, loc) for d, loc in details if len(loc) == depth]
    first, loc = deepest[0]
    message = _message(first)
    if first["type"] == "unknown_key":
        loc = (*loc, first["ctx"]["key"])
    elif first["type"] == "secret":
        loc = (*loc, first["ctx"]["key"])
        message = message.split(": ", 1)[1]
    elif first["type"] == "value_error" and (path := _KEY_PREFIX.match(message)):
        # A model-level check that names the key it concerns ("arms[0].weight: ..."): point there.
        loc = (*loc, *_key_parts(path.group(1)))
        message = path.group(2).removesuffix(f", got {describe(first.get('input'))}")
    else:
        alternatives = [_message(d) for d, other in deepest if other == loc]
        if len(alternatives) > 1 and all(", got " in a for a in alternatives):
            wanted = dict.fromkeys(
                a.split(", got ")[0].removeprefix("expected ") for a in alternatives
            )
            message = f"expected {' or '.join(wanted)}, got {describe(first.get('input'))}"
    # Union alternatives that failed earlier on the way (a prefix of `loc`) are not problems.
    others = {other for _, other in details if other != loc[: len(other)]}
    if others:
        more = len(others)
        message += f" (and {more} more problem{'s' if more > 1 else ''}; fix this one first)"
    return _error(origin, prefix + loc, message)


_KEY_PREFIX = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\])*(?:\.[A-Za-z_]\w*(?:\[\d+\])*)*): (.*)$", re.S)


def _key_parts(path: str) -> list[str | int]:
    """``metrics[0].column`` -> ``["metrics", 0, "column"]``."""
    parts: list[str | int] = []
    for name, index in re.findall(r"([A-Za-z_]\w*)|\[(\d+)\]", path):
        parts.append(name if name else int(index))
    return parts


def _clean_loc(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """The parts of a pydantic loc that are keys or indexes of `data` (not union member tags)."""
    cleaned = []
    value = data
    for part in loc:
        if _has(value, part):
            value = value[part]
        elif isinstance(value, Mapping) and isinstance(part, str) and part.isidentifier():
            # A missing key of a mapping: name it, unless it is a union member's type tag.
            if part[:1].isupper() or part in ("str", "int", "float", "bool", "list", "dict"):
                continue
            cleaned.append(part)
            value = None
            continue
        else:
            continue
        cleaned.append(part)
    return tuple(cleaned)


def _message(detail: Mapping[str, Any]) -> str:
    kind = detail["type"]
    got = describe(detail.get("input"))
    ctx = detail.get("ctx") or {}
    if kind in (
        "unknown_key",
        "secret",
        "missing_type",
        "identifier",
        "finite",
        "non_empty",
        "memory_size",
    ):
        return detail["msg"]
    if kind in ("sql_expression", "custom", "value_error"):
        text = detail["msg"].removeprefix("Value error, ")
        if "got" in text or kind == "sql_expression" or isinstance(detail.get("input"), Mapping):
            return text
        return f"{text}, got {got}"
    if kind == "missing":
        return "is required but not set"
    if kind == "literal_error":
        expected = ctx.get("expected", "").replace("'", "").replace(" or ", ", ")
        if "[key]" in detail["loc"]:
            return f"unknown key {detail.get('input')!r}; expected one of: {expected}"
        return f"expected one of: {expected}; got {got}"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"expected an integer, got {got}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {got}"
    if kind == "string_type":
        return f"expected a string, got {got}"
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return f"expected a mapping, got {_kind_name(detail.get('input'))}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {got}"
    if kind in ("date_type", "date_parsing", "date_from_datetime_parsing"):
        return f"expected a date like 2026-11-24, got {got}"
    number = "an integer" if type(detail.get("input")) is int else "a number"
    if kind == "greater_than_equal":
        return f"expected {number} of at least {ctx['ge']}, got {got}"
    if kind == "greater_than":
        return f"expected {number} greater than {ctx['gt']}, got {got}"
    if kind == "less_than_equal":
        return f"expected {number} of at most {ctx['le']}, got {got}"
    if kind == "less_than":
        return f"expected {number} less than {ctx['lt']}, got {got}"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s), got {got}"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} item(s), got {got}"
    if kind == "string_too_short":
        return "expected a non-empty string"
    if kind == "string_pattern_mismatch":
        return f"expected text matching {ctx.get('pattern')}, got {got}"
    return f"{detail['msg']}; got {got}"


def _error(origin: Origin, loc: tuple[Any, ...], message: str) -> ConfigurationError:
    key = format_key(loc)
    dotted = ".".join(str(p) for p in loc)
    if loc[:1] == ("vars",) and origin.cli_vars and _from_cli(origin, loc[1:]):
        return ConfigurationError(message, path="--vars", key=key)
    return ConfigurationError(message, path=origin.path, line=origin.line_of(dotted), key=key)


def _from_cli(origin: Origin, loc: tuple[Any, ...]) -> bool:
    """Whether the value at ``vars.<loc>`` came from ``--vars`` rather than the file."""
    if not _in_mapping(origin.cli_vars or {}, loc):
        return False
    value: Any = origin.cli_vars
    for part in loc:
        value = value[part] if _has(value, part) else None
    # A mapping in both: the key is the file's too; point at the file's line.
    in_file = origin.file_vars is not None and _in_mapping(origin.file_vars, loc)
    return not (isinstance(value, Mapping) and in_file)


def _in_mapping(mapping: Mapping[str, Any], loc: tuple[Any, ...]) -> bool:
    value: Any = mapping
    for part in loc:
        if _has(value, part):
            value = value[part]
        else:
            # A key the --vars value does not have: it came from --vars only if its parent is a
            # leaf --vars replaced wholesale (a list or a scalar).
            return not isinstance(value, Mapping) and value is not mapping
    return True


def _has(value: Any, part: Any) -> bool:
    if isinstance(value, Mapping):
        return part in value
    return isinstance(value, list | tuple) and isinstance(part, int) and 0 <= part < len(value)


def format_key(loc: tuple[Any, ...]) -> str:
    """``("vars", "experiment", "arms", 0, "name")`` -> ``vars.experiment.arms[0].name``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def describe(value: Any) -> str:
    """A short description of a value for an error message (``the string 'x'``, ``int -1``)."""
    if value is None:
        return "nothing"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the string {shown!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return f"list {value!r}"[:80]
    return f"{type(value).__name__} {value!r}"[:80]


def _kind_name(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    return describe(value)
