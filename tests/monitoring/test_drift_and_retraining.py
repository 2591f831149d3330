"""Drift on a real served version (tiny pipeline), real Evidently, real prediction log; and a
retraining run that takes reviewed labels and registers a challenger. The version is trained the way
a user with their own data does it: Parquet files with other column names and a label list of another
name, through `yanjin pipeline run`; retraining, reproduce and the drift check then find it all by the
version's record alone."""
import html
import json
import time
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from typer.testing import CliRunner

from yanjin.cli import app
from yanjin.components.data import DataSource, local_file
from yanjin.config import DataParams
from yanjin.monitoring.drift import MonitorParams
from yanjin.monitoring.monitor import ServedMonitor
from yanjin.monitoring.retrain import retraining_data
from yanjin.monitoring.scenarios import fortune_texts, planted
from yanjin.pipelines.run import LocalState
from yanjin.serving.predlog import PredictionLog
from yanjin.registry import split_run
from yanjin.traffic.store import Prediction, predictions

MODEL = "banking77-v1"
DATA = None   # the banking77 folder, set by the fixture
SMALL = ["monitor.reference_size=60", "monitor.window=60", "monitor.min_window=40"]
PARAMS = MonitorParams(reference_size=60, window=60, min_window=40)
ENV = {"COLUMNS": "300", "MLFLOW_TRACKING_URI": None}   # mlflow.set_tracking_uri in earlier tests exports one


