"""What a GPU node would run, decided on this machine without one: the providers asked for, TensorRT's
shape profile, and where its engines are cached (a new model, GPU or TensorRT never meets an old engine).
The GPU image's own check is the rehearsal's `gpu` stage; timings are benchmarks/gpu_check.sh's."""
from pathlib import Path

import onnxruntime as ort

from yanjin.models import gpu
from yanjin.models.inference import available_providers


def test_without_a_gpu_build_or_device_only_the_cpu_is_asked_for():
    assert available_providers() == [p for p in gpu.PREFERENCE if p in ort.get_available_providers()]
    assert gpu.gpu_name()[0] is None and gpu.gpu_name()[1]                         # no GPU here, and why
    assert gpu.session_providers(Path("unused.onnx"), 64, 128) == [gpu.CPU]


def test_one_tensorrt_profile_covers_every_batch_the_server_sends():
    options = gpu.tensorrt_options(Path("unused.onnx"), max_batch=64, max_length=128, cache_root=None)
    assert options["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    assert options["trt_profile_max_shapes"] == "input_ids:64x128,attention_mask:64x128"
    assert options["trt_fp16_enable"] is True
    assert "trt_engine_cache_path" not in options       # no GPU named: nothing to key a cache by


def test_engines_are_kept_per_model_bytes_gpu_and_tensorrt(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"model a")
    b.write_bytes(b"model b")
    h100 = gpu.engine_folder(tmp_path / "cache", a, "NVIDIA H100 80GB HBM3")
    assert h100 == gpu.engine_folder(tmp_path / "cache", a, "NVIDIA H100 80GB HBM3")   # a restart finds it
    assert h100.name.startswith("nvidia-h100-80gb-hbm3-trt")
    assert gpu.engine_folder(tmp_path / "cache", b, "NVIDIA H100 80GB HBM3") != h100
    assert gpu.engine_folder(tmp_path / "cache", a, "NVIDIA L4") != h100
