"""The pieces of data-parallel training that need no second process: shards, settings, resume files,
and the Kubeflow Trainer job manifest, validated offline against the Trainer's API schema."""
import copy
from pathlib import Path

import pandas as pd
import pytest
import torch

from yanjin.components.data import DataError
from yanjin.components.distributed import World, read_shard, row_group_shard, write_split
from yanjin.components.resume import Resume
from yanjin.components.trainjob import ManifestInvalid, job_name, job_state, render, shape_for, validate
from yanjin.config import ConfigError, load_config


# -- shards ---------------------------------------------------------------------------------------------
def test_row_groups_split_contiguously_and_balanced_by_rows():
    sizes = [8] * 13 + [4]                       # tiny's 108 rows in row groups of 8
    shards = [row_group_shard(sizes, World(r, 2)) for r in range(2)]
    assert shards[0] + shards[1] == list(range(14))
    rows = [sum(sizes[g] for g in s) for s in shards]
    assert abs(rows[0] - rows[1]) <= 8
    assert row_group_shard(sizes, World()) == list(range(14))


def test_each_rank_reads_only_its_row_groups(tmp_path):
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": ["a"] * 100})
    write_split(frame, tmp_path / "s.parquet", 10)
    parts = [read_shard(tmp_path / "s.parquet", World(r, 3)) for r in range(3)]
    assert sorted(sum((p["text"].tolist() for p in parts), [])) == sorted(frame["text"])
    assert all(25 <= len(p) <= 40 for p in parts)
    assert read_shard(tmp_path / "s.parquet").equals(frame)     # the world of one reads it whole


def test_too_few_row_groups_for_the_ranks_is_named(tmp_path):
    write_split(pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]}), tmp_path / "s.parquet", 1024)
    with pytest.raises(DataError, match="1 row group.*2 ranks.*row_group_rows"):
        read_shard(tmp_path / "s.parquet", World(1, 2))


# -- settings -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("distributed.ranks=3", "train.batch_size 16 does not split over 3 ranks"),
    ("distributed.launcher=slurm", "expected local or trainjob"),
    ("distributed.backend=mpi", "expected auto, gloo or nccl"),
    ("distributed.ranks=0", "must be >= 1"),
])
def test_impossible_settings_stop_before_anything_runs(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_one_process_stays_the_default():
    from yanjin.components.stages import needs_ranks

    assert not needs_ranks(load_config("full"))
    assert needs_ranks(load_config("tiny", ["distributed.ranks=2"]))
    assert needs_ranks(load_config("tiny", ["distributed.checkpoint_every=50"]))  # restarts need torchrun


def test_resume_files_are_written_whole_and_read_back(tmp_path):
    resume = Resume(tmp_path, every=4)
    assert resume.load("train", World()) is None
    resume.save("train", {"step": 3, "weights": torch.ones(2)}, World())
    back = resume.load("train", World())
    assert back["step"] == 3 and torch.equal(back["weights"], torch.ones(2)) and len(back["rng"]) == 1
    assert not list(tmp_path.glob("*.tmp"))
    assert resume.due(8) and not resume.due(6) and not Resume(tmp_path).due(8)


# -- the Trainer job ----------------------------------------------------------------------------------------
@pytest.fixture()
def manifest():
    cfg = load_config("full", ["distributed.launcher=trainjob", "distributed.workers=2",
                               "distributed.gpus_per_worker=4"])
    shape = shape_for("train_member", "0123456789abcdef0123", cfg, "registry.example/yanjin:0.1.0", "ml-team")
    return render(shape, "http://mlflow.yanjin:5000", "0123456789abcdef0123", "train_member", 2)


def test_the_trainjob_matches_the_trainer_schema(manifest):
    validate(manifest)
    trainer = manifest["spec"]["trainer"]
    assert manifest["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and manifest["kind"] == "TrainJob"
    assert manifest["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    assert trainer["command"][-3:] == ["--from-run", "0123456789abcdef0123", "train_member"]
    assert manifest["spec"]["activeDeadlineSeconds"] == 480 * 60


@pytest.mark.parametrize("break_it, named", [
    (lambda m: m["spec"]["trainer"].__setitem__("numNode", 2), "spec.trainer.numNode"),       # misspelled
    (lambda m: m["spec"].__setitem__("replicas", 2), "spec.replicas"),                        # PyTorchJob's, not here
    (lambda m: m["spec"]["trainer"].__setitem__("numNodes", "2"), "numNodes"),                # a string
    (lambda m: m["spec"].pop("runtimeRef"), "runtimeRef"),                                    # required
])
def test_a_manifest_the_operator_would_refuse_is_named_before_it_is_sent(manifest, break_it, named):
    broken = copy.deepcopy(manifest)
    break_it(broken)
    with pytest.raises(ManifestInvalid, match=named):
        validate(broken)


def test_job_names_are_dns_labels():
    name = job_name("train_member", "ABCDEF0123456789" * 3)
    assert name == "yanjin-train-member-abcdef012345" and len(name) <= 63


@pytest.mark.parametrize("status, state", [
    (None, "running"),
    ({"conditions": [{"type": "Created", "status": "True"}]}, "running"),
    ({"conditions": [{"type": "Complete", "status": "True", "message": "done"}]}, "complete"),
    ({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "ran out"}]},
     "failed"),
    ({"conditions": [{"type": "Failed", "status": "False"}]}, "running"),
])
def test_the_job_state_is_read_from_its_conditions(status, state):
    assert job_state(status)[0] == state
    if state == "failed":
        assert job_state(status)[1] == "DeadlineExceeded: ran out"


def test_the_run_form_asks_for_a_trainer_job_of_n_nodes_by_m_gpus(manifest):
    from yanjin.config import from_run_form

    cfg = from_run_form("", "full", trainer_workers=2, trainer_gpus=4)
    d = cfg.distributed
    assert (d.launcher, d.workers, d.gpus_per_worker, d.ranks, d.world_size) == ("trainjob", 2, 4, 4, 8)
    assert from_run_form("", "full").distributed.launcher == "local"


class Cluster:
    """A stand-in for the two Kubernetes API clients `_wait` reads: a job whose status is given, and no pods."""

    def __init__(self, status):
        self.status = status

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, plural) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
        return {"metadata": {"name": name}, "status": self.status}

    def list_namespaced_pod(self, namespace, label_selector):
        assert label_selector.startswith("jobset.sigs.k8s.io/jobset-name=")
        return type("Pods", (), {"items": []})()


