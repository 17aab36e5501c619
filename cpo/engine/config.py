"""Read and validate ``cpo.yml`` into frozen dataclasses; errors name the key path and line.

The whole file is validated by one schema (`cpo.engine.config_schema`): the engine's own keys, the
top-level keys the domain's plugins own (``sources``, ``cpo_settings_sections``) and every ``vars:``
section, whose models they register too (``cpo_vars_sections``). The loaded `ProjectConfig`
carries the validated models (`ProjectConfig.section`): the domain reads those and checks nothing
again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cpo.engine.config_schema import (
    PROVIDER_KINDS,
    SPARK_FIELDS,
    CallsSettings,
    CpoSettings,
    TargetSettings,
    validate_settings,
)
from cpo.engine.settings_errors import Origin
from cpo.engine.telemetry import TelemetrySettings
from cpo.engine.yamlfile import YamlDocument, read_yaml
from cpo.errors import ConfigurationError

CONFIG_FILE = "cpo.yml"
TOP_LEVEL_KEYS = frozenset(CpoSettings.model_fields)
"""The engine's own top-level keys (plugins own more: `cpo.engine.settings.settings_sections`)."""
SectionT = TypeVar("SectionT")
__all__ = ["PROVIDER_KINDS", "TOP_LEVEL_KEYS"]
DEFAULT_PATHS = {
    "models": "models",
    "seeds": "seeds",
    "udfs": "udfs",
    "prompts": "prompts",
    "data_tests": "data_tests",
    "target": "target",
    "logs": "logs",
}


@dataclass(frozen=True)
class Target:
    """Where a build writes and which provider serves each AI step."""

    name: str
    database: str
    providers: Mapping[str, Mapping[str, Any]]
    memory_limit: str | None = None
    """DuckDB's ``memory_limit`` for builds (``targets.<name>.memory_limit``)."""
    type: str = "duckdb"
    """The engine: ``duckdb`` or ``spark``."""
    engine: Mapping[str, Any] = field(default_factory=dict)
    """The engine's own validated settings that were given (Spark: master, warehouse...)."""


CallSettings = CallsSettings
"""The call layer's limits: one model, with its defaults, in `cpo.engine.config_schema`."""


@dataclass(frozen=True)
class Price:
    """List price of a model, per million tokens."""

    input_per_1m: float = 0.0
    output_per_1m: float = 0.0


@dataclass(frozen=True)
class ProjectConfig:
    """The validated contents of ``cpo.yml``."""

    name: str
    root: Path
    target: Target
    targets: Mapping[str, Target]
    paths: Mapping[str, str]
    seeds: Mapping[str, Any]
    models: Mapping[str, Any]
    calls: CallSettings
    max_cost_usd: float | None
    prices: Mapping[str, Price]
    cache_path: str
    log_salt_env: str
    vars: Mapping[str, Any]
    document: YamlDocument = field(repr=False, compare=False)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    sections: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """Key path (``sources``, ``vars.segmentation``) -> its model, validated at load."""

    def section(self, key: str, model: type[SectionT]) -> SectionT:
        """The settings at `key` (``sources``, ``vars.experiment``) as the model instance that
        validated them when ``cpo.yml`` loaded; the model's defaults when `key` is not set.

        Raises:
            TypeError: `key` was validated by a schema other than `model` (a programming error:
                the schema registered for it is not the one the caller reads).
        """
        value = self.sections.get(key)
        if value is None:
            return model()
        if not isinstance(value, model):
            raise TypeError(f"{key} was validated as {type(value).__name__}, not {model.__name__}")
        return value

    def path(self, kind: str) -> Path:
        """Absolute path of a project folder (``models``, ``seeds``, ``target``, ...)."""
        return self.root / self.paths[kind]

    @property
    def database_path(self) -> Path:
        """Absolute path of the built database of the chosen target."""
        return self.root / self.target.database


