"""Load test of the real servers on localhost, side by side in one run -> benchmarks/results/serving.json

Servers: yanjin serving Lite and V1 (BentoML + ONNX Runtime, adaptive batching), the same Lite
server as of an earlier commit (`--before`, default the last commit before the serving path
dropped PyTorch: installed beside this checkout, sharing its dependencies), the naive baseline
(V1 in PyTorch eager, single-threaded HTTP server, no batching) and a no-op BentoML service with
the same API (the ceiling of the HTTP stack). The client is a bounded asyncio aiohttp client on
the same machine (so it competes with the server for the 2 cores), one text per request.

For each server: closed loop at several concurrency levels (throughput, p50/p95/p99), then an
open loop at half of the saturation throughput (p99 there), with the peak resident memory of the
server's whole process tree sampled throughout (what a container's memory limit counts). For
Lite also an overload run against a server with a small concurrency cap: only 429/503 with
Retry-After may come back.

    python benchmarks/serving/load_test.py [--state-dir .yanjin-bench] [--seconds 6] [--before REF|""]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
from tests.integration.stack import exited, free_port, stop, wait_http  # noqa: E402 - as the tests do


def start(args: list[str], url: str, ready_path: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    if wait_http(url + ready_path, exited(proc), timeout=180):
        return proc
    proc.kill()
    raise RuntimeError(f"{args} never became ready")


class PeakRss:
    """Peak resident memory (MB) of a process and all its descendants, sampled every `every` seconds."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.root, self.every, self.peak_mb = psutil.Process(pid), every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            total = 0
            for p in [self.root, *self.root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


def install_before(ref: str, tmp: Path) -> Path:
    """The package as of `ref`, installed (non-editable, no dependencies) into a folder of its own; on
    PYTHONPATH it shadows this checkout's package, so the same venv serves the old code."""
    src, site = tmp / "before-src", tmp / "before-site"
    src.mkdir()
    subprocess.run(f"git -C {ROOT} archive {ref} | tar -x -C {src}", shell=True, check=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(src)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"installing {ref} failed: {done.stderr[-2000:]}")
    return site


def registry_for_before(tracking_uri: str, model: str, site: Path, tmp: Path) -> str:
    """The champion's files registered again in a registry of their own, for the earlier commit's server:
    the ONNX file, tokenizer and labels are the same bytes; the bundle's model_config.json keeps only the
    fields that commit's schema knows (it refuses the newer `builder`)."""
    import mlflow

    from yanjin import registry as R

    known = json.loads(subprocess.run(
        [sys.executable, "-c", "import dataclasses, json; from yanjin.models.family import ModelSpec; "
                               "print(json.dumps([f.name for f in dataclasses.fields(ModelSpec)]))"],
        env=os.environ | {"PYTHONPATH": str(site)}, cwd=tmp, capture_output=True, text=True, check=True).stdout)
    found = R.find_champion(model, tmp / "current", tracking_uri=tracking_uri)
    bundle = tmp / "before-bundle"
    bundle.mkdir()
    for name in R.BUNDLE_FILES:
        shutil.copy(R.bundle_file(found.bundle_dir, name), bundle / name)
    spec = json.loads((bundle / R.CHECKPOINT_SPEC).read_text())
    (bundle / R.CHECKPOINT_SPEC).write_text(json.dumps({k: v for k, v in spec.items() if k in known}))
    uri = f"sqlite:///{tmp / 'before.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("before", artifact_location=str(tmp / "before-artifacts"))
    with mlflow.start_run(experiment_id=experiment) as run:
        pass
    R.register_bundle(bundle, model, run.info.run_id, found.tags)  # the first version: @champion
    mlflow.set_tracking_uri(tracking_uri)
    return uri


def summary(latencies: list[float], statuses: list, seconds: float) -> dict:
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    ok = sum(1 for s in statuses if s == 200)
    codes: dict[str, int] = {}
    for s in statuses:
        codes[str(s)] = codes.get(str(s), 0) + 1
    return {"requests": len(statuses), "ok": ok, "errors": len(statuses) - ok, "statuses": codes,
            "throughput_rps": ok / seconds, "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99))}


async def one(client: aiohttp.ClientSession, url: str, text: str, key: str, statuses: list, latencies: list,
              retry_after: list) -> None:
    start = time.perf_counter()
    try:
        async with client.post(url, json={"items": [{"text": text, "key": key}]}) as r:
            await r.read()
            statuses.append(r.status)
            if r.status == 200:
                latencies.append(time.perf_counter() - start)
            elif r.status in (429, 503):
                retry_after.append("retry-after" in r.headers)
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:  # a dropped or refused connection: the worst outcome
        statuses.append(type(e).__name__)


def session(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                 timeout=aiohttp.ClientTimeout(total=60))


async def closed_loop(url: str, texts: list[str], concurrency: int, seconds: float, max_requests: int) -> dict:
    statuses, latencies, retry_after = [], [], []
    async with session(concurrency) as client:
        deadline = time.perf_counter() + seconds
        counter = iter(range(max_requests))

        async def worker(w: int) -> None:
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                await one(client, url, texts[i % len(texts)], f"user-{w}", statuses, latencies, retry_after)

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - start
    return summary(latencies, statuses, elapsed) | {"concurrency": concurrency,
                                                    "retry_after_on_all_rejections": all(retry_after)}


async def open_loop(url: str, texts: list[str], rate: float, seconds: float) -> dict:
    """Requests at a fixed rate whatever the server does: latency at a given load, not at saturation."""
    statuses, latencies, retry_after = [], [], []
    async with session(256) as client:
        tasks, n = [], int(rate * seconds)
        start = time.perf_counter()
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(client, url, texts[i % len(texts)], f"user-{i % 97}",
                                                 statuses, latencies, retry_after)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return summary(latencies, statuses, elapsed) | {"rate_rps": rate}


def measure(name: str, proc: subprocess.Popen, url: str, texts: list[str], levels: list[int], seconds: float) -> dict:
    with PeakRss(proc.pid) as rss:
        asyncio.run(closed_loop(url, texts, 4, 2.0, 200))  # warm up
        runs = [asyncio.run(closed_loop(url, texts, c, seconds, 20_000)) for c in levels]
        saturation = max(r["throughput_rps"] for r in runs)
        half = asyncio.run(open_loop(url, texts, saturation / 2, seconds))
    for r in runs:
        print(f"{name:>8} c={r['concurrency']:<3} {r['throughput_rps']:7.1f} req/s  p50 {r['p50_ms']:6.1f}  "
              f"p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}")
    print(f"{name:>8} open loop at {half['rate_rps']:.0f} req/s: p99 {half['p99_ms']:.1f} ms, errors {half['errors']}; "
          f"peak RSS {rss.peak_mb:.0f} MB")
    return {"closed_loop": runs, "saturation_rps": saturation, "half_saturation": half, "peak_rss_mb": rss.peak_mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state-dir", type=Path, default=ROOT / ".yanjin-bench")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    ap.add_argument("--seconds", type=float, default=6.0, help="per load level")
    ap.add_argument("--levels", default="1,8,32", help="closed-loop concurrency levels")
    ap.add_argument("--before", default="e2735f8", help="also serve Lite with the package as of this commit "
                    "(default: the last one whose server imported PyTorch); empty to skip")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from yanjin.config import ServeSettings
    from yanjin.registry import download_checkpoint, find_champion
    from yanjin.serving.settings import ENV
    from yanjin.state import LocalState

    state = LocalState(args.state_dir)
    texts = pd.read_csv(args.data / "test.csv")["text"].tolist()
    levels = [int(c) for c in args.levels.split(",")]
    py = sys.executable
    results: dict = {"levels": levels, "seconds_per_level": args.seconds, "cpus": os.cpu_count(),
                     "client": "aiohttp asyncio on the same machine, 1 text per request"}
    tmp = Path(tempfile.mkdtemp())

    def yanjin_server(model: str, pythonpath: Path | None = None, tracking_uri: str = state.tracking_uri,
                      **overrides) -> tuple[subprocess.Popen, str]:
        port = free_port()
        settings = {"tracking_uri": tracking_uri, "model": model, "prediction_log": str(tmp / f"{model}-{port}.db"),
                    **overrides}  # only what differs from the defaults: the earlier commit knows fewer settings
        ServeSettings.from_dict(settings)  # checked here, not first in the server
        env = os.environ | {ENV: json.dumps(settings)} | ({"PYTHONPATH": str(pythonpath)} if pythonpath else {})
        url = f"http://127.0.0.1:{port}"
        return start([py, "-m", "bentoml", "serve", "yanjin.serving.service:Classifier", "--port", str(port)],
                     url, "/readyz", env, cwd=tmp if pythonpath else ROOT), url  # the checkout would shadow it

    servers = [("lite", "banking77-lite", None, state.tracking_uri), ("v1", "banking77-v1", None, state.tracking_uri)]
    if args.before:
        site = install_before(args.before, tmp)
        servers.insert(1, ("lite_before", "banking77-lite", site,
                           registry_for_before(state.tracking_uri, "banking77-lite", site, tmp)))
    for name, model, pythonpath, tracking_uri in servers:
        proc, url = yanjin_server(model, pythonpath, tracking_uri)
        try:
            results[name] = measure(name, proc, url + "/predict", texts, levels, args.seconds)
        finally:
            stop(proc)

    champion = find_champion("banking77-v1", tmp / "v1", tracking_uri=state.tracking_uri)
    ckpt = download_checkpoint(champion, tmp / "v1ckpt", state.tracking_uri)
    port = free_port()
    proc = start([py, str(ROOT / "benchmarks/serving/naive_server.py"), str(ckpt), str(port)],
                 f"http://127.0.0.1:{port}", "/")
    try:
        results["baseline"] = measure("baseline", proc, f"http://127.0.0.1:{port}/predict", texts, levels, args.seconds)
    finally:
        stop(proc)

    for name, service in (("noop", "Noop"), ("noop_fixed", "NoopFixed")):
        port = free_port()
        proc = start([py, "-m", "bentoml", "serve", f"benchmarks/serving/noop_service.py:{service}", "--port", str(port)],
                     f"http://127.0.0.1:{port}", "/readyz")
        try:
            results[name] = measure(name, proc, f"http://127.0.0.1:{port}/predict", texts, levels, args.seconds)
        finally:
            stop(proc)

    # overload: far more clients than the server admits -> only 429/503 with Retry-After
    proc, url = yanjin_server("banking77-lite", max_concurrency=8)
    try:
        over = asyncio.run(closed_loop(url + "/predict", texts, 128, args.seconds, 50_000))
    finally:
        stop(proc)
    print(f"overload (128 clients, cap 8): {over['statuses']}, Retry-After on every rejection: "
          f"{over['retry_after_on_all_rejections']}")
    results["overload"] = over

    lite, base, noop = results["lite"], results["baseline"], results["noop"]
    normal = [r for name in ("lite", "v1") for r in results[name]["closed_loop"] + [results[name]["half_saturation"]]]
    results |= {
        "lite_throughput_rps": lite["saturation_rps"],
        "v1_throughput_rps": results["v1"]["saturation_rps"],
        "baseline_throughput_rps": base["saturation_rps"],
        "noop_throughput_rps": noop["saturation_rps"],
        "throughput_ratio_vs_baseline": lite["saturation_rps"] / base["saturation_rps"],
        "lite_share_of_noop": lite["saturation_rps"] / noop["saturation_rps"],
        "noop_fixed_throughput_rps": results["noop_fixed"]["saturation_rps"],
        "lite_share_of_noop_fixed": lite["saturation_rps"] / results["noop_fixed"]["saturation_rps"],
        "lite_rss_mb": lite["peak_rss_mb"],
        "v1_rss_mb": results["v1"]["peak_rss_mb"],
        "noop_rss_mb": noop["peak_rss_mb"],
        "p99_ms_at_half_saturation": lite["half_saturation"]["p99_ms"],
        "errors": sum(r["errors"] for r in normal),
        "overload_only_429_503_with_retry_after": all(k in ("200", "429", "503") for k in over["statuses"])
                                                  and over["retry_after_on_all_rejections"],
    }
    if "lite_before" in results:
        before = results["lite_before"]
        results |= {"before_commit": args.before, "lite_before_rss_mb": before["peak_rss_mb"],
                    "lite_rss_ratio_vs_before": lite["peak_rss_mb"] / before["peak_rss_mb"],
                    "lite_before_throughput_rps": before["saturation_rps"],
                    "lite_before_share_of_noop": before["saturation_rps"] / noop["saturation_rps"]}
    results["goals"] = {
        "throughput_ratio_vs_baseline >= 5": results["throughput_ratio_vs_baseline"] >= 5,
        "lite_share_of_noop >= 0.85": results["lite_share_of_noop"] >= 0.85,
        "lite_share_of_noop_fixed >= 0.85": results["lite_share_of_noop_fixed"] >= 0.85,
        "p99_ms_at_half_saturation <= 100": results["p99_ms_at_half_saturation"] <= 100,
        "errors == 0": results["errors"] == 0,
        "overload: only 429/503 with Retry-After": results["overload_only_429_503_with_retry_after"],
    } | ({"lite_rss_ratio_vs_before <= 0.6": results["lite_rss_ratio_vs_before"] <= 0.6}
         if "lite_before" in results else {})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)} | {"goals": results["goals"]}, indent=2))


if __name__ == "__main__":
    main()
