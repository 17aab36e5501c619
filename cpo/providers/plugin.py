"""The built-in providers as a plugin (`cpo.engine.plugins`), as an outside package would add one.

Each factory imports its module only when a target uses it, so no vendor SDK loads for an
offline build. Also here: layered safety (a list of safety providers is one ``layered``
provider) and the Azure Monitor exporter of telemetry, which needs a vendor SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cpo.engine.plugins import hookimpl


@hookimpl
def cpo_providers() -> dict[tuple[str, str], Callable[..., Any]]:
    """Every built-in provider (`cpo.providers.builtin.BUILTINS`), imported lazily."""
    from cpo.providers.builtin import BUILTINS, _lazy

    return {key: _lazy(module, function) for key, (module, function) in BUILTINS.items()}


@hookimpl
def cpo_stand_ins() -> dict[str, str]:
    """The offline providers that answer for every kind in ``plan``."""
    from cpo.providers.builtin import STAND_INS

    return dict(STAND_INS)


@hookimpl
def cpo_combine_providers(
    kind: str, providers: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """Several safety providers are one ``layered`` provider (`cpo.providers.layered_safety`)."""
    if kind != "safety":
        return None
    return {"type": "layered", "providers": [dict(p) for p in providers]}


@hookimpl
def cpo_telemetry_exporters() -> dict[str, Callable[[str, Mapping[str, str]], Any]]:
    """``telemetry.exporter: azure_monitor`` (`cpo.providers.azure_monitor`)."""

    def azure_monitor(service_name: str, env: Mapping[str, str]) -> Any:
        from cpo.providers.azure_monitor import azure_monitor_tracer

        return azure_monitor_tracer(service_name, env)

    return {"azure_monitor": azure_monitor}
