"""Data-parallel training on this machine: 2 torchrun ranks (gloo) against 1 process with the same
global batch, a run whose rank 1 is killed mid-epoch, and training throughput side by side.

    python benchmarks/distributed.py  ->  benchmarks/results/distributed.json

Every run is the CLI a user runs (`yanjin pipeline run --profile tiny --variant v1`), each in a fresh
state folder, one after another. Equivalence and resume use tiny trained to convergence (6 epochs,
row groups of 8 rows so each rank reads 7 of 14); throughput uses all 77 intents (20 rows each, one
epoch), where startup matters less. On 2 cores two ranks share the cores one process already uses
(torchrun gives each rank one thread), so no speed-up can show here: the ratio says what the
coordination costs, not what more machines would give.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import psutil

ROOT = Path(__file__).resolve().parent.parent
YANJIN = str(Path(sys.executable).with_name("yanjin"))
MODEL = "banking77-v1"
CONVERGED = ["train.epochs=6", "distributed.row_group_rows=8"]
# one epoch of 2 layers on 77 intents is a throughput run, not a candidate: the floors are off so it registers
WIDE = ["data.max_classes=0", "data.max_per_class=20", "train.epochs=1", "distributed.row_group_rows=64",
        "gate.min_accuracy=0", "gate.min_macro_f1=0", "gate.max_ece=1"]


def run(folder: Path, settings: list[str], kill_rank: int | None = None) -> dict:
    """One pipeline run; with `kill_rank`, SIGKILL that rank once the first resume checkpoint exists."""
    folder.mkdir(parents=True)
    (folder / "tmp").mkdir()
    cli = [YANJIN, "pipeline", "run", "--profile", "tiny", "--variant", "v1", "--state-dir", str(folder / "state"),
           "--verbose"] + [a for s in settings for a in ("--set", s)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"TMPDIR": str(folder / "tmp")}
    log = folder / "run.log"
    start = time.perf_counter()
    proc = subprocess.Popen(cli, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    killed = None
    while kill_rank is not None and killed is None and proc.poll() is None:
        if list((folder / "tmp").glob("yanjin-ranks-*/resume/train.pt")):
            victim = next((p for p in psutil.process_iter(["cmdline"]) if _rank_of(p) == kill_rank), None)
            if victim:
                victim.send_signal(signal.SIGKILL)
                killed = victim.pid
        time.sleep(0.05)
    proc.wait()
    seconds = time.perf_counter() - start
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cli)} failed ({proc.returncode}):\n{text[-4000:]}")
    client = mlflow.MlflowClient(f"sqlite:///{folder / 'state' / 'mlflow.db'}")
    versions = client.search_model_versions(f"name='{MODEL}'")
    run_ = client.get_run(versions[0].run_id)
    losses = [m.value for m in sorted(client.get_metric_history(run_.info.run_id, "train_loss"), key=lambda m: m.step)]
    epochs = len(losses)
    return {"test_accuracy": run_.data.metrics["test_accuracy"], "losses": [round(x, 5) for x in losses],
            "train_seconds": round(run_.data.metrics["train_seconds"], 2), "pipeline_seconds": round(seconds, 1),
            "samples_per_s": round(int(run_.data.params["data.n_train"]) * epochs / run_.data.metrics["train_seconds"], 1),
            "versions_registered": len(versions), "killed_pid": killed, "resumed": "resumed from" in text}


def _rank_of(p: psutil.Process) -> int | None:
    try:
        if "yanjin.components.launch" in " ".join(p.info["cmdline"] or []):
            return int(p.environ().get("LOCAL_RANK", -1))
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        pass
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "distributed.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT.parent) as tmp:
        base = Path(tmp)
        one = run(base / "one", CONVERGED + ["distributed.ranks=1"])
        two = run(base / "two", CONVERGED + ["distributed.ranks=2"])
        killed = run(base / "killed", CONVERGED + ["distributed.ranks=2", "distributed.checkpoint_every=2"], kill_rank=1)
        wide_one = run(base / "wide1", WIDE + ["distributed.ranks=1"])
        wide_two = run(base / "wide2", WIDE + ["distributed.ranks=2"])
    result = {
        "ranks": 2,
        "backend": "gloo",
        "cores": os.cpu_count(),
        "max_loss_diff_vs_1rank": round(max(abs(a - b) for a, b in zip(one["losses"], two["losses"])), 5),
        "accuracy_1rank": one["test_accuracy"],
        "accuracy_2ranks": two["test_accuracy"],
        "resume_ok": bool(killed["killed_pid"] and killed["resumed"] and killed["versions_registered"] == 1),
        "resume_accuracy_delta": round(killed["test_accuracy"] - two["test_accuracy"], 5),
        "resume_max_loss_diff_vs_uninterrupted": round(max(abs(a - b) for a, b in zip(killed["losses"], two["losses"])), 6),
        "samples_per_s_1rank": wide_one["samples_per_s"],
        "samples_per_s_2ranks": wide_two["samples_per_s"],
        "throughput_ratio_2ranks_vs_1": round(wide_two["samples_per_s"] / wide_one["samples_per_s"], 3),
        "wide_accuracy_1rank": wide_one["test_accuracy"],
        "wide_accuracy_2ranks": wide_two["test_accuracy"],
        "runs": {"one_rank": one, "two_ranks": two, "two_ranks_rank1_killed": killed, "wide_one_rank": wide_one,
                 "wide_two_ranks": wide_two},
        "settings": {"equivalence_and_resume": CONVERGED, "throughput": WIDE, "profile": "tiny"},
        "note": ("2 CPU cores: 1 process uses both (2 threads); 2 ranks get 1 thread each and add gradient "
                 "all-reduces, so the throughput ratio shows coordination cost, not scaling. Multi-node, NCCL "
                 "and the Kubeflow Trainer operator were not run here."),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