def test_the_step_fails_naming_a_failed_job_or_a_missed_deadline():
    from yanjin.components.trainjob import JobShape, TrainJobError, _wait

    shape = JobShape("yanjin-train-member-0123", "ml-team", "img", 2, 4, 4, "4", "12G", 0)
    failed = Cluster({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                      "message": "node 1 exited 1"}]})
    with pytest.raises(TrainJobError, match="failed: BackoffLimitExceeded: node 1 exited 1.*describe trainjob"):
        _wait(failed, failed, shape, poll_s=0, grace_s=0)
    running = Cluster({"conditions": [{"type": "Created", "status": "True"}]})
    with pytest.raises(TrainJobError, match="did not finish within 0 minutes.*timeout_minutes"):
        _wait(running, running, shape, poll_s=0, grace_s=0.2)
    done = Cluster({"conditions": [{"type": "Complete", "status": "True"}]})
    _wait(done, done, shape, poll_s=0, grace_s=0)


def test_a_staged_job_brings_its_inputs_and_domain_text_to_the_nodes(tmp_path):
    """stage_job on the step, fetch_job on a node: every path the stage reads arrives under the node's folder."""
    import json

    import mlflow

    from yanjin.components.trainjob import fetch_job, stage_job

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = mlflow.MlflowClient(uri).create_run(mlflow.MlflowClient(uri).create_experiment(
        "staging", artifact_location=str(tmp_path / "artifacts"))).info.run_id
    (tmp_path / "step").mkdir()
    test_set = tmp_path / "step" / "test.parquet"
    test_set.write_bytes(b"PAR1")
    (tmp_path / "step" / "nlupp").mkdir()
    (tmp_path / "step" / "nlupp" / "banking.json").write_text(json.dumps([{"text": "a card"}]))
    (tmp_path / "step" / "extra.txt").write_text("more text\n")
    cfg = load_config("tiny", ["model.variant=pro", "distributed.launcher=trainjob"])
    stage_job("prepare_domain", {"test_set": str(test_set), "sources": [str(tmp_path / "step" / "extra.txt"),
                                                                        str(tmp_path / "step" / "nlupp")],
                                 "tracking_uri": uri, "run_id": run_id, "out_dir": "/step/domain"}, cfg, uri, run_id)
    job = fetch_job(uri, run_id, tmp_path / "node")
    kwargs = job["kwargs"]
    assert job["stage"] == "prepare_domain" and Path(kwargs["test_set"]).read_bytes() == b"PAR1"
    assert Path(kwargs["sources"][0]).read_text() == "more text\n"
    assert (Path(kwargs["sources"][1]) / "banking.json").is_file()
    assert kwargs["out_dir"] == str(tmp_path / "node" / "outputs" / "out_dir")
    assert all(str(tmp_path / "node") in p for p in [kwargs["test_set"], *kwargs["sources"]])
