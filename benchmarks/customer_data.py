"""Customer data as a data-protection officer audits it, against real PostgreSQL and the real server, each figure
over --trials trials (default 20), into benchmarks/results/faults.json beside the other fault figures:

- pii_stored_unredacted, redaction_recall, redaction_false_positive_rate: card numbers, IBANs, e-mails and phone
  numbers planted in real banking77 test texts (tests/traffic/planted.py) sent to /predict; what the log holds;
- rows_lost_silently: PostgreSQL stopped for 2 s while clients send (require_log): every answer the server
  acknowledged must be in the log afterwards; the refused ones got 503 with Retry-After;
- 5xx_on_db_lock: the labels table locked by another session for 0.5 s (shorter than a request's 1 s lock wait:
  no error at all) and for 3 s (503 with Retry-After, never 500) while reviewers post /review;
- keys_lost_concurrent_adds: 60 `keys add` at once from 8 processes;
- erased_rows_remaining: a reviewed text exported to a retraining set, stored in MLflow and logged as a run's
  training split, then `yanjin log erase --text`: rows left in the log, its labels, files and MLflow artifacts;
- pii_in_logs: planted identifiers found in the server's log and this process's log lines, including every
  database error path of the log (refused rows, NOT NULL with PostgreSQL's DETAIL, an outage, a locked write).

    python benchmarks/customer_data.py [--trials 20]
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import pandas as pd  # noqa: E402
import psycopg  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from tests.integration import stack  # noqa: E402
from tests.serving.test_server import MODEL, free_port, stop  # noqa: E402
from tests.traffic.planted import planted_set  # noqa: E402
from yanjin import registry as R  # noqa: E402
from yanjin.config import load_config  # noqa: E402
from yanjin.pipelines.run import LocalState, run_local  # noqa: E402
from yanjin.serving.auth import add_key, read_keys  # noqa: E402
from yanjin.serving.predlog import PredictionLog  # noqa: E402
from yanjin.traffic.store import Prediction, TrafficStore, normalised  # noqa: E402

SECRET = "second customer: my passport number is X1234567, card 4111 1111 1111 1111"


class Lines(logging.Handler):
    """Every log line this process writes, formatted as a log file would hold it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record) -> None:
        self.lines.append(self.format(record) + (record.exc_text or ""))


def serve(state: LocalState, log_url: str, port: int, stderr) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "yanjin.cli", "serve", "--model", MODEL, "--state-dir", str(state.root),
                             "--port", str(port), "--set", "require_log=true", "--set", "poll_seconds=1",
                             "--set", "open_predict=false"],
                            env=os.environ | {"YANJIN_PREDICTION_LOG": log_url}, stdout=stderr, stderr=stderr, text=True)


def logged(store: TrafficStore, ids: list[str], timeout: float = 30.0) -> dict[str, str]:
    """id -> stored text, once the server's writer has committed them."""
    import sqlalchemy as sa

    from yanjin.traffic.store import predictions

    deadline, found = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        with store.engine.connect() as conn:
            found = dict(conn.execute(sa.select(predictions.c.id, predictions.c.text).where(predictions.c.id.in_(ids))).all())
        if len(found) == len(ids):
            break
        time.sleep(0.2)
    return found


def redaction(url: str, auth: dict, store: TrafficStore, texts: list[str], trials: int) -> tuple[dict, list[str]]:
    stored_raw = planted_n = recalled = clean_n = clean_changed = 0
    values = []
    with httpx.Client(timeout=60, headers=auth) as http:
        for t in range(trials):
            planted = planted_set(texts, per_type=10, seed=100 + t)
            clean = texts[t * 40:(t + 1) * 40]
            sent = [p[0] for p in planted] + clean
            ids = []
            for i in range(0, len(sent), 32):
                ids += [r["prediction_id"] for r in http.post(f"{url}/predict", json={"items": [{"text": x} for x in sent[i:i + 32]]}).json()]
            stored = logged(store, ids)
            for pid, (text, kind, value) in zip(ids, planted):
                values.append(value)
                planted_n += 1
                kept = stored.get(pid, text)
                stored_raw += value in kept
                recalled += value not in kept and f"[{kind}]" in kept
            for pid, text in zip(ids[len(planted):], clean):
                clean_n += 1
                clean_changed += stored.get(pid, text) != text
    return ({"planted_identifiers": planted_n, "pii_stored_unredacted": stored_raw,
             "redaction_recall": round(recalled / planted_n, 4), "clean_texts": clean_n,
             "redaction_false_positive_rate": round(clean_changed / clean_n, 4)}, values)


