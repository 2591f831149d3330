"""`yanjin card | reproduce | status`: what an auditor asks of a version, and where the family stands."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .options import LOG, STATE, TRACKING, client, data_dir, fail, ledger_if_any, state_of

MODEL = typer.Argument(..., help="Registered model, e.g. banking77-v1.")
VERSION = typer.Argument(..., help="Its version number.")


def card(
    model: str = MODEL, version: str = VERSION, state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
    html: Optional[Path] = typer.Option(None, help="Also write the card as HTML to this file."),
    write: bool = typer.Option(False, "--write", help="Log the card with the version again (run artifact and the "
                                                      "version's description), e.g. for a version registered before cards."),
) -> None:
    """Print a version's model card, written from its record in MLflow (release history as it stands now)."""
    from mlflow.exceptions import MlflowException

    from ..components.card import card_html, card_markdown, read_record, write_card

    c = client(state_dir, tracking_uri)
    ledger = ledger_if_any(state_dir, tracking_uri)
    try:
        text = write_card(c, model, version, ledger) if write else card_markdown(read_record(c, model, version, ledger))
    except MlflowException as e:
        fail(f"{model} v{version}: {e.message}")
    typer.echo(text)
    if html:
        html.write_text(card_html(text, f"{model} v{version}"))
        typer.echo(f"wrote {html}")


def reproduce(
    model: str = MODEL, version: str = VERSION, state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
    data: Optional[Path] = typer.Option(None, help="Folder holding the version's train.csv and test.csv, when they "
                                                   "moved since (default: the paths the run recorded)."),
    train: Optional[Path] = typer.Option(None, help="The training file, when it moved."),
    test: Optional[Path] = typer.Option(None, help="The test file, when it moved."),
    labels: Optional[Path] = typer.Option(None, help="The label list (default: categories.json beside the training file, if the record has one)."),
    tolerance: float = typer.Option(0.01, min=0.0, help="Largest accepted absolute difference of accuracy, macro-F1 and ECE."),
    same_commit: bool = typer.Option(False, "--same-commit", help="Refuse when the running code is not the version's commit (default: rebuild, and say the code differs)."),
    output: Optional[Path] = typer.Option(None, help="Also write the comparison as JSON here."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show kfp.local's own output."),
) -> None:
    """Rebuild a version from its record alone (data checked against its digest, its config and seed,
    its teacher) through the same pipeline, without registering, and compare the figures."""
    from mlflow.exceptions import MlflowException

    from ..pipelines.console import watched
    from ..pipelines.pipeline import DEFAULT_IMAGE, build_pipeline
    from ..pipelines.reproduce import ReproduceError
    from ..pipelines.reproduce import reproduce as rebuild
    from ..state import git_commit

    if data:
        folder = data_dir(data, state_dir)
        train, test = train or folder / "train.csv", test or folder / "test.csv"
    state = state_of(state_dir)
    with watched(build_pipeline(DEFAULT_IMAGE, None), state.root, f"reproduce/{model}", prefix=f"{model}: ",
                 verbose=verbose) as watch:
        result, error = watch.attempt(lambda: rebuild(model, version, state, tracking_uri, git_commit(), train, test,
                                                      labels, tolerance, same_commit),
                                      (MlflowException, RuntimeError, ValueError))  # ReproduceError is a RuntimeError
    if isinstance(error, ReproduceError):
        fail(f"not reproduced: {error}")
    if isinstance(error, MlflowException):
        fail(f"{model} v{version}: {error.message}")
    if error is not None:
        typer.echo("\n".join(watch.failure_lines()), err=True)
        fail(f"the rebuild stopped: {error} (all output: {watch.log})")
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    typer.echo(f"\n{model} v{version} rebuilt in {result.seconds:.0f} s (run {result.run_id}, nothing registered)")
    typer.echo(f"data: verified against data_sha256 {result.data['sha256'][:16]}…")
    typer.echo(f"code: {'same commit' if result.commit['same'] else 'DIFFERENT commit'} "
               f"(recorded {result.commit['recorded']}, running {result.commit['running']})")
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"{'figure':<20}{'recorded':>14}{'rebuilt':>14}{'delta':>12}")
    for name, f in result.figures.items():
        fmt = (lambda x: f"{x:,.0f}") if name == "onnx_bytes" else (lambda x: f"{x:.4f}")
        typer.echo(f"{name:<20}{fmt(f['recorded']):>14}{fmt(f['rebuilt']):>14}{f['delta']:>+12.4f}"
                   + ("" if f["judged"] else "   (shown, not judged)"))
    if result.reproduced:
        typer.secho(f"reproduced: every judged figure within ±{result.tolerance} (largest difference "
                    f"{result.max_metric_delta:.4f})", fg="green")
    else:
        typer.secho("NOT reproduced:\n  " + "\n  ".join(result.differences), fg="red")
        raise typer.Exit(1)


def status(
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING, prediction_log: Optional[str] = LOG,
    model_name: str = typer.Option("banking77", help="Registered models are <model-name>-<member>."),
) -> None:
    """One screen for the whole family: champions, challengers, rollouts, drift, retraining, review queue."""
    from ..family import FAMILY
    from ..monitoring.status import family_status, render
    from ..registry import registered_model_name
    from .options import prediction_log as open_log

    c = client(state_dir, tracking_uri)  # refuses a state folder that is not there: looking creates nothing
    location = prediction_log or str(state_of(state_dir).prediction_log)
    exists = "://" in location or Path(location).is_file()  # do not create an empty SQLite log by looking
    log = open_log(state_dir, prediction_log) if exists else None
    try:
        result = family_status(c, {m: registered_model_name(model_name, m) for m in FAMILY},
                               log, location, ledger_if_any(state_dir, tracking_uri))
    finally:
        if log is not None:
            log.close()
    typer.echo(render(result))


__all__ = ["card", "reproduce", "status"]
