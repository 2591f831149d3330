"""Can a registered version be rebuilt from its record? Build one with the CLI as a user does, rebuild it
with `yanjin reproduce`, and record how close the rebuild came.

    python benchmarks/reproduce.py [--profile tiny|demo] [--variants v1,pro]  ->  benchmarks/results/reproduce.json

Per member, both runs happen on this machine in one go, in a fresh state folder; the registry is left
with exactly the one version the first run made (checked). Pro's rebuild adapts on the domain text its
run recorded.
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


def rebuild(profile: str, variant: str, tolerance: float, folder: Path) -> dict:
    state = str(folder / variant / "state")
    start = time.perf_counter()
    built = yanjin("pipeline", "run", "--profile", profile, "--variant", variant, "--state-dir", state)
    build_seconds = time.perf_counter() - start
    if built.returncode:
        raise SystemExit(f"the build failed: {built.stderr[-3000:]}")
    model = f"banking77-{variant}"
    comparison = folder / variant / "comparison.json"
    rebuilt = yanjin("reproduce", model, "1", "--state-dir", state, "--tolerance", str(tolerance),
                     "--output", str(comparison))
    if not comparison.is_file():
        raise SystemExit(f"reproduce wrote no comparison: {rebuilt.stderr[-3000:]}")
    result = json.loads(comparison.read_text())
    versions = subprocess.run([sys.executable, "-c", (
        "import mlflow, sys; c = mlflow.MlflowClient(sys.argv[1]); "
        "print(len(c.search_model_versions(f\"name='{sys.argv[2]}'\")))"),
        f"sqlite:///{state}/mlflow.db", model], capture_output=True, text=True).stdout.strip()
    return {"reproduced": result["reproduced"], "max_metric_delta": result["max_metric_delta"],
            "seconds": round(result["seconds"], 1), "build_seconds": round(build_seconds, 1), "model": model,
            "versions_registered_after": int(versions), "figures": result["figures"],
            "differences": result["differences"], "commit": result["commit"], "notes": result["notes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--variants", default="v1,pro", help="members to build and rebuild, one after another")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "reproduce.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT.parent) as tmp:
        members = {v: rebuild(args.profile, v, args.tolerance, Path(tmp)) for v in args.variants.split(",")}
    figures = {"reproduced": all(m["reproduced"] for m in members.values()),
               "max_metric_delta": max(m["max_metric_delta"] for m in members.values()),
               "tolerance": args.tolerance, "seconds": round(sum(m["seconds"] for m in members.values()), 1),
               "profile": args.profile, "members": members,
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: figures[k] for k in ("reproduced", "max_metric_delta", "tolerance", "seconds")}
                     | {v: {k: m[k] for k in ("reproduced", "max_metric_delta", "seconds", "versions_registered_after")}
                        for v, m in members.items()}, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
