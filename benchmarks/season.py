"""A season of one model line, end to end: the loop from traffic shift to promotion, and what a verdict costs.

  1. a champion V1 is trained (the profile's recipe) on clean banking77 and served by the real server;
  2. traffic shifts to typo-heavy text (a new mobile keyboard: neighbouring keys, dropped, doubled and swapped
     letters); reviewers label only what the review queue asks for;
  3. `yanjin monitor check --retrain` (calibrated drift, debounced trigger) retrains with the trusted labels;
  4. the real `yanjin controller run` starts the new challenger's rollout: shadow, paired verdict, canary,
     promotion, with reviewers again labelling only what the queue asks for;
  5. accuracy on held-out shifted text (typo'd banking77 test texts, never sent) before and after.
Then two controls, trained by the same pipeline: a deliberately worse candidate (few examples, one epoch) and an
equally good one (the champion's recipe, another seed). Their verdicts are replayed over >= 20 seeded orders of
the shifted traffic from the real versions' real predictions, with the controller's own decision code: the
paired shadow test (labels only where the review queue asks) beside the current unpaired A/B (each arm scored
on its own texts, every answer labelled: its best case), at the same alpha and margin.

    python benchmarks/season.py [--profile demo] [--runs 20]      (make bench-season)
        -> benchmarks/results/season.json
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import pandas as pd  # noqa: E402

from tests.integration.stack import free_port, stop  # noqa: E402
from yanjin.config import load_config  # noqa: E402
from yanjin.pipelines.run import LocalState, run_local  # noqa: E402
from yanjin.registry import CHALLENGER, CHAMPION, alias_version, client as registry_client  # noqa: E402
from yanjin.registry.ledger import Ledger  # noqa: E402
from yanjin.release.paired import NON_INFERIOR, PENDING, WORSE, Pair, paired_estimate  # noqa: E402
from yanjin.release.rehearsal import review_what_is_asked  # noqa: E402
from yanjin.release.sequential import confidence_sequence  # noqa: E402
from yanjin.serving.auth import add_key  # noqa: E402
from yanjin.serving.client import post  # noqa: E402
from yanjin.serving.predlog import PredictionLog  # noqa: E402
from yanjin.traffic.sampling import review_selection  # noqa: E402
from yanjin.serving.watcher import load_verified  # noqa: E402

MODEL = "banking77-v1"
NEIGHBOURS = dict(zip("qwertyuiopasdfghjklzxcvbnm", [
    "wa", "qes", "wrd", "etf", "ryg", "tuh", "yij", "uok", "ipl", "o", "qsz", "awdx", "sefc", "drgv", "fthb", "gyjn",
    "hukm", "jil", "kp", "asx", "zdc", "xfv", "cgb", "vhn", "bjm", "nk"]))


def typo(text: str, rng: random.Random, rate: float = 0.08) -> str:
    """A text as typed on a cramped keyboard: each letter, with `rate`, hits a neighbour, is dropped, doubled or
    swapped with the next."""
    chars, out, i = list(text), [], 0
    while i < len(chars):
        c = chars[i]
        if c.lower() in NEIGHBOURS and rng.random() < rate:
            kind = rng.randrange(4)
            if kind == 0:
                out.append(rng.choice(NEIGHBOURS[c.lower()]))
            elif kind == 2:
                out += [c, c]
            elif kind == 3 and i + 1 < len(chars):
                out += [chars[i + 1], c]
                i += 1
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def yanjin(state: LocalState, *args: str, profile: str, timeout: float = 3600) -> str:
    cmd = [sys.executable, "-m", "yanjin.cli", *args, "--state-dir", str(state.root), "--profile", profile]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return done.stdout


class Traffic:
    """Clients over HTTP (an app key) and a reviewer who labels what the review queue asks for."""

    def __init__(self, url: str, app_key: str, reviewer_key: str, log: PredictionLog, truth: dict[str, str]) -> None:
        self.url, self.log, self.truth = url, log, truth
        self.app = httpx.Client(timeout=60, headers={"Authorization": f"Bearer {app_key}"})
        self.reviewer = httpx.Client(timeout=60, headers={"Authorization": f"Bearer {reviewer_key}"})
        self.requests = self.asked = self.given = 0
        self.by_id: dict[str, str] = {}   # the true label per prediction id (the log keeps texts redacted)

    def send(self, texts: list[str], batch: int = 32) -> list[dict]:
        answers = []
        for i in range(0, len(texts), batch):
            answers += post(self.app, f"{self.url}/predict", {"items": [{"text": t} for t in texts[i:i + batch]]}).json()
        self.by_id |= {a["prediction_id"]: self.truth[t] for a, t in zip(answers, texts)
                       if a["prediction_id"] and t in self.truth}
        self.requests += len(texts)
        return answers

    def review(self) -> int:
        """Label every item the queue asks for whose truth the reviewer knows (held-out texts are never sent)."""
        time.sleep(0.3)   # the shadow scorer logs its pairs just after the answers
        n = review_what_is_asked(self.reviewer, self.url, self.log, self.by_id, limit=100_000)
        self.given += n
        return n


def accuracy(state: LocalState, version: str, texts: list[str], labels: list[str]) -> tuple[float, list[str]]:
    """A registered version's accuracy on texts, through the same verified ONNX model serving loads."""
    import mlflow

    mlflow.set_tracking_uri(state.tracking_uri)
    model = load_verified(MODEL, version)
    probs = model.classifier.predict_proba(texts, batch_size=64)
    predicted = [model.classifier.labels[i] for i in probs.argmax(axis=1)]
    return sum(p == t for p, t in zip(predicted, labels)) / len(labels), predicted


