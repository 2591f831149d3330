"""The GPU stack's pins (`yanjin[gpu]`, `yanjin[tensorrt]` in pyproject.toml): they resolve together against
the package index, on one CUDA major, without the CPU ONNX Runtime. pip's resolver decides, from the wheels'
own metadata (nothing is installed); this needs the package index, as `make install` does."""
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def pinned(extra: str) -> dict[str, str]:
    """name -> version of the extra's own `==` pins (other extras of yanjin left out)."""
    out = {}
    for req in EXTRAS[extra]:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;]+)", req)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(3)
    return out


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict[str, str]:
    report = tmp_path_factory.mktemp("pip") / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--only-binary", ":all:", "--report", str(report), f"{ROOT}[gpu]"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"yanjin[gpu] no longer resolves:\n{done.stderr[-3000:]}"
    items = json.loads(report.read_text())["install"]
    return {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"] for i in items}


def test_the_gpu_extra_resolves_as_pinned_on_cuda_12_without_the_cpu_runtime(resolved):
    for name, version in pinned("gpu").items():
        assert resolved.get(name) == version, f"{name}: pinned {version}, resolved {resolved.get(name)}"
    assert "onnxruntime" not in resolved, "the CPU onnxruntime would overwrite the CUDA build's module"
    nvidia = [n for n in resolved if n.startswith("nvidia-") and n != "nvidia-ml-py"]
    assert nvidia and all(n.endswith("-cu12") for n in nvidia), nvidia      # one CUDA major: 12
    assert "torch" not in resolved and "kfp" not in resolved                # serving alone


def test_the_tensorrt_pin_is_the_major_the_runtime_loads():
    """ONNX Runtime 1.26's TensorRT provider links libnvinfer.so.10: TensorRT 11 wheels will not load, and
    a cu13 build needs the CUDA 13 runtime the gpu extra does not carry."""
    assert pinned("gpu")["onnxruntime-gpu"].startswith("1.26.")
    trt = pinned("tensorrt")
    assert list(trt) == ["tensorrt-cu12-libs"] and trt["tensorrt-cu12-libs"].startswith("10.")
    assert "yanjin[gpu]" in EXTRAS["tensorrt"]
