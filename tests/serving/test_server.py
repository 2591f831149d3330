"""The real server: `yanjin serve` as a subprocess (BentoML + ONNX Runtime), talked to over HTTP."""
import json
import os
import subprocess
import sys
import tempfile
import re
import threading
import time

import httpx
import mlflow
import pytest

from tests.integration.stack import exited, free_port, stop, wait_http  # noqa: F401 - other tests take free_port, stop from here
from tests.serving.malformed import malformed_requests
from tests.tampering import flip_byte, release_of, stored_bundle
from yanjin.registry import CHALLENGER, CHAMPION, ONNX_FILE, VersionTags, register_bundle
from yanjin.serving.auth import add_key
from yanjin.serving.predlog import PredictionLog
from yanjin.config import load_config
from yanjin.pipelines.run import LocalState, run_local

MODEL = "banking77-v1"


def reregister(client, version: str) -> str:
    """The same files as `version`, registered again from a new run: something to swap to."""
    mv = client.get_model_version(MODEL, version)
    run = client.create_run(client.get_run(mv.run_id).info.experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{version}", dst_path=tmp)
        tags = VersionTags.from_tags({k: v for k, v in mv.tags.items() if k != "artifact_sha256"})
        return register_bundle(bundle, MODEL, run.info.run_id, tags, release_of(client))


@pytest.fixture(scope="module")
def registry(tmp_path_factory, data_dir):
    state = LocalState(tmp_path_factory.mktemp("serving") / "state")
    run_local(load_config("tiny"), str(data_dir / "train.csv"), str(data_dir / "test.csv"),
              str(data_dir / "categories.json"), state, None, "test-commit", adapt_corpus=[])
    mlflow.set_tracking_uri(state.tracking_uri)
    client = mlflow.MlflowClient()
    assert reregister(client, "1") == "2"
    tampered = reregister(client, "1")
    flip_byte(stored_bundle(client, MODEL, tampered) / ONNX_FILE)  # the stored bytes, not the tag: it still says what was registered
    client.set_registered_model_alias(MODEL, CHALLENGER, "2")
    keys = {name: add_key(state.api_keys, name, role, per_minute)
            for name, role, per_minute in (("crm-app", "client", 6000), ("anna", "reviewer", 6000),
                                           ("ben", "reviewer", 6000), ("burst", "client", 3))}
    yield state, client, tampered, keys
    mlflow.set_tracking_uri(None)


def start_server(state: LocalState, port: int, *settings: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "yanjin.cli", "serve", "--model", MODEL, "--state-dir", str(state.root),
            "--port", str(port), "--set", "poll_seconds=0.5"]
    for s in settings:
        args += ["--set", s]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> bool:
    return wait_http(f"{url}/readyz", exited(proc, proc.stderr.read), timeout)


@pytest.fixture(scope="module")
def server(registry):
    state, client, tampered, keys = registry
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(state, port, "challenger_share=0.5", "review_threshold=0.99", "max_chars=500",
                        "max_items=16", "max_body_bytes=20000", "require_log=true")
    try:
        assert wait_ready(url, proc), "server never became ready"
        yield url, state, client, tampered, keys
    finally:
        stop(proc)


def predict(url: str, items: list[dict], **kw) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"items": items}, timeout=30, **kw)


def test_prediction_carries_everything_a_caller_needs(server):
    url, *_ = server
    r = predict(url, [{"text": "my card has not arrived yet", "key": "u1"}, {"text": "how do I top up?"}])
    assert r.status_code == 200, r.text
    first, second = r.json()
    assert set(first) == {"prediction_id", "label", "confidence", "top_k", "needs_review", "truncated", "share_read",
                          "model", "version", "variant", "arm", "error"}
    assert not first["truncated"] and first["share_read"] == 1.0
    assert first["error"] is None and second["error"] is None
    assert first["model"] == MODEL and first["variant"] == "v1" and first["arm"] in (CHAMPION, CHALLENGER)
    assert first["version"] == {"champion": "1", "challenger": "2"}[first["arm"]]
    assert len(first["top_k"]) == 3 and first["top_k"][0]["label"] == first["label"]
    assert first["top_k"][0]["confidence"] == pytest.approx(first["confidence"])
    assert first["needs_review"] == (first["confidence"] < 0.99)
    assert first["prediction_id"] != second["prediction_id"]


