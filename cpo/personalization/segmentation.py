"""Domain settings over customers: segment rules, merge tags and content rules, as data.

- ``vars.segmentation.rules``: a list of ``{name, title, description, when}``; ``when`` is a
  SQL condition over ``customer_features`` (roles' features and the source's attributes). The
  first matching rule wins; ``vars.segmentation.default`` names the segment of everyone else.
- ``vars.messages.merge_tags``: tag -> SQL expression over ``stg_customers`` (alias ``c``), or
  ``{sql, fallback}``: the fallback (possibly empty) replaces a missing or blank value.
- ``vars.content.rules``: what a usable document of a category must say (a regular expression).

The models are registered as ``vars`` sections (`cpo.personalization.plugin`), so ``cpo.yml`` is
checked against them when it loads; the functions here read the instances the loader made
(`ProjectConfig.section`). What needs the data is checked when the project compiles: an unknown
column names the rule (or tag) and the columns available, and which role to map to get it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlglot
from pydantic import AfterValidator, Field, model_validator
from sqlglot import exp

from cpo.engine.settings import NonEmptyStr, Section, SqlExpression
from cpo.errors import ConfigurationError
from cpo.personalization.roles import CUSTOMER_ATTRIBUTE_ROLES, CUSTOMER_ROLE_TABLE

_SLUG = r"^[a-z][a-z0-9_]*$"
# Which role(s) a feature column needs, to say what to map when a rule uses a missing one.
NEEDS: dict[str, str] = {
    "tenure_days": "signup_date",
    "r_score": "recency_days",
    "f_score": "frequency",
    "m_score": "monetary (or frequency and avg_order_value)",
    "monetary": "monetary (or frequency and avg_order_value)",
    "rfm_score": "recency_days, frequency or monetary",
    "rfm_code": "recency_days, frequency or monetary",
    "engagement_score": "open_rate, click_rate or last_engagement_days",
}


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as e:
        raise ValueError(f"is not a valid regular expression ({e})") from None
    return value


def _merge_tag_name(value: str) -> str:
    if not re.match(r"^[a-z_][a-z0-9_]*$", value):
        raise ValueError(
            f"a merge tag name is lower-case letters, digits and _ (e.g. first_name), got {value!r}"
        )
    return value


Regex = Annotated[str, Field(min_length=1), AfterValidator(_regex)]
MergeTagName = Annotated[str, AfterValidator(_merge_tag_name)]


class SegmentRule(Section):
    """One rule segment: customers matching ``when`` (and no earlier rule)."""

    name: str = Field(pattern=_SLUG, description="segment id, e.g. champions")
    title: str | None = Field(default=None, description="display name (default from name)")
    description: str = ""
    when: SqlExpression = Field(description="SQL condition over customer_features")


class DefaultSegment(Section):
    """The segment of customers no rule matches."""

    name: str = Field(pattern=_SLUG)
    title: str | None = None
    description: str = ""


class SegmentationSettings(Section):
    """``vars.segmentation``."""

    method: Literal["rules", "kmeans"] = "rules"
    k_min: int = Field(default=3, ge=2)
    k_max: int = Field(default=8, ge=2)
    seed: int = 42
    sample_size: int = Field(default=20000, ge=100)
    rules: list[SegmentRule] = Field(default_factory=list)
    default: DefaultSegment = DefaultSegment(name="everyone_else", title="Everyone else")

    @model_validator(mode="after")
    def _consistent(self) -> SegmentationSettings:
        if self.k_max < self.k_min:
            raise ValueError(
                f"k_min: must be at most k_max ({self.k_max}), got {self.k_min} (KMeans tries "
                "every k from k_min to k_max)"
            )
        seen = {self.default.name}
        for index, rule in enumerate(self.rules):
            if rule.name in seen:
                raise ValueError(
                    f"rules[{index}].name: segment {rule.name!r} is defined twice (rules and "
                    "default need distinct names)"
                )
            seen.add(rule.name)
        return self


class MergeTag(Section):
    """A merge tag's SQL expression over stg_customers (alias c) and its fallback text."""

    sql: SqlExpression
    fallback: str = ""


