"""Where adaptation, fine-tuning and distillation run: the GPU when there is one, at fp32 unless
mixed precision is asked for.

`precision: auto` is fp32 on every device. Measured on an H200, fine-tuning for 2 epochs side by side
(benchmarks/results/gpu_training*.json): bf16 autocast ran MiniLM at 0.76x (batch 32) and 0.85x
(batch 256) fp32's speed, an MPNet-sized encoder at 0.86x (batch 32). The profile says why: at fp32 the
GPU is busy for about a tenth of each step's wall time, so the step waits on the CPU (Python, kernel
launches), and autocast adds casts, about 30% more launches, while its faster matrix products save
time only on the GPU side. bf16 (fp32's exponent range, no loss scaling) and fp16 (with a
gradient scaler) stay available by name for larger models or batches. Autocast keeps softmax, layer
norm and the losses in fp32 and the weights stay fp32 throughout (the optimizer steps fp32 master
weights), so checkpoints, ONNX export and parity are the same in every case.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..config import ComputeParams

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MIXED_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]  # no cuDNN


@dataclass(frozen=True)
class Cuda:
    """What this process sees of CUDA (probed, or given by a test)."""
    devices: int = 0
    bf16: bool = False

    @classmethod
    def probe(cls) -> "Cuda":
        if not torch.cuda.is_available():
            return cls()
        return cls(torch.cuda.device_count(), torch.cuda.is_bf16_supported())


@dataclass(frozen=True)
class Placement:
    device: str = "cpu"          # cpu | cuda:N
    precision: str = "fp32"      # fp32 | bf16 | fp16

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The forward pass and loss under autocast (a no-op at fp32). On a GPU, attention keeps to the
        flash, memory-efficient and math kernels: under autocast SDPA otherwise picks cuDNN's, which on
        the H200 spent 4 ms (forward) and 11 ms (backward) of CPU per call planning for each new shape,
        and our length-grouped batches vary in shape (benchmarks/results/gpu_training.json, profiles)."""
        if self.precision == "fp32":
            yield
            return
        kernels = sdpa_kernel(MIXED_ATTENTION) if self.torch_device.type == "cuda" else contextlib.nullcontext()
        with torch.autocast(device_type=self.torch_device.type, dtype=DTYPES[self.precision]), kernels:
            yield

    def scaler(self) -> torch.amp.GradScaler:
        """Loss scaling, needed by fp16 only (its gradients underflow); pass-through otherwise."""
        return torch.amp.GradScaler(self.torch_device.type, enabled=self.precision == "fp16")

    def __str__(self) -> str:
        return f"{self.device}, {self.precision}"


CPU = Placement()


def choose(params: ComputeParams, cuda: Cuda | None = None) -> Placement:
    """The placement `compute.device` / `compute.precision` ask for, checked against what is visible.

    device: auto (the first GPU if any, else the CPU), cpu, cuda or cuda:N. precision: auto (fp32: the
    faster on the one GPU measured, an H200, see above), fp32, bf16 (a GPU with bf16, or the CPU) or fp16 (a GPU only).
    """
    cuda = cuda if cuda is not None else Cuda.probe()
    device = params.device.strip().lower()
    if device == "auto":
        device = "cuda:0" if cuda.devices else "cpu"
    elif device == "cuda":
        device = "cuda:0"
    if device.startswith("cuda"):
        index = device.partition(":")[2]
        if not index.isdigit():
            raise ValueError(f"compute.device {params.device!r}: expected auto, cpu, cuda or cuda:N")
        if int(index) >= cuda.devices:
            raise ValueError(f"compute.device {params.device!r}, but this process sees {cuda.devices} CUDA device(s) "
                             f"(torch.cuda.is_available() is {bool(cuda.devices)}); use compute.device=auto or cpu")
    elif device != "cpu":
        raise ValueError(f"compute.device {params.device!r}: expected auto, cpu, cuda or cuda:N")
    on_gpu = device != "cpu"
    precision = params.precision.strip().lower()
    if precision == "auto":
        precision = "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"compute.precision {params.precision!r}: expected auto, fp32, bf16 or fp16")
    if precision == "fp16" and not on_gpu:
        raise ValueError("compute.precision fp16 needs a GPU (on the CPU use bf16 or fp32)")
    if precision == "bf16" and on_gpu and not cuda.bf16:
        raise ValueError(f"compute.precision bf16: {device} has no bf16 support; use fp16 or auto")
    return Placement(device, precision)