def test_a_text_longer_than_the_model_reads_says_so_and_goes_to_review(server):
    url, state, *_ = server
    complaint = ("I ordered a replacement card three weeks ago after the old one was swallowed by a cash machine, "
                 "and the app still says it is on its way; meanwhile my rent is due, the branch told me to call, "
                 "and the phone line keeps me waiting for forty minutes before it hangs up on me every time.")
    r = predict(url, [{"text": complaint}])
    assert r.status_code == 200, r.text
    (answer,) = r.json()
    assert len(complaint) < 500 and answer["truncated"] and 0 < answer["share_read"] < 0.8 and answer["needs_review"]
    info = httpx.post(f"{url}/info", json={}, timeout=10).json()
    assert info["limits"]["tokens_read"]["champion"] == 32   # the tiny profile's max_length


def test_info_shows_versions_variants_providers_and_weights(server):
    url, *_ = server
    info = httpx.post(f"{url}/info", json={}, timeout=10).json()
    assert info["arms"]["champion"]["version"] == "1" and info["arms"]["challenger"]["version"] == "2"
    assert info["arms"]["champion"]["provider"] == "CPUExecutionProvider"
    assert info["arms"]["champion"]["variant"] == "v1" and info["ab"]["challenger_share"] == 0.5
    assert "CPUExecutionProvider" in info["providers_available"]


