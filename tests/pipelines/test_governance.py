"""What an auditor and a new user get from one real tiny run under kfp.local and a real MLflow: the model
card logged at registration, `reproduce` rebuilding the version from its record, `status`, and the
quiet console the run was watched through."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from yanjin import registry as R
from yanjin.config import load_config
from yanjin.pipelines.console import watched
from yanjin.pipelines.pipeline import DEFAULT_IMAGE, build_pipeline
from yanjin.pipelines.reproduce import ReproduceError, reproduce
from yanjin.pipelines.run import LocalState, run_local

MODEL = "banking77-v1"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def yanjin(*args: str) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it: without the MLFLOW_TRACKING_URI earlier tests of this
    session left in the environment (mlflow.set_tracking_uri exports it), which would point it elsewhere."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([str(Path(sys.executable).with_name("yanjin")), *args], capture_output=True, text=True,
                          env=env)


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir):
    """One tiny V1 registered through the real runner, watched by the console as `yanjin pipeline run` does."""
    tmp = tmp_path_factory.mktemp("governance")
    state, screen = LocalState(tmp / "state"), io.StringIO()
    with watched(build_pipeline(DEFAULT_IMAGE, None), state.root, "v1/tiny", prefix="v1: ", out=screen) as watch:
        outcome = run_local(load_config("tiny"), str(data_dir / "train.csv"), str(data_dir / "test.csv"),
                            str(data_dir / "categories.json"), state, None, COMMIT)
    assert outcome.version == "1"
    return state, outcome, screen.getvalue(), watch.log, R.client(state.tracking_uri)


# -- the model card --------------------------------------------------------------------------------------
def test_the_card_is_logged_with_the_version_and_shown_in_the_mlflow_ui(built):
    _, outcome, _, _, client = built
    run_id = outcome.evaluation["run_id"]
    card = Path(client.download_artifacts(run_id, R.CARD_MARKDOWN)).read_text()
    html = Path(client.download_artifacts(run_id, R.CARD_HTML)).read_text()
    for section in ("## Intended use", "## Out-of-scope use", "## Training data", "### Calibration and review",
                    "### By text length", "### Per intent", "## Known limits", "## Gate", "## Lineage"):
        assert section in card, section
    assert "<table>" in html and "Per intent" in html
    description = client.get_model_version(MODEL, "1").description
    assert description.startswith(f"# Model card: {MODEL} version 1") and len(description) <= 5000


def test_the_card_states_the_record(built, data_dir):
    _, outcome, _, _, client = built
    card = Path(client.download_artifacts(outcome.evaluation["run_id"], R.CARD_MARKDOWN)).read_text()
    tags = client.get_model_version(MODEL, "1").tags
    assert tags["data_sha256"] in card and tags["training_data_sha256"] in card and COMMIT in card
    assert "CC BY 4.0" in card                      # banking77 recognised by its published digests
    assert "6 intents" in card and "Seeds:** training 13, data split 13" in card
    assert f"{float(tags['accuracy']):.4f}"[:6] in card
    # every test intent has its row; the review share is the one evaluation measured
    assert all(f"| {label} |" in card for label in pd.read_parquet(
        Path(client.download_artifacts(R.split_run(client, outcome.evaluation["run_id"]), R.TRAINING_DATA_ARTIFACT))
        / R.TRAINING_DATA_FILE
    )["label"].unique())
    assert f"**{outcome.evaluation['review_share']:.1%} of the test set**" in card
    assert "register @champion v– → v1 (the first version)" in card


def test_yanjin_card_prints_it_and_writes_html(built, tmp_path):
    state, *_ = built
    out = yanjin("card", MODEL, "1", "--state-dir", str(state.root), "--html", str(tmp_path / "card.html"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"# Model card: {MODEL} version 1") and (tmp_path / "card.html").is_file()
    missing = yanjin("card", MODEL, "7", "--state-dir", str(state.root))
    assert missing.returncode == 1 and "banking77-v1 v7" in missing.stderr


# -- reproduce ---------------------------------------------------------------------------------------------
def test_a_version_is_rebuilt_from_its_record_and_matches(built):
    state, outcome, _, _, client = built
    result = reproduce(MODEL, "1", state, None, "another-commit", tolerance=0.01)
    assert result.reproduced and result.max_metric_delta <= 0.01, result.differences
    assert result.figures["accuracy"]["recorded"] == pytest.approx(outcome.evaluation["accuracy"])
    assert result.commit == {"recorded": COMMIT, "running": "another-commit", "same": False}
    assert any("code differs" in n for n in result.notes)
    # nothing registered; the rebuild's run says what it reproduced and holds the comparison
    assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")] == ["1"]
    run = client.get_run(result.run_id)
    assert run.data.tags[R.RUN_REPRODUCES] == f"{MODEL}/1" and run.data.tags[R.RUN_GATE] in ("register", "reject")
    logged = json.loads(Path(client.download_artifacts(result.run_id, R.REPRODUCTION)).read_text())
    assert logged["reproduced"] is True


def test_a_figure_beyond_the_tolerance_is_listed_and_latency_is_not_judged(built):
    """The comparison itself: a rebuilt accuracy 0.05 lower is listed; latency never is."""
    from yanjin.pipelines.reproduce import compare

    _, outcome, *_, client = built
    tags = R.version_tags(client, MODEL, "1")
    figures, differences, worst = compare(tags, outcome.evaluation | {"accuracy": outcome.evaluation["accuracy"] - 0.05},
                                          0.01)
    assert worst == pytest.approx(0.05) and len(differences) == 1 and differences[0].startswith("accuracy")
    assert not figures["latency_ms_p50_b1"]["judged"]


def test_other_data_or_another_commit_is_refused_before_anything_runs(built, tmp_path, data_dir):
    state, _, _, _, client = built
    runs_before = len(client.search_runs([client.get_experiment_by_name(MODEL).experiment_id]))
    changed = pd.read_csv(data_dir / "train.csv")
    changed.loc[0, "text"] = changed.loc[0, "text"] + " please"
    changed.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(ReproduceError, match="the data differs from the version's record"):
        reproduce(MODEL, "1", state, None, COMMIT, train=tmp_path / "train.csv")
    with pytest.raises(ReproduceError, match=f"built by commit {COMMIT}"):
        reproduce(MODEL, "1", state, None, "another-commit", same_commit=True)
    assert len(client.search_runs([client.get_experiment_by_name(MODEL).experiment_id])) == runs_before


# -- status -----------------------------------------------------------------------------------------------
def test_status_shows_the_family_on_one_screen(built):
    state, *_ = built
    out = yanjin("status", "--state-dir", str(state.root))
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    v1 = next(line for line in lines if line.startswith("v1 "))
    assert v1.count("#1 0.") == 2 and "never checked" in v1     # champion and challenger, with accuracy and age
    assert any(line.startswith("lite") and "not registered" in line for line in lines)
    assert "review queue: no prediction log yet" in out.stdout and "next quarterly retraining:" in out.stdout
    assert not state.prediction_log.exists()                       # looking created nothing


# -- the console --------------------------------------------------------------------------------------------
def test_the_console_shows_a_line_per_step_and_keeps_the_chatter_in_the_log(built):
    _, _, screen, log, _ = built
    lines = screen.splitlines()
    done = [line for line in lines if line.lstrip().startswith("✓")]
    assert [d.split()[1] for d in done] == ["v1:"] * 8, screen          # every step, once, with a duration
    assert all(d.rstrip().endswith("s") for d in done)
    assert any("Fine-tune" in d for d in done) and any("Register in MLflow" in d for d in done)
    assert sum("val accuracy" in line for line in lines) == 3            # an epoch line each, no bar without a terminal
    assert len(screen) < 3000, len(screen)
    chatter = log.read_text()
    assert "KFP Executor" in chatter and "config_json" in chatter and "KFP Executor" not in screen
    timings = json.loads((log.parent / "timings.json").read_text())["v1/tiny"]
    assert timings["train-model"] > 0                                     # the next run's estimate starts from these


def test_a_failing_step_shows_its_error_without_the_chatter(tmp_path, data_dir):
    train = pd.read_csv(data_dir / "train.csv").rename(columns={"text": "utterance"})
    train.to_csv(tmp_path / "train.csv", index=False)
    out = yanjin("pipeline", "run", "--profile", "tiny", "--variant", "v1", "--train", str(tmp_path / "train.csv"),
                 "--test", str(data_dir / "test.csv"), "--state-dir", str(tmp_path / "state"))
    assert out.returncode == 1
    assert "✗ v1: Validate data (Great Expectations)" in out.stdout
    assert "missing column(s) ['text']" in out.stderr and "pipeline stopped" in out.stderr
    assert "KFP Executor" not in out.stdout and len(out.stdout) < 2000
