"""The cluster's code path minus Kubernetes: a real PostgreSQL, `mlflow server` on it over HTTP with
basic auth, the tiny pipeline registering through it, a compare-and-set promotion, and `yanjin
serve` answering from that registry with its prediction log and review queue on PostgreSQL."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from tests.serving.test_server import free_port, stop, wait_ready
from yanjin.config import load_config
from yanjin.pipelines.run import LocalState, run_local
from yanjin.release.promotion import alias_version, history, promote
from yanjin.serving.predlog import PredictionLog

ADMIN_PASSWORD = "yanjin-ci-" + os.urandom(8).hex()
MODEL = "banking77-v1"


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL not installed: `make test` installs Debian's postgresql package")
    return found[-1].parent


def as_postgres_user(args: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` account then."""
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in args)] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on a free port; yields a URL prefix ending in the host:port/.
    Its folder is outside pytest's root-only temporary tree, which the postgres account cannot enter."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="yanjin-pg-"))
    data, port = folder / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    bin_dir = pg_bin()
    made = subprocess.run(as_postgres_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "yanjin", "--auth=trust"]),
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    subprocess.run(as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                                     f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, capture_output=True)
    try:
        for db in ("mlflow", "mlflow_auth", "predictions"):
            subprocess.run(as_postgres_user([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                                             "yanjin", db]), check=True, capture_output=True)
        yield f"postgresql://yanjin@127.0.0.1:{port}/"
    finally:
        subprocess.run(as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """`mlflow server` with the basic-auth app, metadata and users in PostgreSQL, artifacts proxied."""
    folder = tmp_path_factory.mktemp("mlflow")
    ini = folder / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {postgres}mlflow_auth\nadmin_username = admin\n"
                   f"admin_password = {ADMIN_PASSWORD}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = free_port()
    env = os.environ | {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex()}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                             "--backend-store-uri", f"{postgres}mlflow", "--artifacts-destination",
                             (folder / "artifacts").as_uri(), "--serve-artifacts", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(folder / "server.log", "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError((folder / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", ADMIN_PASSWORD
        yield url
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
        stop(proc)


def test_pipeline_registry_promotion_and_serving_on_postgres(postgres, mlflow_server, data_dir, tmp_path):
    anonymous = httpx.get(f"{mlflow_server}/api/2.0/mlflow/registered-models/search", timeout=10)
    assert anonymous.status_code == 401                                   # auth is on

    state = LocalState(tmp_path / "state")
    outcome = run_local(load_config("tiny"), str(data_dir / "train.csv"), str(data_dir / "test.csv"),
                        str(data_dir / "categories.json"), state, mlflow_server, "test-commit", adapt_corpus=[])
    assert outcome.gate == "register" and outcome.version == "1"
    assert not (state.root / "mlflow.db").exists()                        # nothing went to the embedded SQLite

    client = MlflowClient(mlflow_server)
    entry = promote(client, MODEL, "1", "first production release", alias="production", expected=None, who="ci")
    assert alias_version(client, MODEL, "production") == "1" and history(client, MODEL)[-1] == entry

    predictions = f"{postgres}predictions"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "yanjin.cli", "serve", "--model", MODEL, "--tracking-uri",
                             mlflow_server, "--prediction-log", predictions, "--state-dir", str(state.root),
                             "--port", str(port), "--set", "review_threshold=0.99"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_ready(url, proc), "server never became ready"
        r = httpx.post(f"{url}/predict", json={"items": [{"text": "my card still has not arrived", "key": "u1"}]},
                       timeout=30)
        assert r.status_code == 200, r.text
        result = r.json()[0]
        assert result["version"] == "1" and result["needs_review"]
        assert httpx.post(f"{url}/feedback", json={"prediction_id": result["prediction_id"],
                                                    "label": "activate_my_card"}, timeout=10).status_code == 200
    finally:
        stop(proc)
    log = PredictionLog(predictions)                                      # same code, a PostgreSQL URL
    try:
        assert log.engine.dialect.name == "postgresql"
        assert [row["id"] for row in log.review_queue()] == [result["prediction_id"]]
        log.review(result["prediction_id"], "activate_my_card")
        assert log.labelled() == [{"text": "my card still has not arrived", "label": "activate_my_card", "source": "review"}]
    finally:
        log.close()