def outage(url: str, auth: dict, pg: str, store: TrafficStore, trials: int) -> dict:
    answered, refused, other = [], 0, []
    for _ in range(trials):
        stopping = threading.Event()

        def client() -> None:
            nonlocal refused
            with httpx.Client(timeout=30, headers=auth) as http:
                while not stopping.is_set():
                    try:
                        r = http.post(f"{url}/predict", json={"items": [{"text": "has my transfer arrived?"}] * 4})
                    except httpx.HTTPError as e:
                        other.append(type(e).__name__)
                        continue
                    if r.status_code == 200:
                        answered.extend(x["prediction_id"] for x in r.json())
                    elif r.status_code == 503 and r.headers.get("retry-after"):
                        refused += 1
                        time.sleep(0.2)
                    else:
                        other.append(str(r.status_code))
                    time.sleep(0.05)
        threads = [threading.Thread(target=client) for _ in range(2)]
        for th in threads:
            th.start()
        time.sleep(1.0)
        with stack.outage(pg):
            time.sleep(2.0)
        time.sleep(3.0)
        stopping.set()
        for th in threads:
            th.join()
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/readyz", timeout=5).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
    found = logged(store, answered, timeout=60)
    return {"db_outage_trials": trials, "db_outage_answered": len(answered), "db_outage_refused_503": refused,
            "rows_lost_silently": len(set(answered) - set(found)), "db_outage_other_answers": sorted(set(other))}


def lock(url: str, reviewer: dict, pg: str, store: TrafficStore, client_auth: dict, trials: int) -> dict:
    short = {"5xx": 0, "200": 0}
    long = {"503_retry_after": 0, "500": 0, "other": 0}
    with httpx.Client(timeout=30) as http:
        for t in range(trials):
            pid = http.post(f"{url}/predict", json={"items": [{"text": "where is my card?"}]}, headers=client_auth).json()[0]
            logged(store, [pid["prediction_id"]])
            for held, tally in ((0.5, short), (3.0, long)):
                holder = psycopg.connect(f"{pg}predictions")
                holder.execute("BEGIN")
                holder.execute("LOCK TABLE labels IN ACCESS EXCLUSIVE MODE")
                threading.Timer(held, holder.rollback).start()
                r = http.post(f"{url}/review", json={"prediction_id": pid["prediction_id"], "label": pid["label"]},
                              headers=reviewer)
                time.sleep(max(0.0, held - 0.4))
                holder.close()
                if tally is short:
                    kind = "5xx" if r.status_code >= 500 else "200" if r.status_code == 200 else "other"
                    short[kind] = short.get(kind, 0) + 1
                elif r.status_code == 503 and r.headers.get("retry-after"):
                    long["503_retry_after"] += 1
                elif r.status_code >= 500:
                    long["500"] += 1
                else:
                    long["other"] += 1
    return {"db_lock_trials": trials, "db_lock_short_answers": short, "db_lock_long_answers": long,
            "5xx_on_db_lock": short["5xx"] + long["500"]}


def keys(folder: Path, trials: int) -> dict:
    lost = 0
    for t in range(trials):
        path = folder / f"keys-{t}.json"
        with ProcessPoolExecutor(8) as pool:
            tokens = list(pool.map(add_key, [path] * 60, [f"app-{i}" for i in range(60)], ["client"] * 60))
        stored = {k.sha256 for k in read_keys(path)}
        from yanjin.serving.auth import token_sha256
        lost += sum(token_sha256(tok) not in stored for tok in tokens)
    return {"keys_trials": trials, "keys_concurrent_adds": 60 * trials, "keys_lost_concurrent_adds": lost}


def erasure(state: LocalState, url: str, auth: dict, reviewer: dict, log_url: str, store: TrafficStore,
            trials: int) -> dict:
    import sqlalchemy as sa

    from yanjin.monitoring.retrain import RetrainingData, store_retraining_set
    from yanjin.traffic.store import labels, predictions

    client = MlflowClient(state.tracking_uri)
    remaining, copies = 0, 0
    with httpx.Client(timeout=30) as http:
        for t in range(trials):
            text = f"customer {t} asks: please close my account number {7000 + t} today"
            answers = http.post(f"{url}/predict", json={"items": [{"text": text}] * 3}, headers=auth).json()
            ids = [a["prediction_id"] for a in answers]
            logged(store, ids)
            for a in answers:
                http.post(f"{url}/review", json={"prediction_id": a["prediction_id"], "label": a["label"]}, headers=reviewer)
            state.retraining.mkdir(parents=True, exist_ok=True)
            path = state.retraining / f"set-{t}.csv"
            pd.DataFrame({"text": [text, "kept row"], "category": ["a", "b"]}).to_csv(path, index=False)
            store_retraining_set(client, MODEL, RetrainingData(path, 1, 1, {}), "benchmark")
            split = Path(tempfile.mkdtemp()) / R.TRAINING_DATA_FILE
            pd.DataFrame({"text": [text, "kept"], "label": ["a", "b"]}).to_parquet(split, index=False)
            R.keep_customer_rows(client, split, R.TRAINING_DATA_ARTIFACT, f"{MODEL} training split", {R.DATA_OF_TAG: MODEL})
            copies += 3 + 3 + 1 + 2   # log rows, reviewers' labels, the retraining file, two MLflow artifacts
            done = subprocess.run([sys.executable, "-m", "yanjin.cli", "log", "erase", "--text", text, "--state-dir",
                                   str(state.root)], capture_output=True, text=True,
                                  env=os.environ | {"YANJIN_PREDICTION_LOG": log_url})
            if done.returncode != 0:
                raise RuntimeError(done.stdout + done.stderr)
            key = normalised(text)
            with store.engine.connect() as conn:
                remaining += conn.execute(sa.select(sa.func.count()).select_from(predictions)
                                          .where(predictions.c.id.in_(ids))).scalar_one()
                remaining += conn.execute(sa.select(sa.func.count()).select_from(labels)
                                          .where(labels.c.prediction_id.in_(ids))).scalar_one()
            remaining += sum(normalised(v) == key for v in pd.read_csv(path)["text"])
            for r in client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000):
                for folder in (R.TRAINING_DATA_ARTIFACT, R.RETRAINING_SET_ARTIFACT):
                    for f in client.list_artifacts(r.info.run_id, folder):
                        local = client.download_artifacts(r.info.run_id, f.path, tempfile.mkdtemp())
                        frame = pd.read_parquet(local) if local.endswith(".parquet") else pd.read_csv(local)
                        remaining += sum(normalised(v) == key for c in frame.columns for v in frame[c] if isinstance(v, str))
    return {"erasure_trials": trials, "erasure_copies_made": copies, "erased_rows_remaining": remaining}


