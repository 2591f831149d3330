"""Cluster mode in real containers (infra/rehearse.py): slow (image builds take minutes), so it runs
in `make rehearse`, not in the default suite. Needs root, Docker's engine and debootstrap."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_rehearsal_runs_every_part_in_real_containers(tmp_path):
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.fail("the rehearsal needs root and Docker's engine: `make rehearse` installs docker.io and debootstrap")
    done = subprocess.run([sys.executable, str(ROOT / "infra" / "rehearse.py"), "--work", str(tmp_path)],
                          capture_output=True, text=True, timeout=3600)
    result = json.loads((ROOT / "benchmarks" / "results" / "cluster_rehearsal.json").read_text())
    assert done.returncode == 0 and result["ok"], done.stdout[-4000:] + done.stderr[-4000:]
    assert result["steps_in_containers"] >= 7 and result["serving_container_ok"]
    assert result["malformed_4xx_share"] == 1.0 and len(result["serving"]["malformed"]) >= 25
    assert result["image_bytes_serving"] <= result["image_bytes_pipeline"] / 3
    assert result["cronjob"]["verdict_line"]
    assert result["gpu_image_ok"] and result["gpu_providers_available"] and result["cuda_libraries_resolve"]
    assert result["gpu_image_cpu_fallback_ok"]