def users_own_data(folder) -> dict:
    """banking77 as a user's Parquet: columns utterance/intent, the label list in labels.json."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in ("train", "test"):
        frame = pd.read_csv(DATA / f"{split}.csv").rename(columns={"text": "utterance", "category": "intent"})
        frame.assign(channel="app").to_parquet(folder / f"my_{split}.parquet", index=False)   # an extra column
        files[split] = folder / f"my_{split}.parquet"
    files["labels"] = folder / "labels.json"
    files["labels"].write_text((DATA / "categories.json").read_text())
    return files


USER_COLUMNS = ["--set", "data.text_column=utterance", "--set", "data.label_column=intent"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):
    global DATA
    DATA = data_dir
    root = tmp_path_factory.mktemp("monitor")
    state = LocalState(root / "state")
    files = users_own_data(root / "my-data")
    result = CliRunner().invoke(app, ["pipeline", "run", "--profile", "tiny", "--variant", "v1", "--train",
                                      str(files["train"]), "--test", str(files["test"]), "--labels",
                                      str(files["labels"]), "--state-dir", str(state.root)] + USER_COLUMNS, env=ENV)
    assert result.exit_code == 0, result.output
    six = sorted(json.loads((data_dir / "categories.json").read_text()))[:6]
    test = pd.read_csv(data_dir / "test.csv")
    test = test[test["category"].isin(six)].sample(frac=1.0, random_state=0).reset_index(drop=True)
    client = MlflowClient(state.tracking_uri)
    return state, client, test, six


@pytest.fixture(scope="module")
def monitor(served):
    state, client, test, _ = served
    m = ServedMonitor.load(client, MODEL, PARAMS)
    cal = test[:120]["text"].tolist()   # calibration traffic; windows below come from the other half
    m.calibrate(client, [cal[i:i + 60] for i in (0, 30, 60)] + [m.rest["text"].tolist()[:48]])
    return m


def test_reference_is_the_versions_logged_training_split(served, monitor):
    state, client, _, six = served
    run_id = client.get_model_version(MODEL, "1").run_id
    assert client.list_artifacts(run_id, "training_data") == []                # not with the model serving reads
    assert [a.path for a in client.list_artifacts(split_run(client, run_id), "training_data")]   # kept by validate-data
    assert len(monitor.reference) + len(monitor.rest) == 108                 # 6 intents x 24, 75% for training
    assert monitor.calibrated and set(monitor.params.thresholds) == {"chars", "tokens", "oov_rate", "confidence",
                                                                      "novelty", "label"}


def test_same_distribution_is_not_flagged_and_planted_shifts_are(served, monitor):
    _, _, test, _ = served
    held_out = test[120:]["text"].tolist()
    clean = [monitor.check(held_out[i:i + 60]) for i in (0, 30, 60)]
    assert [r.verdict for r in clean] == ["no_drift"] * 3, [r.scores for r in clean]
    ood = fortune_texts()
    for scenario in ("ood_100", "ood_25", "truncated", "typos"):
        windows = planted(scenario, test[120:], 60, 3, ood, [], seed=1)
        verdicts = [monitor.check(w) for w in windows]
        assert all(r.verdict == "drift" for r in verdicts), (scenario, [r.scores for r in verdicts])
    assert "novelty" in monitor.check(planted("ood_100", test[120:], 60, 1, ood, [], seed=2)[0]).drifted_columns


def test_too_few_requests_give_no_verdict(served, monitor):
    _, _, test, _ = served
    result = monitor.check(test["text"].tolist()[:10])
    assert result.verdict == "insufficient_data" and result.snapshot is None


def log_traffic(state: LocalState, texts: list[str]) -> PredictionLog:
    log = PredictionLog(state.root / "predictions.db")
    now = time.time()
    log.append([Prediction(str(uuid.uuid4()), now + i * 1e-3, t, "activate_my_card", 0.9, MODEL, "1", "v1", "champion",
                           1.0, False) for i, t in enumerate(texts)])
    log.flush()
    return log


def test_cli_check_reports_logs_and_fails_on_drift(served, monitor, tmp_path):
    state, client, _, _ = served
    log_traffic(state, fortune_texts()[:60]).close()
    args = ["monitor", "check", MODEL, "--state-dir", str(state.root), "--profile", "tiny", "--fail-on-drift",
            "--output-dir", str(tmp_path / "out"), "--workspace", str(tmp_path / "ws")] + \
        sum([["--set", s] for s in SMALL], [])
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 1, result.output
    assert "drift on 60 requests (thresholds calibrated)" in result.output
    summary = json.loads(next((tmp_path / "out").glob("drift-*.json")).read_text())
    assert summary["verdict"] == "drift" and "novelty" in summary["drifted_columns"]
    assert set(summary) >= {"drift_share", "drifted_columns", "low_confidence_share", "scores", "thresholds"}
    assert next((tmp_path / "out").glob("drift-*-evidently.html")).stat().st_size > 10_000
    page = next(p for p in (tmp_path / "out").glob("drift-*.html") if not p.name.endswith("-evidently.html")).read_text()
    assert f"<title>Drift check of {MODEL} version 1: drift</title>" in page      # what, which version, the verdict
    assert "never seen in the training texts" in page and "DRIFTED" in page     # each feature said, its threshold
    assert any(html.escape(t) in page for t in fortune_texts()[:60])              # the window's novel texts, shown
    assert any(f"<td>{name}</td>" in page for name in monitor.featurizer.classifier.labels)   # intents by name
    runs = client.search_runs([client.get_experiment_by_name(f"{MODEL}-monitoring").experiment_id])
    assert runs[0].data.tags["verdict"] == "drift" and runs[0].data.metrics["drift_share"] > 0
    from evidently.ui.workspace import Workspace
    ws = Workspace(str(tmp_path / "ws"))
    assert len(ws.list_runs(ws.search_project(f"{MODEL} drift")[0].id)) == 1


def test_retraining_data_dedups_and_guards_the_test_set(data_dir, tmp_path):
    train = pd.read_csv(data_dir / "train.csv")
    test = pd.read_csv(data_dir / "test.csv")
    labelled = [{"text": "My new card needs activating, how?", "label": "activate_my_card"},
                {"text": "my new card needs  ACTIVATING, how?", "label": "activate_my_card"},   # same text again
                {"text": train["text"][0], "label": train["category"][0]},                      # already in train
                {"text": test["text"][0], "label": test["category"][0]},                        # would leak
                {"text": "what's the weather like", "label": "weather"}]                         # unknown label
    source = DataSource.in_folder(data_dir, DataParams())
    out = retraining_data(source, labelled, tmp_path)
    assert out.added == 1 and out.dropped == {"unknown_label": 1, "in_test_set": 1, "duplicate": 2}
    assert len(pd.read_csv(out.path)) == len(train) + 1 and out.source.test == source.test


REVIEWED = [("I got my card today, how do I turn it on?", "activate_my_card"),
            ("Is there a minimum age to open an account with you?", "age_limit"),
            ("Can I add my card to my phone's wallet for contactless payments?", "apple_pay_or_google_pay"),
            ("Which cash machines can I use without a fee?", "atm_support"),
            ("Set my balance to refill itself when it drops low", "automatic_top_up"),
            ("I sent money from my other bank yesterday and my balance still shows the old amount",
             "balance_not_updated_after_bank_transfer")]


def test_retraining_with_nothing_new_says_so_and_registers_nothing(served, tmp_path):
    """No trusted labels, the champion's own rows, recipe and code: the same bytes would come out."""
    state, client, _, _ = served
    before = len(client.search_model_versions(f"name='{MODEL}'"))
    result = CliRunner().invoke(app, ["monitor", "retrain", MODEL, "--state-dir", str(state.root), "--profile", "tiny",
                                      "--prediction-log", str(tmp_path / "empty.db")], env=ENV)
    assert result.exit_code == 0, result.output
    assert "nothing changed since v1: no new trusted labels" in result.output and "not retrained" in result.output
    assert len(client.search_model_versions(f"name='{MODEL}'")) == before


