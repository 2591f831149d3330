"""`yanjin` command line: the entry point, where configuration is read once."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # progress bars garble CLI output

app = typer.Typer(help="yanjin: train, evaluate, register and serve a family of model versions.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
pipeline_app = typer.Typer(help="Compile the Kubeflow pipeline or run it locally.", no_args_is_help=True)
data_app = typer.Typer(help="Download public data sets, verified by sha256.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure registered versions side by side.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(data_app, name="data")
review_app = typer.Typer(help="Work the human-review queue of the prediction log.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(review_app, name="review")
from .release_cli import promote, rollback, history, rollout_app, select  # noqa: E402 - the release commands
app.command("promote")(promote)
app.command("rollback")(rollback)
app.command("history")(history)
app.command("select")(select)
app.add_typer(rollout_app, name="rollout")
from .monitor_cli import monitor_app, schedule_app  # noqa: E402 - drift monitoring and retraining
app.add_typer(monitor_app, name="monitor")
app.add_typer(schedule_app, name="schedule")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def resolve_data_dir(explicit: Optional[Path], state_dir: Path) -> Path:
    """--data, else $YANJIN_DATA, else a fetched copy under the state folder, else ../shared/data.

    A folder the user named (--data or $YANJIN_DATA) must hold the data: no silent fallback.
    """
    named = explicit or (Path(os.environ["YANJIN_DATA"]) if os.environ.get("YANJIN_DATA") else None)
    if named is not None:
        if not (named / "train.csv").is_file():
            raise typer.BadParameter(f"{named}: no train.csv in this folder", param_hint="--data / $YANJIN_DATA")
        return named
    candidates = [state_dir / "data" / "banking77", PROJECT_ROOT.parent / "shared" / "data" / "banking77"]
    for c in candidates:
        if (c / "train.csv").is_file():
            return c
    raise typer.BadParameter(
        f"no banking77 data found (looked in {[str(c) for c in candidates]}); "
        f"run `yanjin data fetch banking77` or pass --data DIR", param_hint="--data")


@pipeline_app.command("run")
def pipeline_run(
    profile: str = typer.Option("demo", help="Config profile (configs/<name>.yaml: tiny, demo, full) or a YAML path."),
    variant: Optional[str] = typer.Option(None, help="Family member to build (overrides model.variant): v1, v2, pro, lite, or all (the four in that order: Pro is gated against V1, Lite distils Pro)."),
    corpus: List[Path] = typer.Option([], help="Unlabeled in-domain text for Pro's adaptation (repeatable; default: the training file plus NLU++ banking when found)."),
    set_: List[str] = typer.Option([], "--set", help="Override a config field, e.g. --set train.epochs=2 (repeatable)."),
    data: Optional[Path] = typer.Option(None, help="Folder with train.csv, test.csv and categories.json (default: $YANJIN_DATA or banking77)."),
    train: Optional[Path] = typer.Option(None, help="Training CSV/Parquet file (overrides --data)."),
    test: Optional[Path] = typer.Option(None, help="Test CSV/Parquet file (overrides --data)."),
    labels: Optional[Path] = typer.Option(None, help="JSON list of known labels (overrides --data's categories.json)."),
    state_dir: Path = typer.Option(Path(".yanjin"), help="Folder holding all embedded-mode state (MLflow DB, artifacts, kfp outputs)."),
    tracking_uri: Optional[str] = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI (default: SQLite under --state-dir)."),
    metrics_out: Optional[Path] = typer.Option(None, help="Also write the evaluation figures as JSON to this path."),
) -> None:
    """Run validate -> train -> export -> evaluate -> gate -> register with kfp.local."""
    from .config import FAMILY, load_config, with_variant
    from .pipelines.run import LocalState, git_commit, run_local

    config = load_config(profile, set_)
    variants = list(FAMILY) if variant == "all" else [variant] if variant else [config.model.variant]
    if not (train and test):
        folder = resolve_data_dir(data, state_dir)
        train, test = train or folder / "train.csv", test or folder / "test.csv"
        if labels is None and (folder / "categories.json").is_file():
            labels = folder / "categories.json"
    if not corpus:
        nlupp = Path(train).resolve().parent.parent / "nlupp" / "banking"
        corpus = [Path(train)] + ([nlupp] if nlupp.is_dir() else [])
    state = LocalState(state_dir)
    uri = tracking_uri or state.tracking_uri
    for name in variants:
        try:
            outcome = run_local(with_variant(config, name), str(train), str(test), str(labels or ""), state,
                                tracking_uri, git_commit(PROJECT_ROOT), adapt_corpus=[str(c) for c in corpus])
        except (RuntimeError, ValueError) as e:
            typer.secho(f"pipeline stopped ({name}): {e}\nSee the failing step's error above; nothing was registered.",
                        fg="red", err=True)
            raise typer.Exit(1)
        ev = outcome.evaluation
        if metrics_out:
            path = metrics_out if len(variants) == 1 else metrics_out.with_name(f"{metrics_out.stem}-{name}{metrics_out.suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(ev | {"registered_model": outcome.registered_model,
                                             "profile": config.profile}, indent=2) + "\n")
        typer.echo(f"\n{outcome.registered_model}: accuracy {ev['accuracy']:.4f}, macro-F1 {ev['macro_f1']:.4f}, "
                   f"ECE {ev['ece']:.4f}, p50 {ev['latency_ms_p50_b1']:.2f} ms, {ev['onnx_bytes'] / 1e6:.1f} MB ONNX")
        if outcome.version:
            typer.echo(f"gate passed: registered {outcome.registered_model} version {outcome.version} "
                       f"(alias challenger; champion if it is the first)")
        else:
            typer.echo("gate rejected the candidate: nothing registered (reasons in the MLflow run, gate/decision.json)")
        typer.echo(f"MLflow run {ev['run_id']} in {uri}")
    typer.echo(f"open the MLflow UI: mlflow ui --backend-store-uri {uri} --port 5000  (then http://127.0.0.1:5000)")


@pipeline_app.command("compile")
def pipeline_compile(
    output: Path = typer.Option(Path("yanjin_pipeline.yaml"), help="Where to write the pipeline YAML for the Kubeflow UI."),
    image: Optional[str] = typer.Option(None, help="Container image with yanjin installed, used by every step."),
) -> None:
    """Compile the pipeline to YAML (upload it in the Kubeflow UI or submit it with kfp.Client)."""
    from .pipelines.pipeline import DEFAULT_IMAGE
    from .pipelines.run import compile_pipeline

    path = compile_pipeline(output, image or DEFAULT_IMAGE)
    typer.echo(f"wrote {path}")


def _cluster_arguments(profile: str, set_: List[str], variant: Optional[str], params: List[str]):
    from .components.register import registered_model_name
    from .config import load_config, with_variant

    config = load_config(profile, set_)
    config = with_variant(config, variant) if variant else config
    overrides = {}
    for p in params:
        key, sep, value = p.partition("=")
        if not sep:
            raise typer.BadParameter(f"{p!r} must look like name=value", param_hint="--param")
        overrides[key.strip()] = value
    from .pipelines.remote import pipeline_arguments
    return pipeline_arguments(config, registered_model_name(config.model_name, config.model.variant), overrides)


CLUSTER_PARAMS = typer.Option([], "--param", help="Pipeline parameter name=value, e.g. train_data=s3://bucket/train.csv, tracking_uri=http://mlflow:5000 (repeatable).")
PACKAGE = typer.Option(Path("yanjin_pipeline.yaml"), help="Compiled pipeline (yanjin pipeline compile).")
CLUSTER_PROFILE = typer.Option("full", help="Config profile sent as config_json.")
VARIANT = typer.Option(None, help="Family member (v1, v2, pro, lite).")
CLUSTER_SETS = typer.Option([], "--set", help="Override a config field (repeatable).")
EXPERIMENT = typer.Option("yanjin", help="KFP experiment.")
NAMESPACE = typer.Option(None, help="Kubeflow profile namespace (multi-user installs).")


@pipeline_app.command("submit")
def pipeline_submit(
    host: str = typer.Option(..., help="Kubeflow Pipelines API, e.g. http://ml-pipeline-ui.kubeflow:80."),
    package: Path = PACKAGE,
    profile: str = CLUSTER_PROFILE, variant: Optional[str] = VARIANT, set_: List[str] = CLUSTER_SETS,
    param: List[str] = CLUSTER_PARAMS, experiment: str = EXPERIMENT, namespace: Optional[str] = NAMESPACE,
) -> None:
    """Start one run of the compiled pipeline on a Kubeflow cluster."""
    from .pipelines.remote import client

    if not package.is_file():
        raise typer.BadParameter(f"{package} not found; run yanjin pipeline compile first", param_hint="--package")
    kfp_client = client(host, namespace)
    run = kfp_client.create_run_from_pipeline_package(str(package), _cluster_arguments(profile, set_, variant, param),
                                                      experiment_name=experiment, namespace=namespace,
                                                      enable_caching=False)
    typer.echo(f"submitted run {run.run_id} to {host}")


@pipeline_app.command("schedule")
def pipeline_schedule(
    host: str = typer.Option(..., help="Kubeflow Pipelines API."),
    quarterly: bool = typer.Option(False, "--quarterly", help="Cron 0 0 0 1 1,4,7,10 * (00:00 on 1 Jan/Apr/Jul/Oct; KFP's cron has seconds first)."),
    cron: Optional[str] = typer.Option(None, help="Another 6-field KFP cron expression instead of --quarterly."),
    package: Path = PACKAGE,
    name: str = typer.Option("yanjin-quarterly-retraining", help="Recurring run name."),
    profile: str = CLUSTER_PROFILE, variant: Optional[str] = VARIANT, set_: List[str] = CLUSTER_SETS,
    param: List[str] = CLUSTER_PARAMS, experiment: str = EXPERIMENT, namespace: Optional[str] = NAMESPACE,
) -> None:
    """Create a recurring run: max 1 at a time, no catch-up, caching off."""
    from .monitoring.trigger import QUARTERLY_CRON
    from .pipelines.remote import client, experiment_id, recurring_run_options

    if quarterly == bool(cron):
        raise typer.BadParameter("give exactly one of --quarterly and --cron", param_hint="--quarterly / --cron")
    expression = QUARTERLY_CRON if quarterly else cron
    if len(expression.split()) != 6:
        raise typer.BadParameter(f"{expression!r}: KFP cron has 6 fields, seconds first (quarterly: {QUARTERLY_CRON})",
                                 param_hint="--cron")
    if not package.is_file():
        raise typer.BadParameter(f"{package} not found; run yanjin pipeline compile first", param_hint="--package")
    kfp_client = client(host, namespace)
    options = recurring_run_options(name, experiment_id(kfp_client, experiment, namespace), package,
                                    _cluster_arguments(profile, set_, variant, param), expression)
    job = kfp_client.create_recurring_run(**options)
    typer.echo(f"recurring run {getattr(job, 'recurring_run_id', job)} '{name}': cron {expression}, max 1 at a time, "
               f"no catch-up, caching off")


@data_app.command("fetch")
def data_fetch(
    name: str = typer.Argument("banking77", help="Data set name (banking77)."),
    dest: Optional[Path] = typer.Option(None, help="Target folder (default: .yanjin/data/<name>)."),
    source: Optional[str] = typer.Option(None, help="Base URL to download from instead of the public source (mirror)."),
) -> None:
    """Download a data set from its public source and verify each file's sha256."""
    from .components.fetch import FetchError, fetch_dataset

    try:
        out = fetch_dataset(name, dest or Path(".yanjin") / "data" / name, base_url=source)
    except FetchError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"{name}: verified files in {out}")


