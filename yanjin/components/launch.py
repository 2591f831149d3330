"""Handing a training stage to torchrun, and the entrypoint every rank runs.

The pipeline step writes a job file (the stage, its arguments, the resolved config), starts
`torchrun` with `distributed.ranks` processes and elastic restarts (`distributed.max_restarts`), and
reads back rank 0's result. Each rank runs `python -m yanjin.components.launch JOB`: it calls the
same stage function with its World, so one process and N ranks share every line of training code.
A lost rank makes torchrun stop the others and start the world again; the stage then continues from
the last resume checkpoint in the job's folder. On a cluster the same entrypoint runs in the pods of
a Kubeflow Trainer job (trainjob.py).
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ..config import PipelineConfig

STAGES = ("train_member", "prepare_domain")
JOB_FILE, RESULT_FILE, RESUME_DIR = "job.json", "result.json", "resume"


class RanksFailed(RuntimeError):
    """torchrun gave up: a rank failed more often than `distributed.max_restarts` allows."""


def write_job(folder: Path, stage: str, kwargs: dict, cfg: PipelineConfig) -> Path:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {STAGES}")
    job = {"stage": stage, "kwargs": kwargs, "config": cfg.to_json(),
           "resume_dir": str(folder / RESUME_DIR), "result": str(folder / RESULT_FILE)}
    path = folder / JOB_FILE
    path.write_text(json.dumps(job))
    return path


def torchrun_command(entry: list[str], ranks: int, max_restarts: int, python: str = sys.executable,
                     standalone: bool = True) -> list[str]:
    """torchrun running this module with `entry` on every rank: one node (`--standalone`, a private
    rendezvous on a free port), or the nodes of a Trainer job (torchrun reads PET_NNODES,
    PET_MASTER_ADDR... from the pod)."""
    return [python, "-m", "torch.distributed.run", *(["--standalone"] if standalone else []),
            f"--nproc-per-node={ranks}", f"--max-restarts={max_restarts}", "-m", "yanjin.components.launch", *entry]


def on_ranks(stage: str, kwargs: dict, cfg: PipelineConfig) -> dict:
    """Run `stage(**kwargs, world=...)` on the ranks `cfg.distributed` asks for; returns rank 0's result."""
    d = cfg.distributed
    if d.launcher == "trainjob":
        from .trainjob import run_trainjob

        return run_trainjob(stage, kwargs, cfg)
    with tempfile.TemporaryDirectory(prefix="yanjin-ranks-") as tmp:
        job = write_job(Path(tmp), stage, kwargs, cfg)
        print(f"{stage}: torchrun, {d.ranks} rank(s), up to {d.max_restarts} restart(s)"
              + (f", resume checkpoints every {d.checkpoint_every} steps" if d.checkpoint_every else ""), flush=True)
        done = subprocess.run(torchrun_command([str(job)], d.ranks, d.max_restarts))
        result = Path(tmp, RESULT_FILE)
        if done.returncode != 0 or not result.is_file():
            raise RanksFailed(f"{stage} on {d.ranks} rank(s) failed (torchrun exit {done.returncode}) after up to "
                              f"{d.max_restarts} restart(s); the ranks' errors are above")
        return json.loads(result.read_text())


def run_rank(job: dict, write_result) -> None:
    """What one rank does: join the world, run the stage on its shard; rank 0 hands over the result."""
    from . import stages
    from .device import choose
    from .distributed import World, join, leave, rank_placement

    world = World.from_env()
    cfg = PipelineConfig.from_json(job["config"])
    join(world, rank_placement(choose(cfg.compute), world).device, cfg.distributed.backend)
    try:
        result = getattr(stages, job["stage"])(**job["kwargs"], cfg=cfg, world=world, resume_dir=job["resume_dir"])
        if world.lead:
            write_result(json.dumps(dataclasses.asdict(result)))
    finally:
        leave(world)


def run_rank_from_run(tracking_uri: str, run_id: str, stage: str, workdir: Path) -> None:
    """A rank of a Trainer job: the job staged in the MLflow run (trainjob.stage_job), downloaded into
    `workdir`; rank 0 logs the result back there, beside the checkpoint the stage logs."""
    import mlflow

    from ..registry import DISTRIBUTED_JOB_ARTIFACT
    from .distributed import World
    from .trainjob import fetch_job

    rank_dir = workdir / f"rank{World.from_env().rank}"
    job = fetch_job(tracking_uri, run_id, rank_dir)
    if job["stage"] != stage:
        raise RuntimeError(f"the run {run_id} staged {job['stage']!r}, not {stage!r}")
    job["resume_dir"] = str(workdir / RESUME_DIR)  # one per node: torchrun restarts the node's ranks together
    client = mlflow.MlflowClient(tracking_uri)
    run_rank(job, lambda text: client.log_text(run_id, text, f"{DISTRIBUTED_JOB_ARTIFACT}/{RESULT_FILE}"))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--from-run"]:  # in a Trainer job's pod: python -m ... --from-run RUN_ID STAGE
        import os

        run_rank_from_run(os.environ["MLFLOW_TRACKING_URI"], argv[1], argv[2],
                          Path(os.environ.get("YANJIN_JOB_DIR", tempfile.gettempdir())) / f"yanjin-{argv[1]}")
        return
    job = json.loads(Path(argv[0]).read_text())
    run_rank(job, Path(job["result"]).write_text)


if __name__ == "__main__":
    main(sys.argv[1:])
