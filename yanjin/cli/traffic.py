"""`yanjin log`: retention and erasure of the customer texts the prediction log holds, and of every copy
made from it (retraining sets, training splits in MLflow); each is recorded, never with the text."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import List, Optional

import typer

from .options import LOG, STATE, TRACKING, client, fail, principal, require_state, state_of
from .options import prediction_log as open_log

log_app = typer.Typer(help="Retention and erasure of logged customer texts, in every copy.", no_args_is_help=True)
UNITS = {"d": 86400, "h": 3600, "m": 60}


def seconds(age: str) -> float:
    """'90d', '12h', '30m' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhm])\s*", age)
    if not m or float(m.group(1)) <= 0:
        raise typer.BadParameter(f"{age!r}: a positive age such as 90d, 12h or 30m", param_hint="--older-than")
    return float(m.group(1)) * UNITS[m.group(2)]


def _reach(state_dir: Path, tracking_uri: Optional[str], prediction_log: Optional[str]):
    """The store, the MLflow client and who is acting, as the registry authenticates them."""
    require_state(state_dir, tracking_uri)
    return open_log(state_dir, prediction_log), client(state_dir, tracking_uri), principal(state_dir, tracking_uri)


def _folders(state_dir: Path) -> list[Path]:
    """Where the embedded mode keeps copies of logged texts: retraining sets, the pipeline's splits, drift reports."""
    state = state_of(state_dir)
    return [state.retraining, Path(state.pipeline_root), state.monitoring]


def report(out) -> None:
    typer.echo(f"{out.action} ({out.selector}): {out.predictions} logged predictions and {out.labels} labels removed; "
               f"{sum(out.files.values())} rows or quotes from {len(out.files)} file(s), "
               f"{sum(out.artifacts.values())} from {len(out.artifacts)} MLflow artifact(s); recorded as #{out.record}")
    for version in out.versions:
        typer.echo(f"  trained on an erased text: {version} (decide whether to retrain it)")


@log_app.command("init")
def init(state_dir: Path = STATE, prediction_log: Optional[str] = LOG) -> None:
    """Create or migrate the log's tables, as their owner; on PostgreSQL also grant each of the log's roles its
    part (serving inserts and labels, the drift job reads, retention deletes; infra/k8s/base/least-privilege.yaml)."""
    from ..traffic.store import database_url, init_log

    location = prediction_log or state_of(state_dir).prediction_log
    try:
        granted = init_log(location)
    except Exception as e:  # noqa: BLE001 - unreachable or refused: one message, never the URL's password
        from ..traffic.store import db_error

        fail(f"prediction log: {db_error(e)}")
    shown = database_url(location).split("@")[-1]
    typer.echo(f"prediction log ready at {shown}" + (f"; granted: {', '.join(granted)}" if granted else ""))


def purge_older(store, client, who: str, state_dir: Path, age: float, said: str, record_nothing: bool = True):
    """Predictions older than `age` seconds and every copy of their texts; None when there were none and
    `record_nothing` is off (the scheduler's hourly pass records only what removed something)."""
    from ..traffic.erasure import PURGE, erase

    ids = store.ids_older_than(time.time() - age)
    if not ids and not record_nothing:
        return None
    return erase(store, ids, [], PURGE, f"older than {said}", who, _folders(state_dir), client)


@log_app.command("purge")
def purge(older_than: str = typer.Option(..., help="Retention period: predictions older than this go, e.g. 90d."),
          dry_run: bool = typer.Option(False, help="Say how many would go; change nothing."),
          state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING, prediction_log: Optional[str] = LOG) -> None:
    """Remove predictions older than the retention period, their labels, and every copy of their texts."""
    age = seconds(older_than)
    store, client, who = _reach(state_dir, tracking_uri, prediction_log)
    if dry_run:
        n = len(store.ids_older_than(time.time() - age))
        typer.echo(f"{n} logged predictions are older than {older_than}; nothing removed (--dry-run)")
        return
    report(purge_older(store, client, who, state_dir, age, older_than))


@log_app.command("erase")
def erase_cmd(prediction_id: List[str] = typer.Option([], "--prediction-id", help="A prediction to erase (repeatable)."),
              text: Optional[str] = typer.Option(None, help="Erase every prediction of this text (case and spaces aside) "
                                                            "and every copy of it; the text is not recorded."),
              state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING, prediction_log: Optional[str] = LOG) -> None:
    """A customer's erasure request: the predictions, their labels and every copy of their texts."""
    from ..config import ServeSettings
    from ..traffic.erasure import ERASE, erase

    if not prediction_id and not text:
        raise typer.BadParameter("name what to erase: --prediction-id ID (repeatable) or --text TEXT")
    store, client, who = _reach(state_dir, tracking_uri, prediction_log)
    unknown = [p for p in prediction_id if not store.texts_of([p])]
    if unknown:
        fail(f"no logged prediction {', '.join(unknown)}: nothing erased (already erased or purged? `yanjin log erasures`)")
    ids, texts = list(prediction_id), []
    if text:
        redactor = ServeSettings().redactor()
        stored = redactor.redact(text)[0] if redactor else text   # how the log holds it
        texts = [text, stored]
        ids += [i for t in {text, stored} for i in store.ids_with_text(t) if i not in ids]
    selector = " ".join(filter(None, [f"{len(prediction_id)} prediction id(s)" if prediction_id else "",
                                      f"a text ({len(text)} characters)" if text else ""]))
    report(erase(store, ids, texts, ERASE, selector, who, _folders(state_dir), client))


@log_app.command("erasures")
def erasures(state_dir: Path = STATE, prediction_log: Optional[str] = LOG) -> None:
    """Every purge and erasure: when, by whom, what it reached (never a text)."""
    store = open_log(state_dir, prediction_log)
    for r in store.erasure_records():
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
        typer.echo(f"#{r['id']} {when} {r['action']:<6} by {r['by']}: {r['selector']}; {r['predictions']} predictions, "
                   f"{r['labels']} labels, {len(r['copies']['files'])} files, {len(r['copies']['artifacts'])} artifacts"
                   + (f"; trained on it: {', '.join(r['versions'])}" if r["versions"] else ""))
