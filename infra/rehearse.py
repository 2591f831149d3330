"""A rehearsal of cluster mode in real containers: every part really started here, on one machine.

    sudo .venv/bin/python infra/rehearse.py [--work DIR] [--keep-engine]    (or: make rehearse)

Stages, each timed and reported pass/fail in benchmarks/results/cluster_rehearsal.json:
  engine    Debian's Docker engine, started by this script (no bridge network, no iptables; containers
            on the host network only) and stopped by its process id at the end;
  base      a base image built from Debian packages with debootstrap (no registry is reachable);
  image     the project's real infra/Dockerfile built on it (build args name the base and the torch source);
  stack     a throwaway PostgreSQL and `mlflow server` on it with basic auth and proxied artifacts;
  pipeline  the family pipeline (tiny profile: V1, V2, Pro and Lite in one run, data validated once)
            run by kfp.local.DockerRunner: every step in the image, as its non-root user, on a
            read-only root filesystem; the steps reach MLflow over HTTP and see no host path but the
            pipeline root;
  trainjob  what every pod of a Kubeflow Trainer job runs (the command trainjob.render writes), in the
            pipeline image with 2 torchrun ranks (gloo): the job staged in an MLflow run, as the train
            step stages it; rank 0 logs the checkpoint and the result back;
  serving   the lean serving image (infra/Dockerfile.serving: no torch) running `yanjin serve` against
            that MLflow, its prediction log in PostgreSQL: /readyz, /predict, and the table of malformed
            requests (tests/serving/malformed.py), every one a 4xx, the server still answering after;
  cronjob   the drift CronJob's command (infra/k8s/base/drift-cronjob.yaml) run in the pipeline image on
            the traffic the serving stage sent.
Every container runs as the image's non-root user on a read-only root filesystem with /tmp a tmpfs,
as the manifests demand.
The engine's state, the base image's root filesystem and the work files live under --work.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.integration.stack: the servers the integration test starts too
RESULTS = ROOT / "benchmarks" / "results"
BASE_IMAGE = "local/debian-py311:bookworm"
IMAGE = "yanjin:0.1.0"
SERVING_IMAGE = "yanjin-serving:0.1.0"
GPU_IMAGE = "yanjin-gpu:0.1.0"
MODEL = "banking77-v1"
LIMITS = {"max_chars": 500, "max_items": 16, "max_body_bytes": 20000}  # the serving stage's request limits
TORCH_WHEEL = "torch==2.13.0+cpu"


class Stages:
    """Runs named stages in order, timing each; the first failure stops the rest."""

    def __init__(self) -> None:
        self.report: dict[str, dict] = {}
        self.started = time.perf_counter()

    @contextmanager
    def stage(self, name: str):
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            yield
        except BaseException as e:
            self.report[name] = {"ok": False, "seconds": time.perf_counter() - start, "error": f"{type(e).__name__}: {e}"}
            print(f"== {name}: FAILED after {time.perf_counter() - start:.0f} s: {e}", flush=True)
            raise
        self.report[name] = {"ok": True, "seconds": round(time.perf_counter() - start, 1)}
        print(f"== {name}: ok in {time.perf_counter() - start:.0f} s", flush=True)


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, **kwargs)


@contextmanager
def docker_engine(work: Path):
    """dockerd on a socket and data folder of its own; yields the DOCKER_HOST value."""
    folder = work / "engine"
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "docker.sock"
    log = open(folder / "dockerd.log", "w")
    proc = subprocess.Popen(["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false",
                             "--data-root", str(folder / "root"), "--exec-root", str(folder / "exec"),
                             "--pidfile", str(folder / "docker.pid"), "-H", f"unix://{sock}"],
                            stdout=log, stderr=subprocess.STDOUT)
    host = f"unix://{sock}"
    try:
        for _ in range(60):
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited: {(folder / 'dockerd.log').read_text()[-2000:]}")
            if subprocess.run(["docker", "-H", host, "info"], capture_output=True).returncode == 0:
                break
            time.sleep(1)
        else:
            raise RuntimeError("dockerd never answered")
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def image_exists(docker: list[str], name: str) -> bool:
    return subprocess.run(docker + ["image", "inspect", name], capture_output=True).returncode == 0


def build_base(docker: list[str], work: Path) -> None:
    """Debian bookworm (its python3 is 3.11) with pip, trusting this machine's CA bundle (pip needs it)."""
    if image_exists(docker, BASE_IMAGE):
        print(f"   {BASE_IMAGE} already built")
        return
    rootfs = work / "rootfs"
    if not (rootfs / "usr/bin/python3").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,python3-pip,ca-certificates",
             "bookworm", str(rootfs)], stdout=subprocess.DEVNULL)
    (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
    ca = "/etc/ssl/certs/ca-certificates.crt"
    shutil.copy(ca, rootfs / ca.lstrip("/"))
    env = " ".join(f"{k}={ca}" for k in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"))
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    run(docker + ["import", "--change", f"ENV {env} PIP_DISABLE_PIP_VERSION_CHECK=1", "-", BASE_IMAGE],
        stdin=tar.stdout, stdout=subprocess.DEVNULL)
    tar.wait()


def torch_wheel() -> Path:
    """The CPU torch wheel lying on this machine (pip's find-links): the PyTorch index is unreachable here."""
    links = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True,
                           text=True).stdout.strip() or "/opt/wheels"
    found = sorted(Path(links).glob("torch-2.13.0+cpu-*.whl"))
    if not found:
        raise FileNotFoundError(f"no {TORCH_WHEEL} wheel in {links}")
    return found[0]


def build_image(docker: list[str], dockerfile: str, tag: str, args: dict[str, str]) -> float:
    start = time.perf_counter()
    from yanjin.state import git_commit

    args = {"GIT_COMMIT": git_commit(ROOT)} | args
    build_args = [a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")]
    run(docker + ["build", "--network", "host", "-f", dockerfile, *build_args, "-t", tag, str(ROOT)],
        stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def image_bytes(docker: list[str], tag: str) -> int:
    return int(subprocess.run(docker + ["image", "inspect", "-f", "{{.Size}}", tag], capture_output=True, text=True,
                              check=True).stdout.strip())


# At tiny scale Pro does not beat V1 (issue 15: adaptation adds little); a negative margin lets every member
# register, so the rehearsal runs every branch of the family graph, Lite distilling this run's Pro included.
FAMILY_OVERRIDES = ["gate.min_improvement=-0.5"]


def pipeline_in_containers(work: Path, server, host: str, data: Path, ledger_url: str) -> dict:
    """The tiny family pipeline with every step in the image; only the pipeline root is shared with the host."""
    from kfp import local

    from yanjin.config import load_config
    from yanjin.pipelines.run import run_family_local
    from yanjin.state import git_commit
    from yanjin.registry.ledger import LEDGER_ENV
    from yanjin.state import LocalState

    state = LocalState(work / "state")
    root = Path(state.pipeline_root)
    inputs = root / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for name in ("train.csv", "test.csv", "categories.json"):
        shutil.copy(data / name, inputs / name)
    for path in [state.root, *state.root.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # the step image runs as an unprivileged user
    os.environ["DOCKER_HOST"] = host
    runner = local.DockerRunner(network_mode="host", read_only=True, tmpfs={"/tmp": "rw,size=2g"},
                                environment=server.credentials | {"HOME": "/tmp", LEDGER_ENV: ledger_url})
    started = time.perf_counter()
    family = run_family_local(load_config("tiny", FAMILY_OVERRIDES), str(inputs / "train.csv"), str(inputs / "test.csv"),
                              str(inputs / "categories.json"), state, server.url, "",   # the image's own commit
                              adapt_corpus=[str(inputs / "train.csv")], runner=runner, image=IMAGE)
    this_run = max(root.glob("yanjin-family-*"), key=lambda p: p.stat().st_mtime)  # --work may hold earlier runs
    steps = sorted(p.name for p in this_run.iterdir() if p.is_dir())  # one per task that ran
    return {"members": {m: {"gate": o.gate, "version": o.version, "accuracy": o.evaluation.get("accuracy"),
                            "teacher": o.evaluation.get("teacher_model", "") + (
                                f" v{o.evaluation['teacher_version']}" if o.evaluation.get("teacher_version") else "")}
                        for m, o in family.members.items()},
            "overrides": FAMILY_OVERRIDES, "family_table": family.markdown,
            "seconds": round(time.perf_counter() - started, 1), "steps_in_containers": len(steps), "steps": steps,
            # the run form's git_commit left empty: each version records the commit the image was built from
            "recorded_commits": sorted({m for card in this_run.glob("register-model*/card")
                                        for m in re.findall(r"\*\*Code commit:\*\* `([^`]+)`", card.read_text())}),
            "image_commit": git_commit(ROOT)}


def container(docker: list[str], image: str, args: list[str], env: dict[str, str], detach: bool = False,
              entrypoint: str | None = None, mounts: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`docker run` as the manifests run pods: host network here, non-root, read-only root, /tmp a tmpfs;
    `mounts` are read-only bind mounts "host:container" (the manifests' Secret volumes)."""
    flags = ["--network", "host", "--read-only", "--tmpfs", "/tmp:rw,size=2g", "--cap-drop", "ALL",
             "--security-opt", "no-new-privileges"] + [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    flags += [a for m in mounts for a in ("-v", f"{m}:ro")]
    flags += ["--entrypoint", entrypoint] if entrypoint else []
    return subprocess.run(docker + ["run", "--rm" if not detach else "-d", *flags, image, *args], capture_output=True,
                          text=True)


def serving_in_container(docker: list[str], server, predictions_url: str, data: Path, work: Path) -> dict:
    """`yanjin serve` in the lean image as the manifests run it (a mounted keys file, a key for every call):
    ready, refusing calls without a key, predicting, and every malformed request a 4xx."""
    import httpx
    import pandas as pd

    from tests.integration.stack import free_port, wait_http
    from tests.serving.malformed import malformed_requests
    from yanjin.serving.auth import add_key

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    keys_file = work / "api-keys.json"
    keys_file.unlink(missing_ok=True)
    token = add_key(keys_file, "rehearsal-client", "client", per_minute=100_000)
    os.chmod(keys_file, 0o444)  # the container's non-root user reads it, as the Secret volume's mode lets it
    auth = {"Authorization": f"Bearer {token}"}
    sets = [a for k, v in (LIMITS | {"api_keys": "/etc/yanjin/api-keys.json", "open_predict": "false"}).items()
            for a in ("--set", f"{k}={v}")]
    started = container(docker, SERVING_IMAGE, ["--model", MODEL, "--tracking-uri", server.url, "--state-dir",
                                                "/tmp/yanjin", "--host", "127.0.0.1", "--port", str(port), *sets],
                        server.credentials | {"HOME": "/tmp", "YANJIN_PREDICTION_LOG": predictions_url}, detach=True,
                        mounts=(f"{keys_file}:/etc/yanjin/api-keys.json",))
    if started.returncode != 0:
        raise RuntimeError(f"the serving container did not start: {started.stderr[-2000:]}")
    cid = started.stdout.strip()
    def died() -> str | None:
        state = subprocess.run(docker + ["inspect", "-f", "{{.State.Running}}", cid], capture_output=True, text=True)
        return None if state.stdout.strip() == "true" else f"the serving container exited: {logs(docker, cid)}"

    try:
        if not wait_http(f"{url}/readyz", died):
            raise RuntimeError(f"the serving container never became ready: {logs(docker, cid)}")
        texts = pd.read_csv(data / "test.csv")["text"].tolist()[:160]
        without_key = httpx.post(f"{url}/predict", json={"items": [{"text": texts[0]}]}, timeout=60).status_code
        answers = [httpx.post(f"{url}/predict", json={"items": [{"text": t} for t in texts[i:i + 16]]}, headers=auth,
                              timeout=60) for i in range(0, len(texts), 16)]  # traffic for the drift check, too
        feedback = httpx.post(f"{url}/feedback", json={"prediction_id": answers[0].json()[0]["prediction_id"],
                                                       "label": answers[0].json()[0]["label"]}, headers=auth, timeout=30)
        malformed = {}
        for what, body, content_type in malformed_requests(**LIMITS):
            r = httpx.post(f"{url}/predict", content=body, timeout=30,
                           headers=auth | ({"content-type": content_type} if content_type else {}))
            malformed[what] = r.status_code
        after = httpx.post(f"{url}/predict", json={"items": [{"text": "still there?"}]}, headers=auth, timeout=30)
        torch_free = container(docker, SERVING_IMAGE, ["-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                               {}, entrypoint="python3").stdout.strip() == "True"
        # the image as shipped, no keys mounted: it refuses to serve rather than open /predict to the network
        env = server.credentials | {"HOME": "/tmp", "YANJIN_PREDICTION_LOG": predictions_url}
        keyless = container(docker, SERVING_IMAGE, ["--model", MODEL, "--tracking-uri", server.url], env)
        open_bind = container(docker, SERVING_IMAGE, ["--model", MODEL, "--tracking-uri", server.url, "--set",
                                                      "open_predict=true"], env)
    finally:
        subprocess.run(docker + ["rm", "-f", cid], capture_output=True)
    four_xx = sum(1 for code in malformed.values() if 400 <= code < 500)
    return {"predict_ok": all(a.status_code == 200 for a in answers) and answers[0].json()[0]["version"] == "1",
            "predicted": sum(len(a.json()) for a in answers if a.status_code == 200),
            "malformed": malformed, "malformed_4xx_share": four_xx / len(malformed),
            "serving_after_malformed": after.status_code == 200, "image_has_no_torch": torch_free,
            "predict_without_key": without_key, "feedback_with_client_key": feedback.status_code,
            "image_without_keys_refused": keyless.returncode != 0 and "holds no API key" in keyless.stderr + keyless.stdout,
            "open_bind_refused": open_bind.returncode != 0 and "--allow-open-predict" in open_bind.stderr + open_bind.stdout,
            "open_bind_message": (open_bind.stderr + open_bind.stdout).strip()[-400:]}


def trainjob_pod_in_container(docker: list[str], server, data: Path, work: Path) -> dict:
    """What every pod of a Kubeflow Trainer job runs (the command `trainjob.render` writes into the
    TrainJob), in the pipeline image with 2 ranks: the job staged in a run of the rehearsal's MLflow
    server, as the train step stages it. `--standalone` stands in for the runtime's PET_* rendezvous."""
    import mlflow

    from yanjin.components.stages import validate_and_split
    from yanjin.components.trainjob import JobShape, render, stage_job
    from yanjin.registry import DISTRIBUTED_JOB_ARTIFACT
    from yanjin.config import load_config

    cfg = load_config("tiny", ["distributed.launcher=trainjob", "distributed.ranks=2"])
    folder = work / "trainjob"
    folder.mkdir(exist_ok=True)
    split = {name: str(folder / f"{name}.parquet") for name in ("train", "val", "test")}
    os.environ.update(server.credentials)
    v = validate_and_split(str(data / "train.csv"), str(data / "test.csv"), str(data / "categories.json"), cfg,
                           server.url, "rehearsal-trainjob", "", "rehearsal", split["train"], split["val"], split["test"])
    (folder / "domain").mkdir(exist_ok=True)
    stage_job("train_member", {"train_set": split["train"], "val_set": split["val"], "labels": v.report["labels"],
                               "domain_dir": str(folder / "domain"), "tracking_uri": server.url, "run_id": v.run_id,
                               "out_dir": "/step/checkpoint", "teacher_version": None}, cfg, server.url, v.run_id)
    shape = JobShape("rehearsal", "yanjin", IMAGE, 1, 2, 0, "2", "4G", 600)
    command = render(shape, server.url, v.run_id, "train_member", 0)["spec"]["trainer"]["command"]
    command = command[:3] + ["--standalone"] + command[3:]
    started = time.perf_counter()
    done = container(docker, IMAGE, command[1:], {"MLFLOW_TRACKING_URI": server.url, "HOME": "/tmp",
                                                 "YANJIN_JOB_DIR": "/tmp"} | server.credentials, entrypoint=command[0])
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {(done.stdout + done.stderr)[-3000:]}")
    client = mlflow.MlflowClient(server.url)
    result = json.loads(Path(client.download_artifacts(v.run_id, f"{DISTRIBUTED_JOB_ARTIFACT}/result.json", str(folder))).read_text())
    return {"command": command, "ranks": int(client.get_run(v.run_id).data.params["train.ranks"]),
            "best_val_accuracy": result["best_val_accuracy"], "checkpoint_sha256": result["lineage"]["checkpoint_sha256"],
            "seconds": round(time.perf_counter() - started, 1)}


def logs(docker: list[str], cid: str) -> str:
    out = subprocess.run(docker + ["logs", "--tail", "40", cid], capture_output=True, text=True)
    return (out.stdout + out.stderr)[-3000:]


def drift_cronjob_in_container(docker: list[str], server, predictions_url: str) -> dict:
    """The CronJob's command as its manifest writes it, with the tiny profile the pipeline trained with."""
    import yaml

    manifest = yaml.safe_load((ROOT / "infra/k8s/base/drift-cronjob.yaml").read_text())
    spec = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {"YANJIN_MODEL": MODEL, "YANJIN_PREDICTION_LOG": predictions_url, "MLFLOW_TRACKING_URI": server.url,
           "HOME": "/tmp"} | server.credentials
    command = [env.get(a[2:-1], a) if a.startswith("$(") else a for a in spec["command"]]
    command[command.index("--profile") + 1] = "tiny"
    done = container(docker, IMAGE, command[1:], env, entrypoint=command[0])
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {(done.stdout + done.stderr)[-3000:]}")
    verdict = next((line for line in done.stdout.splitlines() if line.startswith(f"{MODEL} v")), "")
    return {"command": command, "verdict_line": verdict}


def purge_cronjob_in_container(docker: list[str], server, predictions_url: str) -> dict:
    """The retention CronJob's command as its manifest writes it, in the pipeline image, against the rehearsal's
    prediction log and MLflow; nothing is 90 days old yet, so it removes nothing and records the run."""
    import yaml

    manifest = yaml.safe_load((ROOT / "infra/k8s/base/purge-cronjob.yaml").read_text())
    spec = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {"YANJIN_PREDICTION_LOG": predictions_url, "MLFLOW_TRACKING_URI": server.url, "HOME": "/tmp"} | server.credentials
    command = spec["command"]
    done = container(docker, IMAGE, command[1:], env, entrypoint=command[0])
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {(done.stdout + done.stderr)[-3000:]}")
    listed = container(docker, IMAGE, ["log", "erasures", "--state-dir", "/tmp/yanjin"], env, entrypoint="yanjin")
    return {"command": command, "output": done.stdout.strip()[-400:], "recorded": listed.stdout.strip()[-400:]}


def controller_in_container(docker: list[str], server, pg: str) -> dict:
    """The release controller's Deployment command in the image, against the rehearsal's PostgreSQL ledger and
    MLflow: a worse challenger rolled back; a better one, once its rollout reaches its verdict, waits for its
    approval, which a second MLflow user gives, then promoted by the controller. Traffic and reviewers'
    labels are written to the prediction log as serving and /review would."""
    import uuid

    import yaml
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    from yanjin.registry import CHALLENGER, CHAMPION, alias_version
    from yanjin.registry.ledger import LEDGER_ENV, Ledger
    from yanjin.serving.predlog import PredictionLog
    from yanjin.traffic.store import Prediction

    ledger_url, predictions_url = f"{pg}release", f"{pg}predictions"
    os.environ.update(server.credentials)
    client = MlflowClient(server.url)
    first = client.get_model_version(MODEL, "1")
    for _ in range(2):   # v2 and v3: the same verified bundle registered again, as a retraining would
        client.create_model_version(MODEL, first.source, run_id=first.run_id, tags=dict(first.tags),
                                    model_id=first.source.rsplit("/", 1)[-1])   # source is models:/m-<id>
    get_app_client("basic-auth", tracking_uri=server.url).create_user("anna", "anna-rehearsal-pw")
    log = PredictionLog(predictions_url)

    def shadowed(version: str, n: int, champion_right: float, challenger_right: float) -> None:
        """n texts the champion answered and `version` scored in shadow, as serving logs them; a reviewer labels
        the disagreements the queue asks for."""
        rows, asked = [], []
        for i in range(n):
            pid = str(uuid.uuid4())
            ours, theirs = ("right" if i < champion_right * n else "wrong"), ("right" if i < challenger_right * n else "wrong")
            reason = "disagreement" if ours != theirs else None
            rows += [Prediction(pid, time.time(), f"rehearsal text {i}", ours, 0.95, MODEL, "1", "v1", CHAMPION, 3.0,
                                False, review_reason=reason, inclusion_p=1.0 if reason else 0.02),
                     Prediction(str(uuid.uuid4()), time.time(), f"rehearsal text {i}", theirs, 0.95, MODEL, version, "v1",
                                "shadow", 3.0, False, pair_id=pid)]
            asked += [pid] if reason else []
        log.append(rows)
        log.flush()
        for pid in asked:
            log.review(pid, "right", "rehearsal-reviewer")

    def traffic(version: str, arm: str, n: int, accuracy: float) -> None:
        rows = [Prediction(str(uuid.uuid4()), time.time(), f"rehearsal text {i}", "right" if i < accuracy * n else "wrong",
                           0.95, MODEL, version, "v1", arm, 3.0, False) for i in range(n)]
        log.append(rows)
        log.flush()
        for r in rows:
            log.review(r.id, "right", "rehearsal-reviewer")

    def cli(*args: str, user: dict | None = None) -> subprocess.CompletedProcess:
        env = os.environ | (user or server.credentials) | {LEDGER_ENV: ledger_url, "MLFLOW_TRACKING_URI": server.url}
        return subprocess.run([sys.executable, "-m", "yanjin.cli", *args], capture_output=True, text=True, env=env)

    manifest = yaml.safe_load((ROOT / "infra/k8s/base/release-controller.yaml").read_text())
    spec = manifest["spec"]["template"]["spec"]["containers"][0]
    env = {"YANJIN_PREDICTION_LOG": predictions_url, "MLFLOW_TRACKING_URI": server.url, LEDGER_ENV: ledger_url,
           "HOME": "/tmp"} | server.credentials
    command = [env.get(a[2:-1], a) if a.startswith("$(") else a for a in spec["command"]]
    command += ["--set", "release.controller_interval_s=2"]   # the profile's 60 s, shortened for the rehearsal
    started = container(docker, IMAGE, command[1:], env, detach=True, entrypoint=command[0])
    if started.returncode != 0:
        raise RuntimeError(f"the controller container did not start: {started.stderr[-2000:]}")
    cid = started.stdout.strip()
    ledger = Ledger(ledger_url, create=False)

    def until(what, timeout: float = 180) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if what():
                return True
            time.sleep(1)
        return False

    out: dict = {"command": command}
    try:
        begun = cli("rollout", "start", MODEL, "--challenger", "2", "--profile", "full", "--reason", "rehearsal: worse")
        out["start_worse"] = (begun.stdout + begun.stderr).strip()[-300:]
        shadowed("2", 400, 0.9, 0.5)     # shadow first: judged on the same texts, never served
        out["worse_rolled_back"] = until(lambda: (ledger.rollout(MODEL) or {}).get("status") == "rolled_back")
        out["worse_reason"] = (ledger.rollout(MODEL) or {}).get("reason", "")[:300]
        begun = cli("rollout", "start", MODEL, "--challenger", "3", "--plan", "100", "--profile", "full",
                    "--reason", "rehearsal: better")
        out["start_better"] = (begun.stdout + begun.stderr).strip()[-300:]
        shadowed("3", 600, 0.9, 0.97)
        out["better_left_shadow"] = until(lambda: (ledger.rollout(MODEL) or {}).get("phase") == "canary")
        traffic("1", CHAMPION, 600, 0.9)   # the canary: real traffic, judged on failures, latency, review rate
        traffic("3", CHALLENGER, 600, 0.97)
        out["better_awaits_approval"] = until(lambda: (ledger.rollout(MODEL) or {}).get("reason", "").startswith(
            "awaiting approval"))
        out["champion_while_waiting"] = alias_version(client, MODEL, CHAMPION)
        own = cli("approve", MODEL, "3", "--reason", "my own rollout")
        out["self_approval_refused"] = own.returncode == 1 and "someone else" in own.stderr
        anna = cli("approve", MODEL, "3", "--reason", "CAB-7 approved",
                   user={"MLFLOW_TRACKING_USERNAME": "anna", "MLFLOW_TRACKING_PASSWORD": "anna-rehearsal-pw"})
        out["approval"] = (anna.stdout + anna.stderr).strip()[-300:]
        out["better_promoted"] = until(lambda: (ledger.rollout(MODEL) or {}).get("status") == "promoted")
        out["champion_after"] = alias_version(client, MODEL, CHAMPION)
        out["approved_by"] = [a["principal"] for a in ledger.approvals_of(MODEL, "3")]
        out["audit_verified"] = ledger.verify() == []
        out["controller_log"] = logs(docker, cid)[-1500:]
    finally:   # SIGTERM first, as Kubernetes does: the controller releases the leases it holds
        out["controller_stopped_cleanly"] = subprocess.run(docker + ["stop", "-t", "30", cid],
                                                           capture_output=True).returncode == 0
        subprocess.run(docker + ["rm", "-f", cid], capture_output=True)
        log.close()
        ledger.close()
    return out


REVIEWED = [("I got my card today, how do I turn it on?", "activate_my_card"),   # the tiny profile's intents
            ("Is there a minimum age to open an account with you?", "age_limit"),
            ("Can I add my card to my phone's wallet for contactless payments?", "apple_pay_or_google_pay"),
            ("Which cash machines can I use without a fee?", "atm_support"),
            ("Set my balance to refill itself when it drops low", "automatic_top_up")]


def retraining_in_containers(work: Path, server, pg: str) -> dict:
    """The monitoring job's cluster path: reviewers' labels in the PostgreSQL prediction log are merged into the
    champion's training data and kept in MLflow's store (monitoring.job.cluster_training_set, what a KFP
    submission sends); the pipeline then runs with every step in the image, reading that set by its URI."""
    import uuid

    import pandas as pd
    from kfp import local
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from yanjin.monitoring.job import champion_recipe, cluster_training_set
    from yanjin.pipelines.run import run_local
    from yanjin.registry import CHAMPION, alias_version
    from yanjin.registry.ledger import LEDGER_ENV
    from yanjin.serving.predlog import PredictionLog
    from yanjin.traffic.store import Prediction
    from yanjin.state import LocalState

    os.environ.update(server.credentials)
    client = MlflowClient(server.url)
    champion = alias_version(client, MODEL, CHAMPION)
    log = PredictionLog(f"{pg}predictions")
    rows = [Prediction(str(uuid.uuid4()), time.time(), text, "activate_my_card", 0.4, MODEL, champion, "v1", CHAMPION,
                       3.0, True, review_reason="low_confidence") for text, _ in REVIEWED]
    log.append(rows)
    log.flush()
    for row, (_, label) in zip(rows, REVIEWED):
        log.review(row.id, label, "rehearsal-reviewer")
    config = champion_recipe(client, MODEL, FAMILY_OVERRIDES)
    started = time.perf_counter()
    params = cluster_training_set(client, MODEL, config, log, None, LocalState(work / "state"), "rehearsal: drift",
                                  say=lambda _: None)
    log.close()
    merged = pd.read_csv(download_artifacts(params["train_data"], tracking_uri=server.url))
    runner = local.DockerRunner(network_mode="host", read_only=True, tmpfs={"/tmp": "rw,size=2g"},
                                environment=server.credentials | {"HOME": "/tmp", LEDGER_ENV: f"{pg}release"})
    outcome = run_local(config, params["train_data"], params["test_data"], params["label_set"], LocalState(work / "state"),
                        server.url, "rehearsal", adapt_corpus=[], runner=runner, image=IMAGE)
    recorded = client.get_run(outcome.evaluation["run_id"]).data.params
    return {"champion": champion, "train_data": params["train_data"], "gate": outcome.gate, "version": outcome.version,
            "recorded_train": recorded.get("data.train"), "merged_rows": len(merged),
            "reviewed_in_training_set": sum(t in set(merged["text"]) for t, _ in REVIEWED),
            "seconds": round(time.perf_counter() - started, 1)}


def gpu_image_in_container(docker: list[str], server, predictions_url: str, work: Path) -> dict:
    """The GPU image on this machine, which has no GPU: ONNX Runtime's GPU build offers TensorRT and CUDA, every
    library the CUDA provider links resolves from NVIDIA's wheels (the driver's own aside), and `yanjin serve`
    starts, says in its log that no GPU answers, and serves on the CPU."""
    import httpx

    from tests.integration.stack import free_port, wait_http
    from yanjin.registry import CHAMPION
    from yanjin.serving.auth import add_key

    check = container(docker, GPU_IMAGE, ["-m", "yanjin.models.gpu"], {"HOME": "/tmp"}, entrypoint="python3")
    if check.returncode != 0:
        raise RuntimeError(f"the provider check failed in the GPU image: {check.stderr[-2000:]}")
    report = json.loads(check.stdout)
    port, keys_file = free_port(), work / "gpu-api-keys.json"
    keys_file.unlink(missing_ok=True)
    token = add_key(keys_file, "rehearsal-gpu", "client")
    os.chmod(keys_file, 0o444)
    started = container(docker, GPU_IMAGE, ["--model", MODEL, "--tracking-uri", server.url, "--state-dir", "/tmp/yanjin",
                                            "--host", "127.0.0.1", "--port", str(port), "--set",
                                            "api_keys=/etc/yanjin/api-keys.json"],
                        server.credentials | {"HOME": "/tmp", "YANJIN_PREDICTION_LOG": predictions_url}, detach=True,
                        mounts=(f"{keys_file}:/etc/yanjin/api-keys.json",))
    if started.returncode != 0:
        raise RuntimeError(f"the GPU image's server did not start: {started.stderr[-2000:]}")
    cid, url = started.stdout.strip(), f"http://127.0.0.1:{port}"

    def died() -> str | None:
        state = subprocess.run(docker + ["inspect", "-f", "{{.State.Running}}", cid], capture_output=True, text=True)
        return None if state.stdout.strip() == "true" else f"the GPU image's server exited: {logs(docker, cid)}"

    try:
        if not wait_http(f"{url}/readyz", died, timeout=300):
            raise RuntimeError(f"the GPU image's server never became ready: {logs(docker, cid)}")
        auth = {"Authorization": f"Bearer {token}"}
        answer = httpx.post(f"{url}/predict", json={"items": [{"text": "my card has not arrived"}]}, headers=auth,
                            timeout=60)
        info = httpx.post(f"{url}/info", json={}, headers=auth, timeout=30).json()   # a BentoML API: POST
        said = [line for line in logs(docker, cid).splitlines() if "serving on the CPU" in line]
    finally:
        subprocess.run(docker + ["rm", "-f", cid], capture_output=True)
    return {"report": report, "predict_status": answer.status_code, "provider": info["arms"][CHAMPION]["provider"],
            "providers_available": info["providers_available"], "fallback_log_line": said[:1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/yanjin-rehearsal"))
    ap.add_argument("--docker-host", default="", help="use this running engine (unix://...) instead of starting one")
    ap.add_argument("--skip-build", action="store_true", help="reuse the images already built in that engine (from this very checkout: an older image fails on a newer config)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("the rehearsal starts dockerd and PostgreSQL: run it as root (sudo)")
    for tool in ("dockerd", "docker", "debootstrap"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y docker.io debootstrap")
    args.work.mkdir(parents=True, exist_ok=True)
    stages, result = Stages(), {}
    from tests.integration import stack

    try:
        with ExitStack() as cleanup:
            with stages.stage("engine"):
                host = args.docker_host or cleanup.enter_context(docker_engine(args.work))
            docker = ["docker", "-H", host]
            with stages.stage("base"):
                build_base(docker, args.work)
            with stages.stage("image"):
                if not args.skip_build:
                    shutil.copy(torch_wheel(), ROOT / "infra" / "wheels")
                    result["build_seconds"] = build_image(docker, "infra/Dockerfile", IMAGE,
                                                          {"BASE": BASE_IMAGE, "TORCH_INDEX": ""})
                    result["build_seconds"] += build_image(docker, "infra/Dockerfile.serving", SERVING_IMAGE,
                                                           {"BASE": BASE_IMAGE})
                    # NVIDIA's index (TensorRT) is not reachable here: the image is built without TensorRT
                    result["build_seconds_gpu"] = build_image(docker, "infra/Dockerfile.gpu", GPU_IMAGE,
                                                              {"BASE": BASE_IMAGE, "TENSORRT_INDEX": ""})
                result["gpu_image_ok"] = image_exists(docker, GPU_IMAGE)
                result["image_bytes_gpu"] = image_bytes(docker, GPU_IMAGE)
                result["image_bytes_pipeline"] = image_bytes(docker, IMAGE)
                result["image_bytes_serving"] = image_bytes(docker, SERVING_IMAGE)
                result["serving_image_share_of_pipeline"] = result["image_bytes_serving"] / result["image_bytes_pipeline"]
            with stages.stage("stack"):
                pg = cleanup.enter_context(stack.postgres())
                (args.work / "mlflow").mkdir(exist_ok=True)
                server = cleanup.enter_context(stack.mlflow_server(pg, args.work / "mlflow"))
            with stages.stage("pipeline"):
                result["pipeline"] = pipeline_in_containers(args.work, server, host, args.data, f"{pg}release")
                from yanjin.family import FAMILY

                members = result["pipeline"]["members"]
                result["family_pipeline_ok"] = (list(members) == list(FAMILY)
                                                and all(m["version"] == "1" for m in members.values()))
                result["steps_in_containers"] = result["pipeline"]["steps_in_containers"]
                if not result["family_pipeline_ok"]:
                    raise RuntimeError(f"the family pipeline ran but did not register every member: {members}")
            with stages.stage("trainjob"):
                result["trainjob"] = trainjob_pod_in_container(docker, server, args.data, args.work)
                result["trainjob_two_ranks_ok"] = result["trainjob"]["ranks"] == 2
                if not result["trainjob_two_ranks_ok"]:
                    raise RuntimeError(f"the Trainer pod's entrypoint did not train on 2 ranks: {result['trainjob']}")
            with stages.stage("serving"):
                result["serving"] = serving_in_container(docker, server, f"{pg}predictions", args.data, args.work)
                result["malformed_4xx_share"] = result["serving"]["malformed_4xx_share"]
                result["serving_container_ok"] = (result["serving"]["predict_ok"] and result["malformed_4xx_share"] == 1.0
                                                  and result["serving"]["serving_after_malformed"]
                                                  and result["serving"]["image_has_no_torch"]
                                                  and result["serving"]["predict_without_key"] == 401
                                                  and result["serving"]["feedback_with_client_key"] == 200
                                                  and result["serving"]["image_without_keys_refused"]
                                                  and result["serving"]["open_bind_refused"])
                if not result["serving_container_ok"]:
                    raise RuntimeError(f"serving in the lean image fell short: {result['serving']}")
            with stages.stage("gpu"):
                result["gpu"] = g = gpu_image_in_container(docker, server, f"{pg}predictions", args.work)
                offered = g["report"]["available"]
                result["gpu_providers_available"] = "TensorrtExecutionProvider" in offered and "CUDAExecutionProvider" in offered
                result["cuda_libraries_resolve"] = g["report"]["missing_libraries"].get("CUDAExecutionProvider") == []
                result["tensorrt_libraries_missing"] = g["report"]["missing_libraries"].get("TensorrtExecutionProvider")
                result["gpu_image_cpu_fallback_ok"] = (g["predict_status"] == 200 and g["provider"] == "CPUExecutionProvider"
                                                       and g["providers_available"] == ["CPUExecutionProvider"]
                                                       and bool(g["fallback_log_line"]))
                if not (result["gpu_providers_available"] and result["cuda_libraries_resolve"]
                        and result["gpu_image_cpu_fallback_ok"]):
                    raise RuntimeError(f"the GPU image fell short: {g}")
            with stages.stage("cronjob"):
                result["cronjob"] = drift_cronjob_in_container(docker, server, f"{pg}predictions")
            with stages.stage("purge"):
                result["purge"] = purge_cronjob_in_container(docker, server, f"{pg}predictions")
                result["purge_cronjob_ok"] = "recorded as #" in result["purge"]["output"] and "purge" in result["purge"]["recorded"]
                if not result["purge_cronjob_ok"]:
                    raise RuntimeError(f"the purge CronJob fell short: {result['purge']}")
            with stages.stage("controller"):
                result["controller"] = c = controller_in_container(docker, server, pg)
                result["controller_ok"] = (c["worse_rolled_back"] and c["better_left_shadow"] and c["better_awaits_approval"]
                                           and c["champion_while_waiting"] == "1" and c["self_approval_refused"]
                                           and c["better_promoted"] and c["champion_after"] == "3"
                                           and c["approved_by"] == ["anna"] and c["audit_verified"])
                if not result["controller_ok"]:
                    raise RuntimeError(f"the release controller's Deployment fell short: {c}")
            with stages.stage("retraining"):
                result["retraining"] = r = retraining_in_containers(args.work, server, pg)
                result["cluster_retraining_ok"] = (r["reviewed_in_training_set"] == len(REVIEWED)
                                                   and r["recorded_train"] == r["train_data"]
                                                   and r["train_data"].startswith("runs:/") and r["gate"] != "")
                if not result["cluster_retraining_ok"]:
                    raise RuntimeError(f"the cluster retraining with merged labels fell short: {r}")
    except Exception:
        pass  # recorded by the stage that failed
    finally:
        result |= {"stages": stages.report, "seconds_total": round(time.perf_counter() - stages.started, 1),
                   "ok": bool(stages.report) and all(s["ok"] for s in stages.report.values())}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "cluster_rehearsal.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