def test_ab_assignment_is_sticky_for_a_keyed_caller_and_cannot_be_steered(server):
    """With a client's API key, a user key keeps its arm and the split is near the share. Keys chosen offline
    to land on the challenger under the old unsalted sha256 land there at the share only (HMAC under the
    server's secret), and an anonymous caller's keys are not honoured at all."""
    import hashlib

    url, state, client, tampered, api_keys = server
    auth = {"headers": {"Authorization": f"Bearer {api_keys['crm-app']}"}}
    keys = [f"user-{i}" for i in range(320)]
    arms = {}
    for chunk in range(0, len(keys), 16):
        for key, res in zip(keys[chunk:chunk + 16], predict(url, [{"text": "card payment declined", "key": k}
                                                                   for k in keys[chunk:chunk + 16]], **auth).json()):
            arms[key] = res["arm"]
    share = sum(a == CHALLENGER for a in arms.values()) / len(arms)
    assert share == pytest.approx(0.5, abs=0.08)
    again = predict(url, [{"text": "another message", "key": k} for k in keys[:16]], **auth).json()
    assert [r["arm"] for r in again] == [arms[k] for k in keys[:16]]
    chosen = [k for k in (f"pick-{i}" for i in range(2000))
              if int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big") / 2**64 < 0.5][:160]
    steered = [r["arm"] for c in range(0, 160, 16)
               for r in predict(url, [{"text": "hi", "key": k} for k in chosen[c:c + 16]], **auth).json()]
    assert sum(a == CHALLENGER for a in steered) / len(steered) == pytest.approx(0.5, abs=0.12)   # not 1.0
    anonymous = [[r["arm"] for r in predict(url, [{"text": "hi", "key": "same-user"}] * 16).json()] for _ in range(3)]
    assert len({a for arms_ in anonymous for a in arms_}) == 2                 # drawn at random: not sticky


def test_low_confidence_goes_to_the_review_queue_and_labels_export(server, tmp_path):
    url, state, *_ = server
    flagged = [r for r in predict(url, [{"text": "is there a fee for this?"}, {"text": "where is my money"}]).json()
               if r["needs_review"]]
    assert flagged
    db = str(state.root / "predictions.db")
    cli = [sys.executable, "-m", "yanjin.cli", "review"]
    listing = subprocess.run(cli + ["list", "--limit", "1000", "--prediction-log", db], capture_output=True,
                             text=True, env=os.environ | {"COLUMNS": "300"})
    assert flagged[0]["prediction_id"] in listing.stdout
    known = flagged[0]["top_k"][1]["label"]   # one of the version's labels (review label checks it)
    labelled = subprocess.run(cli + ["label", flagged[0]["prediction_id"], known, "--prediction-log", db],
                              capture_output=True, text=True)
    assert labelled.returncode == 0, labelled.stderr
    subprocess.run(cli + ["export", str(tmp_path / "extra.csv"), "--prediction-log", db], check=True, capture_output=True)
    rows = (tmp_path / "extra.csv").read_text().splitlines()
    assert rows[0] == "text,category,source" and any(r.endswith(f",{known},review") for r in rows[1:])


def logged(log: PredictionLog, pid: str, timeout: float = 15.0) -> dict:
    """The server's row for `pid` once its writer has committed it (it writes off the request path)."""
    from yanjin.traffic.store import UnknownPrediction

    deadline = time.monotonic() + timeout
    while True:
        try:
            return log.get(pid)
        except UnknownPrediction:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def as_key(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def label(url: str, route: str, pid: str, value: str, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{url}/{route}", json={"prediction_id": pid, "label": value}, headers=headers or {}, timeout=10)


def test_feedback_and_review_need_a_key_of_the_right_role_and_change_nothing_without_one(server):
    url, state, _, _, keys = server
    first = predict(url, [{"text": "I want to close my account"}]).json()[0]
    pid, known = first["prediction_id"], first["top_k"][1]["label"]  # a label the model knows
    refused = {
        "no key": label(url, "feedback", pid, known),
        "unknown key": label(url, "feedback", pid, known, as_key("yj_" + "x" * 43)),
        "client key on /review": label(url, "review", pid, known, as_key(keys["crm-app"])),
        "no key on /review": label(url, "review", pid, known),
    }
    assert {what: r.status_code for what, r in refused.items()} == {
        "no key": 401, "unknown key": 401, "client key on /review": 403, "no key on /review": 401}
    assert all(set(r.json()) == {"error"} for r in refused.values())
    assert "needs an API key" in refused["no key"].json()["error"]
    assert "needs the role reviewer" in refused["client key on /review"].json()["error"]
    log = PredictionLog(state.root / "predictions.db")
    try:
        assert log.label_history(pid) == []                                       # nothing changed
        spoofed = as_key(keys["crm-app"]) | {"x-yanjin-principal": "anna:reviewer"}  # a client posing as a reviewer
        ok = label(url, "feedback", pid, known, spoofed)
        assert ok.status_code == 200 and ok.json()["source"] == "feedback" and ok.json()["given_by"] == "crm-app", ok.text
        assert label(url, "feedback", pid, first["label"], as_key(keys["crm-app"])).status_code == 200
        reviewed = label(url, "review", pid, known, as_key(keys["anna"]))
        assert reviewed.status_code == 200 and reviewed.json()["source"] == "review"
        assert [(h["label"], h["source"], h["given_by"]) for h in log.label_history(pid)] == [
            (known, "feedback", "crm-app"), (first["label"], "feedback", "crm-app"), (known, "review", "anna")]
    finally:
        log.close()
    unknown = label(url, "feedback", "nope", known, as_key(keys["crm-app"]))
    assert unknown.status_code == 404 and unknown.json() == {"error": "no prediction with id 'nope'"}
    bad_label = label(url, "feedback", pid, "crypto", as_key(keys["crm-app"]))
    assert bad_label.status_code == 400 and "unknown label 'crypto'" in bad_label.json()["error"]  # an object, not a list


def test_reviewers_who_disagree_dispute_a_label_until_a_third_settles_it_and_the_cli_checks_labels(server):
    """Three principals: two reviewer keys over HTTP, then the OS account through `yanjin review label`."""
    from typer.testing import CliRunner

    from yanjin.cli import app

    url, state, _, _, keys = server
    first_text = "my card was swallowed by the cash machine"
    first = predict(url, [{"text": first_text}]).json()[0]
    pid, a, b = first["prediction_id"], first["top_k"][0]["label"], first["top_k"][1]["label"]
    assert label(url, "review", pid, a, as_key(keys["anna"])).json()["disputed"] is False
    second = label(url, "review", pid, b, as_key(keys["ben"]))
    assert second.status_code == 200 and second.json()["disputed"] is True
    log = PredictionLog(state.root / "predictions.db")
    try:
        queued = log.review_queue(5)
        assert queued[0]["id"] == pid and queued[0]["disputed"]               # first in line for a third person
        assert first_text not in [r["text"] for r in log.labelled()]          # no label of it is trusted meanwhile
        cli = ["review", "label", pid, "--state-dir", str(state.root)]
        typo = CliRunner().invoke(app, cli[:3] + [a[:-1] + "x"] + cli[3:])
        assert typo.exit_code != 0 and f"has no label '{a[:-1]}x'" in typo.output and a in typo.output
        assert "Traceback" not in typo.output
        settled = CliRunner().invoke(app, cli[:3] + [a] + cli[3:])
        assert settled.exit_code == 0 and f"labelled {a} by" in settled.output, settled.output
        assert log.get(pid)["reviewed_label"] == a and not log.get(pid)["disputed"]
        assert {"text": first_text, "label": a, "source": "review"} in log.labelled()
    finally:
        log.close()


def test_a_card_number_is_answered_but_never_stored_and_an_open_bind_is_refused(server):
    from typer.testing import CliRunner

    from yanjin.cli import app

    url, state, _, _, keys = server
    text = "my card 4111 1111 1111 1111 was charged twice, mail me at anna.smith@example.com"
    answer = predict(url, [{"text": text, "asked_by": "anna"}], headers=as_key(keys["crm-app"])).json()[0]
    anonymous = predict(url, [{"text": "where is my card?", "asked_by": "anna"}]).json()[0]
    assert answer["label"] and answer["error"] is None
    log = PredictionLog(state.root / "predictions.db")
    try:
        row = logged(log, answer["prediction_id"])
        assert row["text"] == "my card [CARD_NUMBER] was charged twice, mail me at [EMAIL]"
        assert row["asked_by"] == "crm-app" and logged(log, anonymous["prediction_id"])["asked_by"] is None  # never the body's
    finally:
        log.close()
    assert "asked_by" not in json.dumps(httpx.get(f"{url}/docs.json", timeout=10).json())
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert re.search(r'yanjin_redacted\{[^}]*type="CARD_NUMBER"[^}]*\} [1-9]', metrics)   # counted, never kept
    assert httpx.post(f"{url}/info", json={}, timeout=10).json()["prediction_log"]["redacted"]["EMAIL"] >= 1
    refused = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--state-dir", str(state.root)])
    assert refused.exit_code != 0 and "--allow-open-predict" in refused.output and "Traceback" not in refused.output


def test_a_locked_log_is_answered_503_with_retry_after_never_500_and_nothing_answered_is_lost(server):
    """require_log: while the prediction log cannot be written, /review and /feedback answer 503 within about a
    second and /predict is refused once the writer meets the lock; readiness turns false; after, everything
    answered is in the log."""
    import sqlite3

    url, state, _, _, keys = server
    answer = predict(url, [{"text": "is my transfer done?"}]).json()[0]
    pid = answer["prediction_id"]
    logged_before = PredictionLog(state.root / "predictions.db")
    try:
        logged(logged_before, pid)     # written before the lock
    finally:
        logged_before.close()
    holder = sqlite3.connect(state.root / "predictions.db", timeout=10, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    answered, refused = [], []
    try:
        started = time.monotonic()
        review = label(url, "review", pid, answer["label"], as_key(keys["anna"]))
        assert review.status_code == 503 and int(review.headers["retry-after"]) >= 1, review.text
        assert time.monotonic() - started < 5
        deadline = time.monotonic() + 30
        while not refused and time.monotonic() < deadline:
            r = predict(url, [{"text": "where is my card?"}])
            (answered if r.status_code == 200 else refused).append(r)
            time.sleep(0.2)
        assert refused and refused[0].status_code == 503 and "require_log" in refused[0].json()["error"]
        assert int(refused[0].headers["retry-after"]) >= 1
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
    finally:
        holder.rollback()
        holder.close()
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/readyz", timeout=10).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert predict(url, [{"text": "and now?"}]).status_code == 200
    log = PredictionLog(state.root / "predictions.db")
    try:
        for r in answered:
            assert logged(log, r.json()[0]["prediction_id"])   # raises if it was lost
    finally:
        log.close()


def test_a_key_past_its_rate_limit_gets_429_and_changes_nothing(server):
    url, state, _, _, keys = server
    pid = predict(url, [{"text": "top up failed"}]).json()[0]["prediction_id"]
    answers = [label(url, "feedback", pid, "nonexistent-label", as_key(keys["burst"])) for _ in range(5)]
    assert [r.status_code for r in answers] == [400, 400, 400, 429, 429]   # 3 a minute, then refused
    assert int(answers[3].headers["retry-after"]) >= 1 and "rate limit" in answers[3].json()["error"]
    assert label(url, "feedback", pid, "nonexistent-label", as_key(keys["crm-app"])).status_code == 400  # others unaffected


MALFORMED = malformed_requests(max_chars=500, max_items=16, max_body_bytes=20000)  # the limits `server` sets


def test_malformed_requests_get_a_clear_4xx_and_the_server_keeps_serving(server):
    url, *_ = server
    answers = {}
    for what, body, content_type in MALFORMED:
        headers = {"content-type": content_type} if content_type else {}
        r = httpx.post(f"{url}/predict", content=body, headers=headers, timeout=30)
        answers[what] = (r.status_code, r.text[:200])
    assert len(answers) >= 25 and all(400 <= code < 500 for code, _ in answers.values()), answers
    assert answers["body too large"][0] == 413 and answers["pickle content type"][0] == 415
    assert "not valid UTF-8" in answers["non-UTF-8 bytes"][1] and "not valid JSON" in answers["not JSON"][1]
    assert "empty or only whitespace" in answers["whitespace text"][1]
    assert "the limit is 500" in answers["text too long"][1]
    assert "nested" in answers["nested 40 deep"][1] and "nested" in answers["nested 5000 deep"][1]
    assert "digits" in answers["integer of 5000 digits"][1]
    assert "control character U+0000 at position 7" in answers["NUL in text"][1]
    assert "no visible characters" in answers["only invisible characters"][1]
    assert predict(url, [{"text": "still there?"}]).status_code == 200


def test_the_swagger_ui_is_at_docs_with_an_example_request_that_works(server):
    url, _, _, _, keys = server
    page = httpx.get(f"{url}/docs", follow_redirects=True, timeout=10)
    assert page.status_code == 200 and "swagger-ui" in page.text
    paths = httpx.get(f"{url}/docs.json", timeout=10).json()["paths"]
    example = {route: {name: field["example"] for name, field in
                       paths[route]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"].items()}
               for route in ("/predict", "/feedback", "/review")}
    answered = predict(url, example["/predict"]["items"])          # the documented example is a valid request
    assert answered.status_code == 200 and len(answered.json()) == len(example["/predict"]["items"])
    assert set(example["/feedback"]) == set(example["/review"]) == {"prediction_id", "label"}
    unknown = label(url, "feedback", example["/feedback"]["prediction_id"], example["/feedback"]["label"],
                    as_key(keys["crm-app"]))
    assert unknown.status_code in (400, 404)                        # well-formed: refused only for its content


def test_the_api_documents_itself_as_yanjin_with_its_keys_and_errors_in_a_real_browser(server, tmp_path):
    from importlib.metadata import version

    from tests.browser import external_assets, rendered

    url, *_ = server
    doc = httpx.get(f"{url}/docs.json", timeout=10).json()
    assert doc["info"]["title"] == f"yanjin serving: {MODEL}" and doc["info"]["version"] == version("yanjin")
    assert "BentoML" not in json.dumps(doc["info"]) and doc["info"]["contact"]["name"]
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    review = doc["paths"]["/review"]["post"]
    assert {"bearer": []} in review["security"] and {} not in review["security"]   # a key is needed
    assert {"401", "403", "413", "415", "429"} <= set(review["responses"])
    assert review["responses"]["429"]["content"]["application/json"]["example"]["error"]
    assert {} in doc["paths"]["/predict"]["post"]["security"]   # open /predict on this embedded server
    assert {"413", "415", "429", "503"} <= set(doc["paths"]["/predict"]["post"]["responses"])
    page = httpx.get(f"{url}/docs", timeout=10).text
    assert external_assets(page) == [] and "googletagmanager" not in page
    dom = rendered(f"{url}/docs", tmp_path / "swagger.png")              # what a person sees in Chromium
    assert "Authorize" in dom and f"yanjin serving: {MODEL}" in dom and "BentoML Team" not in dom
    assert (tmp_path / "swagger.png").stat().st_size > 10_000


def test_metrics_endpoint_is_prometheus_text(server):
    url, *_ = server
    text = httpx.get(f"{url}/metrics", timeout=10).text
    assert "bentoml_service_request_total" in text and 'endpoint="/predict"' in text
    assert httpx.get(f"{url}/docs.json", timeout=10).json()["paths"].keys() >= {"/predict", "/feedback", "/info"}
    served = [line for line in text.splitlines() if line.startswith("yanjin_served_model{") and line.endswith(" 1.0")]
    assert any('arm="champion"' in line and 'provider="CPUExecutionProvider"' in line and 'version="1"' in line
               for line in served), served
    # the prediction log's rows by fate: written rows show up, none dropped in normal operation
    assert predict(url, [{"text": "what is my balance"}]).status_code == 200
    time.sleep(1.0)  # the writer commits within flush_seconds, then updates the gauges
    text = httpx.get(f"{url}/metrics", timeout=10).text
    fates = {re.search(r'state="(\w+)"', line).group(1): float(line.split()[-1]) for line in text.splitlines()
             if line.startswith("yanjin_prediction_log_rows{")}  # BentoML's multiprocess mode adds a pid label
    assert fates.keys() == {"queued", "written", "retried", "dropped"} and fates["written"] >= 1, fates
    assert fates["dropped"] == 0 and httpx.post(f"{url}/info", json={}, timeout=10).json()["prediction_log"]["dropped"] == 0


def test_hot_swap_under_concurrent_requests_loses_nothing(server):
    url, state, client, *_ = server
    failures, served, stop_flag = [], [], threading.Event()

    def hammer(worker: int) -> None:
        with httpx.Client(timeout=30) as http:
            while not stop_flag.is_set():
                r = http.post(f"{url}/predict", json={"items": [{"text": "transfer failed", "key": f"w{worker}"}]})
                if r.status_code != 200:
                    failures.append((r.status_code, r.text[:200]))
                else:
                    served.append(r.json()[0]["version"])

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    client.set_registered_model_alias(MODEL, CHAMPION, "2")
    deadline = time.time() + 30
    while time.time() < deadline and httpx.post(f"{url}/info", json={}, timeout=10).json()["arms"]["champion"]["version"] != "2":
        time.sleep(0.2)
    time.sleep(1.0)
    stop_flag.set()
    for t in threads:
        t.join()
    assert failures == []
    assert httpx.post(f"{url}/info", json={}, timeout=10).json()["arms"]["champion"]["version"] == "2"
    assert len(served) > 20 and "2" in served


def test_a_version_whose_files_do_not_match_its_sha256_is_refused(server):
    url, state, client, tampered, _ = server
    client.set_registered_model_alias(MODEL, CHAMPION, tampered)
    deadline = time.time() + 20
    info = {}
    while time.time() < deadline:
        info = httpx.post(f"{url}/info", json={}, timeout=10).json()
        if any(f"v{tampered}" in e for e in info["refusals"]):
            break
        time.sleep(0.3)
    assert any(f"refused {MODEL} v{tampered}" in e and "does not match" in e for e in info["refusals"])
    assert info["arms"]["champion"]["version"] == "2"          # the previous model keeps serving
    assert predict(url, [{"text": "hello"}]).status_code == 200


def test_a_server_whose_champion_is_tampered_never_becomes_ready(server):
    url, state, client, tampered, _ = server   # the champion alias now points at the tampered version
    port = free_port()
    proc = start_server(state, port)
    try:
        assert not wait_ready(f"http://127.0.0.1:{port}", proc, timeout=25)
        assert httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5).status_code == 200
    finally:
        stop(proc)
        client.set_registered_model_alias(MODEL, CHAMPION, "1")


def sigterm_under_load(state: LocalState, db) -> tuple[list[str], set[str]]:
    """A rolling update: 4 clients keep sending while the server gets SIGTERM. Returns the prediction ids
    answered 200 and the ids found in the log afterwards (the fault benchmark runs it too)."""
    import signal

    port = free_port()
    proc = start_server(state, port, f"prediction_log={db}")
    url = f"http://127.0.0.1:{port}"
    acknowledged, stopping = [], threading.Event()

    def client(n: int) -> None:
        with httpx.Client(timeout=10) as http:
            while not stopping.is_set():
                try:
                    r = http.post(f"{url}/predict", json={"items": [{"text": f"card {n} has not arrived"}]})
                except httpx.HTTPError:
                    continue  # refused while shutting down: not acknowledged
                if r.status_code == 200:
                    acknowledged.extend(item["prediction_id"] for item in r.json())
    clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    try:
        assert wait_ready(url, proc), "server never became ready"
        for c in clients:
            c.start()
        time.sleep(3.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        stopping.set()
        stop(proc)
    for c in clients:
        if c.ident:  # started
            c.join()
    log = PredictionLog(db)
    with log.engine.connect() as conn:
        logged = {r[0] for r in conn.exec_driver_sql("SELECT id FROM predictions")}
    log.close()
    return acknowledged, logged


def test_sigterm_under_load_loses_no_acknowledged_prediction(server, tmp_path):
    """Every prediction answered 200 before the server stopped is in the log."""
    _, state, *_ = server
    acknowledged, logged = sigterm_under_load(state, tmp_path / "predictions.db")
    assert len(acknowledged) > 50 and not set(acknowledged) - logged, (len(acknowledged), len(logged))
