"""`yanjin promote | rollback | history | rollout | select`: the release commands.
Configuration (rollout guardrails, prices) is read here, once."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import List, Optional

import typer

from ..registry import CHALLENGER, CHAMPION, FAMILY_RESULT, alias_version, family_experiment
from .options import LOG, PROFILE, SETS, STATE, TRACKING
from .options import client as _client
from .options import fail as _fail
from .options import prediction_log as _open_log
from .options import release as _release
from .options import profile as _config
from .options import state_of

rollout_app = typer.Typer(help="A/B rollout decided by measured outcomes, with automatic rollback.",
                          no_args_is_help=True)
controller_app = typer.Typer(help="The release controller: runs rollouts and approved promotions by itself.",
                             no_args_is_help=True)


def _errors():
    from ..registry.ledger import LedgerError
    from ..release.promotion import PromotionConflict, PromotionRefused
    from ..release.rollout import RolloutError

    return (LedgerError, PromotionConflict, PromotionRefused, RolloutError, ValueError)


def promote(
    model: str = typer.Argument(..., help="Registered model, e.g. banking77-lite."),
    version: str = typer.Argument(..., help="Version to point the alias at."),
    reason: str = typer.Option(..., help="Why: kept in the audit trail."),
    alias: str = typer.Option(CHAMPION, help="Alias to move."),
    expected: Optional[str] = typer.Option(None, help="Version you believe holds the alias now (default: the ledger's); "
                                                     "refused if it moved."),
    force: bool = typer.Option(False, help="Promote a version that did not pass its gates (recorded as forced)."),
    profile: str = PROFILE, set_: List[str] = SETS, state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Move an alias with compare-and-set in the release ledger; a promotion to champion needs the profile's
    approvals (release.approvals) from people other than you and the version's trainer."""
    from ..release.promotion import promote as do_promote

    policy = _config(profile, set_).release
    rel = _release(state_dir, tracking_uri, policy.lease_ttl_s)
    try:
        e = do_promote(rel, model, version, reason, alias, expected, force, policy.approvals)
    except _errors() as err:
        _fail(str(err))
    typer.echo(f"{model}@{alias}: v{e.from_version} -> v{e.to_version}" + (" (forced)" if e.forced else "")
               + f"  [{rel.principal}]")


