"""`yanjin monitor check | calibrate | retrain` and `yanjin schedule run` (registered in cli.py).
Configuration (the profile's `monitor` section) is read here, once."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer

monitor_app = typer.Typer(help="Drift on live traffic, calibrated; retraining with review labels.", no_args_is_help=True)
schedule_app = typer.Typer(help="Embedded scheduler: drift checks on an interval, retraining each quarter.",
                           no_args_is_help=True)

from .options import LOG, PROFILE, SETS, STATE, TRACKING
from .options import client as _client
from .options import prediction_log as _log
from .options import profile as _profile

DATA = typer.Option(None, help="Folder with train.csv, test.csv, categories.json (default: as for pipeline run).")


def _setup(state_dir: Path, tracking_uri: Optional[str], profile: str, overrides: List[str]):
    return _client(state_dir, tracking_uri), _profile(profile, overrides)


def run_check(client, config, model: str, log, out_dir: Path, workspace: Optional[Path], since: Optional[float] = None,
              monitor=None):
    """One drift check of model@champion on the newest window of its traffic: report, MLflow, workspace.
    `monitor` (from an earlier check) is reused while it still belongs to the champion: loading one downloads
    the version, its checkpoint and training split and embeds the reference."""
    import mlflow

    from .components.register import ensure_experiment
    from .monitoring.monitor import ServedMonitor

    champion = str(client.get_model_version_by_alias(model, "champion").version)
    if monitor is None or monitor.version != champion:
        monitor = ServedMonitor.load(client, model, config.monitor, version=champion)
    texts = log.recent_texts(model, monitor.version, config.monitor.window, since)
    result = monitor.check(texts)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = result.summary() | {"model": model, "version": monitor.version, "calibrated": monitor.calibrated,
                                  "at": time.time()}
    (out_dir / f"drift-{stamp}.json").write_text(json.dumps(summary, indent=2))
    if result.snapshot is not None:
        result.snapshot.save_html(str(out_dir / f"drift-{stamp}.html"))
    mlflow.set_tracking_uri(client.tracking_uri)
    with mlflow.start_run(experiment_id=ensure_experiment(f"{model}-monitoring", None), run_name=f"drift {stamp}"):
        mlflow.set_tags({"verdict": result.verdict, "model": model, "version": monitor.version,
                         "calibrated": str(monitor.calibrated)})
        mlflow.log_metrics({"drift_share": result.drift_share, "window": result.window,
                            "low_confidence_share": result.low_confidence_share}
                           | {f"score_{c}": v for c, v in result.scores.items()})
        for suffix in ("json", "html"):
            if (out_dir / f"drift-{stamp}.{suffix}").is_file():
                mlflow.log_artifact(str(out_dir / f"drift-{stamp}.{suffix}"), "drift")
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


def record_and_maybe_retrain(client, config, model: str, verdict: str, retrain_now, now: float | None = None) -> bool:
    """Feed the verdict to the debounced trigger (state in a registered-model tag); launch when it fires."""
    from .monitoring.trigger import STATE_TAG, TriggerState, observe

    now = now or time.time()
    state = TriggerState.from_json(client.get_registered_model(model).tags.get(STATE_TAG))
    m = config.monitor
    fire = observe(state, verdict, now, m.checks, m.needed, m.cooldown_hours * 3600)
    if fire:
        state.runs.append({"at": now, "why": f"drift in {m.needed} of the last {m.checks} checks"})
    client.set_registered_model_tag(model, STATE_TAG, state.to_json())
    if fire and retrain_now is not None:
        retrain_now(f"drift in {m.needed} of the last {m.checks} checks")
    return fire


def _champion_recipe(client, model: str, overrides: List[str]):
    """The config the champion was trained with (its `config` tag), plus any --set overrides."""
    from .config import apply_override, from_dict

    recipe = json.loads(client.get_model_version_by_alias(model, "champion").tags["config"])
    for assignment in overrides:
        apply_override(recipe, assignment)
    return from_dict(recipe)


def _cluster_retrainer(client, overrides: List[str], model: str, host: str, package: Path, params: List[str]):
    """On a cluster: submit one Kubeflow run of the compiled pipeline with the champion's recipe. The
    training data is whatever --kfp-param train_data names on the cluster's storage (export review labels
    there with `yanjin review export` first; this path does not merge them itself)."""
    from .pipelines.remote import client as kfp_client
    from .pipelines.remote import pipeline_arguments

    def run(reason: str):
        arguments = pipeline_arguments(_champion_recipe(client, model, overrides), model,
                                       dict(p.split("=", 1) for p in params))
        submitted = kfp_client(host).create_run_from_pipeline_package(
            str(package), arguments, run_name=f"{model} retraining: {reason}"[:100], experiment_name="yanjin",
            enable_caching=False)
        typer.echo(f"retraining ({reason}): submitted Kubeflow run {submitted.run_id} to {host}")
        return submitted
    return run


def _retrainer(client, overrides: List[str], model: str, state_dir: Path, tracking_uri: Optional[str], log,
               data: Optional[Path]):
    """A function that retrains the variant served as `model` with its champion's own recipe (the config
    it was trained with, plus any --set overrides) on the training data + labelled traffic."""
    from .cli import resolve_data_dir
    from .monitoring.retrain import retrain
    from .pipelines.run import LocalState, git_commit

    def run(reason: str):
        outcome, added = retrain(_champion_recipe(client, model, overrides), resolve_data_dir(data, state_dir), LocalState(state_dir),
                                 tracking_uri, log.labelled(), reason, git_commit())
        typer.echo(f"retraining ({reason}): {added.added} labelled rows added (dropped {added.dropped}); gate "
                   f"{outcome.gate}" + (f"; registered {outcome.registered_model} v{outcome.version} as @challenger"
                                        if outcome.version else ""))
        return outcome
    return run


@monitor_app.command("check")
def monitor_check(
    model: str = typer.Argument(..., help="Registered model whose @champion traffic is checked, e.g. banking77-lite."),
    since_hours: Optional[float] = typer.Option(None, help="Only traffic of the last H hours (default: the newest window)."),
    fail_on_drift: bool = typer.Option(False, help="Exit 1 when the window drifted (for cron jobs and CI)."),
    retrain: bool = typer.Option(False, help="Launch retraining when the debounced trigger fires (kfp.local, or "
                                             "a Kubeflow run with --kfp-host)."),
    kfp_host: Optional[str] = typer.Option(None, help="Kubeflow Pipelines API: retrain there instead of locally."),
    kfp_package: Path = typer.Option(Path("yanjin_pipeline.yaml"), help="Compiled pipeline for --kfp-host."),
    kfp_param: List[str] = typer.Option([], help="Pipeline parameter name=value for --kfp-host, e.g. "
                                                 "train_data=s3://bucket/train-with-feedback.csv (repeatable)."),
    output_dir: Path = typer.Option(Path(".yanjin/monitoring"), help="Where drift-<time>.html and .json go."),
    workspace: Optional[Path] = typer.Option(Path(".yanjin/evidently"), help="Evidently workspace for the dashboard "
                                                                            "(`evidently ui --workspace DIR`)."),
    data: Optional[Path] = DATA, profile: str = PROFILE, set_: List[str] = SETS, prediction_log: Optional[str] = LOG,
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Compare the newest window of traffic with the served version's training data (Evidently)."""
    client, config = _setup(state_dir, tracking_uri, profile, set_)
    log = _log(state_dir, prediction_log)
    try:
        since = time.time() - since_hours * 3600 if since_hours else None
        monitor, result, summary = run_check(client, config, model, log, output_dir, workspace, since)
        typer.echo(f"{model} v{monitor.version}: {result.verdict} on {result.window} requests "
                   f"(thresholds {'calibrated' if monitor.calibrated else 'from the profile: run yanjin monitor calibrate'})")
        if result.scores:
            typer.echo("  " + ", ".join(f"{c} {v:.3f}{'*' if c in result.drifted_columns else ''} (> {result.thresholds[c]:.3f})"
                                        for c, v in result.scores.items()))
        typer.echo(f"  low-confidence share {result.low_confidence_share:.1%}")
        if kfp_param and not all("=" in p for p in kfp_param):
            raise typer.BadParameter("each --kfp-param must look like name=value", param_hint="--kfp-param")
        retrainer = None if not retrain else (
            _cluster_retrainer(client, set_, model, kfp_host, kfp_package, kfp_param) if kfp_host
            else _retrainer(client, set_, model, state_dir, tracking_uri, log, data))
        if record_and_maybe_retrain(client, config, model, result.verdict, retrainer):
            typer.echo("  retraining trigger fired" + ("" if retrain else " (pass --retrain to launch it)"))
    finally:
        log.close()
    if fail_on_drift and result.verdict == "drift":
        raise typer.Exit(1)


