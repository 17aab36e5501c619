"""Optional MLflow tracking: log a run's parameters, metrics and artifacts to a local store.

Needs the ``tracking`` extra (``pip install 'cpo[tracking]'``). The default store is a folder,
``<project>/.cpo/mlruns`` (MLflow's file store: no server, no database driver, no network);
``mlflow ui --backend-store-uri file:<project>/.cpo/mlruns`` shows it. Only run settings,
counts and artifacts the build already writes are logged: no secrets, prompts or customer data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpo.adapters.duckdb import Database
from cpo.engine.config import PROVIDER_KINDS, ProjectConfig
from cpo.engine.plugins import hooks, merged
from cpo.errors import ConfigurationError, CPOError

if TYPE_CHECKING:
    from cpo.engine.results import RunResult

INSTALL_HINT = "pip install 'cpo[tracking]'"
DEFAULT_STORE = ".cpo/mlruns"
# Provider settings worth comparing across runs; everything else (endpoints, keys) stays out.
PROVIDER_PARAMS = ("type", "model", "deployment", "mode", "api")
ARTIFACTS = ("run_results.json", "manifest.json")
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-. /]")


def track_run(
    config: ProjectConfig,
    run: RunResult,
    *,
    report_path: Path | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Log one CPO run to MLflow and return the MLflow run id.

    The experiment is named after the project. Database metrics (calls, cache hits, cost,
    approved variants, decisions) are read only when the run committed its build, since
    otherwise the database still holds an earlier build.

    Args:
        config: The project configuration the run used.
        run: What `Project.build` (or ``run``/``seed``/``test``) returned.
        report_path: The HTML report to attach, if one was written.
        tracking_uri: An MLflow tracking URI; default ``file:<project>/.cpo/mlruns``.

    Raises:
        ConfigurationError: MLflow is not installed, or the store cannot be written.
    """
    uri = tracking_uri or (config.root / DEFAULT_STORE).resolve().as_uri()
    params = run_params(config, run)
    metrics = run_metrics(run)
    if run.committed and run.database.exists():
        metrics.update(database_metrics(run.database, run.invocation_id))
    artifacts = [config.path("target") / name for name in ARTIFACTS]
    if report_path is not None:
        artifacts.append(Path(report_path))
    mlflow = _import_mlflow()
    with _file_store_allowed():
        try:
            return _log(mlflow, uri, config.name, run, params, metrics, artifacts)
        except (mlflow.exceptions.MlflowException, OSError) as e:
            raise ConfigurationError(
                f"MLflow tracking at {uri} failed: {getattr(e, 'message', e)}; "
                "check --tracking-uri (a folder or file: URI works offline)"
            ) from e


def run_params(config: ProjectConfig, run: RunResult) -> dict[str, str]:
    """Settings that tell runs apart: target, command, providers, and what plugins add
    (``cpo_tracking_params``: experiment, segmentation method, tones)."""
    params: dict[str, Any] = {
        "project": config.name,
        "target": config.target.name,
        "command": run.command,
        "cpo_run_id": run.invocation_id,
        "max_cost_usd": config.max_cost_usd,
    }
    # The domain's own parameters (experiment id, segmentation method, tones...) come from
    # the plugins that own those settings.
    params.update(merged(hooks().cpo_tracking_params(config=config)))
    for kind in PROVIDER_KINDS:
        settings = config.target.providers.get(kind) or {}
        for name in PROVIDER_PARAMS:
            if name in settings:
                params[f"provider.{kind}.{name}"] = settings[name]
    return {k: _text(v) for k, v in params.items() if v is not None}


