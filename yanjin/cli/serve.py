"""`yanjin serve` and `yanjin review`: the BentoML server, and the human-review queue of its prediction log."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from .options import LOG, STATE, TRACKING, state_of
from .options import prediction_log as open_log

review_app = typer.Typer(help="Work the human-review queue of the prediction log.", no_args_is_help=True)


def serve_settings(state_dir: Path, tracking_uri: Optional[str], model: str, prediction_log: Optional[str],
                   overrides: List[str]):
    from ..config import ServeSettings, apply_override

    state = state_of(state_dir)
    values: dict = {"tracking_uri": tracking_uri or state.tracking_uri, "model": model,
                    "prediction_log": prediction_log or str(state.prediction_log.resolve())}
    for assignment in overrides:
        apply_override(values, assignment)
    try:
        return ServeSettings.from_dict(values)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--set")


def serve(
    model: str = typer.Option("banking77-lite", help="Registered model to serve (its @champion; @challenger in an A/B test)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 exposes the server to the network."),
    port: int = typer.Option(3000, help="HTTP port."),
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING, prediction_log: Optional[str] = LOG,
    set_: List[str] = typer.Option([], "--set", help="Override a serving setting, e.g. --set challenger_share=0.1 (repeatable; ServeSettings in config.py)."),
) -> None:
    """Start the BentoML server (ONNX Runtime, adaptive batching, A/B, review flags, hot swap)."""
    import sys

    from ..serving.settings import ENV

    settings = serve_settings(state_dir, tracking_uri, model, prediction_log, set_)
    env = os.environ | {ENV: settings.to_json()}
    typer.echo(f"serving {settings.model} on http://{host}:{port} (OpenAPI spec at /docs.json)")
    os.execvpe(sys.executable, [sys.executable, "-m", "bentoml", "serve", "yanjin.serving.service:Classifier",
                                "--host", host, "--port", str(port)], env)




@review_app.command("list")
def review_list(limit: int = typer.Option(20, min=1, help="How many flagged predictions to show, oldest first."),
                state_dir: Path = STATE, prediction_log: Optional[str] = LOG) -> None:
    """Predictions below the confidence threshold that nobody has labelled yet."""
    log = open_log(state_dir, prediction_log)
    rows = log.review_queue(limit)
    for r in rows:
        typer.echo(f"{r['id']}  {r['confidence']:.2f}  {r['label']:<32} v{r['version']} {r['arm']:<10} {r['text'][:80]!r}")
    typer.echo(f"{len(rows)} waiting for review" + (" (more not shown)" if len(rows) == limit else ""))
    log.close()


@review_app.command("label")
def review_label(prediction_id: str = typer.Argument(..., help="Prediction id, as listed."),
                 label: str = typer.Argument(..., help="The correct label."),
                 state_dir: Path = STATE, prediction_log: Optional[str] = LOG) -> None:
    """Record a reviewer's label for a prediction."""
    from ..serving.predlog import UnknownPrediction

    log = open_log(state_dir, prediction_log)
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
                  state_dir: Path = STATE, prediction_log: Optional[str] = LOG) -> None:
    """Reviewed and feedback labels as extra training data (same columns as banking77)."""
    import pandas as pd

    log = open_log(state_dir, prediction_log)
    rows = log.labelled()
    log.close()
    pd.DataFrame(rows, columns=["text", "label", "source"]).rename(columns={"label": "category"}).to_csv(output, index=False)
    typer.echo(f"wrote {len(rows)} labelled texts to {output}")