class MessagesSettings(Section):
    """``vars.messages``."""

    merge_tags: dict[MergeTagName, SqlExpression | MergeTag] = Field(default_factory=dict)
    strip_citations: bool = True
    # Variables of prompts/footer.txt (brand, postal address, ...), appended to every message.
    footer: dict[str, str] = Field(default_factory=dict)


class ContentRule(Section):
    """What every usable document of a category must contain."""

    name: str = Field(pattern=_SLUG)
    category: NonEmptyStr
    must_match: Regex = Field(description="regular expression the body must match")
    why: str = ""


class ContentSettings(Section):
    """``vars.content``."""

    rules: list[ContentRule] = Field(default_factory=list)


# The ``vars`` sections this module's models validate (declared by cpo.personalization.plugin).
VARS_SECTIONS: dict[str, type[Section]] = {
    "segmentation": SegmentationSettings,
    "messages": MessagesSettings,
    "content": ContentSettings,
}


def segmentation_settings(config: Any) -> SegmentationSettings:
    """``vars.segmentation``: the model that checked it when ``cpo.yml`` loaded."""
    return config.section("vars.segmentation", SegmentationSettings)


def messages_settings(config: Any) -> MessagesSettings:
    """``vars.messages``: the model that checked it when ``cpo.yml`` loaded."""
    return config.section("vars.messages", MessagesSettings)


def parse_condition(text: str) -> exp.Expr:
    """The tree of a rule's or tag's SQL, which the loader checked is one expression
    (`SqlExpression`); the compiler reads its columns."""
    return sqlglot.parse_one(text, read="duckdb")


_BOOLEAN_NODES = (exp.Predicate, exp.Connector, exp.Not, exp.Boolean, exp.Is, exp.In)


def _is_boolean(tree: exp.Expr, boolean_columns: set[str]) -> bool:
    while isinstance(tree, exp.Paren):
        tree = tree.this
    if isinstance(tree, _BOOLEAN_NODES):
        return True
    if isinstance(tree, exp.Column):
        return tree.name.lower() in boolean_columns
    return False


def _unknown_columns(tree: exp.Expr, available: list[str]) -> list[str]:
    known = {c.lower() for c in available}
    return sorted({c.name for c in tree.find_all(exp.Column) if c.name.lower() not in known})


def _missing_message(column: str, available: list[str]) -> str:
    need = NEEDS.get(column, column if column in CUSTOMER_ATTRIBUTE_ROLES else None)
    hint = (
        f" ({column} needs the role {need}: map it under sources.customers.columns)"
        if need
        else " (add the file's column to sources.customers.attributes to use it)"
    )
    return f"unknown column {column}{hint}. Available: {', '.join(available)}"


def segment_rules(config: Any, columns: list[str], boolean_columns: set[str]) -> dict[str, Any]:
    """The validated rules as SQL for ``segments_rules``.

    Args:
        config: The project configuration.
        columns: The columns of ``customer_features``.
        boolean_columns: Which of them are boolean (usable alone as a condition).

    Returns:
        ``{"rules": [{id, title, description, condition}], "default": {...}}``; conditions
        are re-printed by sqlglot, so they are single, normalised expressions.
    """
    settings = segmentation_settings(config)
    if settings.method == "rules" and not settings.rules:
        # Not a settings check: only a project that builds the rule segments needs rules.
        raise config.document.error(
            "vars.segmentation.rules",
            "no rules: add a list of {name, description, when}, e.g. "
            "[{name: recent, when: 'recency_days <= 90'}], and a default segment",
        )
    rules = []
    for index, rule in enumerate(settings.rules):
        key = f"vars.segmentation.rules[{index}].when"
        what = f"segment rule {rule.name!r}"
        tree = parse_condition(rule.when)
        unknown = _unknown_columns(tree, columns)
        if unknown:
            raise config.document.error(key, f"{what}: {_missing_message(unknown[0], columns)}")
        if not _is_boolean(tree, boolean_columns):
            raise config.document.error(
                key,
                f"{what}: {rule.when!r} is not a condition; write a comparison that is true or "
                "false, e.g. 'recency_days <= 90 and frequency >= 2'",
            )
        rules.append(
            {
                "id": rule.name,
                "title": rule.title or _title(rule.name),
                "description": rule.description,
                "condition": tree.sql(dialect="duckdb"),
            }
        )
    default = settings.default
    return {
        "rules": rules,
        "default": {
            "id": default.name,
            "title": default.title or _title(default.name),
            "description": default.description,
        },
    }