def load_config(
    root: Path,
    *,
    target: str | None = None,
    cli_vars: Mapping[str, Any] | None = None,
    max_cost_usd: float | None = None,
) -> ProjectConfig:
    """Load ``cpo.yml`` from `root`, choose the target and merge ``--vars`` over ``vars:``.

    The whole file, ``vars`` included (after merging ``--vars``), is validated by one schema
    (`cpo.engine.config_schema`).

    Raises:
        ConfigurationError: naming the key path, its line and what was expected.
    """
    config_path = root / CONFIG_FILE
    if not config_path.is_file():
        raise ConfigurationError(
            f"no {CONFIG_FILE} in {root}; run from a CPO project or pass --project-dir"
        )
    if max_cost_usd is not None and not max_cost_usd >= 0:  # also rejects NaN
        raise ConfigurationError(
            f"--max-cost must be a non-negative amount in USD, got {max_cost_usd}"
        )
    doc = read_yaml(config_path, display_path=CONFIG_FILE)
    data = doc.data
    cli = dict(cli_vars or {})
    if isinstance(data, Mapping) and cli:
        file_vars = data.get("vars")
        base = dict(file_vars) if isinstance(file_vars, Mapping) else {}
        if file_vars is None or isinstance(file_vars, Mapping):
            data = {**data, "vars": _merge(base, cli)}
    file_vars = doc.data.get("vars") if isinstance(doc.data, Mapping) else None
    origin = Origin(
        line_of=doc.line_of,
        path=CONFIG_FILE,
        cli_vars=cli,
        file_vars=file_vars if isinstance(file_vars, Mapping) else None,
    )
    validated = validate_settings(data, origin)
    settings = validated.settings
    targets = {
        name: Target(
            name=name,
            database=spec.database,
            providers={k: _provider(k, v, doc, name) for k, v in spec.providers.items()},
            memory_limit=spec.memory_limit,
            type=spec.type,
            engine=spec.model_dump(include=set(SPARK_FIELDS), by_alias=True, exclude_none=True),
        )
        for name, spec in ((n, t or TargetSettings()) for n, t in settings.targets.items())
    }
    chosen = target or settings.target or next(iter(targets))
    if chosen not in targets:
        fix = "; fix --target" if target else ""
        raise ConfigurationError(
            f"unknown target {chosen!r}; defined targets: {', '.join(targets)}{fix}",
            path=CONFIG_FILE,
            line=doc.line_of("targets" if target else "target"),
            key="targets" if target else "target",
        )
    cap = max_cost_usd if max_cost_usd is not None else settings.budget.max_cost_usd
    return ProjectConfig(
        name=settings.name or root.name,
        root=root,
        target=targets[chosen],
        targets=targets,
        paths=settings.paths.model_dump(),
        seeds=dict(settings.seeds),
        models=dict(settings.models),
        calls=settings.calls,
        max_cost_usd=None if cap is None else float(cap),
        prices={
            model: Price(input_per_1m=p.input_per_1m, output_per_1m=p.output_per_1m)
            for model, p in settings.prices.items()
        },
        cache_path=settings.cache.path,
        log_salt_env=settings.logging.salt_env,
        vars=validated.vars,
        document=doc,
        telemetry=settings.telemetry,
        sections=validated.sections,
    )


def parse_cli_vars(text: str | None) -> dict[str, Any]:
    """Parse ``--vars`` (a JSON or YAML mapping) into a dict."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        import yaml

        try:
            # dbt's own examples are YAML flow mappings: --vars '{key: value}'.
            value = yaml.safe_load(text)
        except yaml.YAMLError as yaml_error:
            if text.lstrip().startswith("{"):
                # Looks like JSON: the JSON error says more than YAML's reading of it.
                raise ConfigurationError(f"--vars is not valid JSON or YAML: {e}") from e
            raise ConfigurationError(
                f"--vars is not valid JSON or YAML: {yaml_error}"
            ) from yaml_error
    if not isinstance(value, dict):
        raise ConfigurationError("--vars must be a mapping, e.g. --vars '{\"a\": 1}'")
    return value


def lookup(mapping: Mapping[str, Any], dotted: str) -> Any:
    """Return ``mapping[a][b]`` for ``"a.b"``; raise KeyError if any part is missing."""
    value: Any = mapping
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}"[:80]


def _provider(kind: str, spec: Any, doc: YamlDocument, target: str) -> dict[str, Any]:
    """A provider's settings; a list becomes the one provider a plugin combines it into
    (``cpo_combine_providers``: layered safety, `cpo.providers.plugin`)."""
    if not isinstance(spec, list):
        return dict(spec.model_dump())
    from cpo.engine.plugins import hooks

    providers = [dict(p.model_dump()) for p in spec]
    combined = hooks().cpo_combine_providers(kind=kind, providers=providers)
    if combined is None:
        raise doc.error(
            f"targets.{target}.providers.{kind}",
            f"no plugin combines several {kind} providers; give one mapping",
        )
    return dict(combined)
