"""`yanjin monitor check | calibrate | retrain` and `yanjin schedule run`: options and output only; the
job itself is monitoring/job.py. Configuration (the profile's `monitor` section) is read here, once."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from ..monitoring.job import cluster_retrainer, local_retrainer, record_and_maybe_retrain, run_check
from .options import LOG, PROFILE, SETS, STATE, TRACKING, fail
from .options import client as _client
from .options import prediction_log as _log
from .options import profile as _profile
from .options import state_of
from .traffic import purge_older
from .traffic import report as report_erasure

monitor_app = typer.Typer(help="Drift on live traffic, calibrated; retraining with review labels.", no_args_is_help=True)
schedule_app = typer.Typer(help="Embedded scheduler: drift checks on an interval, retraining each quarter.",
                           no_args_is_help=True)

DATA = typer.Option(None, help="Folder with train.csv, test.csv, categories.json (default: as for pipeline run).")


def _setup(state_dir: Path, tracking_uri: Optional[str], profile: str, overrides: List[str]):
    return _client(state_dir, tracking_uri), _profile(profile, overrides)


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
    output_dir: Optional[Path] = typer.Option(None, help="Where drift-<time>.html and .json go (default: <state-dir>/monitoring)."),
    workspace: Optional[Path] = typer.Option(None, help="Evidently workspace for the dashboard, `evidently ui --workspace DIR` "
                                                        "(default: <state-dir>/evidently)."),
    data: Optional[Path] = DATA, profile: str = PROFILE, set_: List[str] = SETS, prediction_log: Optional[str] = LOG,
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Compare the newest window of traffic with the served version's training data (Evidently)."""
    client, config = _setup(state_dir, tracking_uri, profile, set_)
    log = _log(state_dir, prediction_log)
    try:
        since = time.time() - since_hours * 3600 if since_hours else None
        state = state_of(state_dir)
        monitor, result, summary = run_check(client, config, model, log, output_dir or state.monitoring,
                                             workspace or state.evidently, since)
        typer.echo(f"{model} v{monitor.version}: {result.verdict} on {result.window} requests "
                   f"(thresholds {'calibrated' if monitor.calibrated else 'from the profile: run yanjin monitor calibrate'})")
        if result.scores:
            typer.echo("  " + ", ".join(f"{c} {v:.3f}{'*' if c in result.drifted_columns else ''} (> {result.thresholds[c]:.3f})"
                                        for c, v in result.scores.items()))
        typer.echo(f"  low-confidence share {result.low_confidence_share:.1%}")
        if kfp_param and not all("=" in p for p in kfp_param):
            raise typer.BadParameter("each --kfp-param must look like name=value", param_hint="--kfp-param")
        retrainer = None if not retrain else (
            cluster_retrainer(client, set_, model, kfp_host, kfp_package, kfp_param, log, data, state, typer.echo)
            if kfp_host
            else local_retrainer(client, set_, model, state, tracking_uri, log, data, typer.echo))
        if record_and_maybe_retrain(client, config, model, result.verdict, retrainer):
            typer.echo("  retraining trigger fired" + ("" if retrain else " (pass --retrain to launch it)"))
    finally:
        log.close()
    if fail_on_drift and result.verdict == "drift":
        raise typer.Exit(1)


