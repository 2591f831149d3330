"""Where training runs: the device and precision chosen from `compute` and what is visible (a GPU is
simulated by what CUDA reports; mixed precision itself runs for real, as bf16 autocast on the CPU)."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from yanjin.components.device import Cuda, Placement, choose
from yanjin.components.train import TrainParams, train_classifier
from yanjin.config import ComputeParams, load_config
from yanjin.models.family import ModelSpec

NO_GPU, AMPERE, VOLTA = Cuda(), Cuda(devices=2, bf16=True), Cuda(devices=1, bf16=False)


@pytest.mark.parametrize("device, precision, cuda, expected", [
    ("auto", "auto", NO_GPU, ("cpu", "fp32")),
    ("auto", "auto", AMPERE, ("cuda:0", "fp32")),   # autocast measured slower on an H200 (device.py)
    ("auto", "auto", VOLTA, ("cuda:0", "fp32")),
    ("cuda", "bf16", AMPERE, ("cuda:0", "bf16")),   # mixed precision when asked by name
    ("cuda", "fp16", VOLTA, ("cuda:0", "fp16")),
    ("cuda", "fp32", AMPERE, ("cuda:0", "fp32")),
    ("cuda:1", "auto", AMPERE, ("cuda:1", "fp32")),
    ("cpu", "auto", AMPERE, ("cpu", "fp32")),
    ("cpu", "bf16", NO_GPU, ("cpu", "bf16")),
])
def test_the_placement_follows_the_config_and_the_hardware(device, precision, cuda, expected):
    place = choose(ComputeParams(device, precision), cuda)
    assert (place.device, place.precision) == expected


@pytest.mark.parametrize("device, precision, cuda, message", [
    ("cuda", "auto", NO_GPU, "sees 0 CUDA device"),
    ("cuda:2", "auto", AMPERE, "sees 2 CUDA device"),
    ("tpu", "auto", AMPERE, "expected auto, cpu, cuda or cuda:N"),
    ("auto", "fp16", NO_GPU, "fp16 needs a GPU"),
    ("auto", "bf16", VOLTA, "has no bf16 support"),
    ("auto", "int8", AMPERE, "expected auto, fp32, bf16 or fp16"),
])
def test_an_impossible_placement_is_a_clear_error(device, precision, cuda, message):
    with pytest.raises(ValueError, match=message):
        choose(ComputeParams(device, precision), cuda)


def test_profiles_leave_the_choice_to_the_hardware():
    for profile in ("tiny", "demo", "full"):
        assert load_config(profile).compute == ComputeParams("auto", "auto")
    assert choose(load_config("tiny").compute) == Placement("cuda:0" if torch.cuda.is_available() else "cpu", "fp32")


def test_mixed_precision_training_learns_and_keeps_fp32_weights(small_slice, tmp_path):
    train, _, labels = small_slice
    spec, params = ModelSpec(n_layers=1, max_length=32), TrainParams(epochs=2, batch_size=16, learning_rate=5e-4, seed=7)
    result = train_classifier(train, train.iloc[1::2], labels, spec, params, tmp_path, progress=False,
                              place=Placement("cpu", "bf16"))
    assert result.history[-1]["train_loss"] < np.log(6)  # below chance-level cross-entropy
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}  # autocast computes in bf16, stores fp32


@pytest.mark.parametrize("device, precision, cudnn_attention", [
    ("cuda:0", "bf16", False),   # cuDNN's attention re-plans per shape: ~3x slower steps on an H200 (device.py)
    ("cuda:0", "fp16", False),
    ("cuda:0", "fp32", True),    # no autocast, nothing changed
    ("cpu", "bf16", True),
])
@pytest.mark.filterwarnings("ignore:CUDA is not available")  # CUDA autocast on a CPU-only build
def test_mixed_precision_on_a_gpu_keeps_attention_off_cudnn(device, precision, cudnn_attention):
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with Placement(device, precision).autocast():
        assert torch.backends.cuda.cudnn_sdp_enabled() is (before and cudnn_attention)
    assert torch.backends.cuda.cudnn_sdp_enabled() is before      # restored on the way out
