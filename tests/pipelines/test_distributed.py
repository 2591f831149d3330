"""Data-parallel training under real torchrun (gloo, 2 ranks on this machine): the same recipe as one
process, one MLflow record, and a run that survives a killed rank."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import psutil
import pytest

from yanjin import registry as R
from yanjin.components.stages import train_member, validate_and_split
from yanjin.config import load_config

# tiny's 108 training rows in 14 row groups (7 per rank), trained to convergence: at tiny's 3 epochs
# the test accuracy still swings with the data order (seeds 13/14/15 of one process: 0.971/0.958/0.958)
SETTINGS = ["distributed.row_group_rows=8", "train.epochs=6"]
LOSS_TOLERANCE = 0.05    # per-epoch mean training loss, 2 ranks vs 1 (it starts near 1.7; measured: at most 0.021)
ACCURACY_TOLERANCE = 0.005  # test accuracy, as the issue asks (measured: 0.9792 vs 0.9750, one text of 240)


def train(tmp: Path, data_dir: Path, ranks: int) -> dict:
    """One tiny V1 training through the stage the pipeline calls; its MLflow record and test accuracy."""
    from yanjin.components.train import predict_logits
    from yanjin.models.family import load_checkpoint
    from yanjin.models.tokenizer import TextTokenizer
    from yanjin.registry import TOKENIZER_FILE

    cfg = load_config("tiny", SETTINGS + [f"distributed.ranks={ranks}"])
    uri = f"sqlite:///{tmp}/mlflow.db"
    split = {name: str(tmp / f"{name}.parquet") for name in ("train", "val", "test")}
    v = validate_and_split(str(data_dir / "train.csv"), str(data_dir / "test.csv"), str(data_dir / "categories.json"),
                           cfg, uri, "distributed", str(tmp / "artifacts"), "test", split["train"], split["val"],
                           split["test"])
    trained = train_member(split["train"], split["val"], v.report["labels"], str(tmp / "domain"), cfg, uri, v.run_id,
                           str(tmp / "checkpoint"))
    import pandas as pd

    model, spec, labels = load_checkpoint(tmp / "checkpoint")
    test = pd.read_parquet(split["test"])
    logits = predict_logits(model, TextTokenizer(tmp / "checkpoint" / TOKENIZER_FILE, spec.max_length),
                            test["text"].tolist(), 64)
    accuracy = float((np.array(labels)[logits.argmax(1)] == test["label"].to_numpy()).mean())
    client = mlflow.MlflowClient(uri)
    run = client.get_run(v.run_id)
    losses = [m.value for m in sorted(client.get_metric_history(v.run_id, "train_loss"), key=lambda m: m.step)]
    return {"trained": trained, "accuracy": accuracy, "losses": losses, "run": run, "client": client}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    return {ranks: train(tmp_path_factory.mktemp(f"ranks{ranks}"), data_dir, ranks) for ranks in (1, 2)}


def test_two_ranks_follow_the_one_process_loss_curve(runs):
    one, two = runs[1]["losses"], runs[2]["losses"]
    assert len(one) == len(two) == 6
    assert two[-1] < two[0] * 0.5                      # it learns
    assert max(abs(a - b) for a, b in zip(one, two)) <= LOSS_TOLERANCE, (one, two)


def test_two_ranks_reach_the_same_accuracy(runs):
    assert abs(runs[1]["accuracy"] - runs[2]["accuracy"]) <= ACCURACY_TOLERANCE, (runs[1]["accuracy"],
                                                                                  runs[2]["accuracy"])


def test_one_mlflow_record_written_by_rank_zero(runs):
    two = runs[2]
    params = two["run"].data.params
    assert params["train.ranks"] == "2" and "train.ranks" not in runs[1]["run"].data.params
    # one value per epoch: rank 1 logged nothing
    assert [m.step for m in two["client"].get_metric_history(two["run"].info.run_id, "val_accuracy")] == [1, 2, 3, 4, 5, 6]
    runs_in_experiment = two["client"].search_runs([two["run"].info.experiment_id])
    assert len(runs_in_experiment) == 1
    assert two["trained"].lineage["checkpoint_sha256"] == R.checkpoint_sha256(
        two["client"].download_artifacts(two["run"].info.run_id, R.CHECKPOINT_ARTIFACT))


# -- a rank killed mid-epoch --------------------------------------------------------------------------
def rank_processes(local_rank: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "yanjin.components.launch" in " ".join(p.info["cmdline"] or []) and \
                    p.environ().get("LOCAL_RANK") == str(local_rank):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_a_killed_rank_resumes_from_its_checkpoint_and_registers_once(tmp_path, data_dir, runs):
    """The real CLI with 2 ranks and checkpoints every 2 steps; rank 1 is SIGKILLed once the first
    checkpoint exists (epoch 1, step 2 of 7). torchrun restarts the world, which continues from the
    checkpoint: the run ends with exactly one version and the uninterrupted run's figures."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"TMPDIR": str(tmp)}
    cli = [str(Path(sys.executable).with_name("yanjin")), "pipeline", "run", "--profile", "tiny", "--variant", "v1",
           "--data", str(data_dir), "--state-dir", str(tmp_path / "state"), "--verbose"]
    for setting in SETTINGS + ["distributed.ranks=2", "distributed.checkpoint_every=2"]:
        cli += ["--set", setting]
    log = tmp_path / "run.log"  # a file, not a pipe: an unread pipe would stall the run once full
    proc = subprocess.Popen(cli, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    killed, deadline = None, time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        if list(tmp.glob("yanjin-ranks-*/resume/train.pt")):
            victims = rank_processes(1)
            if victims:
                victims[0].send_signal(signal.SIGKILL)
                killed = victims[0].pid
        time.sleep(0.05)
    proc.wait(timeout=600)
    out = log.read_text()
    assert killed, "no checkpoint appeared, or rank 1 was not found, before the run ended:\n" + out[-3000:]
    assert proc.returncode == 0, out[-4000:]
    assert "resumed from" in out and "epoch 1, step" in out, out[-4000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}")
    versions = client.search_model_versions("name='banking77-v1'")
    assert len(versions) == 1
    run_id = versions[0].run_id
    losses = [m.value for m in sorted(client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)]
    # one value per epoch despite the restart, and the uninterrupted 2-rank curve to float precision
    assert losses == pytest.approx(runs[2]["losses"], abs=1e-4)


# -- a Kubeflow Trainer job's pods ------------------------------------------------------------------------
def test_the_trainer_job_entrypoint_trains_the_job_staged_in_mlflow(tmp_path, data_dir):
    """What every pod of the TrainJob runs (trainjob.render's command), here as 2 local ranks: the job and
    its inputs come from the MLflow run alone; rank 0 logs the checkpoint and the result back."""
    import json

    from yanjin.components.trainjob import stage_job

    cfg = load_config("tiny", SETTINGS[:1] + ["distributed.launcher=trainjob", "distributed.ranks=2"])
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    split = {name: str(tmp_path / f"{name}.parquet") for name in ("train", "val", "test")}
    v = validate_and_split(str(data_dir / "train.csv"), str(data_dir / "test.csv"), str(data_dir / "categories.json"),
                           cfg, uri, "trainjob", str(tmp_path / "artifacts"), "test", split["train"], split["val"],
                           split["test"])
    (tmp_path / "domain").mkdir()
    stage_job("train_member", {"train_set": split["train"], "val_set": split["val"], "labels": v.report["labels"],
                               "domain_dir": str(tmp_path / "domain"), "tracking_uri": uri, "run_id": v.run_id,
                               "out_dir": "/step/only/checkpoint", "teacher_version": None}, cfg, uri, v.run_id)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
        "MLFLOW_TRACKING_URI": uri, "YANJIN_JOB_DIR": str(tmp_path / "node")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "yanjin.components.launch", "--from-run", v.run_id, "train_member"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    result = json.loads(Path(client.download_artifacts(v.run_id, f"{R.DISTRIBUTED_JOB_ARTIFACT}/result.json")).read_text())
    assert result["best_val_accuracy"] > 0.8 and len(result["lineage"]["checkpoint_sha256"]) == 64
    assert result["lineage"]["checkpoint_sha256"] == R.checkpoint_sha256(
        client.download_artifacts(v.run_id, R.CHECKPOINT_ARTIFACT))
    assert client.get_run(v.run_id).data.params["train.ranks"] == "2"
