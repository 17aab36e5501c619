"""Read and validate ``cpo.yml`` into frozen dataclasses; errors name the key path and line.

The engine validates its own keys strictly. Domain settings live under ``vars:``; the engine
passes them through and the steps that read them validate them (`Context.var`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpo.errors import ConfigurationError
from cpo.yamlfile import YamlDocument, read_yaml

CONFIG_FILE = "cpo.yml"
TOP_LEVEL_KEYS = {
    "name",
    "version",
    "target",
    "targets",
    "paths",
    "seeds",
    "models",
    "calls",
    "budget",
    "prices",
    "cache",
    "logging",
    "telemetry",
    "sources",
    "vars",
}
PROVIDER_KINDS = ("retrieval", "generation", "safety")
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


@dataclass(frozen=True)
class CallSettings:
    """Limits applied by the call layer around every provider call."""

    concurrency: int = 8
    requests_per_minute: float = 0.0
    tokens_per_minute: float = 0.0
    max_attempts: int = 6
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    breaker_failures: int = 5
    timeout_s: float = 60.0


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
    telemetry: Mapping[str, Any] = field(default_factory=dict)

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

    Raises:
        ConfigurationError: naming the key path, its line and what was expected.
    """
    config_path = root / CONFIG_FILE
    if not config_path.is_file():
        raise ConfigurationError(
            f"no {CONFIG_FILE} in {root}; run from a CPO project or pass --project-dir"
        )
    doc = read_yaml(config_path, display_path=CONFIG_FILE)
    data = _mapping(doc, doc.data, "")
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise doc.error(
            unknown[0],
            f"unknown key {unknown[0]!r}; expected one of: {', '.join(sorted(TOP_LEVEL_KEYS))}",
        )
    targets = _targets(doc, data)
    chosen = target or _string(doc, data.get("target", next(iter(targets))), "target")
    if chosen not in targets:
        fix = "; fix --target" if target else ""
        raise ConfigurationError(
            f"unknown target {chosen!r}; defined targets: {', '.join(targets)}{fix}",
            path=CONFIG_FILE,
            line=doc.line_of("targets"),
            key="targets",
        )
    if max_cost_usd is not None and not max_cost_usd >= 0:  # also rejects NaN
        raise ConfigurationError(
            f"--max-cost must be a non-negative amount in USD, got {max_cost_usd}"
        )
    paths = {**DEFAULT_PATHS, **_mapping(doc, data.get("paths", {}), "paths")}
    budget = _mapping(doc, data.get("budget", {}), "budget")
    cap = max_cost_usd if max_cost_usd is not None else budget.get("max_cost_usd")
    return ProjectConfig(
        name=_string(doc, data.get("name", root.name), "name"),
        root=root,
        target=targets[chosen],
        targets=targets,
        paths=paths,
        seeds=_mapping(doc, data.get("seeds", {}), "seeds"),
        models=_mapping(doc, data.get("models", {}), "models"),
        calls=_calls(doc, _mapping(doc, data.get("calls", {}), "calls")),
        max_cost_usd=None if cap is None else _number(doc, cap, "budget.max_cost_usd"),
        prices=_prices(doc, _mapping(doc, data.get("prices", {}), "prices")),
        cache_path=_string(
            doc,
            _mapping(doc, data.get("cache", {}), "cache").get("path", ".cpo/cache.sqlite"),
            "cache.path",
        ),
        log_salt_env=_string(
            doc,
            _mapping(doc, data.get("logging", {}), "logging").get("salt_env", "CPO_LOG_SALT"),
            "logging.salt_env",
        ),
        vars=_merge(_mapping(doc, data.get("vars", {}), "vars"), dict(cli_vars or {})),
        document=doc,
        telemetry=_telemetry(doc, data),
    )


def _telemetry(doc: YamlDocument, data: Mapping[str, Any]) -> dict[str, Any]:
    from cpo.telemetry import settings_from

    raw = _mapping(doc, data.get("telemetry", {}), "telemetry")
    try:
        settings_from(raw, {})
    except ConfigurationError as e:
        raise doc.error(e.key or "telemetry", e.message) from None
    return raw


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


def _targets(doc: YamlDocument, data: Mapping[str, Any]) -> dict[str, Target]:
    raw = _mapping(doc, data.get("targets", {"offline": {}}), "targets")
    if not raw:
        raise doc.error("targets", "expected at least one target, e.g. targets: {offline: {}}")
    targets = {}
    for name, spec in raw.items():
        key = f"targets.{name}"
        spec = _mapping(doc, spec or {}, key)
        providers = _mapping(doc, spec.get("providers", {}), f"{key}.providers")
        for kind, settings in providers.items():
            if kind not in PROVIDER_KINDS:
                raise doc.error(
                    f"{key}.providers.{kind}",
                    f"unknown step {kind!r}; expected one of: {', '.join(PROVIDER_KINDS)}",
                )
            settings = _mapping(doc, settings, f"{key}.providers.{kind}")
            if "type" not in settings:
                raise doc.error(f"{key}.providers.{kind}", "missing 'type' (the provider name)")
            for secretish in ("api_key", "key", "password", "secret"):
                if secretish in settings:
                    raise doc.error(
                        f"{key}.providers.{kind}.{secretish}",
                        "secrets never go in cpo.yml; set them in the environment "
                        "(see .env.example) or use a Key Vault reference",
                    )
        database = _string(doc, spec.get("database", "cpo.duckdb"), f"{key}.database")
        targets[name] = Target(name=name, database=database, providers=providers)
    return targets


def _calls(doc: YamlDocument, raw: Mapping[str, Any]) -> CallSettings:
    defaults = CallSettings()
    values = {}
    for name in CallSettings.__dataclass_fields__:
        if name in raw:
            number = _number(doc, raw[name], f"calls.{name}")
            if isinstance(getattr(defaults, name), int):
                if not isinstance(raw[name], int):  # 2.5 workers is a typo, not a wish for 2
                    raise doc.error(f"calls.{name}", f"expected an integer, got {_kind(raw[name])}")
                number = int(number)
            values[name] = number
    unknown = sorted(set(raw) - set(CallSettings.__dataclass_fields__))
    if unknown:
        raise doc.error(
            f"calls.{unknown[0]}",
            f"unknown key; expected one of: {', '.join(CallSettings.__dataclass_fields__)}",
        )
    settings = CallSettings(**values)
    if settings.concurrency < 1:
        raise doc.error("calls.concurrency", "expected an integer of at least 1")
    return settings


def _prices(doc: YamlDocument, raw: Mapping[str, Any]) -> dict[str, Price]:
    prices = {}
    for model, spec in raw.items():
        spec = _mapping(doc, spec, f"prices.{model}")
        prices[model] = Price(
            input_per_1m=_number(doc, spec.get("input_per_1m", 0), f"prices.{model}.input_per_1m"),
            output_per_1m=_number(
                doc, spec.get("output_per_1m", 0), f"prices.{model}.output_per_1m"
            ),
        )
    return prices


def _mapping(doc: YamlDocument, value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise doc.error(key or "(top level)", f"expected a mapping, got {_kind(value)}")
    return dict(value)


def _string(doc: YamlDocument, value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise doc.error(key, f"expected a non-empty string, got {_kind(value)}")
    return value


def _number(doc: YamlDocument, value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise doc.error(key, f"expected a non-negative number, got {_kind(value)}")
    return float(value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}"[:80]
