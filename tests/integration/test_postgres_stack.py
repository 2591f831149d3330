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
from yanjin.registry import alias_version
from yanjin.registry.ledger import LEDGER_ENV, Ledger
from yanjin.registry.mirror import Release
from yanjin.release.promotion import history, promote
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
        env = server.credentials | {LEDGER_ENV: f"{postgres}release"}   # the pipeline's register step reads both
        os.environ.update(env)
        try:
            yield server.url
        finally:
            for name in env:
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
    serving = least_privilege(postgres, mlflow_server, tmp_path)    # the cluster's grants Job, run here
    release_role = postgres.replace("postgresql://yanjin@", "postgresql://yanjin_release:release-secret@")
    release = Release(client, Ledger(f"{release_role}release", create=False), "admin")
    entry = promote(release, MODEL, "1", "first production release", alias="production", expected=None)
    assert alias_version(client, MODEL, "production") == "1" and history(release, MODEL)[-1].hash == entry.hash
    assert release.ledger.history(MODEL)[-1].db_user == "yanjin_release"   # stamped by PostgreSQL, not the client
    import sqlalchemy as sa
    for statement in ("UPDATE release_audit SET principal = 'someone-else'", "DELETE FROM release_audit"):
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            with release.ledger.engine.begin() as conn:   # the release role may insert and read the audit, no more
                conn.exec_driver_sql(statement)
    owner = Ledger(f"{postgres}release", create=False)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):   # not even the owner, while the guard stands
        with owner.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM release_audit")
    assert release.ledger.verify() == []
    predictions = f"{postgres}predictions"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token = add_key(state.api_keys, "crm-app", "client")
    proc = subprocess.Popen([sys.executable, "-m", "yanjin.cli", "serve", "--model", MODEL, "--tracking-uri",
                             mlflow_server, "--prediction-log", serving["prediction_log"], "--state-dir",
                             str(state.root), "--port", str(port), "--set", "review_threshold=0.99"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ | serving["env"])
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


def least_privilege(postgres: str, mlflow_server: str, tmp_path) -> dict:
    """Run the grants of infra/k8s/base/least-privilege.yaml (its SQL with psql, its Python against the MLflow
    server as the admin) and check what they allow: the serving user reads the registry and cannot write it;
    the prediction-log role works in its database and cannot enter MLflow's."""
    import psycopg

    from tests.infra.test_manifests import K8S, by_kind, render
    from yanjin import registry as R

    grants = by_kind(render(K8S / "base"), "ConfigMap", "yanjin-grants")[0]["data"]
    (tmp_path / "predlog-roles.sql").write_text(grants["predlog-roles.sql"])
    (tmp_path / "mlflow-users.py").write_text(grants["mlflow-users.py"])
    (tmp_path / "release-role.sql").write_text(grants["release-role.sql"])
    for _ in range(2):  # the Job may run again: every part is idempotent
        subprocess.run([str(stack.pg_bin() / "psql"), f"{postgres}mlflow", "-v", "ON_ERROR_STOP=1",
                        *(a for role in ("owner", "predlog", "reader", "retention")
                          for a in ("-v", f"{role}_password={role}-secret")), "-f", str(tmp_path / "predlog-roles.sql")],
                       check=True, capture_output=True, text=True)
        owner = postgres.replace("postgresql://yanjin@", "postgresql+psycopg://yanjin_predlog_owner:owner-secret@")
        made = subprocess.run([sys.executable, "-m", "yanjin.cli", "log", "init"], capture_output=True, text=True,
                              env=os.environ | {"YANJIN_PREDICTION_LOG": f"{owner}predictions"})   # as the Job runs it
        assert made.returncode == 0 and "granted: yanjin_predlog, yanjin_predlog_reader, yanjin_retention" in made.stdout, \
            made.stdout + made.stderr[-2000:]
        assert "owner-secret" not in made.stdout + made.stderr
        init = subprocess.run([sys.executable, "-m", "yanjin.cli", "ledger", "init"], capture_output=True, text=True,
                              env=os.environ | {LEDGER_ENV: f"{postgres}release"})
        assert init.returncode == 0, init.stderr[-2000:]
        subprocess.run([str(stack.pg_bin() / "psql"), f"{postgres}release", "-v", "ON_ERROR_STOP=1", "-v",
                        "release_password=release-secret", "-f", str(tmp_path / "release-role.sql")],
                       check=True, capture_output=True, text=True)
        users = subprocess.run([sys.executable, str(tmp_path / "mlflow-users.py")], capture_output=True, text=True,
                               env=os.environ | {"MLFLOW_TRACKING_URI": mlflow_server, "SERVING_MLFLOW_USERNAME":
                                                 "yanjin-serving", "SERVING_MLFLOW_PASSWORD": "serving-secret-123",
                                                 "PIPELINE_MLFLOW_USERNAME": "yanjin-pipeline",
                                                 "PIPELINE_MLFLOW_PASSWORD": "pipeline-secret-123"})
        assert users.returncode == 0, users.stderr[-2000:]
    role = postgres.replace("postgresql://yanjin@", "postgresql://yanjin_predlog:predlog-secret@")
    roles_may_do_their_part_and_no_more(postgres)
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(f"{role}mlflow").close()
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(f"{role}mlflow_auth").close()
    data_experiment = MlflowClient(mlflow_server).get_experiment_by_name(R.CUSTOMER_DATA_EXPERIMENT).experiment_id
    env = {"MLFLOW_TRACKING_USERNAME": "yanjin-serving", "MLFLOW_TRACKING_PASSWORD": "serving-secret-123"}
    saved = {k: os.environ[k] for k in env}
    os.environ.update(env)
    try:
        reader = MlflowClient(mlflow_server)
        found = R.find_champion(MODEL, tmp_path / "read", tracking_uri=mlflow_server)   # reads and verifies
        assert found is not None and found.version == "1"
        from mlflow.exceptions import MlflowException
        with pytest.raises(MlflowException, match="Permission denied"):
            reader.set_registered_model_alias(MODEL, R.CHAMPION, "1")
        with pytest.raises(MlflowException, match="Permission denied"):
            reader.set_model_version_tag(MODEL, "1", "artifact_sha256", "0" * 64)
        customer_text_is_denied_to_serving(reader, mlflow_server, data_experiment, tmp_path)
    finally:
        os.environ.update(saved)
    os.environ.update({"MLFLOW_TRACKING_USERNAME": "yanjin-pipeline", "MLFLOW_TRACKING_PASSWORD": "pipeline-secret-123"})
    try:   # the pipeline's user keeps and reads customer rows, as the grants Job allowed it
        pipeline = MlflowClient(mlflow_server)
        assert R.download_training_split(pipeline, MODEL, "1", tmp_path / "pipeline") is not None
        split = tmp_path / "more" / R.TRAINING_DATA_FILE
        split.parent.mkdir()
        split.write_bytes(b"rows")
        kept = R.keep_customer_rows(pipeline, split, R.TRAINING_DATA_ARTIFACT, "stack check", {R.DATA_OF_TAG: MODEL})
        assert [f.path for f in pipeline.list_artifacts(kept, R.TRAINING_DATA_ARTIFACT)] == [
            f"{R.TRAINING_DATA_ARTIFACT}/{R.TRAINING_DATA_FILE}"]
    finally:
        os.environ.update(saved)
    return {"env": env, "prediction_log": f"{role.replace('postgresql://', 'postgresql+psycopg://')}predictions"}


def customer_text_is_denied_to_serving(reader, mlflow_server: str, experiment: str, tmp_path) -> None:
    """The serving user loads the model (checked above) but reaches no training row: not through the
    client, not by the artifact proxy's path, not by listing the experiment."""
    from mlflow.exceptions import MlflowException

    from yanjin import registry as R

    data_run = R.split_run(reader, reader.get_model_version(MODEL, "1").run_id)   # the model run names it
    assert reader.list_artifacts(reader.get_model_version(MODEL, "1").run_id, R.TRAINING_DATA_ARTIFACT) == []
    with pytest.raises(MlflowException, match="Permission denied"):
        reader.download_artifacts(data_run, R.TRAINING_DATA_ARTIFACT, str(tmp_path / "denied"))
    with pytest.raises(MlflowException, match="Permission denied"):
        reader.get_experiment_by_name(R.CUSTOMER_DATA_EXPERIMENT)
    with pytest.raises(R.LineageError, match="may not read its training split"):   # said, not taken for absent
        R.download_training_split(reader, MODEL, "1", tmp_path / "denied-split")
    file = f"{R.TRAINING_DATA_ARTIFACT}/{R.TRAINING_DATA_FILE}"
    for url in (f"{mlflow_server}/get-artifact?run_uuid={data_run}&path={file}",
                f"{mlflow_server}/api/2.0/mlflow/artifacts/list?run_id={data_run}&path={R.TRAINING_DATA_ARTIFACT}",
                f"{mlflow_server}/api/2.0/mlflow-artifacts/artifacts/{experiment}/{data_run}/artifacts/{file}"):
        assert httpx.get(url, auth=("yanjin-serving", "serving-secret-123"), timeout=10).status_code == 403, url


def roles_may_do_their_part_and_no_more(postgres: str) -> None:
    """Serving inserts answers and labels and sets the review fields; it cannot delete, rewrite a text or a
    label, or change the schema. The drift job only reads; retention reads and deletes."""
    import psycopg

    def as_role(role: str, password: str):
        return psycopg.connect(postgres.replace("postgresql://yanjin@", f"postgresql://{role}:{password}@") + "predictions",
                               autocommit=True)

    def refused(conn, statement: str) -> bool:
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            return True
        return False

    row = ("INSERT INTO predictions (id, created_at, text, label, confidence, model, version, variant, arm, "
           "latency_ms, needs_review) VALUES ('{id}', 1, 'a text', 'card_arrival', 0.5, 'm', '1', 'v1', 'champion', 1, true)")
    with as_role("yanjin_predlog", "predlog-secret") as serving:
        serving.execute(row.format(id="grant-check"))
        serving.execute("INSERT INTO labels (prediction_id, created_at, label, source, given_by) "
                        "VALUES ('grant-check', 2, 'card_arrival', 'review', 'anna')")
        serving.execute("UPDATE predictions SET reviewed_label = 'card_arrival', labelled_at = 2, disputed = false "
                        "WHERE id = 'grant-check'")
        for statement in ("DELETE FROM predictions", "DELETE FROM labels", "UPDATE predictions SET text = 'x'",
                          "UPDATE predictions SET label = 'x'", "UPDATE labels SET label = 'x'", "DROP TABLE labels",
                          "CREATE TABLE mine (x int)", "SELECT * FROM erasures"):
            assert refused(serving, statement), statement
    with as_role("yanjin_predlog_reader", "reader-secret") as reader:
        assert reader.execute("SELECT count(*) FROM predictions").fetchone()[0] >= 1
        for statement in (row.format(id="reader-insert"), "DELETE FROM predictions", "UPDATE predictions SET label = 'x'"):
            assert refused(reader, statement), statement
    with as_role("yanjin_retention", "retention-secret") as retention:
        assert refused(retention, row.format(id="retention-insert")) and refused(retention, "UPDATE predictions SET text = 'x'")
        retention.execute("DELETE FROM labels WHERE prediction_id = 'grant-check'")
        retention.execute("DELETE FROM predictions WHERE id = 'grant-check'")