def shadow_verdict(state: LocalState, raw: dict | None) -> dict:
    """What the shadow comparison had seen at its last check (the verdict's), from the rollout's MLflow run."""
    if not raw:
        return {}
    client = registry_client(state.tracking_uri)
    last = {}
    for key in ("shadow_pairs", "shadow_disagreements", "shadow_disagreements_labelled", "shadow_labels_asked",
                "shadow_labels_given", "shadow_diff",
                "shadow_diff_low", "shadow_diff_high"):
        history = client.get_metric_history(raw["run_id"], key)
        if history:
            last[key] = max(history, key=lambda m: m.step).value
    return last


# -- the controls' verdicts, replayed --------------------------------------------------------------------------
def paired_labels_to_verdict(champ: list[str], cand: list[str], truth: list[str], policy, seed: int,
                             chunk: int = 64) -> tuple[str, int]:
    rng = random.Random(seed)
    order = rng.sample(range(len(truth)), len(truth))
    pairs: list[Pair] = []
    labelled = 0
    for start in range(0, len(order), chunk):
        for i in order[start:start + chunk]:
            reason, p = review_selection(champ[i], cand[i], False, policy.disagreement_p, policy.audit_p, rng.random())
            pairs.append(Pair(champ[i], cand[i], truth[i] if reason else None, reason is not None, p, 0.0))
            labelled += reason is not None
        e = paired_estimate(pairs, 0.0, policy.accuracy_margin, policy.alpha, policy.tau, policy.label_wait_s)
        if e.decision != PENDING:
            return e.decision, labelled
        if e.labelled >= policy.label_budget:
            return "inconclusive", labelled
    return "no verdict", labelled


