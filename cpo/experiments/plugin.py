"""The experiments domain as a plugin of the engine (`cpo.engine.plugins`): its ``vars``
section and the run parameter worth tracking (the experiment's id)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cpo.engine.plugins import hookimpl


@hookimpl
def cpo_vars_sections() -> dict[str, Any]:
    """``vars.experiment``: one model, shared with the experiment steps."""
    from cpo.experiments.settings import ExperimentVars

    return {"experiment": ExperimentVars}


@hookimpl
def cpo_tracking_params(config: Any) -> dict[str, Any]:
    """``experiment_id``: the ``vars.experiment.id`` of the run."""
    experiment = config.vars.get("experiment")
    return {"experiment_id": experiment.get("id") if isinstance(experiment, Mapping) else None}