def test_retraining_takes_reviewed_labels_and_registers_a_challenger(served):
    state, client, _, _ = served
    planted = "Send all the money in my account to IBAN GB00 0000 please"   # a client's label: not trusted
    log = log_traffic(state, [t for t, _ in REVIEWED] + [planted])
    with log.engine.connect() as conn:   # the ids of the rows just logged
        ids = dict(conn.execute(sa.select(predictions.c.text, predictions.c.id).where(
            predictions.c.text.in_([t for t, _ in REVIEWED] + [planted]))).all())
    for text, label in REVIEWED:                       # a person works the review queue
        log.review(ids[text], label, "anna")
    log.feedback(ids[planted], "automatic_top_up", "mallory")
    log.close()
    result = CliRunner().invoke(app, ["monitor", "retrain", MODEL, "--state-dir", str(state.root), "--profile", "tiny",
                                      "--reason", "test", "--set", "data.max_per_class=0",
                                      "--set", "gate.min_improvement=-1"], env=ENV)
    assert result.exit_code == 0, result.output
    assert "6 labelled rows added" in result.output and "as @challenger" in result.output
    assert "KFP Executor" not in result.output and "Register in MLflow" in result.output   # a line a step, no chatter
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert version.version != 1 and client.get_model_version_by_alias(MODEL, "champion").version == 1
    assert version.tags["feedback_rows"] == "6" and version.tags["retraining_reason"] == "test"
    params = client.get_run(version.run_id).data.params
    trained_on = pd.read_parquet(params["data.train"])              # the user's format and columns
    assert list(trained_on.columns) == ["utterance", "intent"] and params["data.labels"].endswith("labels.json")
    assert set(t for t, _ in REVIEWED) <= set(trained_on["utterance"])
    assert planted not in set(trained_on["utterance"])   # monitor.trust_client_feedback is off


def test_reproduce_finds_the_users_own_files_by_the_record(served, tmp_path, monkeypatch):
    state, client, _, _ = served
    monkeypatch.chdir(tmp_path)   # another folder than the one it was trained from
    result = CliRunner().invoke(app, ["reproduce", MODEL, "1", "--state-dir", str(state.root),
                                      "--output", str(tmp_path / "r.json")], env=ENV)
    assert result.exit_code == 0, result.output
    rebuilt = json.loads((tmp_path / "r.json").read_text())
    assert rebuilt["reproduced"] and rebuilt["data"]["labels"].endswith("labels.json"), rebuilt


