"""A rollout end to end: two versions built by the tiny pipeline, the real server over HTTP, the controller
deciding after every chunk. Shadow first: the server scores the challenger beside the champion off the answer
path and puts the disagreements on the review queue; the reviewer labels only what the queue asks for."""
import json

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.serving.test_server import MODEL, free_port, start_server, stop, wait_ready
from yanjin.config import load_config
from yanjin.pipelines.run import LocalState, run_local
from yanjin.release.policy import RolloutPolicy
from yanjin.registry import alias_version
from yanjin.release.promotion import CHAMPION, history, promote
from yanjin.release.rehearsal import rehearse
from yanjin.serving.auth import add_key
from yanjin.serving.predlog import PredictionLog

from .conftest import release_for

POLICY = RolloutPolicy(plan="10,50,100", shadow_share=1.0, min_step_requests=30, accuracy_margin=0.05,
                       review_margin=0.15, max_step_requests=3000, label_wait_s=60)


def build_two_versions(state: LocalState, data_dir) -> tuple[list[str], list[str]]:
    """v1: the tiny profile as is. v2: the same recipe on training labels rotated among the six intents
    (a genuinely wrong model; a permissive gate lets it register, as an offline test set might).
    Returns the labelled test texts of those six intents, shuffled."""
    args = (str(data_dir / "test.csv"), str(data_dir / "categories.json"), state, None, "test-commit")
    assert run_local(load_config("tiny"), str(data_dir / "train.csv"), *args, adapt_corpus=[]).version == "1"
    six = sorted(json.loads((data_dir / "categories.json").read_text()))[:6]   # the tiny profile's intents
    rotate = {label: six[(i + 1) % 6] for i, label in enumerate(six)}
    train = pd.read_csv(data_dir / "train.csv")
    train["category"] = train["category"].map(lambda c: rotate.get(c, c))
    train.to_csv(state.root / "rotated.csv", index=False)
    permissive = load_config("tiny", ["gate.min_accuracy=0", "gate.min_macro_f1=0", "gate.max_ece=1",
                                      "gate.min_improvement=-1"])
    assert run_local(permissive, str(state.root / "rotated.csv"), *args, adapt_corpus=[]).version == "2"
    test = pd.read_csv(data_dir / "test.csv")
    test = test[test["category"].isin(six)].sample(frac=1, random_state=0)
    return list(test["text"]), list(test["category"])


@pytest.fixture(scope="module")
def registry(tmp_path_factory, data_dir):
    state = LocalState(tmp_path_factory.mktemp("rollout") / "state")
    return (state, *build_two_versions(state, data_dir))


@pytest.fixture(scope="module")
def served(registry):
    state, texts, labels = registry
    key = add_key(state.api_keys, "rehearsal", "reviewer", per_minute=100_000)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(state, port)
    try:
        assert wait_ready(url, proc), "server never became ready"
        log = PredictionLog(state.root / "predictions.db")
        yield release_for(MlflowClient(state.tracking_uri), state.ledger), log, url, texts, labels, key
        log.close()
    finally:
        stop(proc)


def test_worse_challenger_is_rolled_back_then_better_one_promoted(served):
    release, log, url, texts, labels, key = served
    client = release.client
    worse = rehearse(release, log, url, MODEL, "2", POLICY, texts, labels, key, poll_wait_s=0.6)
    print(f"\nworse challenger: {worse.status} after {worse.requests} requests ({worse.served_by}), "
          f"{worse.feedback} labels asked for and given")
    assert worse.status == "rolled_back" and "less accurate" in worse.reason
    assert alias_version(client, MODEL, CHAMPION) == "1"
    assert worse.served_by["challenger"] == 0      # judged in shadow: it never answered a client
    pairs = log.pairs(MODEL, "2", 0.0)   # the reviewer labelled what the queue asked for, and only that
    assert pairs and all((p["truth"] is not None) == (p["review_reason"] is not None) for p in pairs)
    assert all(p["inclusion_p"] is not None for p in pairs)
    info = httpx.post(f"{url}/info", json={}, timeout=10)
    assert info.json()["ab"]["share_set"] == 0.0

    promote(release, MODEL, "2", "rehearsal: a weak champion to beat", expected="1", force=True)
    better = rehearse(release, log, url, MODEL, "1", POLICY, texts, labels, key, poll_wait_s=0.6, seed=1)
    print(f"better challenger: {better.status} after {better.requests} requests ({better.served_by}), "
          f"{better.feedback} labels")
    assert better.status == "promoted", better.reason
    assert [(c["decision"], c["share"]) for c in better.checks if c["decision"] != "hold"] == [
        ("advance", 0.0), ("advance", 0.1), ("advance", 0.5), ("promote", 1.0)]   # out of shadow, then the plan
    assert 0 < better.served_by["challenger"] < better.served_by["champion"]   # the canary's keys, not half
    assert alias_version(client, MODEL, CHAMPION) == "1"
    changes = [e for e in history(release, MODEL) if e.action != "register"]  # the pipeline's registrations
    assert [e.action for e in changes] == ["rollout-start", "rollout-rollback", "promote", "rollout-start",
                                           "rollout-shadow-verdict", "rollout-advance", "rollout-advance",
                                           "rollout-promote"]
    assert changes[2].forced
