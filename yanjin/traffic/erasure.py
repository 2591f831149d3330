"""Retention and erasure that reach every copy of a customer's text.

A logged text is copied out of the log into retraining sets (files under `<state>/retraining`, kept in
MLflow as runs of the customer-data experiment), into the splits a pipeline run writes
(`<state>/kfp/…/validate-data`), into the training split each run keeps in MLflow (`training_data/` of its
customer-data run; of the run itself for runs logged before), and as a quote into drift reports
(`<state>/monitoring`, each drift check's run under `drift/`), where it is replaced by "[erased]". `purge` (texts older than the retention period) and `erase` (a customer's request:
prediction ids or a text) remove the rows from the log with their labels and shadow rows, and every row
holding the same text (case and spaces aside) from each of those copies; each rewritten MLflow run is
tagged with how many rows left it, so its recorded sha256 no longer matching is explained. The erasure is
recorded in the traffic store (what, when, by whom, which copies; never the text), with every registered
version whose training split held an erased text: a person decides whether to retrain it.

Copies are rewritten before the log rows go, so an interrupted erasure is finished by running it again.
"""
from __future__ import annotations

import html
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..registry import DATA_RUN_TAG, ERASED_ROWS_TAG, RETRAINING_SET_ARTIFACT, RUN_PARAM_TRAIN, TRAINING_DATA_ARTIFACT
from ..state import write_atomically
from .store import TrafficStore, normalised

log = logging.getLogger(__name__)
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
REPORT_SUFFIXES = (".json", ".html")      # drift reports quote the window's most novel texts
REPORTS_ARTIFACT = "drift"                # where a drift check's run keeps its reports (monitoring.job)
ERASED = "[erased]"
PURGE, ERASE = "purge", "erase"


@dataclass
class Erasure:
    action: str
    selector: str
    predictions: int = 0                                   # log rows removed, shadow rows included
    labels: int = 0
    files: dict[str, int] = field(default_factory=dict)   # path -> rows removed
    artifacts: dict[str, int] = field(default_factory=dict)   # runs:/<run>/<path> -> rows removed
    versions: list[str] = field(default_factory=list)     # "<model> v<N>": trained on an erased text
    record: int | None = None


def _parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq") or path.suffix.lower() not in TABLE_SUFFIXES


def _replace(path: Path, data: bytes) -> None:
    write_atomically(path, data, path.stat().st_mode & 0o777)   # the copy keeps its mode


def without(path: Path, keys: set[str]) -> int:
    """Remove from a table file every row with a text column holding one of `keys` (normalised): any column of
    strings, since a user's data names its text column as it likes. Returns the rows removed."""
    frame = pd.read_parquet(path) if _parquet(path) else pd.read_csv(path, dtype=str, keep_default_na=False)
    hit = pd.Series(False, index=frame.index)
    for column in frame.columns:
        if frame[column].dtype == object:
            hit |= frame[column].map(lambda v: isinstance(v, str) and normalised(v) in keys)
    if hit.any():
        kept = frame[~hit]
        _replace(path, kept.to_parquet(index=False) if _parquet(path) else kept.to_csv(index=False).encode())
    return int(hit.sum())


def scrub(path: Path, texts: set[str]) -> int:
    """Replace each quote of `texts` in a report file with "[erased]": a whole JSON string or a whole HTML
    cell, never a part of other text (erasing "card" must not touch "card_arrival"); returns how many."""
    content = path.read_text(encoding="utf-8")
    found = 0
    for text in texts:
        for form, by in ((json.dumps(text), json.dumps(ERASED)), (json.dumps(text, ensure_ascii=False), json.dumps(ERASED)),
                         (f">{html.escape(text)}<", f">{ERASED}<")):
            n = content.count(form)
            if n:
                content, found = content.replace(form, by), found + n
    if found:
        _replace(path, content.encode("utf-8"))
    return found


def _is_table(path: Path) -> bool:
    """CSV or Parquet by name, or Parquet by content (a Kubeflow output, e.g. validate-data/train_set, has no suffix)."""
    if path.suffix.lower() in TABLE_SUFFIXES:
        return True
    if path.suffix:
        return False
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