@bench_app.command("family")
def bench_family(
    state_dir: Path = typer.Option(Path(".yanjin"), help="Embedded-mode state folder holding the MLflow registry."),
    tracking_uri: Optional[str] = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI (default: SQLite under --state-dir)."),
    model_name: str = typer.Option("banking77", help="Registered models are <model-name>-<variant>."),
    variants: str = typer.Option("v1,v2,pro,lite", help="Comma-separated family members; each one's @champion is measured."),
    data: Optional[Path] = typer.Option(None, help="Folder with train.csv (baseline) and test.csv (default: as for pipeline run)."),
    output_dir: Path = typer.Option(Path("benchmarks/results"), help="Where family.json, family.md and family.png go."),
    latency_runs: int = typer.Option(300, min=10, help="Batch-1 requests timed per version and runtime."),
    throughput_batches: int = typer.Option(30, min=1, help="Batch-32 calls timed per version."),
) -> None:
    """Every registered version plus a TF-IDF + LinearSVC baseline on the same test set, in one run."""
    import mlflow

    from .components import data as D
    from .components.compare import CompareParams, compare_family
    from .pipelines.run import LocalState

    folder = resolve_data_dir(data, state_dir)
    train = D.read_table(folder / "train.csv", "text", "category")
    test = D.read_table(folder / "test.csv", "text", "category")
    mlflow.set_tracking_uri(tracking_uri or LocalState(state_dir).tracking_uri)
    result = compare_family(model_name, [v.strip() for v in variants.split(",") if v.strip()], train, test,
                            CompareParams(latency_runs, throughput_batches), output_dir)
    if not result["versions"]:
        typer.secho(f"no registered champions found for {model_name}: run `yanjin pipeline run --variant all` first",
                    fg="red", err=True)
        raise typer.Exit(1)
    typer.echo("\n" + (output_dir / "family.md").read_text())
    for key, g in result["goals"].items():
        typer.echo(f"{key}: {g['value']:.3f} (goal {g['goal']}): {'met' if g['met'] else 'NOT met'}")
    if result["missing"]:
        typer.echo(f"not registered (skipped): {', '.join(result['missing'])}")
    typer.echo(f"wrote {output_dir / 'family.json'}, family.md, family.png; logged to MLflow experiment {model_name}-family")


