"""The cluster's code path minus Kubernetes: a real PostgreSQL, `mlflow server` on it over HTTP with
basic auth, the tiny pipeline registering through it, a compare-and-set promotion, and `yanjin
serve` answering from that registry with its prediction log and review queue on PostgreSQL."""
import os
import subprocess
import sys

import httpx
import pytest
from mlflow import MlflowClient

from tests.integration import stack
from tests.integration.stack import free_port, stop
from tests.serving.test_server import wait_ready
from yanjin.config import load_config
from yanjin.pipelines.run import LocalState, run_local
from yanjin.release.promotion import alias_version, history, promote
from yanjin.serving.auth import add_key
from yanjin.serving.predlog import PredictionLog

MODEL = "banking77-v1"


@pytest.fixture(scope="module")
def postgres():
    try:
        with stack.postgres() as url:
            yield url
    except FileNotFoundError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    with stack.mlflow_server(postgres, tmp_path_factory.mktemp("mlflow")) as server:
        os.environ.update(server.credentials)
        try:
            yield server.url
        finally:
            for name in server.credentials:
                os.environ.pop(name, None)


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
    token = add_key(state.api_keys, "crm-app", "client")
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
        feedback = {"prediction_id": result["prediction_id"], "label": "activate_my_card"}
        assert httpx.post(f"{url}/feedback", json=feedback, timeout=10).status_code == 401   # no key: nothing kept
        assert httpx.post(f"{url}/feedback", json=feedback, timeout=10,
                          headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        stop(proc)
    log = PredictionLog(predictions)                                      # same code, a PostgreSQL URL
    try:
        assert log.engine.dialect.name == "postgresql"
        assert [row["id"] for row in log.review_queue()] == [result["prediction_id"]]
        assert log.labelled() == []                                        # a client's word is not trusted by default
        assert log.labelled(trust_feedback=True) == [{"text": "my card still has not arrived", "label": "activate_my_card",
                                                      "source": "feedback"}]
        log.review(result["prediction_id"], "card_arrival", "anna")
        assert log.labelled() == [{"text": "my card still has not arrived", "label": "card_arrival", "source": "review"}]
        assert [(h["source"], h["given_by"]) for h in log.label_history(result["prediction_id"])] == [
            ("feedback", "crm-app"), ("review", "anna")]
    finally:
        log.close()