def _title(name: str) -> str:
    return name.replace("_", " ").capitalize()


def merge_tag_names(config: Any) -> tuple[str, ...]:
    """The configured merge tags (the only ones prompts, policy and messages accept)."""
    return tuple(messages_settings(config).merge_tags)


def merge_tag_sql(config: Any, columns: list[str]) -> dict[str, str]:
    """Tag -> SQL expression over ``stg_customers`` (alias c), fallbacks applied.

    Raises:
        ConfigurationError: a tag's expression does not parse, is a query, or uses a column
            that ``stg_customers`` does not have (naming the tag and the role to map).
    """
    result = {}
    for tag, spec in messages_settings(config).merge_tags.items():
        sql, fallback = (spec, None) if isinstance(spec, str) else (spec.sql, spec.fallback)
        tree = parse_condition(sql)
        unknown = _unknown_columns(tree, columns)
        if unknown:
            raise config.document.error(
                f"vars.messages.merge_tags.{tag}",
                f"merge tag {tag!r}: {_missing_message(unknown[0], columns)}",
            )
        text = tree.sql(dialect="duckdb")
        if fallback is not None:
            from cpo.engine.compile import sql_literal  # the one quoting helper

            text = f"coalesce(nullif(trim(cast(({text}) as varchar)), ''), {sql_literal(fallback)})"
        result[tag] = text
    return result


def merge_tag_columns(config: Any, columns: list[str]) -> list[str]:
    """The ``stg_customers`` columns the merge tags read (so ``messages`` joins only if needed)."""
    names = set()
    for spec in messages_settings(config).merge_tags.values():
        sql = spec if isinstance(spec, str) else spec.sql
        names |= {c.name.lower() for c in parse_condition(sql).find_all(exp.Column)}
    return [c for c in columns if c.lower() in names]


def content_rules(config: Any) -> list[dict[str, str]]:
    """``vars.content.rules`` (each regular expression compiled when ``cpo.yml`` loaded)."""
    return [rule.model_dump() for rule in config.section("vars.content", ContentSettings).rules]


def jinja_globals(config: Any) -> dict[str, Any]:
    """The Jinja globals models use: ``sources``, ``segment_rules``, ``merge_tag_sql``,
    ``customer_role_types``..."""
    from cpo.personalization.sources import (
        SourceCatalog,
        customer_columns,
        feature_columns,
        sources_settings,
    )

    catalog = SourceCatalog(Path(config.root), sources_settings(config))

    def rules() -> dict[str, Any]:
        view = catalog["customers"]
        booleans = {a for a in view.attributes if view.attribute_types[a].upper() == "BOOLEAN"}
        return segment_rules(config, feature_columns(view), booleans)

    def tags() -> dict[str, str]:
        return merge_tag_sql(config, customer_columns(catalog["customers"]))

    def tag_columns() -> list[str]:
        return merge_tag_columns(config, customer_columns(catalog["customers"]))

    return {
        "sources": catalog,
        "segment_rules": _as_model_error(rules),
        "merge_tag_sql": _as_model_error(tags),
        "merge_tag_columns": _as_model_error(tag_columns),
        "content_rules": _as_model_error(lambda: content_rules(config)),
        "feature_columns": _as_model_error(lambda: feature_columns(catalog["customers"])),
        # role -> the type stg_customers casts it to (`cpo.personalization.roles`).
        "customer_role_types": {name: r.type for name, r in CUSTOMER_ROLE_TABLE.items()},
    }


def _as_model_error(function: Any) -> Any:
    """Errors raised while a model renders must be ModelErrors to keep their cpo.yml key."""

    def wrapped(*args: Any) -> Any:
        try:
            return function(*args)
        except ConfigurationError as e:
            raise to_model_error(e) from None

    return wrapped


def to_model_error(error: ConfigurationError) -> Any:
    """The same error (path, line, key) as a ModelError, which model rendering passes on."""
    from cpo.errors import ModelError

    return ModelError(error.message, path=error.path, line=error.line, key=error.key)
