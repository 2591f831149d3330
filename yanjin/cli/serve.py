"""`yanjin serve`, `yanjin keys` and `yanjin review`: the BentoML server, its API keys, and the human-review
queue of its prediction log."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from .options import LOG, STATE, TRACKING, fail, principal, state_of
from .options import prediction_log as open_log

review_app = typer.Typer(help="Work the human-review queue of the prediction log.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the server: stored hashed, the token shown once.", no_args_is_help=True)
KEYS = typer.Option(None, help="Keys file (default: <state-dir>/api-keys.json; on a cluster, the Secret's content).")


def serve_settings(state_dir: Path, tracking_uri: Optional[str], model: str, prediction_log: Optional[str],
                   overrides: List[str]):
    from ..config import ServeSettings, apply_override

    state = state_of(state_dir)
    values: dict = {"tracking_uri": tracking_uri or state.tracking_uri, "model": model,
                    "prediction_log": prediction_log or str(state.prediction_log.resolve()),
                    "api_keys": str(state.api_keys.resolve()), "ab_secret": str(state.ab_secret.resolve()),
                    "engine_cache": str(state.engine_cache.resolve())}
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
    allow_open_predict: bool = typer.Option(False, "--allow-open-predict", help="Serve /predict without an API key on "
                                            "a non-loopback address (anyone who reaches it has texts classified and logged)."),
) -> None:
    """Start the BentoML server (ONNX Runtime, adaptive batching, A/B, review flags, hot swap)."""
    import sys

    from ..serving.auth import KeysError, read_keys
    from ..serving.routing import read_secret
    from ..serving.settings import ENV

    from ..traffic.redact import RedactionError

    settings = serve_settings(state_dir, tracking_uri, model, prediction_log, set_)
    try:
        redactor = settings.redactor()
    except RedactionError as e:
        raise typer.BadParameter(str(e), param_hint="--set") from None
    typer.echo(f"stored texts redacted: {', '.join(redactor.kinds)}" if redactor else
               "WARNING: redact=false: customer texts are stored as sent (card numbers, IBANs, e-mails, phones)")
    try:
        keys = read_keys(settings.api_keys)
    except KeysError as e:
        raise typer.BadParameter(str(e), param_hint="--set api_keys") from None
    if settings.open_predict and not loopback(host) and not allow_open_predict:
        raise typer.BadParameter(f"--host {host} with open_predict on: anyone who reaches the port could have texts "
                                 f"classified and logged without a key. Set --set open_predict=false and add keys "
                                 f"(`yanjin keys add NAME`), or pass --allow-open-predict", param_hint="--host")
    if not settings.open_predict and not keys:
        raise typer.BadParameter(f"open_predict=false but {settings.api_keys} holds no API key: nobody could "
                                 f"predict; add one with `yanjin keys add NAME`", param_hint="--set")
    typer.echo(f"{len(keys)} API key(s) from {settings.api_keys}; /feedback and /review need one"
               + ("" if settings.open_predict else ", and so does /predict"))
    try:
        read_secret(settings.ab_secret, create=True)   # every replica of one deployment must share it
    except (OSError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--set ab_secret") from None
    env = os.environ | {ENV: settings.to_json()}
    typer.echo(f"serving {settings.model} on http://{host}:{port} (OpenAPI spec at /docs.json)")
    os.execvpe(sys.executable, [sys.executable, "-m", "bentoml", "serve", "yanjin.serving.service:Classifier",
                                "--host", host, "--port", str(port)], env)




def loopback(host: str) -> bool:
    """Only this machine can reach the address (a name is resolved: 'localhost' is, '0.0.0.0' is not)."""
    import ipaddress
    import socket

    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback
                   for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except (OSError, ValueError):
        return False


@keys_app.command("add")
def keys_add(name: str = typer.Argument(..., help="Who holds the key, e.g. crm-app or reviewer-anna (unique)."),
             role: str = typer.Option("client", help="client: predict and feedback; reviewer: also /review (trusted labels)."),
             per_minute: int = typer.Option(600, min=1, help="Rate limit: requests a minute."),
             keys_file: Optional[Path] = KEYS, state_dir: Path = STATE) -> None:
    """Add (or replace) a key; prints its token once: only its sha256 is stored."""
    from ..serving.auth import KeysError, add_key

    path = keys_file or state_of(state_dir).api_keys
    try:
        token = add_key(path, name, role, per_minute)
    except KeysError as e:
        raise typer.BadParameter(str(e)) from None
    typer.echo(f"added {name} ({role}, {per_minute}/min) to {path}; a running server takes it within a second. "
               f"Token (shown once):")
    typer.echo(token)


def _change_key(change, name: str, keys_file: Optional[Path], state_dir: Path):
    """(path, what `change(path, name)` returned); a KeysError is one message."""
    from ..serving.auth import KeysError

    path = keys_file or state_of(state_dir).api_keys
    try:
        return path, change(path, name)
    except KeysError as e:
        raise typer.BadParameter(str(e)) from None


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(..., help="The key's name (`yanjin keys list`)."),
                keys_file: Optional[Path] = KEYS, state_dir: Path = STATE) -> None:
    """Remove a key; a running server refuses its token within a second."""
    from ..serving.auth import revoke_key

    path, gone = _change_key(revoke_key, name, keys_file, state_dir)
    typer.echo(f"revoked {gone.name} ({gone.role}) in {path}")


@keys_app.command("rotate")
def keys_rotate(name: str = typer.Argument(..., help="The key's name (`yanjin keys list`)."),
                keys_file: Optional[Path] = KEYS, state_dir: Path = STATE) -> None:
    """A new token for a key (same role and rate); the old token stops working within a second."""
    from ..serving.auth import rotate_key

    path, token = _change_key(rotate_key, name, keys_file, state_dir)
    typer.echo(f"rotated {name} in {path}; the old token no longer works. New token (shown once):")
    typer.echo(token)


@keys_app.command("list")
def keys_list(keys_file: Optional[Path] = KEYS, state_dir: Path = STATE) -> None:
    """The keys' names, roles and rate limits (never the tokens: they are not stored)."""
    from ..serving.auth import read_keys

    path = keys_file or state_of(state_dir).api_keys
    for k in read_keys(path):
        typer.echo(f"{k.name:<24} {k.role:<9} {k.per_minute}/min  sha256 {k.sha256[:12]}…")