def unpaired_labels_to_verdict(champ: list[str], cand: list[str], truth: list[str], policy, seed: int,
                               chunk: int = 64) -> tuple[str, int]:
    """The A/B as it was: each text answered by one arm (50/50, its best split), every answer labelled, the
    arms' accuracies compared by the always-valid two-proportion test."""
    rng = random.Random(seed)
    order = rng.sample(range(len(truth)), len(truth))
    k = {0: 0, 1: 0}
    n = {0: 0, 1: 0}
    for start in range(0, len(order), chunk):
        for i in order[start:start + chunk]:
            arm = rng.random() < 0.5
            n[arm] += 1
            k[arm] += (cand[i] if arm else champ[i]) == truth[i]
        d = confidence_sequence(k[0], n[0], k[1], n[1], policy.alpha, policy.tau)
        if min(n.values()) >= 30 and d.high < 0:
            return WORSE, n[0] + n[1]
        if min(n.values()) >= policy.min_labelled and d.low > -policy.accuracy_margin:
            return NON_INFERIOR, n[0] + n[1]
    return "no verdict", n[0] + n[1]


def controls(state: LocalState, config, data_dir: Path, commit: str, pool: tuple[list[str], list[str]],
             champion_version: str, runs: int, args) -> dict:
    """Train the worse and the equal control, predict the shifted pool once each, replay `runs` seeded orders."""
    test, cats = str(data_dir / "test.csv"), str(data_dir / "categories.json")
    permissive = ["gate.min_accuracy=0", "gate.min_macro_f1=0", "gate.max_ece=1", "gate.min_improvement=-1"]
    made = {}
    for name, overrides in (("worse", ["data.max_per_class=12", "train.epochs=1"] + permissive),
                            ("equal", ["train.seed=14"] + permissive)):
        t = time.perf_counter()
        outcome = run_local(load_config(args.profile, overrides + args.set), str(data_dir / "train.csv"), test, cats,
                            state, None, commit, adapt_corpus=[])
        made[name] = {"version": outcome.version, "train_seconds": round(time.perf_counter() - t, 1)}
    texts, truth = pool
    _, champ = accuracy(state, champion_version, texts, truth)
    policy = config.rollout
    out = {"pool_texts": len(texts), "label_budget_when_no_verdict": len(texts), "champion_version": champion_version}
    for name, m in made.items():
        acc, cand = accuracy(state, m["version"], texts, truth)
        # "no verdict" before the traffic ran out counts as the whole budget: every text of the pool labelled
        budget = lambda run: run if run[0] != "no verdict" else (run[0], len(truth))   # noqa: E731
        paired = [budget(paired_labels_to_verdict(champ, cand, truth, policy, seed)) for seed in range(runs)]
        unpaired = [budget(unpaired_labels_to_verdict(champ, cand, truth, policy, seed)) for seed in range(runs)]
        out[name] = m | {
            "accuracy_on_shifted": acc, "champion_accuracy_on_shifted": sum(c == t for c, t in zip(champ, truth)) / len(truth),
            "disagreement_rate": sum(a != b for a, b in zip(champ, cand)) / len(truth),
            "paired_verdicts": {v: sum(d == v for d, _ in paired) for v in {d for d, _ in paired}},
            "unpaired_verdicts": {v: sum(d == v for d, _ in unpaired) for v in {d for d, _ in unpaired}},
            "labels_to_verdict_paired": statistics.median(n for _, n in paired),
            "labels_to_verdict_unpaired": statistics.median(n for _, n in unpaired),
            "paired_runs": [list(r) for r in paired], "unpaired_runs": [list(r) for r in unpaired]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--set", action="append", default=[], help="profile overrides for every run (e.g. rollout.*)")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "season.json")
    args = ap.parse_args()
    data_dir = Path(os.environ.get("YANJIN_DATA", ROOT.parent / "shared" / "data" / "banking77"))
    config = load_config(args.profile, args.set)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    rng = random.Random(0)
    train, test = pd.read_csv(data_dir / "train.csv"), pd.read_csv(data_dir / "test.csv")
    known = sorted(json.loads((data_dir / "categories.json").read_text()))
    if config.data.max_classes:   # a smoke profile's model knows only the first intents
        known = known[:config.data.max_classes]
        train, test = train[train["category"].isin(known)], test[test["category"].isin(known)]
    shuffled = train.sample(frac=1.0, random_state=0).reset_index(drop=True)
    n = min(3000, len(shuffled) // 2)   # the texts of the shift, then those of the rollout
    gather = [(typo(t, rng), c) for t, c in zip(shuffled["text"][:n], shuffled["category"][:n])]
    later = [(typo(t, rng), c) for t, c in zip(shuffled["text"][n:], shuffled["category"][n:])]
    held_out = [(typo(t, rng), c) for t, c in zip(test["text"], test["category"])]   # never sent: before/after
    typists = [random.Random(seed) for seed in range(1, 5)]   # the controls' traffic: 4 typings of each test text
    pool = [(typo(t, r), c) for r in typists for t, c in zip(test["text"], test["category"])]
    truth = dict(gather + later)
    stages, t0 = {}, time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        state = LocalState(Path(tmp) / "state")
        state.root.mkdir(parents=True)
        overrides = sum([["--set", s] for s in args.set], [])
        t = time.perf_counter()
        champion = run_local(config, str(data_dir / "train.csv"), str(data_dir / "test.csv"),
                             str(data_dir / "categories.json"), state, None, commit, adapt_corpus=[])
        stages["train_champion"] = {"seconds": round(time.perf_counter() - t, 1), "version": champion.version}
        clean_acc, _ = accuracy(state, champion.version, list(test["text"]), list(test["category"]))
        before, _ = accuracy(state, champion.version, [t for t, _ in held_out], [c for _, c in held_out])
        app_key = add_key(state.api_keys, "app", "client", per_minute=1_000_000)
        reviewer_key = add_key(state.api_keys, "reviewers", "reviewer", per_minute=1_000_000)
        test[["text"]].to_csv(Path(tmp) / "clean.csv", index=False)
        yanjin(state, "monitor", "calibrate", MODEL, "--traffic", str(Path(tmp) / "clean.csv"), *overrides,
               profile=args.profile)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "yanjin.cli", "serve", "--model", MODEL, "--state-dir",
                                   str(state.root), "--port", str(port), "--set", "poll_seconds=1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        controller = None
        log = PredictionLog(state.root / "predictions.db")
        try:
            for _ in range(240):
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            traffic = Traffic(url, app_key, reviewer_key, log, truth)
            window = config.monitor.window

            # clean traffic, then the shift: a drift check after every window, retraining when the trigger fires
            t = time.perf_counter()
            traffic.send(list(test["text"][:window]))
            checks = [yanjin(state, "monitor", "check", MODEL, "--retrain", *overrides, profile=args.profile)]
            shift_start = traffic.requests
            retrained = None
            for w in range(0, len(gather), window):
                traffic.send([t for t, _ in gather[w:w + window]])
                traffic.review()
                checks.append(yanjin(state, "monitor", "check", MODEL, "--retrain", *overrides, profile=args.profile))
                retrained = alias_version(registry_client(state.tracking_uri), MODEL, CHALLENGER)
                if retrained:
                    break
            stages["shift_to_retrained"] = {
                "seconds": round(time.perf_counter() - t, 1), "requests": traffic.requests - shift_start,
                "labels_given": traffic.given, "drift_checks": len(checks), "retrained_version": retrained,
                "check_lines": [c.strip().splitlines()[0] for c in checks]}
            if not retrained:
                raise RuntimeError("the drift trigger never retrained (or the retrained version failed its gate): "
                                   + " | ".join(c.strip()[-300:] for c in checks[-3:]))

            # the controller takes it from here: shadow, verdict, canary, promotion
            t, start_requests, start_given = time.perf_counter(), traffic.requests, traffic.given
            controller = subprocess.Popen([sys.executable, "-m", "yanjin.cli", "controller", "run", "--interval", "2",
                                           "--state-dir", str(state.root), "--profile", args.profile, *overrides],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            ledger = Ledger(f"sqlite:///{state.ledger}")
            phases, status, i = {}, "running", 0
            while traffic.requests - start_requests < 60_000:
                chunk = [t for t, _ in later[i % len(later):i % len(later) + 64]]
                i += 64
                traffic.send(chunk)
                traffic.review()
                raw = ledger.rollout(MODEL)
                if raw and raw[CHALLENGER] == retrained:
                    phase = raw.get("phase", "canary") + ("" if raw.get("phase") == "shadow" else f" {raw['plan'][raw['step']]:.0%}")
                    phases.setdefault(phase, {"requests": traffic.requests - start_requests,
                                              "labels_given": traffic.given - start_given,
                                              "seconds": round(time.perf_counter() - t, 1)})
                    status = raw["status"]
                    if status != "running":
                        break
            stages["rollout"] = {"status": status, "reason": (raw or {}).get("reason", ""), "phases_entered": phases,
                                 "shadow_verdict": shadow_verdict(state, raw),
                                 "requests": traffic.requests - start_requests,
                                 "labels_given": traffic.given - start_given, "seconds": round(time.perf_counter() - t, 1)}
        finally:
            if controller is not None:
                controller.terminate()
                try:
                    controller_out = controller.communicate(timeout=30)[0]
                except subprocess.TimeoutExpired:   # said in the result, never lost with it
                    controller.kill()
                    controller_out = controller.communicate()[0] + "\nnot exited 30 s after SIGTERM: killed"
                stages.setdefault("rollout", {})["controller_lines"] = controller_out.strip().splitlines()[-12:]
            stop(server)
            log.close()
        new_champion = alias_version(registry_client(state.tracking_uri), MODEL, CHAMPION)
        after, _ = accuracy(state, new_champion, [t for t, _ in held_out], [c for _, c in held_out])
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".loop.json").write_text(json.dumps(   # kept should the controls fail
            {"stages": stages, "accuracy_before": before, "accuracy_after": after, "promoted_version": new_champion},
            indent=2))
        t = time.perf_counter()
        ctl = controls(state, config, data_dir, commit, ([t for t, _ in pool], [c for _, c in pool]),
                       champion.version, args.runs, args)
        stages["controls"] = {"seconds": round(time.perf_counter() - t, 1)}

    worse, equal = ctl["worse"], ctl["equal"]
    paired_median = statistics.median([n for _, n in worse["paired_runs"]] + [n for _, n in equal["paired_runs"]])
    unpaired_median = statistics.median([n for _, n in worse["unpaired_runs"]] + [n for _, n in equal["unpaired_runs"]])
    result = {
        "profile": args.profile, "overrides": args.set, "commit": commit, "cores": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "policy": {k: getattr(config.rollout, k) for k in ("accuracy_margin", "alpha", "tau", "shadow_share",
                                                            "disagreement_p", "audit_p", "label_budget", "plan")},
        "champion_version": champion.version, "promoted_version": new_champion,
        "accuracy_clean_test": clean_acc, "accuracy_before": before, "accuracy_after": after,
        "labels_asked_and_given": traffic.given, "requests": traffic.requests, "stages": stages,
        "labels_to_verdict_paired": paired_median, "labels_to_verdict_unpaired": unpaired_median,
        "label_ratio_unpaired_over_paired": unpaired_median / paired_median if paired_median else None,
        "worse_control_runs": len(worse["paired_runs"]),
        "wrong_promotions": sum(d == NON_INFERIOR for d, _ in worse["paired_runs"]),
        "wrong_promotions_unpaired": sum(d == NON_INFERIOR for d, _ in worse["unpaired_runs"]),
        "controls": ctl, "seconds_total": round(time.perf_counter() - t0, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    args.output.with_suffix(".loop.json").unlink(missing_ok=True)
    print(json.dumps({k: v for k, v in result.items() if k not in ("controls", "stages")}, indent=2))


if __name__ == "__main__":
    main()
