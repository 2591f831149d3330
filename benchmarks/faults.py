"""The fault scenarios of the hardening issue, against real servers, counted in one run.

- SIGTERM while clients send (a rolling update): acknowledged predictions missing from the log;
- a PostgreSQL outage shorter than the log's retry budget (rows lost), and a longer one (rows dropped, counted);
- the malformed-request table against the real server: answers of 5xx;
(two controllers on one rollout and a crashed holder's lease: benchmarks/release.py, against PostgreSQL and
an mlflow server with several users, into the same file);
- a bundle, a checkpoint and a training split with their stored bytes changed: how many were loaded;
- /feedback and /review without a key, with a guessed key, with a client's key on /review, and a client
  claiming to be a reviewer: how many were accepted as something they are not.

    python benchmarks/faults.py [--trials 5] [--before CHECKOUT]  ->  benchmarks/results/faults.json

--before names a checkout of an earlier commit (git worktree add /tmp/before 686adb5): the label
attempts are then also sent to that commit's server on the same registry, side by side.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from tests.integration import stack  # noqa: E402
from tests.serving.malformed import malformed_requests  # noqa: E402
from tests.serving.test_server import MODEL, free_port, sigterm_under_load, start_server, stop, wait_ready  # noqa: E402
from tests.tampering import copy_version, flip_byte, stored_bundle, stored_run_files, stored_split  # noqa: E402
from yanjin import registry as R  # noqa: E402
from yanjin.config import MonitorParams, load_config, with_variant  # noqa: E402
from yanjin.pipelines.run import LocalState, run_local  # noqa: E402
from yanjin.state import git_commit  # noqa: E402
from yanjin.release.policy import RolloutPolicy  # noqa: E402
from yanjin.serving.auth import add_key  # noqa: E402
from yanjin.serving.predlog import PredictionLog  # noqa: E402
from yanjin.traffic.store import Prediction  # noqa: E402

POLICY = RolloutPolicy(plan="10,50,100", shadow_share=0, min_labelled=40, min_step_requests=40, accuracy_margin=0.05, review_margin=0.1)


def sigterm(state: LocalState, folder: Path, trials: int) -> dict:
    lost, acked_total = 0, 0
    for t in range(trials):
        acknowledged, logged = sigterm_under_load(state, folder / f"sigterm-{t}.db")
        lost += len(set(acknowledged) - logged)
        acked_total += len(acknowledged)
    return {"sigterm_trials": trials, "sigterm_rows_acknowledged": acked_total, "sigterm_rows_lost": lost}


def outage() -> dict:
    def rows(n: int, start: int) -> list[Prediction]:
        return [Prediction(f"id-{i}", time.time(), f"text {i}", "l", 0.9, "m", "1", "v1", R.CHAMPION, 1.0, False)
                for i in range(start, start + n)]

    with stack.postgres(("predictions",)) as pg:
        log = PredictionLog(f"{pg}predictions", flush_seconds=0.05, retries=5, backoff_seconds=0.2)  # ~6 s budget
        with stack.outage(pg):
            log.append(rows(200, 0))
            time.sleep(2.0)
        log.flush(timeout=30)
        short = PredictionLog(f"{pg}predictions", flush_seconds=0.05, retries=1, backoff_seconds=0.1)  # ~0.1 s budget
        with stack.outage(pg):
            short.append(rows(50, 1000))
            short.flush(timeout=10)
        result = {"db_outage_seconds": 2.0, "db_outage_retry_budget_seconds": 6.2, "db_outage_rows": 200,
                  "db_outage_rows_lost": 200 - log.count(), "db_outage_rows_retried": log.stats.retried,
                  "long_outage_rows": 50, "long_outage_rows_dropped_counted": short.stats.dropped,
                  "long_outage_rows_lost_uncounted": 50 - short.stats.dropped - short.stats.written}
        log.close()
        short.close()
    return result


def malformed_and_auth(state: LocalState) -> dict:
    keys = {"client": add_key(state.api_keys, "faults-client", "client"),
            "reviewer": add_key(state.api_keys, "faults-reviewer", "reviewer")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(state, port, "max_chars=500", "max_items=16", "max_body_bytes=20000")
    try:
        assert wait_ready(url, proc), "server never became ready"
        cases = malformed_requests(max_chars=500, max_items=16, max_body_bytes=20000)
        codes = {}
        for what, body, content_type in cases:
            headers = {"content-type": content_type} if content_type else {}
            codes[what] = httpx.post(f"{url}/predict", content=body, headers=headers, timeout=30).status_code
        alive = httpx.post(f"{url}/predict", json={"items": [{"text": "still there?"}]}, timeout=30)
        pid = alive.json()[0]["prediction_id"]
        label = alive.json()[0]["label"]
        bearer = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
        attempts = {
            "feedback without a key": ("feedback", {}),
            "feedback with a guessed key": ("feedback", bearer("yj_" + "A" * 43)),
            "review without a key": ("review", {}),
            "review with a client's key": ("review", bearer(keys["client"])),
            "review with a guessed key": ("review", bearer("yj_" + "B" * 43)),
        }
        accepted = {what: httpx.post(f"{url}/{route}", json={"prediction_id": pid, "label": label}, headers=h,
                                     timeout=10).status_code for what, (route, h) in attempts.items()}
        spoof = httpx.post(f"{url}/feedback", json={"prediction_id": pid, "label": label}, timeout=10,
                           headers=bearer(keys["client"]) | {"x-yanjin-principal": "faults-reviewer:reviewer"})
        log = PredictionLog(state.prediction_log)
        history = log.label_history(pid)
        log.close()
    finally:
        stop(proc)
    return {"malformed_cases": len(cases), "malformed_5xx": sum(c >= 500 for c in codes.values()),
            "malformed_4xx": sum(400 <= c < 500 for c in codes.values()), "serving_after_malformed": alive.status_code == 200,
            "unauthenticated_attempts": len(attempts), "auth_answers": accepted,
            "unauthenticated_feedback_accepted": sum(200 <= c < 300 for c in accepted.values()),
            "client_posing_as_reviewer_trusted": sum(h["source"] == "review" for h in history),
            "labels_recorded": [(h["source"], h["given_by"]) for h in history], "spoof_status": spoof.status_code}


def labels_before(state: LocalState, checkout: Path, folder: Path) -> dict:
    """The same unauthenticated label attempts against an earlier commit's server (same registry)."""
    import sqlite3
    import subprocess

    from tests.integration.stack import exited, wait_http

    port, db = free_port(), folder / "before-predictions.db"
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "yanjin.cli", "serve", "--model", MODEL, "--state-dir",
                             str(state.root), "--port", str(port), "--prediction-log", str(db)],
                            env=os.environ | {"PYTHONPATH": str(checkout)}, cwd=checkout,  # bentoml imports from cwd
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_http(f"{url}/readyz", exited(proc, proc.stderr.read), 120), "the earlier server never became ready"
        result = httpx.post(f"{url}/predict", json={"items": [{"text": "my card has not arrived"}]}, timeout=30).json()[0]
        labels = [s["label"] for s in result["top_k"]] * 2
        codes = [httpx.post(f"{url}/feedback", json={"prediction_id": result["prediction_id"], "label": label},
                            timeout=10).status_code for label in labels[:5]]
    finally:
        stop(proc)
    with sqlite3.connect(db) as conn:
        kept = conn.execute("SELECT feedback_label FROM predictions WHERE id = ?", (result["prediction_id"],)).fetchone()
    return {"unauthenticated_attempts": len(codes), "unauthenticated_feedback_accepted": sum(200 <= c < 300 for c in codes),
            "labels_kept_of_accepted": 1 if kept and kept[0] else 0, "label_left": kept and kept[0]}


