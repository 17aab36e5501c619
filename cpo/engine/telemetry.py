"""Optional OpenTelemetry traces: one span per run, one child span per node (off by default).

Turned on by ``telemetry: {enabled: true}`` in ``cpo.yml`` or ``CPO_OTEL_ENABLED=1``; needs the
``otel`` extra (``pip install 'cpo[otel]'``). Spans carry only run ids, node names, statuses,
row counts and timings: never customer data, prompts, message bodies, error texts or secrets.

tracer = configure(config_settings, os.environ)      # None when telemetry is off
with run_span(tracer, run_id, "build") as run:
    with node_span(tracer, "segments", "model") as span:
        span.record(result)                           # status, rows, seconds of a NodeResult
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import field_validator

from cpo.engine.settings import NonEmptyStr, Section, custom_error, validate_model
from cpo.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from cpo.engine.artifacts import NodeResult

# Exporters of OpenTelemetry itself; vendors' exporters are plugins (`exporters`), e.g.
# azure_monitor in `cpo.providers.azure_monitor`.
BUILT_IN_EXPORTERS = ("console", "otlp")
ENABLED_ENV = "CPO_OTEL_ENABLED"
EXPORTER_ENV = "CPO_OTEL_EXPORTER"
CONNECTION_STRING_ENV = "APPLICATIONINSIGHTS_CONNECTION_STRING"
INSTALL_HINT = "pip install 'cpo[otel]'"
# The only attributes a span may carry: identifiers of the run and node, outcomes, counts.
ALLOWED_ATTRIBUTES = frozenset(
    {
        "run_id",
        "command",
        "target",
        "node",
        "resource_type",
        "status",
        "rows",
        "seconds",
        "nodes",
        "tests",
        "failed",
        "committed",
        "error_type",
    }
)
FAILED_STATUSES = ("error", "fail")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
# One tracer per (exporter, service name) per process: OpenTelemetry providers are process-wide
# and Azure Monitor can be configured only once.
_TRACERS: dict[tuple[str, str], Any] = {}
_PROVIDERS: list[Any] = []


class TelemetrySettings(Section):
    """The ``telemetry:`` block of ``cpo.yml`` (validated with the rest of the file)."""

    enabled: bool = False
    exporter: NonEmptyStr = "console"
    service_name: NonEmptyStr = "cpo"

    @field_validator("exporter")
    @classmethod
    def _known_exporter(cls, value: str) -> str:
        known = known_exporters()
        if value not in known:
            raise custom_error(
                "exporter",
                f"expected one of: {', '.join(known)} (a plugin's cpo_telemetry_exporters adds "
                "more)",
            )
        return value


def known_exporters() -> tuple[str, ...]:
    """The exporter names ``telemetry.exporter`` accepts: OpenTelemetry's and the plugins'."""
    return (*BUILT_IN_EXPORTERS, *(e for e in exporters() if e not in BUILT_IN_EXPORTERS))


def settings_from(
    settings: TelemetrySettings | Mapping[str, Any] | None, env: Mapping[str, str]
) -> TelemetrySettings:
    """The ``telemetry:`` settings with ``CPO_OTEL_ENABLED`` / ``CPO_OTEL_EXPORTER`` applied.

    Args:
        settings: The validated block (``ProjectConfig.telemetry``), or a mapping (checked here).
        env: The environment.

    Raises:
        ConfigurationError: naming the key or variable that is wrong.
    """
    if not isinstance(settings, TelemetrySettings):
        settings = validate_model(TelemetrySettings, settings or {}, key="telemetry")
    overrides: dict[str, Any] = {}
    flag = env.get(ENABLED_ENV)
    if flag is not None:
        if flag.strip().lower() not in (*_TRUE, *_FALSE):
            raise ConfigurationError(f"{ENABLED_ENV} must be 1 or 0, got {flag!r}")
        overrides["enabled"] = flag.strip().lower() in _TRUE
    exporter = env.get(EXPORTER_ENV)
    if exporter:
        if exporter not in known_exporters():
            raise ConfigurationError(
                f"{EXPORTER_ENV}: unknown exporter {exporter!r}; expected one of: "
                f"{', '.join(known_exporters())}"
            )
        overrides["exporter"] = exporter
    return settings.model_copy(update=overrides)


def configure(
    settings: TelemetrySettings | Mapping[str, Any] | None, env: Mapping[str, str]
) -> Tracer | None:
    """A tracer for the configured exporter, or None when telemetry is off (the default).

    Nothing from OpenTelemetry is imported when telemetry is off.

    Args:
        settings: The ``telemetry:`` mapping of ``cpo.yml`` (or None).
        env: The environment (``CPO_OTEL_ENABLED``, ``CPO_OTEL_EXPORTER``,
            ``APPLICATIONINSIGHTS_CONNECTION_STRING``).

    Raises:
        ConfigurationError: bad settings, a missing package or connection string.
    """
    chosen = settings_from(settings, env)
    if not chosen.enabled:
        return None
    key = (chosen.exporter, chosen.service_name)
    if key not in _TRACERS:
        if chosen.exporter not in BUILT_IN_EXPORTERS:
            _TRACERS[key] = exporters()[chosen.exporter](chosen.service_name, env)
        else:
            _TRACERS[key] = _sdk_tracer(chosen.exporter, chosen.service_name)
    return _TRACERS[key]


def flush(timeout_ms: int = 5000) -> None:
    """Send spans still buffered by the exporters (call at the end of a command)."""
    for provider in _PROVIDERS:
        provider.force_flush(timeout_ms)


class SpanHandle:
    """What `run_span` and `node_span` yield: sets allowed attributes (no-op without a span)."""

    def __init__(self, span: Span | None) -> None:
        self.span = span
        self.started = time.perf_counter()
        self._timed = False

    def set(self, **attributes: Any) -> None:
        """Set ``cpo.<name>`` attributes; None values are left out.

        Raises:
            ValueError: a name outside `ALLOWED_ATTRIBUTES` (a bug: spans carry no free text).
        """
        bad = sorted(set(attributes) - ALLOWED_ATTRIBUTES)
        if bad:
            raise ValueError(f"span attribute {bad[0]!r} is not allowed")
        if self.span is None:
            return
        self._timed = self._timed or attributes.get("seconds") is not None
        for name, value in attributes.items():
            if value is not None:
                self.span.set_attribute(f"cpo.{name}", value)
        if attributes.get("status") in FAILED_STATUSES:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_status(Status(StatusCode.ERROR))

    def record(self, result: NodeResult) -> None:
        """Set status, rows and seconds from a node's or test's result."""
        self.set(status=result.status, rows=result.rows, seconds=round(result.seconds, 3))

    def _close(self, error: BaseException | None) -> None:
        if self.span is None:
            return
        if error is not None:
            self.set(status="error", error_type=type(error).__name__)
        if not self._timed:
            self.set(seconds=round(time.perf_counter() - self.started, 3))


@contextmanager
def run_span(
    tracer: Tracer | None, run_id: str, command: str, *, target: str | None = None
) -> Iterator[SpanHandle]:
    """The span of one command (``cpo.build``); node spans opened inside become its children."""
    with _span(tracer, f"cpo.{command}", run_id=run_id, command=command, target=target) as handle:
        yield handle


@contextmanager
def node_span(tracer: Tracer | None, node_name: str, resource_type: str) -> Iterator[SpanHandle]:
    """The span of one node or test (``cpo.node``), a child of the current run span."""
    with _span(tracer, "cpo.node", node=node_name, resource_type=resource_type) as handle:
        yield handle


@contextmanager
def _span(tracer: Tracer | None, name: str, **attributes: Any) -> Iterator[SpanHandle]:
    if tracer is None:
        yield SpanHandle(None)
        return
    # Exceptions are recorded by type only: their messages may quote data.
    with tracer.start_as_current_span(
        name, record_exception=False, set_status_on_exception=False
    ) as span:
        handle = SpanHandle(span)
        handle.set(**attributes)
        try:
            yield handle
        except BaseException as e:
            handle._close(e)
            raise
        handle._close(None)


def _sdk_tracer(exporter: str, service_name: str) -> Tracer:
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError as e:
        raise _missing("opentelemetry-sdk", INSTALL_HINT) from e
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter == "console":
        # stderr: stdout carries the command's own output.
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    else:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    _PROVIDERS.append(provider)
    return provider.get_tracer("cpo")


def _otlp_exporter() -> Any:
    """The OTLP/HTTP exporter, else OTLP/gRPC; both read ``OTEL_EXPORTER_OTLP_*`` themselves."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as e:
            raise _missing(
                "an OTLP exporter",
                "pip install opentelemetry-exporter-otlp-proto-http",
                key="telemetry.exporter",
            ) from e
    return OTLPSpanExporter()


def flush_at_exit(provider: Any) -> None:
    """Remember a tracer provider, so `flush` sends what it still buffers (exporter plugins)."""
    if hasattr(provider, "force_flush"):
        _PROVIDERS.append(provider)


def telemetry_error(key: str, message: str) -> ConfigurationError:
    """A `ConfigurationError` about a ``telemetry`` key of ``cpo.yml`` (for exporter plugins)."""
    return _error(key, message)


def exporters() -> dict[str, Any]:
    """Exporters registered by plugins (``cpo_telemetry_exporters``), by name."""
    from cpo.engine.plugins import hooks, merged

    return merged(hooks().cpo_telemetry_exporters())


def _missing(package: str, hint: str, *, key: str = "telemetry") -> ConfigurationError:
    return _error(key, f"telemetry needs {package}, which is not installed; run: {hint}")


def _error(key: str, message: str) -> ConfigurationError:
    return ConfigurationError(message, path="cpo.yml", key=key)