@monitor_app.command("calibrate")
def monitor_calibrate(
    model: str = typer.Argument(..., help="Registered model; its @champion is calibrated."),
    traffic: Optional[Path] = typer.Option(None, help="CSV or Parquet of in-distribution traffic (column "
                                                      "data.text_column, or text); default: the champion's own test "
                                                      "file, as its run recorded it."),
    windows: int = typer.Option(20, min=2, help="In-distribution windows from each source."),
    margin: float = typer.Option(1.5, min=1.0, help="Thresholds = highest in-distribution distance x margin."),
    profile: str = PROFILE, set_: List[str] = SETS, state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Set the champion's drift thresholds from in-distribution windows (traffic + unused training rows)."""
    from dataclasses import replace

    import numpy as np
    import pandas as pd

    from ..monitoring.monitor import ServedMonitor

    import warnings

    # numpy's "invalid value in divide" from Evidently's statistics of constant columns: noise on the screen
    warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
    client, config = _setup(state_dir, tracking_uri, profile, set_)
    monitor = ServedMonitor.load(client, model, config.monitor)
    size = config.monitor.window
    if traffic is None:
        from ..components.data import local_file
        from ..monitoring.job import champion_recipe, champion_source

        recorded = champion_recipe(client, model, [])
        traffic = Path(local_file(champion_source(client, model, recorded, None, state_of(state_dir)).test,
                                  client.tracking_uri))
        config = replace(config, data=recorded.data)   # its columns
        typer.echo(f"in-distribution traffic: {traffic} (the champion's test file)")
    frame = pd.read_parquet(traffic) if traffic.suffix.lower() in (".parquet", ".pq") else pd.read_csv(traffic)
    column = next((c for c in (config.data.text_column, "text") if c in frame.columns), None)
    if column is None:
        raise typer.BadParameter(f"{traffic} has no column {config.data.text_column!r} or 'text' "
                                 f"(found {list(frame.columns)}); set data.text_column", param_hint="--traffic")
    texts = frame[column].astype(str).tolist()
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
    verbose: bool = typer.Option(False, "--verbose", help="Also show kfp.local's own output."),
) -> None:
    """Retrain on the training data plus reviewed/feedback labels; a passing candidate becomes @challenger."""
    from ..monitoring.retrain import UNCHANGED
    from ..pipelines.console import watched
    from ..pipelines.pipeline import DEFAULT_IMAGE, build_pipeline

    client, config = _setup(state_dir, tracking_uri, profile, set_)
    log, state = _log(state_dir, prediction_log), state_of(state_dir)
    try:
        with watched(build_pipeline(DEFAULT_IMAGE, None), state.root, f"retrain/{model}", prefix=f"{model}: ",
                     verbose=verbose) as watch:
            outcome, error = watch.attempt(
                lambda: local_retrainer(client, set_, model, state, tracking_uri, log, data, watch.console.say)(reason))
    finally:
        log.close()
    if error is not None:
        typer.echo("\n".join(watch.failure_lines()), err=True)
        fail(f"retraining stopped: {error} (all output: {watch.log})")
    if outcome.version is None and outcome.gate != UNCHANGED:  # nothing new to learn from is not a failure
        raise typer.Exit(1)


@schedule_app.command("run")
def schedule_run(
    model: str = typer.Argument(..., help="Registered model to watch."),
    check_every: float = typer.Option(3600.0, min=1.0, help="Seconds between drift checks."),
    once: bool = typer.Option(False, help="One pass (a check, and the quarterly run if due), then exit."),
    data: Optional[Path] = DATA, profile: str = PROFILE, set_: List[str] = SETS, prediction_log: Optional[str] = LOG,
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Drift checks every --check-every seconds (retraining when the trigger fires), a retraining run on the
    first day of each quarter, and a pass of the release controller (rollouts, approved promotions) each time.
    State lives in the registry and the release ledger: a restart neither repeats nor catches up runs."""
    from ..monitoring.job import save_trigger_state, trigger_state
    from ..monitoring.trigger import next_quarter_start, quarter_due
    from ..release.controller import run as controller_pass
    from .options import release as open_release

    client, config = _setup(state_dir, tracking_uri, profile, set_)
    release = open_release(state_dir, tracking_uri, config.release.lease_ttl_s)
    log = _log(state_dir, prediction_log)
    state = state_of(state_dir)
    retrainer = local_retrainer(client, set_, model, state, tracking_uri, log, data, typer.echo)
    monitor = None
    try:
        while True:
            monitor, result, _ = run_check(client, config, model, log, state.monitoring, state.evidently,
                                           monitor=monitor)
            typer.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} drift check: {result.verdict}")
            record_and_maybe_retrain(client, config, model, result.verdict, retrainer)
            trigger = trigger_state(client, model)
            due = quarter_due(trigger, time.time())
            save_trigger_state(client, model, trigger)  # recorded before the long run
            if due:
                retrainer("quarterly schedule")
            controller_pass(release, log, config.rollout, config.release, 0.0, once=True, echo=typer.echo,
                            models=[model])
            if config.monitor.retention_days > 0:   # the embedded mode's retention, as the purge CronJob's
                days = config.monitor.retention_days
                purged = purge_older(log, client, release.principal, state_dir, days * 86400, f"{days:g}d",
                                     record_nothing=False)
                if purged:
                    report_erasure(purged)
            if once:
                break
            from datetime import datetime, timezone
            typer.echo(f"next check in {check_every:.0f} s; next quarterly run "
                       f"{next_quarter_start(datetime.now(timezone.utc)).isoformat()}")
            time.sleep(check_every)
    finally:
        log.close()