def approve(
    model: str = typer.Argument(..., help="Registered model."),
    version: str = typer.Argument(..., help="Version you approve for champion."),
    reason: str = typer.Option(..., help="Why (e.g. the change ticket): kept in the audit trail and on the model card."),
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Approve a version for champion, as yourself (never its trainer or its proposer): the second pair of eyes."""
    from ..release.promotion import approve as do_approve

    rel = _release(state_dir, tracking_uri)
    try:
        e = do_approve(rel, model, version, reason)
    except _errors() as err:
        _fail(str(err))
    typer.echo(f"{model} v{version}: approved by {e.principal} (audit entry {e.seq}); the controller promotes it "
               f"once every approval the profile asks for is in (yanjin controller run --once)")


def rollback(
    model: str = typer.Argument(..., help="Registered model."),
    reason: str = typer.Option("rollback", help="Why: kept in the audit trail."),
    alias: str = typer.Option(CHAMPION, help="Alias to roll back."),
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Give the alias back to the version that held it before (walks back one promotion per call)."""
    from ..release.promotion import rollback as do_rollback

    try:
        e = do_rollback(_release(state_dir, tracking_uri), model, reason, alias)
    except _errors() as err:
        _fail(str(err))
    typer.echo(f"{model}@{alias}: v{e.from_version} -> v{e.to_version} (rolled back)")


def history(model: str = typer.Argument(..., help="Registered model."),
            verify: bool = typer.Option(False, "--verify", help="Check the whole audit chain (and its anchors in "
                                                                 "MLflow); exit 1 if any entry was deleted, edited or "
                                                                 "reordered."),
            state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING) -> None:
    """Every alias change made through yanjin: when, who (as authenticated), what, from -> to, why; and any
    alias moved outside yanjin."""
    from ..registry.mirror import anchor_problems
    from ..release.promotion import history as read_history

    rel = _release(state_dir, tracking_uri)
    try:
        entries = read_history(rel, model)
        drift = rel.drift(model)
    except _errors() as err:
        _fail(str(err))
    if entries:
        typer.echo(f"{'seq':>4}  {'when (UTC)':<19}  {'who':<24} {'action':<16} {'alias':<11} from -> to  why")
    for e in entries:
        typer.echo(f"{e.seq:>4}  {e.when}  {e.principal:<24} {e.action:<16} @{e.alias or '-':<10} "
                   f"{'#' + e.from_version if e.from_version else 'none'} -> {'#' + e.to_version if e.to_version else 'none'}"
                   f"{'  FORCED' if e.forced else ''}  {e.reason}")
    typer.echo(f"{len(entries)} change(s)")
    for d in drift:
        typer.secho(f"MIRROR: {d}", fg="yellow")
    if verify:
        problems = rel.ledger.verify() + anchor_problems(rel, rel.ledger.models())
        if problems:
            _fail("audit chain BROKEN:\n  " + "\n  ".join(problems))
        head = rel.ledger.head()
        typer.secho(f"audit chain verified: {head[0]} entries, head {head[1][:16]}…", fg="green")


def reconcile(
    model: str = typer.Argument(..., help="Registered model whose MLflow aliases were moved outside yanjin."),
    undo: bool = typer.Option(False, "--undo", help="Set MLflow's aliases back to the ledger's."),
    adopt: bool = typer.Option(False, "--adopt", help="Move the ledger to what MLflow shows (audited as adopted)."),
    reason: str = typer.Option(..., help="Why: kept in the audit trail."),
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Undo or adopt alias moves made outside yanjin (e.g. in the MLflow UI); nothing else moves them."""
    if undo == adopt:
        raise typer.BadParameter("give exactly one of --undo and --adopt", param_hint="--undo / --adopt")
    rel = _release(state_dir, tracking_uri)
    try:
        changed = rel.reconcile(model, adopt, reason)
    except _errors() as err:
        _fail(str(err))
    typer.echo("\n".join(changed) if changed else f"{model}: MLflow's aliases already match the ledger")


@controller_app.command("run")
def controller_run(
    interval: Optional[float] = typer.Option(None, min=0.1, help="Seconds between passes (default: the profile's "
                                                                 "release.controller_interval_s)."),
    once: bool = typer.Option(False, help="One pass, then exit (a CronJob, or to finish what waits now)."),
    models: List[str] = typer.Option([], "--model", help="Only this model (repeatable; default: every model the ledger knows)."),
    report_dir: Optional[Path] = typer.Option(None, help="Where finished rollouts' reports go (also logged to MLflow)."),
    profile: str = PROFILE, set_: List[str] = SETS, prediction_log: Optional[str] = LOG,
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Advance, promote (when approved) and roll back every rollout within policy, carry out approved
    promotions, finish yanjin's unconfirmed alias moves. Several may run: one leads (a lease in the ledger)."""
    import signal

    from ..release.controller import run

    stopped = []

    def stop(signum, frame):   # SIGTERM (a rolling update, `docker stop`): unwind, so every lease held is released
        stopped.append(signum)
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    config = _config(profile, set_)
    rel = _release(state_dir, tracking_uri, config.release.lease_ttl_s)
    log = _open_log(state_dir, prediction_log)
    try:
        run(rel, log, config.rollout, config.release, interval or config.release.controller_interval_s, once,
            typer.echo, models or None)
    except _errors() as err:
        _fail(str(err))
    finally:
        log.close()
        if stopped:   # leases released, log written: exit now, not after library threads (MLflow's) wind down
            os._exit(0)


def _print_assessment(a) -> None:
    for arm, s in ((CHAMPION, a.champion), (CHALLENGER, a.challenger)):
        typer.echo(f"  {arm:<10} v{s.version}: requests {s.requests}, labelled {s.labelled}, accuracy "
                   f"{s.accuracy:.3f}, review rate {s.review_rate:.1%}, failed {s.failed}, p95 {s.latency_p95_ms:.1f} ms")
    if a.paired is not None:
        p = a.paired
        typer.echo(f"  shadow: {p.pairs} texts scored by both, disagreement on {p.disagreements}; labels asked "
                   f"{p.asked}, given {p.labelled} (+{p.labelled_audit} audit), waiting {p.pending}, expired {p.expired}")
    typer.echo(f"  accuracy difference (challenger - champion), always-valid {1 - a.paired_alpha:.0%}: "
               f"[{a.accuracy.low:+.3f}, {a.accuracy.high:+.3f}]" + ("" if a.paired is not None else
                                                                      f"; challenger requests at this step: {a.step_requests}"))
    typer.echo(f"  decision: {a.decision}" + "".join(f"\n    - {r}" for r in a.reasons))


@rollout_app.command("start")
def rollout_start(
    model: str = typer.Argument(..., help="Registered model."),
    challenger: str = typer.Option(..., help="Version to roll out against @champion."),
    plan: Optional[str] = typer.Option(None, help="Challenger traffic per step in percent, e.g. 10,50,100 (default: the profile's)."),
    reason: str = typer.Option("A/B rollout", help="Why: kept in the audit trail."),
    force: bool = typer.Option(False, help="Roll out a version that did not pass its gates (recorded as forced)."),
    profile: str = PROFILE, set_: List[str] = SETS, state_dir: Path = STATE,
    tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Point @challenger at the version and give it the plan's first share; serving follows within a poll."""
    from ..release.rollout import start

    policy = _config(profile, set_ + ([f"rollout.plan='{plan}'"] if plan else [])).rollout
    try:
        state = start(_release(state_dir, tracking_uri), model, challenger, policy, reason, force)
    except _errors() as err:
        _fail(str(err))
    typer.echo(f"{model}: rolling out v{state.challenger} against champion v{state.champion}; "
               + ("shadow first, then " if state.phase == "shadow" else "")
               + f"plan {', '.join(f'{p:.0%}' for p in state.plan)}; now {state.where} (MLflow run {state.run_id})")


@rollout_app.command("status")
def rollout_status(
    model: str = typer.Argument(..., help="Registered model."),
    apply: bool = typer.Option(False, "--apply", help="Act on the decision: advance, roll back or promote."),
    report_dir: Optional[Path] = typer.Option(None, help="Where the final report goes (also logged to MLflow)."),
    profile: str = PROFILE, set_: List[str] = SETS, prediction_log: Optional[str] = LOG,
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Compare the arms on the prediction log and feedback labels; with --apply, carry out the decision."""
    from ..release.rollout import check

    config = _config(profile, set_)
    log = _open_log(state_dir, prediction_log)
    try:
        state, a = check(_release(state_dir, tracking_uri, config.release.lease_ttl_s), log, model, config.rollout,
                         apply, config.release.approvals, report_dir)
    except _errors() as err:
        _fail(str(err))
    finally:
        log.close()
    typer.echo(f"{model}: v{state.challenger} vs champion v{state.champion}, {state.where}, {state.status}")
    _print_assessment(a)


@rollout_app.command("abort")
def rollout_abort(
    model: str = typer.Argument(..., help="Registered model."),
    reason: str = typer.Option(..., help="Why: kept in the audit trail."),
    report_dir: Optional[Path] = typer.Option(None, help="Where the report goes (also logged to MLflow)."),
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Stop the running rollout: all traffic back to the champion, aliases unchanged."""
    from ..release.rollout import abort

    try:
        state = abort(_release(state_dir, tracking_uri), model, reason, report_dir)
    except _errors() as err:
        _fail(str(err))
    typer.echo(f"{model}: rollout of v{state.challenger} aborted; champion v{state.champion} takes all traffic")


@rollout_app.command("rehearse")
def rollout_rehearse(
    model: str = typer.Argument(..., help="Registered model, served at --url."),
    challenger: str = typer.Option(..., help="Version to roll out against @champion."),
    url: str = typer.Option("http://127.0.0.1:3000", help="The yanjin server serving MODEL."),
    data: Path = typer.Option(..., help="Labelled CSV to replay (columns text, category)."),
    labels_for: str = typer.Option("queue", help="queue: label what the review queue asks for, as reviewers do; all: "
                                   "label --feedback-share of every answer (an unpaired A/B's best case)."),
    feedback_share: float = typer.Option(1.0, min=0.0, max=1.0, help="With --labels-for all: share of answers labelled."),
    chunk: int = typer.Option(64, min=1, help="Requests between two checks."),
    max_requests: int = typer.Option(20_000, min=1, help="Stop replaying after this many requests."),
    output: Optional[Path] = typer.Option(None, help="Write every check as JSON here."),
    force: bool = typer.Option(False, help="Roll out a version that did not pass its gates."),
    api_key: str = typer.Option(..., envvar="YANJIN_API_KEY", help="A reviewer's API key: the true labels go to /review (yanjin keys add NAME --role reviewer)."),
    profile: str = PROFILE, set_: List[str] = SETS, prediction_log: Optional[str] = LOG,
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Replay labelled texts against the server, their true labels reported as a reviewer's, until the rollout is
    promoted or rolled back."""
    import pandas as pd

    from ..release.rehearsal import rehearse

    policy = _config(profile, set_).rollout
    frame = pd.read_csv(data)
    if not {"text", "category"} <= set(frame.columns):
        raise typer.BadParameter(f"{data} needs columns text and category, has {list(frame.columns)}", param_hint="--data")
    log = _open_log(state_dir, prediction_log)
    try:
        out = rehearse(_release(state_dir, tracking_uri), log, url, model, challenger, policy, list(frame["text"]),
                       list(frame["category"]), api_key, chunk, feedback_share, max_requests, force=force,
                       labels_for=labels_for)
    except _errors() as err:
        _fail(str(err))
    finally:
        log.close()
    if output:
        output.write_text(json.dumps(out.to_dict(), indent=2))
    typer.echo(f"{model} v{challenger}: {out.status} after {out.requests} requests ({out.served_by[CHALLENGER]} "
               f"by the challenger), {out.feedback} labels, {len(out.checks)} checks; {out.reason}")


@rollout_app.command("watch")
def rollout_watch(
    model: str = typer.Argument(..., help="Registered model."),
    interval: float = typer.Option(60.0, min=0.1, help="Seconds between checks."),
    report_dir: Optional[Path] = typer.Option(None, help="Where the final report goes (also logged to MLflow)."),
    profile: str = PROFILE, set_: List[str] = SETS, prediction_log: Optional[str] = LOG,
    state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Check and act every --interval seconds until the rollout is promoted or rolled back."""
    from ..release.rollout import RUNNING, check

    config = _config(profile, set_)
    rel = _release(state_dir, tracking_uri, config.release.lease_ttl_s)
    log = _open_log(state_dir, prediction_log)
    try:
        while True:
            try:
                state, a = check(rel, log, model, config.rollout, True, config.release.approvals, report_dir)
            except _errors() as err:
                _fail(str(err))
            typer.echo(f"{time.strftime('%H:%M:%S')} {state.where}: {a.decision} ({'; '.join(a.reasons)[:200]})")
            if state.status != RUNNING:
                break
            time.sleep(interval)
    finally:
        log.close()
    typer.echo(f"{model}: rollout of v{state.challenger} {state.status}")


def select(
    max_latency_ms: float = typer.Option(float("inf"), help="Ceiling on p95 batch-1 latency as served (ms)."),
    memory_gb: float = typer.Option(float("inf"), help="Memory available to one serving process (GB)."),
    min_accuracy: float = typer.Option(0.0, help="Floor on test accuracy."),
    calls_per_day: float = typer.Option(100_000, min=0, help="Expected requests per day."),
    months: int = typer.Option(24, min=1, help="Horizon for the total cost of ownership."),
    gpu: str = typer.Option("none", help="none, t4 or a100: which measured figures to use."),
    cost_per_error: float = typer.Option(0.0, min=0, help="What one wrong answer costs you (USD)."),
    candidates: Optional[str] = typer.Option(None, help="Only these variants, e.g. pro,v2 (default: all measured)."),
    model_name: str = typer.Option("banking77", help="Registered models are <model-name>-<variant>."),
    family_json: Optional[Path] = typer.Option(None, help="Family benchmark result to use (default: the latest logged "
                                                          "to MLflow experiment <model-name>-family)."),
    output_dir: Optional[Path] = typer.Option(None, help="Where select.json and select.png go (default: <state-dir>/select)."),
    profile: str = PROFILE, set_: List[str] = SETS, state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING,
) -> None:
    """Pick a family member: measured figures, your constraints, total cost of ownership."""
    from mlflow.exceptions import MlflowException

    from ..release.advisor import Constraints, Demand, advise, candidates_from_family, plot_cumulative

    if gpu not in ("none", "t4", "a100"):
        raise typer.BadParameter("expected none, t4 or a100", param_hint="--gpu")
    costs = _config(profile, set_).costs
    client = _client(state_dir, tracking_uri)
    family, source = _family_result(client, model_name, family_json)
    wanted = [v.strip() for v in candidates.split(",")] if candidates else None
    try:
        found = candidates_from_family(family, costs, wanted, gpu)
    except ValueError as err:
        _fail(str(err))
    registered, stale = [], []
    for c in found:  # only versions still registered; say so when the champion moved since the benchmark
        try:
            client.get_model_version(c.model, c.version)
        except MlflowException:  # deleted or renamed: not a candidate any more
            stale.append(f"{c.model} v{c.version} is no longer registered")
            continue
        registered.append(c)
        if (now := alias_version(client, c.model, CHAMPION)) != c.version:
            stale.append(f"{c.model}: figures are for v{c.version}, @champion is now v{now}; re-run yanjin bench family")
    if not registered:
        _fail(f"no registered version with measured figures in {source}")
    demand = Demand(calls_per_day, months, cost_per_error, costs.cpu_hour_usd, costs.days_per_month)
    advice = advise(registered, Constraints(max_latency_ms, memory_gb, min_accuracy), demand)

    typer.echo(f"figures: {source}" + "".join(f"\nnote: {s}" for s in stale))
    typer.echo(f"{'variant':<8}{'version':>8}{'accuracy':>10}{'p95 ms':>9}{'mem GB':>8}{'up front $':>12}"
               f"{'fees $/mo':>11}{'compute $/mo':>14}{'errors $/mo':>13}{f'TCO {months} mo $':>16}  fits")
    for c in sorted(registered, key=lambda c: advice.totals[c.variant]):
        m = advice.monthly[c.variant]
        fits = "; ".join(advice.rejected.get(c.variant, [])) or "yes"
        typer.echo(f"{c.variant:<8}{c.version:>8}{c.accuracy:>10.4f}{c.latency_ms_p95:>9.2f}{c.memory_mb / 1024:>8.2f}"
                   f"{c.initial_usd:>12,.0f}{m['fees']:>11,.0f}{m['compute']:>14,.2f}{m['errors']:>13,.0f}"
                   f"{advice.totals[c.variant]:>16,.0f}  {fits}")
    if not advice.ranked:
        _fail("no version meets every constraint")
    best = advice.ranked[0]
    typer.echo(f"\nchoose {best.variant} ({best.model} v{best.version}): lowest cost over {months} months "
               f"among the versions that fit")
    if len(advice.ranked) > 1:
        second = advice.ranked[1]
        crossing = advice.break_even_month
        typer.echo(f"break-even between {best.variant} and {second.variant}: "
                   + (f"month {crossing:.1f}" if crossing else "never (one is cheaper at every month)"))
    for p in advice.pairs:
        c = p["break_even_cost_per_error"]
        typer.echo(f"{p['variant']} (+{p['accuracy_gap']:.4f} accuracy) "
                   + (f"costs no more than {p['versus']} over {months} months, whatever an error costs" if c == 0 else
                      f"is cheaper than {p['versus']} over {months} months once an error costs more than ${c:,.2f}"))
    output_dir = output_dir or state_of(state_dir).select
    output_dir.mkdir(parents=True, exist_ok=True)
    plot_cumulative(registered, demand, output_dir / "select.png", advice)
    (output_dir / "select.json").write_text(json.dumps(_advice_json(advice, demand, source, stale), indent=2))
    typer.echo(f"wrote {output_dir / 'select.json'} and select.png")


def _family_result(client, model_name: str, explicit: Optional[Path]) -> tuple[dict, str]:
    if explicit is not None:
        if not explicit.is_file():
            raise typer.BadParameter(f"{explicit} does not exist", param_hint="--family-json")
        return json.loads(explicit.read_text()), str(explicit)
    import tempfile

    exp = client.get_experiment_by_name(family_experiment(model_name))
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1) if exp else []
    if not runs:
        _fail(f"no family benchmark logged for {model_name}: run `yanjin bench family` first (or pass --family-json)")
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(runs[0].info.run_id, FAMILY_RESULT, tmp)
        return json.loads(Path(path).read_text()), f"MLflow run {runs[0].info.run_id} (family.json)"


def _advice_json(advice, demand, source: str, notes: list[str]) -> dict:
    from dataclasses import asdict

    return {"demand": asdict(demand), "figures_from": source, "notes": notes,
            "ranking": [c.variant for c in advice.ranked], "rejected": advice.rejected,
            "tco_usd": advice.totals, "monthly_usd": advice.monthly,
            "candidates": {c.variant: asdict(c) for c in advice.ranked},
            "break_even_month_top_two": advice.break_even_month, "accuracy_vs_cost": advice.pairs}


ledger_app = typer.Typer(help="The release ledger's database.", no_args_is_help=True)


@ledger_app.command("init")
def ledger_init(state_dir: Path = STATE, tracking_uri: Optional[str] = TRACKING) -> None:
    """Create the ledger's tables and the audit's append-only guard (idempotent). On a cluster the grants Job
    runs it as the database's owner (YANJIN_LEDGER_URL), then grants the release role what it may do."""
    import os

    from ..registry.ledger import LEDGER_ENV, Ledger, ledger_url

    try:
        url = ledger_url(tracking_uri or state_of(state_dir).tracking_uri, os.environ.get(LEDGER_ENV))
        ledger = Ledger(url)
    except Exception as e:  # noqa: BLE001 - one message, no traceback
        _fail(f"release ledger: {type(e).__name__}: {str(e).splitlines()[0]}")
    typer.echo(f"release ledger ready ({ledger.dialect}); audit head {ledger.head()[0]}")
    ledger.close()
