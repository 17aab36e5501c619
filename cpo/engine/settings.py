"""The building blocks of every settings model, and the registry of ``vars`` sections.

The engine's own keys of ``cpo.yml`` (targets, calls, budget, prices, cache, logging, telemetry)
are modelled in `cpo.engine.config_schema`, which validates the whole file. ``vars:`` is made of
sections that the domain registers through the ``cpo_vars_sections`` hook (`cpo.engine.plugins`),
one pydantic model (or type) per section::

    @hookimpl
    def cpo_vars_sections():
        return {"safety": SafetyVars}

A ``vars`` section (a mapping) nobody registered is an error, as is any unknown key or wrong value
anywhere; a plain value (``min_age: 18``, dbt-style) may be the project's own unless its name is a
near-miss of a registered section's. Errors name the key path, its line in ``cpo.yml`` (or
``--vars``), what was expected and, for a near-miss, the key meant (`cpo.engine.settings_errors`).

Models derive from `Section`: unknown keys are refused, types are strict (``"4"`` is not 4, 2.5
workers is not 2), and values written as SQL on purpose are typed `SqlExpression` (parsed, one
expression) so the compiler can tell them from plain values, which only ever reach SQL as quoted
literals (see `cpo.engine.compile`).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError, core_schema

from cpo.engine.settings_errors import Origin, checked, key_parts

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ModelT = TypeVar("ModelT", bound=BaseModel)
_VARS_SECTIONS: dict[str, Any] = {}


def register_vars_section(name: str, schema: Any) -> None:
    """Declare the schema of ``vars.<name>`` (a `Section` subclass or any type annotation).

    Plugins declare their sections with the ``cpo_vars_sections`` hook (`cpo.engine.plugins`);
    this is for a project or a test: a section registered here replaces a plugin's of the same
    name (the last registration wins).
    """
    _VARS_SECTIONS[name] = schema


def vars_sections() -> dict[str, Any]:
    """The ``vars`` sections (name -> schema): the plugins', then those registered here."""
    from cpo.engine.plugins import hooks, merged

    return {**merged(hooks().cpo_vars_sections()), **_VARS_SECTIONS}


def settings_sections() -> dict[str, Any]:
    """The top-level keys of ``cpo.yml`` that plugins own (name -> schema), e.g. ``sources``.

    Declared with the ``cpo_settings_sections`` hook (`cpo.engine.plugins`); the engine checks
    each against its schema when ``cpo.yml`` loads, exactly like a ``vars`` section.
    """
    from cpo.engine.plugins import hooks, merged

    return merged(hooks().cpo_settings_sections())


# --- building blocks ---------------------------------------------------------------------------


class Section(BaseModel):
    """Base of every settings model: strict types, unknown keys are errors (with a suggestion)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = cls.known_keys()
            for key in data:
                if key not in known:
                    raise unknown_key_error(key, known)
        return data

    @classmethod
    def known_keys(cls) -> list[str]:
        """The keys this section takes (as written in ``cpo.yml``: aliases, not field names)."""
        return [field.alias or name for name, field in cls.model_fields.items()]


def unknown_key_error(key: Any, known: list[str]) -> PydanticCustomError:
    """The error of a key that is not among `known`, with a "did you mean" for a near-miss.

    Keys starting with ``_`` (a test's injected ``_credential``) are accepted but not offered.
    """
    known = [k for k in known if not k.startswith("_")]
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


def custom_error(kind: str, message: str) -> PydanticCustomError:
    """A validation error of type `kind` whose message is shown as written (braces included)."""
    return PydanticCustomError(kind, message.replace("{", "{{").replace("}", "}}"))


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise custom_error("finite", f"expected a finite number, got {value!r}")
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise custom_error("non_empty", "expected a non-empty string")
    return value


def _identifier(value: str) -> str:
    if not IDENTIFIER.match(value):
        raise custom_error(
            "identifier",
            f"expected a name of letters, digits and underscores (not starting with a digit), "
            f"got {value!r}",
        )
    return value


MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB)")


def memory_size(value: str) -> str:
    """A DuckDB memory size such as ``2GB`` or ``512MB`` (raises ValueError otherwise)."""
    if not MEMORY_SIZE.fullmatch(value):
        raise custom_error(
            "memory_size", f"expected a size such as '2GB' or '512MB', got {value!r}"
        )
    return value


Number = Annotated[float, AfterValidator(_finite)]
PositiveNumber = Annotated[Number, Field(gt=0)]
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
        forbidden: tuple[type[exp.Expr], ...] = (exp.Query, exp.Command, exp.Create)
        forbidden += (exp.Drop, exp.Insert, exp.Delete, exp.Update, exp.Copy, exp.Attach)
        forbidden += (exp.Pragma, exp.Set)
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
                raise custom_error("sql_expression", str(e)) from None

        return core_schema.no_info_after_validator_function(
            validate, core_schema.str_schema(strict=True)
        )


def validate_model(model: type[ModelT], data: Mapping[str, Any], *, key: str) -> ModelT:
    """Validate `data` (a provider's settings given in Python) against a settings model.

    Raises:
        ConfigurationError: naming ``cpo.yml``, the key path under `key` and what is expected.
    """
    origin = Origin(line_of=lambda _: None)
    return checked(model.model_validate, dict(data), tuple(key_parts(key)), origin)