def run_metrics(run: RunResult) -> dict[str, float]:
    """Outcome counts and timings from the run's results (no database needed)."""
    nodes = [r for r in run.results if r.resource_type != "test"]
    tests = [r for r in run.results if r.resource_type == "test"]
    metrics = {
        "seconds_total": run.seconds,
        "committed": float(run.committed),
        "nodes_succeeded": sum(r.status == "success" for r in nodes),
        "nodes_failed": sum(r.status == "error" for r in nodes),
        "nodes_skipped": sum(r.status == "skipped" for r in nodes),
        "tests_passed": sum(r.status == "pass" for r in tests),
        "tests_failed": sum(r.failed for r in tests),
        "tests_warned": sum(r.status == "warn" for r in tests),
    }
    for result in nodes:
        if result.status == "success":
            metrics[_metric(f"seconds.{result.name}")] = result.seconds
            if result.rows is not None:
                metrics[_metric(f"rows.{result.name}")] = result.rows
    return {k: float(v) for k, v in metrics.items()}


def database_metrics(database: Path, run_id: str) -> dict[str, float]:
    """Calls, cache hits and cost of this run; approved variants; decisions per kind.

    Tables a project does not build are skipped.
    """
    try:
        db = Database(database, read_only=True)
    except CPOError as e:
        raise ConfigurationError(f"cannot read {database.name} for tracking: {e}") from e
    try:
        tables = db.relations()
        metrics: dict[str, float] = {}
        if "provider_calls" in tables:
            metrics.update(_call_metrics(db, run_id))
        if "approved_variants" in tables:
            metrics["approved_variants"] = db.count("approved_variants")
        if "experiment_results" in tables:
            metrics.update(_decision_metrics(db))
        return {k: float(v) for k, v in metrics.items()}
    finally:
        db.close()


def _call_metrics(db: Any, run_id: str) -> dict[str, float]:
    _, rows = db.fetch(
        "select count(*), count(*) filter (where cache_hit), coalesce(sum(cost_usd), 0),"
        " coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),"
        " count(*) filter (where status = 'error')"
        " from provider_calls where run_id = ?",
        [run_id],
    )
    calls, hits, cost, tokens_in, tokens_out, errors = rows[0]
    return {
        "provider_calls": calls,
        "cache_hits": hits,
        "cache_misses": calls - hits,
        "cost_usd": cost,
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "provider_call_errors": errors,
    }


def _decision_metrics(db: Any) -> dict[str, float]:
    _, rows = db.fetch(
        "select decision, count(*) from experiment_results where decision is not null group by 1"
    )
    metrics = {_metric(f"decisions.{decision}"): count for decision, count in rows}
    metrics["decisions"] = sum(count for _, count in rows)
    return metrics


def _log(
    mlflow: Any,
    uri: str,
    experiment_name: str,
    run: RunResult,
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    artifacts: list[Path],
) -> str:
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(experiment_name)
    )
    tags = {"cpo.run_id": run.invocation_id, "cpo.command": run.command}
    created = client.create_run(
        experiment_id, run_name=f"{run.command}-{run.invocation_id[:8]}", tags=tags
    )
    run_id = created.info.run_id
    try:
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, created.info.start_time, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag("cpo.success", str(run.success).lower())],
        )
        for path in artifacts:
            if path.is_file():
                client.log_artifact(run_id, str(path))
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED" if run.success else "FAILED")
    return run_id


def _import_mlflow() -> Any:
    # MLflow sends usage telemetry unless told not to; CPO never touches the network uninvited.
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    try:
        import mlflow
        import mlflow.exceptions
        import mlflow.tracking
        from mlflow.telemetry import set_telemetry_client
    except ImportError as e:
        raise ConfigurationError(
            f"--track needs MLflow, which is not installed; run: {INSTALL_HINT}"
        ) from e
    set_telemetry_client()  # re-reads the variable if mlflow was imported earlier
    return mlflow


@contextmanager
def _file_store_allowed() -> Iterator[None]:
    """MLflow 3 refuses its file store unless this is set; we want it: it needs no server."""
    previous = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = previous


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)[:500]  # MLflow's limit is 6000; long values are not parameters


def _metric(name: str) -> str:
    return _METRIC_NAME.sub("_", name)
