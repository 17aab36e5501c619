"""Optional MLflow tracking: a run's params, metrics and artifacts in a local store, offline."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from cpo.adapters.duckdb import Database
from cpo.engine.artifacts import NodeResult
from cpo.engine.project import Project
from cpo.engine.results import RunResult
from cpo.errors import ConfigurationError
from cpo.reporting.tracking import track_run
from tests.sample import copy_sample_project


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, RunResult]:
    """The sample project built offline once for this module (its own copy: tracking writes)."""
    project = Project.load(copy_sample_project(tmp_path_factory.mktemp("tracked") / "sample"))
    run = project.build()
    assert run.success, [(r.name, r.message) for r in run.results if r.failed]
    return project, run


@pytest.fixture(autouse=True)
def mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restore the variables tracking sets; let the reading client use the file store too."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record (and refuse) every connection that is not to the local machine."""
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(address)
            raise OSError(f"network access attempted: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


def read_back(uri: str, run_id: str):
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # restored by mlflow_env
    client = MlflowClient(tracking_uri=uri)
    return client, client.get_run(run_id)


def test_build_is_tracked_with_params_metrics_and_artifacts(
    sample_run: tuple[Project, RunResult], tmp_path: Path, no_network: list[object]
) -> None:
    project, run = sample_run
    report = tmp_path / "report.html"
    report.write_text("<html><body>report</body></html>", encoding="utf-8")

    run_id = track_run(project.config, run, report_path=report, tracking_uri=None)

    assert no_network == []
    assert os.environ.get("MLFLOW_ALLOW_FILE_STORE") is None  # set only while logging
    store = project.config.root / ".cpo" / "mlruns"
    assert store.is_dir()
    client, tracked = read_back(store.as_uri(), run_id)
    assert tracked.info.status == "FINISHED"
    assert client.get_experiment(tracked.info.experiment_id).name == project.config.name
    assert tracked.data.tags["cpo.run_id"] == run.invocation_id
    assert tracked.data.tags["cpo.success"] == "true"

    params = tracked.data.params
    assert params["target"] == "offline"
    assert params["command"] == "build"
    assert params["cpo_run_id"] == run.invocation_id
    assert params["experiment_id"] == "exp_2026_winter"
    assert params["segmentation_method"] == "rules"
    assert params["tones"] == "urgent,informational,friendly"
    assert params["provider.retrieval.type"] == "bm25"
    assert params["provider.generation.type"] == "offline"
    assert params["provider.safety.type"] == "offline"

    metrics = tracked.data.metrics
    nodes = [r for r in run.results if r.resource_type != "test"]
    assert metrics["nodes_succeeded"] == len(nodes) > 10
    assert metrics["nodes_failed"] == 0
    assert metrics["tests_failed"] == 0
    assert metrics["seconds_total"] == pytest.approx(run.seconds)
    db = Database(run.database, read_only=True)
    try:
        assert metrics["rows.segments"] == db.count("segments")
        assert metrics["approved_variants"] == db.count("approved_variants") > 0
        calls, hits, cost = db.execute(
            "select count(*), count(*) filter (where cache_hit), sum(cost_usd)"
            " from llm_calls where run_id = ?",
            [run.invocation_id],
        ).fetchone()
        decisions = dict(
            db.execute(
                "select decision, count(*) from experiment_results"
                " where decision is not null group by 1"
            ).fetchall()
        )
    finally:
        db.close()
    assert metrics["provider_calls"] == calls > 0
    assert metrics["cache_hits"] == hits
    assert metrics["cost_usd"] == pytest.approx(cost)
    assert metrics["decisions"] == sum(decisions.values()) > 0
    for decision, count in decisions.items():
        assert metrics[f"decisions.{decision}"] == count

    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert artifacts == {"run_results.json", "manifest.json", "report.html"}


def test_no_secrets_or_endpoints_are_logged(
    sample_run: tuple[Project, RunResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, run = sample_run
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "sk-very-secret")
    uri = (tmp_path / "store").as_uri()
    _, tracked = read_back(uri, track_run(project.config, run, tracking_uri=uri))
    logged = repr(tracked.data.params) + repr(tracked.data.tags)
    assert "sk-very-secret" not in logged
    assert not [k for k in tracked.data.params if "key" in k or "endpoint" in k]


def test_runs_of_one_project_share_an_experiment(
    sample_run: tuple[Project, RunResult], tmp_path: Path
) -> None:
    project, run = sample_run
    uri = (tmp_path / "store").as_uri()
    first = track_run(project.config, run, tracking_uri=uri)
    second = track_run(project.config, run, tracking_uri=uri)
    client, tracked = read_back(uri, second)
    assert first != second
    runs = client.search_runs([tracked.info.experiment_id])
    assert {r.info.run_id for r in runs} == {first, second}


def test_failed_run_is_tracked_without_database_metrics(mini_project: Path, tmp_path: Path) -> None:
    config = Project.load(mini_project).config
    results = [
        NodeResult("stg_people", "model", "success", 0.1, 5),
        NodeResult("adults", "model", "error", 0.2, None, "models/marts/adults.sql: boom"),
        NodeResult("city_counts", "model", "skipped", message="skipped: adults failed"),
    ]
    run = RunResult("run-failed-1", "run", results, 0.5, config.database_path, committed=False)
    uri = (tmp_path / "store").as_uri()
    _, tracked = read_back(uri, track_run(config, run, tracking_uri=uri))
    assert tracked.info.status == "FAILED"
    metrics = tracked.data.metrics
    assert metrics["nodes_succeeded"] == 1
    assert metrics["nodes_failed"] == 1
    assert metrics["nodes_skipped"] == 1
    assert metrics["committed"] == 0
    assert metrics["rows.stg_people"] == 5
    assert "provider_calls" not in metrics  # the database holds no build of this run
    assert "experiment_id" not in tracked.data.params  # the mini project has no experiment


def test_missing_mlflow_names_the_extra(
    sample_run: tuple[Project, RunResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project, run = sample_run
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ConfigurationError) as caught:
        track_run(project.config, run, tracking_uri=(tmp_path / "store").as_uri())
    assert "pip install 'cpo[tracking]'" in str(caught.value)
    assert not (tmp_path / "store").exists()


def test_unusable_tracking_uri_is_a_clear_error(
    sample_run: tuple[Project, RunResult], tmp_path: Path
) -> None:
    project, run = sample_run
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"MLflow tracking at .* failed"):
        track_run(project.config, run, tracking_uri=(blocker / "store").as_uri())


def test_plugins_contribute_the_domain_parameters(mini_project: Path) -> None:
    from cpo.engine.plugins import hookimpl, plugin_manager
    from cpo.reporting.tracking import run_params

    class Plugin:
        @hookimpl
        def cpo_tracking_params(self, config):
            return {"loyalty_program": config.vars.get("greeting")}

    project = Project.load(mini_project)
    run = RunResult("r1", "build", [], 0.1, project.config.database_path)
    # The domain's own parameters come from the plugins that own those settings: none of them
    # is set in the mini project, so none is logged.
    assert set(run_params(project.config, run)) == {
        "project",
        "target",
        "command",
        "cpo_run_id",
    }
    manager = plugin_manager()
    manager.register(Plugin(), name="test-tracking")
    try:
        assert run_params(project.config, run)["loyalty_program"] == "Hello"
    finally:
        manager.unregister(name="test-tracking")
