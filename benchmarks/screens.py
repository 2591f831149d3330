"""What a reviewer sees, checked the way they see it: real servers, pages rendered by headless Chromium.

    .venv/bin/python benchmarks/screens.py                       # builds a tiny V1 in a temporary state
    .venv/bin/python benchmarks/screens.py --state-dir .yanjin --model banking77-lite   # after `make demo`

Screens: the Swagger UI of `yanjin serve`, the MLflow UI's version page of the champion, a drift report
(calibrated, then a window of out-of-domain traffic), and the advisor's select.png drawn from the measured
family figures (benchmarks/results/family.json) with one member excluded by a constraint. Each is checked
from the rendered page's text (the PNG's own legend text for the picture) and kept as a PNG beside
benchmarks/results/screens.json: {"screens": {name: {"png": path, "checks": {check: bool}}}}.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from yanjin.registry import CHAMPION  # noqa: E402
from tests.browser import external_assets, mlflow_ui, rendered, text_of, version_page  # noqa: E402
from tests.integration.stack import free_port, stop  # noqa: E402
from tests.serving.test_server import wait_ready  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "screens"
YANJIN = [sys.executable, "-m", "yanjin.cli"]
TINY_MONITOR = ["--set", "monitor.window=60", "--set", "monitor.min_window=40", "--set", "monitor.reference_size=60"]


def yanjin(*args: str) -> str:
    done = subprocess.run(YANJIN + list(args), capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"yanjin {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def mlflow_version(state: Path, model: str) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{(state / 'mlflow.db').resolve()}")
    mv = client.get_model_version_by_alias(model, CHAMPION)
    return {"version": str(mv.version), "tags": dict(mv.tags), "run": client.get_run(mv.run_id)}


def version_screen(state: Path, model: str) -> dict:
    mv = mlflow_version(state, model)
    png = OUT / "mlflow_version_page.png"
    with mlflow_ui(f"sqlite:///{(state / 'mlflow.db').resolve()}") as ui:
        shown = text_of(rendered(version_page(ui, model, mv["version"]), png))
    accuracy = mv["tags"]["accuracy"][:6]
    row = next((line for line in shown.splitlines() if line.startswith(f"{accuracy} | ")), "")
    return {"png": str(png.relative_to(ROOT)), "checks": {
        "metrics_row_shown": bool(row) and mv["tags"]["macro_f1"][:6] in row,
        "card_heading_shown": f"Model card: {model} version {mv['version']}" in shown,
        "network_from_checkpoint_shown": "Network:" in shown and "vocabulary" in shown,
        "run_named_by_version": f"{model} #{mv['version']} train" in shown}}


def served_screens(state: Path, model: str, tiny: bool) -> dict:
    """Swagger UI and the drift report, with the traffic the report is made of sent over HTTP."""
    from yanjin.monitoring.scenarios import fortune_texts

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(YANJIN + ["serve", "--model", model, "--state-dir", str(state), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    screens = {}
    try:
        if not wait_ready(url, proc, 300):
            raise RuntimeError("the server never became ready")
        png = OUT / "swagger.png"
        dom = rendered(f"{url}/docs", png, size="1400,2200")
        doc = httpx.get(f"{url}/docs.json", timeout=10).json()
        errors = set().union(*(set(op["responses"]) for path in doc["paths"].values() for op in path.values()
                               if isinstance(op, dict) and "responses" in op))
        example = json.dumps(doc["components"]["schemas"].get("Result", {}).get("example", {}))
        screens["swagger"] = {"png": str(png.relative_to(ROOT)), "checks": {
            "authorize_button": "Authorize" in dom,
            "title_is_yanjins": f"yanjin serving: {model}" in dom and "BentoML Team" not in dom,
            "version_is_the_packages": re.search(r"\b\d+\.\d+\.\d+\b", doc["info"]["version"]) is not None,
            "errors_documented": {"401", "403", "413", "415", "429", "503"} <= errors,
            "real_response_example": '"label": "card_arrival"' in example,
            "no_internet_assets": external_assets(httpx.get(f"{url}/docs", timeout=10).text) == []}}
        # thresholds from the champion's own recorded test texts (in distribution), then out-of-domain traffic over HTTP
        monitor = TINY_MONITOR if tiny else []
        yanjin("monitor", "calibrate", model, "--state-dir", str(state), "--windows", "5", *monitor)
        for batch in (fortune_texts()[i:i + 16] for i in range(0, 240, 16)):
            httpx.post(f"{url}/predict", json={"items": [{"text": t} for t in batch]}, timeout=60).raise_for_status()
        out = Path(tempfile.mkdtemp(prefix="drift-"))
        yanjin("monitor", "check", model, "--state-dir", str(state), "--output-dir", str(out), *monitor)
        page = next(p for p in out.glob("drift-*.html") if not p.name.endswith("-evidently.html"))
        png = OUT / "drift_report.png"
        shown = text_of(rendered(page.resolve().as_uri(), png, wait_ms=3000, size="1400,2400"))
        version = mlflow_version(state, model)["version"]
        thresholds = re.findall(r"\| (\d+\.\d+) \| (?:DRIFTED|within)", shown)
        screens["drift_report"] = {"png": str(png.relative_to(ROOT)), "checks": {
            "title_names_model": f"Drift check of {model} version {version}" in shown,
            "window_stated": "Window: its newest" in shown,
            "thresholds_readable": bool(thresholds) and all(len(t.split(".")[1]) <= 4 for t in thresholds),
            "features_explained": "never seen in the training texts" in shown and "nearest training texts" in shown,
            "example_texts_shown": any(t[:40] in shown for t in fortune_texts()[:240]),
            "intent_names_shown": "Predicted intents in the window" in shown,
            "calibrated": "thresholds calibrated for this version" in shown}}
    finally:
        stop(proc)
    return screens


def select_screen() -> dict:
    """The advisor's picture from the measured family figures, a latency limit excluding the slowest member."""
    from PIL import Image

    from yanjin.config import CostParams
    from yanjin.release.advisor import Constraints, Demand, advise, candidates_from_family, plot_cumulative

    family = json.loads((RESULTS / "family.json").read_text())
    candidates = candidates_from_family(family, CostParams())
    slowest = max(candidates, key=lambda c: c.latency_ms_p95)
    limits = Constraints(max_latency_ms=round(sorted(c.latency_ms_p95 for c in candidates)[-2] + 0.01, 2))
    demand = Demand(100_000, 18, 0.20)
    advice = advise(candidates, limits, demand)
    png = OUT / "select.png"
    plot_cumulative(candidates, demand, png, advice)
    drawn = Image.open(png).text
    legend = drawn.get("Description", "").splitlines()
    mine = next((line for line in legend if line.startswith(f"{slowest.variant} #")), "")
    chosen = advice.ranked[0]
    return {"png": str(png.relative_to(ROOT)), "checks": {
        "excluded_members_marked": "excluded: p95 latency" in mine,
        "chosen_member_marked": any(line.startswith(f"{chosen.variant} #") and "chosen" in line for line in legend),
        "legend_names_versions": all(re.match(r"^\w+ #\d+", line) for line in legend if not line.startswith("horizon")),
        "title_rounds_money": re.fullmatch(r"[\d,]+ calls/day, \$[\d,]+\.\d{2} per error", drawn.get("Title", ""))
        is not None}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state-dir", type=Path, help="an existing state folder (e.g. .yanjin after make demo)")
    ap.add_argument("--model", default="banking77-v1")
    args = ap.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    start = time.time()
    tiny = args.state_dir is None
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="screens-")) / "state"
    if tiny:
        yanjin("pipeline", "run", "--profile", "tiny", "--variant", "v1", "--state-dir", str(state))
    screens = {"mlflow_version_page": version_screen(state, args.model)}
    screens |= served_screens(state, args.model, tiny)
    screens["select"] = select_screen()
    result = {"screens": screens, "state": "tiny V1 built by this script" if tiny else str(state),
              "model": args.model, "seconds": round(time.time() - start), "browser": "Debian chromium, headless",
              "all_checks_pass": all(all(s["checks"].values()) for s in screens.values())}
    (RESULTS / "screens.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