def serve_settings(state_dir: Path, tracking_uri: Optional[str], model: str, prediction_log: Optional[str],
                   overrides: List[str]):
    from .config import apply_override
    from .pipelines.run import LocalState
    from .serving.settings import ServeSettings

    values: dict = {"tracking_uri": tracking_uri or LocalState(state_dir).tracking_uri, "model": model,
                    "prediction_log": prediction_log or str((state_dir / "predictions.db").resolve())}
    for assignment in overrides:
        apply_override(values, assignment)
    try:
        return ServeSettings.from_dict(values)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--set")


@app.command("serve")
def serve(
    model: str = typer.Option("banking77-lite", help="Registered model to serve (its @champion; @challenger in an A/B test)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 exposes the server to the network."),
    port: int = typer.Option(3000, help="HTTP port."),
    state_dir: Path = typer.Option(Path(".yanjin"), help="Embedded-mode state folder (MLflow DB, prediction log)."),
    tracking_uri: Optional[str] = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI (default: SQLite under --state-dir)."),
    prediction_log: Optional[str] = typer.Option(None, help="Prediction log: SQLite file or SQLAlchemy URL (default: <state-dir>/predictions.db)."),
    set_: List[str] = typer.Option([], "--set", help="Override a serving setting, e.g. --set challenger_share=0.1 (repeatable; see serving/settings.py)."),
) -> None:
    """Start the BentoML server (ONNX Runtime, adaptive batching, A/B, review flags, hot swap)."""
    import sys

    from .serving.settings import ENV

    settings = serve_settings(state_dir, tracking_uri, model, prediction_log, set_)
    env = os.environ | {ENV: settings.to_json()}
    typer.echo(f"serving {settings.model} on http://{host}:{port} (OpenAPI spec at /docs.json)")
    os.execvpe(sys.executable, [sys.executable, "-m", "bentoml", "serve", "yanjin.serving.service:Classifier",
                                "--host", host, "--port", str(port)], env)


