"""Command-line options shared by the release and monitoring commands (one wording, one default)."""
from pathlib import Path

import typer

STATE = typer.Option(Path(".yanjin"), help="Embedded-mode state folder (MLflow DB, prediction log, reports).")
TRACKING = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI (default: SQLite under --state-dir).")
PROFILE = typer.Option("demo", help="Profile whose `rollout`, `costs` and `monitor` sections apply (configs/<name>.yaml or a path).")
SETS = typer.Option([], "--set", help="Override a profile field, e.g. --set rollout.min_labelled=100 or --set monitor.window=300 (repeatable).")
LOG = typer.Option(None, help="Prediction log: SQLite file or SQLAlchemy URL (default: <state-dir>/predictions.db).")


def client(state_dir: Path, tracking_uri: str | None):
    from mlflow import MlflowClient

    from .pipelines.run import LocalState

    return MlflowClient(tracking_uri or LocalState(state_dir).tracking_uri)


def profile(name: str, overrides: list[str]):
    from .config import ConfigError, load_config

    try:
        return load_config(name, overrides)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--profile / --set")


def prediction_log(state_dir: Path, location: str | None):
    from .serving.predlog import PredictionLog

    return PredictionLog(location or state_dir / "predictions.db")