def error_paths(pg: str, folder: Path, trials: int) -> None:
    """The log's database error paths, each taken `trials` times, SECRET in every row (the log lines are read after)."""
    for t in range(trials):
        sqlite = PredictionLog(folder / f"p-{t}.db", flush_seconds=0.01)
        log = PredictionLog(f"{pg}predictions", flush_seconds=0.01, retries=1, backoff_seconds=0.05)
        row = lambda pid, **kw: Prediction(pid, time.time(), SECRET, kw.pop("label", "x"), 0.5, "m", "1", "v1",  # noqa: E731
                                           R.CHAMPION, 1.0, False)
        for target in (sqlite, log):
            target.append([row(f"dup-{t}")])
            target.flush()
            target.append([row(f"dup-{t}")])
            target.flush()
        log.append([row(f"null-{t}", label=None)])
        log.flush()
        sqlite.close()
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "faults.json")
    args = ap.parse_args()
    data = Path(os.environ.get("YANJIN_DATA", ROOT.parent / "shared" / "data" / "banking77"))
    texts = list(pd.read_csv(data / "test.csv")["text"])
    started = time.perf_counter()
    lines = Lines()
    logging.getLogger().addHandler(lines)
    logging.getLogger().setLevel(logging.INFO)
    result: dict = {"customer_data_trials": args.trials}
    with tempfile.TemporaryDirectory() as tmp, stack.postgres(("predictions",)) as pg:
        folder = Path(tmp)
        state = LocalState(folder / "state")
        run_local(load_config("tiny"), str(data / "train.csv"), str(data / "test.csv"), str(data / "categories.json"),
                  state, None, "customer-data", adapt_corpus=[])
        os.environ["MLFLOW_TRACKING_URI"] = state.tracking_uri
        client_key = {"Authorization": f"Bearer {add_key(state.api_keys, 'app', 'client', 100_000)}"}
        reviewer = {"Authorization": f"Bearer {add_key(state.api_keys, 'anna', 'reviewer', 100_000)}"}
        log_url = f"{pg}predictions".replace("postgresql://", "postgresql+psycopg://")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server_log = folder / "server.log"
        with server_log.open("w") as err:
            proc = serve(state, log_url, port, err)
            store = TrafficStore(log_url)
            try:
                assert stack.wait_http(f"{url}/readyz", stack.exited(proc, server_log.read_text)), "server never became ready"
                for name, scenario in (
                        ("redaction", lambda: redaction(url, client_key, store, texts, args.trials)),
                        ("outage", lambda: outage(url, client_key, pg, store, args.trials)),
                        ("lock", lambda: lock(url, reviewer, pg, store, client_key, args.trials)),
                        ("erasure", lambda: erasure(state, url, client_key, reviewer, log_url, store, args.trials)),
                        ("keys", lambda: keys(folder, args.trials)),
                        ("error paths", lambda: error_paths(pg, folder, args.trials))):
                    t = time.perf_counter()
                    figures = scenario()
                    if name == "redaction":
                        figures, values = figures
                        result["_planted_values"] = values
                    print(f"{name} ({time.perf_counter() - t:.0f} s): {json.dumps(figures)}", flush=True)
                    result |= figures or {}
            finally:
                stop(proc)
                store.close()
        planted = set(result.pop("_planted_values")) | {"X1234567", "4111 1111 1111 1111"}
        text = server_log.read_text() + "\n".join(lines.lines)
        result["log_lines_read"] = text.count("\n")
        # the database error paths really ran: their lines are there, with no customer text in them
        result["db_error_log_lines"] = sum("prediction log:" in line or "not recorded" in line for line in text.splitlines())
        result["pii_in_logs"] = sum(text.count(v) for v in planted)
    result["customer_data_seconds"] = round(time.perf_counter() - started, 1)
    kept = json.loads(args.output.read_text()) if args.output.is_file() else {}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(kept | result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
