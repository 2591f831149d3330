"""The monitoring job: one drift check of a served version, the debounced trigger, and retraining
with the champion's own recipe (here with kfp.local, or as a Kubeflow run on a cluster).

`yanjin monitor check`, `yanjin schedule run` and the drift CronJob all run these functions; the CLI
only reads options and prints.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from .. import registry as R
from ..config import PipelineConfig, apply_override, from_dict
from ..state import LocalState, find_data_dir, git_commit

Say = Callable[[str], None]
Retrainer = Callable[[str], object]


def run_check(client, config: PipelineConfig, model: str, log, out_dir: Path, workspace: Path | None,
              since: float | None = None, monitor=None):
    """One drift check of model@champion on the newest window of its traffic: report, MLflow, workspace.
    `monitor` (from an earlier check) is reused while it still belongs to the champion: loading one downloads
    the version, its checkpoint and training split and embeds the reference."""
    import mlflow

    from .monitor import ServedMonitor
    from .report import drift_page

    champion = R.alias_version(client, model, R.CHAMPION)
    if champion is None:
        raise R.LineageError(f"{model} has no @{R.CHAMPION} to monitor")
    if monitor is None or monitor.version != champion:
        monitor = ServedMonitor.load(client, model, config.monitor, version=champion)
    texts = log.recent_texts(model, monitor.version, config.monitor.window, since)
    result = monitor.check(texts)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)   # reports quote (redacted) customer texts
    summary = result.summary() | {"model": model, "version": monitor.version, "calibrated": monitor.calibrated,
                                  "at": time.time()}
    (out_dir / f"drift-{stamp}.json").write_text(json.dumps(summary | {"examples": result.examples}, indent=2))
    evidently = None
    if result.snapshot is not None:
        evidently = f"drift-{stamp}-evidently.html"
        result.snapshot.save_html(str(out_dir / evidently))
    (out_dir / f"drift-{stamp}.html").write_text(drift_page(summary, dict(config.monitor.methods), result.examples,
                                                            result.labels, evidently))
    mlflow.set_tracking_uri(client.tracking_uri)
    with mlflow.start_run(experiment_id=R.ensure_experiment(R.monitoring_experiment(model), tracking_uri=client.tracking_uri), run_name=R.run_name(model, monitor.version, f"drift check {stamp}")):
        mlflow.set_tags({R.RUN_VERDICT: result.verdict, "model": model, "version": monitor.version,
                         "calibrated": str(monitor.calibrated)})
        mlflow.log_metrics({"drift_share": result.drift_share, "window": result.window,
                            "low_confidence_share": result.low_confidence_share}
                           | {f"score_{c}": v for c, v in result.scores.items()})
        for name in (f"drift-{stamp}.json", f"drift-{stamp}.html", evidently):
            if name and (out_dir / name).is_file():
                mlflow.log_artifact(str(out_dir / name), "drift")
    if workspace is not None and result.snapshot is not None:
        add_to_workspace(workspace, model, result.snapshot)
    return monitor, result, summary


def add_to_workspace(folder: Path, model: str, snapshot) -> None:
    """One snapshot per check in an Evidently workspace: `evidently ui --workspace FOLDER` plots them over time."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import counter_panel, line_plot_panel
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(folder)) if folder.is_dir() else Workspace.create(str(folder))
    name = f"{model} drift"
    found = ws.search_project(name)
    project = found[0] if found else ws.create_project(name, description=f"yanjin drift checks of {model}@champion")
    if not found:
        project.dashboard.add_panel(line_plot_panel(title="Share of drifted feature columns", values=[
            PanelMetric(legend="share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})]),
            tab="Drift")
        project.dashboard.add_panel(counter_panel(title="Drifted columns (last check)", aggregation="last", values=[
            PanelMetric(legend="count", metric="DriftedColumnsCount", metric_labels={"value_type": "count"})]),
            tab="Drift")
        project.save()
    ws.add_run(project.id, snapshot, include_data=False)


def trigger_state(client, model: str):
    from .trigger import STATE_TAG, TriggerState

    return TriggerState.from_json(client.get_registered_model(model).tags.get(STATE_TAG))


def save_trigger_state(client, model: str, state) -> None:
    from .trigger import STATE_TAG

    client.set_registered_model_tag(model, STATE_TAG, state.to_json())


def record_and_maybe_retrain(client, config: PipelineConfig, model: str, verdict: str,
                             retrain_now: Retrainer | None, now: float | None = None) -> bool:
    """Feed the verdict to the debounced trigger (state in a registered-model tag); launch when it fires."""
    from .trigger import observe

    now = now or time.time()
    state = trigger_state(client, model)
    m = config.monitor
    fire = observe(state, verdict, now, m.checks, m.needed, m.cooldown_hours * 3600)
    if fire:
        state.runs.append({"at": now, "why": f"drift in {m.needed} of the last {m.checks} checks"})
    save_trigger_state(client, model, state)
    if fire and retrain_now is not None:
        retrain_now(f"drift in {m.needed} of the last {m.checks} checks")
    return fire


def champion_recipe(client, model: str, overrides: list[str]) -> PipelineConfig:
    """The config the champion was trained with (its `config` tag, recipe included), plus any --set overrides."""
    version = R.alias_version(client, model, R.CHAMPION)
    if version is None:
        raise R.LineageError(f"{model} has no @{R.CHAMPION} whose recipe could be retrained")
    recipe = json.loads(R.version_tags(client, model, version).config)
    for assignment in overrides:
        apply_override(recipe, assignment)
    return from_dict(recipe)


def champion_source(client, model: str, config: PipelineConfig, data: Path | None, state: LocalState):
    """The data the champion was trained on, as its run recorded it (files or store URIs, its columns), or the
    files of an explicit --data folder; a version recorded before sources were falls back to the data folder."""
    from ..components.data import DataSource

    if data is not None:
        return DataSource.in_folder(data, config.data)
    version = R.alias_version(client, model, R.CHAMPION)
    source = DataSource.recorded(client.get_run(client.get_model_version(model, version).run_id).data.params,
                                 config.data)
    return source or DataSource.in_folder(find_data_dir(None, state), config.data)


def cluster_training_set(client, model: str, config: PipelineConfig, log, data: Path | None, state: LocalState,
                         reason: str, say: Say = print) -> dict[str, str]:
    """The pipeline parameters of a cluster retraining: the champion's training data with the trusted review
    labels merged in, kept in the registry's store (read by URI from any pod), and its test data and labels."""
    from .retrain import retraining_data, store_retraining_set

    source = champion_source(client, model, config, data, state)
    merged = retraining_data(source, log.labelled(trust_feedback=config.monitor.trust_client_feedback),
                             state.retraining, client.tracking_uri)
    uri = store_retraining_set(client, model, merged, reason)
    say(f"retraining ({reason}): {merged.added} labelled rows added (dropped {merged.dropped}); training set {uri}")
    return {"train_data": uri, "test_data": source.test, "label_set": source.labels}


def cluster_retrainer(client, overrides: list[str], model: str, host: str, package: Path, params: list[str],
                      log=None, data: Path | None = None, state: LocalState | None = None, say: Say = print) -> Retrainer:
    """On a cluster: one Kubeflow run of the compiled pipeline with the champion's recipe, on its training data
    with the trusted review labels merged in (cluster_training_set). Without a prediction log the `train_data`
    parameter is used as given."""
    from ..pipelines.remote import client as kfp_client
    from ..pipelines.remote import package_parameters, pipeline_arguments

    def run(reason: str):
        config = champion_recipe(client, model, overrides)
        given = dict(p.split("=", 1) for p in params)
        if log is not None:
            given |= cluster_training_set(client, model, config, log, data, state or LocalState(), reason, say)
        arguments = pipeline_arguments(config, model, given, package_parameters(package))
        submitted = kfp_client(host).create_run_from_pipeline_package(
            str(package), arguments, run_name=f"{model} retraining: {reason}"[:100], experiment_name="yanjin",
            enable_caching=False)
        say(f"retraining ({reason}): submitted Kubeflow run {submitted.run_id} to {host}")
        return submitted
    return run


def local_retrainer(client, overrides: list[str], model: str, state: LocalState, tracking_uri: str | None, log,
                    data: Path | None, say: Say = print) -> Retrainer:
    """A function that retrains the member served as `model` with its champion's own recipe (the config
    it was trained with, plus any --set overrides) on the training data + labelled traffic."""
    from .retrain import UNCHANGED, Champion, retrain

    def run(reason: str):
        config = champion_recipe(client, model, overrides)
        labelled = log.labelled(trust_feedback=config.monitor.trust_client_feedback)  # reviewers' labels by default
        version = R.alias_version(client, model, R.CHAMPION)
        tags = R.version_tags(client, model, version)
        champion = Champion(version, from_dict(json.loads(tags.config)).to_json(), tags.git_commit, data is not None)
        outcome, added = retrain(config, champion_source(client, model, config, data, state), state, tracking_uri,
                                 labelled, reason, git_commit(), champion)
        if outcome.gate == UNCHANGED:
            say(f"retraining ({reason}): {outcome.evaluation['reason']}")
            return outcome
        say(f"retraining ({reason}): {added.added} labelled rows added (dropped {added.dropped}); gate "
            f"{outcome.gate}" + (f"; registered {outcome.registered_model} v{outcome.version} as @{R.CHALLENGER}"
                                 if outcome.version else ""))
        return outcome
    return run