def rewritten(path: Path, keys: set[str], texts: set[str]) -> int:
    """A copy without the erased texts, rewritten in place: rows of a table (`keys`, normalised), quotes in a
    report (`texts`, as stored); how many went (0: untouched, or not a copy)."""
    if _is_table(path):
        return without(path, keys)
    return scrub(path, texts) if path.suffix.lower() in REPORT_SUFFIXES else 0


def erase_files(folder: Path, keys: set[str], texts: set[str]) -> dict[str, int]:
    """Every table and report file under `folder` without the erased texts; path -> rows or quotes removed."""
    if not folder.is_dir():
        return {}
    found = {str(p): rewritten(p, keys, texts) for p in sorted(folder.resolve().rglob("*")) if p.is_file()}
    return {path: n for path, n in found.items() if n}


def _runs(client):
    for exp in client.search_experiments():
        token = None
        while True:
            page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
            yield from page
            token = page.token
            if not token:
                break


def erase_artifacts(client, keys: set[str], texts: set[str]) -> tuple[dict[str, int], set[str]]:
    """Rewrite every run's training split, retraining set and drift reports without the erased texts; each run
    whose rows went is tagged with how many. Returns the artifacts rewritten (rows or quotes removed) and the
    runs whose training split held one."""
    out, trained_on = {}, set()
    with tempfile.TemporaryDirectory() as tmp:
        for run in _runs(client):
            run_id, rows = run.info.run_id, 0
            for folder in (TRAINING_DATA_ARTIFACT, RETRAINING_SET_ARTIFACT, REPORTS_ARTIFACT):
                for f in client.list_artifacts(run_id, folder):
                    if f.is_dir or Path(f.path).suffix.lower() not in TABLE_SUFFIXES + REPORT_SUFFIXES:
                        continue
                    local = client.download_artifacts(run_id, f.path, tmp)
                    removed = rewritten(Path(local), keys, texts)
                    if not removed:
                        continue
                    client.log_artifact(run_id, local, folder)   # the same path: the copy is replaced
                    out[f"runs:/{run_id}/{f.path}"] = removed
                    if folder != REPORTS_ARTIFACT:
                        rows += removed
                    if folder == TRAINING_DATA_ARTIFACT:
                        trained_on.add(run_id)
            if rows:
                client.set_tag(run_id, ERASED_ROWS_TAG, str(int(run.data.tags.get(ERASED_ROWS_TAG, "0")) + rows))
    return out, trained_on


def trained_on(client, runs: set[str], sets: set[str]) -> list[str]:
    """Registered versions whose run's training split held an erased text (`runs`), or whose training file
    (`data.train`, a path or a runs:/ URI) was one of the rewritten `sets`: the text may have gone to its
    validation split, which chose the version too."""
    found = []
    for mv in client.search_model_versions():
        run = client.get_run(mv.run_id).data if mv.run_id else None
        train = run.params.get(RUN_PARAM_TRAIN, "") if run else ""
        split = (run.tags.get(DATA_RUN_TAG) or mv.run_id) if run else ""   # the customer-data run holding its split
        if split in runs or (train and (train in sets or str(Path(train).resolve()) in sets)):
            found.append(f"{mv.name} v{mv.version}")
    return sorted(found)


def erase(store: TrafficStore, ids: list[str], texts: list[str], action: str, selector: str, by: str,
          folders: list[Path], client=None) -> Erasure:
    """Erase the predictions `ids` and every copy of their texts (and of `texts`, as given and as stored)
    from the table files under `folders` (retraining sets, the pipeline's step outputs), MLflow (`client`;
    None: the log and files only) and the log; record it."""
    quoted = {t for t in [*store.texts_of(ids), *texts] if t and t.strip()}
    keys = {normalised(t) for t in quoted}
    out = Erasure(action, selector)
    if keys:
        out.files = {k: v for folder in folders for k, v in erase_files(folder, keys, quoted).items()}
        if client is not None:
            out.artifacts, runs = erase_artifacts(client, keys, quoted)
            out.versions = trained_on(client, runs, {*out.files, *out.artifacts})
    out.predictions, out.labels = store.delete(ids)
    out.record = store.record_erasure(action, selector, by, (out.predictions, out.labels),
                                      {"files": out.files, "artifacts": out.artifacts}, out.versions)
    log.info("%s (%s) by %s: %d predictions, %d labels, %d files, %d artifacts", action, selector, by,
             out.predictions, out.labels, len(out.files), len(out.artifacts))
    return out
