"""`yanjin pipeline | data | bench`: run, compile, submit and schedule the pipeline; fetch data; benchmark."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer

from ..registry import CHALLENGER, CHAMPION
from ..state import DEFAULT_STATE_DIR
from .options import STATE, TRACKING, data_dir, data_source, state_of

pipeline_app = typer.Typer(help="Compile the Kubeflow pipeline or run it locally.", no_args_is_help=True)
data_app = typer.Typer(help="Download public data sets, verified by sha256.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure registered versions side by side.", no_args_is_help=True)


@pipeline_app.command("run")
def pipeline_run(
    profile: str = typer.Option("demo", help="Config profile (configs/<name>.yaml: tiny, demo, full) or a YAML path."),
    variant: Optional[str] = typer.Option(None, help="Family member to build (overrides model.variant): v1, v2, pro, lite, or all (the family pipeline: every member in one run, validated once; Pro is gated after V1 registers, Lite distils this run's Pro)."),
    corpus: List[Path] = typer.Option([], help="Unlabeled in-domain text for Pro's adaptation and Lite's vocabulary (repeatable; default: the profile's adapt.domain_text, i.e. the training file plus NLU++ banking when found)."),
    set_: List[str] = typer.Option([], "--set", help="Override a config field, e.g. --set train.epochs=2 (repeatable)."),
    data: Optional[Path] = typer.Option(None, help="Folder with train.csv, test.csv and categories.json (default: $YANJIN_DATA or banking77)."),
    train: Optional[Path] = typer.Option(None, help="Training CSV/Parquet file (overrides --data)."),
    test: Optional[Path] = typer.Option(None, help="Test CSV/Parquet file (overrides --data)."),
    labels: Optional[Path] = typer.Option(None, help="JSON list of known labels (overrides --data's categories.json)."),
    state_dir: Path = typer.Option(DEFAULT_STATE_DIR, help="Folder holding all embedded-mode state (MLflow DB, artifacts, kfp outputs)."),
    tracking_uri: Optional[str] = TRACKING,
    metrics_out: Optional[Path] = typer.Option(None, help="Also write the evaluation figures as JSON to this path."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show kfp.local's own output (every step's inputs and "
                                                          "logs); it always goes to <state-dir>/logs/."),
) -> None:
    """Run validate -> train -> export -> evaluate -> gate -> register with kfp.local (--variant all: the
    family pipeline, every member in one run)."""
    from ..config import with_variant
    from ..family import FAMILY
    from ..pipelines.run import run_family_local, run_local
    from ..state import git_commit
    from .options import profile as load_profile

    config = load_profile(profile, set_)
    if variant and variant != "all" and variant not in FAMILY:
        raise typer.BadParameter(f"unknown family member {variant!r}; known: {list(FAMILY)} or all", param_hint="--variant")
    source = data_source(config, data, train, test, labels, state_dir)
    train = source.train
    state = state_of(state_dir)
    uri = tracking_uri or state.tracking_uri
    args = (source.train, source.test, source.labels, state, tracking_uri, git_commit())
    corpus_args = [str(c) for c in corpus] or None
    from ..pipelines.console import watched
    from ..pipelines.pipeline import DEFAULT_IMAGE, build_family_pipeline, build_pipeline

    family_run = variant == "all"
    config = config if family_run or not variant else with_variant(config, variant)
    graph = build_family_pipeline(DEFAULT_IMAGE, None) if family_run else build_pipeline(DEFAULT_IMAGE, None)
    what = "the whole family" if family_run else config.model.variant
    typer.echo(f"yanjin: {what}, profile {config.profile}, data {train}")
    started = time.monotonic()
    with watched(graph, state.root, f"{'family' if family_run else config.model.variant}/{config.profile}",
                 prefix="" if family_run else f"{config.model.variant}: ", verbose=verbose) as watch:
        made, error = watch.attempt(lambda: (run_family_local if family_run else run_local)(
            config, *args, adapt_corpus=corpus_args))
    if error is not None:
        if not verbose:
            typer.echo("\n".join(watch.failure_lines()), err=True)
        typer.secho(f"pipeline stopped: {error}\nThe failing step's error is above (all output: {watch.log}); "
                    f"nothing was registered by the failing branch.", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"done in {time.monotonic() - started:.0f} s")
    outcomes = made.members if family_run else {config.model.variant: made}
    for name, outcome in outcomes.items():
        ev = outcome.evaluation
        if metrics_out:
            path = metrics_out if len(outcomes) == 1 else metrics_out.with_name(f"{metrics_out.stem}-{name}{metrics_out.suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(ev | {"registered_model": outcome.registered_model,
                                             "profile": config.profile}, indent=2) + "\n")
        typer.echo(f"\n{outcome.registered_model}: accuracy {ev['accuracy']:.4f}, macro-F1 {ev['macro_f1']:.4f}, "
                   f"ECE {ev['ece']:.4f}, p50 {ev['latency_ms_p50_b1']:.2f} ms, {ev['onnx_bytes'] / 1e6:.1f} MB ONNX")
        if outcome.version:
            typer.echo(f"gate passed: registered {outcome.registered_model} version {outcome.version} "
                       f"(@{CHALLENGER}; @{CHAMPION} too if it is the first)")
        else:
            typer.echo("gate rejected the candidate: nothing registered (reasons in the MLflow run, gate/decision.json)")
        typer.echo(f"MLflow run {ev['run_id']} in {uri}")
    if family_run:
        typer.echo("\n" + made.markdown)
    me, mlflow_cmd = _command("yanjin"), _command("mlflow")
    typer.echo("\nWhere to look next:\n"
               f"  the MLflow UI (runs, versions, model cards): {mlflow_cmd} ui --backend-store-uri {uri} --port 5000, "
               f"then http://127.0.0.1:5000\n"
               f"  the family at a glance:  {me} status{_state_flag(state_dir)}\n"
               f"  a version's model card:  {me} card <model> <version>{_state_flag(state_dir)}\n"
               f"  serve it over HTTP:      {me} serve --model {next(iter(outcomes.values())).registered_model}"
               f"{_state_flag(state_dir)}  (Swagger UI at http://127.0.0.1:3000/docs)")


def _command(name: str) -> str:
    """How the user reaches a command of this environment: its bare name when PATH finds this one, else its path
    (after `make demo` that is .venv/bin/, which no shell has on PATH until the venv is activated)."""
    import os
    import shutil
    import sys

    mine = Path(sys.executable).with_name(name)
    found = shutil.which(name)
    if found and Path(found).resolve() == mine.resolve():
        return name
    try:
        return os.path.relpath(mine)
    except ValueError:
        return str(mine)


def _state_flag(state_dir: Path) -> str:
    return "" if state_dir == DEFAULT_STATE_DIR else f" --state-dir {state_dir}"


@pipeline_app.command("compile")
def pipeline_compile(
    output: Path = typer.Option(Path("yanjin_pipeline.yaml"), help="Where to write the pipeline YAML for the Kubeflow UI."),
    image: Optional[str] = typer.Option(None, help="Container image with yanjin installed, used by every step."),
    profile: str = typer.Option("full", help="Profile whose `resources` section sets each step's CPU, memory, "
                                             "deadline, retries and caching."),
    set_: List[str] = typer.Option([], "--set", help="Override a config field, e.g. --set resources.train.memory=16G."),
    gpu: bool = typer.Option(False, help="Adapt and train/distil request one NVIDIA GPU (and tolerate GPU nodes' taint)."),
    family: bool = typer.Option(False, "--family", help="The family pipeline: every member in one run (validate once, "
                                                        "a branch per member, the family table) instead of one member per run."),
    image_default: bool = typer.Option(False, "--image-default", help="Compile with the local image name (yanjin:VERSION, "
                                                                      "what infra/Dockerfile builds) instead of --image."),
) -> None:
    """Compile the pipeline to YAML (upload it in the Kubeflow UI or submit it with kfp.Client)."""
    from ..pipelines.pipeline import DEFAULT_IMAGE
    from ..pipelines.run import compile_pipeline
    from .options import profile as load_profile

    if not image and not image_default:  # a cluster cannot pull the local name: say so now, not at the first pod
        raise typer.BadParameter(f"name the image every step runs, e.g. --image REGISTRY/yanjin:0.1.0 (or "
                                 f"--image-default for the local {DEFAULT_IMAGE})", param_hint="--image")
    path = compile_pipeline(output, image or DEFAULT_IMAGE, load_profile(profile, set_).resources, gpu, family)
    typer.echo(f"wrote {path}" + (" (the family pipeline)" if family else "") + (" (GPU steps: adapt, train)" if gpu else ""))


def _cluster_arguments(profile: str, set_: List[str], variant: Optional[str], params: List[str], package: Path):
    from ..config import with_variant
    from ..pipelines.remote import package_parameters, pipeline_arguments
    from ..registry import registered_model_name
    from .options import profile as load_profile

    if not package.is_file():
        raise typer.BadParameter(f"{package} not found; run yanjin pipeline compile first", param_hint="--package")
    accepted = package_parameters(package)
    family = "member" not in accepted
    if family != (variant == "all"):
        raise typer.BadParameter(f"{package} is {'the family pipeline' if family else 'the one-member pipeline'}: "
                                 + ("pass --variant all, or compile without --family" if family else
                                    "pass one member, or compile with --family for --variant all"),
                                 param_hint="--variant")
    config = load_profile(profile, set_)
    config = with_variant(config, variant) if variant and not family else config
    overrides = {}
    for p in params:
        key, sep, value = p.partition("=")
        if not sep:
            raise typer.BadParameter(f"{p!r} must look like name=value", param_hint="--param")
        overrides[key.strip()] = value
    try:
        return pipeline_arguments(config, registered_model_name(config.model_name, config.model.variant), overrides,
                                  accepted)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--param") from None


CLUSTER_PARAMS = typer.Option([], "--param", help="Pipeline parameter name=value, e.g. train_data=s3://bucket/train.csv, tracking_uri=http://mlflow:5000 (repeatable).")
PACKAGE = typer.Option(Path("yanjin_pipeline.yaml"), help="Compiled pipeline (yanjin pipeline compile).")
CLUSTER_PROFILE = typer.Option("full", help="Config profile sent as config_json.")
VARIANT = typer.Option(None, help="Family member (v1, v2, pro, lite), or all with a package compiled with --family.")
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
    from ..pipelines.remote import client

    arguments = _cluster_arguments(profile, set_, variant, param, package)
    kfp_client = client(host, namespace)
    run = kfp_client.create_run_from_pipeline_package(str(package), arguments,
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
    from ..monitoring.trigger import QUARTERLY_CRON
    from ..pipelines.remote import client, experiment_id, recurring_run_options

    if quarterly == bool(cron):
        raise typer.BadParameter("give exactly one of --quarterly and --cron", param_hint="--quarterly / --cron")
    expression = QUARTERLY_CRON if quarterly else cron
    if len(expression.split()) != 6:
        raise typer.BadParameter(f"{expression!r}: KFP cron has 6 fields, seconds first (quarterly: {QUARTERLY_CRON})",
                                 param_hint="--cron")
    arguments = _cluster_arguments(profile, set_, variant, param, package)
    kfp_client = client(host, namespace)
    options = recurring_run_options(name, experiment_id(kfp_client, experiment, namespace), package, arguments,
                                    expression)
    job = kfp_client.create_recurring_run(**options)
    typer.echo(f"recurring run {getattr(job, 'recurring_run_id', job)} '{name}': cron {expression}, max 1 at a time, "
               f"no catch-up, caching off")


@data_app.command("fetch")
def data_fetch(
    name: str = typer.Argument("banking77", help="Data set name (banking77)."),
    dest: Optional[Path] = typer.Option(None, help="Target folder (default: <state-dir>/data/<name>)."),
    state_dir: Path = STATE,
    source: Optional[str] = typer.Option(None, help="Base URL to download from instead of the public source (mirror)."),
) -> None:
    """Download a data set from its public source and verify each file's sha256."""
    from ..components.fetch import FetchError, fetch_dataset

    try:
        out = fetch_dataset(name, dest or state_of(state_dir).data(name), base_url=source)
    except FetchError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"{name}: verified files in {out}")


@bench_app.command("family")
def bench_family(
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
    model_name: str = typer.Option("banking77", help="Registered models are <model-name>-<variant>."),
    variants: str = typer.Option("v1,v2,pro,lite", help="Comma-separated family members; each one's @champion is measured."),
    data: Optional[Path] = typer.Option(None, help="Folder with train.csv (baseline) and test.csv (default: as for pipeline run)."),
    output_dir: Path = typer.Option(Path("benchmarks/results"), help="Where family.json, family.md and family.png go."),
    latency_runs: int = typer.Option(300, min=10, help="Batch-1 requests timed per version and runtime."),
    throughput_batches: int = typer.Option(30, min=1, help="Batch-32 calls timed per version."),
) -> None:
    """Every registered version plus a TF-IDF + LinearSVC baseline on the same test set, in one run."""
    import mlflow

    from ..components import data as D
    from ..components.compare import CompareParams, compare_family
    from ..config import DataParams
    source = D.DataSource.in_folder(data_dir(data, state_dir), DataParams())
    train, test = source.read("train"), source.read("test")
    mlflow.set_tracking_uri(tracking_uri or state_of(state_dir).tracking_uri)
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
