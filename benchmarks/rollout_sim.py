"""The unpaired A/B rollout (`rollout.shadow_share=0`) rehearsed end to end on the real server: a worse challenger must be rolled back,
a better one promoted; prints and saves the sample counts each verdict needed.

Two versions come from the tiny pipeline (the second trained on labels rotated among its six
intents: a genuinely wrong model). Traffic: the six intents' banking77 test texts, replayed with
fresh user keys; a share of predictions gets its true label back as feedback, as in production.
The policy is the demo profile's (or --set overrides), not the test's lenient one.

    python benchmarks/rollout_sim.py [--feedback-share 0.5] [--set rollout.min_labelled=100]
        -> benchmarks/results/rollout.json
"""
import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlflow import MlflowClient  # noqa: E402

from tests.release.conftest import release_for  # noqa: E402
from tests.release.test_rollout_server import build_two_versions  # noqa: E402
from tests.serving.test_server import MODEL, free_port, start_server, stop, wait_ready  # noqa: E402
from yanjin.config import load_config  # noqa: E402
from yanjin.pipelines.run import LocalState  # noqa: E402
from yanjin.registry import CHALLENGER, CHAMPION, alias_version  # noqa: E402
from yanjin.release.promotion import promote  # noqa: E402
from yanjin.release.rehearsal import rehearse  # noqa: E402
from yanjin.serving.auth import add_key  # noqa: E402
from yanjin.serving.predlog import PredictionLog  # noqa: E402


def summary(r, seconds: float) -> dict:
    last = r.checks[-1]
    return {"status": r.status, "requests": r.requests, "served_by": r.served_by, "feedback_labels": r.feedback,
            "checks": len(r.checks), "labelled_champion": last["labelled_champion"],
            "labelled_challenger": last["labelled_challenger"], "accuracy_champion": last["accuracy_champion"],
            "accuracy_challenger": last["accuracy_challenger"], "accuracy_diff_always_valid_95": last["accuracy_diff"],
            "reason": r.reason, "seconds": seconds,
            "steps": [(c["requests"], c["share"], c["decision"]) for c in r.checks if c["decision"] != "hold"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feedback-share", type=float, default=0.5)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    policy = load_config(args.profile, ["rollout.shadow_share=0"] + args.set).rollout   # the unpaired A/B
    data_dir = Path(os.environ.get("YANJIN_DATA", ROOT.parent / "shared" / "data" / "banking77"))
    with tempfile.TemporaryDirectory() as tmp:
        state = LocalState(Path(tmp) / "state")
        state.root.mkdir(parents=True)
        texts, labels = build_two_versions(state, data_dir)
        key = add_key(state.api_keys, "rehearsal", "reviewer", per_minute=100_000)  # the true labels come as reviews
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(state, port)
        try:
            assert wait_ready(url, proc), "server never became ready"
            client, log = MlflowClient(state.tracking_uri), PredictionLog(state.root / "predictions.db")
            t = time.perf_counter()
            release = release_for(client, state.ledger)
            worse = rehearse(release, log, url, MODEL, "2", policy, texts, labels, key, feedback_share=args.feedback_share,
                             poll_wait_s=0.6, labels_for="all")
            worse_s = time.perf_counter() - t
            promote(release, MODEL, "2", "benchmark: a weak champion to beat", expected="1", force=True)
            t = time.perf_counter()
            better = rehearse(release, log, url, MODEL, "1", policy, texts, labels, key, feedback_share=args.feedback_share,
                              poll_wait_s=0.6, seed=1, labels_for="all")
            better_s = time.perf_counter() - t
            result = {
                "worse_challenger_rolled_back": worse.status == "rolled_back",
                "better_challenger_promoted": better.status == "promoted" and alias_version(client, MODEL, CHAMPION) == "1",
                "worse": summary(worse, worse_s), "better": summary(better, better_s),
                "feedback_share": args.feedback_share, "policy": asdict(policy), "profile": args.profile,
            }
            log.close()
        finally:
            stop(proc)
    out = ROOT / "benchmarks" / "results" / "rollout.json"
    out.write_text(json.dumps(result, indent=2))
    for name in ("worse", "better"):
        s = result[name]
        print(f"{name} challenger: {s['status']} after {s['requests']} requests ({s['served_by'][CHALLENGER]} served "
              f"by it), labelled champion {s['labelled_champion']} / challenger {s['labelled_challenger']}, "
              f"steps {s['steps']}, {s['seconds']:.0f} s")
    print(f"worse_challenger_rolled_back={result['worse_challenger_rolled_back']} "
          f"better_challenger_promoted={result['better_challenger_promoted']}; wrote {out}")


if __name__ == "__main__":
    main()