def tampered(state: LocalState, folder: Path) -> dict:
    from yanjin.components import stages
    from yanjin.monitoring.monitor import ServedMonitor

    client = MlflowClient(state.tracking_uri)
    loaded, refused = [], []

    def attempt(kind: str, load) -> None:
        try:
            load()
            loaded.append(kind)
        except R.TamperedArtifact:
            refused.append(kind)

    v = copy_version(client, MODEL, "1", "banking77-tampered-bundle")
    flip_byte(stored_bundle(client, "banking77-tampered-bundle", v) / R.ONNX_FILE)
    attempt("bundle (serving, gate)", lambda: R.download_version("banking77-tampered-bundle", v, folder / "b",
                                                                  state.tracking_uri))
    v = copy_version(client, MODEL, "1", "banking77-pro")
    flip_byte(stored_run_files(client, "banking77-pro", v) / R.CHECKPOINT_ARTIFACT / R.CHECKPOINT_WEIGHTS)
    attempt("checkpoint (Lite's teacher)", lambda: stages._teacher(with_variant(load_config("tiny"), "lite"),
                                                                   state.tracking_uri, str(folder / "t"), v))
    v = copy_version(client, MODEL, "1", "banking77-tampered-split")
    split = stored_split(client, "banking77-tampered-split", v)
    flip_byte(split)
    attempt("training split (drift monitor)", lambda: ServedMonitor.load(client, "banking77-tampered-split",
                                                                          MonitorParams(reference_size=50), v))
    return {"tampered_artifacts": len(loaded) + len(refused), "tampered_artifacts_loaded": len(loaded),
            "tampered_refused": refused}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--before", type=Path, help="a checkout of an earlier commit: its server gets the same label attempts")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "faults.json")
    args = ap.parse_args()
    data = Path(os.environ.get("YANJIN_DATA", ROOT.parent / "shared" / "data" / "banking77"))
    started = time.perf_counter()
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        state = LocalState(folder / "state")
        run_local(load_config("tiny"), str(data / "train.csv"), str(data / "test.csv"), str(data / "categories.json"),
                  state, None, "faults", adapt_corpus=[])
        os.environ["MLFLOW_TRACKING_URI"] = state.tracking_uri
        for name, scenario in (("malformed and auth", lambda: malformed_and_auth(state)),
                               ("sigterm", lambda: sigterm(state, folder, args.trials)),
                               ("db outage", outage),
                               ("tampered artifacts", lambda: tampered(state, folder))):
            t = time.perf_counter()
            figures = scenario()
            print(f"{name} ({time.perf_counter() - t:.0f} s): {json.dumps(figures)}", flush=True)
            result |= figures
        if args.before:
            result["before"] = {"commit": git_commit(args.before), **labels_before(state, args.before, folder)}
            print(f"the same label attempts, earlier server: {json.dumps(result['before'])}", flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(args.output.read_text()) if args.output.is_file() else {}   # benchmarks/release.py's keys stay
    args.output.write_text(json.dumps(kept | result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
