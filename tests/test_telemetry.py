"""Optional OpenTelemetry export: spans per run and node, off by default, clear install errors."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from cpo.engine import telemetry
from cpo.engine.artifacts import NodeResult
from cpo.engine.telemetry import configure, node_span, run_span, settings_from
from cpo.errors import ConfigurationError


@pytest.fixture
def memory() -> tuple[object, InMemorySpanExporter]:
    """A tracer whose finished spans are kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("cpo-test"), exporter


@pytest.fixture(autouse=True)
def fresh_tracers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test configures its own tracers (configure caches them per process)."""
    monkeypatch.setattr(telemetry, "_TRACERS", {})
    monkeypatch.setattr(telemetry, "_PROVIDERS", [])


def block_imports(monkeypatch: pytest.MonkeyPatch, *prefixes: str) -> None:
    """Make `import X` fail for every loaded or future module under `prefixes`."""
    for name in list(sys.modules):
        if name.startswith(prefixes):
            monkeypatch.setitem(sys.modules, name, None)
    for name in prefixes:
        monkeypatch.setitem(sys.modules, name, None)


def test_node_spans_are_children_of_the_run_span_with_attributes(memory) -> None:
    tracer, exporter = memory
    with run_span(tracer, "run-123", "build", target="offline") as run:
        with node_span(tracer, "segments", "model") as span:
            span.record(NodeResult("segments", "model", "success", 0.25, 42))
        with node_span(tracer, "variants", "python") as span:
            span.record(NodeResult("variants", "python", "error", 0.5, None, "boom: secret text"))
        run.set(status="error", nodes=2, failed=1)
    spans = {
        s.name if s.name != "cpo.node" else s.attributes["cpo.node"]: s
        for s in exporter.get_finished_spans()
    }
    assert set(spans) == {"cpo.build", "segments", "variants"}
    root = spans["cpo.build"]
    assert root.parent is None
    assert dict(root.attributes) == {
        "cpo.run_id": "run-123",
        "cpo.command": "build",
        "cpo.target": "offline",
        "cpo.status": "error",
        "cpo.nodes": 2,
        "cpo.failed": 1,
        "cpo.seconds": pytest.approx(root.attributes["cpo.seconds"]),
    }
    for name in ("segments", "variants"):
        assert spans[name].parent.span_id == root.context.span_id
        assert spans[name].context.trace_id == root.context.trace_id
    assert dict(spans["segments"].attributes) == {
        "cpo.node": "segments",
        "cpo.resource_type": "model",
        "cpo.status": "success",
        "cpo.rows": 42,
        "cpo.seconds": 0.25,
    }
    assert spans["segments"].status.status_code == StatusCode.UNSET
    assert spans["variants"].status.status_code == StatusCode.ERROR
    assert "cpo.rows" not in spans["variants"].attributes  # None values are left out
    # The node's message (free text that may quote data) is never exported.
    exported = repr([dict(s.attributes) for s in spans.values()])
    assert "secret text" not in exported


def test_an_exception_marks_the_span_failed_by_type_only(memory) -> None:
    tracer, exporter = memory
    with pytest.raises(RuntimeError), node_span(tracer, "messages", "model"):
        raise RuntimeError("customer ada@example.com broke it")
    (span,) = exporter.get_finished_spans()
    assert span.attributes["cpo.status"] == "error"
    assert span.attributes["cpo.error_type"] == "RuntimeError"
    assert span.attributes["cpo.seconds"] >= 0
    assert span.status.status_code == StatusCode.ERROR
    assert not span.events  # no exception event carrying the message
    assert "ada@example.com" not in repr(span.to_json())


def test_free_text_attributes_are_refused(memory) -> None:
    tracer, exporter = memory
    with node_span(tracer, "variants", "python") as span, pytest.raises(ValueError, match="prompt"):
        span.set(prompt="Write a message for Ada")
    assert "cpo.prompt" not in exporter.get_finished_spans()[0].attributes


def test_disabled_by_default_creates_no_spans_and_imports_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    block_imports(monkeypatch, "opentelemetry", "azure.monitor")
    assert configure(None, {}) is None
    assert configure({"enabled": False, "exporter": "azure_monitor"}, {}) is None
    assert configure({"enabled": True}, {"CPO_OTEL_ENABLED": "0"}) is None
    with run_span(None, "r", "build") as run, node_span(None, "segments", "model") as span:
        span.record(NodeResult("segments", "model", "success", 0.1, 3))
        run.set(status="success")
    assert span.span is None and run.span is None


def test_console_exporter_enabled_by_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    tracer = configure(None, {"CPO_OTEL_ENABLED": "1"})
    assert tracer is not None
    assert configure({}, {"CPO_OTEL_ENABLED": "true"}) is tracer  # one tracer per process
    with run_span(tracer, "run-9", "run"), node_span(tracer, "segments", "model"):
        pass
    telemetry.flush()
    err = capsys.readouterr().err
    assert '"name": "cpo.run"' in err and '"cpo.node": "segments"' in err
    assert '"service.name": "cpo"' in err


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    block_imports(monkeypatch, "opentelemetry")
    with pytest.raises(ConfigurationError) as caught:
        configure({"enabled": True, "exporter": "console"}, {})
    assert "pip install 'cpo[otel]'" in str(caught.value)
    assert caught.value.key == "telemetry"


def test_missing_otlp_exporter_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    block_imports(monkeypatch, "opentelemetry.exporter")
    with pytest.raises(ConfigurationError, match="opentelemetry-exporter-otlp-proto-http"):
        configure({"enabled": True, "exporter": "otlp"}, {})


def test_otlp_exporter_is_used_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    exported: list[str] = []

    class FakeOtlp(InMemorySpanExporter):
        def export(self, spans):
            exported.extend(s.name for s in spans)
            return super().export(spans)

    module = types.ModuleType("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    module.OTLPSpanExporter = FakeOtlp
    monkeypatch.setitem(sys.modules, module.__name__, module)
    tracer = configure({"enabled": True, "exporter": "otlp", "service_name": "cpo-ci"}, {})
    with run_span(tracer, "r1", "build"):
        pass
    telemetry.flush()
    assert exported == ["cpo.build"]


def test_azure_monitor_needs_the_connection_string() -> None:
    with pytest.raises(ConfigurationError, match="APPLICATIONINSIGHTS_CONNECTION_STRING"):
        configure({"enabled": True, "exporter": "azure_monitor"}, {})


def test_azure_monitor_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    block_imports(monkeypatch, "azure.monitor")
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-secret"}
    with pytest.raises(ConfigurationError) as caught:
        configure({"enabled": True, "exporter": "azure_monitor"}, env)
    assert "pip install 'cpo[azure-monitor]'" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_azure_monitor_is_configured_with_the_connection_string(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict] = []
    module = types.ModuleType("azure.monitor.opentelemetry")
    module.configure_azure_monitor = lambda **kwargs: calls.append(kwargs)
    monkeypatch.setitem(sys.modules, "azure.monitor", types.ModuleType("azure.monitor"))
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", module)
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=abc"}
    tracer = configure({"enabled": True, "exporter": "azure_monitor", "service_name": "n"}, env)
    assert tracer is not None
    (kwargs,) = calls
    assert kwargs["connection_string"] == "InstrumentationKey=abc"
    assert kwargs["resource"].attributes["service.name"] == "n"
    assert kwargs["disable_logging"] is True


def test_azure_monitor_failure_does_not_show_the_connection_string(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(**kwargs):
        raise ValueError(f"bad connection string {kwargs['connection_string']}")

    module = types.ModuleType("azure.monitor.opentelemetry")
    module.configure_azure_monitor = explode
    monkeypatch.setitem(sys.modules, "azure.monitor", types.ModuleType("azure.monitor"))
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", module)
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=topsecret"}
    with pytest.raises(ConfigurationError) as caught:
        configure({"enabled": True, "exporter": "azure_monitor"}, env)
    assert "ValueError" in str(caught.value)
    assert "topsecret" not in str(caught.value)


@pytest.mark.parametrize(
    ("settings", "env", "message"),
    [
        ({"enabled": "yes"}, {}, "telemetry.enabled: expected true or false"),
        ({"exporter": "jaeger"}, {}, "telemetry.exporter: expected one of: console, otlp"),
        ({"colour": "blue"}, {}, "telemetry.colour: unknown key"),
        ({"service_name": ""}, {}, "telemetry.service_name: expected a non-empty string"),
        ({}, {"CPO_OTEL_ENABLED": "maybe"}, "CPO_OTEL_ENABLED must be 1 or 0"),
        ({}, {"CPO_OTEL_EXPORTER": "zipkin"}, "unknown exporter 'zipkin'"),
    ],
)
def test_bad_settings_name_the_key(settings: dict, env: dict, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        settings_from(settings, env)
    assert message in str(caught.value)


def test_environment_overrides_the_settings() -> None:
    chosen = settings_from({"enabled": False, "exporter": "otlp"}, {"CPO_OTEL_ENABLED": "1"})
    assert chosen.enabled and chosen.exporter == "otlp" and chosen.service_name == "cpo"
    chosen = settings_from({"enabled": True}, {"CPO_OTEL_EXPORTER": "azure_monitor"})
    assert chosen.exporter == "azure_monitor"


def test_the_loaded_project_carries_the_validated_block(tmp_path: Path) -> None:
    """telemetry: is checked once, with the rest of cpo.yml; the tracer reads that object."""
    from cpo.engine.project import Project
    from cpo.engine.telemetry import TelemetrySettings
    from tests.sample import copy_sample_project

    project = copy_sample_project(tmp_path / "p")
    config = project / "cpo.yml"
    config.write_text(
        config.read_text(encoding="utf-8") + "telemetry: {service_name: shop}\n", encoding="utf-8"
    )
    loaded = Project.load(project).config.telemetry
    assert isinstance(loaded, TelemetrySettings) and loaded.service_name == "shop"
    assert settings_from(loaded, {"CPO_OTEL_ENABLED": "1"}).enabled
    assert not loaded.enabled  # the override is a copy
