"""What the verbs of `cpo.engine.project.Project` return: a `RunResult`, or a `Plan`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpo.engine.artifacts import NodeResult
from cpo.engine.services import PlannedCall


@dataclass(frozen=True)
class RunResult:
    """The outcome of a command that runs nodes."""

    invocation_id: str
    command: str
    results: list[NodeResult]
    seconds: float
    database: Path
    committed: bool = False
    summary: dict[str, Any] | None = None
    """What the build did, from the ``cpo_build_summary`` plugin hook (`cpo.reporting.summary`:
    variants approved/blocked, fallback, calls, cost)."""

    @property
    def success(self) -> bool:
        """True when no node errored and no error-severity test failed."""
        return not any(r.failed for r in self.results)


@dataclass(frozen=True)
class Plan:
    """What `Project.plan` found: the calls a build would make, and their estimated cost."""

    run: RunResult
    calls: list[PlannedCall]
    max_cost_usd: float | None
    target: str
    tables: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        """Estimated cost of all planned calls."""
        return sum(c.cost_usd for c in self.calls)

    def by_step(self) -> list[dict[str, Any]]:
        """Calls, tokens and cost per step and provider."""
        rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        for call in self.calls:
            row = rows.setdefault(
                (call.step, call.provider, call.model),
                {
                    "step": call.step,
                    "provider": call.provider,
                    "model": call.model,
                    "calls": 0,
                    "possible_repairs": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cost_usd": 0.0,
                },
            )
            row["possible_repairs" if call.possible else "calls"] += 1
            row["input_tokens"] += call.input_tokens
            row["output_tokens"] += call.output_tokens
            row["cost_usd"] += call.cost_usd
        return list(rows.values())