@review_app.command("list")
def review_list(limit: int = typer.Option(20, min=1, help="How many to show, the most useful first."),
                state_dir: Path = STATE, prediction_log: Optional[str] = LOG) -> None:
    """Predictions waiting for a label, the one that helps most first: where a shadowed challenger disagrees with
    the champion (each decides its verdict), then low-confidence answers, then the audit sample."""
    log = open_log(state_dir, prediction_log)
    rows, waiting = log.review_queue(limit), log.review_backlog()
    for r in rows:
        why = "disputed" if r.get("disputed") else r.get("review_reason") or "low_confidence"   # why it is asked
        typer.echo(f"{r['id']}  {why:<14} {r['confidence']:.2f}  {r['label']:<32} v{r['version']} {r['arm']:<10} "
                   f"{r['text'][:80]!r}")
    typer.echo(f"{waiting} waiting for review" + (f"; the first {len(rows)} shown (--limit)" if waiting > len(rows) else ""))
    log.close()


@review_app.command("label")
def review_label(prediction_id: str = typer.Argument(..., help="Prediction id, as listed."),
                 label: str = typer.Argument(..., help="The correct label."),
                 state_dir: Path = STATE, prediction_log: Optional[str] = LOG,
                 tracking_uri: Optional[str] = TRACKING) -> None:
    """Record a reviewer's label for a prediction, as the principal the registry authenticates (the MLflow
    user of a tracking server, else the OS account at this host)."""
    import difflib

    from ..registry import version_labels
    from ..traffic.store import UnknownPrediction

    who = principal(state_dir, tracking_uri)

    log = open_log(state_dir, prediction_log)
    try:
        answered = log.get(prediction_id)
        known = version_labels(answered["model"], answered["version"], tracking_uri or state_of(state_dir).tracking_uri)
        if label not in known:
            close = difflib.get_close_matches(label, known, n=3)
            fail(f"{answered['model']} v{answered['version']} has no label {label!r} ({len(known)} labels"
                 + (f"; did you mean {', '.join(close)}?" if close else f", e.g. {', '.join(known[:3])}") + ")")
        agreed = log.review(prediction_id, label, who)
    except UnknownPrediction:
        fail(f"no prediction with id {prediction_id!r}")
    finally:
        log.close()
    if agreed is None:
        typer.echo(f"{prediction_id}: labelled {label} by {who}; reviewers disagree without a majority: disputed, "
                   f"back on the queue for a third person")
    elif agreed != label:
        typer.echo(f"{prediction_id}: labelled {label} by {who}; the majority of reviewers says {agreed}, which stands")
    else:
        typer.echo(f"{prediction_id}: labelled {label} by {who}")


@review_app.command("export")
def review_export(output: Path = typer.Argument(..., help="CSV to write (columns text, category, source)."),
                  client_feedback: bool = typer.Option(False, help="Also clients' /feedback labels (untrusted); a reviewer's label still wins."),
                  state_dir: Path = STATE, prediction_log: Optional[str] = LOG) -> None:
    """Reviewers' labels (and with --client-feedback clients' too) as extra training data (banking77's columns)."""
    import pandas as pd

    log = open_log(state_dir, prediction_log)
    rows = log.labelled(trust_feedback=client_feedback)
    log.close()
    pd.DataFrame(rows, columns=["text", "label", "source"]).rename(columns={"label": "category"}).to_csv(output, index=False)
    typer.echo(f"wrote {len(rows)} labelled texts to {output}")
