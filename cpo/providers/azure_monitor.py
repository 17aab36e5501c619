"""Azure Monitor (Application Insights) as a telemetry exporter (``telemetry.exporter:
azure_monitor``), registered by `cpo.providers.plugin`.

It lives with the providers because it needs a vendor SDK (``azure-monitor-opentelemetry``, the
``azure-monitor`` extra); `cpo.engine.telemetry` asks the plugins for it by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cpo.engine.telemetry import CONNECTION_STRING_ENV, flush_at_exit, telemetry_error


def azure_monitor_tracer(service_name: str, env: Mapping[str, str]) -> Any:
    """A tracer whose spans go to Application Insights (only spans: no logs, no metrics).

    Raises:
        ConfigurationError: the connection string is missing or refused (its value is never
            shown), or the package is not installed.
    """
    connection_string = env.get(CONNECTION_STRING_ENV)
    if not connection_string:
        raise telemetry_error(
            "telemetry.exporter",
            f"exporter azure_monitor needs {CONNECTION_STRING_ENV} in the environment "
            "(Application Insights > Overview > Connection String); see .env.example",
        )
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
    except ImportError as e:
        raise telemetry_error(
            "telemetry",
            "telemetry needs azure-monitor-opentelemetry, which is not installed; run: "
            "pip install 'cpo[azure-monitor]'",
        ) from e
    try:
        configure_azure_monitor(
            connection_string=connection_string,
            resource=Resource.create({"service.name": service_name}),
            disable_logging=True,  # logs stay in logs/cpo.log; only spans are exported
            disable_metrics=True,
        )
    except Exception as e:
        # The SDK's message may quote the connection string: show its type only.
        raise telemetry_error(
            "telemetry.exporter",
            f"Azure Monitor could not be configured ({type(e).__name__}); check "
            f"{CONNECTION_STRING_ENV} (its value is not shown; --debug shows the cause)",
        ) from e
    flush_at_exit(trace.get_tracer_provider())
    return trace.get_tracer("cpo")