def test_the_cluster_path_merges_the_labels_itself_and_the_pipeline_reads_them_by_uri(served, tmp_path):
    """What a KFP submission sends (monitoring.job.cluster_training_set), read by the validate step as a pod
    would: from the registry's store by its runs:/ URI. The training itself is rehearsed in containers."""
    from yanjin.components.stages import validate_and_split
    from yanjin.monitoring.job import champion_recipe, cluster_training_set

    state, client, _, _ = served
    log = PredictionLog(state.root / "predictions.db")   # the reviewers' labels of the retraining test are there
    try:
        config = champion_recipe(client, MODEL, [])
        params = cluster_training_set(client, MODEL, config, log, None, state, "drift", say=lambda _: None)
    finally:
        log.close()
    assert params["train_data"].startswith("runs:/") and params["label_set"].endswith("labels.json")
    v = validate_and_split(params["train_data"], params["test_data"], params["label_set"], config, state.tracking_uri,
                           "cluster-retraining-check", str(state.artifact_root), "test-commit",
                           *(str(tmp_path / f"{s}.parquet") for s in ("train", "val", "test")))
    recorded = client.get_run(v.run_id).data.params
    assert recorded["data.train"] == params["train_data"] and recorded["data.labels"] == params["label_set"]
    merged = pd.read_parquet(local_file(params["train_data"], state.tracking_uri))
    assert list(merged.columns) == ["utterance", "intent"] and {t for t, _ in REVIEWED} <= set(merged["utterance"])



def test_erasing_a_reviewed_text_reaches_every_copy_and_names_the_versions_trained_on_it(served):
    """A customer's erasure request after their text was reviewed, exported for retraining and trained on: the
    log, its labels, the retraining files and the MLflow copies lose it; the record keeps no text and names
    the version that learnt from it. Runs last in this module: it removes what the tests above used."""
    import os
    import stat

    from yanjin.registry import ERASED_ROWS_TAG, RETRAINING_SET_ARTIFACT, TRAINING_DATA_ARTIFACT

    state, client, _, _ = served
    text = REVIEWED[0][0]
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    result = CliRunner().invoke(app, ["log", "erase", "--text", "  " + text.upper() + " ", "--state-dir", str(state.root)],
                                env=ENV)
    assert result.exit_code == 0, result.output
    assert f"trained on an erased text: {MODEL} v{challenger.version}" in result.output
    assert f"{MODEL} v1 " not in result.output + " "          # v1 never saw the traffic
    gone = {text.strip().lower()}

    def held(frame) -> bool:
        return any(isinstance(v, str) and v.strip().lower() in gone for col in frame.columns for v in frame[col])

    store = PredictionLog(state.root / "predictions.db")
    try:
        assert store.ids_with_text(text) == []
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(sa.table("labels"))
                                .where(sa.text("given_by = 'anna'"))).scalar_one() == len(REVIEWED) - 1
        records = store.erasure_records()
    finally:
        store.close()
    splits = [p for p in (state.root / "kfp").rglob("*") if p.name in ("train_set", "val_set")]
    assert splits and (state.retraining / "x.parquet").parent.is_dir()
    for path in [*state.retraining.rglob("*.parquet"), *splits]:
        assert not held(pd.read_parquet(path)), path
    copies = []
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000):
        for folder in (TRAINING_DATA_ARTIFACT, RETRAINING_SET_ARTIFACT):
            for f in client.list_artifacts(run.info.run_id, folder):
                frame = pd.read_parquet(client.download_artifacts(run.info.run_id, f.path))
                copies.append(run.info.run_id)
                assert not held(frame), f.path
    split = split_run(client, challenger.run_id)          # the version's split, kept apart from its model
    assert split != challenger.run_id and split in copies and client.get_run(split).data.tags[ERASED_ROWS_TAG] == "1"
    assert len(records) == 1 and records[0]["action"] == "erase" and records[0]["versions"] == [f"{MODEL} v{challenger.version}"]
    assert text.lower() not in json.dumps(records).lower() and records[0]["predictions"] >= 1
    listed = CliRunner().invoke(app, ["log", "erasures", "--state-dir", str(state.root)], env=ENV)
    assert listed.exit_code == 0 and "#1" in listed.output and text.lower() not in listed.output.lower()
    assert stat.S_IMODE(os.stat(state.root / "predictions.db").st_mode) == 0o600
    again = CliRunner().invoke(app, ["log", "erase", "--prediction-id", "no-such-id", "--state-dir", str(state.root)], env=ENV)
    assert again.exit_code != 0 and "no logged prediction no-such-id" in again.output and "Traceback" not in again.output