def _prediction_log(state_dir: Path, prediction_log: Optional[str]):
    from .serving.predlog import PredictionLog

    return PredictionLog(prediction_log or state_dir / "predictions.db")


STATE_OPTION = typer.Option(Path(".yanjin"), help="Embedded-mode state folder holding predictions.db.")
LOG_OPTION = typer.Option(None, help="Prediction log: SQLite file or SQLAlchemy URL (default: <state-dir>/predictions.db).")


@review_app.command("list")
def review_list(limit: int = typer.Option(20, min=1, help="How many flagged predictions to show, oldest first."),
                state_dir: Path = STATE_OPTION, prediction_log: Optional[str] = LOG_OPTION) -> None:
    """Predictions below the confidence threshold that nobody has labelled yet."""
    log = _prediction_log(state_dir, prediction_log)
    rows = log.review_queue(limit)
    for r in rows:
        typer.echo(f"{r['id']}  {r['confidence']:.2f}  {r['label']:<32} v{r['version']} {r['arm']:<10} {r['text'][:80]!r}")
    typer.echo(f"{len(rows)} waiting for review" + (" (more not shown)" if len(rows) == limit else ""))
    log.close()


@review_app.command("label")
def review_label(prediction_id: str = typer.Argument(..., help="Prediction id, as listed."),
                 label: str = typer.Argument(..., help="The correct label."),
                 state_dir: Path = STATE_OPTION, prediction_log: Optional[str] = LOG_OPTION) -> None:
    """Record a reviewer's label for a prediction."""
    from .serving.predlog import UnknownPrediction

    log = _prediction_log(state_dir, prediction_log)
    try:
        log.review(prediction_id, label)
    except UnknownPrediction:
        typer.secho(f"no prediction with id {prediction_id!r}", fg="red", err=True)
        raise typer.Exit(1)
    finally:
        log.close()
    typer.echo(f"{prediction_id}: labelled {label}")


@review_app.command("export")
def review_export(output: Path = typer.Argument(..., help="CSV to write (columns text, category, source)."),
                  state_dir: Path = STATE_OPTION, prediction_log: Optional[str] = LOG_OPTION) -> None:
    """Reviewed and feedback labels as extra training data (same columns as banking77)."""
    import pandas as pd

    log = _prediction_log(state_dir, prediction_log)
    rows = log.labelled()
    log.close()
    pd.DataFrame(rows, columns=["text", "label", "source"]).rename(columns={"label": "category"}).to_csv(output, index=False)
    typer.echo(f"wrote {len(rows)} labelled texts to {output}")


if __name__ == "__main__":
    app()
