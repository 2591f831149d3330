"""The `yanjin` command line: the one entry point, where configuration is read once.

Only this package imports every layer. Each module holds one group of commands and imports the
domain code inside its commands, so `yanjin --help` stays fast and nothing here imports back.
"""
import os
import sys

import typer

from .governance import card, reproduce, status
from .monitor import monitor_app, schedule_app
from .pipeline import bench_app, data_app, pipeline_app
from .release import approve, controller_app, history, ledger_app, promote, reconcile, rollback, rollout_app, select
from .serve import keys_app, review_app, serve
from .traffic import log_app

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # progress bars garble CLI output

app = typer.Typer(help="yanjin: train, evaluate, register and serve a family of model versions.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
app.command("serve")(serve)
app.add_typer(keys_app, name="keys")
app.add_typer(review_app, name="review")
app.add_typer(log_app, name="log")
app.command("promote")(promote)
app.command("approve")(approve)
app.command("reconcile")(reconcile)
app.add_typer(controller_app, name="controller")
app.add_typer(ledger_app, name="ledger")
app.command("rollback")(rollback)
app.command("history")(history)
app.command("select")(select)
app.add_typer(rollout_app, name="rollout")
app.add_typer(monitor_app, name="monitor")
app.add_typer(schedule_app, name="schedule")
app.command("status")(status)
app.command("card")(card)
app.command("reproduce")(reproduce)
DEBUG_ENV = "YANJIN_DEBUG"


def _version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        from ..state import git_commit

        typer.echo(f"yanjin {version('yanjin')} (code {git_commit()})")
        raise typer.Exit()


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help="On an error, show the Python traceback too "
                                       "(also accepted anywhere on the line, or YANJIN_DEBUG=1)."),
            version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                         help="Print the version and the code's commit, then exit.")) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


def _next_step(error: BaseException) -> str:
    """What to run next, by the kind of error (the message itself says what went wrong)."""
    from ..components.data import DataError
    from ..registry import LineageError
    from ..registry.ledger import LedgerError
    from ..release.promotion import PromotionConflict, PromotionRefused
    from ..release.rollout import RolloutError

    kind = type(error).__name__
    if isinstance(error, RolloutError):
        return "see where it stands: yanjin rollout status MODEL (or yanjin status)"
    if isinstance(error, (PromotionRefused, PromotionConflict, LedgerError)):
        return "see the release state and its audit: yanjin status; yanjin history MODEL --verify"
    if isinstance(error, DataError):
        return "check the file, or name its columns: --set data.text_column=... --set data.label_column=..."
    if isinstance(error, LineageError):
        return "see what is registered: yanjin status"
    if getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
        return "see what is registered: yanjin status (or the MLflow UI)"
    if kind in ("MlflowException", "RestException"):
        return "is the tracking server reachable and are you allowed? (--tracking-uri, MLFLOW_TRACKING_USERNAME)"
    if kind in ("ConnectError", "ConnectTimeout", "ServerError"):
        return "is the yanjin server running and the URL right? (yanjin serve; --url)"
    if kind == "OperationalError":
        return "is the database reachable and its folder there? (--state-dir, --prediction-log, YANJIN_LEDGER_URL)"
    if isinstance(error, OSError):
        return "check the path and its permissions"
    return "run it again with --debug for the traceback, and report it if the message does not help"


def main() -> None:
    """The `yanjin` command: any error is one message naming the problem and what to run next; --debug (anywhere
    on the line) or YANJIN_DEBUG=1 shows the traceback instead."""
    if "--debug" in sys.argv[1:]:
        sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"
    try:
        app()
    except KeyboardInterrupt:
        typer.secho("interrupted", fg="red", err=True)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - the one place every error becomes a message
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        typer.secho(f"error: {message}\n  next: {_next_step(error)} (--debug shows the traceback)", fg="red", err=True)
        sys.exit(1)


__all__ = ["app", "main"]
