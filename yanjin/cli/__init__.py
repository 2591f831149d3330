"""The `yanjin` command line: the one entry point, where configuration is read once.

Only this package imports every layer. Each module holds one group of commands and imports the
domain code inside its commands, so `yanjin --help` stays fast and nothing here imports back.
"""
import os

import typer

from .governance import card, reproduce, status
from .monitor import monitor_app, schedule_app
from .pipeline import bench_app, data_app, pipeline_app
from .release import approve, controller_app, history, ledger_app, promote, reconcile, rollback, rollout_app, select
from .serve import keys_app, review_app, serve

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # progress bars garble CLI output

app = typer.Typer(help="yanjin: train, evaluate, register and serve a family of model versions.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
app.command("serve")(serve)
app.add_typer(keys_app, name="keys")
app.add_typer(review_app, name="review")
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

__all__ = ["app"]
