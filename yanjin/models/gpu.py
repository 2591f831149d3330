"""ONNX Runtime on an NVIDIA GPU: which providers really run here, the libraries they need, TensorRT's options.

The CUDA, cuDNN and TensorRT libraries are NVIDIA's wheels (`yanjin[gpu]`, `yanjin[tensorrt]`), not a CUDA
install: ONNX Runtime's `preload_dlls()` loads CUDA and cuDNN from them and the TensorRT wheel's folder is
loaded here, so no LD_LIBRARY_PATH is set anywhere. The GPU is found through the driver (NVML): an image built
for the GPU started on a node without one serves on the CPU and says why, once, in the log.

TensorRT builds one engine per model, GPU and TensorRT version for the whole range of input shapes the server
sends (batch 1 to `max_batch`, 1 to `max_length` tokens), FP16 unless told otherwise; engines are cached under
`<cache>/<model sha256>/<gpu>-trt<version>`, so a restart or a second replica on the same GPU loads instead of
building, and a new model or driver's GPU never meets an old engine.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import re
import subprocess
import sysconfig
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PREFERENCE = [TENSORRT, CUDA, CPU]   # fastest first
TENSORRT_LIBRARY = "libnvinfer.so.10"          # what ONNX Runtime 1.26's TensorRT provider links
DRIVER_LIBRARIES = ("libcuda.so.1", "libnvidia-ml.so.1")   # the node's driver brings these, never an image
PROVIDER_LIBRARIES = {TENSORRT: "libonnxruntime_providers_tensorrt.so", CUDA: "libonnxruntime_providers_cuda.so"}
INPUTS = ("input_ids", "attention_mask")


@functools.cache
def gpu_name() -> tuple[str | None, str]:
    """The first GPU's name as the driver reports it, or None and why there is none (asked once a process)."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed (yanjin[gpu])"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return None, f"no NVIDIA driver answers ({e})"
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return None, "the driver sees no GPU"
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        return (name.decode() if isinstance(name, bytes) else name), ""
    except pynvml.NVMLError as e:
        return None, f"the driver answered but named no GPU ({e})"
    finally:
        pynvml.nvmlShutdown()


def wheel_library_folders() -> list[Path]:
    """The folders of NVIDIA's wheels that hold shared libraries: nvidia/<part>/lib and tensorrt_libs."""
    site = Path(sysconfig.get_paths()["purelib"])
    return sorted(p for p in [*site.glob("nvidia/*/lib"), site / "tensorrt_libs"] if p.is_dir())


def tensorrt_version() -> str:
    for dist in ("tensorrt-cu12-libs", "tensorrt-libs"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return ""


def _load_tensorrt() -> str:
    """Load the TensorRT wheel's libraries, so that the provider finds libnvinfer; "" or why it cannot."""
    folder = next((p for p in wheel_library_folders() if p.name == "tensorrt_libs"), None)
    if folder is None:
        return "TensorRT's libraries are not installed (yanjin[tensorrt], from NVIDIA's index)"
    for lib in sorted(folder.glob("libnvinfer*.so*")) + sorted(folder.glob("libnvonnxparser*.so*")):
        try:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            return f"{lib.name} does not load: {e}"
    try:
        ctypes.CDLL(TENSORRT_LIBRARY, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        return f"{TENSORRT_LIBRARY} does not load: {e}"
    return ""


@functools.cache
def usable_providers() -> tuple[str, ...]:
    """The providers a session here should ask for, fastest first: those the installed ONNX Runtime offers,
    less the GPU ones when no GPU is visible, less TensorRT when its libraries are absent. Logged once."""
    import onnxruntime as ort

    offered = [p for p in PREFERENCE if p in ort.get_available_providers()]
    if CUDA not in offered and TENSORRT not in offered:
        return tuple(offered)
    gpu, why = gpu_name()
    if gpu is None:
        log.warning("ONNX Runtime's GPU build offers %s, but %s: serving on the CPU",
                    ", ".join(p for p in offered if p != CPU), why)
        return (CPU,)
    ort.preload_dlls()   # CUDA and cuDNN from NVIDIA's wheels
    if TENSORRT in offered and (missing := _load_tensorrt()):
        log.warning("%s: %s left out, CUDA serves on %s", missing, TENSORRT, gpu)
        offered.remove(TENSORRT)
    log.info("ONNX Runtime on %s: %s", gpu, ", ".join(offered))
    return tuple(offered)


def engine_folder(cache_root: str | Path, onnx_path: str | Path, gpu: str) -> Path:
    """Where the engines of this model file on this GPU and TensorRT version are kept."""
    digest = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower() or "gpu"
    return Path(cache_root) / digest / f"{slug}-trt{tensorrt_version() or 'unknown'}"


def tensorrt_options(onnx_path: str | Path, max_batch: int, max_length: int, cache_root: str | Path | None,
                     fp16: bool = True) -> dict:
    """TensorRT's provider options: one dynamic-shape profile covering every request the server batches,
    FP16, and the engine (and timing) cache keyed by model, GPU and TensorRT version."""
    def shapes(batch: int, length: int) -> str:
        return ",".join(f"{name}:{batch}x{length}" for name in INPUTS)

    options = {"device_id": 0, "trt_fp16_enable": fp16,
               "trt_profile_min_shapes": shapes(1, 1),
               "trt_profile_opt_shapes": shapes(min(8, max_batch), min(64, max_length)),
               "trt_profile_max_shapes": shapes(max_batch, max_length)}
    gpu, _ = gpu_name()
    if cache_root and gpu:
        folder = engine_folder(cache_root, onnx_path, gpu)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        options |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(folder),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(folder)}
    return options


def session_providers(onnx_path: str | Path, max_batch: int, max_length: int, cache_root: str | Path | None = None,
                      fp16: bool = True) -> list:
    """The `providers` argument of an InferenceSession for this model here: names with their options."""
    out = []
    for p in usable_providers():
        if p == TENSORRT:
            out.append((p, tensorrt_options(onnx_path, max_batch, max_length, cache_root, fp16)))
        elif p == CUDA:
            out.append((p, {"device_id": 0}))
        else:
            out.append(p)
    return out


def missing_libraries(provider: str) -> list[str]:
    """The shared libraries a provider's library links that the loader cannot find with NVIDIA's wheel folders
    on its path (as preload_dlls makes them), the driver's own left aside: [] when it would load on a GPU node."""
    import onnxruntime as ort

    lib = Path(ort.__file__).parent / "capi" / PROVIDER_LIBRARIES[provider]
    if not lib.is_file():
        return [f"{lib.name} (not in this ONNX Runtime)"]
    env = {"LD_LIBRARY_PATH": ":".join(str(p) for p in [lib.parent, *wheel_library_folders()])}
    out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, env=env).stdout
    return sorted({line.split()[0] for line in out.splitlines() if "not found" in line} - set(DRIVER_LIBRARIES))


def report() -> dict:
    """What this machine's ONNX Runtime can run on: the rehearsal's and the GPU check's provider check."""
    import onnxruntime as ort

    gpu, why = gpu_name()
    offered = ort.get_available_providers()
    return {"onnxruntime": ort.__version__, "device": ort.get_device(), "available": offered,
            "gpu": gpu, "no_gpu_because": why, "tensorrt_version": tensorrt_version(),
            "missing_libraries": {p: missing_libraries(p) for p in PROVIDER_LIBRARIES if p in offered},
            "usable": list(usable_providers())}


if __name__ == "__main__":
    import json

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(report(), indent=2))
