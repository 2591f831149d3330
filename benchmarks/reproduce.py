"""Can a registered version be rebuilt from its record? Build one with the CLI as a user does, rebuild it
with `yanjin reproduce`, and record how close the rebuild came.

    python benchmarks/reproduce.py [--profile tiny|demo] [--variant v1]  ->  benchmarks/results/reproduce.json

Both runs happen on this machine in one go, in a fresh state folder; the registry is left with exactly
the one version the first run made (checked).
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
YANJIN = str(Path(sys.executable).with_name("yanjin"))


def yanjin(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([YANJIN, *args], capture_output=True, text=True, cwd=ROOT)
    print(out.stdout[-3000:])
    if out.returncode not in (0, 1):
        raise SystemExit(f"yanjin {' '.join(args)} failed ({out.returncode}): {out.stderr[-3000:]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--variant", default="v1")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "reproduce.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT.parent) as tmp:
        state = str(Path(tmp) / "state")
        start = time.perf_counter()
        built = yanjin("pipeline", "run", "--profile", args.profile, "--variant", args.variant, "--state-dir", state)
        build_seconds = time.perf_counter() - start
        if built.returncode:
            raise SystemExit(f"the build failed: {built.stderr[-3000:]}")
        model = f"banking77-{args.variant}"
        comparison = Path(tmp) / "comparison.json"
        rebuilt = yanjin("reproduce", model, "1", "--state-dir", state, "--tolerance", str(args.tolerance),
                         "--output", str(comparison))
        if not comparison.is_file():
            raise SystemExit(f"reproduce wrote no comparison: {rebuilt.stderr[-3000:]}")
        result = json.loads(comparison.read_text())
        versions = subprocess.run([sys.executable, "-c", (
            "import mlflow, sys; c = mlflow.MlflowClient(sys.argv[1]); "
            "print(len(c.search_model_versions(f\"name='{sys.argv[2]}'\")))"),
            f"sqlite:///{state}/mlflow.db", model], capture_output=True, text=True).stdout.strip()
    figures = {"reproduced": result["reproduced"], "max_metric_delta": result["max_metric_delta"],
               "tolerance": result["tolerance"], "seconds": round(result["seconds"], 1),
               "build_seconds": round(build_seconds, 1), "profile": args.profile, "model": model,
               "versions_registered_after": int(versions), "figures": result["figures"],
               "differences": result["differences"], "commit": result["commit"], "notes": result["notes"],
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: figures[k] for k in ("reproduced", "max_metric_delta", "tolerance", "seconds",
                                              "versions_registered_after")}, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