@monitor_app.command("calibrate")
def monitor_calibrate(
    model: str = typer.Argument(..., help="Registered model; its @champion is calibrated."),
    traffic: Path = typer.Option(..., help="CSV of in-distribution traffic (column text), e.g. a held-out test set."),
    windows: int = typer.Option(20, min=2, help="In-distribution windows from each source."),
    margin: float = typer.Option(1.5, min=1.0, help="Thresholds = highest in-distribution distance x margin."),
    profile: str = PROFILE, set_: List[str] = SETS, state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Set the champion's drift thresholds from in-distribution windows (traffic + unused training rows)."""
    import numpy as np
    import pandas as pd

    from .monitoring.monitor import ServedMonitor

    client, config = _setup(state_dir, tracking_uri, profile, set_)
    monitor = ServedMonitor.load(client, model, config.monitor)
    size = config.monitor.window
    texts = pd.read_csv(traffic)["text"].tolist()
    rest = monitor.rest["text"].tolist()
    rng = np.random.default_rng(config.monitor.seed)
    groups = [[pool[i] for i in rng.choice(len(pool), size, replace=False)]
              for pool in (texts, rest) if len(pool) >= size for _ in range(windows)]
    if not groups:
        raise typer.BadParameter(f"{traffic} has fewer than {size} texts (the window)", param_hint="--traffic")
    thresholds = monitor.calibrate(client, groups, margin)
    typer.echo(f"{model} v{monitor.version}: thresholds for windows of {size} from {len(groups)} in-distribution "
               f"windows: {thresholds}")


@monitor_app.command("retrain")
def monitor_retrain(
    model: str = typer.Argument(..., help="Registered model to retrain (its champion's recipe)."),
    reason: str = typer.Option("manual", help="Why: tagged on the new version."),
    data: Optional[Path] = DATA, profile: str = PROFILE, set_: List[str] = SETS, prediction_log: Optional[str] = LOG,
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Retrain on the training data plus reviewed/feedback labels; a passing candidate becomes @challenger."""
    client, config = _setup(state_dir, tracking_uri, profile, set_)
    log = _log(state_dir, prediction_log)
    try:
        outcome = _retrainer(client, set_, model, state_dir, tracking_uri, log, data)(reason)
    finally:
        log.close()
    if outcome.version is None:
        raise typer.Exit(1)


@schedule_app.command("run")
def schedule_run(
    model: str = typer.Argument(..., help="Registered model to watch."),
    check_every: float = typer.Option(3600.0, min=1.0, help="Seconds between drift checks."),
    once: bool = typer.Option(False, help="One pass (a check, and the quarterly run if due), then exit."),
    data: Optional[Path] = DATA, profile: str = PROFILE, set_: List[str] = SETS, prediction_log: Optional[str] = LOG,
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Drift checks every --check-every seconds (retraining when the trigger fires) and a retraining run on the
    first day of each quarter. State lives in the registry: a restart neither repeats nor catches up runs."""
    from .monitoring.trigger import STATE_TAG, TriggerState, next_quarter_start, quarter_due

    client, config = _setup(state_dir, tracking_uri, profile, set_)
    log = _log(state_dir, prediction_log)
    retrainer = _retrainer(client, set_, model, state_dir, tracking_uri, log, data)
    monitor = None
    try:
        while True:
            monitor, result, _ = run_check(client, config, model, log, state_dir / "monitoring",
                                           state_dir / "evidently", monitor=monitor)
            typer.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} drift check: {result.verdict}")
            record_and_maybe_retrain(client, config, model, result.verdict, retrainer)
            state = TriggerState.from_json(client.get_registered_model(model).tags.get(STATE_TAG))
            due = quarter_due(state, time.time())
            client.set_registered_model_tag(model, STATE_TAG, state.to_json())  # recorded before the long run
            if due:
                retrainer("quarterly schedule")
            if once:
                break
            from datetime import datetime, timezone
            typer.echo(f"next check in {check_every:.0f} s; next quarterly run "
                       f"{next_quarter_start(datetime.now(timezone.utc)).isoformat()}")
            time.sleep(check_every)
    finally:
        log.close()
