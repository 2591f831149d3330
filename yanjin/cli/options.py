"""Command-line options shared by the commands (one wording, one default) and the few helpers that
turn them into objects: the state folder, an MLflow client, the profile, the prediction log."""
from __future__ import annotations

from pathlib import Path

import typer

from ..state import DEFAULT_STATE_DIR, LocalState, find_data_dir

STATE = typer.Option(DEFAULT_STATE_DIR, help="Embedded-mode state folder (MLflow DB and artifacts, kfp outputs, prediction log, reports).")
TRACKING = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI (default: SQLite under --state-dir).")
PROFILE = typer.Option("demo", help="Profile whose `rollout`, `costs` and `monitor` sections apply (configs/<name>.yaml or a path).")
SETS = typer.Option([], "--set", help="Override a profile field, e.g. --set rollout.min_labelled=100 or --set monitor.window=300 (repeatable).")
LOG = typer.Option(None, envvar="YANJIN_PREDICTION_LOG", show_envvar=True,   # a URL with a password: not on the command line
                   help="Prediction log: SQLite file or SQLAlchemy URL (default: <state-dir>/predictions.db).")


def fail(message: str) -> None:
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(1)


def data_source(config, data: Path | None, train: Path | None, test: Path | None, labels: Path | None,
                state_dir: Path):
    """The run's data, resolved once: --train/--test/--labels as given, the rest from --data's folder (train.csv,
    test.csv, categories.json); paths made absolute, so the version's record works from any folder later."""
    from dataclasses import replace

    from ..components.data import DataSource

    folder = DataSource.in_folder(data_dir(data, state_dir), config.data) if not (train and test) else None
    pick = lambda given, default: str(Path(given).resolve()) if given else default   # noqa: E731
    base = folder or DataSource("", "", "", config.data.text_column, config.data.label_column)
    return replace(base, train=pick(train, base.train), test=pick(test, base.test), labels=pick(labels, base.labels))


def state_of(state_dir: Path) -> LocalState:
    return LocalState(state_dir)


def data_dir(explicit: Path | None, state_dir: Path) -> Path:
    """--data, else $YANJIN_DATA, else a fetched copy under the state folder, else ../shared/data."""
    try:
        return find_data_dir(explicit, state_of(state_dir))
    except FileNotFoundError as e:
        raise typer.BadParameter(str(e), param_hint="--data / $YANJIN_DATA") from None


def require_state(state_dir: Path, tracking_uri: str | None) -> None:
    """Commands that read a registry never create one: an embedded state folder must be there already."""
    if tracking_uri is None and not (state_dir / "mlflow.db").is_file():
        fail(f"no yanjin state in {state_dir.resolve()}; pass --state-dir (the folder `yanjin pipeline run` wrote, "
             f"{DEFAULT_STATE_DIR}/ where it ran) or --tracking-uri")


def client(state_dir: Path, tracking_uri: str | None):
    from ..registry import client as mlflow_client

    require_state(state_dir, tracking_uri)
    return mlflow_client(tracking_uri or state_of(state_dir).tracking_uri)


def profile(name: str, overrides: list[str]):
    from ..config import ConfigError, load_config

    try:
        return load_config(name, overrides)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--profile / --set")


def prediction_log(state_dir: Path, location: str | None):
    from ..traffic.store import TrafficStore

    if location is None and not state_dir.is_dir():
        fail(f"no yanjin state in {state_dir.resolve()}; pass --state-dir or --prediction-log")
    return TrafficStore(location or state_of(state_dir).prediction_log)


def principal(state_dir: Path, tracking_uri: str | None) -> str:
    """Who is acting, as the registry authenticates them (the MLflow user of a tracking server, else the OS
    account at this host); never a flag."""
    import os

    from ..registry.principal import PrincipalError, authenticated_principal

    try:
        return authenticated_principal(tracking_uri or state_of(state_dir).tracking_uri,
                                       os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD"))
    except PrincipalError as e:
        fail(str(e))


def release(state_dir: Path, tracking_uri: str | None, lease_ttl_s: float = 120.0):
    """The release ledger and MLflow, acting as the principal the registry authenticates (never a flag)."""
    import os

    from ..registry.ledger import LEDGER_ENV, Ledger, LedgerError, ledger_url
    from ..registry.mirror import Release

    require_state(state_dir, tracking_uri)
    uri = tracking_uri or state_of(state_dir).tracking_uri
    who = principal(state_dir, tracking_uri)
    try:
        ledger = Ledger(ledger_url(uri, os.environ.get(LEDGER_ENV)))
    except LedgerError as e:
        fail(str(e))
    except Exception as e:  # noqa: BLE001 - the database is unreachable or refuses us: one message, no traceback
        fail(f"release ledger: {type(e).__name__}: {str(e).splitlines()[0]}")
    return Release(client(state_dir, tracking_uri), ledger, who, lease_ttl_s)


def ledger_if_any(state_dir: Path, tracking_uri: str | None):
    """The release ledger for reading, or None where none was written yet (looking creates nothing)."""
    import os

    from ..registry.ledger import LEDGER_ENV, Ledger, LedgerError, ledger_url

    try:
        url = ledger_url(tracking_uri or state_of(state_dir).tracking_uri, os.environ.get(LEDGER_ENV))
    except LedgerError:
        return None
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        return None
    return Ledger(url, create=False)
